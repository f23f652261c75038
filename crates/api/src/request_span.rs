//! The tracing span of every request (`tracing-actix-web`'s `TracingLogger` with this builder).
//!
//! Unlike the crate's default builder, the route pattern is recorded when the request ends:
//! actix knows the matched resource then, and reading it is a lookup. Before routing, finding
//! the pattern walks the resource map and runs the regex of every dynamic route on the way, a
//! cost every request would pay. The fields are evaluated only when the span is enabled (the
//! `info` level), so with logging at `warn` a request pays for none of them.

use crate::http_metrics::route_pattern;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage};
use tracing::field::Empty;
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};

pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = Empty,
            http.target = %request.uri().path_and_query().map_or("", |p| p.as_str()),
            http.client_ip = %request.connection_info().realip_remote_addr().unwrap_or(""),
            http.user_agent = %request
                .headers()
                .get("User-Agent")
                .and_then(|h| h.to_str().ok())
                .unwrap_or(""),
            http.status_code = Empty,
            otel.name = Empty,
            otel.kind = "server",
            otel.status_code = Empty,
            request_id = %request
                .extensions()
                .get::<RequestId>()
                .map(ToString::to_string)
                .unwrap_or_default(),
            exception.message = Empty,
            exception.details = Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        if span.is_disabled() {
            return;
        }
        if let Ok(response) = outcome {
            if let Some(route) = route_pattern(response.request()) {
                span.record(
                    "otel.name",
                    tracing::field::display(format_args!(
                        "{} {route}",
                        response.request().method()
                    )),
                );
                span.record("http.route", route);
            }
        }
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}
