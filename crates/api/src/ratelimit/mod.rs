//! Rate limiting with a minute and an hour fixed window, per rule and client.
//!
//! Backends: the Redis Cluster (one atomic Lua call decides both windows of many clients, see
//! `batch`), or process memory. `auto` uses Redis while it answers within `redis_timeout` and
//! memory otherwise; `redis` lets requests through (fail open) while Redis is down; `memory`
//! never touches Redis. Local state (memory counts, spare units, exhausted windows) lives in one
//! bounded map (`state`). Time comes from the [`Clock`] passed in.
//!
//! Files depend one way (this file only declares and re-exports):
//! middleware → client_ip, limiter → batch → lua; limiter, batch → state; middleware, limiter →
//! rules; all of them → keys, types, clock. `types` (the shared values), `keys`, `clock` and
//! `client_ip` use no other file.

mod batch;
mod client_ip;
mod clock;
mod keys;
mod limiter;
mod lua;
mod middleware;
mod rules;
mod state;
mod types;

pub use client_ip::client_ip;
pub use clock::Clock;
pub use keys::top_level_keys;
pub use limiter::Limiter;
pub use middleware::rate_limit;
pub use types::{Backend, Decision, Limits, Quota, HOUR_SECS, MINUTE_SECS};

/// The Lua script the Redis backend runs (benchmarks load it into `redis-benchmark`).
pub const LUA_SCRIPT: &str = lua::SCRIPT;
