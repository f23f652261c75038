//! The job worker (binary `worker`): runs the jobs of one queue on apalis 1.0, through the job
//! client library's store (`cacheserver_jobqueue::store`), never through the api's client.
//!
//! - [`Supervisor`] (`supervisor.rs`): runs the apalis worker, restarts it across Redis outages,
//!   drains on shutdown.
//! - `backend.rs`: the apalis backend — fetch (`fetch.lua` through the store), wake-ups.
//! - `runner.rs`: the layer around every job (early-start guard, timeout, retries, dead, metrics).
//! - `acks.rs`: the result writer (`finish.lua` through the store, batched).
//! - `housekeeping.rs`: heartbeat, reaping dead workers, trimming done jobs.
//! - [`scheduler`]: schedules (cron) — exactly one job per tick across workers.
//! - [`health`]: `/health`, `/ready`, `/metrics`.
//! - `apalis.rs`: everything borrowed from apalis-redis' internals, with the upstream causes.

mod acks;
mod apalis;
mod backend;
pub mod health;
mod housekeeping;
mod runner;
pub mod scheduler;
mod supervisor;

pub use runner::Backoff;
pub use supervisor::{default_worker_name, Supervisor, WorkerOptions, WorkerState};
