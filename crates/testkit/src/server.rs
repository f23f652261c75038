use crate::{free_port, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One `redis-server` on 127.0.0.1 with AOF (everysec) in its own temp dir.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
    /// redis-cli arguments this server needs (TLS, the admin password).
    cli_args: Vec<String>,
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

    /// Start with extra `redis-server` arguments and the `redis-cli` arguments needed to reach it;
    /// `build` gets the port (TLS servers listen on it with `--port 0 --tls-port <port>`).
    pub fn start_with(build: impl FnOnce(u16) -> (Vec<String>, Vec<String>)) -> Self {
        let port = free_port();
        let (server_args, cli_args) = build(port);
        let mut server = Self::reserve_with(port, server_args);
        server.cli_args = cli_args;
        server.restart();
        server
    }

    /// TLS only (no plain-text port), trusting `certs`' CA; `mutual`: client certs required.
    pub fn start_tls(certs: &crate::TestCerts, mutual: bool) -> Self {
        Self::start_with(|port| (certs.server_args(port, mutual), certs.cli_args()))
    }

    /// `requirepass <password>` for the default user.
    pub fn start_with_password(password: &str) -> Self {
        Self::start_with(|_| {
            (
                vec!["--requirepass".into(), password.into()],
                admin_cli_args(password),
            )
        })
    }

    /// `ACL SETUSER <name> <rules> ><password>`: `rules` is one line such as a file of
    /// `deploy/redis/`.
    pub fn add_acl_user(&self, name: &str, rules: &str, password: &str) {
        let pass = format!(">{password}");
        let mut args = vec!["ACL", "SETUSER", name];
        args.extend(rules.split_whitespace());
        args.push(&pass);
        let reply = self.cli(&args);
        assert_eq!(reply, "OK", "ACL SETUSER {name}: {reply}");
    }

    pub(crate) fn with_cli_args(mut self, cli_args: Vec<String>) -> Self {
        self.cli_args = cli_args;
        self
    }

    /// Like [`RedisServer::start`], with its dir (so its AOF) on tmpfs (`/dev/shm` when there is
    /// one). `everysec` postpones the AOF write for up to 2 s while a background fsync is slow,
    /// and Redis replies meanwhile: a SIGKILL then loses acknowledged writes (README, "High
    /// availability"). On tmpfs fsync is instant, so a test that SIGKILLs Redis checks our code,
    /// not how busy the machine's disk was.
    pub fn start_on_tmpfs() -> Self {
        let mut server = Self::reserve_in(free_port(), Vec::new(), Some(Path::new("/dev/shm")));
        server.restart();
        server
    }

    pub(crate) fn reserve_with(port: u16, extra_args: Vec<String>) -> Self {
        Self::reserve_in(port, extra_args, None)
    }

    /// A temp dir under `parent` when it can make one there (else the system's temp dir).
    fn reserve_in(port: u16, extra_args: Vec<String>, parent: Option<&Path>) -> Self {
        let builder = tempfile::Builder::new()
            .prefix("cacheserver-redis-")
            .clone();
        let dir = parent
            .and_then(|p| builder.tempdir_in(p).ok())
            .unwrap_or_else(|| builder.tempdir().expect("temp dir"));
        Self {
            port,
            dir,
            extra_args,
            cli_args: Vec::new(),
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
            wait_until(Duration::from_secs(10), || self
                .try_cli(&["PING"])
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
            let _ = self.try_cli(&["SHUTDOWN"]);
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
        self.try_cli(args)
            .unwrap_or_else(|e| panic!("redis-cli {args:?}: {e}"))
    }

    /// Script calls this server has run so far (`INFO commandstats`: EVAL + EVALSHA), for tests
    /// that count round trips.
    pub fn script_calls(&self) -> u64 {
        self.cli(&["INFO", "commandstats"])
            .lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// `cli` that returns the error instead of panicking.
    pub fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let mut all: Vec<&str> = self.cli_args.iter().map(String::as_str).collect();
        all.extend(args);
        redis_cli(self.port, &all)
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

/// redis-cli arguments to authenticate as the default user.
pub fn admin_cli_args(password: &str) -> Vec<String> {
    vec!["--no-auth-warning".into(), "-a".into(), password.into()]
}

fn redis_server_bin() -> PathBuf {
    std::env::var_os("REDIS_SERVER_BIN")
        .map_or_else(|| PathBuf::from("redis-server"), PathBuf::from)
}
