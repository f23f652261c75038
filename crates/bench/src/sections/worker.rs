//! 4. Worker throughput: due jobs processed per second by one worker at concurrency 1/8/64,
//!    against the raw enqueue rate: the demo job (the `worker` binary; it prints a line per job)
//!    and `bench:noop` (the same `Supervisor` run in this process with the bench's registry, so
//!    printing is not in the figure). 5. Timeliness: start − due of 1,000 jobs delayed 1–5 s.
//!
//! Start times: the worker prints one line per job (stdout is line-buffered) and the bench stamps
//! each line when it reads it from the pipe, so "started" is the print time plus pipe latency
//! (well under a millisecond): an upper bound on lateness, and an early start would show as < 0.

use crate::noop::{Noop, NOOP};
use crate::procs::{job_message, Lines};
use crate::report::Report;
use crate::resources;
use crate::stack::Stack;
use crate::stats;
use crate::Plan;
use crate::{drain, quiet};
use anyhow::bail;
use cacheserver_jobqueue::{store, JobQueue, NewJob, Registry, MAX_BATCH};
use cacheserver_worker::{Supervisor, WorkerOptions};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Worker concurrencies measured (BullMQ runs the same ones: sections/bullmq.rs).
pub const CONCURRENCIES: [usize; 3] = [1, 8, 64];
/// Concurrency of the timeliness run.
pub const TIMELY_CONCURRENCY: usize = 64;

/// Our figures that the BullMQ comparison (sections/bullmq.rs) puts beside BullMQ's.
#[derive(Debug, Clone, Default)]
pub struct WorkerFigures {
    /// (concurrency, jobs/s) on `plan.jobs` due demo jobs (they print a line each).
    pub rates: Vec<(usize, f64)>,
    /// (concurrency, jobs/s) on `plan.jobs` due `bench:noop` jobs.
    pub noop_rates: Vec<(usize, f64)>,
    /// Highest worker RSS (MB) right after draining `plan.jobs` jobs.
    pub rss_mib: f64,
    /// Growth of Redis `used_memory` per finished job, after the last drain.
    pub redis_bytes_per_job: f64,
    /// The same once `done_retention` has passed for them (trimmed): should be ~0.
    pub redis_bytes_per_job_trimmed: f64,
    /// started − due (ms) of each delayed job.
    pub late_ms: Vec<f64>,
}

pub async fn run(
    stack: &Stack,
    plan: &Plan,
    report: &mut Report,
    raw_enqueue: f64,
) -> anyhow::Result<WorkerFigures> {
    let queue = stack.job_queue()?;
    let mut figures = WorkerFigures::default();
    for concurrency in CONCURRENCIES {
        stack.flush_jobqueue();
        let empty = resources::redis_used_memory(&stack.jobqueue);
        let (rate, rss, bytes) = throughput(stack, &queue, plan.jobs, concurrency, empty).await?;
        figures.redis_bytes_per_job_trimmed =
            bytes_after_retention(stack, &queue, plan.jobs, empty).await?;
        figures.rates.push((concurrency, rate));
        figures.rss_mib = figures.rss_mib.max(rss);
        figures.redis_bytes_per_job = bytes;
        let ratio = rate / raw_enqueue.max(1.0);
        report.goal(
            "4 worker",
            &format!("concurrency {concurrency}: jobs/s (ratio to library enqueue)"),
            format!("{rate:.0}/s ({ratio:.2})"),
            "≥ 0.50",
            ratio >= 0.5,
        );
        let noop = noop_throughput(stack, plan.jobs, concurrency).await?;
        figures.noop_rates.push((concurrency, noop));
        report.info(
            "4 worker",
            &format!("concurrency {concurrency}, bench:noop jobs: jobs/s"),
            format!("{noop:.0}/s"),
        );
    }
    let (kept, trimmed) = (
        figures.redis_bytes_per_job,
        figures.redis_bytes_per_job_trimmed,
    );
    report.goal(
        "6 memory",
        "Redis bytes per finished job: kept until done_retention / after it (trimmed)",
        format!("{kept:.0} B / {trimmed:.0} B"),
        "after ≤ 10% of kept",
        trimmed <= kept * 0.1,
    );
    let (rss, late_ms) = timeliness(stack, &queue, plan, report).await?;
    figures.late_ms = late_ms;
    let worst_rss = figures.rss_mib.max(rss);
    report.goal(
        "6 memory",
        "worker RSS, highest after each worker load",
        format!("{worst_rss:.1} MB"),
        "≤ 30 MB",
        worst_rss <= 30.0,
    );
    Ok(figures)
}

