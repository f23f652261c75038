//! The Redis Cluster client (fred) the api's limiter and cache use. It owns the pool, maps our settings onto fred's
//! options, connects lazily (start-up never waits for Redis), bounds every call by a timeout,
//! logs connection events with timings and keeps counters for them.

use cacheserver_config::{ClusterRedisSettings, ExposeSecret};
use fred::prelude::{
    ClientLike, Config, ConnectionConfig, EventInterface, PerformanceConfig, Pool, ReconnectPolicy,
    Server, ServerConfig,
};
use fred::types::config::{ClusterDiscoveryPolicy, UnresponsiveConfig};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::RedisError;

/// fred's options built from `cache_server.redis.default` (see README "Redis options").
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub config: Config,
    pub performance: PerformanceConfig,
    pub connection: ConnectionConfig,
    pub reconnect: ReconnectPolicy,
    pub pool_size: usize,
}

/// Map the go-redis style settings onto fred:
/// - `cluster.addrs` → clustered seed nodes; `username`/`password`/`tls` → the same in fred.
/// - `dial_timeout` → `connection_timeout` and `internal_command_timeout` (AUTH, CLUSTER SLOTS).
/// - `read_timeout` → `default_command_timeout` (fred has no separate write timeout), and the
///   interval after which a silent connection counts as unresponsive and is replaced.
/// - `max_retries` → `max_command_attempts = max_retries + 1`.
/// - `min/max_retry_backoff` → exponential reconnect policy, retried forever.
/// - `pool_size` → clients in the pool (each multiplexes its connections).
/// - `pool_timeout` → no fred equivalent: fred never waits for a free connection. Commands queued
///   while reconnecting are bounded by the command timeout instead.
pub fn client_options(settings: &ClusterRedisSettings) -> Result<ClientOptions, RedisError> {
    let hosts = settings
        .cluster
        .addrs
        .iter()
        .map(|a| parse_server(a))
        .collect::<Result<Vec<_>, _>>()?;
    let tls = tls_config(&settings.tls)?;
    let hosts = match &settings.tls.server_name {
        Some(name) if settings.tls.enabled => hosts
            .into_iter()
            .map(|mut h| {
                h.tls_server_name = Some(name.as_str().into());
                h
            })
            .collect(),
        _ => hosts,
    };
    let config = Config {
        server: ServerConfig::Clustered {
            hosts,
            policy: ClusterDiscoveryPolicy::default(),
        },
        username: settings.username.clone(),
        password: settings
            .password
            .as_ref()
            .map(|p| p.expose_secret().to_owned()),
        // Commands wait for a reconnect instead of failing at once; the timeouts bound the wait.
        fail_fast: false,
        tls,
        ..Config::default()
    };
    let performance = PerformanceConfig {
        default_command_timeout: settings.read_timeout,
        ..PerformanceConfig::default()
    };
    let connection = ConnectionConfig {
        connection_timeout: settings.dial_timeout,
        internal_command_timeout: settings.dial_timeout,
        max_command_attempts: u32::try_from(settings.max_retries + 1).unwrap_or(3),
        unresponsive: UnresponsiveConfig {
            max_timeout: Some(settings.read_timeout),
            interval: Duration::from_millis(500),
        },
        ..ConnectionConfig::default()
    };
    let millis = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1);
    let reconnect = ReconnectPolicy::new_exponential(
        0,
        millis(settings.min_retry_backoff),
        millis(settings.max_retry_backoff),
        2,
    );
    let pool_size = usize::try_from(settings.pool_size).unwrap_or(2).max(1);
    Ok(ClientOptions {
        config,
        performance,
        connection,
        reconnect,
        pool_size,
    })
}

/// fred's TLS from `tls`: the CA file (else the system roots), a client certificate for mutual
/// TLS, and `server_name` for every node (discovered ones too, via the host mapping).
fn tls_config(
    tls: &cacheserver_config::TlsSettings,
) -> Result<Option<fred::types::config::TlsConfig>, RedisError> {
    use fred::types::config::{TlsConfig, TlsConnector, TlsHostMapping};
    if !tls.enabled {
        return Ok(None);
    }
    let setting = "cache_server.redis.default.tls";
    let config = crate::tls::TlsFiles::read(tls, setting)?.into_rustls(tls, setting)?;
    let hostnames = match &tls.server_name {
        Some(name) => TlsHostMapping::Custom(Arc::new(FixedServerName(name.clone()))),
        None => TlsHostMapping::None,
    };
    Ok(Some(TlsConfig {
        connector: TlsConnector::from(config),
        hostnames,
    }))
}

/// Every cluster node is verified against the one configured `server_name`.
#[derive(Debug)]
struct FixedServerName(String);

