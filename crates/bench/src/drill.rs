//! The fault drill (`just drill`): real processes, jobs registered through the api while the
//! worker, the api and the jobqueue Redis are killed/restarted in turn; then chaos resets under
//! load. Every accepted (201) job must run: `lost` must be 0. Duplicates are allowed
//! (at-least-once: a SIGKILLed worker's in-flight jobs run again) but counted.

use crate::procs::{job_message, Lines};
use crate::stack::{Api, Stack, Worker, HIGH_LIMIT};
use anyhow::Context;
use cacheserver_testkit::free_port;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the drill went.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub accepted: usize,
    pub ran: usize,
    pub lost: usize,
    pub duplicates: usize,
    /// Ran without a 201 (stored, but the answer was lost when the api died).
    pub unconfirmed: usize,
    pub refused_503: usize,
    pub failed_requests: usize,
    pub drain: Duration,
    pub chaos_resets: usize,
    pub chaos_503: usize,
    pub chaos_errors: usize,
    pub chaos_ok: usize,
}

impl Summary {
    pub fn line(&self) -> String {
        format!(
            "drill: accepted={} ran={} lost={} dup={}",
            self.accepted, self.ran, self.lost, self.duplicates
        )
    }
}

/// Sizes of one drill.
#[derive(Debug, Clone, Copy)]
pub struct DrillPlan {
    pub jobs: usize,
    /// Jobs per batch request (one more single request follows each batch).
    pub batch: usize,
    pub pace: Duration,
    pub chaos: Duration,
}

impl DrillPlan {
    pub fn full() -> Self {
        Self {
            jobs: 10_000,
            batch: 99,
            pace: Duration::from_millis(100),
            chaos: Duration::from_secs(10),
        }
    }

    pub fn smoke() -> Self {
        Self {
            jobs: 300,
            batch: 9,
            pace: Duration::from_millis(20),
            chaos: Duration::from_secs(2),
        }
    }
}

/// Registration bookkeeping shared by the producers.
#[derive(Default)]
struct Ledger {
    accepted: Mutex<HashSet<String>>,
    next: AtomicUsize,
    refused_503: AtomicUsize,
    failed: AtomicUsize,
}

impl Ledger {
    fn accepted(&self) -> usize {
        self.accepted.lock().map_or(0, |a| a.len())
    }

    fn messages(&self, n: usize) -> Vec<String> {
        let start = self.next.fetch_add(n, Ordering::Relaxed);
        (start..start + n).map(|i| format!("drill-{i}")).collect()
    }

