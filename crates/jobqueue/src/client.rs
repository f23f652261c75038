//! The client (`JobQueue`): register (one job through the batcher, or a batch), retry, delete,
//! pause and resume; what the api uses. Reading jobs back is the inspector (`inspector.rs`);
//! every Redis call goes through the store (`store/`). Never waits for Redis at construction;
//! every call has a deadline.

use crate::batcher::{self, Waiting};
use crate::error::JobQueueError;
use crate::jobs::{JobEnvelope, Registry};
use crate::store::{self, Keys, Store, StoredJob};
use crate::types::{
    CancelledJob, EnqueuedJob, JobStatus, NewJob, QueueLimits, RetriedJob, DEFAULT_PRIORITY,
    MAX_BATCH, MAX_LIMIT_KEY_CHARS, MAX_PRIORITY, MAX_UNIQUE_KEY_CHARS, MIN_PRIORITY,
};
use cacheserver_config::{
    queue_name_problem, JobqueueSettings, SingleRedisSettings, MAX_DELAY_SECONDS, MAX_RETRY_LIMIT,
};
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Longest `timeout_seconds` (a day).
pub const MAX_TIMEOUT_SECONDS: u64 = 86_400;
/// Longest `unique_for_seconds` (30 days).
pub const MAX_UNIQUE_FOR_SECONDS: u64 = 2_592_000;
/// Most ids one bulk call takes, and most jobs one bulk call by state touches.
pub const MAX_BULK: usize = 1_000;

/// A handle to one queue (the default queue from [`JobQueue::new`], another from
/// [`JobQueue::queue`]); every handle shares the connections. Cheap to clone. A job names its
/// own queue ([`NewJob::queue`]), so enqueueing through any handle stores it where it belongs.
#[derive(Clone)]
pub struct JobQueue {
    inner: Arc<Inner>,
    keys: Keys,
}

struct Inner {
    store: Store,
    registry: Registry,
    enqueue_timeout: Duration,
    /// `jobqueue.queues`, in order.
    declared: Vec<String>,
    /// Queues this process already recorded in the store's set of queue names.
    remembered: Mutex<HashSet<String>>,
    /// Single enqueues on their way to [`batcher::run`] (started on first use).
    batcher: OnceLock<mpsc::UnboundedSender<Waiting<Prepared>>>,
    /// Who waits for which job to end (`wait_finished`).
    watchers: crate::waiter::Watchers,
}

impl JobQueue {
    /// The client for the production job types ([`Registry::production`]). Never waits for
    /// Redis: connections open on first use and reopen by themselves after errors.
    pub fn new(
        redis: &SingleRedisSettings,
        settings: &JobqueueSettings,
    ) -> Result<Self, JobQueueError> {
        Self::with_registry(redis, settings, Registry::production(settings))
    }

    /// The client for the job types in `registry`.
    pub fn with_registry(
        redis: &SingleRedisSettings,
        settings: &JobqueueSettings,
        registry: Registry,
    ) -> Result<Self, JobQueueError> {
        // The store checks the address now so a typo fails at startup, not at the first request.
        let store = Store::new(redis, &settings.queue, settings.events_max_len)?;
        let keys = store.keys().clone();
        let inner = Inner {
            store,
            registry,
            enqueue_timeout: settings.enqueue_timeout,
            declared: settings.queues.iter().map(|q| q.name.clone()).collect(),
            remembered: Mutex::new(HashSet::new()),
            batcher: OnceLock::new(),
            watchers: Default::default(),
        };
        Ok(Self {
            inner: Arc::new(inner),
            keys,
        })
    }

    /// The handle of queue `name` (which need not exist yet); a bad name is `Invalid`.
    pub fn queue(&self, name: &str) -> Result<JobQueue, JobQueueError> {
        if let Some(problem) = queue_name_problem(name) {
            return Err(JobQueueError::Invalid(problem));
        }
        Ok(Self {
            inner: self.inner.clone(),
            keys: self.inner.store.keys_of(name),
        })
    }

