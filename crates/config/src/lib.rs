//! Settings for every cacheserver service.
//!
//! Layered, later wins: the typed defaults (each section's `Default`, their one home), then
//! `config/base/{cacheserver,config}.yaml` (Redis connections; everything else), then the same
//! two files in `config/{APP_ENV}/` holding only what that environment changes (optional), then
//! `APP__SECTION__KEY` environment overrides. `APP_ENV` is develop | staging | production | test
//! (default develop); `APP_CONFIG_DIR` moves the `config` root. Each service reads only its own
//! sections.

mod cache;
mod duration;
mod error;
mod queues;
mod redis;
mod schedules;
mod sections;

pub use cache::{CacheInvalidation, CacheKey, CacheRoute, CacheSettings, LocalCacheSettings};
pub use duration::parse as parse_duration;
pub use error::ConfigError;
pub use queues::{
    default_served_queues, parse_served_queues, queue_name_problem, QueueRateLimit, QueueSettings,
    ServedQueue, MAX_QUEUE_CONCURRENCY, MAX_QUEUE_NAME, MAX_QUEUE_WEIGHT, MAX_RATE_MAX,
    MAX_RATE_PER,
};
pub use redis::{
    default_pool_size, CacheServerSettings, ClusterAddrs, ClusterRedisSettings, RedisSettings,
    SentinelSettings, SingleRedisSettings, TlsSettings,
};
pub use schedules::{
    parse_cron, parse_timezone, schedule_name_problem, Missed, Overlap, ScheduleSettings,
    ScheduledJobSettings, MAX_SCHEDULE_NAME,
};
pub use secrecy::{ExposeSecret, SecretString};
pub use sections::{
    ApiSettings, ChaosSettings, CorsSettings, JobqueueSettings, LogFormat, LoggingSettings,
    RateLimitRule, RateLimitSettings, RuleKey, SchedulerSettings, ServerSettings, StorageType,
    WebhookSettings, WorkerSettings,
};

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Longest delay a job may be registered with.
pub const MAX_DELAY_SECONDS: i64 = 30 * 24 * 3600;
/// Largest `max_retry` a job may ask for.
pub const MAX_RETRY_LIMIT: i64 = 100;
/// Default of `jobqueue.events_max_len`: entries kept per queue's event stream.
pub const DEFAULT_EVENTS_MAX_LEN: u64 = 10_000;
/// Largest `jobqueue.events_max_len` (a stream entry costs ~100 B: at most ~1 GB per queue).
pub const MAX_EVENTS_MAX_LEN: u64 = 10_000_000;

const CACHE_SERVER_FILE: &str = "cacheserver.yaml";
const CONFIG_FILE: &str = "config.yaml";
/// The layer every environment starts from.
const BASE_DIR: &str = "base";
/// Keys that hold secrets: they may only come from the environment.
const SECRET_KEYS: [&str; 5] = [
    "cache_server.redis.default.password",
    "cache_server.redis.jobqueue.password",
    "cache_server.redis.jobqueue.sentinel.password",
    "chaos.token",
    "jobqueue.api_key",
];
/// Keys whose environment value is a comma separated list.
const LIST_KEYS: [&str; 5] = [
    "api.cors.allowed_origins",
    "cache_server.redis.default.cluster.addrs",
    "cache_server.redis.jobqueue.sentinel.addrs",
    "api.rate_limit.trusted_proxies",
    "jobqueue.webhook.allowed_hosts",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Develop,
    Staging,
    Production,
    Test,
}

impl AppEnv {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Develop => "develop",
            Self::Staging => "staging",
            Self::Production => "production",
            Self::Test => "test",
        }
    }
}

impl std::str::FromStr for AppEnv {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "develop" => Ok(Self::Develop),
            "staging" => Ok(Self::Staging),
            "production" => Ok(Self::Production),
            "test" => Ok(Self::Test),
            _ => Err(ConfigError::UnknownEnvironment(s.to_owned())),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub api: ApiSettings,
    pub chaos: ChaosSettings,
    pub jobqueue: JobqueueSettings,
    pub logging: LoggingSettings,
    pub cache_server: CacheServerSettings,
}

