//! The one Redis layer of the workspace: every Redis client is built here, from the typed
//! settings of `cacheserver-config`.
//!
//! - [`cluster`]: the fred pool on the Redis Cluster (the api's limiter and cache): lazy connect,
//!   reconnect policy, command timeouts, connection events and counters.
//! - [`single`]: redis-rs clients for the job queue's single Redis, optionally behind Sentinel
//!   (the master is followed), connection managers with explicit timeouts, `WAIT`-confirmed
//!   script calls.
//! - [`tls`]: the one TLS/mTLS builder (CA file or system roots, client certificate) both use.
//! - [`classify`]: the one misconfiguration-vs-outage classifier (credentials, ACL permission,
//!   TLS trust) both use; [`tls_probe`]: tells plain text on a TLS port from an outage.
//! - [`tracking`]: `CLIENT TRACKING` (BCAST, RESP3) on every primary of the cluster, for local
//!   copies kept coherent by Redis' invalidation pushes (the response cache's local tier).
//! - [`addr`]: `host:port` parsing; [`bounded`]: every call has a named budget.
//!
//! Scripts: on the cluster, [`cluster::RedisCluster::eval_script`] runs `EVALSHA` and loads a
//! [`cluster::ClusterScript`] on `NOSCRIPT` (the limiter's and the cache's scripts); on the
//! single Redis, redis-rs' [`redis::Script`] does the same by itself (the job queue's store uses
//! it, one `Script` per `lua/*.lua`).

pub mod addr;
pub mod classify;
pub mod cluster;
mod error;
pub mod single;
pub mod tls;
pub mod tls_probe;
pub mod tracking;

pub use error::RedisError;

use std::future::Future;
use std::time::Duration;

/// Run `call` within `budget`; past it the call is abandoned and `Timeout(budget)` returned.
pub async fn bounded<T, E: From<RedisError>>(
    budget: Duration,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    match tokio::time::timeout(budget, call).await {
        Ok(result) => result,
        Err(_) => Err(RedisError::Timeout(budget).into()),
    }
}
