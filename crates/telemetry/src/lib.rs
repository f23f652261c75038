//! Logging and the Prometheus recorder, set up the same way by both binaries (`api`, `worker`).

use cacheserver_config::{LogFormat, LoggingSettings};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::time::Duration;
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

/// How often histogram samples are folded into their buckets. Until then the recorder keeps every
/// raw sample: a process that nobody scraped grew by ~16 bytes per request without it.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Keep `handle`'s recorder bounded: `run_upkeep` every [`UPKEEP_EVERY`] on a thread of its own
/// (`build_recorder`/`install_recorder` start none; only the crate's HTTP exporter would).
pub fn spawn_upkeep(handle: &PrometheusHandle) {
    let handle = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the metrics upkeep thread; histograms will grow");
    }
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
