//! A response cache on the api's Redis Cluster, for routes a user opts in by config
//! (`api.cache.routes`) and wraps with [`response_cache`]:
//!
//! - `rules`: which route a request belongs to, which tags a write drops;
//! - `key`: the cache key (route + normalised query + key policy), and what bypasses the cache;
//! - `entry`: a stored response and its bytes in Redis;
//! - `store`: the only code that knows the `rc:{<route>}:...` keys and their Lua scripts;
//! - `local`: the in-process tier in front of Redis, coherent through `CLIENT TRACKING`;
//! - `flight`: single-flight within an instance (a Redis lock does it across instances);
//! - `middleware`: HIT / MISS / STALE / BYPASS, ETag / 304, `Age`, `Cache-Control`, HEAD,
//!   stale-while-revalidate and invalidation after writes;
//! - `metrics`: counters and histograms.
//!
//! Redis down or slow never fails a request: the route answers from its handler (BYPASS) and
//! the cache is used again as soon as the cluster answers within `api.cache.redis_timeout`.

mod entry;
mod flight;
mod invalidator;
mod key;
mod local;
mod metrics;
mod middleware;
mod rules;
mod store;

pub use metrics::CacheResult;
pub use middleware::response_cache;

use crate::redis_cluster::RedisCluster;
use cacheserver_config::CacheSettings;
use std::sync::Arc;
use std::time::Duration;

/// The cache an app shares between its workers (`web::Data<ResponseCache>`).
#[derive(Clone)]
pub struct ResponseCache {
    inner: Arc<Inner>,
}

struct Inner {
    enabled: bool,
    /// `None` without a cluster: cached routes answer BYPASS.
    store: Option<store::Store>,
    /// Batches writes' invalidations; `Some` with `store` when the cache is on and has routes.
    invalidator: Option<invalidator::Invalidator>,
    /// `None` when `api.cache.local.enabled` is off or there is no cluster.
    local: Option<local::LocalTier>,
    rules: rules::Rules,
    flights: flight::Flights,
    lock_timeout: Duration,
    max_entry_bytes: usize,
    max_query_bytes: usize,
    trusted_proxies: Vec<ipnet::IpNet>,
}

/// How long a tag generation is kept once set. Only a bound on idle tags' memory: a generation
/// that is gone is recreated with a new value (its entries miss once).
const KEEP_GENERATIONS: Duration = Duration::from_secs(24 * 3600);

impl ResponseCache {
    /// `settings` validated by `cacheserver_config`; `trusted_proxies` decide the client IP of
    /// `key: ip` routes (the limiter's list).
    pub fn new(
        settings: &CacheSettings,
        trusted_proxies: Vec<ipnet::IpNet>,
        redis: Option<RedisCluster>,
    ) -> Result<Self, String> {
        metrics::describe();
        let rules = rules::Rules::new(settings)?;
        let longest = rules
            .routes
            .iter()
            .map(|r| r.ttl + r.stale)
            .max()
            .unwrap_or_default();
        let keep = KEEP_GENERATIONS.max(longest * 2);
        let size = |v: i64| usize::try_from(v).unwrap_or(usize::MAX);
        let local = match &redis {
            Some(redis)
                if settings.enabled && settings.local.enabled && !rules.routes.is_empty() =>
            {
                local_tier(settings, &rules, redis)
            }
            _ => None,
        };
        let store = redis.map(|r| store::Store::new(r, settings.redis_timeout, keep));
        let writes_invalidate = settings.enabled && !rules.routes.is_empty();
        let invalidator = store.clone().filter(|_| writes_invalidate).map(|store| {
            let routes = rules.routes.iter().map(|r| r.prefix.clone()).collect();
            invalidator::Invalidator::start(
                rules.routes.len(),
                settings.redis_timeout,
                invalidator::IN_FLIGHT,
                invalidator::Generations { store, routes },
            )
        });
        let invalidator = invalidator.transpose()?;
        Ok(Self {
            inner: Arc::new(Inner {
                enabled: settings.enabled,
                local,
                store,
                invalidator,
                rules,
                flights: flight::Flights::new(size(settings.max_inflight_keys)),
                lock_timeout: settings.lock_timeout,
                max_entry_bytes: size(settings.max_entry_bytes),
                max_query_bytes: size(settings.max_query_bytes),
                trusted_proxies,
            }),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.enabled
    }

    /// Entries the local tier holds now (0 without it).
    pub fn local_entries(&self) -> usize {
        self.inner.local.as_ref().map_or(0, |l| l.state().len())
    }

    /// Keys being refreshed in this instance right now.
    pub fn in_flight(&self) -> usize {
        self.inner.flights.len()
    }
}

/// The local tier tracking the entry and generation keys of every cached route; `None` (with a
/// warning) when tracking cannot start: every hit then asks Redis, as without the tier.
fn local_tier(
    settings: &CacheSettings,
    rules: &rules::Rules,
    redis: &RedisCluster,
) -> Option<local::LocalTier> {
    let tier = local::LocalTier::new(
        usize::try_from(settings.local.max_entries).unwrap_or(usize::MAX),
        u64::try_from(settings.local.max_bytes).unwrap_or(u64::MAX),
        usize::try_from(settings.max_entry_bytes).unwrap_or(usize::MAX),
    );
    let mut prefixes: Vec<String> = rules
        .routes
        .iter()
        .flat_map(|r| store::tracked_prefixes(&r.prefix))
        .collect();
    prefixes.sort();
    prefixes.dedup();
    match tier.track(redis, prefixes) {
        Ok(()) => Some(tier),
        Err(e) => {
            tracing::warn!(error = %e, "response cache local tier off");
            None
        }
    }
}