fn due_job(message: String, delay: Duration) -> NewJob {
    NewJob::delay_print(message).after(delay)
}

/// Store jobs `0..n` made by `job`, [`MAX_BATCH`] per call.
pub async fn enqueue_all(
    queue: &JobQueue,
    n: usize,
    job: impl Fn(usize) -> NewJob,
) -> anyhow::Result<()> {
    let ids: Vec<usize> = (0..n).collect();
    for chunk in ids.chunks(MAX_BATCH) {
        queue
            .enqueue_batch(chunk.iter().map(|&i| job(i)).collect())
            .await?;
    }
    Ok(())
}

/// How long draining `n` jobs may take before the run counts as failed (ours and BullMQ's).
pub fn drain_bound(n: usize) -> Duration {
    Duration::from_secs(30 + (n / 500) as u64)
}

/// On an empty queue (`used_memory` then: `empty`), enqueue `n` due jobs, start a worker, time
/// first line → last line. (jobs/s, worker RSS MB, Redis bytes per finished job)
async fn throughput(
    stack: &Stack,
    queue: &JobQueue,
    n: usize,
    concurrency: usize,
    empty: f64,
) -> anyhow::Result<(f64, f64, f64)> {
    enqueue_all(queue, n, |i| {
        due_job(format!("w{concurrency}-{i}"), Duration::ZERO)
    })
    .await?;
    let lines = Arc::new(Lines::default());
    let name = format!("bench-worker-c{concurrency}");
    let mut worker = stack.worker(&name, concurrency, lines.clone()).await?;
    let timeout = drain_bound(n);
    let done = lines.wait_for(n, timeout).await;
    let rss = worker.proc.rss_mib().unwrap_or(0.0);
    worker.proc.terminate(Duration::from_secs(10));
    if !done {
        bail!(
            "concurrency {concurrency}: {} of {n} jobs ran within {timeout:?}",
            lines.len()
        );
    }
    let seen = lines.snapshot();
    let (first, last) = (seen[0].0, seen[seen.len() - 1].0);
    let secs = (last.saturating_sub(first) as f64 / 1000.0).max(0.001);
    let bytes = (resources::redis_used_memory(&stack.jobqueue) - empty) / n as f64;
    Ok(((n - 1) as f64 / secs, rss, bytes))
}

/// Redis bytes per job left once the finished jobs' `done_retention` has passed: what the
/// worker's trim (`trim_done.lua`) leaves, measured by trimming with a retention of 0.
async fn bytes_after_retention(
    stack: &Stack,
    queue: &JobQueue,
    n: usize,
    empty: f64,
) -> anyhow::Result<f64> {
    for _ in 0..(n / store::PROMOTE_CHUNK + 2) {
        let keys = queue.keys().clone();
        let (_, deleted) = queue
            .with_connection(Duration::from_secs(5), |mut c| async move {
                store::trim_done(&mut c, &keys, Duration::ZERO).await
            })
            .await?;
        if deleted == 0 {
            break;
        }
    }
    Ok((resources::redis_used_memory(&stack.jobqueue) - empty) / n as f64)
}

/// `n` due `bench:noop` jobs drained by the worker library in this process (rate on the one
/// clock of [`drain`]: recorded completions).
async fn noop_throughput(stack: &Stack, n: usize, concurrency: usize) -> anyhow::Result<f64> {
    Ok(noop_drain(stack, n, concurrency, None).await?.1.rate)
}

