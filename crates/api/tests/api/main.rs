//! The api's integration tests: one test binary of modules, so the api and its dependencies
//! are linked once, not once per file. Each module starts the real app (`common::spawn_app`)
//! and real Redis processes (`cacheserver-testkit`).

#[path = "../common/mod.rs"]
mod common;

mod cache;
mod chaos;
mod control;
mod cors;
mod docs;
mod events;
mod failover;
mod health;
mod jobs;
mod observability;
mod prometheus;
mod queues;
mod ratelimit;
mod schedules;
mod security;
mod spec_walk;
