//! The environment of one run: its own Redis processes, a temp dir for logs, and helpers that
//! start the release `api` and `worker` as children configured through `APP__*` variables.

use crate::procs::{Lines, Proc};
use anyhow::{bail, Context};
use cacheserver_testkit::{free_port, RedisCluster, RedisServer};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Limits so high that every benchmark request is allowed (the decision still runs).
pub const HIGH_LIMIT: &str = "100000000";

pub struct Stack {
    pub jobqueue: RedisServer,
    pub cluster: RedisCluster,
    pub dir: tempfile::TempDir,
    bin_dir: PathBuf,
    /// The config directory of the api and worker children when they are another build's
    /// (`--config-dir`); `None`: this workspace's `config/`.
    config_dir: Option<PathBuf>,
    http: reqwest::Client,
}

/// A running api.
pub struct Api {
    pub proc: Proc,
    pub port: u16,
    pub base: String,
}

/// A running worker; its job lines land in `lines`.
pub struct Worker {
    pub proc: Proc,
    pub health: String,
    pub lines: Arc<Lines>,
}

impl Stack {
    /// Start a single Redis and a 3+3 cluster (a few seconds).
    pub fn start(bin_dir: &Path) -> anyhow::Result<Self> {
        for bin in ["api", "worker"] {
            let path = bin_dir.join(bin);
            if !path.is_file() {
                bail!("{} is missing: build it first", path.display());
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("cacheserver-bench-")
            .tempdir()?;
        Ok(Self {
            jobqueue: RedisServer::start(),
            cluster: RedisCluster::start(),
            dir,
            bin_dir: bin_dir.to_owned(),
            config_dir: None,
            http: http_client()?,
        })
    }

    /// Run the api and worker children with another build's config directory (a build from
    /// before a change, compared in one run of this bench).
    pub fn with_config_dir(mut self, config_dir: Option<PathBuf>) -> Self {
        self.config_dir = config_dir;
        self
    }

    /// Whether the children are another build (`--config-dir`): settings this build added may be
    /// unknown to them.
    pub fn other_build(&self) -> bool {
        self.config_dir.is_some()
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Settings shared by api and worker; `extra` overrides them.
    pub fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let config = self
            .config_dir
            .clone()
            .unwrap_or_else(|| crate::workspace_root().join("config"));
        let mut vars: Vec<(String, String)> = vec![
            ("APP_ENV".into(), "test".into()),
            ("APP_CONFIG_DIR".into(), config.display().to_string()),
            (
                "APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR".into(),
                self.jobqueue.addr(),
            ),
            (
                "APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS".into(),
                self.cluster.addrs().join(","),
            ),
            ("APP__LOGGING__LEVEL".into(), "warn".into()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        for (k, v) in extra {
            vars.retain(|(key, _)| key != k);
            vars.push(((*k).into(), (*v).into()));
        }
        vars
    }

    /// Start the api on `port` (0: a free one) and wait for `/health`.
    pub async fn api(&self, name: &str, port: u16, extra: &[(&str, &str)]) -> anyhow::Result<Api> {
        let port = if port == 0 { free_port() } else { port };
        let port_s = port.to_string();
        let mut vars = self.env(extra);
        vars.push(("APP__SERVER__PORT".into(), port_s));
        vars.push(("APP__SERVER__HOST".into(), "127.0.0.1".into()));
        let mut cmd = Command::new(self.bin_dir.join("api"));
        cmd.envs(vars);
        let log = self.dir.path().join(format!("{name}.log"));
        let mut proc = Proc::spawn(name, cmd, &log, None)?;
        let base = format!("http://127.0.0.1:{port}");
        self.wait_healthy(&mut proc, &format!("{base}/health"), &log)
            .await?;
        Ok(Api { proc, port, base })
    }

    /// Start a worker named `name` and wait for its `/health` (running and connected).
    pub async fn worker(
        &self,
        name: &str,
        concurrency: usize,
        lines: Arc<Lines>,
    ) -> anyhow::Result<Worker> {
        let health_port = free_port();
        let mut cmd = Command::new(self.bin_dir.join("worker"));
        cmd.envs(self.env(&[]))
            .args(["--name", name, "--concurrency", &concurrency.to_string()])
            .args(["--health-port", &health_port.to_string()]);
        let log = self.dir.path().join(format!("{name}.log"));
        let mut proc = Proc::spawn(name, cmd, &log, Some(lines.clone()))?;
        let health = format!("http://127.0.0.1:{health_port}/health");
        self.wait_healthy(&mut proc, &health, &log).await?;
        Ok(Worker {
            proc,
            health,
            lines,
        })
    }

    async fn wait_healthy(&self, proc: &mut Proc, url: &str, log: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Err(e) = proc.ensure_running() {
                let tail = std::fs::read_to_string(log).unwrap_or_default();
                bail!("{e}; log:\n{tail}");
            }
            let ok = self
                .http
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{url} did not answer within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Empty the jobqueue Redis between sections (each starts from the same state).
    pub fn flush_jobqueue(&self) {
        self.jobqueue.cli(&["FLUSHALL"]);
    }

    /// An in-process `JobQueue` on the bench's Redis, configured like the api's.
    pub fn job_queue(&self) -> anyhow::Result<cacheserver_jobqueue::JobQueue> {
        let settings = self.settings()?;
        cacheserver_jobqueue::JobQueue::new(
            &settings.cache_server.redis.jobqueue,
            &settings.jobqueue,
        )
        .context("job queue")
    }

    pub fn settings(&self) -> anyhow::Result<cacheserver_config::Settings> {
        let vars = self
            .env(&[])
            .into_iter()
            .filter(|(k, _)| k.starts_with("APP__"))
            .collect();
        let root = crate::workspace_root().join("config");
        cacheserver_config::Settings::load_from(&root, cacheserver_config::AppEnv::Test, Some(vars))
            .context("settings")
    }
}

pub fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(64)
        .build()?)
}
