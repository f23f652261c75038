//! Per-request HTTP metrics: a middleware around the whole app. Domain metrics (jobs, chaos,
//! Redis gauges) are in `domain_metrics`.
//!
//! Labels use the matched route pattern (`/api/dm-jobqueue/jobs/{id}`), never the raw path, so
//! the number of series stays bounded however many ids clients send.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use std::time::Instant;

/// Route label of requests that matched no route (404 from the default service).
const UNMATCHED: &str = "unmatched";

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
