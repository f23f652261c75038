//! Rate limiting with a minute and an hour fixed window, per rule and client.
//!
//! Backends: the Redis Cluster (one atomic Lua call decides both windows of many clients, see
//! `batch`), or process memory. `auto` uses Redis while it answers within `redis_timeout` and
//! memory otherwise; `redis` lets requests through (fail open) while Redis is down; `memory`
//! never touches Redis. Local state (memory counts, spare units, exhausted windows) lives in one
//! bounded map (`state`). Time comes from the [`Clock`] passed in.
//!
//! Modules depend one way: middleware → mod → batch → {lua, keys, state}; rules → keys.

mod batch;
mod client_ip;
mod clock;
mod keys;
mod lua;
mod middleware;
mod rules;
mod state;

pub use client_ip::client_ip;
pub use clock::Clock;
pub use keys::top_level_keys;
pub use middleware::rate_limit;

/// The Lua script the Redis backend runs (benchmarks load it into `redis-benchmark`).
pub const LUA_SCRIPT: &str = lua::SCRIPT;

use crate::redis_cluster::RedisCluster;
use cacheserver_config::{RateLimitSettings, StorageType};
use keys::ClientKey;
use std::sync::Arc;

pub const MINUTE_SECS: u64 = 60;
pub const HOUR_SECS: u64 = 3600;

/// One window's state as seen by a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the window resets.
    pub reset_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Decided by a Lua call.
    Redis,
    /// A spare unit taken in Redis earlier for this client.
    Local,
    /// Refused: a window is known exhausted until it resets (no Redis call).
    Cached,
    Memory,
    /// Redis was unreachable in `redis` mode: let through, not counted.
    FailOpen,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Local => "local",
            Self::Cached => "cached",
            Self::Memory => "memory",
            Self::FailOpen => "fail_open",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub minute: Quota,
    pub hour: Quota,
    pub backend: Backend,
}

impl Decision {
    /// Seconds until a refused client may try again: the latest reset of the exhausted windows.
    pub fn retry_after_secs(&self) -> u64 {
        [self.minute, self.hour]
            .iter()
            .filter(|q| q.remaining == 0)
            .map(|q| q.reset_secs)
            .max()
            .unwrap_or(1)
            .max(1)
    }
}

/// Counts of one client in the current windows, after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    pub minute: u64,
    pub hour: u64,
}

/// The current minute and hour windows, computed once per decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Windows {
    pub minute: u64,
    pub hour: u64,
    pub minute_reset: u64,
    pub hour_reset: u64,
}

impl Windows {
    pub fn at(unix_secs: u64) -> Self {
        Self {
            minute: unix_secs / MINUTE_SECS,
            hour: unix_secs / HOUR_SECS,
            minute_reset: MINUTE_SECS - unix_secs % MINUTE_SECS,
            hour_reset: HOUR_SECS - unix_secs % HOUR_SECS,
        }
    }
}

/// Limits of both windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_minute: u64,
    pub per_hour: u64,
}

impl Limits {
    pub(crate) fn decision(
        &self,
        allowed: bool,
        counts: Counts,
        windows: Windows,
        backend: Backend,
    ) -> Decision {
        Decision {
            allowed,
            minute: Quota {
                limit: self.per_minute,
                remaining: self.per_minute.saturating_sub(counts.minute),
                reset_secs: windows.minute_reset,
            },
            hour: Quota {
                limit: self.per_hour,
                remaining: self.per_hour.saturating_sub(counts.hour),
                reset_secs: windows.hour_reset,
            },
            backend,
        }
    }
}

/// The limiter the middleware calls. Cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

struct Inner {
    /// `api.rate_limit.enabled`: when false the middleware lets every request through untouched.
    enabled: bool,
    mode: StorageType,
    rules: rules::Rules,
    clock: Clock,
    states: Arc<state::ClientStates>,
    redis: Option<(RedisCluster, batch::Batcher)>,
    trusted_proxies: Box<[ipnet::IpNet]>,
}

