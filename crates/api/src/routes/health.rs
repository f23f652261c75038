//! Liveness, readiness and Prometheus metrics.

use crate::ratelimit::Backend;
use crate::state::AppState;
use actix_web::{get, web, HttpResponse};
use cacheserver_jobqueue::JobQueueError;
use serde::Serialize;
use utoipa::ToSchema;

/// `GET /health` body (and `GET /api/ping`'s).
#[derive(Serialize, ToSchema)]
pub struct HealthBody {
    #[schema(example = "ok")]
    pub status: &'static str,
}

impl HealthBody {
    pub fn ok() -> Self {
        Self { status: "ok" }
    }
}

/// `GET /ready` body.
#[derive(Serialize, ToSchema)]
pub struct ReadyBody {
    /// `ready` or `not_ready`.
    #[schema(example = "ready")]
    pub status: &'static str,
    pub checks: ReadyChecks,
}

#[derive(Serialize, ToSchema)]
pub struct ReadyChecks {
    /// `ok`, or the misconfiguration that keeps a Redis unusable (wrong password, missing ACL
    /// permission naming the command or script, untrusted certificate, plain text on a TLS
    /// port); never a secret.
    #[schema(example = "ok")]
    pub config: String,
    /// `ok` or the error reaching the jobqueue Redis.
    #[schema(example = "ok")]
    pub jobqueue_redis: String,
    /// `redis`, `memory` or `fail_open` (then not ready).
    #[schema(example = "redis")]
    pub rate_limit_backend: &'static str,
    /// Only while the Redis Cluster is misconfigured: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub rate_limit_redis: Option<String>,
}

/// Liveness: 200 while the process runs.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses((status = 200, description = "the process runs", body = HealthBody))
)]
#[get("/health")]
pub async fn health() -> web::Json<HealthBody> {
    web::Json(HealthBody::ok())
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
        (status = 200, description = "ready", body = ReadyBody),
        (status = 503, description = "not ready; `checks` says why", body = ReadyBody),
    )
)]
#[get("/ready")]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let body = readiness(&state).await;
    if body.status == "ready" {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn readiness(state: &AppState) -> ReadyBody {
    let jobqueue = state.jobs.ping().await;
    let backend = state.limiter.active_backend();
    let cluster_misconfigured = state
        .redis
        .as_ref()
        .and_then(|r| r.stats().misconfiguration());
    let limiter_ok = backend != Backend::FailOpen && cluster_misconfigured.is_none();
    let is_ready = jobqueue.is_ok() && limiter_ok;
    let config = match (&jobqueue, &cluster_misconfigured) {
        (_, Some(why)) => why.clone(),
        (Err(e @ JobQueueError::Misconfigured(_)), None) => e.to_string(),
        _ => "ok".to_owned(),
    };
    ReadyBody {
        status: if is_ready { "ready" } else { "not_ready" },
        checks: ReadyChecks {
            config,
            jobqueue_redis: jobqueue.map_or_else(|e| e.to_string(), |()| "ok".to_owned()),
            rate_limit_backend: backend.as_str(),
            rate_limit_redis: cluster_misconfigured,
        },
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
    crate::domain_metrics::refresh_gauges(&state).await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
