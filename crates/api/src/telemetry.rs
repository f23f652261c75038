//! Logging (tracing, pretty or JSON) and the Prometheus recorder.

use cacheserver_config::{LogFormat, LoggingSettings};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
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

/// The process-wide Prometheus handle. The first call installs the global recorder; later calls
/// (tests build many apps in one process) get clones of the same handle, so every app's
/// `/metrics` renders what the process recorded.
pub fn metrics_recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(install_recorder).clone()
}

fn install_recorder() -> PrometheusHandle {
    let recorder = PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ])
        .map_or_else(
            |_| PrometheusBuilder::new().build_recorder(),
            PrometheusBuilder::build_recorder,
        );
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        // Only another library installing its own recorder first can cause this.
        tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
    }
    handle
}
