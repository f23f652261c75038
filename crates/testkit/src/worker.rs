//! The `worker` binary as a child process: started with the test config (`APP_ENV=test`, the
//! repo's `config/`), a free `/health` port and the caller's settings, returned once `/health`
//! answers; stopped with SIGTERM ([`ChildProcess::terminate`]) or SIGKILL ([`ChildProcess::kill`]),
//! killed on drop.

use crate::{free_port, ChildProcess, Stderr, Stream};
use std::ffi::OsStr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// How long a worker may take to answer `/health` after its start.
const READY_BOUND: Duration = Duration::from_secs(30);

/// The repository root (the workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The repository's `config/` directory (`config/base` + per-environment overrides).
pub fn config_dir() -> PathBuf {
    repo_root().join("config")
}

/// `target/debug/worker`, built once per test process (`cargo build` is a no-op when it is up
/// to date), for the crates whose tests cannot name it with `CARGO_BIN_EXE_worker`.
pub fn worker_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "cacheserver-worker", "--bin", "worker"])
                .current_dir(repo_root())
                .status()
                .expect("run cargo build");
            assert!(status.success(), "building the worker failed");
            // A test binary lives in target/debug/deps; the worker in target/debug.
            let exe = std::env::current_exe().expect("test binary path");
            let debug = exe
                .parent()
                .and_then(Path::parent)
                .expect("test binary in target/<profile>/deps");
            let bin = debug.join("worker");
            assert!(bin.is_file(), "no worker at {}", bin.display());
            bin
        })
        .clone()
}

/// How to start a worker: the binary, `--name`, env overrides, where stderr goes.
pub struct WorkerCommand {
    cmd: Command,
    health_port: u16,
    stderr: Stderr,
}

impl WorkerCommand {
    /// `bin` with `APP_ENV=test`, the repo's config and a free health port; stderr inherited.
    pub fn new(bin: impl AsRef<OsStr>) -> Self {
        let health_port = free_port();
        let mut cmd = Command::new(bin);
        cmd.env("APP_ENV", "test")
            .env("APP_CONFIG_DIR", config_dir())
            .env(
                "APP__JOBQUEUE__WORKER__HEALTH_PORT",
                health_port.to_string(),
            );
        Self {
            cmd,
            health_port,
            stderr: Stderr::Inherit,
        }
    }

    /// The jobqueue Redis (`host:port`).
    pub fn redis(self, addr: &str) -> Self {
        self.env("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", addr)
    }

    /// `--name`: the worker's stable name (its in-flight set is named after it).
    pub fn name(mut self, name: &str) -> Self {
        self.cmd.args(["--name", name]);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn envs<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.cmd.envs(vars);
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.cmd.env_remove(key);
        self
    }

    /// Collect the log lines (stderr) too, for tests that read them.
    pub fn capture_stderr(mut self) -> Self {
        self.stderr = Stderr::Capture;
        self
    }

    /// Spawn the worker and wait until its `/health` answers (any status: a worker without
    /// Redis answers 503); panics, with its output, when it exits or does not answer first.
    pub async fn start(mut self) -> WorkerProcess {
        let proc = ChildProcess::spawn(&mut self.cmd, self.stderr);
        let mut worker = WorkerProcess {
            proc,
            health_port: self.health_port,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("http client"),
        };
        let deadline = tokio::time::Instant::now() + READY_BOUND;
        while worker.get("/health").await.is_none() {
            assert!(
                worker.is_alive(),
                "the worker exited before /health answered:\n{}",
                worker.output()
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "the worker's /health did not answer within {READY_BOUND:?}:\n{}",
                worker.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        worker
    }
}

/// A running worker; derefs to its [`ChildProcess`] (output lines, SIGTERM, SIGKILL).
pub struct WorkerProcess {
    proc: ChildProcess,
    health_port: u16,
    http: reqwest::Client,
}

impl WorkerProcess {
    pub fn health_port(&self) -> u16 {
        self.health_port
    }

    /// `GET path` on the health server: (status, body), `None` when it does not answer.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let url = format!("http://127.0.0.1:{}{path}", self.health_port);
        let resp = self.http.get(url).send().await.ok()?;
        Some((resp.status().as_u16(), resp.text().await.ok()?))
    }

    /// `/health`: (status, JSON body).
    pub async fn health(&self) -> Option<(u16, serde_json::Value)> {
        let (status, body) = self.get("/health").await?;
        Some((status, serde_json::from_str(&body).ok()?))
    }

    /// `restarts` from `/health`: how often the supervisor restarted the apalis worker.
    pub async fn restarts(&self) -> Option<u64> {
        self.health().await?.1["restarts"].as_u64()
    }

    /// The messages of the printed job lines (`[YYYY-MM-DD HH:MM:SS] message` → `message`).
    pub fn messages(&self) -> Vec<String> {
        self.proc
            .texts(Stream::Stdout)
            .iter()
            .map(|l| message_of(l).to_owned())
            .collect()
    }

    /// Everything collected so far: the log lines (when captured), then the job lines.
    pub fn output(&self) -> String {
        let mut all = self.proc.texts(Stream::Stderr).join("\n");
        all.push('\n');
        all.push_str(&self.proc.texts(Stream::Stdout).join("\n"));
        all
    }
}

/// `[YYYY-MM-DD HH:MM:SS] message` → `message` (the demo job's line format).
pub fn message_of(line: &str) -> &str {
    line.split_once("] ").map_or(line, |(_, m)| m)
}

impl Deref for WorkerProcess {
    type Target = ChildProcess;
    fn deref(&self) -> &ChildProcess {
        &self.proc
    }
}

impl DerefMut for WorkerProcess {
    fn deref_mut(&mut self) -> &mut ChildProcess {
        &mut self.proc
    }
}
