//! The measurements of `just bench`, one module per topic. Each appends rows to the report.

pub mod bullmq;
pub mod cache;
pub mod enqueue;
pub mod events;
pub mod limiter;
pub mod queues;
pub mod reconnect;
pub mod worker;

use crate::report::Report;
use crate::stack::{Api, Stack};

/// Resident memory of the api after a load, against its 50 MB budget.
pub fn api_rss(report: &mut Report, api: &Api, after: &str) {
    let rss = api.proc.rss_mib().unwrap_or(0.0);
    report.goal(
        "6 memory",
        &format!("api RSS after {after}"),
        format!("{rss:.1} MB"),
        "≤ 50 MB",
        rss <= 50.0,
    );
}

/// Sum of a Prometheus counter over the series whose labels contain `label` (e.g. `backend="redis"`).
pub async fn prometheus_sum(stack: &Stack, api: &Api, metric: &str, label: &str) -> f64 {
    let Ok(resp) = stack
        .http()
        .get(format!("{}/metrics", api.base))
        .send()
        .await
    else {
        return 0.0;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(metric) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
