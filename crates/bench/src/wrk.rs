//! Runs `wrk` and parses its summary.

use anyhow::{bail, Context};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// wrk's CPU: the api and Redis get the other core (and share this one with wrk's idle time).
const WRK_CPU: &str = "1";

#[derive(Debug, Clone, Copy, Default)]
pub struct WrkResult {
    /// All responses per second (any status).
    pub rps: f64,
    /// 2xx/3xx responses per second.
    pub ok_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    pub non_2xx: u64,
    pub socket_errors: u64,
    /// wrk's own CPU over the load, in cores: near 1, the load generator is the limit.
    pub cores: f64,
}

/// One wrk load: `conns` connections, one thread pinned to one core, `script` from `bench/`.
pub fn run(
    url: &str,
    script: Option<&str>,
    conns: usize,
    duration: Duration,
) -> anyhow::Result<WrkResult> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", WRK_CPU, "wrk", "-t1", "--latency", "--timeout", "5s"])
        .arg(format!("-c{conns}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)));
    if let Some(script) = script {
        let path = crate::workspace_root().join("bench").join(script);
        cmd.arg("-s").arg(path);
    }
    let before = children_cpu_secs();
    let output = cmd
        .arg(url)
        .output()
        .context("run wrk (apt-get install -y wrk)")?;
    let wrk_cpu = children_cpu_secs() - before;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut result = parse(&text).with_context(|| format!("unexpected wrk output:\n{text}"))?;
    result.cores = wrk_cpu / duration.as_secs_f64().max(1.0);
    Ok(result)
}

/// CPU seconds of this process' children that ended and were waited for: across one wrk run,
/// wrk's (the bench's other children, servers, live on until the end).
fn children_cpu_secs() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(0.0, |usage| {
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        secs(usage.user_time()) + secs(usage.system_time())
    })
}

pub fn parse(text: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult::default();
    let mut secs = 0.0;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => r.p50_ms = millis(v)?,
            ["99%", v] => r.p99_ms = millis(v)?,
            ["Requests/sec:", v] => r.rps = v.parse()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => r.non_2xx = n.parse()?,
            [n, "requests", "in", d, ..] => {
                r.requests = n.parse()?;
                secs = millis(d.trim_end_matches(','))? / 1000.0;
            }
            ["Socket", "errors:", rest @ ..] => {
                r.socket_errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    if r.requests == 0 || secs <= 0.0 {
        bail!("no requests completed");
    }
    r.ok_rps = r.requests.saturating_sub(r.non_2xx) as f64 / secs;
    Ok(r)
}

/// `620.00us`, `1.50ms`, `2.00s`, `5.00m` → milliseconds.
fn millis(value: &str) -> anyhow::Result<f64> {
    let split = value
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let n: f64 = number
        .parse()
        .with_context(|| format!("number in {value}"))?;
    Ok(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => bail!("unit of {value}"),
    })
}

/// `true` when wrk is installed.
pub fn available() -> bool {
    Command::new("wrk")
        .arg("-v")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("wrk"))
}

pub fn exists(script: &str) -> bool {
    Path::new(&crate::workspace_root().join("bench").join(script)).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_summary() {
        let text = "Running 5s test @ http://127.0.0.1:1/api/ping
  1 threads and 64 connections
  Latency Distribution
     50%  620.00us
     75%  800.00us
     90%    1.00ms
     99%    1.50ms
  398000 requests in 5.00s, 50.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 1000
Requests/sec:  79600.00
";
        let r = parse(text).unwrap_or_default();
        assert_eq!(r.requests, 398_000);
        assert!((r.p50_ms - 0.62).abs() < 1e-9 && (r.p99_ms - 1.5).abs() < 1e-9);
        assert!((r.rps - 79_600.0).abs() < 1e-9);
        assert!((r.ok_rps - 79_400.0).abs() < 1e-6);
        assert_eq!((r.non_2xx, r.socket_errors), (1000, 3));
    }
}
