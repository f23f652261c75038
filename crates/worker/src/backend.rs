//! The apalis backend the worker runs on: apalis-redis' `RedisStorage` still registers the
//! worker, beats its heart and re-queues orphans (its code path, its keys), but jobs are fetched
//! by the store's `fetch` (`fetch.lua`) and results written by [`crate::acks`]. What it borrows
//! from apalis-redis is set up in [`crate::apalis`].
//!
//! Why not `RedisStorage`'s own fetch (measured with `just bench`, BullMQ in the same run:
//! 0.51× / 0.71× / 0.72× at concurrency 1 / 8 / 64, p50 36 ms late): apalis-core's `Persisted`
//! runs fetch, lease and ack one after another (three round trips per batch, acks only between
//! batches), a fetch takes only as many jobs as the concurrency, `acquire_leases.lua` LREMs each
//! job from the active list, and an idle worker polls every `poll_interval`. Here one script
//! takes due jobs straight from our zsets, results are written by their own task while the next
//! fetch runs, and an idle worker sleeps until the next due time or a wake-up marker.

use crate::acks::Acks;
use apalis::prelude::{Backend, MetadataStore, Task, TaskBuilder, TaskId, WorkerContext};
use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::BackendConfig;
use apalis_redis::RedisStorage;
use cacheserver_config::SingleRedisSettings;
use cacheserver_jobqueue::store::{self, Finished, Keys, Outcome};
use cacheserver_jobqueue::{JobEnvelope, JobQueueError};
use futures::future::BoxFuture;
use futures::FutureExt;
use redis::aio::ConnectionManager;
use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tower_layer::Identity;

/// A fetch takes twice the concurrency, and at least this many jobs: the ones that cannot start
/// yet wait in this worker (status Running), so slots that free up while the next fetch is on its
/// way have work (measured: +20–30 % at concurrency 8 against a fetch of exactly 8).
pub const MIN_FETCH: usize = 8;

/// How long a queue that had nothing due is asked only after the others (weighted mode; a
/// wake-up ends it sooner). Without it an idle queue was asked first on every turn — it gained
/// credit and never paid — so one idle queue beside a busy one cost a round trip per fetch
/// (measured: 0.81 of one queue's jobs/s).
pub const IDLE_RECHECK: Duration = Duration::from_millis(50);

/// Which served queue gets the next fetch turn: strict order, or smooth weighted round robin
/// (nginx's: each turn every available queue gains its weight in credit, the one with the most
/// credit goes first and pays what they gained). A queue with nothing due passes the turn to the
/// next in credit order, gains nothing for it, and is asked after the others for
/// [`IDLE_RECHECK`]: idle queues give their share to busy ones and cannot hoard credit for later.
#[derive(Debug)]
pub struct Picker {
    weights: Vec<i64>,
    credit: Vec<i64>,
    /// Which queues gained credit in the current turn.
    gained: Vec<bool>,
    /// When each queue last had nothing due.
    idle_since: Vec<Option<Instant>>,
    strict: bool,
}

impl Picker {
    pub fn new(weights: Vec<u32>, strict: bool) -> Self {
        let weights: Vec<i64> = weights.into_iter().map(i64::from).collect();
        let n = weights.len();
        Self {
            credit: vec![0; n],
            gained: vec![false; n],
            idle_since: vec![None; n],
            weights,
            strict,
        }
    }

    fn idle(&self, i: usize, now: Instant) -> bool {
        self.idle_since[i].is_some_and(|t| now.saturating_duration_since(t) < IDLE_RECHECK)
    }

    /// The order in which to try the queues for one turn.
    pub fn order(&mut self, now: Instant) -> Vec<usize> {
        let n = self.weights.len();
        let mut order: Vec<usize> = (0..n).collect();
        if self.strict {
            return order;
        }
        for i in 0..n {
            self.gained[i] = !self.idle(i, now);
            if self.gained[i] {
                self.credit[i] += self.weights[i];
            }
        }
        // Most credit first, ties in the configured order; recently idle queues (those that
        // gained nothing this turn) last.
        order.sort_by_key(|&i| (!self.gained[i], std::cmp::Reverse(self.credit[i])));
        order
    }

    /// The turn's outcome: `served` got jobs (`None`: none had any), `empty` were asked and had
    /// nothing due (with `None`: every queue). An empty queue's gain for the turn is undone.
    pub fn served(&mut self, served: Option<usize>, empty: &[usize], now: Instant) {
        for &i in empty {
            self.idle_since[i] = Some(now);
        }
        if self.strict {
            return;
        }
        for &i in empty {
            if std::mem::take(&mut self.gained[i]) {
                self.credit[i] -= self.weights[i];
            }
        }
        if let Some(i) = served {
            self.idle_since[i] = None;
            let gained: i64 = (0..self.weights.len())
                .filter(|&j| self.gained[j])
                .map(|j| self.weights[j])
                .sum();
            self.credit[i] -= gained;
        }
    }

