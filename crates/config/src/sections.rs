//! Sections of `config.yaml`. Defaults are the documented ones; zero durations mean "default".

use crate::duration::{self, or_default};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    pub host: String,
    /// 0 picks a free port (tests use this).
    pub port: u16,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    pub rate_limit: RateLimitSettings,
    pub cors: CorsSettings,
    pub cache: crate::CacheSettings,
    /// Event streams (SSE) one api process keeps open at once (≤ 0: default 1000); beyond it
    /// a new one is answered 503.
    pub max_event_streams: i64,
    /// How often an idle event stream sends a comment line, so proxies keep it open (default
    /// 15s).
    #[serde(deserialize_with = "duration::deserialize")]
    pub event_heartbeat: Duration,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            rate_limit: RateLimitSettings::default(),
            cors: CorsSettings::default(),
            cache: crate::CacheSettings::default(),
            max_event_streams: 1000,
            event_heartbeat: Duration::from_secs(15),
        }
    }
}

impl ApiSettings {
    pub(crate) fn apply_defaults(&mut self) {
        let default = Self::default();
        if self.max_event_streams <= 0 {
            self.max_event_streams = default.max_event_streams;
        }
        or_default(&mut self.event_heartbeat, default.event_heartbeat);
    }
}

/// `api.cors`: which browser origins may call the api (default: none, no CORS headers).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsSettings {
    /// Origins as a browser sends them (`scheme://host[:port]`, no path), or `*` alone for any
    /// origin (never with credentials). Empty: CORS is off.
    pub allowed_origins: Vec<String>,
}

impl CorsSettings {
    pub fn is_enabled(&self) -> bool {
        !self.allowed_origins.is_empty()
    }

    /// `*` alone allows every origin.
    pub fn any_origin(&self) -> bool {
        self.allowed_origins.iter().any(|o| o == "*")
    }

    /// Every entry is an origin a browser can send: `http(s)://host[:port]`, or `*` alone.
    pub fn validate_origins(&self) -> Result<(), String> {
        if self.any_origin() && self.allowed_origins.len() > 1 {
            return Err("`*` allows every origin: list it alone".into());
        }
        match self
            .allowed_origins
            .iter()
            .find(|o| *o != "*" && !is_origin(o))
        {
            Some(bad) => Err(format!(
                "`{bad}` is not an origin (scheme://host[:port], http or https, no path or \
                 trailing slash)"
            )),
            None => Ok(()),
        }
    }
}

fn is_origin(origin: &str) -> bool {
    let Some(authority) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    let (host, port) = match authority.rsplit_once(':') {
        // An IPv6 literal's colons are inside brackets.
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    host_ok && port_ok
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageType {
    /// Redis Cluster while it answers, in-memory while it does not.
    Auto,
    /// Redis Cluster only; requests are let through (and counted) while it is down.
    Redis,
    /// In process; never touches Redis.
    Memory,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub requests_per_minute: i64,
    pub requests_per_hour: i64,
    pub storage_type: StorageType,
    /// Peers (IPs or CIDRs) whose `X-Forwarded-For` / `Forwarded` headers are believed.
    pub trusted_proxies: Vec<String>,
    /// Budget for one limiter call to Redis before falling back (default 150ms).
    #[serde(deserialize_with = "duration::deserialize")]
    pub redis_timeout: Duration,
    /// Clients whose state one api instance keeps in memory (≤ 0: default 100,000). At the cap
    /// the least recently seen client's local state is dropped.
    pub max_tracked_clients: i64,
    /// Coalesce concurrent requests into one Lua call per bucket, with spare units for bursty
    /// clients (default). `false`: one Lua call per request and nothing decided locally — the
    /// naive limiter, kept so `just bench` can measure what batching buys.
    pub batching: bool,
    /// Limits per route and key; the first matching rule applies, the limits above elsewhere.
    pub rules: Vec<RateLimitRule>,
}

/// One entry of `api.rate_limit.rules`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRule {
    /// Names the rule in `RateLimit-Policy`, metrics and Redis keys: `[A-Za-z0-9_-]`, unique.
    pub name: String,
    /// Requests whose path is this prefix (whole segments: `/api/jobs` matches `/api/jobs/1`,
    /// not `/api/jobsx`).
    pub path_prefix: String,
    /// HTTP methods the rule covers; empty: all.
    #[serde(default)]
    pub methods: Vec<String>,
    /// `ip` (one count per client IP for every route of the rule), `ip+route` (per client IP and
    /// route), or `header:<Name>` (per header value, hashed; the client IP when it is missing).
    #[serde(default = "default_rule_key")]
    pub key: String,
    /// Missing: the top-level `requests_per_minute`.
    pub requests_per_minute: Option<i64>,
    /// Missing: the top-level `requests_per_hour`.
    pub requests_per_hour: Option<i64>,
}

fn default_rule_key() -> String {
    "ip".into()
}

/// What a rule counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleKey {
    Ip,
    IpRoute,
    Header(String),
}

