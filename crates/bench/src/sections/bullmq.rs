//! Section 8, BullMQ in the same run: BullMQ's own producer and no-op worker
//! (bench/bullmq/bench.mjs, npm packages pinned by its package-lock.json) against a Redis started
//! exactly like ours (testkit: AOF everysec, `hz 100`), with the job counts and concurrencies of
//! the enqueue and worker sections. Each row holds BullMQ's figure, ours (from those sections of
//! this run) and ours / BullMQ. An idle worker's CPU is measured here for both sides alike.

mod script;

use super::enqueue::{EnqueueFigures, BATCHES_IN_FLIGHT, IN_FLIGHT};
use super::worker::{drain_bound, WorkerFigures, CONCURRENCIES, TIMELY_CONCURRENCY};
use crate::procs::{Lines, Proc};
use crate::report::Report;
use crate::resources::{self, IdleCpu};
use crate::stack::Stack;
use crate::{stats, Plan};
use anyhow::{bail, Context};
use cacheserver_testkit::RedisServer;
use script::{number, Script};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// `add()` calls in flight for BullMQ's concurrent enqueue (the peer figure).
const ADD_IN_FLIGHT: usize = 50;
/// Concurrency of both idle workers (the worker's configured default).
const IDLE_CONCURRENCY: usize = 8;
/// A freshly started worker settles (connections, scripts) before its idle CPU is sampled.
const SETTLE: Duration = Duration::from_secs(1);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
const MIB: f64 = 1024.0 * 1024.0;

/// BullMQ's side of every row.
#[derive(Debug, Default)]
struct Peer {
    rates: Vec<(usize, f64)>,
    rss_mib: f64,
    redis_bytes_per_job: f64,
    late_ms: Vec<f64>,
    add_one: f64,
    add_many: f64,
    bulk: f64,
    idle: IdleCpu,
}

/// Ours, as the other sections of this run measured it (`None`: that section failed).
#[derive(Debug, Clone, Copy, Default)]
pub struct Ours<'a> {
    pub enqueue: Option<&'a EnqueueFigures>,
    pub worker: Option<&'a WorkerFigures>,
}