impl fred::types::config::HostMapping for FixedServerName {
    fn map(&self, _ip: &std::net::IpAddr, _default_host: &str) -> Option<String> {
        Some(self.0.clone())
    }
}

/// Why `error` is a misconfiguration rather than an outage ([`crate::classify`]), or `None`.
pub fn misconfiguration(error: &fred::error::Error) -> Option<String> {
    crate::classify::misconfiguration_cluster(error)
}

fn parse_server(addr: &str) -> Result<Server, RedisError> {
    let (host, port) = crate::addr::split(addr)?;
    Ok(Server::new(host, port))
}

/// Counters and timings of connection events, shared with the event tasks.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Comebacks after an outage (the first connection does not count); `/chaos/status` shows it.
    pub reconnects: AtomicU64,
    /// The current outage was logged at WARN already; later errors go to DEBUG (no log storm
    /// while the reconnect policy retries).
    outage_logged: AtomicBool,
    ever_connected: AtomicBool,
    /// When the pool lost its connection (or was created), until the next successful connect.
    down_since: Mutex<Option<Instant>>,
    /// The last misconfiguration seen (wrong password, NOPERM, TLS trust); cleared by a
    /// successful connect or call. `/ready` answers 503 while it is set.
    misconfigured: Mutex<Option<String>>,
    /// A TLS-port probe is running (at most one at a time).
    probing: AtomicBool,
}

impl ConnectionStats {
    /// The current misconfiguration, if any.
    pub fn misconfiguration(&self) -> Option<String> {
        self.misconfigured.lock().ok().and_then(|m| m.clone())
    }

    /// Remember `error` when it is a misconfiguration; logged at ERROR the first time it changes.
    fn note(&self, error: &fred::error::Error) {
        if let Some(why) = misconfiguration(error) {
            self.set_misconfiguration(why);
        }
    }

    fn set_misconfiguration(&self, why: String) {
        if let Ok(mut m) = self.misconfigured.lock() {
            if m.as_deref() != Some(why.as_str()) {
                tracing::error!(error = %why, "Redis Cluster misconfigured");
            }
            *m = Some(why);
        }
    }

    fn clear_misconfiguration(&self) {
        if let Ok(mut m) = self.misconfigured.lock() {
            m.take();
        }
    }

    fn mark_down(&self) {
        if let Ok(mut since) = self.down_since.lock() {
            since.get_or_insert_with(Instant::now);
        }
    }

    fn take_down_time(&self) -> Option<Duration> {
        self.down_since
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .map(|t| t.elapsed())
    }

    /// One connection (client × node) came up. The first after an outage logs how long it took.
    fn record_connect(&self, client: usize, server: &Server) {
        self.outage_logged.store(false, Ordering::Relaxed);
        self.clear_misconfiguration();
        metrics::counter!("redis_connects_total").increment(1);
        let Some(down) = self.take_down_time() else {
            tracing::debug!(client, %server, "redis connection up");
            return;
        };
        let ms = down.as_millis();
        metrics::histogram!("redis_reconnect_seconds").record(down.as_secs_f64());
        if self.ever_connected.swap(true, Ordering::Relaxed) {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!(client, %server, "redis reconnected after {ms} ms");
        } else {
            tracing::info!(client, %server, "redis connected after {ms} ms");
        }
    }
}

/// With TLS off, an I/O error may be plain text sent to a TLS port (the server closes the
/// connection, like a node going down): ask that port in the background and, if it speaks TLS,
/// record the misconfiguration. Never awaited in the event task: a slow listener lags fred's
/// event channel, which ends the listener.
fn probe_for_tls(stats: &Arc<ConnectionStats>, error: &fred::error::Error, node: &Server) {
    use crate::tls_probe;
    if misconfiguration(error).is_some() || !tls_probe::looks_closed(&error.to_string()) {
        return;
    }
    if stats.probing.swap(true, Ordering::AcqRel) {
        return;
    }
    let (stats, host, port) = (stats.clone(), node.host.to_string(), node.port);
    tokio::spawn(async move {
        if tls_probe::is_tls_port(&host, port).await {
            let hint = tls_probe::hint("cache_server.redis.default.tls.enabled");
            stats.set_misconfiguration(format!("Redis Cluster node {host}:{port}: {hint}"));
        }
        stats.probing.store(false, Ordering::Release);
    });
}

/// A Lua script for the cluster: its source and SHA1 (computed once, in a `static`).
pub struct ClusterScript {
    name: &'static str,
    source: &'static str,
    sha: std::sync::OnceLock<String>,
}

impl ClusterScript {
    /// `name` is for the log line when the script has to be loaded.
    pub const fn new(name: &'static str, source: &'static str) -> Self {
        Self {
            name,
            source,
            sha: std::sync::OnceLock::new(),
        }
    }

