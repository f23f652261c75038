//! Child processes that cannot outlive the bench: each [`Proc`] kills its process on drop, so a
//! panic or an early `?` leaves nothing running. Optional line capture of stdout with arrival
//! times (the worker prints one line per job; its arrival time is the job's start, ±pipe latency).

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lines a child printed, with the wall-clock ms at which the bench read each one.
#[derive(Debug, Default)]
pub struct Lines {
    lines: Mutex<Vec<(u64, String)>>,
}

impl Lines {
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn snapshot(&self) -> Vec<(u64, String)> {
        self.lock().clone()
    }

    fn push(&self, line: String) {
        let at = crate::now_ms();
        self.lock().push((at, line));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, String)>> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wait until at least `n` lines arrived; false on timeout.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.len() < n {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// The message part of the demo job's line `[YYYY-MM-DD HH:MM:SS] <message>`.
pub fn job_message(line: &str) -> &str {
    line.split_once("] ").map_or(line, |(_, m)| m)
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc {
    name: String,
    child: Option<Child>,
}

impl Proc {
    /// Spawn `cmd` with stderr (and stdout unless `lines`) appended to `log`.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        log: &Path,
        lines: Option<Arc<Lines>>,
    ) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        cmd.stdin(Stdio::null()).stderr(out.try_clone()?);
        if lines.is_some() {
            cmd.stdout(Stdio::piped());
        } else {
            cmd.stdout(out);
        }
        let mut child = cmd.spawn().with_context(|| format!("spawn {name}"))?;
        if let (Some(sink), Some(stdout)) = (lines, child.stdout.take()) {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    sink.push(line);
                }
            });
        }
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory in MiB (`VmRSS` of /proc/<pid>/status).
    pub fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    }

    /// Fail when the process already exited (it should be serving).
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                bail!("{} exited early: {status}", self.name);
            }
        }
        Ok(())
    }

    /// SIGKILL now (a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Send `signal` (e.g. SIGUSR1: "start" to a paused BullMQ worker).
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = self.pid().context("process has ended")?;
        kill(Pid::from_raw(i32::try_from(pid)?), signal)?;
        Ok(())
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    pub fn terminate(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // An error means it is gone already; the wait below notices.
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