pub async fn run(
    stack: &Stack,
    plan: &Plan,
    report: &mut Report,
    ours: Ours<'_>,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let redis = tokio::task::block_in_place(RedisServer::start);
    let script = tokio::task::block_in_place(|| Script::prepare(redis.port()))?;
    let mut peer = Peer::default();
    worker_runs(&script, &redis, plan, &mut peer)?;
    peer.late_ms = delayed(&script, &redis, plan)?;
    enqueue_runs(&script, &redis, plan, &mut peer)?;
    peer.idle = bullmq_idle(&script, &redis, stack, plan).await?;
    let our_idle = our_idle(stack, plan).await?;
    worker_rows(report, plan, &peer, ours.worker);
    timely_rows(report, plan, &peer, ours.worker);
    enqueue_rows(report, plan, &peer, ours.enqueue);
    cost_rows(report, plan, &peer, ours.worker, our_idle);
    println!(
        "bench: BullMQ section took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Like ours: `plan.jobs` due jobs stored first, then one worker drains them, per concurrency.
fn worker_runs(
    script: &Script,
    redis: &RedisServer,
    plan: &Plan,
    peer: &mut Peer,
) -> anyhow::Result<()> {
    let jobs = plan.jobs.to_string();
    let drain = drain_bound(plan.jobs);
    for concurrency in CONCURRENCIES {
        redis.cli(&["FLUSHALL"]);
        let empty = resources::redis_used_memory(redis);
        script.run("fill", &[("jobs", jobs.clone())], SCRIPT_TIMEOUT)?;
        let args = [
            ("jobs", jobs.clone()),
            ("concurrency", concurrency.to_string()),
        ];
        let out = script.run("work", &args, drain)?;
        peer.rates.push((concurrency, number(&out, "rate")?));
        peer.rss_mib = peer.rss_mib.max(number(&out, "rss_bytes")? / MIB);
        peer.redis_bytes_per_job = (resources::redis_used_memory(redis) - empty) / plan.jobs as f64;
    }
    Ok(())
}

/// Like ours: a running worker, `timely_jobs` jobs delayed 1..=max s. started − due, ms.
fn delayed(script: &Script, redis: &RedisServer, plan: &Plan) -> anyhow::Result<Vec<f64>> {
    redis.cli(&["FLUSHALL"]);
    let args = [
        ("jobs", plan.timely_jobs.to_string()),
        ("max-delay", plan.timely_max_delay.to_string()),
        ("concurrency", TIMELY_CONCURRENCY.to_string()),
    ];
    let timeout = Duration::from_secs(30 + plan.timely_max_delay as u64);
    let out = script.run("delayed", &args, timeout)?;
    let late: Vec<f64> = out
        .get("late_ms")
        .and_then(Value::as_array)
        .context("no late_ms in the delayed run")?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    if late.len() != plan.timely_jobs {
        bail!(
            "BullMQ delayed: {} of {} jobs ran",
            late.len(),
            plan.timely_jobs
        );
    }
    Ok(late)
}

/// `add()` one at a time and `ADD_IN_FLIGHT` at once, `addBulk(1000)`: jobs delayed by an hour.
fn enqueue_runs(
    script: &Script,
    redis: &RedisServer,
    plan: &Plan,
    peer: &mut Peer,
) -> anyhow::Result<()> {
    let rate = |mode: &str, in_flight: usize| -> anyhow::Result<f64> {
        redis.cli(&["FLUSHALL"]);
        let args = [
            ("jobs", plan.jobs.to_string()),
            ("in-flight", in_flight.to_string()),
        ];
        number(&script.run(mode, &args, SCRIPT_TIMEOUT)?, "rate")
    };
    peer.add_one = rate("add", 1)?;
    peer.add_many = rate("add", ADD_IN_FLIGHT)?;
    peer.bulk = rate("bulk", BATCHES_IN_FLIGHT)?;
    Ok(())
}

async fn bullmq_idle(
    script: &Script,
    redis: &RedisServer,
    stack: &Stack,
    plan: &Plan,
) -> anyhow::Result<IdleCpu> {
    redis.cli(&["FLUSHALL"]);
    let lines = Arc::new(Lines::default());
    let log = stack.dir.path().join("bullmq-idle.log");
    let args = [("concurrency", IDLE_CONCURRENCY.to_string())];
    let mut proc = script.spawn("idle", &args, &log, lines.clone())?;
    if !lines.wait_for(1, Duration::from_secs(30)).await {
        bail!(
            "the BullMQ idle worker did not start; see {}",
            log.display()
        );
    }
    let cpu = idle_sample(&proc, redis, plan).await;
    proc.terminate(Duration::from_secs(5));
    cpu
}

async fn our_idle(stack: &Stack, plan: &Plan) -> anyhow::Result<IdleCpu> {
    stack.flush_jobqueue();
    let lines = Arc::new(Lines::default());
    let mut worker = stack
        .worker("bench-worker-idle", IDLE_CONCURRENCY, lines)
        .await?;
    let cpu = idle_sample(&worker.proc, &stack.jobqueue, plan).await;
    worker.proc.terminate(Duration::from_secs(10));
    cpu
}

async fn idle_sample(proc: &Proc, redis: &RedisServer, plan: &Plan) -> anyhow::Result<IdleCpu> {
    tokio::time::sleep(SETTLE).await;
    let pid = proc.pid().context("idle worker has no pid")?;
    resources::idle_cpu(pid, redis, plan.idle_window)
        .await
        .with_context(|| format!("cannot read /proc/{pid}/stat"))
}

fn worker_rows(report: &mut Report, plan: &Plan, peer: &Peer, ours: Option<&WorkerFigures>) {
    for &(concurrency, theirs) in &peer.rates {
        let ours_on = |rates: fn(&WorkerFigures) -> &[(usize, f64)]| {
            ours.and_then(|w| rates(w).iter().find(|(c, _)| *c == concurrency))
                .map(|(_, rate)| *rate)
        };
        let runs: [(&str, Option<f64>); 2] = [
            ("ours: bench:noop", ours_on(|w| &w.noop_rates)),
            ("ours: the demo job, prints its line", ours_on(|w| &w.rates)),
        ];
        for (what, mine) in runs {
            let r = ratio(theirs, mine);
            report.compare(
                &format!(
                    "one worker, {} due jobs, concurrency {concurrency}: jobs/s (BullMQ: no-op; {what})",
                    plan.jobs
                ),
                (per_s(theirs), cell(mine, per_s)),
                r,
                "≥ 1.5× (1.0× to resolve)",
                r.map(|r| r >= 1.5),
            );
        }
    }
}

fn timely_rows(report: &mut Report, plan: &Plan, peer: &Peer, ours: Option<&WorkerFigures>) {
    let what = format!(
        "{} jobs delayed 1–{} s, worker running (concurrency {TIMELY_CONCURRENCY}): start − due",
        plan.timely_jobs, plan.timely_max_delay
    );
    let mine = ours.map(|w| w.late_ms.as_slice());
    let earliest = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (theirs, m) = (earliest(&peer.late_ms), mine.map(earliest));
    report.compare(
        &format!("{what}, earliest (never early: ≥ 0)"),
        (ms(theirs), cell(m, ms)),
        None,
        "≥ 0 ms",
        m.map(|m| m >= 0.0),
    );
    for (label, q, goal) in [("p50", 0.5, 2.0), ("p99", 0.99, 5.0)] {
        let (theirs, m) = (stats::q(&peer.late_ms, q), mine.map(|v| stats::q(v, q)));
        report.compare(
            &format!("{what}, {label}"),
            (ms(theirs), cell(m, ms)),
            ratio(theirs, m),
            &format!("≤ {goal:.0} ms"),
            m.map(|m| m <= goal),
        );
    }
}

fn enqueue_rows(report: &mut Report, plan: &Plan, peer: &Peer, ours: Option<&EnqueueFigures>) {
    report.compare(
        &format!(
            "enqueue one job per call, awaited one at a time ({} jobs): BullMQ add()",
            plan.jobs
        ),
        (per_s(peer.add_one), "— (not measured)".to_owned()),
        None,
        "",
        None,
    );
    let single = ours.map(|e| e.http_single);
    let r = ratio(peer.add_many, single);
    report.compare(
        &format!(
            "enqueue one job per call: BullMQ add(), {ADD_IN_FLIGHT} in flight · ours HTTP \
             register, {IN_FLIGHT} connections (library enqueue, {IN_FLIGHT} in flight)"
        ),
        (
            per_s(peer.add_many),
            ours.map_or_else(dash, |e| {
                format!("{} ({})", per_s(e.http_single), per_s(e.raw_single))
            }),
        ),
        r,
        "≥ 1.0×",
        r.map(|r| r >= 1.0),
    );
    let batch = ours.map(|e| e.http_batch);
    let r = ratio(peer.bulk, batch);
    report.compare(
        &format!(
            "bulk enqueue, 1,000 jobs per call, {BATCHES_IN_FLIGHT} calls in flight: \
             BullMQ addBulk · ours HTTP register/batch"
        ),
        (per_s(peer.bulk), cell(batch, per_s)),
        r,
        "≥ 1.5×",
        r.map(|r| r >= 1.5),
    );
}

fn cost_rows(
    report: &mut Report,
    plan: &Plan,
    peer: &Peer,
    ours: Option<&WorkerFigures>,
    our_idle: IdleCpu,
) {
    let rss = ours.map(|w| w.rss_mib);
    report.compare(
        &format!(
            "worker RSS after {} jobs, highest of the worker runs (BullMQ: its Node process)",
            plan.jobs
        ),
        (mb(peer.rss_mib), cell(rss, mb)),
        ratio(peer.rss_mib, rss),
        "≤ 30 MB",
        rss.map(|r| r <= 30.0),
    );
    let bytes = ours.map(|w| w.redis_bytes_per_job);
    report.compare(
        "Redis bytes per finished job (used_memory growth / jobs after the last drain)",
        (
            bytes_cell(peer.redis_bytes_per_job),
            cell(bytes, bytes_cell),
        ),
        ratio(peer.redis_bytes_per_job, bytes),
        "",
        None,
    );
    let window = plan.idle_window.as_secs();
    report.compare(
        &format!("idle worker (concurrency {IDLE_CONCURRENCY}, empty queue): CPU over {window} s"),
        (pct(peer.idle.worker_pct), pct(our_idle.worker_pct)),
        ratio(peer.idle.worker_pct, Some(our_idle.worker_pct)),
        "≤ 1 % of a core",
        Some(our_idle.worker_pct <= 1.0),
    );
    report.compare(
        "idle worker: its Redis' CPU meanwhile (includes Redis' own hz 100 timer)",
        (pct(peer.idle.redis_pct), pct(our_idle.redis_pct)),
        ratio(peer.idle.redis_pct, Some(our_idle.redis_pct)),
        "",
        None,
    );
}

/// ours / BullMQ, when both exist and BullMQ's is not 0.
fn ratio(bullmq: f64, ours: Option<f64>) -> Option<f64> {
    ours.filter(|_| bullmq > 0.0).map(|o| o / bullmq)
}

fn cell(v: Option<f64>, fmt: fn(f64) -> String) -> String {
    v.map_or_else(dash, fmt)
}

fn dash() -> String {
    "—".to_owned()
}

fn per_s(v: f64) -> String {
    format!("{v:.0} jobs/s")
}

fn ms(v: f64) -> String {
    format!("{v:.0} ms")
}

fn mb(v: f64) -> String {
    format!("{v:.1} MB")
}

fn bytes_cell(v: f64) -> String {
    format!("{v:.0} B")
}

fn pct(v: f64) -> String {
    format!("{v:.2} %")
}
