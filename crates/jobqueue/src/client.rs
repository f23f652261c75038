//! The client (`JobQueue`): register (one job through the batcher, or a batch), retry, delete,
//! pause and resume; what the api uses. Reading jobs back is the inspector (`inspector.rs`);
//! every Redis call goes through the store (`store/`). Never waits for Redis at construction;
//! every call has a deadline.

use crate::batcher::{self, Waiting};
use crate::error::JobQueueError;
use crate::jobs::{JobEnvelope, Registry};
use crate::store::{self, Keys, Store, StoredJob};
use crate::types::{EnqueuedJob, JobStatus, NewJob, RetriedJob, MAX_BATCH, MAX_UNIQUE_KEY_CHARS};
use cacheserver_config::{
    JobqueueSettings, SingleRedisSettings, MAX_DELAY_SECONDS, MAX_RETRY_LIMIT,
};
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Longest `timeout_seconds` (a day).
pub const MAX_TIMEOUT_SECONDS: u64 = 86_400;
/// Longest `unique_for_seconds` (30 days).
pub const MAX_UNIQUE_FOR_SECONDS: u64 = 2_592_000;
/// Most ids one bulk call takes, and most jobs one bulk call by state touches.
pub const MAX_BULK: usize = 1_000;

/// A handle to the queue; cheap to clone.
#[derive(Clone)]
pub struct JobQueue {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    registry: Registry,
    enqueue_timeout: Duration,
    /// Single enqueues on their way to [`batcher::run`] (started on first use).
    batcher: OnceLock<mpsc::UnboundedSender<Waiting<Prepared>>>,
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
        let inner = Inner {
            store: Store::new(redis, &settings.queue)?,
            registry,
            enqueue_timeout: settings.enqueue_timeout,
            batcher: OnceLock::new(),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    pub fn keys(&self) -> &Keys {
        self.inner.store.keys()
    }

    /// The queue's name (its key prefix).
    pub fn name(&self) -> &str {
        &self.inner.store.keys().queue
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
        let prepared = prepare(&self.inner.registry, job, store::now_ms())?;
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
                prepare(&self.inner.registry, job, now).map_err(|e| match e {
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
            let store = move || inner.upgrade().map(|inner| JobQueue { inner });
            tokio::spawn(batcher::run(rx, store, self.inner.store.pool_size()));
            tx
        })
    }

    async fn store_jobs(&self, prepared: Vec<Prepared>) -> Result<Vec<EnqueuedJob>, JobQueueError> {
        let keys = self.inner.store.keys().clone();
        let stored: Vec<StoredJob<'_>> = prepared.iter().map(Prepared::stored).collect();
        let stored = &stored;
        let (redis, budget) = (self.inner.store.redis(), self.inner.enqueue_timeout);
        let holders = self
            .with_connection(budget, |mut c| async move {
                store::enqueue_confirmed(&mut c, &keys, stored, redis, budget).await
            })
            .await?;
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

    /// Dead → pending. Unknown id → `NotFound`; any other state → `NotDead`.
    pub async fn retry(&self, id: &str) -> Result<RetriedJob, JobQueueError> {
        let keys = self.inner.store.keys().clone();
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
        let keys = self.inner.store.keys().clone();
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
        let keys = self.inner.store.keys().clone();
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
        let keys = self.inner.store.keys().clone();
        let handed_back = self
            .with_connection(self.inner.store.call_timeout(), |mut c| async move {
                store::pause(&mut c, &keys).await
            })
            .await?;
        tracing::info!(queue = %self.name(), handed_back, "queue paused");
        Ok(())
    }

    pub async fn resume(&self) -> Result<(), JobQueueError> {
        let keys = self.inner.store.keys().clone();
        self.with_connection(self.inner.store.call_timeout(), |mut c| async move {
            store::resume(&mut c, &keys).await
        })
        .await?;
        tracing::info!(queue = %self.name(), "queue resumed");
        Ok(())
    }

    pub async fn is_paused(&self) -> Result<bool, JobQueueError> {
        let keys = self.inner.store.keys().clone();
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
    json: String,
    job_type: String,
    max_retry: u32,
    due_ms: u64,
    timeout_ms: u64,
    unique_key: String,
    unique_for_ms: u64,
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
        }
    }
}

/// The queue's limits, named by their HTTP fields, then the type's own validation.
fn prepare(registry: &Registry, job: NewJob, now_ms: u64) -> Result<Prepared, JobQueueError> {
    let invalid = |m: String| Err(JobQueueError::Invalid(m));
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
    registry.validate(&job.job_type, &job.payload)?;
    let json = serde_json::to_string(&JobEnvelope::new(&job.job_type, job.payload))?;
    Ok(Prepared {
        json,
        job_type: job.job_type,
        max_retry: job.max_retry,
        due_ms,
        timeout_ms: job.timeout.map_or(0, |t| t.as_millis() as u64),
        unique_key,
        unique_for_ms: job.unique_for.map_or(0, |t| t.as_millis() as u64),
        enqueued: EnqueuedJob {
            job_id: ulid::Ulid::new().to_string(),
            run_at: ms_to_time(due_ms),
            duplicate: false,
        },
    })
}

pub(crate) fn ms_to_time(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms as i64).unwrap_or_default()
}
