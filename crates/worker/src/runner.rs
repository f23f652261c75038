//! The layer around every job type: the early-start guard, the timeout, counting failures
//! (apalis ignores `max_attempts`), backoff, dead and metrics. The apalis handler is [`handle`];
//! job types only see their payload and a [`JobContext`]. Each run's result goes to
//! [`Acks`], which writes it (and the per-minute history) to Redis.

use crate::acks::Acks;
use apalis::prelude::{BoxDynError, Data, MetadataStore, TaskId};
use cacheserver_jobqueue::metrics as m;
use cacheserver_jobqueue::store::{self, Finished, Outcome};
use cacheserver_jobqueue::{JobContext, JobEnvelope, JobError, Registry};
use std::time::Duration;

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
    let ctx = JobContext {
        job_id: id.clone(),
        attempt: failures + 1,
    };
    let timeout = runner.timeout_of(&job_type, &meta);
    let run = runner.registry.run(&job_type, job.into_payload(), &ctx);
    let result = match tokio::time::timeout(timeout, run).await {
        Ok(result) => result,
        Err(_) => {
            m::timed_out(&job_type);
            Err(JobError::retry(format!(
                "timed out after {} s",
                timeout.as_secs_f64()
            )))
        }
    };
    let outcome = match result {
        Ok(()) => {
            m::processed(&job_type);
            Outcome::Done
        }
        Err(error) => runner.on_failure(&id, &job_type, &meta, error),
    };
    runner.finished(queue, id, outcome);
    Ok(())
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
