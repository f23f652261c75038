//! Chaos: close every Redis connection the api holds (rate-limit cluster pool and jobqueue), to
//! show that the next Redis call reconnects by itself. Off in production (`chaos.enabled`).
//!
//! Guard order: disabled → 404 (the routes look absent), then the bearer token → 401. Resets are
//! serialized by one async mutex; a reset within `chaos.cooldown` of the last one → 429 unless
//! `force`.

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{get, post, web, HttpResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use utoipa::ToSchema;

/// Body of `POST /chaos/redis-reset`; may be empty.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// Reset even within the cooldown of the previous reset.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ResetResponse {
    #[schema(example = "redis_connections_reset")]
    pub status: String,
    /// Connections open right before the reset (cluster pool + jobqueue).
    #[schema(example = 4)]
    pub connections_closed: usize,
    /// RFC 3339, UTC.
    #[schema(example = "2026-11-28T12:00:00.000Z")]
    pub timestamp: String,
}

/// One Redis client's connection state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConnectionStatus {
    pub connected: bool,
    pub connection_count: usize,
    /// RFC 3339 time of the last chaos reset, `null` if none.
    pub last_reset: Option<String>,
    /// Reconnections seen since start.
    pub reconnects: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChaosStatus {
    /// The rate-limit Redis Cluster pool (all zero when rate limiting runs in memory).
    pub redis: ConnectionStatus,
    /// The jobqueue's single Redis.
    pub jobqueue: ConnectionStatus,
}

/// Close every Redis connection the api holds; the next Redis call reconnects.
#[utoipa::path(
    post,
    path = "/chaos/redis-reset",
    tag = "chaos",
    request_body(content = Option<ResetRequest>, description = "optional; `{}` or empty is `force: false`"),
    responses(
        (status = 200, description = "connections closed", body = ResetResponse),
        (status = 400, description = "malformed body", body = ErrorBody),
        (status = 401, description = "missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "chaos is disabled", body = ErrorBody),
        (status = 429, description = "within the cooldown, or rate limited", body = ErrorBody),
    ),
    security((), ("chaos_token" = []))
)]
#[post("/redis-reset")]
pub async fn redis_reset(
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let request = parse_body(&body)?;
    let mut last = state.chaos.lock_reset().await;
    check_cooldown(*last, state.settings.chaos.cooldown, request.force)?;
    let closed = close_all(&state).await;
    let now = Utc::now();
    *last = Some(Instant::now());
    state.chaos.set_last_reset(now);
    drop(last);
    crate::domain_metrics::chaos_reset(closed);
    tracing::warn!(
        connections_closed = closed,
        "chaos: every Redis connection closed"
    );
    Ok(HttpResponse::Ok().json(ResetResponse {
        status: "redis_connections_reset".into(),
        connections_closed: closed,
        timestamp: rfc3339(now),
    }))
}

/// Connection state of both Redis clients.
#[utoipa::path(
    get,
    path = "/chaos/status",
    tag = "chaos",
    responses(
        (status = 200, description = "connection state", body = ChaosStatus),
        (status = 401, description = "missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "chaos is disabled", body = ErrorBody),
        (status = 429, description = "rate limited", body = ErrorBody),
    ),
    security((), ("chaos_token" = []))
)]
#[get("/status")]
pub async fn status(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let last_reset = state.chaos.last_reset().map(rfc3339);
    let redis = state.redis.as_ref().map_or(
        ConnectionStatus {
            connected: false,
            connection_count: 0,
            last_reset: None,
            reconnects: 0,
        },
        |r| ConnectionStatus {
            connected: r.is_connected(),
            connection_count: r.connection_count(),
            last_reset: last_reset.clone(),
            reconnects: r.stats().reconnects.load(Ordering::Relaxed),
        },
    );
    let jobqueue = ConnectionStatus {
        connected: state.jobs.is_connected(),
        connection_count: state.jobs.connection_count(),
        last_reset,
        reconnects: state.jobs.reconnects(),
    };
    Ok(HttpResponse::Ok().json(ChaosStatus { redis, jobqueue }))
}

/// Middleware of `/chaos`: 404 while chaos is disabled (the routes look absent), then 401
/// unless the bearer token matches `chaos.token` when one is configured.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<EitherBody<impl MessageBody>>>, actix_web::Error> {
    let refusal = match crate::auth::settings(&req) {
        Ok(settings) if settings.chaos.enabled => {
            return crate::auth::bearer(req, next, settings.chaos.token.as_ref())
                .await
                .map(ServiceResponse::map_into_left_body);
        }
        Ok(_) => ApiError::NotFound("no such route".into()),
        Err(error) => error,
    };
    Ok(req.error_response(refusal).map_into_right_body())
}

/// Empty (or blank) body means defaults; anything else must be the JSON object.
fn parse_body(body: &[u8]) -> Result<ResetRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ResetRequest::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

fn check_cooldown(last: Option<Instant>, cooldown: Duration, force: bool) -> Result<(), ApiError> {
    let Some(last) = last else { return Ok(()) };
    let since = last.elapsed();
    if force || since >= cooldown {
        return Ok(());
    }
    let left = cooldown - since;
    Err(ApiError::TooManyRequests {
        retry_after_secs: left.as_secs() + u64::from(left.subsec_nanos() > 0),
    })
}

/// Close both clients' connections; returns how many were open.
async fn close_all(state: &AppState) -> usize {
    let cluster = state.redis.as_ref().map_or(0, |r| r.close_all());
    let jobqueue = state.jobs.reset_connections().await;
    cluster + jobqueue
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cooldown_refuses_early_resets_unless_forced() {
        let just_now = Some(Instant::now());
        let second = Duration::from_secs(1);
        assert!(check_cooldown(None, second, false).is_ok());
        assert!(matches!(
            check_cooldown(just_now, second, false),
            Err(ApiError::TooManyRequests {
                retry_after_secs: 1
            })
        ));
        assert!(check_cooldown(just_now, second, true).is_ok());
        assert!(check_cooldown(just_now, Duration::ZERO, false).is_ok());
    }

    #[test]
    fn body_may_be_empty_but_not_malformed() {
        assert!(matches!(parse_body(b""), Ok(ResetRequest { force: false })));
        assert!(matches!(
            parse_body(b" \n"),
            Ok(ResetRequest { force: false })
        ));
        assert!(matches!(
            parse_body(b"{}"),
            Ok(ResetRequest { force: false })
        ));
        assert!(matches!(
            parse_body(br#"{"force": true}"#),
            Ok(ResetRequest { force: true })
        ));
        assert!(parse_body(b"{force").is_err());
        assert!(parse_body(br#"{"forse": true}"#).is_err());
    }
}
