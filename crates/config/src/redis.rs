//! `cache_server.redis` in `cacheserver.yaml`: the Redis Cluster used by the api for rate limiting
//! (`default`) and the single Redis used by the jobqueue (`jobqueue`).
//!
//! Names follow the go-redis options of the system this replaces. A zero, negative or missing
//! value means "use the default"; defaults are applied by `apply_defaults`.

use crate::duration::{self, or_default};
use secrecy::SecretString;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheServerSettings {
    #[serde(default)]
    pub redis: RedisSettings,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// Redis Cluster for rate limiting (read only by the api).
    #[serde(default)]
    pub default: ClusterRedisSettings,
    /// Single Redis for delayed jobs (read only by the jobqueue).
    #[serde(default)]
    pub jobqueue: SingleRedisSettings,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterAddrs {
    /// Seed nodes `host:port`. Empty means: no Redis, rate limit in memory.
    #[serde(default)]
    pub addrs: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterRedisSettings {
    #[serde(default)]
    pub cluster: ClusterAddrs,
    /// Extra attempts for a command after a connection error (default 2).
    #[serde(default)]
    pub max_retries: i64,
    /// First reconnect delay (default 8ms).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub min_retry_backoff: Duration,
    /// Largest reconnect delay (default 512ms).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub max_retry_backoff: Duration,
    /// TCP connect + handshake timeout (default 5s).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub dial_timeout: Duration,
    /// Command timeout (default 3s).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub read_timeout: Duration,
    /// Clients in the pool; each multiplexes many requests (default: CPU count, 2..=8).
    #[serde(default)]
    pub pool_size: i64,
    /// go-redis waits this long for a free pooled connection. fred multiplexes and never waits for
    /// one, so this is accepted for compatibility and unused (default 4s).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub pool_timeout: Duration,
    /// ACL user name (optional).
    #[serde(default)]
    pub username: Option<String>,
    /// Only from the environment: `APP__CACHE_SERVER__REDIS__DEFAULT__PASSWORD`.
    #[serde(default)]
    pub password: Option<SecretString>,
    /// `tls: true|false` or a table (see [`TlsSettings`]).
    #[serde(default)]
    pub tls: TlsSettings,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SingleRedisSettings {
    /// `host:port` (default 127.0.0.1:6379).
    #[serde(default)]
    pub addr: String,
    /// Extra attempts for a command after a connection error (default 2).
    #[serde(default)]
    pub max_retries: i64,
    /// Connect timeout (default 5s).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub dial_timeout: Duration,
    /// Response timeout (default 3s).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub read_timeout: Duration,
    /// Write timeout (default 3s).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub write_timeout: Duration,
    /// Connections (default: CPU count based). Redis connections are multiplexed.
    #[serde(default)]
    pub pool_size: i64,
    /// ACL user name (optional).
    #[serde(default)]
    pub username: Option<String>,
    /// Only from the environment: `APP__CACHE_SERVER__REDIS__JOBQUEUE__PASSWORD`.
    #[serde(default)]
    pub password: Option<SecretString>,
    /// `tls: true|false` or a table (see [`TlsSettings`]).
    #[serde(default)]
    pub tls: TlsSettings,
    /// Find the master through Sentinel when `sentinel.master_name` is set (`addr` is then unused).
    #[serde(default)]
    pub sentinel: SentinelSettings,
    /// When > 0, a registration is confirmed only after `WAIT` saw this many replicas acknowledge
    /// it (bounded by `jobqueue.enqueue_timeout`). Default 0: no WAIT.
    #[serde(default)]
    pub min_replicas_acked: i64,
}

/// TLS for one Redis connection. YAML: `tls: true`, `tls: false`, or a table; a table means
/// `enabled: true` unless it says otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub enabled: bool,
    /// PEM CA bundle to verify the server with; `None` = the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (needs `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Name to verify the server certificate against instead of the address' host (fred only;
    /// redis-rs always verifies the host of the address).
    pub server_name: Option<String>,
}

impl<'de> Deserialize<'de> for TlsSettings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            enabled: Option<bool>,
            #[serde(default)]
            ca_file: Option<PathBuf>,
            #[serde(default)]
            cert_file: Option<PathBuf>,
            #[serde(default)]
            key_file: Option<PathBuf>,
            #[serde(default)]
            server_name: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Table(Table),
        }
        Ok(match Raw::deserialize(deserializer)? {
            Raw::Flag(enabled) => Self {
                enabled,
                ..Self::default()
            },
            Raw::Table(t) => Self {
                enabled: t.enabled.unwrap_or(true),
                ca_file: t.ca_file,
                cert_file: t.cert_file,
                key_file: t.key_file,
                server_name: t.server_name,
            },
        })
    }
}

