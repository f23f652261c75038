//! Logging and the Prometheus recorder, set up the same way by both binaries (`api`, `worker`).

use cacheserver_config::{LogFormat, LoggingSettings};
use metrics_exporter_prometheus::PrometheusBuilder;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::{fmt, EnvFilter};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid logging.level: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("cannot install the tracing subscriber: {0}")]
    Subscriber(String),
}

/// Where log lines go. The worker logs to stderr: its stdout carries the jobs' printed lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    Stderr,
}

/// Install the global tracing subscriber: `logging.format` (pretty or JSON), `logging.level`
/// unless `RUST_LOG` is set.
pub fn init_tracing(logging: &LoggingSettings, target: LogTarget) -> Result<(), TelemetryError> {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => EnvFilter::try_new(&logging.level)?,
    };
    let writer = match target {
        LogTarget::Stdout => BoxMakeWriter::new(std::io::stdout),
        LogTarget::Stderr => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_writer(writer);
    match logging.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    }
    .map_err(|e| TelemetryError::Subscriber(e.to_string()))
}

/// The Prometheus builder both binaries start from: recommended naming (0.18), so counters are
/// rendered with `_total` and unit suffixes on the sample, HELP and TYPE lines alike.
pub fn prometheus_builder() -> PrometheusBuilder {
    PrometheusBuilder::new().with_recommended_naming(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_the_recommended_total_suffix() {
        let recorder = prometheus_builder().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("jobs_processed").increment(1);
            metrics::counter!("jobs_failed_total").increment(1);
        });
        let text = handle.render();
        assert!(text.contains("jobs_processed_total 1"), "{text}");
        assert!(text.contains("jobs_failed_total 1"), "{text}");
        assert!(!text.contains("total_total"), "{text}");
    }
}
