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
use std::time::{Duration, SystemTime};

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

/// `target/<profile>/worker` for the crates whose tests cannot name it with
/// `CARGO_BIN_EXE_worker`. `cargo test --workspace` (and `nextest run --workspace`, as in
/// `just test`) builds it; a missing binary, or one older than a source it is built from, fails
/// the test with the command that builds it. (Building it from here with `cargo build -p` would
/// resolve other dependency features than the workspace build and compile them all again.)
pub fn worker_binary() -> PathBuf {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            // A test binary lives in target/<profile>/deps; the worker in target/<profile>.
            let exe = std::env::current_exe().expect("test binary path");
            let profile = exe
                .parent()
                .and_then(Path::parent)
                .expect("test binary in target/<profile>/deps");
            let bin = profile.join("worker");
            let build =
                "build it: cargo build --workspace --bins, or run the tests with --workspace";
            let built = std::fs::metadata(&bin)
                .and_then(|m| m.modified())
                .unwrap_or_else(|_| panic!("no worker binary at {}; {build}", bin.display()));
            if let Some(newer) = newest_source(&repo_root(), "worker").filter(|(t, _)| *t > built) {
                panic!(
                    "{} is older than {}; {build}",
                    bin.display(),
                    newer.1.display()
                );
            }
            bin
        })
        .clone()
}

/// The newest file among the sources of workspace crate `name` and of the workspace crates it
/// depends on (their `src/`, `lua/`, `Cargo.toml`), plus `Cargo.lock`.
fn newest_source(root: &Path, name: &str) -> Option<(SystemTime, PathBuf)> {
    let mut crates = vec![name.to_owned()];
    let mut files = vec![root.join("Cargo.lock")];
    let mut i = 0;
    while let Some(krate) = crates.get(i).cloned() {
        i += 1;
        let dir = root.join("crates").join(&krate);
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
        let deps = manifest
            .split("\n[")
            .find(|section| section.starts_with("dependencies]"))
            .unwrap_or_default();
        for line in deps.lines() {
            let dep = line.split(['.', ' ', '=']).next().unwrap_or_default();
            if let Some(dep) = dep.strip_prefix("cacheserver-") {
                if !crates.iter().any(|c| c == dep) {
                    crates.push(dep.to_owned());
                }
            }
        }
        files.push(dir.join("Cargo.toml"));
        files.extend(walk(&dir.join("src")));
        files.extend(walk(&dir.join("lua")));
    }
    files
        .into_iter()
        .filter_map(|f| Some((std::fs::metadata(&f).ok()?.modified().ok()?, f)))
        .max()
}

/// Every file under `dir` (none when it does not exist).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
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
