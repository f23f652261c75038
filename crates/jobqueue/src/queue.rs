//! `JobQueue`: register, retry, delete, pause and resume. Used by the api and by the worker's
//! scheduling loop; reading jobs back is in `inspect.rs`. Never waits for Redis at construction;
//! every call has a deadline.

use crate::batcher::{self, Waiting};
use crate::error::JobQueueError;
use crate::jobs::{JobEnvelope, Registry};
use crate::storage::{self, Keys, StoredJob};
use crate::types::{EnqueuedJob, JobStatus, NewJob, RetriedJob, MAX_BATCH, MAX_UNIQUE_KEY_CHARS};
use apalis_redis::ConnectionManager;
use cacheserver_config::{
    JobqueueSettings, SingleRedisSettings, MAX_DELAY_SECONDS, MAX_RETRY_LIMIT,
};
use chrono::{DateTime, Utc};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Budget for reads and admin calls (ping, status, stats, retry, delete).
const CALL_TIMEOUT_CAP: Duration = Duration::from_secs(2);
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
    redis: SingleRedisSettings,
    keys: Keys,
    registry: Registry,
    enqueue_timeout: Duration,
    call_timeout: Duration,
    /// Multiplexed connections, created lazily; `None` after a chaos reset until next use.
    slots: Vec<Mutex<Option<ConnectionManager>>>,
    next: AtomicUsize,
    /// Whether the last call reached Redis.
    connected: AtomicBool,
    /// Whether any call ever reached Redis: the first connection is not a reconnection.
    ever_connected: AtomicBool,
    /// Times a call reached Redis again after calls that did not (or after a chaos reset).
    reconnects: AtomicU64,
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
        // Validate the address now so a typo fails at startup, not at the first request.
        crate::connection::validate(redis)?;
        let pool = redis.pool_size.clamp(1, 8) as usize;
        let inner = Inner {
            redis: redis.clone(),
            keys: Keys::new(&settings.queue),
            registry,
            enqueue_timeout: settings.enqueue_timeout,
            call_timeout: redis.read_timeout.min(CALL_TIMEOUT_CAP),
            slots: (0..pool).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            connected: AtomicBool::new(false),
            ever_connected: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            batcher: OnceLock::new(),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The queue's name (its key prefix).
    pub fn name(&self) -> &str {
        &self.inner.keys.queue
    }

    /// The job types this client accepts.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub(crate) fn call_timeout(&self) -> Duration {
        self.inner.call_timeout
    }

    /// One PING, bounded by the call timeout.
    pub async fn ping(&self) -> Result<(), JobQueueError> {
        self.with_connection(self.inner.call_timeout, |mut c| async move {
            redis::cmd("PING").query_async::<String>(&mut c).await?;
            Ok(())
        })
        .await
    }

    /// Store one job; bounded by `enqueue_timeout` (then `Unavailable`). A taken unique key is
    /// `Duplicate` with the existing job's id.
    pub async fn enqueue(&self, job: NewJob) -> Result<EnqueuedJob, JobQueueError> {
        let prepared = prepare(&self.inner.registry, job, storage::now_ms())?;
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
                    self.inner.redis.addr
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
        let now = storage::now_ms();
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
        self.store(prepared).await
    }

    /// Where single enqueues go to be stored together (see `batcher.rs`).
    fn batcher(&self) -> &mpsc::UnboundedSender<Waiting<Prepared>> {
        self.inner.batcher.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            // Weak: the batcher must not keep the queue alive; it ends with the last handle.
            let inner = Arc::downgrade(&self.inner);
            let store = move || inner.upgrade().map(|inner| JobQueue { inner });
            tokio::spawn(batcher::run(rx, store, self.inner.slots.len()));
            tx
        })
    }

    async fn store(&self, prepared: Vec<Prepared>) -> Result<Vec<EnqueuedJob>, JobQueueError> {
        let keys = self.inner.keys.clone();
        let stored: Vec<StoredJob<'_>> = prepared.iter().map(Prepared::stored).collect();
        let stored = &stored;
        let (redis, budget) = (&self.inner.redis, self.inner.enqueue_timeout);
        let holders = self
            .with_connection(budget, |mut c| async move {
                storage::enqueue_confirmed(&mut c, &keys, stored, redis, budget).await
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
        let keys = self.inner.keys.clone();
        let outcome = self
            .with_connection(self.inner.call_timeout, |mut c| async move {
                storage::retry_dead(&mut c, &keys, id).await
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
        let keys = self.inner.keys.clone();
        let outcome = self
            .with_connection(self.inner.call_timeout, |mut c| async move {
                storage::delete(&mut c, &keys, id).await
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
            Ok(storage::retry_dead(&mut c, &keys, &id).await? == 1)
        })
        .await
    }

    /// Delete each job of `ids` that is not running. Returns how many were deleted.
    pub async fn delete_many(&self, ids: &[String]) -> Result<u64, JobQueueError> {
        self.bulk(ids, |c, keys, id| async move {
            let mut c = c;
            Ok(storage::delete(&mut c, &keys, &id).await? == 1)
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
        let keys = self.inner.keys.clone();
        // One script call per id on one connection; the budget grows with the count.
        let budget = self.inner.call_timeout * (1 + ids.len() as u32 / 100);
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
        let keys = self.inner.keys.clone();
        let handed_back = self
            .with_connection(self.inner.call_timeout, |mut c| async move {
                storage::pause(&mut c, &keys).await
            })
            .await?;
        tracing::info!(queue = %self.name(), handed_back, "queue paused");
        Ok(())
    }

    pub async fn resume(&self) -> Result<(), JobQueueError> {
        let keys = self.inner.keys.clone();
        self.with_connection(self.inner.call_timeout, |mut c| async move {
            let mut pipe = redis::pipe();
            pipe.del(&keys.paused).ignore();
            storage::wake(&mut pipe, &keys);
            pipe.query_async::<()>(&mut c).await?;
            Ok(())
        })
        .await?;
        tracing::info!(queue = %self.name(), "queue resumed");
        Ok(())
    }

    pub async fn is_paused(&self) -> Result<bool, JobQueueError> {
        let key = self.inner.keys.paused.clone();
        self.with_connection(self.inner.call_timeout, |mut c| async move {
            Ok(redis::cmd("EXISTS")
                .arg(&key)
                .query_async::<bool>(&mut c)
                .await?)
        })
        .await
    }

    /// Open connections (for the chaos endpoint).
    pub fn connection_count(&self) -> usize {
        self.inner
            .slots
            .iter()
            .filter(|s| s.lock().is_ok_and(|g| g.is_some()))
            .count()
    }

    /// Whether the last call reached Redis.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// Times Redis was reached again after it was not (an outage or a chaos reset); the first
    /// connection does not count.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// Chaos: close every connection this handle holds (Redis sees them go: `CLIENT KILL` on the
    /// connection's own id) and forget them; the next call reconnects. Returns how many.
    pub async fn reset_connections(&self) -> usize {
        let taken: Vec<ConnectionManager> = self
            .inner
            .slots
            .iter()
            .filter_map(|s| s.lock().ok().and_then(|mut g| g.take()))
            .collect();
        let count = taken.len();
        for conn in taken {
            kill_own_connection(conn, self.inner.call_timeout).await;
        }
        self.inner.connected.store(false, Ordering::Relaxed);
        tracing::warn!(count, "chaos: jobqueue Redis connections closed");
        count
    }

    /// Run `f` on a pooled connection within `budget`; a timeout is `Unavailable`. The worker's
    /// scheduling loop uses it too.
    pub async fn with_connection<T, F, Fut>(
        &self,
        budget: Duration,
        f: F,
    ) -> Result<T, JobQueueError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, JobQueueError>>,
    {
        let (slot, conn) = self.connection()?;
        let result = match tokio::time::timeout(budget, f(conn)).await {
            Ok(result) => result,
            Err(_) => Err(JobQueueError::Unavailable(format!(
                "no answer from {} within {budget:?}",
                self.inner.redis.addr
            ))),
        };
        let reached = !matches!(result, Err(JobQueueError::Unavailable(_)));
        if !reached && self.inner.redis.sentinel.is_enabled() {
            // The master may have moved: the next call connects to the one Sentinel names.
            if let Ok(mut s) = self.inner.slots[slot].lock() {
                s.take();
            }
        }
        let was = self.inner.connected.swap(reached, Ordering::Relaxed);
        if reached && !was && self.inner.ever_connected.swap(true, Ordering::Relaxed) {
            self.inner.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        if was != reached {
            tracing::warn!(addr = %self.inner.redis.addr, connected = reached, "jobqueue Redis connection changed");
        }
        crate::connection::explained(&self.inner.redis, result).await
    }

    /// Round-robin over the slots, creating a lazy connection where there is none.
    fn connection(&self) -> Result<(usize, ConnectionManager), JobQueueError> {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.slots.len();
        let mut slot = self.inner.slots[n]
            .lock()
            .map_err(|_| JobQueueError::Internal("connection slot poisoned".into()))?;
        if let Some(conn) = slot.as_ref() {
            return Ok((n, conn.clone()));
        }
        let conn = storage::lazy_connection(&self.inner.redis)?;
        *slot = Some(conn.clone());
        Ok((n, conn))
    }
}

/// `CLIENT ID` then `CLIENT KILL ID <id>` on the same connection, bounded; errors are expected
/// (the server closes the socket) and ignored. A least-privilege ACL user may not run
/// `CLIENT KILL` (admin): then `QUIT` closes it from the client side.
async fn kill_own_connection(mut conn: ConnectionManager, budget: Duration) {
    let kill = async {
        let id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await?;
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async::<()>(&mut conn)
            .await
    };
    if let Ok(Err(e)) = tokio::time::timeout(budget, kill).await {
        if crate::connection::misconfiguration(&e).is_some() {
            let quit = redis::cmd("QUIT");
            let _ = tokio::time::timeout(budget, quit.query_async::<()>(&mut conn)).await;
        }
    }
}

impl batcher::Store<Prepared> for JobQueue {
    async fn store(&self, jobs: Vec<Prepared>) -> Result<Vec<EnqueuedJob>, JobQueueError> {
        JobQueue::store(self, jobs).await
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