    pub fn source(&self) -> &'static str {
        self.source
    }

    fn sha(&self) -> &str {
        self.sha.get_or_init(|| fred::util::sha1_hash(self.source))
    }
}

/// The api's Redis Cluster pool.
#[derive(Clone)]
pub struct RedisCluster {
    pool: Pool,
    /// The pool's options, for the tracking clients (same nodes, TLS, ACL user; RESP3).
    options: Arc<ClientOptions>,
    /// Running tracking clients: chaos resets them with the pool.
    trackers: Arc<Mutex<Vec<fred::prelude::Client>>>,
    stats: Arc<ConnectionStats>,
    /// A seed node to probe when an error names none; `None` with TLS on (nothing to probe).
    plain_text_seed: Option<Server>,
}

impl RedisCluster {
    /// Build the pool and start connecting in the background. Never waits for Redis.
    pub fn connect_lazy(settings: &ClusterRedisSettings) -> Result<Self, RedisError> {
        let opts = client_options(settings)?;
        let pool = Pool::new(
            opts.config.clone(),
            Some(opts.performance.clone()),
            Some(opts.connection.clone()),
            Some(opts.reconnect.clone()),
            opts.pool_size,
        )?;
        let stats = Arc::new(ConnectionStats::default());
        stats.mark_down();
        let plain_text_seed = match settings.cluster.addrs.first() {
            Some(addr) if !settings.tls.enabled => Some(parse_server(addr)?),
            _ => None,
        };
        let cluster = Self {
            pool,
            options: Arc::new(opts),
            trackers: Arc::default(),
            stats,
            plain_text_seed,
        };
        for (index, client) in cluster.pool.clients().iter().enumerate() {
            cluster.watch_events(index, client);
            // The handle ends only when the client quits; it is not needed.
            drop(client.connect());
        }
        Ok(cluster)
    }

    fn watch_events(&self, index: usize, client: &fred::prelude::Client) {
        let stats = self.stats.clone();
        drop(client.on_reconnect(move |server| {
            let stats = stats.clone();
            async move {
                stats.record_connect(index, &server);
                Ok(())
            }
        }));
        let stats = self.stats.clone();
        let seed = self.plain_text_seed.clone();
        drop(client.on_error(move |(error, server)| {
            let stats = stats.clone();
            let probe = seed
                .as_ref()
                .map(|seed| server.clone().unwrap_or_else(|| seed.clone()));
            async move {
                stats.mark_down();
                stats.note(&error);
                if let Some(node) = &probe {
                    probe_for_tls(&stats, &error, node);
                }
                metrics::counter!("redis_errors_total").increment(1);
                let server = server.map(|s| s.to_string()).unwrap_or_default();
                if stats.outage_logged.swap(true, Ordering::Relaxed) {
                    tracing::debug!(client = index, %server, %error, "redis connection error (still down)");
                } else {
                    tracing::warn!(client = index, %server, %error, "redis connection lost; reconnecting in the background");
                }
                Ok(())
            }
        }));
        drop(client.on_cluster_change(move |changes| async move {
            tracing::info!(client = index, ?changes, "redis cluster topology changed");
            Ok(())
        }));
    }

    /// The next connected client of the pool, or `NotConnected` at once (fail fast).
    fn client(&self) -> Result<&fred::prelude::Client, RedisError> {
        let client = self.pool.next_connected();
        if client.is_connected() {
            Ok(client)
        } else {
            Err(RedisError::NotConnected)
        }
    }

