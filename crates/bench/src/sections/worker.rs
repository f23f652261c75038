//! 4. Worker throughput: due no-op jobs processed per second by one worker at concurrency
//!    1/8/64, against the raw enqueue rate. 5. Timeliness: start − due of 1,000 jobs delayed 1–5 s.
//!
//! Start times: the worker prints one line per job (stdout is line-buffered) and the bench stamps
//! each line when it reads it from the pipe, so "started" is the print time plus pipe latency
//! (well under a millisecond): an upper bound on lateness, and an early start would show as < 0.

use crate::procs::{job_message, Lines};
use crate::report::Report;
use crate::stack::Stack;
use crate::stats;
use crate::Plan;
use anyhow::bail;
use cacheserver_jobqueue::{JobQueue, NewJob, MAX_BATCH};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// BullMQ 6.7 on this machine (redis-crates.md, measured separately): jobs/s at 1 / 8 / 64.
const BULLMQ: [(usize, f64); 3] = [(1, 2_300.0), (8, 8_200.0), (64, 9_700.0)];

pub async fn run(
    stack: &Stack,
    plan: &Plan,
    report: &mut Report,
    raw_enqueue: f64,
) -> anyhow::Result<()> {
    let queue = stack.job_queue()?;
    let mut worst_rss: f64 = 0.0;
    for (concurrency, bullmq) in BULLMQ {
        let (rate, rss) = throughput(stack, &queue, plan.jobs, concurrency).await?;
        worst_rss = worst_rss.max(rss);
        let ratio = rate / raw_enqueue.max(1.0);
        report.goal(
            "4 worker",
            &format!("concurrency {concurrency}: jobs/s (ratio to library enqueue)"),
            format!("{rate:.0}/s ({ratio:.2})"),
            "≥ 0.50",
            ratio >= 0.5,
        );
        report.info(
            "4 worker",
            &format!("concurrency {concurrency}: vs BullMQ {bullmq:.0}/s (notes; target 1.5×)"),
            format!("{:.2}×", rate / bullmq),
        );
    }
    let rss = timeliness(stack, &queue, plan, report).await?;
    worst_rss = worst_rss.max(rss);
    report.goal(
        "6 memory",
        "worker RSS, highest after each worker load",
        format!("{worst_rss:.1} MB"),
        "≤ 30 MB",
        worst_rss <= 30.0,
    );
    Ok(())
}

fn due_job(message: String, delay: Duration) -> NewJob {
    NewJob::delay_print(message).after(delay)
}

/// Enqueue `n` due jobs, start a worker, time first line → last line. (jobs/s, worker RSS MB)
async fn throughput(
    stack: &Stack,
    queue: &JobQueue,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<(f64, f64)> {
    stack.flush_jobqueue();
    let ids: Vec<usize> = (0..n).collect();
    for chunk in ids.chunks(MAX_BATCH) {
        let jobs = chunk
            .iter()
            .map(|i| due_job(format!("w{concurrency}-{i}"), Duration::ZERO))
            .collect();
        queue.enqueue_batch(jobs).await?;
    }
    let lines = Arc::new(Lines::default());
    let name = format!("bench-worker-c{concurrency}");
    let mut worker = stack.worker(&name, concurrency, lines.clone()).await?;
    let timeout = Duration::from_secs(30 + (n / 500) as u64);
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
    Ok(((n - 1) as f64 / secs, rss))
}

/// Jobs delayed 1–5 s (whole seconds, as the api accepts), worker already running.
async fn timeliness(
    stack: &Stack,
    queue: &JobQueue,
    plan: &Plan,
    report: &mut Report,
) -> anyhow::Result<f64> {
    stack.flush_jobqueue();
    let lines = Arc::new(Lines::default());
    let mut worker = stack
        .worker("bench-worker-timely", 64, lines.clone())
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
    Ok(rss)
}

fn timeliness_rows(report: &mut Report, late: &[f64], jobs: usize, max_delay: usize) {
    let s = "5 timely";
    let (min, p50, p99, max) = (
        late.iter().copied().fold(f64::INFINITY, f64::min),
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
    report.info(
        s,
        "vs BullMQ p99 90 ms at hz 10 (notes; team target ≤ 50 ms)",
        (if p99 <= 50.0 {
            "within 50 ms"
        } else {
            "over 50 ms"
        })
        .to_owned(),
    );
    if late.len() != jobs {
        report.note(format!(
            "timeliness: {} lines for {jobs} jobs (duplicates?)",
            late.len()
        ));
    }
}