    /// Record one answer to a request that carried `messages`.
    fn record(&self, messages: Vec<String>, status: Option<u16>) {
        match status {
            Some(201) => {
                if let Ok(mut a) = self.accepted.lock() {
                    a.extend(messages);
                }
            }
            Some(503) => {
                self.refused_503.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn job_json(message: &str, i: usize) -> Value {
    json!({"message": message, "delay_seconds": 1 + i % 3, "max_retry": 3})
}

/// POST a batch of `batch` then one single; returns when both answered (or failed).
async fn register_round(http: &reqwest::Client, base: &str, ledger: &Ledger, batch: usize) {
    let messages = ledger.messages(batch);
    let jobs: Vec<Value> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| job_json(m, i))
        .collect();
    let url = format!("{base}/api/dm-jobqueue/register/batch");
    let status = http.post(url).json(&json!({"jobs": jobs})).send().await;
    ledger.record(messages, status.ok().map(|r| r.status().as_u16()));
    let single = ledger.messages(1);
    let url = format!("{base}/api/dm-jobqueue/register");
    let status = http.post(url).json(&job_json(&single[0], 0)).send().await;
    ledger.record(single, status.ok().map(|r| r.status().as_u16()));
}

/// Register until `plan.jobs` were accepted (or 120 s passed), one round per `plan.pace`.
fn producer(
    http: reqwest::Client,
    base: String,
    ledger: Arc<Ledger>,
    plan: DrillPlan,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(120);
        while ledger.accepted() < plan.jobs && Instant::now() < deadline {
            let pace = tokio::time::sleep(plan.pace);
            register_round(&http, &base, &ledger, plan.batch).await;
            pace.await;
        }
    })
}

async fn start_api(stack: &Stack, port: u16) -> anyhow::Result<Api> {
    stack
        .api(
            "drill-api",
            port,
            &[
                ("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", HIGH_LIMIT),
                ("APP__API__RATE_LIMIT__REQUESTS_PER_HOUR", HIGH_LIMIT),
                ("APP__JOBQUEUE__ENQUEUE_TIMEOUT", "1s"),
            ],
        )
        .await
}

async fn start_worker(stack: &Stack, lines: &Arc<Lines>) -> anyhow::Result<Worker> {
    // The same name after a crash: the restarted worker re-queues its predecessor's jobs at once.
    stack.worker("drill-worker", 64, lines.clone()).await
}

/// The whole drill; bounded (< 5 min).
pub async fn run(bin_dir: &std::path::Path, plan: DrillPlan) -> anyhow::Result<Summary> {
    let mut stack = tokio::task::block_in_place(|| Stack::start(bin_dir))?;
    let port = free_port();
    let lines = Arc::new(Lines::default());
    let mut api = start_api(&stack, port).await?;
    let mut worker = start_worker(&stack, &lines).await?;
    let ledger = Arc::new(Ledger::default());
    let http = stack.http().clone();
    let produce = producer(http.clone(), api.base.clone(), ledger.clone(), plan);
    let step = plan.pace * 20;

    tokio::time::sleep(step).await;
    println!(
        "drill: SIGKILL worker (accepted so far {})",
        ledger.accepted()
    );
    worker.proc.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker = start_worker(&stack, &lines).await?;

    tokio::time::sleep(step).await;
    println!("drill: SIGKILL api (accepted so far {})", ledger.accepted());
    api.proc.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    api = start_api(&stack, port).await?;

    tokio::time::sleep(step).await;
    println!(
        "drill: SHUTDOWN jobqueue Redis (accepted so far {})",
        ledger.accepted()
    );
    tokio::task::block_in_place(|| {
        stack.jobqueue.shutdown();
        std::thread::sleep(Duration::from_millis(500));
        stack.jobqueue.restart();
    });
    produce.await.context("producer")?;
    let registered_at = Instant::now();

    let mut summary = chaos(&stack, &api, &ledger, plan.chaos).await;
    let accepted: HashSet<String> = ledger
        .accepted
        .lock()
        .map(|a| a.clone())
        .unwrap_or_default();
    println!(
        "drill: {} accepted; waiting for the queue to drain",
        accepted.len()
    );
    let drained = drain(&lines, &accepted, Duration::from_secs(120)).await;
    summary.drain = registered_at.elapsed();
    tally(&mut summary, &lines, &accepted, &ledger);
    if !drained {
        println!("drill: the queue did not drain within 120 s");
    }
    worker.proc.terminate(Duration::from_secs(10));
    drop(stack);
    Ok(summary)
}

/// Wait until every accepted message was printed by a worker.
async fn drain(lines: &Lines, accepted: &HashSet<String>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let seen: HashSet<String> = lines
            .snapshot()
            .iter()
            .map(|(_, l)| job_message(l).to_owned())
            .collect();
        if accepted.iter().all(|m| seen.contains(m)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tally(s: &mut Summary, lines: &Lines, accepted: &HashSet<String>, ledger: &Ledger) {
    let mut runs: HashMap<String, usize> = HashMap::new();
    for (_, line) in lines.snapshot() {
        *runs.entry(job_message(&line).to_owned()).or_default() += 1;
    }
    s.accepted = accepted.len();
    s.ran = accepted.iter().filter(|m| runs.contains_key(*m)).count();
    s.lost = s.accepted - s.ran;
    s.duplicates = runs.values().map(|n| n - 1).sum();
    s.unconfirmed = runs.keys().filter(|m| !accepted.contains(*m)).count();
    s.refused_503 = ledger.refused_503.load(Ordering::Relaxed);
    s.failed_requests = ledger.failed.load(Ordering::Relaxed);
}

/// `POST /chaos/redis-reset` (force) every 100 ms for `length` while 4 clients register jobs
/// and ping. Their accepted jobs join the ledger (they must run too).
async fn chaos(stack: &Stack, api: &Api, ledger: &Arc<Ledger>, length: Duration) -> Summary {
    let stop = Arc::new(AtomicBool::new(false));
    let statuses = Arc::new(Mutex::new(Vec::<Option<u16>>::new()));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (http, base) = (stack.http().clone(), api.base.clone());
        let (stop, statuses, ledger) = (stop.clone(), statuses.clone(), ledger.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let msg = ledger.messages(1);
                let url = format!("{base}/api/dm-jobqueue/register");
                let r = http.post(url).json(&job_json(&msg[0], 0)).send().await;
                let status = r.ok().map(|r| r.status().as_u16());
                ledger.record(msg, status);
                let ping = http.get(format!("{base}/api/ping")).send().await;
                if let Ok(mut s) = statuses.lock() {
                    s.extend([status, ping.ok().map(|r| r.status().as_u16())]);
                }
            }
        }));
    }
    let resets = reset_loop(stack, api, length).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        let _ = l.await;
    }
    let statuses = statuses.lock().map(|s| s.clone()).unwrap_or_default();
    Summary {
        chaos_resets: resets,
        chaos_ok: statuses
            .iter()
            .filter(|s| matches!(s, Some(200 | 201)))
            .count(),
        chaos_503: statuses.iter().filter(|s| **s == Some(503)).count(),
        chaos_errors: statuses
            .iter()
            .filter(|s| !matches!(s, Some(200 | 201 | 503)))
            .count(),
        ..Summary::default()
    }
}

async fn reset_loop(stack: &Stack, api: &Api, length: Duration) -> usize {
    let url = format!("{}/chaos/redis-reset", api.base);
    let end = Instant::now() + length;
    let mut resets = 0;
    while Instant::now() < end {
        let r = stack
            .http()
            .post(&url)
            .json(&json!({"force": true}))
            .send()
            .await;
        resets += usize::from(r.is_ok_and(|r| r.status().is_success()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    resets
}