impl RateLimitRule {
    pub fn parsed_key(&self) -> Result<RuleKey, String> {
        let key = self.key.trim();
        match key {
            "ip" => Ok(RuleKey::Ip),
            "ip+route" => Ok(RuleKey::IpRoute),
            _ => match key.strip_prefix("header:").map(str::trim) {
                Some(name)
                    if !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
                {
                    Ok(RuleKey::Header(name.to_ascii_lowercase()))
                }
                _ => Err(format!(
                    "`{key}` is not `ip`, `ip+route` or `header:<Name>`"
                )),
            },
        }
    }
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            requests_per_minute: 60,
            requests_per_hour: 1000,
            storage_type: StorageType::Auto,
            trusted_proxies: Vec::new(),
            redis_timeout: Duration::from_millis(150),
            max_tracked_clients: 100_000,
            batching: true,
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChaosSettings {
    pub enabled: bool,
    /// When set, chaos routes need `Authorization: Bearer <token>`.
    pub token: Option<secrecy::SecretString>,
    /// Resets closer together than this answer 429 unless `force` (default 1s).
    #[serde(deserialize_with = "duration::deserialize")]
    pub cooldown: Duration,
}

impl Default for ChaosSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            token: None,
            cooldown: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobqueueSettings {
    /// The default queue: jobs that name none go here (`[A-Za-z0-9_.-]{1,64}`). Its Redis keys
    /// keep their untagged `<queue>:` prefix so jobs stored by earlier versions still run; every
    /// other queue's keys are `{<queue>}:...`.
    #[serde(alias = "default_queue")]
    pub queue: String,
    /// Declared queues (`[{name, weight}]`): listed by `GET /api/queues` even while empty, and
    /// served by a worker started without `--queues`.
    pub queues: Vec<crate::QueueSettings>,
    /// Declared schedules (cron → job), applied by every worker at start; for the same name
    /// they win over schedules made through the api.
    pub schedules: Vec<crate::ScheduleSettings>,
    pub default_delay_seconds: i64,
    pub default_max_retry: i64,
    /// How long finished jobs stay inspectable (default 24h). Dead jobs stay until deleted.
    #[serde(deserialize_with = "duration::deserialize")]
    pub done_retention: Duration,
    /// Budget for one enqueue before the api answers 503 (default 2s).
    #[serde(deserialize_with = "duration::deserialize")]
    pub enqueue_timeout: Duration,
    /// When set, the job routes need `Authorization: Bearer <key>`.
    pub api_key: Option<secrecy::SecretString>,
    /// Longest run of a job whose type and registration name none (default 5m).
    #[serde(deserialize_with = "duration::deserialize")]
    pub default_timeout: Duration,
    /// Entries kept in each queue's `events` stream (approximately: `XADD MAXLEN ~`; default
    /// 10,000). 0 turns the stream off: no event is written, the SSE routes answer 404 and
    /// `?wait=` re-reads the waited jobs' states once a second instead.
    pub events_max_len: u64,
    pub worker: WorkerSettings,
    pub webhook: WebhookSettings,
    /// Timings of the workers' scheduler (`jobqueue.schedules`' ticks).
    pub scheduler: SchedulerSettings,
}

/// `jobqueue.scheduler`: when the workers' scheduler claims, recovers and re-reads ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSettings {
    /// A tick is claimed and its job stored this long before the tick, due at the tick
    /// (default 250ms).
    #[serde(deserialize_with = "duration::deserialize")]
    pub enqueue_ahead: Duration,
    /// A tick reached later than this after its time was missed (`missed: skip | run_once`
    /// applies; default 5s).
    #[serde(deserialize_with = "duration::deserialize")]
    pub missed_after: Duration,
    /// A claim its worker did not confirm within this is enqueued again by any worker (default
    /// 5s).
    #[serde(deserialize_with = "duration::deserialize")]
    pub recover_after: Duration,
    /// Longest sleep between passes: new, changed and resumed schedules are seen within this
    /// (default 1s).
    #[serde(deserialize_with = "duration::deserialize")]
    pub reload_every: Duration,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            enqueue_ahead: Duration::from_millis(250),
            missed_after: Duration::from_secs(5),
            recover_after: Duration::from_secs(5),
            reload_every: Duration::from_secs(1),
        }
    }
}

