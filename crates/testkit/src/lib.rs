//! Real `redis-server` processes for tests: a single server and a 3-master + 3-replica cluster,
//! on free loopback ports in temp dirs, killed on drop, optionally with TLS (certificates made
//! by [`TestCerts`]), a password and ACL users. No mocks. [`ChildProcess`] runs a binary and
//! collects its output lines for bounded waits.
//!
//! Needs `redis-server` and `redis-cli` on PATH (`just test` and `.ci/run` install them).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod cluster;
mod ports;
mod process;
mod sentinel;
mod server;
mod tls;

pub use cluster::RedisCluster;
pub use ports::{free_cluster_port, free_port};
pub use process::{ChildProcess, Line, Stderr, Stream};
pub use sentinel::{SentinelSet, MASTER_NAME as SENTINEL_MASTER_NAME};
pub use server::{admin_cli_args, redis_cli, RedisServer};
pub use tls::TestCerts;

use std::time::{Duration, Instant};

/// Poll `check` every 50 ms until it returns true or `timeout` passes. Returns whether it did.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