impl Limiter {
    /// `redis` is `None` when no cluster is configured: every mode then limits in memory. Starts
    /// the bucket tasks, so it runs inside a Tokio runtime.
    pub fn new(
        settings: &RateLimitSettings,
        redis: Option<RedisCluster>,
        clock: Clock,
    ) -> Result<Self, String> {
        let rules = rules::Rules::new(settings)?;
        let max_clients = usize::try_from(settings.max_tracked_clients)
            .unwrap_or(100_000)
            .max(1);
        let states = Arc::new(state::ClientStates::new(max_clients));
        let redis = match settings.storage_type {
            StorageType::Memory => None,
            _ => redis.map(|cluster| {
                let batcher = batch::Batcher::start(
                    cluster.clone(),
                    settings.redis_timeout,
                    clock.clone(),
                    states.clone(),
                    rules.names(),
                );
                (cluster, batcher)
            }),
        };
        let inner = Inner {
            enabled: settings.enabled,
            mode: settings.storage_type,
            rules,
            clock,
            states,
            redis,
            trusted_proxies: settings.trusted_networks()?.into(),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.enabled
    }

    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    pub fn trusted_proxies(&self) -> &[ipnet::IpNet] {
        &self.inner.trusted_proxies
    }

    pub(crate) fn rules(&self) -> &rules::Rules {
        &self.inner.rules
    }

    /// Which backend decides right now: `redis`, `memory` or `fail_open`.
    pub fn active_backend(&self) -> Backend {
        match &self.inner.redis {
            Some((cluster, _)) if cluster.is_connected() => Backend::Redis,
            Some(_) if self.inner.mode == StorageType::Redis => Backend::FailOpen,
            _ => Backend::Memory,
        }
    }

    /// Decide one request of `key`.
    pub(crate) async fn check(&self, key: ClientKey) -> Decision {
        let inner = &*self.inner;
        let limits = inner.rules.get(key.rule).limits;
        let windows = Windows::at(inner.clock.now_secs());
        let Some((cluster, batcher)) = &inner.redis else {
            let local = inner.states.count_in_memory(key, limits, windows);
            return limits.decision(local.allowed, local.counts, windows, local.backend);
        };
        let hot = match inner.states.decide_locally(key, limits, windows) {
            state::Lookup::Decided(local) => {
                return limits.decision(local.allowed, local.counts, windows, local.backend)
            }
            state::Lookup::AskRedis { hot } => hot,
        };
        if !cluster.is_connected() {
            return self.fallback(
                key,
                limits,
                windows,
                &crate::redis_cluster::RedisError::NotConnected,
            );
        }
        // Boxed: the Redis path's future is large, and actix moves each request's future into
        // boxes; out of line, the common paths stay small and cheap to move.
        match Box::pin(batcher.decide(key, limits, hot)).await {
            Ok(a) => limits.decision(a.allowed, a.counts, a.windows, Backend::Redis),
            Err(error) => self.fallback(key, limits, windows, &error),
        }
    }

    fn fallback(
        &self,
        key: ClientKey,
        limits: Limits,
        windows: Windows,
        error: &crate::redis_cluster::RedisError,
    ) -> Decision {
        metrics::counter!("ratelimit_redis_failures_total").increment(1);
        tracing::debug!(%error, mode = ?self.inner.mode, "rate limiter: Redis unusable, falling back");
        if self.inner.mode == StorageType::Redis {
            return limits.decision(
                true,
                Counts { minute: 0, hour: 0 },
                windows,
                Backend::FailOpen,
            );
        }
        let local = self.inner.states.count_in_memory(key, limits, windows);
        limits.decision(local.allowed, local.counts, windows, local.backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_reset_at_their_boundaries() {
        let w = Windows::at(3600 * 5 + 61);
        assert_eq!((w.minute, w.hour), (301, 5));
        assert_eq!((w.minute_reset, w.hour_reset), (59, 3600 - 61));
    }

    #[test]
    fn retry_after_is_the_latest_exhausted_window() {
        let limits = Limits {
            per_minute: 2,
            per_hour: 3,
        };
        let w = Windows::at(30);
        let d = limits.decision(false, Counts { minute: 2, hour: 2 }, w, Backend::Memory);
        assert_eq!(d.retry_after_secs(), 30);
        let d = limits.decision(false, Counts { minute: 2, hour: 3 }, w, Backend::Memory);
        assert_eq!(d.retry_after_secs(), 3570);
    }
}