    /// A wake-up marker came: any queue may have due jobs again.
    pub fn woken(&mut self) {
        self.idle_since.fill(None);
    }
}

/// Our fetch: what it needs, shared by every fetch future.
pub struct Fetcher {
    pub conn: ConnectionManager,
    /// The served queues, in order (never empty).
    pub queues: Vec<Keys>,
    pub picker: std::sync::Mutex<Picker>,
    pub worker: String,
    pub want: usize,
    /// Longest sleep without looking at Redis (`jobqueue.worker.poll_interval`).
    pub idle_wait: Duration,
    /// Woken by the marker listener ([`listen_for_wakeups`]).
    pub wake: Arc<Notify>,
    pub acks: Acks,
}

impl Fetcher {
    /// Due jobs of one served queue (the one whose turn it is, else the next with due jobs),
    /// waiting (without polling) until there are some.
    async fn next_batch(self: Arc<Self>) -> Result<Vec<Task<JobEnvelope>>, JobQueueError> {
        let mut conn = self.conn.clone();
        loop {
            let now = Instant::now();
            let order = self
                .picker
                .lock()
                .map(|mut p| p.order(now))
                .unwrap_or_default();
            let mut next_due_ms: Option<u64> = None;
            let mut served = None;
            let mut empty = Vec::new();
            let mut tasks = Vec::new();
            for i in order {
                let keys = &self.queues[i];
                let fetched = store::fetch(&mut conn, keys, &self.worker, self.want).await?;
                if fetched.limited {
                    cacheserver_jobqueue::metrics::limited(&keys.queue);
                }
                tasks = fetched
                    .jobs
                    .into_iter()
                    .filter_map(|job| self.task(&keys.queue, job))
                    .collect();
                if !tasks.is_empty() {
                    served = Some(i);
                    break;
                }
                empty.push(i);
                next_due_ms = match (next_due_ms, fetched.next_due_ms) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            if let Ok(mut picker) = self.picker.lock() {
                picker.served(served, &empty, now);
            }
            if !tasks.is_empty() {
                return Ok(tasks);
            }
            let until_due =
                next_due_ms.map(|due| Duration::from_millis(due.saturating_sub(store::now_ms())));
            let wait = until_due.map_or(self.idle_wait, |d| d.min(self.idle_wait));
            if wait.is_zero() {
                // Due but not taken (another worker won it): look again, but not in a spin. A
                // paused queue never gets here: `fetch.lua` names no due time, so the worker
                // sleeps `idle_wait` or until the resume's wake-up marker.
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {
                    if let Ok(mut picker) = self.picker.lock() {
                        picker.woken();
                    }
                }
            }
        }
    }

    /// An apalis task; a job whose JSON cannot be read is dead at once (it never could run).
    fn task(&self, queue: &str, mut job: store::FetchedJob) -> Option<Task<JobEnvelope>> {
        let envelope = match serde_json::from_str::<JobEnvelope>(&job.json) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::warn!(job_id = %job.id, error = %e, "stored job cannot be read: dead");
                self.acks.send(Finished {
                    queue: queue.to_owned(),
                    id: job.id,
                    outcome: Outcome::Dead {
                        failures: 1,
                        error: format!("stored job cannot be read: {e}"),
                    },
                });
                return None;
            }
        };
        let id = TaskId::from_str(&job.id).ok()?;
        // The runner and the result writer read the job's queue from here.
        job.meta.insert("queue".to_owned(), queue.to_owned());
        Some(
            TaskBuilder::new(envelope)
                .task_id(id)
                .with_metadata(MetadataStore::from_map(job.meta))
                .build(),
        )
    }
}

/// apalis' `RedisStorage` for the worker's life cycle, our fetch for its jobs.
pub struct QueueBackend {
    apalis: RedisStorage<JobEnvelope>,
    fetcher: Arc<Fetcher>,
    buffer: VecDeque<Task<JobEnvelope>>,
    fetching: Option<BoxFuture<'static, Result<Vec<Task<JobEnvelope>>, JobQueueError>>>,
}

impl QueueBackend {
    pub fn new(apalis: RedisStorage<JobEnvelope>, fetcher: Fetcher) -> Self {
        Self {
            apalis,
            fetcher: Arc::new(fetcher),
            buffer: VecDeque::new(),
            fetching: None,
        }
    }

