//! Runs bench/bullmq/bench.mjs (one mode per process) and reads the JSON line it prints.

use crate::procs::{Lines, Proc};
use anyhow::{bail, Context};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// The script, its installed npm packages and the Redis port it talks to.
pub struct Script {
    dir: PathBuf,
    port: u16,
}

impl Script {
    /// Check node, and install the pinned packages (`npm ci`) when they are missing.
    pub fn prepare(port: u16) -> anyhow::Result<Self> {
        let dir = crate::workspace_root().join("bench/bullmq");
        let node = Command::new("node").arg("--version").output();
        if !node.is_ok_and(|o| o.status.success()) {
            bail!("node is not installed (the BullMQ side needs Node.js ≥ 18 and npm)");
        }
        if !dir.join("node_modules/bullmq/package.json").is_file() {
            println!(
                "bench: npm ci in {} (BullMQ, pinned by package-lock.json)",
                dir.display()
            );
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .stdin(Stdio::null())
                .status()
                .context("run npm ci")?;
            if !status.success() {
                bail!("npm ci in {} failed: {status}", dir.display());
            }
        }
        Ok(Self { dir, port })
    }

    /// `node bench.mjs <mode> --port P --k v ...`, under `timeout(1)` when bounded.
    fn command(&self, mode: &str, args: &[(&str, String)], bound: Option<Duration>) -> Command {
        let mut cmd = match bound {
            Some(t) => {
                let mut c = Command::new("timeout");
                c.arg(t.as_secs().max(1).to_string()).arg("node");
                c
            }
            None => Command::new("node"),
        };
        cmd.current_dir(&self.dir)
            .args(["bench.mjs", mode, "--port", &self.port.to_string()]);
        for (k, v) in args {
            cmd.arg(format!("--{k}")).arg(v);
        }
        cmd
    }

    /// Run `mode` to the end (bounded by `timeout`) and parse its last stdout line.
    pub fn run(
        &self,
        mode: &str,
        args: &[(&str, String)],
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let mut cmd = self.command(mode, args, Some(timeout));
        let output = tokio::task::block_in_place(|| cmd.stdin(Stdio::null()).output())
            .with_context(|| format!("run bench.mjs {mode}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            bail!(
                "bench.mjs {mode}: {} (stderr: {})",
                output.status,
                tail(&stderr)
            );
        }
        let last = stdout.lines().rev().find(|l| !l.trim().is_empty());
        serde_json::from_str(last.unwrap_or(""))
            .with_context(|| format!("bench.mjs {mode}: not JSON: {}", tail(&stdout)))
    }

    /// Start `mode` in the background, its stdout lines landing in `lines`.
    pub fn spawn(
        &self,
        mode: &str,
        args: &[(&str, String)],
        log: &Path,
        lines: Arc<Lines>,
    ) -> anyhow::Result<Proc> {
        let cmd = self.command(mode, args, None);
        Proc::spawn(&format!("bullmq-{mode}"), cmd, log, Some(lines))
    }
}

/// A number from the script's JSON.
pub fn number(v: &Value, key: &str) -> anyhow::Result<f64> {
    v.get(key)
        .and_then(Value::as_f64)
        .with_context(|| format!("no number `{key}` in {v}"))
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}
