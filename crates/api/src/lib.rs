//! cacheserver api: rate limiting on a Redis Cluster, job registration, chaos, health, metrics.
//!
//! `startup::Application::build` wires everything; `main` and the tests both use it.

pub mod auth;
pub mod cache;
pub mod chaos;
pub mod cors;
pub mod domain_metrics;
pub mod error;
pub mod http_metrics;
pub mod ratelimit;
pub mod redis_cluster;
pub mod request_span;
pub mod routes;
pub mod startup;
pub mod state;
pub mod telemetry;
