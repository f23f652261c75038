//! Prometheus metrics of the api: per-request HTTP metrics (a middleware around the whole app),
//! counters other modules bump through small helpers, and gauges refreshed when `/metrics` is
//! scraped.
//!
//! Labels use the matched route pattern (`/api/dm-jobqueue/jobs/{id}`), never the raw path, so
//! the number of series stays bounded however many ids clients send.

use crate::state::AppState;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use std::time::{Duration, Instant};

/// Route label of requests that matched no route (404 from the default service).
const UNMATCHED: &str = "unmatched";

/// How long a scrape may wait for the jobqueue counts before rendering without them.
const QUEUE_STATS_BUDGET: Duration = Duration::from_millis(500);

/// Count every request by method, route pattern and status, and time it.
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = method_label(req.method());
    // Resolved from the app's resource map, so it is known before routing and survives errors.
    let route = req.match_pattern().unwrap_or_else(|| UNMATCHED.to_owned());
    let result = next.call(req).await;
    let status = match &result {
        Ok(response) => response.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", status.as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels[..2])
        .record(started.elapsed().as_secs_f64());
    result
}

/// Known methods by name; anything else is one label so clients cannot create new series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// A chaos reset closed `connections` Redis connections.
pub fn chaos_reset(connections: usize) {
    metrics::counter!("chaos_resets_total").increment(1);
    metrics::counter!("chaos_connections_closed_total").increment(connections as u64);
}

/// The jobs route registered `count` jobs (called by `routes::jobs`).
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
