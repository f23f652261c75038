use crate::{free_port, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One `redis-server` on 127.0.0.1 with AOF (everysec) in its own temp dir.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Start a server on a free port and wait until it answers PING.
    pub fn start() -> Self {
        let mut server = Self::reserve();
        server.restart();
        server
    }

    /// Pick a port and a dir but do not start (for "Redis down at start" tests).
    pub fn reserve() -> Self {
        Self::reserve_with(free_port(), Vec::new())
    }

    pub(crate) fn reserve_with(port: u16, extra_args: Vec<String>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cacheserver-redis-")
            .tempdir()
            .expect("temp dir");
        Self {
            port,
            dir,
            extra_args,
            child: None,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// (Re)start on the same port and dir, so AOF data survives. Waits until it answers PING.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            return;
        }
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("log file");
        let child = Command::new(redis_server_bin())
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--protected-mode",
                "no",
            ])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ])
            .args(["--hz", "100", "--daemonize", "no", "--logfile", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (is it installed?)");
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_until(Duration::from_secs(10), || redis_cli(port, &["PING"])
                .is_ok_and(|r| r == "PONG")),
            "redis-server on port {port} did not answer PING; log: {}",
            self.log()
        );
    }

    /// SIGKILL: no clean shutdown, AOF keeps what was fsynced.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `SHUTDOWN` (flushes the AOF), then reap the process.
    pub fn shutdown(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = redis_cli(self.port, &["SHUTDOWN"]);
            let stopped = wait_until(Duration::from_secs(10), || {
                child.try_wait().is_ok_and(|s| s.is_some())
            });
            if !stopped {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Run a command with `redis-cli` and return its output.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args).unwrap_or_else(|e| panic!("redis-cli {args:?}: {e}"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-cli -p <port> <args>`: trimmed stdout, or the error text. Bounded by a 5 s timeout.
pub fn redis_cli(port: u16, args: &[&str]) -> Result<String, String> {
    let output = Command::new("timeout")
        .args(["5", "redis-cli", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run redis-cli: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success()
        || stdout.starts_with("Could not connect")
        || stdout.starts_with("ERR")
    {
        return Err(format!(
            "{stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(stdout)
}

fn redis_server_bin() -> PathBuf {
    std::env::var_os("REDIS_SERVER_BIN")
        .map_or_else(|| PathBuf::from("redis-server"), PathBuf::from)
}