    /// The handle of the default queue (`jobqueue.queue`).
    pub fn default_queue(&self) -> JobQueue {
        Self {
            inner: self.inner.clone(),
            keys: self.inner.store.keys().clone(),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.keys.queue
    }

    /// Every queue: the default one, the declared ones (`jobqueue.queues`, in order), then, by
    /// name, the others that ever had a job.
    pub async fn queue_names(&self) -> Result<Vec<String>, JobQueueError> {
        let mut names = vec![self.inner.store.keys().queue.clone()];
        for name in &self.inner.declared {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        let mut seen = self
            .with_connection(self.call_timeout(), |mut c| async move {
                store::remembered_queues(&mut c).await
            })
            .await?;
        seen.sort();
        for name in seen {
            if !names.contains(&name) && queue_name_problem(&name).is_none() {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// The handle of queue `name` if it exists (the default, declared, or ever had a job);
    /// `Invalid` for a bad name.
    pub async fn existing_queue(&self, name: &str) -> Result<Option<JobQueue>, JobQueueError> {
        let handle = self.queue(name)?;
        let exists = self.queue_names().await?.iter().any(|n| n == name);
        Ok(exists.then_some(handle))
    }

    /// The handle of the queue holding job `id`, whichever it is (`None`: no queue has it).
    pub async fn find(&self, id: &str) -> Result<Option<JobQueue>, JobQueueError> {
        let names = self.queue_names().await?;
        let queues: Vec<Keys> = names.iter().map(|n| self.inner.store.keys_of(n)).collect();
        let queues_ref = &queues;
        let holding = self
            .with_connection(self.call_timeout(), |mut c| async move {
                store::holding(&mut c, queues_ref, id).await
            })
            .await?;
        Ok(queues
            .into_iter()
            .zip(holding)
            .find(|(_, held)| *held)
            .map(|(keys, _)| Self {
                inner: self.inner.clone(),
                keys,
            }))
    }

    pub(crate) fn watchers(&self) -> &crate::waiter::Watchers {
        &self.inner.watchers
    }

    /// The job types this client accepts.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub(crate) fn call_timeout(&self) -> Duration {
        self.inner.store.call_timeout()
    }

    /// One PING, bounded by the call timeout.
    pub async fn ping(&self) -> Result<(), JobQueueError> {
        self.with_connection(self.inner.store.call_timeout(), |mut c| async move {
            store::ping(&mut c).await
        })
        .await
    }

    /// Store one job; bounded by `enqueue_timeout` (then `Unavailable`). A taken unique key is
    /// `Duplicate` with the existing job's id.
    pub async fn enqueue(&self, job: NewJob) -> Result<EnqueuedJob, JobQueueError> {
        let prepared = prepare(&self.inner.registry, self.name(), job, store::now_ms())?;
        let (reply, stored) = oneshot::channel();
        self.batcher()
            .send(Waiting {
                job: prepared,
                reply,
            })
            .map_err(|_| JobQueueError::Internal("the enqueue batcher stopped".into()))?;
        let budget = self.inner.enqueue_timeout;
        let job = match tokio::time::timeout(budget, stored).await {
            Ok(Ok(stored)) => stored?,
            Ok(Err(_)) => return Err(JobQueueError::Internal("enqueue stored nothing".into())),
            Err(_) => {
                return Err(JobQueueError::Unavailable(format!(
                    "no answer from {} within {budget:?}",
                    self.inner.store.redis().addr
                )))
            }
        };
        if job.duplicate {
            return Err(JobQueueError::Duplicate { job_id: job.job_id });
        }
        Ok(job)
    }

    /// Store up to [`MAX_BATCH`] jobs in one script call (one round trip). An invalid job fails
    /// the whole batch (nothing stored), its error naming `jobs[<index>]`; a taken unique key is
    /// reported per job (`duplicate`).
    pub async fn enqueue_batch(
        &self,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<EnqueuedJob>, JobQueueError> {
        if jobs.is_empty() || jobs.len() > MAX_BATCH {
            return Err(JobQueueError::Invalid(format!(
                "jobs must hold 1..={MAX_BATCH} items, got {}",
                jobs.len()
            )));
        }
        let now = store::now_ms();
        let prepared = jobs
            .into_iter()
            .enumerate()
            .map(|(i, job)| {
                prepare(&self.inner.registry, self.name(), job, now).map_err(|e| match e {
                    JobQueueError::Invalid(m) => JobQueueError::Invalid(format!("jobs[{i}]: {m}")),
                    other => other,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.store_jobs(prepared).await
    }

    /// Where single enqueues go to be stored together (see `batcher.rs`).
    fn batcher(&self) -> &mpsc::UnboundedSender<Waiting<Prepared>> {
        self.inner.batcher.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            // Weak: the batcher must not keep the queue alive; it ends with the last handle.
            let inner = Arc::downgrade(&self.inner);
            let keys = self.keys.clone();
            let store = move || {
                inner.upgrade().map(|inner| JobQueue {
                    inner,
                    keys: keys.clone(),
                })
            };
            tokio::spawn(batcher::run(rx, store, self.inner.store.pool_size()));
            tx
        })
    }

    /// Store jobs, one script call per queue among them (a batch names one queue, mostly).
    async fn store_jobs(&self, prepared: Vec<Prepared>) -> Result<Vec<EnqueuedJob>, JobQueueError> {
        let mut queues: Vec<&str> = Vec::new();
        for p in &prepared {
            if !queues.contains(&p.queue.as_str()) {
                queues.push(&p.queue);
            }
        }
        let mut holders: Vec<Option<String>> = vec![None; prepared.len()];
        for queue in queues {
            self.remember(queue).await?;
            let keys = self.inner.store.keys_of(queue);
            let (at, stored): (Vec<usize>, Vec<StoredJob<'_>>) = prepared
                .iter()
                .enumerate()
                .filter(|(_, p)| p.queue == queue)
                .map(|(i, p)| (i, p.stored()))
                .unzip();
            let stored = &stored;
            let (redis, budget) = (self.inner.store.redis(), self.inner.enqueue_timeout);
            let found = self
                .with_connection(budget, |mut c| async move {
                    store::enqueue_confirmed(&mut c, &keys, stored, redis, budget).await
                })
                .await?;
            for (i, holder) in at.into_iter().zip(found) {
                holders[i] = holder;
            }
        }
        tracing::debug!(count = prepared.len(), "jobs enqueued");
        Ok(prepared
            .into_iter()
            .zip(holders)
            .map(|(p, holder)| match holder {
                Some(existing) => EnqueuedJob {
                    job_id: existing,
                    run_at: p.enqueued.run_at,
                    duplicate: true,
                },
                None => p.enqueued,
            })
            .collect())
    }

    /// Record once per process that a queue other than the default has jobs.
    async fn remember(&self, queue: &str) -> Result<(), JobQueueError> {
        let known = queue == self.inner.store.keys().queue
            || self
                .inner
                .remembered
                .lock()
                .is_ok_and(|r| r.contains(queue));
        if known {
            return Ok(());
        }
        self.with_connection(self.call_timeout(), |mut c| async move {
            store::remember_queue(&mut c, queue).await
        })
        .await?;
        if let Ok(mut r) = self.inner.remembered.lock() {
            r.insert(queue.to_owned());
        }
        Ok(())
    }

    /// Dead → pending. Unknown id → `NotFound`; any other state → `NotDead`.
    pub async fn retry(&self, id: &str) -> Result<RetriedJob, JobQueueError> {
        let keys = self.keys.clone();
        let outcome = self
            .with_connection(self.inner.store.call_timeout(), |mut c| async move {
                store::retry_dead(&mut c, &keys, id).await
            })
            .await?;
        match outcome {
            1 => {
                tracing::info!(job_id = %id, "dead job revived");
                Ok(RetriedJob {
                    job_id: id.to_owned(),
                    status: JobStatus::Pending,
                })
            }
            0 => Err(JobQueueError::NotFound(id.to_owned())),
            _ => {
                let status = self.status(id).await?.map_or("gone", |i| i.status.as_str());
                Err(JobQueueError::NotDead {
                    id: id.to_owned(),
                    status: status.to_owned(),
                })
            }
        }
    }

    /// Delete a job that is not running. `false` when it did not exist; a running job is
    /// `Running` (it may be deleted once it finished).
    pub async fn delete(&self, id: &str) -> Result<bool, JobQueueError> {
        let keys = self.keys.clone();
        let outcome = self
            .with_connection(self.inner.store.call_timeout(), |mut c| async move {
                store::delete(&mut c, &keys, id).await
            })
            .await?;
        match outcome {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(JobQueueError::Running(id.to_owned())),
        }
    }

    /// Cancel job `id`: one that waits is cancelled now; one a worker holds is signalled to that
    /// worker (it stops the run at its next `.await` and records it cancelled) and comes back
    /// `running`. `NotFound` for an unknown id, `Finished` for a done, dead or cancelled job.
    pub async fn cancel(&self, id: &str) -> Result<CancelledJob, JobQueueError> {
        let keys = self.keys.clone();
        let outcome = self
            .with_connection(self.inner.store.call_timeout(), |mut c| async move {
                store::cancel(&mut c, &keys, id).await
            })
            .await?;
        let status = match outcome {
            store::CancelOutcome::Cancelled => JobStatus::Cancelled,
            store::CancelOutcome::Signalled => JobStatus::Running,
            store::CancelOutcome::Unknown => return Err(JobQueueError::NotFound(id.to_owned())),
            store::CancelOutcome::Finished => {
                let status = self.status(id).await?.map_or("gone", |i| i.status.as_str());
                return Err(JobQueueError::Finished {
                    id: id.to_owned(),
                    status: status.to_owned(),
                });
            }
        };
        tracing::info!(job_id = %id, status = status.as_str(), "job cancelled");
        Ok(CancelledJob {
            job_id: id.to_owned(),
            status,
        })
    }

    /// Cancel each job of `ids` that is not finished. Returns how many were cancelled or
    /// signalled.
    pub async fn cancel_many(&self, ids: &[String]) -> Result<u64, JobQueueError> {
        self.bulk(ids, |c, keys, id| async move {
            let mut c = c;
            Ok(matches!(
                store::cancel(&mut c, &keys, &id).await?,
                store::CancelOutcome::Cancelled | store::CancelOutcome::Signalled
            ))
        })
        .await
    }

    /// Retry each dead job of `ids` (others are skipped). Returns how many were revived.
    pub async fn retry_many(&self, ids: &[String]) -> Result<u64, JobQueueError> {
        self.bulk(ids, |c, keys, id| async move {
            let mut c = c;
            Ok(store::retry_dead(&mut c, &keys, &id).await? == 1)
        })
        .await
    }

    /// Delete each job of `ids` that is not running. Returns how many were deleted.
    pub async fn delete_many(&self, ids: &[String]) -> Result<u64, JobQueueError> {
        self.bulk(ids, |c, keys, id| async move {
            let mut c = c;
            Ok(store::delete(&mut c, &keys, &id).await? == 1)
        })
        .await
    }

    async fn bulk<F, Fut>(&self, ids: &[String], op: F) -> Result<u64, JobQueueError>
    where
        F: Fn(ConnectionManager, Keys, String) -> Fut,
        Fut: Future<Output = Result<bool, JobQueueError>>,
    {
        if ids.len() > MAX_BULK {
            return Err(JobQueueError::Invalid(format!(
                "ids must hold at most {MAX_BULK} items, got {}",
                ids.len()
            )));
        }
        let keys = self.keys.clone();
        // One script call per id on one connection; the budget grows with the count.
        let budget = self.inner.store.call_timeout() * (1 + ids.len() as u32 / 100);
        self.with_connection(budget, |c| async move {
            let mut affected = 0;
            for id in ids {
                affected += u64::from(op(c.clone(), keys.clone(), id.clone()).await?);
            }
            Ok(affected)
        })
        .await
    }

    /// Pause: no new job starts (those a worker already fetched, at most its concurrency, may).
    /// Kept in Redis, so restarts keep it.
    pub async fn pause(&self) -> Result<(), JobQueueError> {
        let keys = self.keys.clone();
        let handed_back = self
            .with_connection(self.inner.store.call_timeout(), |mut c| async move {
                store::pause(&mut c, &keys).await
            })
            .await?;
        tracing::info!(queue = %self.name(), handed_back, "queue paused");
        Ok(())
    }

    pub async fn resume(&self) -> Result<(), JobQueueError> {
        let keys = self.keys.clone();
        self.with_connection(self.inner.store.call_timeout(), |mut c| async move {
            store::resume(&mut c, &keys).await
        })
        .await?;
        tracing::info!(queue = %self.name(), "queue resumed");
        Ok(())
    }

    /// The queue's limits as the workers wrote them (the slots in use are `stats().running`).
    pub async fn limits(&self) -> Result<QueueLimits, JobQueueError> {
        let keys = self.keys.clone();
        let stored = self
            .with_connection(self.inner.store.call_timeout(), |mut c| async move {
                store::read_limits(&mut c, &keys).await
            })
            .await?;
        Ok(QueueLimits {
            concurrency: stored.concurrency,
            rate: stored
                .rate
                .map(|(max, per_ms)| (max, Duration::from_millis(per_ms))),
            key_concurrency: stored.key_concurrency,
            key_rate: stored
                .key_rate
                .map(|(max, per_ms)| (max, Duration::from_millis(per_ms))),
        })
    }

    pub async fn is_paused(&self) -> Result<bool, JobQueueError> {
        let keys = self.keys.clone();
        self.with_connection(self.inner.store.call_timeout(), |mut c| async move {
            store::is_paused(&mut c, &keys).await
        })
        .await
    }

    /// The queue's store (keys, scripts, connections): the worker's result writer and
    /// housekeeping use it too.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Open connections (for the chaos endpoint).
    pub fn connection_count(&self) -> usize {
        self.inner.store.connection_count()
    }

    /// Whether the last call reached Redis.
    pub fn is_connected(&self) -> bool {
        self.inner.store.is_connected()
    }

    /// Times Redis was reached again after it was not (an outage or a chaos reset); the first
    /// connection does not count.
    pub fn reconnects(&self) -> u64 {
        self.inner.store.reconnects()
    }

    /// Chaos: close every connection this handle holds; the next call reconnects. Returns how
    /// many.
    pub async fn reset_connections(&self) -> usize {
        self.inner.store.reset_connections().await
    }

    /// Run `f` on a pooled connection within `budget` (see [`Store::with_connection`]).
    pub async fn with_connection<T, F, Fut>(
        &self,
        budget: Duration,
        f: F,
    ) -> Result<T, JobQueueError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, JobQueueError>>,
    {
        self.inner.store.with_connection(budget, f).await
    }
}

impl batcher::Store<Prepared> for JobQueue {
    async fn store(&self, jobs: Vec<Prepared>) -> Result<Vec<EnqueuedJob>, JobQueueError> {
        JobQueue::store_jobs(self, jobs).await
    }
}

struct Prepared {
    queue: String,
    json: String,
    job_type: String,
    max_retry: u32,
    due_ms: u64,
    timeout_ms: u64,
    unique_key: String,
    unique_for_ms: u64,
    priority: u8,
    limit_key: String,
    enqueued: EnqueuedJob,
}

impl Prepared {
    fn stored(&self) -> StoredJob<'_> {
        StoredJob {
            id: &self.enqueued.job_id,
            json: &self.json,
            job_type: &self.job_type,
            due_ms: self.due_ms,
            max_retry: self.max_retry,
            timeout_ms: self.timeout_ms,
            unique_key: &self.unique_key,
            unique_for_ms: self.unique_for_ms,
            priority: self.priority,
            limit_key: &self.limit_key,
        }
    }
}

/// The queue's limits, named by their HTTP fields, then the type's own validation.
fn prepare(
    registry: &Registry,
    default_queue: &str,
    job: NewJob,
    now_ms: u64,
) -> Result<Prepared, JobQueueError> {
    let invalid = |m: String| Err(JobQueueError::Invalid(m));
    let queue = job
        .queue
        .or_else(|| registry.default_queue(&job.job_type).map(str::to_owned))
        .unwrap_or_else(|| default_queue.to_owned());
    if let Some(problem) = queue_name_problem(&queue) {
        return invalid(problem);
    }
    registry.validate(&job.job_type, &job.payload)?;
    let limit_given = job.limit_key.is_some();
    let limit_key = job
        .limit_key
        .or_else(|| registry.limit_key(&job.job_type, &job.payload))
        .unwrap_or_default();
    if limit_given && (limit_key.is_empty() || limit_key.chars().count() > MAX_LIMIT_KEY_CHARS) {
        return invalid(format!(
            "limit_key must be 1..={MAX_LIMIT_KEY_CHARS} characters"
        ));
    }
    let priority = job.priority.unwrap_or(DEFAULT_PRIORITY);
    if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&priority) {
        return invalid(format!(
            "priority must be {MIN_PRIORITY}..={MAX_PRIORITY} (higher starts first), got {priority}"
        ));
    }
    let due_ms = match job.at {
        Some(at) => u64::try_from(at.timestamp_millis())
            .unwrap_or(0)
            .max(now_ms),
        None => now_ms.saturating_add(u64::try_from(job.delay.as_millis()).unwrap_or(u64::MAX)),
    };
    if due_ms - now_ms > MAX_DELAY_SECONDS as u64 * 1000 {
        return invalid(format!(
            "delay_seconds must be 0..={MAX_DELAY_SECONDS} (run_at at most 30 days ahead)"
        ));
    }
    if i64::from(job.max_retry) > MAX_RETRY_LIMIT {
        return invalid(format!("max_retry must be 0..={MAX_RETRY_LIMIT}"));
    }
    if job
        .timeout
        .is_some_and(|t| t < Duration::from_secs(1) || t > Duration::from_secs(MAX_TIMEOUT_SECONDS))
    {
        return invalid(format!("timeout_seconds must be 1..={MAX_TIMEOUT_SECONDS}"));
    }
    let given = job.unique_key.is_some();
    let unique_key = job.unique_key.unwrap_or_default();
    if given && (unique_key.is_empty() || unique_key.chars().count() > MAX_UNIQUE_KEY_CHARS) {
        return invalid(format!(
            "unique_key must be 1..={MAX_UNIQUE_KEY_CHARS} characters"
        ));
    }
    if let Some(for_) = job.unique_for {
        if unique_key.is_empty() {
            return invalid("unique_for_seconds needs a unique_key".into());
        }
        if for_ < Duration::from_secs(1) || for_ > Duration::from_secs(MAX_UNIQUE_FOR_SECONDS) {
            return invalid(format!(
                "unique_for_seconds must be 1..={MAX_UNIQUE_FOR_SECONDS}"
            ));
        }
    }
    let json = serde_json::to_string(&JobEnvelope::new(&job.job_type, job.payload))?;
    Ok(Prepared {
        queue,
        json,
        job_type: job.job_type,
        max_retry: job.max_retry,
        due_ms,
        timeout_ms: job.timeout.map_or(0, |t| t.as_millis() as u64),
        unique_key,
        unique_for_ms: job.unique_for.map_or(0, |t| t.as_millis() as u64),
        priority,
        limit_key,
        enqueued: EnqueuedJob {
            job_id: next_id().to_string(),
            run_at: ms_to_time(due_ms),
            duplicate: false,
        },
    })
}

/// A new job id. Monotonic within a millisecond in this process: jobs due at the same
/// millisecond wait in id order, so jobs registered together start in the order given (FIFO).
fn next_id() -> ulid::Ulid {
    static IDS: Mutex<Option<ulid::Generator>> = Mutex::new(None);
    IDS.lock()
        .ok()
        .and_then(|mut g| g.get_or_insert_with(ulid::Generator::new).generate().ok())
        // 2^80 ids in one millisecond: a fresh random one (`Ulid::default` is nil).
        .unwrap_or_else(|| ulid::Ulid::from_datetime(std::time::SystemTime::now()))
}

pub(crate) fn ms_to_time(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms as i64).unwrap_or_default()
}
