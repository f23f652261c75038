//! 3. Enqueue: jobs/s through the HTTP routes (single and batch of 1,000) vs jobs/s pushed
//!    straight with the jobqueue library in-process (`enqueue` with N in flight, `enqueue_batch`).
//!    Single registers also on an api with the response cache off, alternated in this run: what
//!    the invalidation after each write costs (issue 19).

use super::api_rss;
use crate::report::Report;
use crate::stack::{Api, Stack};
use crate::stats::median;
use crate::wrk;
use crate::Plan;
use anyhow::bail;
use cacheserver_jobqueue::{JobQueue, NewJob, MAX_BATCH};
use futures::stream::{self, StreamExt};
use std::time::{Duration, Instant};

/// Requests in flight for one-at-a-time enqueues (HTTP connections and library futures alike).
pub const IN_FLIGHT: usize = 64;
/// Batches in flight (each is 1,000 jobs).
pub const BATCHES_IN_FLIGHT: usize = 4;

/// Jobs/s of this section, for the worker section and the BullMQ comparison.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnqueueFigures {
    pub raw_single: f64,
    pub raw_batch: f64,
    pub http_single: f64,
    pub http_batch: f64,
}

/// What the section measures, for its rows.
struct Measured {
    raw_single: f64,
    raw_batch: f64,
    http_single: f64,
    http_batch: f64,
    /// `http_single` on an api with `APP__API__CACHE__ENABLED=false`.
    http_single_cache_off: f64,
}

pub async fn run(
    stack: &Stack,
    plan: &Plan,
    report: &mut Report,
) -> anyhow::Result<EnqueueFigures> {
    let api = stack
        .api(
            "api-enqueue",
            0,
            &[("APP__API__RATE_LIMIT__ENABLED", "false")],
        )
        .await?;
    // The same api with the response cache off: no invalidation after each write.
    let cache_off = stack
        .api(
            "api-enqueue-cache-off",
            0,
            &[
                ("APP__API__RATE_LIMIT__ENABLED", "false"),
                ("APP__API__CACHE__ENABLED", "false"),
            ],
        )
        .await?;
    let queue = stack.job_queue()?;
    stack.flush_jobqueue();
    let raw_single = raw_single(&queue, plan.jobs).await?;
    let raw_batch = raw_batch(&queue, plan.jobs).await?;
    stack.flush_jobqueue();
    // Alternated rounds (medians): both apis see the same machine and the same queue sizes.
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..plan.rounds.max(1) {
        on.push(http(&api, "register", "register.lua", IN_FLIGHT, plan)?);
        stack.flush_jobqueue();
        off.push(http(
            &cache_off,
            "register",
            "register.lua",
            IN_FLIGHT,
            plan,
        )?);
        stack.flush_jobqueue();
    }
    let (http_single, http_single_cache_off) = (median(&on), median(&off));
    let http_batch = http(
        &api,
        "register/batch",
        "register_batch.lua",
        BATCHES_IN_FLIGHT,
        plan,
    )? * MAX_BATCH as f64;
    stack.flush_jobqueue();
    let measured = Measured {
        raw_single,
        raw_batch,
        http_single,
        http_batch,
        http_single_cache_off,
    };
    rows(report, &measured);
    api_rss(report, &api, "the enqueue loads");
    Ok(EnqueueFigures {
        raw_single,
        raw_batch,
        http_single,
        http_batch,
    })
}

fn rows(report: &mut Report, m: &Measured) {
    let s = "3 enqueue";
    report.info(s, "library: enqueue, 64 in flight", per_s(m.raw_single));
    report.info(
        s,
        "library: enqueue_batch(1,000), 4 in flight",
        per_s(m.raw_batch),
    );
    report.info(s, "HTTP register, 64 connections", per_s(m.http_single));
    report.info(
        s,
        "HTTP register, 64 connections, response cache off",
        per_s(m.http_single_cache_off),
    );
    report.info(
        s,
        "HTTP register/batch (1,000/request), 4 connections",
        per_s(m.http_batch),
    );
    let r1 = m.http_single / m.raw_single.max(1.0);
    report.goal(
        s,
        "HTTP register / library enqueue",
        format!("{r1:.2}"),
        "≥ 0.50",
        r1 >= 0.5,
    );
    // The invalidation after each write (batched across concurrent writes) must stay cheap.
    let cache = m.http_single / m.http_single_cache_off.max(1.0);
    report.goal(
        s,
        "HTTP register: response cache on / off",
        format!("{cache:.2}"),
        "≥ 0.90",
        cache >= 0.9,
    );
    let r2 = m.http_batch / m.raw_batch.max(1.0);
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
        per_s(m.http_batch),
        "≥ 10,000/s",
        m.http_batch >= 10_000.0,
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
