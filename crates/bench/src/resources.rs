//! What a process and a Redis cost: CPU seconds from `/proc/<pid>/stat`, Redis memory and CPU from
//! `INFO`. Used the same way for our worker and BullMQ's, so both sides are measured alike.

use cacheserver_testkit::RedisServer;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// CPU seconds (user + system) a process has used so far.
pub fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// Kernel clock ticks per second (`/proc` CPU times are in these).
pub fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A numeric field of `INFO <section>` (e.g. `memory` / `used_memory`).
pub fn redis_info(server: &RedisServer, section: &str, field: &str) -> Option<f64> {
    let text = cacheserver_testkit::redis_cli(server.port(), &["INFO", section]).ok()?;
    let prefix = format!("{field}:");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))?
        .parse()
        .ok()
}

/// Bytes Redis holds for data (and clients): `used_memory`.
pub fn redis_used_memory(server: &RedisServer) -> f64 {
    redis_info(server, "memory", "used_memory").unwrap_or(0.0)
}

/// CPU seconds the Redis process has used (all its threads, user + system).
pub fn redis_cpu_secs(server: &RedisServer) -> f64 {
    ["used_cpu_user", "used_cpu_sys"]
        .iter()
        .filter_map(|f| redis_info(server, "cpu", f))
        .sum()
}

/// CPU of an idle worker and of its Redis over one window, in % of one core.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdleCpu {
    pub worker_pct: f64,
    pub redis_pct: f64,
}

/// Sample worker `pid` and `redis` before and after `window` (the worker has no jobs).
pub async fn idle_cpu(pid: u32, redis: &RedisServer, window: Duration) -> Option<IdleCpu> {
    let (worker0, redis0) = (process_cpu_secs(pid)?, redis_cpu_secs(redis));
    let started = std::time::Instant::now();
    tokio::time::sleep(window).await;
    let secs = started.elapsed().as_secs_f64();
    let (worker1, redis1) = (process_cpu_secs(pid)?, redis_cpu_secs(redis));
    Some(IdleCpu {
        worker_pct: 100.0 * (worker1 - worker0) / secs,
        redis_pct: 100.0 * (redis1 - redis0) / secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_is_readable() {
        let secs = process_cpu_secs(std::process::id()).unwrap();
        assert!(secs >= 0.0);
    }
}
