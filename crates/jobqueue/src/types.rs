//! What callers hand to and get back from [`crate::JobQueue`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Most jobs accepted by one `enqueue_batch` call.
pub const MAX_BATCH: usize = 1_000;

/// A job to register: the demo job prints `message` after `delay`.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub message: String,
    pub delay: Duration,
    /// Extra runs after a failure; the job runs at most `1 + max_retry` times.
    pub max_retry: u32,
}

/// A job that was stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnqueuedJob {
    /// A ULID.
    pub job_id: String,
    /// When it becomes due (never runs before).
    pub run_at: DateTime<Utc>,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for its due time.
    Scheduled,
    /// Due, waiting for a free worker.
    Pending,
    /// A worker runs it now.
    Running,
    /// Ran successfully (kept for `done_retention`).
    Done,
    /// Failed, waiting for its next attempt.
    Failed,
    /// Failed `1 + max_retry` times; kept until deleted or retried.
    Dead,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Dead => "dead",
        }
    }
}

/// What `GET /jobs/{id}` shows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobInfo {
    pub job_id: String,
    pub status: JobStatus,
    /// Runs so far (finished or in progress).
    pub attempts: u32,
    pub max_retry: u32,
    /// The registered due time.
    pub run_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Job counts by state (raw key sizes).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueueStats {
    /// Waiting for their due time (or next retry).
    pub scheduled: u64,
    /// Due, not yet picked up.
    pub pending: u64,
    /// Held by a worker.
    pub active: u64,
    /// Finished and not yet trimmed.
    pub done: u64,
    pub dead: u64,
}

/// What `retry` did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RetriedJob {
    pub job_id: String,
    pub status: JobStatus,
}
