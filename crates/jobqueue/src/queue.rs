//! `JobQueue`: register, inspect, retry and delete jobs. Used by the api and by the worker's
//! scheduling loop. Never waits for Redis at construction; every call has a deadline.

use crate::error::JobQueueError;
use crate::jobs::Job;
use crate::storage::{self, Keys, StoredJob};
use crate::types::{EnqueuedJob, JobInfo, JobStatus, NewJob, QueueStats, RetriedJob, MAX_BATCH};
use apalis_redis::ConnectionManager;
use cacheserver_config::{JobqueueSettings, SingleRedisSettings};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Budget for reads and admin calls (ping, status, stats, retry, delete).
const CALL_TIMEOUT_CAP: Duration = Duration::from_secs(2);

/// Most jobs one list call returns.
pub const MAX_LIST: usize = 200;

/// A handle to the queue; cheap to clone.
#[derive(Clone)]
pub struct JobQueue {
    inner: Arc<Inner>,
}

struct Inner {
    redis: SingleRedisSettings,
    keys: Keys,
    enqueue_timeout: Duration,
    call_timeout: Duration,
    /// Multiplexed connections, created lazily; `None` after a chaos reset until next use.
    slots: Vec<Mutex<Option<ConnectionManager>>>,
    next: AtomicUsize,
    /// Whether the last call reached Redis.
    connected: AtomicBool,
}

