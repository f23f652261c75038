//! The worker's integration tests: one test binary of modules, so the worker and its
//! dependencies are linked once. They run real Redis processes (`cacheserver-testkit`) and the
//! real `worker` binary or an in-process `Supervisor`; every wait is bounded.

mod common;
mod control;
mod job_types;
mod jobs;
mod limits;
mod memory;
mod queues;
mod schedules;
mod security;
