//! Delayed jobs on one Redis through apalis 1.0 + apalis-redis 1.0, and the `worker` binary.
//!
//! - [`jobs`]: the job-type contract ([`JobType`]), one file per type, and the [`Registry`]
//!   (one line per type) used by the worker, the api's validation and the OpenAPI spec.
//! - [`JobQueue`]: register (one or a batch, unique keys), inspect, list, retry, delete,
//!   pause/resume, counts and history; used by the api.
//! - `runner.rs`: the layer around every job (early-start guard, timeout, retries, dead, metrics).
//! - [`Supervisor`]: runs the apalis worker, restarts it across Redis outages, drains on shutdown.
//! - [`storage`]: every Redis key, every apalis-redis internal relied on, every workaround.
//! - [`metrics`]: every metric name.
//! - [`tls_probe`]: tells plain text on a TLS port from an outage (both Redis clients use it).

// Job-type files name this crate by its name, so one file works in `jobs/` and in another crate
// (the README's example, `crates/api/tests/job_type_example/thumbnail.rs`).
extern crate self as cacheserver_jobqueue;

mod acks;
mod backend;
mod batcher;
pub mod connection;
mod error;
pub mod health;
mod inspect;
pub mod jobs;
pub mod metrics;
mod queue;
mod runner;
pub mod storage;
mod supervisor;
pub mod tls_probe;
mod types;

pub use error::JobQueueError;
pub use inspect::{MAX_HISTORY_MINUTES, MAX_LIST};
pub use jobs::{DelayPrint, JobContext, JobError, JobType, Registry, FAIL_PREFIX, SLOW_PREFIX};
pub use queue::{JobQueue, MAX_BULK, MAX_TIMEOUT_SECONDS, MAX_UNIQUE_FOR_SECONDS};
pub use runner::Backoff;
pub use supervisor::{default_worker_name, Supervisor, WorkerOptions, WorkerState};
pub use types::{
    EnqueuedJob, JobFailure, JobInfo, JobPage, JobStatus, MinuteCount, NewJob, QueueStats,
    RetriedJob, MAX_BATCH, MAX_UNIQUE_KEY_CHARS,
};
