//! Section 10, events and schedules (issue 21): the cost of the event stream (worker jobs/s with it on,
//! at the default `events_max_len`, against `events_max_len: 0`), and schedule precision: a
//! `*/1 * * * * *` schedule run for a few ticks, tick → job start.
//!
//! A scheduled job is due at its tick (its unique key is `schedule:<name>:<tick ms>` and its
//! `run_at` is that tick), and the worker stamps `started_at` when it starts it: the delay is
//! `started_at − run_at` from the inspector (what `GET /api/jobs/{id}` returns).

use crate::noop::{Noop, NOOP};
use crate::report::Report;
use crate::sections::queues::{drain_queues, paired, supervised, CONCURRENCY};
use crate::stack::Stack;
use crate::stats;
use crate::Plan;
use anyhow::bail;
use cacheserver_config::{Missed, Overlap, ScheduleSettings, ScheduledJobSettings};
use cacheserver_jobqueue::{JobQueue, JobStatus, Registry};
use std::time::{Duration, Instant};

const SCHEDULE: &str = "bench-every-second";

pub async fn run(stack: &Stack, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let s = "10 events";
    let n = plan.jobs;
    let on = stack.settings()?;
    let default_queue = on.jobqueue.queue.clone();
    let mut off = on.clone();
    off.jobqueue.events_max_len = 0;
    let jobs = [(default_queue.as_str(), n)];
    let pair = paired(
        plan.rounds,
        || drain_queues(stack, &off, &jobs),
        || drain_queues(stack, &on, &jobs),
    )
    .await?;
    report.info(
        s,
        &format!(
            "{n} jobs, c={CONCURRENCY}: event stream off vs on (events_max_len {}), jobs/s{}",
            on.jobqueue.events_max_len,
            pair.rounds_note()
        ),
        pair.rates_cell(),
    );
    report.info(
        s,
        "cost of the event stream: jobs/s with it ÷ without",
        pair.ratio_cell(),
    );
    schedule_precision(stack, plan, report).await
}

/// Ticks of the precision run: a few in smoke (seconds), half a minute in a full run.
fn ticks(plan: &Plan) -> usize {
    if plan.smoke {
        3
    } else {
        30
    }
}

async fn schedule_precision(stack: &Stack, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let s = "10 events";
    let ticks = ticks(plan);
    stack.flush_jobqueue();
    let mut settings = stack.settings()?;
    settings.jobqueue.schedules = vec![ScheduleSettings {
        name: SCHEDULE.into(),
        cron: "*/1 * * * * *".into(),
        timezone: "UTC".into(),
        job: ScheduledJobSettings {
            job_type: NOOP.into(),
            payload: serde_json::json!({}),
            queue: None,
            max_retry: 0,
            timeout_seconds: None,
            priority: None,
        },
        overlap: Overlap::Allow,
        missed: Missed::Skip,
    }];
    let registry = Registry::production(&settings.jobqueue).with(Noop);
    let redis = &settings.cache_server.redis.jobqueue;
    let queue = JobQueue::with_registry(redis, &settings.jobqueue, registry.clone())?;
    let bound = Duration::from_secs(ticks as u64 + 10);
    let ran = supervised(&settings, registry, "bench-schedules", async {
        let deadline = Instant::now() + bound;
        loop {
            let done = queue.stats().await?.done;
            if done >= ticks as u64 || Instant::now() >= deadline {
                return anyhow::Ok(done);
            }
            // A bench poll, not a test's synchronisation: ticks are a second apart.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await??;
    if ran < ticks as u64 {
        bail!("schedule: {ran} of {ticks} ticks ran within {bound:?}");
    }
    let mut delays = Vec::new();
    for id in queue.ids_in(JobStatus::Done).await? {
        let Some(job) = queue.status(&id).await? else {
            continue;
        };
        if let Some(started) = job.started_at {
            delays.push((started - job.run_at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    let early = delays.iter().filter(|d| **d < 0.0).count();
    report.info(
        s,
        &format!(
            "`*/1 * * * * *` schedule, {} ticks: tick → start, p50 / p99",
            delays.len()
        ),
        format!(
            "{:.1} / {:.1} ms",
            stats::q(&delays, 0.5),
            stats::q(&delays, 0.99)
        ),
    );
    report.goal(
        s,
        "schedule never early: starts before their tick",
        format!("{early}"),
        "0",
        early == 0 && !delays.is_empty(),
    );
    Ok(())
}