    /// Jobs fetched but not started go back to waiting (shutdown).
    fn release_buffered(&mut self) {
        for task in self.buffer.drain(..) {
            let Some(id) = task.task_id() else { continue };
            let due_ms = task
                .metadata()
                .get("next_run_ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let queue = task.metadata().get("queue").unwrap_or_default().to_owned();
            self.fetcher.acks.send(Finished {
                queue,
                id: id.to_string(),
                outcome: Outcome::Later { due_ms },
            });
        }
    }
}

impl Backend for QueueBackend {
    type Task = Task<JobEnvelope>;
    type Error = JobQueueError;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        self.apalis
            .poll_ready(cx, worker)
            .map_err(|e| crate::apalis::worker_error(&e))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        loop {
            if let Some(task) = self.buffer.pop_front() {
                return Poll::Ready(Some(Ok(task)));
            }
            let fetcher = self.fetcher.clone();
            let fetch = self
                .fetching
                .get_or_insert_with(|| fetcher.next_batch().boxed());
            let result = std::task::ready!(fetch.poll_unpin(cx));
            self.fetching = None;
            match result {
                Ok(tasks) => self.buffer.extend(tasks),
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        // A fetch cut short may have taken jobs: they are re-queued with this worker's orphans.
        self.fetching = None;
        self.release_buffered();
        self.apalis
            .poll_close(cx, worker)
            .map_err(|e| crate::apalis::worker_error(&e))
    }
}

impl BackendConfig for QueueBackend {
    type Args = JobEnvelope;
    type Id = ulid::Ulid;
    // Jobs are decoded by the fetch itself.
    type Kind = Ephemeral;
    type Config = apalis_redis::Config;
    type Layer = Identity;

    fn config(&self) -> &Self::Config {
        self.apalis.get_config()
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        Identity::new()
    }
}

/// Turn wake-up markers (`{q}:wake` of any served queue, pushed when a job becomes due sooner
/// than a waiting worker thinks) into notifications. It blocks, so it has a connection of its own, made again after
/// an error (with Sentinel, to the master of the moment). `redis` must allow a response to take
/// longer than `block`.
pub async fn listen_for_wakeups(
    redis: SingleRedisSettings,
    queues: Vec<Keys>,
    wake: Arc<Notify>,
    block: Duration,
) {
    loop {
        let mut conn = match cacheserver_redis::single::lazy_connection(&redis) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!(error = %e, "wake-up listener has no connection");
                wake.notify_one();
                tokio::time::sleep(block).await;
                continue;
            }
        };
        loop {
            let popped = store::wait_for_wake(&mut conn, &queues, block).await;
            match popped {
                Ok(true) => wake.notify_one(),
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "wake-up listener lost Redis");
                    // A missed marker costs at most `poll_interval`: look again anyway.
                    wake.notify_one();
                    tokio::time::sleep(block).await;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `turns` turns where the queues in `busy` always have jobs: how many each served.
    fn run(picker: &mut Picker, busy: &[bool], turns: usize, start: Instant) -> Vec<usize> {
        let mut got = vec![0; busy.len()];
        for t in 0..turns {
            let now = start + Duration::from_millis(t as u64);
            let mut empty = Vec::new();
            let mut served = None;
            for i in picker.order(now) {
                if busy[i] {
                    served = Some(i);
                    break;
                }
                empty.push(i);
            }
            if let Some(i) = served {
                got[i] += 1;
            }
            picker.served(served, &empty, now);
        }
        got
    }

    #[test]
    fn busy_queues_share_turns_by_weight() {
        let mut p = Picker::new(vec![6, 3, 1], false);
        assert_eq!(run(&mut p, &[true; 3], 100, Instant::now()), [60, 30, 10]);
    }

    #[test]
    fn an_idle_queue_is_asked_last_and_hoards_no_credit() {
        let start = Instant::now();
        let mut p = Picker::new(vec![1, 1], false);
        // Queue 0 idle for 1,000 turns (1 ms apart): asked first only once per IDLE_RECHECK.
        let mut asked_first = 0;
        for t in 0..1000u64 {
            let now = start + Duration::from_millis(t);
            let order = p.order(now);
            if order[0] == 0 {
                asked_first += 1;
                p.served(Some(1), &[0], now);
            } else {
                p.served(Some(1), &[], now);
            }
        }
        let per_recheck = 1000 / IDLE_RECHECK.as_millis() as usize;
        assert!(
            asked_first <= per_recheck + 1,
            "asked first {asked_first} times"
        );
        // Busy again: it gets its share, not a backlog of credit.
        let later = start + Duration::from_secs(10);
        assert_eq!(run(&mut p, &[true, true], 100, later), [50, 50]);
    }

    #[test]
    fn a_wake_up_ends_the_idle_wait_and_strict_order_never_changes() {
        let now = Instant::now();
        let mut p = Picker::new(vec![1, 1], false);
        p.order(now);
        p.served(Some(1), &[0], now);
        assert_eq!(p.order(now), [1, 0]);
        p.served(Some(1), &[], now);
        p.woken();
        assert_eq!(p.order(now)[0], 0);
        let mut strict = Picker::new(vec![1, 1], true);
        strict.served(Some(1), &[0], now);
        assert_eq!(strict.order(now), [0, 1]);
    }
}
