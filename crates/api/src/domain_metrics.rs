//! Prometheus metrics of the api's domains (HTTP request metrics are `http_metrics`'s, the rate
//! limiter's are `ratelimit::rules`'): counters the routes bump through small helpers, and
//! gauges read from Redis right before `/metrics` renders them.

use crate::state::AppState;
use std::time::Duration;

/// How long a scrape may wait for the jobqueue counts before rendering without them.
const QUEUE_STATS_BUDGET: Duration = Duration::from_millis(500);

/// A chaos reset closed `connections` Redis connections.
pub fn chaos_reset(connections: usize) {
    metrics::counter!("chaos_resets_total").increment(1);
    metrics::counter!("chaos_connections_closed_total").increment(connections as u64);
}

/// The jobs routes registered `count` new jobs.
pub fn jobs_registered(count: u64) {
    metrics::counter!("jobs_registered_total").increment(count);
}

/// Refresh gauges that are read from elsewhere (Redis) right before a scrape renders them.
/// Bounded by a short timeout; on error the previous values stay and the scrape still answers.
pub async fn refresh_gauges(state: &AppState) {
    redis_gauges(state);
    queue_gauges(state).await;
}

fn redis_gauges(state: &AppState) {
    let (connected, count) = state
        .redis
        .as_ref()
        .map_or((false, 0), |r| (r.is_connected(), r.connection_count()));
    metrics::gauge!("redis_cluster_connected").set(f64::from(u8::from(connected)));
    metrics::gauge!("redis_cluster_connections").set(count as f64);
}

async fn queue_gauges(state: &AppState) {
    match tokio::time::timeout(QUEUE_STATS_BUDGET, state.jobs.stats()).await {
        Ok(Ok(stats)) => {
            for (queue_state, count) in stats.by_state() {
                metrics::gauge!("jobqueue_jobs", "state" => queue_state).set(count as f64);
            }
        }
        Ok(Err(error)) => tracing::debug!(%error, "queue depth not refreshed"),
        Err(_) => tracing::debug!("queue depth not refreshed: jobqueue Redis too slow"),
    }
}
