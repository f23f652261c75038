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
    metrics::counter!(
        "ratelimit_decisions_total",
        "decision" => if decision.allowed { "allowed" } else { "limited" },
        "backend" => decision.backend.as_str()
    )
    .increment(1);
    if !decision.allowed {
        let mut response = ApiError::TooManyRequests {
            retry_after_secs: decision.retry_after_secs(),
        }
        .error_response();
        add_headers(response.headers_mut(), &decision);
        return Ok(req.into_response(response).map_into_right_body());
    }
    let mut response = next.call(req).await?;
    add_headers(response.headers_mut(), &decision);
    Ok(response.map_into_left_body())
}

fn add_headers(headers: &mut HeaderMap, d: &Decision) {
    let mut set = |name: &'static str, value: HeaderValue| {
        headers.insert(HeaderName::from_static(name), value);
    };
    set("x-ratelimit-limit", d.minute.limit.into());
    set("x-ratelimit-remaining", d.minute.remaining.into());
    set("x-ratelimit-reset", d.minute.reset_secs.into());
    set("x-ratelimit-hour-limit", d.hour.limit.into());
    set("x-ratelimit-hour-remaining", d.hour.remaining.into());
    set("x-ratelimit-hour-reset", d.hour.reset_secs.into());
    // IETF draft-ietf-httpapi-ratelimit-headers: the policies, and the tighter window now.
    let policy = format!(
        "\"minute\";q={};w=60, \"hour\";q={};w=3600",
        d.minute.limit, d.hour.limit
    );
    let (name, tight) = if d.hour.remaining < d.minute.remaining {
        ("hour", d.hour)
    } else {
        ("minute", d.minute)
    };
    let current = format!("\"{name}\";r={};t={}", tight.remaining, tight.reset_secs);
    if let (Ok(policy), Ok(current)) = (
        HeaderValue::from_str(&policy),
        HeaderValue::from_str(&current),
    ) {
        set("ratelimit-policy", policy);
        set("ratelimit", current);
    }
}