/// `n` due `bench:noop` jobs stored, then (after the quiet gate, when `gate` bounds it) the
/// `Supervisor` runs in this process at `concurrency`: its CPU is this process' CPU over the
/// drain (which includes the bench's own 2 ms completion poll, a cost BullMQ's side does not
/// carry).
pub async fn noop_drain(
    stack: &Stack,
    n: usize,
    concurrency: usize,
    gate: Option<Duration>,
) -> anyhow::Result<(Option<quiet::Gate>, drain::Drain)> {
    stack.flush_jobqueue();
    let settings = stack.settings()?;
    let redis = &settings.cache_server.redis.jobqueue;
    let registry = Registry::production(&settings.jobqueue).with(Noop);
    let queue = JobQueue::with_registry(redis, &settings.jobqueue, registry.clone())?;
    enqueue_all(&queue, n, |_| NewJob::new(NOOP, serde_json::json!({}))).await?;
    let gate = match gate {
        Some(bound) => Some(quiet::wait(&format!("ours c{concurrency}"), bound).await),
        None => None,
    };
    let mut options = WorkerOptions::from_settings(&settings.jobqueue);
    options.name = format!("bench-noop-c{concurrency}");
    options.concurrency = concurrency;
    let worker = Supervisor::new(redis, &settings.jobqueue, options)?.with_registry(registry);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(worker.run(stopped));
    let key = store::completions_key(queue.keys()).to_owned();
    let pids = [std::process::id()];
    let drained = drain::measure(stack.jobqueue.port(), &key, n, drain_bound(n), &pids).await;
    let _ = stop.send(true);
    running.await?;
    Ok((gate, drained?))
}

/// Jobs delayed 1–5 s (whole seconds, as the api accepts), worker already running.
async fn timeliness(
    stack: &Stack,
    queue: &JobQueue,
    plan: &Plan,
    report: &mut Report,
) -> anyhow::Result<(f64, Vec<f64>)> {
    stack.flush_jobqueue();
    let lines = Arc::new(Lines::default());
    let mut worker = stack
        .worker("bench-worker-timely", TIMELY_CONCURRENCY, lines.clone())
        .await?;
    let mut due: HashMap<String, u64> = HashMap::new();
    let ids: Vec<usize> = (0..plan.timely_jobs).collect();
    for chunk in ids.chunks(100) {
        let jobs: Vec<NewJob> = chunk
            .iter()
            .map(|i| {
                due_job(
                    format!("t-{i}"),
                    Duration::from_secs(1 + (*i % plan.timely_max_delay) as u64),
                )
            })
            .collect();
        let messages: Vec<String> = chunk.iter().map(|i| format!("t-{i}")).collect();
        let stored = queue.enqueue_batch(jobs).await?;
        for (message, job) in messages.into_iter().zip(stored) {
            due.insert(message, job.run_at.timestamp_millis() as u64);
        }
    }
    let all = lines.wait_for(due.len(), Duration::from_secs(20)).await;
    let rss = worker.proc.rss_mib().unwrap_or(0.0);
    worker.proc.terminate(Duration::from_secs(10));
    if !all {
        bail!("timeliness: {} of {} jobs ran", lines.len(), due.len());
    }
    let late: Vec<f64> = lines
        .snapshot()
        .iter()
        .filter_map(|(seen, line)| {
            let due_ms = *due.get(job_message(line))?;
            Some(*seen as f64 - due_ms as f64)
        })
        .collect();
    timeliness_rows(report, &late, due.len(), plan.timely_max_delay);
    Ok((rss, late))
}

fn timeliness_rows(report: &mut Report, late: &[f64], jobs: usize, max_delay: usize) {
    let s = "5 timely";
    let (min, p50, p99, max) = (
        stats::min(late),
        stats::q(late, 0.5),
        stats::q(late, 0.99),
        stats::max(late),
    );
    report.info(
        s,
        &format!("{jobs} jobs, delays 1–{max_delay} s: started − due, min / p50 / max"),
        format!("{min:.0} / {p50:.0} / {max:.0} ms"),
    );
    report.goal(
        s,
        "never early: min(started − due)",
        format!("{min:.0} ms"),
        "≥ 0",
        min >= 0.0,
    );
    report.goal(
        s,
        "p99 late",
        format!("{p99:.0} ms"),
        "≤ 250 ms",
        p99 <= 250.0,
    );
    if late.len() != jobs {
        report.note(format!(
            "timeliness: {} lines for {jobs} jobs (duplicates?)",
            late.len()
        ));
    }
}
