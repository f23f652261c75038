//! The job client library: what the api (and the worker) link to talk to the queue.
//!
//! - [`types`]-level model: [`NewJob`], [`JobInfo`], [`JobStatus`]… and every limit
//!   ([`limits`]).
//! - [`jobs`]: the job-type contract ([`JobType`]), one file per type, and the [`Registry`]
//!   (one line per type) used by the worker, the api's validation and the OpenAPI spec.
//! - [`store`]: the only code that knows a Redis key or a script (one function per
//!   `lua/*.lua`), and the connections ([`Store`]); it reaches Redis through the Redis layer
//!   (`cacheserver-redis`).
//! - [`JobQueue`]: the client — register (one, batched, or a batch; unique keys), retry,
//!   delete, cancel, pause/resume (`client.rs`), the inspector — detail, list, counts, history
//!   (`inspector.rs`) — and waiting for a job's end and feeds of job events (`waiter.rs`).
//! - [`metrics`]: every metric name of the queue.
//!
//! The worker runtime (apalis, supervisor, runner, result writer) is `crates/worker`.

// Job-type files name this crate by its name, so one file works in `jobs/` and in another crate
// (the README's example, `crates/api/tests/job_type_example/thumbnail.rs`).
extern crate self as cacheserver_jobqueue;

mod batcher;
mod client;
mod error;
mod inspector;
pub mod jobs;
pub mod metrics;
pub mod schedules;
pub mod store;
mod types;
mod waiter;

pub use client::{JobQueue, MAX_BULK, MAX_TIMEOUT_SECONDS, MAX_UNIQUE_FOR_SECONDS};
pub use error::JobQueueError;
pub use inspector::{MAX_HISTORY_MINUTES, MAX_LIST};
pub use jobs::{
    DelayPrint, JobContext, JobEnvelope, JobError, JobProgress, JobType, Registry, BIG_PREFIX,
    FAIL_PREFIX, MAX_RESULT_BYTES, SLOW_PREFIX,
};
pub use schedules::{Schedule, ScheduleInfo, Schedules};
pub use store::Store;
pub use types::{
    CancelledJob, EnqueuedJob, JobFailure, JobInfo, JobPage, JobStatus, MinuteCount, NewJob,
    QueueLimits, QueueStats, RetriedJob, DEFAULT_PRIORITY, MAX_BATCH, MAX_LIMIT_KEY_CHARS,
    MAX_PRIORITY, MAX_UNIQUE_KEY_CHARS, MIN_PRIORITY,
};
pub use waiter::{parse_event_id, EventFeed, FeedItem, FEED_BUFFER, MAX_WAIT_SECONDS};

/// Every limit of the queue in one place (the settings' own bounds are in `cacheserver-config`).
pub mod limits {
    pub use crate::client::{MAX_BULK, MAX_TIMEOUT_SECONDS, MAX_UNIQUE_FOR_SECONDS};
    pub use crate::inspector::{MAX_HISTORY_MINUTES, MAX_LIST};
    pub use crate::jobs::MAX_RESULT_BYTES;
    pub use crate::store::{ERRORS_KEPT, HISTORY_TTL};
    pub use crate::types::{
        DEFAULT_PRIORITY, MAX_BATCH, MAX_PRIORITY, MAX_UNIQUE_KEY_CHARS, MIN_PRIORITY,
    };
    pub use crate::waiter::MAX_WAIT_SECONDS;
    pub use cacheserver_config::{DEFAULT_EVENTS_MAX_LEN, MAX_EVENTS_MAX_LEN};
    pub use cacheserver_config::{MAX_DELAY_SECONDS, MAX_RETRY_LIMIT};
}
