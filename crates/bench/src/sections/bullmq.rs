//! Section 8, BullMQ in the same run: BullMQ's own producer and no-op worker
//! (bench/bullmq/bench.mjs, npm packages pinned by its package-lock.json) against a Redis started
//! exactly like ours (testkit: AOF everysec, `hz 100`), with the job counts and concurrencies of
//! the enqueue and worker sections. Each row holds BullMQ's figure, ours (from those sections of
//! this run) and ours / BullMQ. An idle worker's CPU is measured here for both sides alike.

mod script;

use super::enqueue::{EnqueueFigures, BATCHES_IN_FLIGHT, IN_FLIGHT};
use super::worker::{drain_bound, noop_drain, WorkerFigures, CONCURRENCIES, TIMELY_CONCURRENCY};
use crate::drain::{self, Drain};
use crate::procs::{Lines, Proc};
use crate::quiet::{self, Gate, QUIET_CORES};
use crate::report::Report;
use crate::resources::{self, IdleCpu};
use crate::stack::Stack;
use crate::{stats, Plan};
use anyhow::{bail, Context};
use cacheserver_testkit::RedisServer;
use nix::sys::signal::Signal;
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

/// BullMQ's side of every row.
#[derive(Debug, Default)]
struct Peer {
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
    let rounds = interleaved(stack, &script, &redis, plan, report, &mut peer).await?;
    report.gate(quiet::wait("BullMQ delayed jobs", plan.quiet_bound).await);
    peer.late_ms = delayed(&script, &redis, plan)?;
    enqueue_runs(&script, &redis, plan, report, &mut peer).await?;
    report.gate(quiet::wait("BullMQ idle worker", plan.quiet_bound).await);
    peer.idle = bullmq_idle(&script, &redis, stack, plan).await?;
    report.gate(quiet::wait("ours idle worker", plan.quiet_bound).await);
    let our_idle = our_idle(stack, plan).await?;
    worker_rows(report, plan, &rounds);
    timely_rows(report, plan, &peer, ours.worker);
    enqueue_rows(report, plan, &peer, ours.enqueue);
    cost_rows(report, plan, &peer, ours.worker, our_idle);
    println!(
        "bench: BullMQ section took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Our worker fetches up to max(2 × concurrency, this) due jobs per script call (the worker
/// runtime's `MIN_FETCH`, private to it; said on the row so a reader knows what c1 means).
const MIN_FETCH: usize = 8;
/// BullMQ's processes per core in its recommended throughput set-up, at this concurrency each.
const PER_CORE_CONCURRENCY: usize = 64;
/// BullMQ's completed set (it keeps completed jobs by default, as we keep finished ones).
const COMPLETED: &str = "bull:bench:completed";

/// One round at one concurrency: ours, then BullMQ, each after its own quiet gate.
#[derive(Debug, Clone, Copy)]
struct Pair {
    ours: Drain,
    bullmq: Drain,
    /// Either side started with other load above the gate's threshold.
    busy: bool,
}

impl Pair {
    fn ratio(&self) -> f64 {
        self.ours.rate / self.bullmq.rate.max(f64::MIN_POSITIVE)
    }
}

/// Every round's pairs: per concurrency, and BullMQ's one-process-per-core set-up against our
/// one worker at [`PER_CORE_CONCURRENCY`].
#[derive(Debug, Default)]
struct Rounds {
    by_concurrency: Vec<(usize, Vec<Pair>)>,
    per_core: Vec<Pair>,
    cores: usize,
}

/// `plan.rounds` rounds of: ours c1, BullMQ c1, ours c8, BullMQ c8, ours c64, BullMQ c64,
/// BullMQ one process per core (c64 each). The same `plan.jobs` due jobs on each side, the same
/// clock (recorded completions), CPU per job on both sides. Drifts in machine speed during the
/// run fall on both sides of a ratio alike.
async fn interleaved(
    stack: &Stack,
    script: &Script,
    redis: &RedisServer,
    plan: &Plan,
    report: &mut Report,
    peer: &mut Peer,
) -> anyhow::Result<Rounds> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut rounds = Rounds {
        by_concurrency: CONCURRENCIES.iter().map(|&c| (c, Vec::new())).collect(),
        per_core: Vec::new(),
        cores,
    };
    for round in 1..=plan.rounds {
        for (concurrency, pairs) in &mut rounds.by_concurrency {
            let c = *concurrency;
            let (gate, ours) = noop_drain(stack, plan.jobs, c, Some(plan.quiet_bound)).await?;
            let ours_busy = gate.as_ref().is_some_and(Gate::busy);
            report.gates.extend(gate);
            let run = bullmq_drain(script, redis, stack, plan, c, 1, round).await?;
            peer.rss_mib = peer.rss_mib.max(run.rss_mib);
            peer.redis_bytes_per_job = run.redis_bytes_per_job;
            let pair = Pair {
                ours,
                bullmq: run.drain,
                busy: ours_busy || run.gate.busy(),
            };
            report.gates.push(run.gate);
            if c == PER_CORE_CONCURRENCY {
                let run = bullmq_drain(script, redis, stack, plan, c, cores, round).await?;
                rounds.per_core.push(Pair {
                    bullmq: run.drain,
                    busy: pair.busy || run.gate.busy(),
                    ..pair
                });
                report.gates.push(run.gate);
            }
            pairs.push(pair);
        }
    }
    Ok(rounds)
}

struct BullmqRun {
    gate: Gate,
    drain: Drain,
    rss_mib: f64,
    redis_bytes_per_job: f64,
}

/// `plan.jobs` due jobs stored, `processes` BullMQ workers (concurrency each) started paused;
/// once all are ready and the machine is quiet, all start and drain the queue.
async fn bullmq_drain(
    script: &Script,
    redis: &RedisServer,
    stack: &Stack,
    plan: &Plan,
    concurrency: usize,
    processes: usize,
    round: usize,
) -> anyhow::Result<BullmqRun> {
    let jobs = plan.jobs.to_string();
    redis.cli(&["FLUSHALL"]);
    let empty = resources::redis_used_memory(redis);
    script.run("fill", &[("jobs", jobs)], SCRIPT_TIMEOUT)?;
    let lines = Arc::new(Lines::default());
    let mut workers = Vec::with_capacity(processes);
    for i in 0..processes {
        let log = stack
            .dir
            .path()
            .join(format!("bullmq-serve-c{concurrency}-p{i}-r{round}.log"));
        let args = [("concurrency", concurrency.to_string())];
        workers.push(script.spawn("serve", &args, &log, lines.clone())?);
    }
    if !lines.wait_for(processes, SCRIPT_TIMEOUT).await {
        bail!(
            "{processes} BullMQ workers did not all start (logs in {})",
            stack.dir.path().display()
        );
    }
    let phase = if processes == 1 {
        format!("BullMQ c{concurrency}")
    } else {
        format!("BullMQ {processes} processes × c{concurrency}")
    };
    let gate = quiet::wait(&phase, plan.quiet_bound).await;
    for w in &workers {
        w.signal(Signal::SIGUSR1)?;
    }
    let pids: Vec<u32> = workers.iter().filter_map(Proc::pid).collect();
    let drained = drain::measure(
        redis.port(),
        COMPLETED,
        plan.jobs,
        drain_bound(plan.jobs),
        &pids,
    )
    .await;
    let rss_mib = workers.iter().filter_map(Proc::rss_mib).fold(0.0, f64::max);
    for w in &mut workers {
        w.terminate(Duration::from_secs(5));
    }
    let redis_bytes_per_job = (resources::redis_used_memory(redis) - empty) / plan.jobs as f64;
    Ok(BullmqRun {
        gate,
        drain: drained.with_context(|| phase.clone())?,
        rss_mib,
        redis_bytes_per_job,
    })
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
async fn enqueue_runs(
    script: &Script,
    redis: &RedisServer,
    plan: &Plan,
    report: &mut Report,
    peer: &mut Peer,
) -> anyhow::Result<()> {
    let mut rate = async |mode: &str, in_flight: usize| -> anyhow::Result<f64> {
        redis.cli(&["FLUSHALL"]);
        let gate = format!("BullMQ {mode}, {in_flight} in flight");
        report.gate(quiet::wait(&gate, plan.quiet_bound).await);
        let args = [
            ("jobs", plan.jobs.to_string()),
            ("in-flight", in_flight.to_string()),
        ];
        number(&script.run(mode, &args, SCRIPT_TIMEOUT)?, "rate")
    };
    peer.add_one = rate("add", 1).await?;
    peer.add_many = rate("add", ADD_IN_FLIGHT).await?;
    peer.bulk = rate("bulk", BATCHES_IN_FLIGHT).await?;
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

fn worker_rows(report: &mut Report, plan: &Plan, rounds: &Rounds) {
    let n = plan.jobs;
    let r = plan.rounds;
    for (concurrency, pairs) in &rounds.by_concurrency {
        let c = *concurrency;
        pair_row(
            report,
            &format!(
                "one worker, {n} due jobs, concurrency {c}, median of {r} interleaved rounds \
                 (BullMQ: one Worker, no-op; concurrency {c} = up to {c} jobs in flight, each \
                 finished job fetches the next in the same call · ours: bench:noop; concurrency \
                 {c} = up to {c} jobs in flight, fetching up to {} jobs per script call and writing \
                 results in batches)",
                (c * 2).max(MIN_FETCH)
            ),
            pairs,
        );
    }
    let cores = rounds.cores;
    pair_row(
        report,
        &format!(
            "BullMQ's recommended throughput set-up, {n} due jobs, median of {r} interleaved rounds \
             (BullMQ: {cores} Worker processes, one per core, concurrency {PER_CORE_CONCURRENCY} \
             each · ours: one worker, concurrency {PER_CORE_CONCURRENCY})"
        ),
        &rounds.per_core,
    );
}

/// A row from interleaved rounds: medians of each side's rate and CPU per job, the median ratio
/// and its range, and how many rounds started on a busy machine.
fn pair_row(report: &mut Report, measure: &str, pairs: &[Pair]) {
    let side = |pick: fn(&Pair) -> Drain| {
        let rate = stats::median(&pairs.iter().map(|p| pick(p).rate).collect::<Vec<_>>());
        let worker = stats::median(&pairs.iter().map(|p| pick(p).worker_us).collect::<Vec<_>>());
        let redis = stats::median(&pairs.iter().map(|p| pick(p).redis_us).collect::<Vec<_>>());
        let cpu = Drain {
            rate,
            worker_us: worker,
            redis_us: redis,
        };
        format!("{} · {}", per_s(rate), cpu.cpu_cell())
    };
    let ratios: Vec<f64> = pairs.iter().map(Pair::ratio).collect();
    let median = (!ratios.is_empty()).then(|| stats::median(&ratios));
    let (lo, hi) = (stats::min(&ratios), stats::max(&ratios));
    let busy = pairs.iter().filter(|p| p.busy).count();
    let mut measure = measure.to_owned();
    if busy > 0 {
        measure.push_str(&format!(
            " — **BUSY: {busy} of {} rounds started with other load ≥ {QUIET_CORES} core**",
            pairs.len()
        ));
    }
    report.compare(
        &measure,
        (
            side(|p| p.bullmq),
            format!("{} (ratio range {lo:.2}–{hi:.2}×)", side(|p| p.ours)),
        ),
        median,
        "≥ 1.5× (1.0× to resolve)",
        median.map(|r| r >= 1.5),
    );
}

fn timely_rows(report: &mut Report, plan: &Plan, peer: &Peer, ours: Option<&WorkerFigures>) {
    let what = format!(
        "{} jobs delayed 1–{} s, worker running (concurrency {TIMELY_CONCURRENCY}): start − due",
        plan.timely_jobs, plan.timely_max_delay
    );
    let mine = ours.map(|w| w.late_ms.as_slice());
    let (theirs, m) = (stats::min(&peer.late_ms), mine.map(stats::min));
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
