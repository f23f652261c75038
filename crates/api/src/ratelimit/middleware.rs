//! actix middleware: decide, answer 429 when refused, and add the rate limit headers.

use super::client_ip::client_ip;
use super::limiter::Limiter;
use super::rules::{client_key, Rule};
use super::types::Decision;
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
    let ip = client_ip(peer, req.headers(), limiter.trusted_proxies());
    let (index, rule) = limiter.rules().select(req.method(), req.path());
    let key = client_key(index, rule, ip, req.headers(), || req.match_pattern());
    let decision = limiter.check(key).await;
    rule.count(decision.allowed, decision.backend);
    if !decision.allowed {
        let mut response = ApiError::TooManyRequests {
            retry_after_secs: decision.retry_after_secs(),
        }
        .error_response();
        add_headers(response.headers_mut(), &decision, rule);
        return Ok(req.into_response(response).map_into_right_body());
    }
    let mut response = next.call(req).await?;
    add_headers(response.headers_mut(), &decision, rule);
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

fn add_headers(headers: &mut HeaderMap, d: &Decision, rule: &Rule) {
    headers.insert(LIMIT, d.minute.limit.into());
    headers.insert(REMAINING, d.minute.remaining.into());
    headers.insert(RESET, d.minute.reset_secs.into());
    headers.insert(HOUR_LIMIT, d.hour.limit.into());
    headers.insert(HOUR_REMAINING, d.hour.remaining.into());
    headers.insert(HOUR_RESET, d.hour.reset_secs.into());
    // IETF draft-ietf-httpapi-ratelimit-headers: the policies, and the tighter window now.
    headers.insert(RATELIMIT_POLICY, rule.policy_header.clone());
    let (name, tight) = if d.hour.remaining < d.minute.remaining {
        (&*rule.hour_name, d.hour)
    } else {
        (&*rule.minute_name, d.minute)
    };
    let current = format!("\"{name}\";r={};t={}", tight.remaining, tight.reset_secs);
    if let Ok(current) = HeaderValue::from_str(&current) {
        headers.insert(RATELIMIT, current);
    }
}