    /// Run `call` on a connected client within `budget` (fails fast when none is connected).
    pub async fn call<T, F, Fut>(&self, budget: Duration, call: F) -> Result<T, RedisError>
    where
        F: FnOnce(fred::prelude::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, fred::error::Error>>,
    {
        let client = self.client()?.clone();
        match tokio::time::timeout(budget, call(client)).await {
            Ok(Ok(value)) => {
                self.stats.clear_misconfiguration();
                Ok(value)
            }
            Ok(Err(e)) => {
                self.stats.note(&e);
                Err(RedisError::from(e))
            }
            Err(_) => Err(RedisError::Timeout(budget)),
        }
    }

    /// One `EVALSHA` of `script` within `budget`. On `NOSCRIPT` (normal after a restart or a
    /// failover) the script is loaded on every master and called once more. The cluster's one
    /// script loader: the limiter and the cache use it.
    pub async fn eval_script<T: fred::types::FromValue>(
        &self,
        budget: Duration,
        script: &'static ClusterScript,
        keys: Vec<fred::types::Key>,
        args: Vec<fred::types::Value>,
    ) -> Result<T, RedisError> {
        use fred::interfaces::LuaInterface as _;
        self.call(budget, |c| async move {
            let sha = script.sha();
            match c.evalsha(sha, keys.clone(), args.clone()).await {
                Err(e) if e.details().starts_with("NOSCRIPT") => {
                    tracing::info!(
                        script = script.name,
                        "script not loaded (restart or failover); loading it"
                    );
                    c.script_load_cluster::<(), _>(script.source).await?;
                    c.evalsha(sha, keys, args).await
                }
                other => other,
            }
        })
        .await
    }

    /// Start a dedicated RESP3 client (same nodes, TLS and ACL user as the pool) with
    /// `CLIENT TRACKING ON BCAST` for `prefixes` on every primary; `emit` receives what the
    /// owner of local copies may trust ([`crate::tracking`]). Needs a tokio runtime.
    pub fn track(
        &self,
        prefixes: Vec<String>,
        heartbeat: Duration,
        emit: Arc<dyn Fn(crate::tracking::TrackingEvent) + Send + Sync>,
    ) -> Result<crate::tracking::Tracking, RedisError> {
        let o = &*self.options;
        let mut config = o.config.clone();
        config.version = fred::types::RespVersion::RESP3;
        let performance = PerformanceConfig {
            // Invalidation bursts (many entries stored at once) must not lag the listener.
            broadcast_channel_capacity: 4096,
            ..o.performance.clone()
        };
        let client = fred::prelude::Client::new(
            config,
            Some(performance),
            Some(o.connection.clone()),
            Some(o.reconnect.clone()),
        );
        crate::tracking::start(client, self.trackers.clone(), prefixes, heartbeat, emit)
    }

    /// Whether at least one client of the pool is fully connected.
    pub fn is_connected(&self) -> bool {
        self.pool.clients().iter().any(ClientLike::is_connected)
    }

    /// Open connections to cluster nodes, summed over the pool.
    pub fn connection_count(&self) -> usize {
        self.pool
            .clients()
            .iter()
            .map(|c| c.active_connections().len())
            .sum()
    }

    pub fn stats(&self) -> &ConnectionStats {
        &self.stats
    }

    /// Close every connection now (chaos). Restarting each client's connection task drops the old
    /// sockets; fred's `force_reconnection` would keep healthy ones. Returns how many were open.
    pub fn close_all(&self) -> usize {
        let count = self.connection_count();
        self.stats.mark_down();
        for client in self.pool.clients() {
            drop(client.connect());
        }
        let trackers = self.trackers.lock().map(|t| t.clone()).unwrap_or_default();
        for client in trackers {
            drop(client.connect());
        }
        count
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn settings() -> ClusterRedisSettings {
        ClusterRedisSettings {
            cluster: cacheserver_config::ClusterAddrs {
                addrs: vec!["127.0.0.1:7100".into(), "127.0.0.1:7101".into()],
            },
            max_retries: 2,
            min_retry_backoff: Duration::from_millis(8),
            max_retry_backoff: Duration::from_millis(512),
            dial_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(3),
            pool_size: 4,
            pool_timeout: Duration::from_secs(4),
            ..ClusterRedisSettings::default()
        }
    }

    #[test]
    fn maps_every_option() {
        let o = client_options(&settings()).unwrap();
        let ServerConfig::Clustered { hosts, .. } = &o.config.server else {
            panic!("not clustered")
        };
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[1].port, 7101);
        assert!(!o.config.fail_fast);
        assert_eq!(
            o.performance.default_command_timeout,
            Duration::from_secs(3)
        );
        assert_eq!(o.connection.connection_timeout, Duration::from_secs(5));
        assert_eq!(
            o.connection.internal_command_timeout,
            Duration::from_secs(5)
        );
        assert_eq!(o.connection.max_command_attempts, 3);
        assert_eq!(
            o.connection.unresponsive.max_timeout,
            Some(Duration::from_secs(3))
        );
        assert_eq!(o.pool_size, 4);
        let ReconnectPolicy::Exponential {
            max_attempts,
            min_delay,
            max_delay,
            base,
            ..
        } = o.reconnect
        else {
            panic!("not exponential")
        };
        assert_eq!((max_attempts, min_delay, max_delay, base), (0, 8, 512, 2));
    }

    #[test]
    fn credentials_are_passed_on() {
        let mut s = settings();
        s.username = Some("app".into());
        s.password = Some("pw".to_owned().into());
        let o = client_options(&s).unwrap();
        assert_eq!(o.config.username.as_deref(), Some("app"));
        assert_eq!(o.config.password.as_deref(), Some("pw"));
    }

    #[test]
    fn bad_address_is_a_config_error() {
        let mut s = settings();
        s.cluster.addrs = vec!["nowhere".into()];
        assert!(matches!(client_options(&s), Err(RedisError::Config(_))));
    }
}
