//! Logging and the Prometheus recorder of the api (set up as `cacheserver_telemetry` says), and
//! the HELP lines of its metrics.

use cacheserver_config::LoggingSettings;
use cacheserver_telemetry::{init_tracing, prometheus_builder, LogTarget};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Install the global tracing subscriber and metrics recorder once. Returns the handle that
/// renders `/metrics`. `RUST_LOG` overrides `logging.level`.
pub fn init(logging: &LoggingSettings) -> anyhow::Result<PrometheusHandle> {
    init_tracing(logging, LogTarget::Stdout)?;
    Ok(metrics_recorder())
}

/// The process-wide Prometheus handle. The first call installs the global recorder; later calls
/// (tests build many apps in one process) get clones of the same handle, so every app's
/// `/metrics` renders what the process recorded.
pub fn metrics_recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(install_recorder).clone()
}

fn install_recorder() -> PrometheusHandle {
    // Our counter names already end in `_total`, so recommended naming leaves them unchanged.
    let recorder = prometheus_builder()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ])
        .map_or_else(
            |_| prometheus_builder().build_recorder(),
            PrometheusBuilder::build_recorder,
        );
    let handle = recorder.handle();
    cacheserver_telemetry::spawn_upkeep(&handle);
    if metrics::set_global_recorder(recorder).is_err() {
        // Only another library installing its own recorder first can cause this.
        tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
    }
    describe();
    handle
}

/// HELP lines for every api metric, and unlabelled counters at 0, so that a series exists (and
/// `rate()` / alerts work) before the first event rather than appearing with it.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "http_requests_total",
        "HTTP requests by method, route pattern and status"
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request duration by method and route pattern"
    );
    describe_counter!(
        "ratelimit_decisions_total",
        "Rate-limit decisions by decision (allowed, limited), backend (redis, local, cached, memory, fail_open) and rule"
    );
    describe_counter!(
        "ratelimit_redis_calls_total",
        "Rate-limit Lua calls (each decides a batch of clients of one bucket)"
    );
    describe_counter!(
        "ratelimit_evicted_clients_total",
        "Clients dropped from the limiter's local state at max_tracked_clients"
    );
    describe_counter!(
        "ratelimit_redis_failures_total",
        "Rate-limit Redis calls that failed (fallback to memory, or fail open)"
    );
    describe_counter!(
        "redis_connects_total",
        "Redis Cluster connections established"
    );
    describe_counter!("redis_errors_total", "Redis Cluster connection errors");
    describe_histogram!(
        "redis_reconnect_seconds",
        Unit::Seconds,
        "Time from losing the Redis Cluster to the next connection"
    );
    describe_gauge!(
        "redis_cluster_connected",
        "1 while the Redis Cluster client is connected"
    );
    describe_gauge!(
        "redis_cluster_connections",
        "Open Redis Cluster connections"
    );
    describe_counter!(
        "chaos_resets_total",
        "Chaos resets (every Redis connection closed)"
    );
    describe_counter!(
        "chaos_connections_closed_total",
        "Redis connections closed by chaos resets"
    );
    describe_counter!("jobs_registered_total", "Jobs registered through the api");
    describe_gauge!(
        "jobqueue_jobs",
        "Jobs in the queue by state, read at scrape time"
    );
    for counter in [
        "ratelimit_redis_failures_total",
        "ratelimit_redis_calls_total",
        "ratelimit_evicted_clients_total",
        "redis_connects_total",
        "redis_errors_total",
        "chaos_resets_total",
        "chaos_connections_closed_total",
        "jobs_registered_total",
    ] {
        metrics::counter!(counter).increment(0);
    }
}
