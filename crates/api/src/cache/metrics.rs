//! The cache's metrics: `cache_requests_total{route,result}`, `cache_invalidations_total{tag}`,
//! `cache_redis_errors_total`, `cache_refresh_seconds`, `cache_entry_bytes`; the local tier's
//! `cache_local_hits_total{route}` (a part of `cache_requests_total{result="hit"}`),
//! `cache_local_tracking` and `cache_local_invalidations_total`.

use metrics::{Counter, Histogram};

/// What answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// A fresh entry.
    Hit,
    /// The handler (no usable entry, or the request asked for a refresh).
    Miss,
    /// An entry past its TTL, within its stale window, while one request refreshes it.
    Stale,
    /// The cache was not used: Redis down or slow, or the request may not be cached.
    Bypass,
}

impl CacheResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Stale => "stale",
            Self::Bypass => "bypass",
        }
    }

    /// The `X-Cache` header value.
    pub fn header(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Stale => "STALE",
            Self::Bypass => "BYPASS",
        }
    }
}

const RESULTS: [CacheResult; 4] = [
    CacheResult::Hit,
    CacheResult::Miss,
    CacheResult::Stale,
    CacheResult::Bypass,
];

/// A route's counters, looked up once.
pub(crate) struct RouteCounters {
    requests: Vec<Counter>,
    /// Hits answered by the local tier (also counted as `result="hit"`).
    pub local_hits: Counter,
    pub refresh: Histogram,
    pub entry_bytes: Histogram,
}

impl RouteCounters {
    pub fn new(route: &str) -> Self {
        let requests = RESULTS
            .iter()
            .map(|r| metrics::counter!("cache_requests_total", "route" => route.to_owned(), "result" => r.as_str()))
            .collect();
        Self {
            requests,
            local_hits: metrics::counter!("cache_local_hits_total", "route" => route.to_owned()),
            refresh: metrics::histogram!("cache_refresh_seconds", "route" => route.to_owned()),
            entry_bytes: metrics::histogram!("cache_entry_bytes", "route" => route.to_owned()),
        }
    }

    pub fn count(&self, result: CacheResult) {
        let i = RESULTS.iter().position(|r| *r == result).unwrap_or(0);
        if let Some(c) = self.requests.get(i) {
            c.increment(1);
        }
    }
}

/// `cache_invalidations_total{tag}` of a write rule's tag template, looked up once.
pub(crate) fn invalidations(template: &str) -> Counter {
    metrics::counter!("cache_invalidations_total", "tag" => template.to_owned())
}

pub(crate) fn local_invalidations(keys: usize) {
    metrics::counter!("cache_local_invalidations_total").increment(keys as u64);
}

pub(crate) fn local_tracking(up: bool) {
    metrics::gauge!("cache_local_tracking").set(if up { 1.0 } else { 0.0 });
}

pub(crate) fn redis_error() {
    metrics::counter!("cache_redis_errors_total").increment(1);
}

/// HELP lines; called once when the cache is built.
pub(crate) fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(
        "cache_requests_total",
        "Requests to cached routes by route (the rule's path_prefix) and result (hit, miss, stale, bypass)"
    );
    describe_counter!(
        "cache_invalidations_total",
        "Tag invalidations after successful writes, by tag template"
    );
    describe_counter!(
        "cache_redis_errors_total",
        "Response-cache Redis calls that failed or ran past api.cache.redis_timeout (the request bypassed the cache)"
    );
    describe_histogram!(
        "cache_refresh_seconds",
        Unit::Seconds,
        "Time the handler took to produce a cacheable response (misses and background refreshes)"
    );
    describe_histogram!(
        "cache_entry_bytes",
        Unit::Bytes,
        "Body size of responses stored in the cache"
    );
    describe_counter!(
        "cache_local_hits_total",
        "Hits answered from the api's local tier without a Redis round trip (included in cache_requests_total{result=\"hit\"})"
    );
    describe_counter!(
        "cache_local_invalidations_total",
        "Keys named by Redis invalidation pushes (CLIENT TRACKING) to the local tier"
    );
    metrics::describe_gauge!(
        "cache_local_tracking",
        "1 while the local tier's CLIENT TRACKING is verified on every primary (copies may be served), else 0"
    );
    metrics::counter!("cache_redis_errors_total").increment(0);
}
