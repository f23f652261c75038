//! 3. Enqueue: jobs/s through the HTTP routes (single and batch of 1,000) vs jobs/s pushed
//!    straight with the jobqueue library in-process (`enqueue` with N in flight, `enqueue_batch`).

use super::api_rss;
use crate::report::Report;
use crate::stack::{Api, Stack};
use crate::wrk;
use crate::Plan;
use anyhow::bail;
use cacheserver_jobqueue::{JobQueue, NewJob, MAX_BATCH};
use futures::stream::{self, StreamExt};
use std::time::{Duration, Instant};

/// Requests in flight for one-at-a-time enqueues (HTTP connections and library futures alike).
const IN_FLIGHT: usize = 64;
/// Batches in flight (each is 1,000 jobs).
const BATCHES_IN_FLIGHT: usize = 4;

/// Returns the library's one-at-a-time enqueue rate (the worker section compares against it).
pub async fn run(stack: &Stack, plan: &Plan, report: &mut Report) -> anyhow::Result<f64> {
    let api = stack
        .api(
            "api-enqueue",
            0,
            &[("APP__API__RATE_LIMIT__ENABLED", "false")],
        )
        .await?;
    let queue = stack.job_queue()?;
    stack.flush_jobqueue();
    let raw_single = raw_single(&queue, plan.jobs).await?;
    let raw_batch = raw_batch(&queue, plan.jobs).await?;
    stack.flush_jobqueue();
    let http_single = http(&api, "register", "register.lua", IN_FLIGHT, plan)?;
    stack.flush_jobqueue();
    let http_batch = http(
        &api,
        "register/batch",
        "register_batch.lua",
        BATCHES_IN_FLIGHT,
        plan,
    )? * MAX_BATCH as f64;
    stack.flush_jobqueue();
    rows(report, raw_single, raw_batch, http_single, http_batch);
    api_rss(report, &api, "the enqueue loads");
    Ok(raw_single)
}

fn rows(report: &mut Report, raw_single: f64, raw_batch: f64, http_single: f64, http_batch: f64) {
    let s = "3 enqueue";
    report.info(s, "library: enqueue, 64 in flight", per_s(raw_single));
    report.info(
        s,
        "library: enqueue_batch(1,000), 4 in flight",
        per_s(raw_batch),
    );
    report.info(s, "HTTP register, 64 connections", per_s(http_single));
    report.info(
        s,
        "HTTP register/batch (1,000/request), 4 connections",
        per_s(http_batch),
    );
    let r1 = http_single / raw_single.max(1.0);
    report.goal(
        s,
        "HTTP register / library enqueue",
        format!("{r1:.2}"),
        "≥ 0.50",
        r1 >= 0.5,
    );
    let r2 = http_batch / raw_batch.max(1.0);
    report.goal(
        s,
        "HTTP batch / library batch",
        format!("{r2:.2}"),
        "≥ 0.50",
        r2 >= 0.5,
    );
    report.goal(
        s,
        "HTTP batch route jobs/s",
        per_s(http_batch),
        "≥ 10,000/s",
        http_batch >= 10_000.0,
    );
}

fn per_s(v: f64) -> String {
    format!("{v:.0} jobs/s")
}

fn job() -> NewJob {
    NewJob::delay_print("bench").after(Duration::from_secs(3600))
}

/// `n` single enqueues, `IN_FLIGHT` at a time. Jobs/s.
async fn raw_single(queue: &JobQueue, n: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let failures = stream::iter(0..n)
        .map(|_| queue.enqueue(job()))
        .buffer_unordered(IN_FLIGHT)
        .filter(|r| std::future::ready(r.is_err()))
        .count()
        .await;
    if failures > 0 {
        bail!("{failures} of {n} library enqueues failed");
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// `n` jobs in batches of 1,000, `BATCHES_IN_FLIGHT` at a time. Jobs/s.
async fn raw_batch(queue: &JobQueue, n: usize) -> anyhow::Result<f64> {
    let batches = n.div_ceil(MAX_BATCH).max(1);
    let started = Instant::now();
    let results: Vec<_> = stream::iter(0..batches)
        .map(|_| queue.enqueue_batch(vec![job(); MAX_BATCH]))
        .buffer_unordered(BATCHES_IN_FLIGHT)
        .collect()
        .await;
    let stored: usize = results
        .into_iter()
        .map(|r| r.map(|v| v.len()))
        .sum::<Result<usize, _>>()?;
    Ok(stored as f64 / started.elapsed().as_secs_f64())
}

/// 2xx requests/s of a wrk POST load.
fn http(api: &Api, route: &str, script: &str, conns: usize, plan: &Plan) -> anyhow::Result<f64> {
    let url = format!("{}/api/dm-jobqueue/{route}", api.base);
    let result = wrk::run(&url, Some(script), conns, plan.load)?;
    if result.non_2xx > 0 || result.socket_errors > 0 {
        bail!(
            "{route}: {} non-2xx, {} socket errors",
            result.non_2xx,
            result.socket_errors
        );
    }
    Ok(result.ok_rps)
}
