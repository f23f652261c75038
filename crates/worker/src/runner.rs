//! The layer around every job type: the early-start guard, the timeout, counting failures
//! (apalis ignores `max_attempts`), backoff, dead and metrics. The apalis handler is [`handle`];
//! job types only see their payload and a [`JobContext`]. Each run's result goes to
//! [`Acks`], which writes it (and the per-minute history) to Redis, and so do its progress
//! reports (coalesced there).
//!
//! Cancelling a running job: `cancel.lua` pushes its id to this worker's cancel list, which
//! [`listen_for_cancels`] BLPOPs (one blocking connection per worker process, so a cancel arrives
//! as an event, not by polling per job) and hands to [`Cancels`]; the run's future is polled once
//! more (a job waiting on `ctx.cancelled()` can return) and dropped, and the job is recorded
//! cancelled — never retried.

use crate::acks::Acks;
use apalis::prelude::{BoxDynError, Data, MetadataStore, TaskId};
use cacheserver_jobqueue::metrics as m;
use cacheserver_jobqueue::store::{self, Finished, Outcome};
use cacheserver_jobqueue::{JobContext, JobEnvelope, JobError, Registry};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// A job seen this much early (or less) waits inside the handler; more is sent back to wait.
const MAX_IN_HANDLER_WAIT_MS: u64 = 2_000;

/// Retry delays: `base × 2^(failures-1)`, capped at `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    pub fn after(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// What the handler needs besides the job.
#[derive(Clone)]
pub struct Runner {
    pub acks: Acks,
    pub backoff: Backoff,
    pub registry: Registry,
    /// `jobqueue.default_timeout`.
    pub default_timeout: Duration,
    pub cancels: Cancels,
}

/// Cancels of jobs this worker holds, by job id: a run watches its entry; a cancel that arrives
/// before its job starts (fetched, waiting for a slot) is kept until the job starts.
#[derive(Clone, Default)]
pub struct Cancels {
    by_id: Arc<Mutex<HashMap<String, watch::Sender<bool>>>>,
}

/// Cancels kept for jobs that never started here (finished before the cancel came) are dropped
/// past this many.
const MAX_UNCLAIMED_CANCELS: usize = 10_000;

impl Cancels {
    /// Cancel job `id` (now if it runs, at its start otherwise).
    pub fn cancel(&self, id: &str) {
        let Ok(mut by_id) = self.by_id.lock() else {
            return;
        };
        match by_id.get(id) {
            Some(signal) => {
                signal.send_replace(true);
            }
            None => {
                if by_id.len() >= MAX_UNCLAIMED_CANCELS {
                    by_id.retain(|_, s| s.receiver_count() > 0);
                }
                by_id.insert(id.to_owned(), watch::channel(true).0);
            }
        }
    }

    /// The cancel signal of a run that starts (already `true` if a cancel came first).
    fn start(&self, id: &str) -> watch::Receiver<bool> {
        match self.by_id.lock() {
            Ok(mut by_id) => by_id
                .entry(id.to_owned())
                .or_insert_with(|| watch::channel(false).0)
                .subscribe(),
            Err(_) => watch::channel(false).1,
        }
    }

    fn end(&self, id: &str) {
        if let Ok(mut by_id) = self.by_id.lock() {
            by_id.remove(id);
        }
    }
}

/// The apalis handler: guard, run with a timeout, then count success or failure.
pub async fn handle(
    job: JobEnvelope,
    meta: MetadataStore,
    id: TaskId,
    runner: Data<Runner>,
) -> Result<(), BoxDynError> {
    let id = id.to_string();
    let queue = meta.get("queue").unwrap_or_default().to_owned();
    let next_run_ms = meta_u64(&meta, "next_run_ms");
    if let Some(early) = too_early(next_run_ms).await {
        tracing::debug!(job_id = %id, early_ms = early, "job is early, sent back to wait");
        runner.finished(
            queue,
            id,
            Outcome::Later {
                due_ms: next_run_ms,
            },
        );
        return Ok(());
    }
    let job_type = job.job_type.clone();
    let started_ms = store::now_ms();
    m::start_delay(started_ms.saturating_sub(next_run_ms));
    let failures = meta_u64(&meta, "failures") as u32;
    let cancel = runner.cancels.start(&id);
    let ctx = JobContext::new(id.clone(), failures + 1)
        .with_progress(runner.progress_sink(&queue, &id))
        .with_cancel(cancel.clone());
    let timeout = runner.timeout_of(&job_type, &meta);
    let result = if *cancel.borrow() {
        None
    } else {
        let run = runner.registry.run(&job_type, job.into_payload(), &ctx);
        let mut cancelled = cancel.clone();
        tokio::select! {
            // The run first: woken by the cancel, it gets this one poll to see `ctx.cancelled()`.
            biased;
            result = tokio::time::timeout(timeout, run) => Some(result),
            _ = cancelled.wait_for(|c| *c) => None,
        }
    };
    runner.cancels.end(&id);
    let outcome = match result {
        Some(Ok(Ok(output))) => {
            m::processed(&job_type);
            Outcome::Done { result: output }
        }
        // Cancelled: dropped, or ended (failed, timed out) once cancelled. Never retried.
        _ if *cancel.borrow() => {
            tracing::info!(job_id = %id, job_type, "job cancelled");
            m::cancelled(&job_type);
            Outcome::Cancelled
        }
        Some(Ok(Err(error))) => runner.on_failure(&id, &job_type, &meta, error),
        Some(Err(_)) => {
            m::timed_out(&job_type);
            let error = JobError::retry(format!("timed out after {} s", timeout.as_secs_f64()));
            runner.on_failure(&id, &job_type, &meta, error)
        }
        None => {
            m::cancelled(&job_type);
            Outcome::Cancelled
        }
    };
    runner.finished(queue, id, outcome);
    Ok(())
}

