//! Delayed jobs on one Redis through apalis 1.0 + apalis-redis 1.0, and the `worker` binary.
//!
//! - [`JobQueue`]: register (one or a batch), inspect, retry, delete jobs; used by the api.
//! - [`Supervisor`]: runs the apalis worker, restarts it across Redis outages, drains on shutdown.
//! - `storage.rs`: apalis-redis setup and every workaround for its bugs, each naming the issue.
//! - [`jobs`]: job types and their handler (`demo:delay_print`; messages starting with
//!   [`jobs::FAIL_PREFIX`] fail on purpose).

pub mod connection;
mod error;
pub mod health;
pub mod jobs;
mod queue;
pub mod storage;
mod supervisor;
mod types;

pub use error::JobQueueError;
pub use jobs::{Backoff, Job, FAIL_PREFIX, SLOW_PREFIX};
pub use queue::JobQueue;
pub use supervisor::{default_worker_name, Supervisor, WorkerOptions, WorkerState};
pub use types::{EnqueuedJob, JobInfo, JobStatus, NewJob, QueueStats, RetriedJob, MAX_BATCH};