impl Settings {
    /// Load with `APP_ENV`, `APP_CONFIG_DIR` and `APP__*` from the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        let env: AppEnv = std::env::var("APP_ENV").unwrap_or_default().parse()?;
        let root =
            std::env::var_os("APP_CONFIG_DIR").map_or_else(default_config_root, PathBuf::from);
        Self::load_from(&root, env, None)
    }

    /// Load `root/base/` overlaid with `root/{env}/`. `env_vars`, when given, replaces the
    /// process environment for the `APP__*` overrides (tests use it).
    pub fn load_from(
        root: &Path,
        env: AppEnv,
        env_vars: Option<HashMap<String, String>>,
    ) -> Result<Self, ConfigError> {
        let layers = Layers {
            base: root.join(BASE_DIR),
            env: root.join(env.as_str()),
        };
        for name in [CACHE_SERVER_FILE, CONFIG_FILE] {
            let file = layers.base.join(name);
            if !file.is_file() {
                return Err(ConfigError::MissingFile {
                    file,
                    env: env.as_str(),
                });
            }
        }
        let load_err = |source| ConfigError::Load {
            files: source_of(&layers, &source),
            source: Box::new(source),
        };
        let yaml =
            |file: PathBuf, required| File::from(file).format(FileFormat::Yaml).required(required);
        let from_files = [&layers.base, &layers.env]
            .into_iter()
            .flat_map(|dir| [dir.join(CACHE_SERVER_FILE), dir.join(CONFIG_FILE)])
            .fold(Config::builder(), |b, f| {
                let required = f.starts_with(&layers.base);
                b.add_source(yaml(f, required))
            })
            .build()
            .map_err(load_err)?;
        reject_secrets_in_files(&from_files, &layers)?;

        let environment = LIST_KEYS.iter().fold(
            Environment::with_prefix("APP")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .try_parsing(true)
                .source(env_vars),
            |e, key| e.with_list_parse_key(key),
        );
        let mut settings: Settings = Config::builder()
            .add_source(from_files)
            .add_source(environment)
            .build()
            .and_then(Config::try_deserialize)
            .map_err(load_err)?;
        settings.apply_defaults();
        settings.validate_layers(&layers)?;
        Ok(settings)
    }

    fn apply_defaults(&mut self) {
        self.api.apply_defaults();
        self.api.rate_limit.apply_defaults();
        self.api.cache.apply_defaults();
        self.chaos.apply_defaults();
        self.jobqueue.apply_defaults();
        self.cache_server.redis.default.apply_defaults();
        self.cache_server.redis.jobqueue.apply_defaults();
    }

    /// Reject values that parse but cannot work. The error names the file (in `dir`, one
    /// layer) and the key.
    pub fn validate(&self, dir: &Path) -> Result<(), ConfigError> {
        let layers = Layers {
            base: dir.to_path_buf(),
            env: dir.to_path_buf(),
        };
        self.validate_layers(&layers)
    }

    fn validate_layers(&self, layers: &Layers) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: String| {
            Err(ConfigError::Invalid {
                file: layers.file_for_key(key),
                key,
                reason,
            })
        };
        let rl = &self.api.rate_limit;
        if self.server.host.trim().is_empty() {
            return invalid("server.host", "must not be empty".into());
        }
        if rl.requests_per_minute < 1 {
            return invalid(
                "api.rate_limit.requests_per_minute",
                format!("must be ≥ 1, got {}", rl.requests_per_minute),
            );
        }
        if rl.requests_per_hour < 1 {
            return invalid(
                "api.rate_limit.requests_per_hour",
                format!("must be ≥ 1, got {}", rl.requests_per_hour),
            );
        }
        if let Err(reason) = rl.trusted_networks() {
            return invalid("api.rate_limit.trusted_proxies", reason);
        }
        if let Err(reason) = rl.validate_rules() {
            return invalid("api.rate_limit.rules", reason);
        }
        if let Err(reason) = self.api.cors.validate_origins() {
            return invalid("api.cors.allowed_origins", reason);
        }
        if self.api.max_event_streams > 1_000_000 {
            return invalid("api.max_event_streams", "must be ≤ 1,000,000".into());
        }
        if let Err(reason) = self.api.cache.validate_rules() {
            return invalid("api.cache", reason);
        }
        let cluster = &self.cache_server.redis.default;
        if rl.storage_type == StorageType::Redis && !cluster.is_enabled() {
            return invalid(
                "cache_server.redis.default.cluster.addrs",
                "storage_type `redis` needs at least one cluster address".into(),
            );
        }
        if let Some(bad) = cluster.cluster.addrs.iter().find(|a| !is_host_port(a)) {
            return invalid(
                "cache_server.redis.default.cluster.addrs",
                format!("`{bad}` is not host:port"),
            );
        }
        if !is_host_port(&self.cache_server.redis.jobqueue.addr) {
            let addr = &self.cache_server.redis.jobqueue.addr;
            return invalid(
                "cache_server.redis.jobqueue.addr",
                format!("`{addr}` is not host:port"),
            );
        }
        self.validate_redis_security(&invalid)?;
        self.validate_jobqueue(invalid)
    }

    /// TLS tables that cannot work, and a Sentinel master without sentinels.
    fn validate_redis_security(
        &self,
        invalid: &impl Fn(&'static str, String) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        let redis = &self.cache_server.redis;
        if let Some(reason) = redis.default.tls.problem() {
            return invalid("cache_server.redis.default.tls", reason.into());
        }
        if let Some(reason) = redis.jobqueue.tls.problem() {
            return invalid("cache_server.redis.jobqueue.tls", reason.into());
        }
        let sentinel = &redis.jobqueue.sentinel;
        if sentinel.is_enabled() && sentinel.addrs.is_empty() {
            return invalid(
                "cache_server.redis.jobqueue.sentinel.addrs",
                "sentinel.master_name is set: list at least one sentinel host:port".into(),
            );
        }
        if let Some(bad) = sentinel.addrs.iter().find(|a| !is_host_port(a)) {
            return invalid(
                "cache_server.redis.jobqueue.sentinel.addrs",
                format!("`{bad}` is not host:port"),
            );
        }
        Ok(())
    }

    fn validate_jobqueue(
        &self,
        invalid: impl Fn(&'static str, String) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        let jq = &self.jobqueue;
        if let Some(problem) = queue_name_problem(&jq.queue) {
            return invalid("jobqueue.queue", problem);
        }
        if let Err(problem) = queues::validate_declared(&jq.queues) {
            return invalid("jobqueue.queues", problem);
        }
        if let Some(problem) = jq
            .webhook
            .per_host_rate_limit
            .and_then(|r| queues::rate_problem("per_host_rate_limit", &r))
        {
            return invalid("jobqueue.webhook.per_host_rate_limit", problem);
        }
        if let Err(problem) = schedules::validate_declared(&jq.schedules) {
            return invalid("jobqueue.schedules", problem);
        }
        if let Err(problem) = parse_served_queues(&jq.worker.queues) {
            return invalid("jobqueue.worker.queues", problem);
        }
        if !(0..=MAX_DELAY_SECONDS).contains(&jq.default_delay_seconds) {
            return invalid(
                "jobqueue.default_delay_seconds",
                format!("must be 0..={MAX_DELAY_SECONDS}"),
            );
        }
        if !(0..=MAX_RETRY_LIMIT).contains(&jq.default_max_retry) {
            return invalid(
                "jobqueue.default_max_retry",
                format!("must be 0..={MAX_RETRY_LIMIT}"),
            );
        }
        if jq.events_max_len > MAX_EVENTS_MAX_LEN {
            return invalid(
                "jobqueue.events_max_len",
                format!("must be 0 (off) ..={MAX_EVENTS_MAX_LEN}"),
            );
        }
        let minute = std::time::Duration::from_secs(60);
        if jq.scheduler.enqueue_ahead > minute {
            return invalid("jobqueue.scheduler.enqueue_ahead", "must be ≤ 1m".into());
        }
        if jq.scheduler.reload_every > minute {
            return invalid("jobqueue.scheduler.reload_every", "must be ≤ 1m".into());
        }
        if jq.worker.concurrency > 1024 {
            return invalid("jobqueue.worker.concurrency", "must be ≤ 1024".into());
        }
        Ok(())
    }
}

fn reject_secrets_in_files(from_files: &Config, layers: &Layers) -> Result<(), ConfigError> {
    for key in SECRET_KEYS {
        if from_files.get_string(key).is_ok_and(|v| !v.is_empty()) {
            let env_name = format!("APP__{}", key.to_ascii_uppercase().replace('.', "__"));
            return Err(ConfigError::Invalid {
                file: layers.file_for_key(key),
                key,
                reason: format!(
                    "secrets may not be written in config files; set {env_name} instead"
                ),
            });
        }
    }
    Ok(())
}

/// Where a bad value came from: the file named by the `config` crate, else the file that holds
/// the key's section (the value may also come from its APP__ override).
fn source_of(layers: &Layers, error: &config::ConfigError) -> String {
    match error {
        config::ConfigError::At {
            origin: Some(origin),
            ..
        } => origin.clone(),
        config::ConfigError::At { key: Some(key), .. } => layers.file_for_key(key),
        _ => format!("{} or {}", layers.base.display(), layers.env.display()),
    }
}

/// The two file layers: `base/` and the environment's directory.
struct Layers {
    base: PathBuf,
    env: PathBuf,
}

impl Layers {
    /// The file that sets `key`: the environment's file when it names the key, else the base
    /// file (the value may also come from its APP__ override).
    fn file_for_key(&self, key: &str) -> String {
        let name = if key.starts_with("cache_server") {
            CACHE_SERVER_FILE
        } else {
            CONFIG_FILE
        };
        let env_file = self.env.join(name);
        let in_env_file = env_file.is_file()
            && Config::builder()
                .add_source(File::from(env_file.as_path()).format(FileFormat::Yaml))
                .build()
                .is_ok_and(|c| c.get::<config::Value>(key).is_ok());
        let file = if in_env_file {
            env_file
        } else {
            self.base.join(name)
        };
        format!("{} (or its APP__ override)", file.display())
    }
}

fn is_host_port(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

/// `./config`, or the workspace's `config` when run from a crate directory (cargo test).
fn default_config_root() -> PathBuf {
    let here = PathBuf::from("config");
    if here.is_dir() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}
