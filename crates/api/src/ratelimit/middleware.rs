//! actix middleware: decide, answer 429 when refused, and add the rate limit headers.

use super::{client_ip, Decision, Limiter};
use crate::error::ApiError;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use std::net::{IpAddr, Ipv4Addr};

pub async fn rate_limit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let limiter = req
        .app_data::<web::Data<Limiter>>()
        .filter(|l| l.is_enabled())
        .cloned();
    let Some(limiter) = limiter else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let peer = req
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    let client = client_ip(peer, req.headers(), limiter.trusted_proxies());
    let decision = limiter.check(client).await;
    count(&decision);
    if !decision.allowed {
        let mut response = ApiError::TooManyRequests {
            retry_after_secs: decision.retry_after_secs(),
        }
        .error_response();
        add_headers(response.headers_mut(), &decision, limiter.policy_header());
        return Ok(req.into_response(response).map_into_right_body());
    }
    let mut response = next.call(req).await?;
    add_headers(response.headers_mut(), &decision, limiter.policy_header());
    Ok(response.map_into_left_body())
}

const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const HOUR_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-hour-limit");
const HOUR_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-hour-remaining");
const HOUR_RESET: HeaderName = HeaderName::from_static("x-ratelimit-hour-reset");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

fn add_headers(headers: &mut HeaderMap, d: &Decision, policy: &HeaderValue) {
    headers.insert(LIMIT, d.minute.limit.into());
    headers.insert(REMAINING, d.minute.remaining.into());
    headers.insert(RESET, d.minute.reset_secs.into());
    headers.insert(HOUR_LIMIT, d.hour.limit.into());
    headers.insert(HOUR_REMAINING, d.hour.remaining.into());
    headers.insert(HOUR_RESET, d.hour.reset_secs.into());
    // IETF draft-ietf-httpapi-ratelimit-headers: the policies, and the tighter window now.
    headers.insert(RATELIMIT_POLICY, policy.clone());
    let (name, tight) = if d.hour.remaining < d.minute.remaining {
        ("hour", d.hour)
    } else {
        ("minute", d.minute)
    };
    let current = format!("\"{name}\";r={};t={}", tight.remaining, tight.reset_secs);
    if let Ok(current) = HeaderValue::from_str(&current) {
        headers.insert(RATELIMIT, current);
    }
}

/// `RateLimit-Policy` for these limits (the same on every response).
pub(crate) fn policy_header(limits: super::Limits) -> HeaderValue {
    let policy = format!(
        "\"minute\";q={};w=60, \"hour\";q={};w=3600",
        limits.per_minute, limits.per_hour
    );
    HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `ratelimit_decisions_total{decision,backend}`, with the counter handles looked up once.
fn count(d: &Decision) {
    use super::Backend;
    const BACKENDS: [Backend; 4] = [
        Backend::Redis,
        Backend::Memory,
        Backend::FailOpen,
        Backend::Cached,
    ];
    static COUNTERS: std::sync::OnceLock<Vec<metrics::Counter>> = std::sync::OnceLock::new();
    let counters = COUNTERS.get_or_init(|| {
        [true, false]
            .iter()
            .flat_map(|&allowed| BACKENDS.iter().map(move |&b| (allowed, b)))
            .map(|(allowed, b)| {
                let decision = if allowed { "allowed" } else { "limited" };
                metrics::counter!("ratelimit_decisions_total", "decision" => decision, "backend" => b.as_str())
            })
            .collect()
    });
    let backend = BACKENDS.iter().position(|&b| b == d.backend).unwrap_or(0);
    let index = if d.allowed { 0 } else { BACKENDS.len() } + backend;
    if let Some(counter) = counters.get(index) {
        counter.increment(1);
    }
}
