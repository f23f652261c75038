//! `cacheserver-bench`: benchmarks and a fault drill on real processes.
//!
//! Everything runs on loopback: its own `redis-server`s (testkit: a single one for the jobqueue and
//! a 3+3 cluster for rate limiting), the release `api` and `worker` binaries as child processes,
//! `wrk` and `redis-benchmark` as load generators. Results are ratios within one run (the machine
//! is shared), printed as a table and written to `docs/benchmarks.md`.
//!
//! Every child process is owned by a [`procs::Proc`] guard that kills it on drop (also on panic).
// Progress and results go to stdout: printing is this crate's job.
#![allow(clippy::print_stdout)]

pub mod drain;
pub mod drill;
pub mod machine;
pub mod noop;
pub mod procs;
pub mod quiet;
pub mod report;
pub mod resources;
pub mod runner;
pub mod sections;
pub mod stack;
pub mod stats;
pub mod wrk;

use std::path::PathBuf;
use std::time::Duration;

/// How long and how big each load is. `smoke` shrinks everything so CI runs it in seconds.
#[derive(Debug, Clone)]
pub struct Plan {
    pub smoke: bool,
    /// Length of one wrk run.
    pub load: Duration,
    /// wrk runs per configuration, and interleaved rounds of ours vs BullMQ (medians reported).
    pub rounds: usize,
    /// Jobs per in-process enqueue measurement and per worker run.
    pub jobs: usize,
    /// Jobs of the timeliness run, and their longest delay in seconds (delays are 1..=max).
    pub timely_jobs: usize,
    pub timely_max_delay: usize,
    /// Warm each api up with one load before measuring.
    pub warm_up: bool,
    /// Requests of the redis-benchmark run.
    pub redis_requests: usize,
    /// Length of the failover probe.
    pub failover: Duration,
    /// How long an idle worker's CPU is sampled (ours and BullMQ's).
    pub idle_window: Duration,
    /// Longest wait of the quiet gate before a timed phase (crate::quiet).
    pub quiet_bound: Duration,
    /// Where `api`, `worker` (and `cacheserver-bench`) live.
    pub bin_dir: PathBuf,
    /// The config directory of that build's `api` and `worker` (`--config-dir`, for a build from
    /// before a change); `None`: this workspace's.
    pub config_dir: Option<PathBuf>,
    /// Run only these sections (`--only worker,bullmq`); empty: all.
    pub only: Vec<String>,
}

impl Plan {
    pub fn full(bin_dir: PathBuf) -> Self {
        Self {
            smoke: false,
            load: Duration::from_secs(5),
            rounds: 3,
            jobs: 20_000,
            timely_jobs: 1_000,
            timely_max_delay: 5,
            warm_up: true,
            redis_requests: 200_000,
            failover: Duration::from_secs(8),
            idle_window: Duration::from_secs(10),
            quiet_bound: Duration::from_secs(60),
            bin_dir,
            config_dir: None,
            only: Vec::new(),
        }
    }

    /// Tiny loads: checks that every step still works, asserts no speed.
    pub fn smoke(bin_dir: PathBuf) -> Self {
        Self {
            smoke: true,
            load: Duration::from_secs(1),
            rounds: 1,
            jobs: 300,
            timely_jobs: 30,
            timely_max_delay: 2,
            warm_up: false,
            redis_requests: 2_000,
            failover: Duration::from_secs(2),
            idle_window: Duration::from_secs(1),
            // One short sample: the smoke run must not stall `just test` (busy is fine there).
            quiet_bound: Duration::ZERO,
            bin_dir,
            config_dir: None,
            only: Vec::new(),
        }
    }

    /// Whether `section` is part of this run.
    pub fn runs(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

/// The workspace root (config files, docs, bench scripts).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// For tests: `target/debug`, with `api` and `worker` built (a no-op when nextest built them
/// already); the running test binary is `target/debug/deps/<test>-<hash>`.
#[allow(clippy::expect_used)]
pub fn debug_bin_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--quiet", "-p", "cacheserver-api", "--bin", "api"])
        .args(["-p", "cacheserver-worker", "--bin", "worker"])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build of api and worker failed");
    std::env::current_exe()
        .expect("test binary path")
        .parent()
        .and_then(|d| d.parent())
        .expect("target/debug")
        .to_owned()
}

/// Milliseconds since the Unix epoch (the same clock the worker uses for due times).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
