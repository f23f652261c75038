//! Logging (tracing, pretty or JSON) and the Prometheus recorder.

use cacheserver_config::{LogFormat, LoggingSettings};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{fmt, EnvFilter};

/// Install the global tracing subscriber and metrics recorder once. Returns the handle that
/// renders `/metrics`. `RUST_LOG` overrides `logging.level`.
pub fn init(logging: &LoggingSettings) -> anyhow::Result<PrometheusHandle> {
    let filter =
        EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&logging.level))?;
    let builder = fmt().with_env_filter(filter).with_target(true);
    match logging.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot install the tracing subscriber: {e}"))?;
    Ok(metrics_recorder())
}

/// A Prometheus handle: the global recorder when this is the first call in the process, else a
/// detached one (tests build many apps in one process).
pub fn metrics_recorder() -> PrometheusHandle {
    let recorder = PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ])
        .map_or_else(
            |_| PrometheusBuilder::new().build_recorder(),
            PrometheusBuilder::build_recorder,
        );
    let handle = recorder.handle();
    // A second install fails harmlessly; its handle then renders nothing, which tests accept.
    let _ = metrics::set_global_recorder(recorder);
    handle
}
