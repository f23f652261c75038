//! Liveness, readiness and Prometheus metrics.

use crate::ratelimit::Backend;
use crate::state::AppState;
use actix_web::{get, web, HttpResponse};
use serde_json::json;

/// Liveness: 200 while the process runs.
#[get("/health")]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness: 200 when the jobqueue Redis answers and the rate limiter has a usable backend.
#[get("/ready")]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let jobqueue = state.jobs.ping().await;
    let backend = state.limiter.active_backend();
    let limiter_ok = backend != Backend::FailOpen;
    let body = json!({
        "status": if jobqueue.is_ok() && limiter_ok { "ready" } else { "not_ready" },
        "checks": {
            "config": "ok",
            "jobqueue_redis": match &jobqueue { Ok(()) => "ok".to_owned(), Err(e) => e.to_string() },
            "rate_limit_backend": backend.as_str(),
        }
    });
    if jobqueue.is_ok() && limiter_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus text format.
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