/// Turn cancels sent to `worker` (its cancel list in every served queue) into [`Cancels`]
/// signals. It blocks, so it has a connection of its own, made again after an error (with
/// Sentinel, to the master of the moment); `redis` must allow a response to take longer than
/// `block`. A cancel pushed while it reconnects waits in the list.
pub async fn listen_for_cancels(
    redis: cacheserver_config::SingleRedisSettings,
    queues: Vec<store::Keys>,
    worker: String,
    cancels: Cancels,
    block: Duration,
) {
    loop {
        let mut conn = match cacheserver_redis::single::lazy_connection(&redis) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!(error = %e, "cancel listener has no connection");
                tokio::time::sleep(block).await;
                continue;
            }
        };
        loop {
            match store::wait_for_cancel(&mut conn, &queues, &worker, block).await {
                Ok(Some((queue, id))) => {
                    tracing::info!(job_id = %id, %queue, "cancel received");
                    cancels.cancel(&id);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "cancel listener lost Redis");
                    tokio::time::sleep(block).await;
                    break;
                }
            }
        }
    }
}

/// Never run before the due time: wait briefly, or say how early when it is far off.
async fn too_early(next_run_ms: u64) -> Option<u64> {
    let now = store::now_ms();
    if next_run_ms <= now {
        return None;
    }
    let early = next_run_ms - now;
    if early > MAX_IN_HANDLER_WAIT_MS {
        return Some(early);
    }
    tokio::time::sleep(Duration::from_millis(early)).await;
    None
}

impl Runner {
    /// The job's own `timeout_ms`, else its type's default, else `jobqueue.default_timeout`.
    fn timeout_of(&self, job_type: &str, meta: &MetadataStore) -> Duration {
        match meta_u64(meta, "timeout_ms") {
            0 => self
                .registry
                .default_timeout(job_type)
                .unwrap_or(self.default_timeout),
            ms => Duration::from_millis(ms),
        }
    }

    fn finished(&self, queue: String, id: String, outcome: Outcome) {
        self.acks.send(Finished { queue, id, outcome });
    }

    /// Where the run's `ctx.progress` goes: the result writer, which keeps the latest per job.
    fn progress_sink(&self, queue: &str, id: &str) -> cacheserver_jobqueue::jobs::ProgressSink {
        let (acks, queue, id) = (self.acks.clone(), queue.to_owned(), id.to_owned());
        Arc::new(move |progress| {
            let Ok(json) = serde_json::to_string(&progress) else {
                return;
            };
            acks.send(Finished {
                queue: queue.clone(),
                id: id.clone(),
                outcome: Outcome::Progress { json },
            });
        })
    }

    /// Count the failure; the last allowed one (or one no retry can fix) makes the job dead.
    fn on_failure(
        &self,
        id: &str,
        job_type: &str,
        meta: &MetadataStore,
        error: JobError,
    ) -> Outcome {
        let failures = meta_u64(meta, "failures") as u32 + 1;
        let max_retry = meta_u64(meta, "max_retry") as u32;
        m::failed(job_type);
        let message = error.message;
        if failures > max_retry || !error.retryable {
            tracing::warn!(job_id = %id, job_type, failures, %message, "job failed for the last time: dead");
            m::dead(job_type);
            return Outcome::Dead {
                failures,
                error: message,
            };
        }
        tracing::info!(job_id = %id, job_type, failures, max_retry, %message, "job failed, will retry");
        m::retried(job_type);
        Outcome::Retry {
            failures,
            next_run_ms: store::now_ms() + self.backoff.after(failures).as_millis() as u64,
            error: message,
        }
    }
}

fn meta_u64(meta: &MetadataStore, key: &str) -> u64 {
    meta.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_before_the_start_is_kept_for_it() {
        let cancels = Cancels::default();
        cancels.cancel("early");
        assert!(*cancels.start("early").borrow());
        let running = cancels.start("running");
        assert!(!*running.borrow());
        cancels.cancel("running");
        assert!(*running.borrow());
        cancels.end("running");
        assert!(!*cancels.start("running").borrow());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(500),
        };
        assert_eq!(b.after(1), Duration::from_millis(100));
        assert_eq!(b.after(2), Duration::from_millis(200));
        assert_eq!(b.after(3), Duration::from_millis(400));
        assert_eq!(b.after(4), Duration::from_millis(500));
        assert_eq!(b.after(90), Duration::from_millis(500));
    }
}