impl TlsSettings {
    fn apply_defaults(&mut self) {
        let empty = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.as_os_str().is_empty());
        for file in [&mut self.ca_file, &mut self.cert_file, &mut self.key_file] {
            if empty(file) {
                *file = None;
            }
        }
        if self.server_name.as_deref().is_some_and(str::is_empty) {
            self.server_name = None;
        }
    }

    /// A reason when the table cannot work: a client certificate without its key, or the reverse.
    pub fn problem(&self) -> Option<&'static str> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Some("cert_file needs key_file (mutual TLS)"),
            (None, Some(_)) => Some("key_file needs cert_file (mutual TLS)"),
            _ => None,
        }
    }
}

/// `cache_server.redis.jobqueue.sentinel`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelSettings {
    /// The monitored master's name; empty = no Sentinel, connect to `addr`.
    #[serde(default)]
    pub master_name: String,
    /// Sentinels `host:port` (a comma list in the environment).
    #[serde(default)]
    pub addrs: Vec<String>,
    /// ACL user on the sentinels (optional).
    #[serde(default)]
    pub username: Option<String>,
    /// Only from the environment: `APP__CACHE_SERVER__REDIS__JOBQUEUE__SENTINEL__PASSWORD`.
    #[serde(default)]
    pub password: Option<SecretString>,
}

impl SentinelSettings {
    pub fn is_enabled(&self) -> bool {
        !self.master_name.is_empty()
    }
}

pub const DEFAULT_MAX_RETRIES: i64 = 2;

/// Pool size used when the configured one is ≤ 0: one client per core, at least 2, at most 8.
pub fn default_pool_size() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8))
}

impl ClusterRedisSettings {
    pub(crate) fn apply_defaults(&mut self) {
        self.cluster.addrs.retain(|a| !a.trim().is_empty());
        if self.max_retries <= 0 {
            self.max_retries = DEFAULT_MAX_RETRIES;
        }
        or_default(&mut self.min_retry_backoff, Duration::from_millis(8));
        or_default(&mut self.max_retry_backoff, Duration::from_millis(512));
        or_default(&mut self.dial_timeout, Duration::from_secs(5));
        or_default(&mut self.read_timeout, Duration::from_secs(3));
        or_default(&mut self.pool_timeout, Duration::from_secs(4));
        if self.pool_size <= 0 {
            self.pool_size = default_pool_size() as i64;
        }
        drop_empty(&mut self.username, &mut self.password);
        self.tls.apply_defaults();
    }

    /// Rate limiting uses Redis only when at least one seed node is configured.
    pub fn is_enabled(&self) -> bool {
        !self.cluster.addrs.is_empty()
    }
}

impl SingleRedisSettings {
    pub(crate) fn apply_defaults(&mut self) {
        if self.addr.trim().is_empty() {
            self.addr = "127.0.0.1:6379".to_owned();
        }
        if self.max_retries <= 0 {
            self.max_retries = DEFAULT_MAX_RETRIES;
        }
        or_default(&mut self.dial_timeout, Duration::from_secs(5));
        or_default(&mut self.read_timeout, Duration::from_secs(3));
        or_default(&mut self.write_timeout, Duration::from_secs(3));
        if self.pool_size <= 0 {
            self.pool_size = default_pool_size() as i64;
        }
        drop_empty(&mut self.username, &mut self.password);
        self.tls.apply_defaults();
        let sentinel = &mut self.sentinel;
        sentinel.master_name = sentinel.master_name.trim().to_owned();
        sentinel.addrs.retain(|a| !a.trim().is_empty());
        drop_empty(&mut sentinel.username, &mut sentinel.password);
        self.min_replicas_acked = self.min_replicas_acked.max(0);
    }

    /// `redis://[user:pass@]addr` for clients that take a URL. Contains the password: never log it.
    pub fn url(&self) -> String {
        use secrecy::ExposeSecret;
        let auth = match (&self.username, &self.password) {
            (Some(user), Some(pass)) => format!("{user}:{}@", pass.expose_secret()),
            (None, Some(pass)) => format!(":{}@", pass.expose_secret()),
            _ => String::new(),
        };
        let scheme = if self.tls.enabled { "rediss" } else { "redis" };
        format!("{scheme}://{auth}{}", self.addr)
    }
}

fn drop_empty(username: &mut Option<String>, password: &mut Option<SecretString>) {
    use secrecy::ExposeSecret;
    if username.as_deref().is_some_and(|u| u.is_empty()) {
        *username = None;
    }
    if password
        .as_ref()
        .is_some_and(|p| p.expose_secret().is_empty())
    {
        *password = None;
    }
}