impl JobQueue {
    /// Build the client. Never waits for Redis: connections open on first use and reopen by
    /// themselves after errors.
    pub fn new(
        redis: &SingleRedisSettings,
        settings: &JobqueueSettings,
    ) -> Result<Self, JobQueueError> {
        // Validate the address now so a typo fails at startup, not at the first request.
        crate::connection::validate(redis)?;
        let pool = redis.pool_size.clamp(1, 8) as usize;
        let inner = Inner {
            redis: redis.clone(),
            keys: Keys::new(&settings.queue),
            enqueue_timeout: settings.enqueue_timeout,
            call_timeout: redis.read_timeout.min(CALL_TIMEOUT_CAP),
            slots: (0..pool).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            connected: AtomicBool::new(false),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// One PING, bounded by the call timeout.
    pub async fn ping(&self) -> Result<(), JobQueueError> {
        self.with_connection(self.inner.call_timeout, |mut c| async move {
            redis::cmd("PING").query_async::<String>(&mut c).await?;
            Ok(())
        })
        .await
    }

    /// Store one job; bounded by `enqueue_timeout` (then `Unavailable`).
    pub async fn enqueue(&self, job: NewJob) -> Result<EnqueuedJob, JobQueueError> {
        let mut stored = self.enqueue_batch(vec![job]).await?;
        stored
            .pop()
            .ok_or_else(|| JobQueueError::Internal("enqueue stored nothing".into()))
    }

    /// Store up to [`MAX_BATCH`] jobs in one script call (one round trip).
    pub async fn enqueue_batch(
        &self,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<EnqueuedJob>, JobQueueError> {
        if jobs.len() > MAX_BATCH {
            return Err(JobQueueError::Invalid(format!(
                "at most {MAX_BATCH} jobs per batch, got {}",
                jobs.len()
            )));
        }
        let now = storage::now_ms();
        let prepared = jobs
            .into_iter()
            .map(|job| prepare(job, now))
            .collect::<Result<Vec<_>, _>>()?;
        let keys = self.inner.keys.clone();
        let stored: Vec<StoredJob<'_>> = prepared.iter().map(Prepared::stored).collect();
        let stored = &stored;
        let (redis, budget) = (&self.inner.redis, self.inner.enqueue_timeout);
        self.with_connection(budget, |mut c| async move {
            storage::enqueue(&mut c, &keys, stored).await?;
            crate::connection::confirm_replicas(&mut c, redis, budget).await
        })
        .await?;
        tracing::debug!(count = prepared.len(), "jobs enqueued");
        Ok(prepared.into_iter().map(|p| p.enqueued).collect())
    }

    /// The job's state, or `None` for an unknown id.
    pub async fn status(&self, id: &str) -> Result<Option<JobInfo>, JobQueueError> {
        let keys = self.inner.keys.clone();
        let (meta, delayed, dead): (HashMap<String, String>, Option<f64>, bool) = self
            .with_connection(self.inner.call_timeout, |mut c| async move {
                Ok(redis::pipe()
                    .hgetall(keys.meta_of(id))
                    .zscore(&keys.delayed, id)
                    .sismember(keys.apalis.dead_jobs_set(), id)
                    .query_async(&mut c)
                    .await?)
            })
            .await?;
        // Due jobs may wait in `delayed` while apalis' active list is full: they are pending.
        let waiting = delayed.is_some_and(|due_ms| due_ms > storage::now_ms() as f64);
        Ok(job_info(id, &meta, waiting, dead))
    }

    /// Counts by state from raw key sizes (apalis-redis' own stats are broken).
    pub async fn stats(&self) -> Result<QueueStats, JobQueueError> {
        let keys = self.inner.keys.clone();
        self.with_connection(self.inner.call_timeout, |mut c| async move {
            let k = &keys.apalis;
            let (delayed, due, retrying, pending, done, finished, dead, workers): (
                u64,
                u64,
                u64,
                u64,
                u64,
                u64,
                u64,
                Vec<String>,
            ) = redis::pipe()
                .zcard(&keys.delayed)
                .zcount(&keys.delayed, "-inf", storage::now_ms())
                .zcard(k.scheduled_jobs_set())
                .llen(k.active_jobs_list())
                .scard(k.done_jobs_set())
                .zcard(&keys.finished)
                .scard(k.dead_jobs_set())
                .zrange(k.workers_set(), 0, 999)
                .query_async(&mut c)
                .await?;
            let mut active_pipe = redis::pipe();
            for w in &workers {
                active_pipe.scard(format!("{}:{w}", k.inflight_jobs_set()));
            }
            let active: Vec<u64> = if workers.is_empty() {
                Vec::new()
            } else {
                active_pipe.query_async(&mut c).await?
            };
            Ok(QueueStats {
                // Due jobs held back while apalis' active list is full count as pending.
                scheduled: delayed.saturating_sub(due) + retrying,
                pending: pending + due,
                active: active.iter().sum(),
                done: done + finished,
                dead,
            })
        })
        .await
    }

    /// Up to `limit` dead jobs, newest due time first (the dead set is small: dead jobs wait for
    /// a person to retry or delete them).
    pub async fn dead_jobs(&self, limit: usize) -> Result<Vec<JobInfo>, JobQueueError> {
        let keys = self.inner.keys.clone();
        let limit = limit.clamp(1, MAX_LIST);
        self.with_connection(self.inner.call_timeout, |mut c| async move {
            let ids: Vec<String> = redis::cmd("SRANDMEMBER")
                .arg(keys.apalis.dead_jobs_set())
                .arg(limit)
                .query_async(&mut c)
                .await?;
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.hgetall(keys.meta_of(id));
            }
            let metas: Vec<HashMap<String, String>> = if ids.is_empty() {
                Vec::new()
            } else {
                pipe.query_async(&mut c).await?
            };
            let mut jobs: Vec<JobInfo> = ids
                .iter()
                .zip(&metas)
                .filter_map(|(id, meta)| job_info(id, meta, false, true))
                .collect();
            jobs.sort_by_key(|job| std::cmp::Reverse(job.run_at));
            Ok(jobs)
        })
        .await
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

    /// Delete a job in any state. `false` when it did not exist.
    pub async fn delete(&self, id: &str) -> Result<bool, JobQueueError> {
        let keys = self.inner.keys.clone();
        self.with_connection(self.inner.call_timeout, |mut c| async move {
            storage::delete(&mut c, &keys, id).await
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
        if was != reached {
            tracing::warn!(addr = %self.inner.redis.addr, connected = reached, "jobqueue Redis connection changed");
        }
        result
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

struct Prepared {
    json: String,
    max_retry: u32,
    due_ms: u64,
    enqueued: EnqueuedJob,
}

impl Prepared {
    fn stored(&self) -> StoredJob<'_> {
        StoredJob {
            id: &self.enqueued.job_id,
            json: &self.json,
            due_ms: self.due_ms,
            max_retry: self.max_retry,
        }
    }
}

fn prepare(job: NewJob, now_ms: u64) -> Result<Prepared, JobQueueError> {
    if job.message.trim().is_empty() {
        return Err(JobQueueError::Invalid("message must not be empty".into()));
    }
    let due_ms = now_ms + job.delay.as_millis() as u64;
    let json = serde_json::to_string(&Job::DelayPrint {
        message: job.message,
    })?;
    Ok(Prepared {
        json,
        max_retry: job.max_retry,
        due_ms,
        enqueued: EnqueuedJob {
            job_id: ulid::Ulid::new().to_string(),
            run_at: ms_to_time(due_ms),
        },
    })
}

fn ms_to_time(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms as i64).unwrap_or_default()
}

/// Map the stored meta to a [`JobInfo`]; `None` when the job does not exist.
fn job_info(
    id: &str,
    meta: &HashMap<String, String>,
    delayed: bool,
    dead: bool,
) -> Option<JobInfo> {
    let num = |k: &str| meta.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    meta.get("run_at_ms")?;
    let failures = num("failures") as u32;
    let status = match meta.get("status").map(String::as_str) {
        _ if dead => JobStatus::Dead,
        _ if delayed && failures > 0 => JobStatus::Failed,
        _ if delayed => JobStatus::Scheduled,
        Some("Running") => JobStatus::Running,
        Some("Done") => JobStatus::Done,
        Some("Failed") => JobStatus::Failed,
        Some("Killed") => JobStatus::Dead,
        _ => JobStatus::Pending,
    };
    let ran_now = matches!(status, JobStatus::Done | JobStatus::Running) as u32;
    Some(JobInfo {
        job_id: id.to_owned(),
        status,
        attempts: failures + ran_now,
        max_retry: num("max_retry") as u32,
        run_at: ms_to_time(num("run_at_ms")),
        last_error: meta.get("last_error").cloned(),
    })
}
