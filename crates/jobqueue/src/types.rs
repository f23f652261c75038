//! What callers hand to and get back from [`crate::JobQueue`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// Most jobs accepted by one `enqueue_batch` call.
pub const MAX_BATCH: usize = 1_000;
/// Longest `unique_key`, in characters (what JSON Schema's `maxLength` counts).
pub const MAX_UNIQUE_KEY_CHARS: usize = 200;
/// Longest `limit_key`, in characters.
pub const MAX_LIMIT_KEY_CHARS: usize = 200;
/// Priority of a job that names none (and of jobs stored before priorities existed).
pub const DEFAULT_PRIORITY: u8 = 5;
/// Lowest and highest priority; a higher one starts first among due jobs of a queue.
pub const MIN_PRIORITY: u8 = 1;
pub const MAX_PRIORITY: u8 = 10;

/// A job to register.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// A registered type name, e.g. `demo:delay_print`.
    pub job_type: String,
    pub payload: Value,
    /// Due this long after registration (0: now).
    pub delay: Duration,
    /// Due at this time instead of after `delay` (in the past: now).
    pub at: Option<DateTime<Utc>>,
    /// Extra runs after a failure; the job runs at most `1 + max_retry` times.
    pub max_retry: u32,
    /// Longest run; `None`: the type's default, else `jobqueue.default_timeout`.
    pub timeout: Option<Duration>,
    /// While a job with this key is not done or dead (or, with `unique_for`, for that long after
    /// it was registered) another one is a duplicate.
    pub unique_key: Option<String>,
    pub unique_for: Option<Duration>,
    /// The queue it goes to; `None`: the type's default queue, else the queue of the handle it
    /// is enqueued through.
    pub queue: Option<String>,
    /// 1..=10 ([`DEFAULT_PRIORITY`] when `None`); higher starts first among due jobs.
    pub priority: Option<u8>,
    /// The key its queue's `key_concurrency` / `key_rate_limit` count it under (e.g. a
    /// customer id), 1..=[`MAX_LIMIT_KEY_CHARS`] characters.
    pub limit_key: Option<String>,
}

impl NewJob {
    /// A job of `job_type` due now, no retries, no timeout of its own, not unique.
    pub fn new(job_type: impl Into<String>, payload: Value) -> Self {
        Self {
            job_type: job_type.into(),
            payload,
            delay: Duration::ZERO,
            at: None,
            max_retry: 0,
            timeout: None,
            unique_key: None,
            unique_for: None,
            queue: None,
            priority: None,
            limit_key: None,
        }
    }

    /// The demo job printing `message`.
    pub fn delay_print(message: impl Into<String>) -> Self {
        use crate::jobs::JobType;
        Self::new(
            crate::jobs::DelayPrint::NAME,
            serde_json::json!({ "message": message.into() }),
        )
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Due at `at` (in the past: now) instead of after a delay.
    pub fn at(mut self, at: DateTime<Utc>) -> Self {
        self.at = Some(at);
        self
    }

    /// Into queue `queue` (default: the queue of the handle it is enqueued through).
    pub fn in_queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Count it under `key` for its queue's per-key limits.
    pub fn limit_key(mut self, key: impl Into<String>) -> Self {
        self.limit_key = Some(key.into());
        self
    }

    /// Priority 1..=10 (checked at enqueue).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    pub fn retries(mut self, max_retry: u32) -> Self {
        self.max_retry = max_retry;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn unique(mut self, key: impl Into<String>, for_: Option<Duration>) -> Self {
        self.unique_key = Some(key.into());
        self.unique_for = for_;
        self
    }
}

/// A job that was stored (or, with `duplicate`, the job that already holds its unique key).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnqueuedJob {
    /// A ULID.
    pub job_id: String,
    /// When it becomes due (never runs before).
    pub run_at: DateTime<Utc>,
    /// The unique key was taken: `job_id` is the existing job, nothing was stored.
    pub duplicate: bool,
}

/// Where a job is in its life; the same words in statuses, filters and counts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for its due time.
    Scheduled,
    /// Due, waiting for a free worker.
    Pending,
    /// A worker runs it now.
    Running,
    /// Failed, waiting for its next attempt.
    Retrying,
    /// Ran successfully (kept for `done_retention`).
    Done,
    /// Failed `1 + max_retry` times (or could not be retried); kept until deleted or retried.
    Dead,
    /// Cancelled before or while it ran (kept for `done_retention`, never retried).
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 7] = [
        Self::Scheduled,
        Self::Pending,
        Self::Running,
        Self::Retrying,
        Self::Done,
        Self::Dead,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Done => "done",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// One failed run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobFailure {
    pub at: DateTime<Utc>,
    pub attempt: u32,
    pub error: String,
}

/// Everything known about one job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobInfo {
    pub job_id: String,
    /// The queue holding it.
    pub queue: String,
    pub job_type: String,
    pub payload: Value,
    pub status: JobStatus,
    /// Runs so far (finished or in progress).
    pub attempts: u32,
    pub max_retry: u32,
    /// The job's own timeout, if it has one.
    pub timeout_seconds: Option<f64>,
    /// The registered due time.
    pub run_at: DateTime<Utc>,
    pub created_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// The last 10 failures, newest first.
    pub errors: Vec<JobFailure>,
    /// What the run returned (done jobs whose type returns something).
    pub result: Option<Value>,
    /// What the run last reported with `ctx.progress`.
    pub progress: Option<crate::jobs::JobProgress>,
    /// A cancel was asked for while it ran; it ends `cancelled` once its worker stops it.
    pub cancel_requested: bool,
    /// 1..=10; higher starts first among due jobs of its queue.
    pub priority: u8,
    /// The key its queue's per-key limits count it under.
    pub limit_key: Option<String>,
}

/// Job counts by state.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueueStats {
    pub scheduled: u64,
    pub pending: u64,
    pub running: u64,
    pub retrying: u64,
    pub done: u64,
    pub dead: u64,
    pub cancelled: u64,
}

impl QueueStats {
    pub fn by_state(&self) -> [(&'static str, u64); 7] {
        [
            ("scheduled", self.scheduled),
            ("pending", self.pending),
            ("running", self.running),
            ("retrying", self.retrying),
            ("done", self.done),
            ("dead", self.dead),
            ("cancelled", self.cancelled),
        ]
    }
}

/// A queue's limits shared by all workers (as the workers serving it wrote them from their
/// `jobqueue.queues`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueLimits {
    /// At most this many running at once (`None`: no limit).
    pub concurrency: Option<u32>,
    /// At most `.0` starts in any window of `.1` (`None`: no limit).
    pub rate: Option<(u32, Duration)>,
    /// The same two per limit key.
    pub key_concurrency: Option<u32>,
    pub key_rate: Option<(u32, Duration)>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPage {
    pub jobs: Vec<JobInfo>,
    /// Pass back to get the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// Processed and failed runs in one minute.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct MinuteCount {
    pub minute: DateTime<Utc>,
    pub processed: u64,
    pub failed: u64,
}

/// What `cancel` did: `cancelled` (it was waiting), or `running` with the cancel sent to the
/// worker running it (it ends `cancelled` once stopped).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CancelledJob {
    pub job_id: String,
    pub status: JobStatus,
}

/// What `retry` did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RetriedJob {
    pub job_id: String,
    pub status: JobStatus,
}