/// The `http:webhook` job type.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// `host` or `host:port` a webhook may call; empty: webhook jobs are disabled.
    pub allowed_hosts: Vec<String>,
    /// Budget of one HTTP call, connect included (default 10s).
    #[serde(deserialize_with = "duration::deserialize")]
    pub timeout: Duration,
    /// At most `max` calls per `per` to one host (`host:port`, the job's limit key), over all
    /// workers: the default queue's `key_rate_limit` when its entry sets none (default: none).
    #[serde(default)]
    pub per_host_rate_limit: Option<crate::QueueRateLimit>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            timeout: Duration::from_secs(10),
            per_host_rate_limit: None,
        }
    }
}

impl Default for JobqueueSettings {
    fn default() -> Self {
        Self {
            queue: "dm-jobqueue".into(),
            queues: Vec::new(),
            schedules: Vec::new(),
            default_delay_seconds: 180,
            default_max_retry: 10,
            done_retention: Duration::from_secs(24 * 3600),
            enqueue_timeout: Duration::from_secs(2),
            api_key: None,
            default_timeout: Duration::from_secs(300),
            events_max_len: crate::DEFAULT_EVENTS_MAX_LEN,
            worker: WorkerSettings::default(),
            webhook: WebhookSettings::default(),
            scheduler: SchedulerSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Jobs run at once by one worker (≤ 0: default 8).
    pub concurrency: i64,
    /// Queues this worker serves, `name=weight,...` in order (e.g. `critical=6,default=3,low=1`;
    /// a missing weight is 1). Empty: the default queue and every declared queue.
    pub queues: String,
    /// Serve the queues in strict order (always the first with a due job) instead of by weight.
    pub strict: bool,
    /// Unique, stable worker name; empty: `<hostname>-<pid>`.
    pub name: String,
    /// Address of the worker's `/health` and `/metrics` (default 127.0.0.1).
    pub health_host: String,
    /// Port of the worker's `/health` and `/metrics`; 0 picks a free one.
    pub health_port: u16,
    /// Longest an idle worker sleeps before it looks at Redis again (default 1s); a job due
    /// sooner, a new job or a resume wakes it at once.
    #[serde(deserialize_with = "duration::deserialize")]
    pub poll_interval: Duration,
    /// On SIGTERM, how long in-flight jobs may take to finish (default 30s).
    #[serde(deserialize_with = "duration::deserialize")]
    pub shutdown_grace: Duration,
    /// Delay before the first retry of a failed job; doubles per failure (default 1s).
    #[serde(deserialize_with = "duration::deserialize")]
    pub retry_backoff: Duration,
    /// Longest delay between retries (default 5m).
    #[serde(deserialize_with = "duration::deserialize")]
    pub retry_backoff_max: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 8,
            queues: String::new(),
            strict: false,
            name: String::new(),
            health_host: "127.0.0.1".into(),
            health_port: 8082,
            poll_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            retry_backoff: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSettings {
    /// A `tracing` filter, e.g. `info` or `info,cacheserver_api=debug`. `RUST_LOG` wins when set.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Pretty,
        }
    }
}

impl RateLimitSettings {
    /// A zero (or, for counts, negative) value read from a file means the default: kept from
    /// before the defaults moved into `Default`, which is now their one home.
    pub(crate) fn apply_defaults(&mut self) {
        let default = Self::default();
        or_default(&mut self.redis_timeout, default.redis_timeout);
        self.trusted_proxies.retain(|p| !p.trim().is_empty());
        if self.max_tracked_clients <= 0 {
            self.max_tracked_clients = default.max_tracked_clients;
        }
    }

