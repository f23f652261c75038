//! [`Limiter`]: the entry point the middleware calls. Picks the backend per request (local state,
//! the Redis batcher, or memory) and falls back as `storage_type` says.

use super::batch::Batcher;
use super::clock::Clock;
use super::keys::ClientKey;
use super::rules::Rules;
use super::state::{ClientStates, Lookup};
use super::types::{Backend, Counts, Decision, Limits, Windows};
use crate::redis_cluster::RedisCluster;
use cacheserver_config::{RateLimitSettings, StorageType};
use std::sync::Arc;

/// The limiter the middleware calls. Cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

struct Inner {
    /// `api.rate_limit.enabled`: when false the middleware lets every request through untouched.
    enabled: bool,
    mode: StorageType,
    rules: Rules,
    clock: Clock,
    states: Arc<ClientStates>,
    redis: Option<(RedisCluster, Batcher)>,
    trusted_proxies: Box<[ipnet::IpNet]>,
    /// `api.rate_limit.batching` (false: the naive limiter, one Lua call per request).
    batching: bool,
}

impl Limiter {
    /// `redis` is `None` when no cluster is configured: every mode then limits in memory. Starts
    /// the bucket tasks, so it runs inside a Tokio runtime.
    pub fn new(
        settings: &RateLimitSettings,
        redis: Option<RedisCluster>,
        clock: Clock,
    ) -> Result<Self, String> {
        let rules = Rules::new(settings)?;
        let max_clients = usize::try_from(settings.max_tracked_clients)
            .unwrap_or(100_000)
            .max(1);
        let states = Arc::new(ClientStates::new(max_clients));
        let redis = match settings.storage_type {
            StorageType::Memory => None,
            _ => redis.map(|cluster| {
                let batcher = Batcher::start(
                    cluster.clone(),
                    settings.redis_timeout,
                    clock.clone(),
                    states.clone(),
                    rules.names(),
                    settings.batching,
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
            batching: settings.batching,
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

    pub(crate) fn rules(&self) -> &Rules {
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
            Lookup::Decided(local) if inner.batching => {
                return limits.decision(local.allowed, local.counts, windows, local.backend)
            }
            Lookup::Decided(_) => false,
            Lookup::AskRedis { hot } => hot && inner.batching,
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
