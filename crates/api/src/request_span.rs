//! The tracing span of every request (`tracing-actix-web`'s `TracingLogger` with this builder).
//!
//! The span is made with what is known when the request arrives (method, target, client,
//! request id), so every event logged while it runs carries them. Its end fields (route,
//! status, `otel.*`, `exception.*`) are recorded only for a request that failed: the only line
//! logged after they are set is `tracing-actix-web`'s error event, which follows a failure. For
//! a request that succeeded, no layer here would ever read them, and each `record` is not free:
//! the JSON formatter parses and re-serialises the span's fields on every call. Four of them
//! per request cost `GET /api/ping` about a tenth of its throughput at `info` with JSON logs
//! (docs/benchmarks.md, fix 10). A layer that exports spans (OpenTelemetry) needs them on every request: record them
//! in [`RequestSpan::on_request_end`] unconditionally when adding one.
//!
//! The route pattern is read when the request ends, not at its start: actix knows the matched
//! resource then, and reading it is a lookup, while before routing finding it walks the
//! resource map and runs the regex of every dynamic route on the way. With logging at `warn` the
//! span is disabled and a request pays for none of its fields.

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
        if span.is_disabled() || !failed(outcome) {
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

/// Whether `tracing-actix-web` logs an error event for this outcome (its `emit_event_on_error`
/// uses the same test): a handler's error, or an error from a middleware.
fn failed<B>(outcome: &Result<ServiceResponse<B>, Error>) -> bool {
    match outcome {
        Ok(response) => response.response().error().is_some(),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;
    use actix_web::{test, web, App, HttpResponse};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use tracing::span;
    use tracing_actix_web::TracingLogger;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    /// The JSON log lines, as the api writes them at `info` with `logging.format: json`.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Lines {
        fn line_with(&self, text: &str) -> serde_json::Value {
            let bytes = self.0.lock().unwrap().clone();
            let log = String::from_utf8(bytes).unwrap();
            let line = log
                .lines()
                .find(|line| line.contains(text))
                .unwrap_or_else(|| panic!("no line with {text:?} in:\n{log}"));
            serde_json::from_str(line).unwrap()
        }
    }

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    /// Counts `Span::record` calls: each one costs the JSON formatter a re-serialisation.
    struct CountRecords(Arc<AtomicUsize>);

    impl<S: tracing::Subscriber> Layer<S> for CountRecords {
        fn on_record(&self, _: &span::Id, _: &span::Record<'_>, _: Context<'_, S>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    async fn logs_inside() -> HttpResponse {
        tracing::info!("inside the handler");
        HttpResponse::Ok().finish()
    }

    async fn not_found() -> Result<HttpResponse, ApiError> {
        Err(ApiError::NotFound("no such job".into()))
    }

    #[actix_web::test]
    async fn a_success_records_nothing_at_its_end_and_a_failure_logs_route_and_status() {
        let lines = Lines::default();
        let records = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry()
            .with(CountRecords(records.clone()))
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(lines.clone()),
            );
        let _default = tracing::subscriber::set_default(subscriber);
        let app = test::init_service(
            App::new()
                .wrap(TracingLogger::<RequestSpan>::new())
                .route("/ok", web::get().to(logs_inside))
                .route("/jobs/{id}", web::get().to(not_found)),
        )
        .await;

        let ok = test::TestRequest::get().uri("/ok").to_request();
        assert_eq!(test::call_service(&app, ok).await.status(), 200);
        assert_eq!(
            records.load(Ordering::SeqCst),
            0,
            "a success records no field"
        );
        let inside = lines.line_with("inside the handler");
        assert_eq!(inside["span"]["http.method"], "GET");
        assert_eq!(inside["span"]["http.target"], "/ok");
        assert!(
            !inside["span"]["request_id"]
                .as_str()
                .unwrap_or("")
                .is_empty(),
            "{inside}"
        );

        let missing = test::TestRequest::get().uri("/jobs/42").to_request();
        assert_eq!(test::call_service(&app, missing).await.status(), 404);
        let error = lines.line_with("Error encountered");
        assert_eq!(error["level"], "WARN");
        assert_eq!(error["span"]["http.route"], "/jobs/{id}");
        assert_eq!(error["span"]["http.status_code"], 404);
        assert_eq!(error["span"]["otel.name"], "GET /jobs/{id}");
    }
}
