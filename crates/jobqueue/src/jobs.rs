//! Job types and their handler.
//!
//! `demo:delay_print {message}` prints `[YYYY-MM-DD HH:MM:SS] <message>` (local time) on the
//! worker's stdout. A message starting with [`FAIL_PREFIX`] (`fail:`) fails on every run, so tests
//! and demos can watch retries and dead jobs. `slow:<ms>:<text>` sleeps that long (at most 60 s)
//! before printing, so drills can kill a worker mid-job.

use crate::storage::{self, Keys};
use apalis::prelude::{AbortError, BoxDynError, Data, MetadataStore, TaskId};
use apalis_redis::ConnectionManager;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Messages starting with this fail on every run (for tests and demos).
pub const FAIL_PREFIX: &str = "fail:";
/// Messages `slow:<ms>:<text>` take `<ms>` to run (for tests and drills).
pub const SLOW_PREFIX: &str = "slow:";
/// A job seen this much early (or less) waits inside the handler; more is sent back to wait.
const MAX_IN_HANDLER_WAIT_MS: u64 = 2_000;

/// Every job type, tagged by `type` in the stored JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type")]
pub enum Job {
    #[serde(rename = "demo:delay_print")]
    DelayPrint { message: String },
}

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

/// What the handler needs besides the job: a connection and the retry policy.
#[derive(Clone)]
pub struct HandlerContext {
    pub conn: ConnectionManager,
    pub keys: Keys,
    pub backoff: Backoff,
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("job is early by {0} ms, sent back to wait")]
    Early(u64),
    #[error("{0}")]
    Failed(String),
}

/// The apalis handler. Failures are counted here (apalis ignores `max_attempts`): the last allowed
/// failure returns `AbortError`, which apalis stores as dead.
pub async fn handle(
    job: Job,
    meta: MetadataStore,
    id: TaskId,
    ctx: Data<HandlerContext>,
) -> Result<(), BoxDynError> {
    let id = id.to_string();
    let next_run_ms = meta_u64(&meta, "next_run_ms");
    if let Err(early) = wait_if_early(next_run_ms).await {
        tracing::debug!(job_id = %id, "{early}");
        return Err(early.into());
    }
    let started_ms = storage::now_ms();
    metrics::histogram!("jobqueue_job_start_delay_seconds")
        .record(started_ms.saturating_sub(next_run_ms) as f64 / 1000.0);
    match run(&job).await {
        Ok(()) => {
            metrics::counter!("jobqueue_jobs_processed_total").increment(1);
            Ok(())
        }
        Err(error) => on_failure(&ctx, &id, &meta, error).await,
    }
}

/// Never run before the due time: wait briefly, or hand the job back if it is far off.
async fn wait_if_early(next_run_ms: u64) -> Result<(), RunError> {
    let now = storage::now_ms();
    if next_run_ms <= now {
        return Ok(());
    }
    let early = next_run_ms - now;
    if early > MAX_IN_HANDLER_WAIT_MS {
        return Err(RunError::Early(early));
    }
    tokio::time::sleep(Duration::from_millis(early)).await;
    Ok(())
}

async fn run(job: &Job) -> Result<(), RunError> {
    match job {
        Job::DelayPrint { message } => {
            if let Some(duration) = slow_duration(message) {
                tokio::time::sleep(duration).await;
            }
            delay_print(message)
        }
    }
}

/// `slow:<ms>:...` → how long to take, capped at 60 s.
fn slow_duration(message: &str) -> Option<Duration> {
    let (ms, _) = message.strip_prefix(SLOW_PREFIX)?.split_once(':')?;
    Some(Duration::from_millis(ms.parse::<u64>().ok()?.min(60_000)))
}

/// The demo job: print the line (by design) and log it.
#[allow(clippy::print_stdout)]
fn delay_print(message: &str) -> Result<(), RunError> {
    if let Some(reason) = message.strip_prefix(FAIL_PREFIX) {
        return Err(RunError::Failed(format!("demo failure: {}", reason.trim())));
    }
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
    println!("[{now}] {message}");
    tracing::info!(%message, "demo:delay_print ran");
    Ok(())
}

async fn on_failure(
    ctx: &HandlerContext,
    id: &str,
    meta: &MetadataStore,
    error: RunError,
) -> Result<(), BoxDynError> {
    let failures = meta_u64(meta, "failures") as u32 + 1;
    let max_retry = meta_u64(meta, "max_retry") as u32;
    let last = failures > max_retry;
    let next_run_ms = storage::now_ms() + ctx.backoff.after(failures).as_millis() as u64;
    let message = error.to_string();
    let mut conn = ctx.conn.clone();
    let record = storage::record_failure(&mut conn, &ctx.keys, id, failures, &message, next_run_ms);
    if let Err(e) = tokio::time::timeout(Duration::from_secs(3), record).await {
        tracing::warn!(job_id = %id, error = %e, "could not record the failure");
    }
    metrics::counter!("jobqueue_jobs_failed_total").increment(1);
    if last {
        tracing::warn!(job_id = %id, failures, %message, "job failed for the last time: dead");
        metrics::counter!("jobqueue_jobs_dead_total").increment(1);
        return Err(AbortError::new(error).into());
    }
    tracing::info!(job_id = %id, failures, max_retry, %message, "job failed, will retry");
    metrics::counter!("jobqueue_jobs_retried_total").increment(1);
    Err(error.into())
}

fn meta_u64(meta: &MetadataStore, key: &str) -> u64 {
    meta.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_json_is_tagged() {
        let job = Job::DelayPrint {
            message: "hi".into(),
        };
        let json = serde_json::to_string(&job).unwrap_or_default();
        assert_eq!(json, r#"{"type":"demo:delay_print","message":"hi"}"#);
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
