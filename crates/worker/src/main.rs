//! The `worker` binary: settings, logging, `/health` + `/metrics`, then the supervised apalis
//! worker until SIGTERM / Ctrl-C (in-flight jobs finish within `shutdown_grace`, exit 0).

use anyhow::Context;
use cacheserver_config::Settings;
use cacheserver_telemetry::{init_tracing, prometheus_builder, LogTarget};
use cacheserver_worker::{health, Backoff, Supervisor, WorkerOptions};
use clap::Parser;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Parser)]
#[command(
    name = "worker",
    about = "Runs cacheserver jobs (apalis on the jobqueue Redis)"
)]
struct Args {
    /// Unique, stable worker name (default: jobqueue.worker.name, else <hostname>-<pid>).
    #[arg(long)]
    name: Option<String>,
    /// Jobs run at once (default: jobqueue.worker.concurrency).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Queues to serve, in order, with weights: `critical=6,default=3,low=1` (a missing weight
    /// is 1). Default: jobqueue.worker.queues, else the default queue and every declared one.
    #[arg(long, value_parser = parse_queues)]
    queues: Option<ServedQueues>,
    /// Always fetch from the first queue (in order) with a due job instead of by weight
    /// (default: jobqueue.worker.strict).
    #[arg(long)]
    strict: bool,
    /// Port of /health and /metrics; 0 picks a free one (default: jobqueue.worker.health_port).
    #[arg(long)]
    health_port: Option<u16>,
    /// First retry delay after a failed job; doubles per failure, e.g. `100ms`
    /// (default: jobqueue.worker.retry_backoff).
    #[arg(long, value_parser = cacheserver_config::parse_duration)]
    retry_backoff: Option<Duration>,
    /// Longest retry delay (default: jobqueue.worker.retry_backoff_max).
    #[arg(long, value_parser = cacheserver_config::parse_duration)]
    retry_backoff_max: Option<Duration>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = Settings::load().context("cannot load settings")?;
    init_tracing(&settings.logging, LogTarget::Stderr)?;
    let metrics = prometheus_builder()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    cacheserver_telemetry::spawn_upkeep(&metrics);
    cacheserver_jobqueue::metrics::describe();

    let options = options(&args, &settings);
    let supervisor = Supervisor::new(
        &settings.cache_server.redis.jobqueue,
        &settings.jobqueue,
        options.clone(),
    )?;
    let port = args
        .health_port
        .unwrap_or(settings.jobqueue.worker.health_port);
    let (listener, addr) = health::bind(&settings.jobqueue.worker.health_host, port)
        .with_context(|| format!("cannot bind the health port {port}"))?;
    tracing::info!(worker = %options.name, health = %addr, "worker starting");
    let render: health::RenderMetrics = Arc::new(move || metrics.render());
    let health_server = health::serve(listener, supervisor.state(), render)
        .context("cannot start the health server")?;
    let health_handle = health_server.handle();
    tokio::spawn(health_server);

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        let _ = stop_tx.send(true);
    });
    supervisor.run(stop_rx).await;
    health_handle.stop(false).await;
    Ok(())
}

fn options(args: &Args, settings: &Settings) -> WorkerOptions {
    let mut options = WorkerOptions::from_settings(&settings.jobqueue);
    if let Some(name) = args.name.as_ref().filter(|n| !n.trim().is_empty()) {
        options.name = name.clone();
    }
    if let Some(ServedQueues(queues)) = args.queues.clone().filter(|q| !q.0.is_empty()) {
        options.queues = queues;
    }
    options.strict |= args.strict;
    if let Some(concurrency) = args.concurrency {
        options.concurrency = concurrency.clamp(1, 1024);
    }
    let base = args
        .retry_backoff
        .unwrap_or(options.backoff.base)
        .max(Duration::from_millis(1));
    let max = args
        .retry_backoff_max
        .unwrap_or(options.backoff.max)
        .max(base);
    options.backoff = Backoff { base, max };
    options
}

/// `--queues`, parsed.
#[derive(Debug, Clone)]
struct ServedQueues(Vec<cacheserver_config::ServedQueue>);

fn parse_queues(text: &str) -> Result<ServedQueues, String> {
    cacheserver_config::parse_served_queues(text).map(ServedQueues)
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
