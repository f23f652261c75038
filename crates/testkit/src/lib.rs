//! Real `redis-server` processes for tests: a single server and a 3-master + 3-replica cluster,
//! on free loopback ports in temp dirs, killed on drop, optionally with TLS (certificates made
//! by [`TestCerts`]), a password and ACL users. No mocks. [`ChildProcess`] runs a binary and
//! collects its output lines for bounded waits; [`WorkerCommand`] starts the `worker` binary;
//! [`eventually`] waits for an event with a bound.
//!
//! Needs `redis-server` and `redis-cli` on PATH (`just test` and `.ci/run` install them).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod cluster;
mod eventually;
mod ports;
mod process;
mod sentinel;
mod server;
mod tls;
mod worker;

pub use cluster::RedisCluster;
pub use eventually::{eventually, try_eventually, wait_until, within, Outcome};
pub use ports::{free_cluster_port, free_port};
pub use process::{ChildProcess, Line, Stderr, Stream};
pub use sentinel::{SentinelSet, MASTER_NAME as SENTINEL_MASTER_NAME};
pub use server::{admin_cli_args, redis_cli, RedisServer};
pub use tls::TestCerts;
pub use worker::{config_dir, message_of, repo_root, worker_binary, WorkerCommand, WorkerProcess};
