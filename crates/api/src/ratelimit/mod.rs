//! Rate limiting by client IP with a minute and an hour fixed window.
//!
//! Backends: the Redis Cluster (one atomic Lua call decides both windows), or process memory.
//! `auto` uses Redis while it answers within `redis_timeout` and memory otherwise; `redis` lets
//! requests through (fail open) while Redis is down; `memory` never touches Redis.

mod client_ip;
mod coalesce;
mod deny_cache;
mod lease;
mod lua;
mod memory;
mod middleware;

pub use client_ip::client_ip;
pub use middleware::rate_limit;

/// The Lua script the Redis backend runs (benchmarks load it into `redis-benchmark`).
pub const LUA_SCRIPT: &str = lua::SCRIPT;

use crate::redis_cluster::RedisCluster;
use cacheserver_config::{RateLimitSettings, StorageType};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    Redis,
    Memory,
    /// Redis was unreachable in `redis` mode: let through, not counted.
    FailOpen,
    /// Refused from the local cache of exhausted windows: no Redis call needed.
    Cached,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Memory => "memory",
            Self::FailOpen => "fail_open",
            Self::Cached => "cached",
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
    pub fn now() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        Self::at(secs)
    }

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
    /// `api.rate_limit.enabled`: when false the middleware lets every request through untouched.
    enabled: bool,
    mode: StorageType,
    limits: Limits,
    redis: Option<lua::RedisLimiter>,
    memory: memory::MemoryLimiter,
    trusted_proxies: std::sync::Arc<[ipnet::IpNet]>,
    policy_header: actix_web::http::header::HeaderValue,
}

impl Limiter {
    /// `redis` is `None` when no cluster is configured: every mode then limits in memory.
    pub fn new(settings: &RateLimitSettings, redis: Option<RedisCluster>) -> Result<Self, String> {
        let limits = Limits {
            per_minute: u64::try_from(settings.requests_per_minute).map_err(|e| e.to_string())?,
            per_hour: u64::try_from(settings.requests_per_hour).map_err(|e| e.to_string())?,
        };
        let redis = match settings.storage_type {
            StorageType::Memory => None,
            _ => redis.map(|r| lua::RedisLimiter::new(r, limits, settings.redis_timeout)),
        };
        Ok(Self {
            enabled: settings.enabled,
            mode: settings.storage_type,
            limits,
            redis,
            memory: memory::MemoryLimiter::new(limits),
            trusted_proxies: settings.trusted_networks()?.into(),
            policy_header: middleware::policy_header(limits),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    pub fn trusted_proxies(&self) -> &[ipnet::IpNet] {
        &self.trusted_proxies
    }

    /// `RateLimit-Policy` header value (fixed by the limits).
    pub fn policy_header(&self) -> &actix_web::http::header::HeaderValue {
        &self.policy_header
    }

    /// Which backend decides right now: `redis` or `memory`.
    pub fn active_backend(&self) -> Backend {
        match &self.redis {
            Some(redis) if redis.is_usable() => Backend::Redis,
            Some(_) if self.mode == StorageType::Redis => Backend::FailOpen,
            _ => Backend::Memory,
        }
    }

    /// Decide one request of `client`.
    pub async fn check(&self, client: IpAddr) -> Decision {
        let windows = Windows::now();
        let Some(redis) = &self.redis else {
            return self.memory.check(client, windows);
        };
        if let Some(decision) = redis.check_local(client, windows) {
            return decision;
        }
        // Boxed: the Redis path's future is large, and actix moves each request's future into
        // boxes; out of line, the common paths stay small and cheap to move.
        match Box::pin(redis.check_remote(client, windows)).await {
            Ok(decision) => decision,
            Err(error) => self.fallback(client, windows, &error),
        }
    }

    fn fallback(
        &self,
        client: IpAddr,
        windows: Windows,
        error: &crate::redis_cluster::RedisError,
    ) -> Decision {
        metrics::counter!("ratelimit_redis_failures_total").increment(1);
        tracing::debug!(%error, mode = ?self.mode, "rate limiter: Redis unusable, falling back");
        if self.mode == StorageType::Redis {
            return self.limits.decision(
                true,
                Counts { minute: 0, hour: 0 },
                windows,
                Backend::FailOpen,
            );
        }
        self.memory.check(client, windows)
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
