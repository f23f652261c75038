//! Per-request HTTP metrics: a middleware around the whole app. Domain metrics (jobs, chaos,
//! Redis gauges) are in `domain_metrics`.
//!
//! Labels use the matched route pattern (`/api/dm-jobqueue/jobs/{id}`), never the raw path, so
//! the number of series stays bounded however many ids clients send.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest};
use fnv::FnvHashMap;
use metrics::{Counter, Histogram};
use std::cell::RefCell;
use std::sync::Arc;
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
    let result = next.call(req).await;
    // Our middleware turn failures into responses, so an `Err` (which no longer carries the
    // request) is never expected here.
    let (status, route) = match &result {
        Ok(response) => (response.status(), route_pattern(response.request())),
        Err(error) => (error.as_response_error().status_code(), None),
    };
    let route = route.as_deref().unwrap_or(UNMATCHED);
    let elapsed = started.elapsed().as_secs_f64();
    SERIES.with_borrow_mut(|series| series.record(method, route, status.as_u16(), elapsed));
    result
}

thread_local! {
    /// This worker thread's handles, so the registry lookup (labels built, hashed, compared) is
    /// paid once per series instead of per request. Bounded: routes are patterns, and methods
    /// and statuses few.
    static SERIES: RefCell<Series> = RefCell::default();
}

#[derive(Default)]
struct Series {
    by_route: FnvHashMap<Box<str>, Vec<Handles>>,
}

struct Handles {
    method: &'static str,
    status: u16,
    requests: Counter,
    duration: Histogram,
}

impl Series {
    fn record(&mut self, method: &'static str, route: &str, status: u16, seconds: f64) {
        let known = self.by_route.get(route).and_then(|handles| {
            handles
                .iter()
                .find(|h| h.method == method && h.status == status)
        });
        if let Some(h) = known {
            h.record(seconds);
            return;
        }
        // A series this thread has not recorded yet: once per series.
        let h = Handles::new(method, route, status);
        h.record(seconds);
        self.by_route.entry(route.into()).or_default().push(h);
    }
}

impl Handles {
    fn new(method: &'static str, route: &str, status: u16) -> Self {
        Self {
            method,
            status,
            requests: metrics::counter!(
                "http_requests_total",
                "method" => method,
                "route" => route.to_owned(),
                "status" => status.to_string()
            ),
            duration: metrics::histogram!(
                "http_request_duration_seconds",
                "method" => method,
                "route" => route.to_owned()
            ),
        }
    }

    fn record(&self, seconds: f64) {
        self.requests.increment(1);
        self.duration.record(seconds);
    }
}

/// The route pattern of a request answered before routing reached its resource (the response
/// cache's hits), set by whoever answered it.
#[derive(Debug, Clone)]
pub struct MatchedRoute(pub Arc<str>);

/// The route pattern `req` was answered for, read after routing: then actix keeps the matched
/// resource and this is a lookup. Without one (routing did not reach a resource), actix walks
/// the resource map through every dynamic route's regex, so a middleware that answers early
/// says the route with [`MatchedRoute`].
pub fn route_pattern(req: &HttpRequest) -> Option<String> {
    if let Some(MatchedRoute(route)) = req.extensions().get::<MatchedRoute>() {
        return Some(route.to_string());
    }
    req.match_pattern()
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
