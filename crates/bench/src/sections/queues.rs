//! Section 9, named queues (issue 20): three weighted queues (6/3/1) drained together against one queue
//! with the same number of jobs, and the cost of a per-queue `concurrency` limit set above the
//! load. Jobs are `bench:noop` run by the worker library in this process (as the noop rows of
//! sections/worker.rs), so queues and limits are plain `jobqueue` settings, changed in memory.

use crate::drain::{self, Drain};
use crate::noop::{Noop, NOOP};
use crate::report::Report;
use crate::sections::worker::{drain_bound, enqueue_all};
use crate::stack::Stack;
use crate::stats;
use crate::Plan;
use cacheserver_config::{QueueSettings, Settings};
use cacheserver_jobqueue::{store, JobQueue, NewJob, Registry};
use cacheserver_worker::{Supervisor, WorkerOptions};
use std::future::Future;
use std::time::Duration;

/// Concurrency of every run of this section (the worker rows' highest).
pub const CONCURRENCY: usize = 64;
/// How long `during` runs before the worker starts (see [`supervised`]).
const WORKER_HEAD_START: Duration = Duration::from_millis(100);
/// The weighted queues and their weights; jobs are split between them in the same proportion.
const WEIGHTED: [(&str, u32); 3] = [("bench-high", 6), ("bench-mid", 3), ("bench-low", 1)];
/// The limited queue's `concurrency`: above the load, so it only costs its bookkeeping. The
/// load is what the worker holds: up to [`CONCURRENCY`] running plus a fetch of twice that
/// (`backend::MIN_FETCH`'s rule), all marked running; at 2 × CONCURRENCY the limit binds (a fetch
/// gets half its jobs: 0.8 of the jobs/s without it).
const LIMIT_ABOVE_LOAD: u32 = 3 * CONCURRENCY as u32;

pub async fn run(stack: &Stack, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let s = "9 queues";
    let n = plan.jobs;
    let base = stack.settings()?;
    let default_queue = base.jobqueue.queue.clone();
    let mut weighted = base.clone();
    weighted.jobqueue.queues = WEIGHTED.iter().map(|&(q, w)| declared(q, w)).collect();
    let total: u32 = WEIGHTED.iter().map(|(_, w)| w).sum();
    let mut split: Vec<(&str, usize)> = WEIGHTED
        .iter()
        .map(|&(q, w)| (q, n * w as usize / total as usize))
        .collect();
    let rest = n - split.iter().map(|(_, k)| k).sum::<usize>();
    split[0].1 += rest;
    let one = [(default_queue.as_str(), n)];
    let pair = paired(
        plan.rounds,
        || drain_queues(stack, &base, &one),
        || drain_queues(stack, &weighted, &split),
    )
    .await?;
    report.info(
        s,
        &format!(
            "{n} jobs, c={CONCURRENCY}: one queue vs three weighted 6/3/1, jobs/s{}",
            pair.rounds_note()
        ),
        pair.rates_cell(),
    );
    report.goal(
        s,
        "three weighted queues drained together: total jobs/s ÷ one queue",
        pair.ratio_cell(),
        "≥ 0.90",
        pair.ratio >= 0.9,
    );

    let mut limited = base.clone();
    let mut queue = declared("bench-limited", 1);
    queue.concurrency = Some(LIMIT_ABOVE_LOAD);
    limited.jobqueue.queues = vec![queue];
    let free = one_free_queue(&base);
    let (free_jobs, limited_jobs) = ([("bench-free", n)], [("bench-limited", n)]);
    let pair = paired(
        plan.rounds,
        || drain_queues(stack, &free, &free_jobs),
        || drain_queues(stack, &limited, &limited_jobs),
    )
    .await?;
    report.info(
        s,
        &format!(
            "{n} jobs, c={CONCURRENCY}: no limit vs concurrency {LIMIT_ABOVE_LOAD}, jobs/s{}",
            pair.rounds_note()
        ),
        pair.rates_cell(),
    );
    report.info(
        s,
        "cost of a concurrency limit above the load: jobs/s with it ÷ without",
        pair.ratio_cell(),
    );
    Ok(())
}

/// Two set-ups drained in interleaved rounds (a, b, a, b, …), so a drift in the machine's speed
/// falls on both: the median drain of each side and the median of the rounds' ratios b ÷ a.
pub struct Paired {
    pub a: Drain,
    pub b: Drain,
    pub ratio: f64,
    ratios: Vec<f64>,
}

impl Paired {
    /// ` (median of N interleaved rounds)`, or nothing for one round.
    pub fn rounds_note(&self) -> String {
        match self.ratios.len() {
            0 | 1 => String::new(),
            n => format!(" (median of {n} interleaved rounds)"),
        }
    }