    /// The first problem of `rules`, naming the rule's index and field.
    pub fn validate_rules(&self) -> Result<(), String> {
        const METHODS: [&str; 9] = [
            "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
        ];
        let mut names = std::collections::HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let at = |field: &str, reason: String| Err(format!("rules[{i}].{field}: {reason}"));
            let name_ok = !rule.name.is_empty()
                && rule.name.len() <= 64
                && rule
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !name_ok {
                return at(
                    "name",
                    format!("`{}` must be 1-64 of A-Z a-z 0-9 - _", rule.name),
                );
            }
            if rule.name == "minute" || rule.name == "hour" || !names.insert(&rule.name) {
                return at("name", format!("`{}` is used twice or reserved", rule.name));
            }
            if !rule.path_prefix.starts_with('/') {
                return at(
                    "path_prefix",
                    format!("`{}` must start with `/`", rule.path_prefix),
                );
            }
            if let Some(bad) = rule
                .methods
                .iter()
                .find(|m| !METHODS.contains(&m.to_ascii_uppercase().as_str()))
            {
                return at("methods", format!("`{bad}` is not an HTTP method"));
            }
            if let Err(reason) = rule.parsed_key() {
                return at("key", reason);
            }
            for (field, value) in [
                ("requests_per_minute", rule.requests_per_minute),
                ("requests_per_hour", rule.requests_per_hour),
            ] {
                if let Some(v) = value.filter(|v| *v < 1) {
                    return at(field, format!("must be ≥ 1, got {v}"));
                }
            }
        }
        Ok(())
    }

    /// Trusted proxies as networks; a bare IP is a /32 (or /128).
    pub fn trusted_networks(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies.iter().map(|p| parse_net(p)).collect()
    }
}

fn parse_net(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{text}` is not an IP address or CIDR"))
}

impl ChaosSettings {
    pub(crate) fn apply_defaults(&mut self) {
        or_default(&mut self.cooldown, Self::default().cooldown);
        drop_empty_secret(&mut self.token);
    }
}

impl JobqueueSettings {
    pub(crate) fn apply_defaults(&mut self) {
        let default = Self::default();
        or_default(&mut self.done_retention, default.done_retention);
        or_default(&mut self.enqueue_timeout, default.enqueue_timeout);
        or_default(&mut self.default_timeout, default.default_timeout);
        or_default(&mut self.webhook.timeout, default.webhook.timeout);
        let (sched, default_sched) = (&mut self.scheduler, default.scheduler);
        or_default(&mut sched.enqueue_ahead, default_sched.enqueue_ahead);
        or_default(&mut sched.missed_after, default_sched.missed_after);
        or_default(&mut sched.recover_after, default_sched.recover_after);
        or_default(&mut sched.reload_every, default_sched.reload_every);
        self.webhook.allowed_hosts = self
            .webhook
            .allowed_hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        drop_empty_secret(&mut self.api_key);
        let (worker, default) = (&mut self.worker, default.worker);
        if worker.concurrency <= 0 {
            worker.concurrency = default.concurrency;
        }
        or_default(&mut worker.poll_interval, default.poll_interval);
        or_default(&mut worker.shutdown_grace, default.shutdown_grace);
        or_default(&mut worker.retry_backoff, default.retry_backoff);
        or_default(&mut worker.retry_backoff_max, default.retry_backoff_max);
        worker.retry_backoff_max = worker.retry_backoff_max.max(worker.retry_backoff);
    }
}

fn drop_empty_secret(secret: &mut Option<secrecy::SecretString>) {
    use secrecy::ExposeSecret;
    if secret
        .as_ref()
        .is_some_and(|s| s.expose_secret().is_empty())
    {
        *secret = None;
    }
}
