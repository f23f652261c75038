//! Liveness, readiness and Prometheus metrics.

use crate::ratelimit::Backend;
use crate::state::AppState;
use actix_web::{get, web, HttpResponse};
use serde_json::json;

/// Liveness: 200 while the process runs.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses((status = 200, description = "the process runs", body = crate::routes::docs::HealthBody))
)]
#[get("/health")]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness: 200 when the jobqueue Redis answers and the rate limiter has a usable backend.
/// A misconfigured Redis (wrong password, missing ACL permission, untrusted certificate) is 503
/// in every storage mode, naming the cause; a cluster that is merely down is not (`auto` serves
/// from memory).
#[utoipa::path(
    get,
    path = "/ready",
    tag = "health",
    responses(
        (status = 200, description = "ready", body = crate::routes::docs::ReadyBody),
        (status = 503, description = "not ready; `checks` says why", body = crate::routes::docs::ReadyBody),
    )
)]
#[get("/ready")]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let jobqueue = state.jobs.ping().await;
    let backend = state.limiter.active_backend();
    let cluster_misconfigured = state
        .redis
        .as_ref()
        .and_then(|r| r.stats().misconfiguration());
    let limiter_ok = backend != Backend::FailOpen && cluster_misconfigured.is_none();
    let ready = jobqueue.is_ok() && limiter_ok;
    let config = match (&jobqueue, &cluster_misconfigured) {
        (_, Some(why)) => why.clone(),
        (Err(e @ cacheserver_jobqueue::JobQueueError::Misconfigured(_)), None) => e.to_string(),
        _ => "ok".to_owned(),
    };
    let mut checks = json!({
        "config": config,
        "jobqueue_redis": match &jobqueue { Ok(()) => "ok".to_owned(), Err(e) => e.to_string() },
        "rate_limit_backend": backend.as_str(),
    });
    if let Some(why) = &cluster_misconfigured {
        checks["rate_limit_redis"] = json!(why);
    }
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": checks,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus text format. Gauges read from Redis (queue depth) are refreshed first.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    crate::http_metrics::refresh_gauges(&state).await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