    /// `<a>/s (<a's CPU>) vs <b>/s (<b's CPU>)`: the median drains.
    pub fn rates_cell(&self) -> String {
        format!(
            "{:.0}/s ({}) vs {:.0}/s ({})",
            self.a.rate,
            self.a.cpu_cell(),
            self.b.rate,
            self.b.cpu_cell()
        )
    }

    /// The median ratio, with the rounds' range when there are several.
    pub fn ratio_cell(&self) -> String {
        if self.ratios.len() < 2 {
            return format!("{:.2}", self.ratio);
        }
        let (lo, hi) = (stats::min(&self.ratios), stats::max(&self.ratios));
        format!("{:.2} (rounds {lo:.2}–{hi:.2})", self.ratio)
    }
}

pub async fn paired<FA, FB>(
    rounds: usize,
    mut a: impl FnMut() -> FA,
    mut b: impl FnMut() -> FB,
) -> anyhow::Result<Paired>
where
    FA: Future<Output = anyhow::Result<Drain>>,
    FB: Future<Output = anyhow::Result<Drain>>,
{
    let (mut aa, mut bb, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        let x = a().await?;
        let y = b().await?;
        ratios.push(y.rate / x.rate.max(1.0));
        aa.push(x);
        bb.push(y);
    }
    let median_drain = |mut v: Vec<Drain>| {
        v.sort_by(|x, y| x.rate.total_cmp(&y.rate));
        v[v.len() / 2]
    };
    Ok(Paired {
        a: median_drain(aa),
        b: median_drain(bb),
        ratio: stats::median(&ratios),
        ratios,
    })
}

/// A declared queue without limits.
fn declared(name: &str, weight: u32) -> QueueSettings {
    QueueSettings {
        name: name.to_owned(),
        weight,
        concurrency: None,
        rate_limit: None,
        key_concurrency: None,
        key_rate_limit: None,
    }
}

/// `base` with one declared queue `bench-free` and no limit (the limited run's peer).
fn one_free_queue(base: &Settings) -> Settings {
    let mut s = base.clone();
    s.jobqueue.queues = vec![declared("bench-free", 1)];
    s
}

/// On an empty Redis, store `k` due `bench:noop` jobs in each `(queue, k)`, then run one worker
/// (in this process, at [`CONCURRENCY`], configured by `settings`) until all are recorded done.
/// Timed on the clock of [`drain`], with the queues' completions added up.
pub async fn drain_queues(
    stack: &Stack,
    settings: &Settings,
    queues: &[(&str, usize)],
) -> anyhow::Result<Drain> {
    stack.flush_jobqueue();
    let redis = &settings.cache_server.redis.jobqueue;
    let registry = Registry::production(&settings.jobqueue).with(Noop);
    let client = JobQueue::with_registry(redis, &settings.jobqueue, registry.clone())?;
    let mut keys = Vec::new();
    for &(name, k) in queues {
        let queue = client.queue(name)?;
        enqueue_all(&queue, k, |_| {
            NewJob::new(NOOP, serde_json::json!({})).in_queue(name)
        })
        .await?;
        keys.push(store::completions_key(queue.keys()).to_owned());
    }
    let total: usize = queues.iter().map(|(_, k)| k).sum();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let pids = [std::process::id()];
    let port = stack.jobqueue.port();
    let measured = drain::measure_keys(port, &keys, total, drain_bound(total), &pids);
    supervised(settings, registry, "bench-queues", measured).await?
}

/// Run a worker (the `Supervisor`, in this process, at [`CONCURRENCY`], with `registry`'s job
/// types and `settings`' queues, limits, events and schedules) while `during` runs; stop it after.
pub async fn supervised<T>(
    settings: &Settings,
    registry: Registry,
    name: &str,
    during: impl Future<Output = T>,
) -> anyhow::Result<T> {
    let redis = &settings.cache_server.redis.jobqueue;
    let mut options = WorkerOptions::from_settings(&settings.jobqueue);
    options.name = name.to_owned();
    options.concurrency = CONCURRENCY;
    let worker = Supervisor::new(redis, &settings.jobqueue, options)?.with_registry(registry);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // `during` (the drain's pollers) gets a head start to connect: a small drain could otherwise
    // be over before the first poll. Not in the figures: a drain's window opens at its first
    // completion.
    let running = tokio::spawn(async move {
        tokio::time::sleep(WORKER_HEAD_START).await;
        worker.run(stopped).await
    });
    let out = during.await;
    let _ = stop.send(true);
    running.await?;
    Ok(out)
}
