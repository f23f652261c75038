//! One clock for both job queues: the rate at which *recorded completions* grow (our
//! `{q}:finished` zset, BullMQ's `bull:<queue>:completed` zset), polled every 2 ms from this
//! process, with the CPU the workers and their Redis spent over the same window.

use crate::resources::process_cpu_secs;
use anyhow::{bail, Context};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(2);

/// A drain of `n` due jobs, from the first completion seen to the last.
#[derive(Debug, Clone, Copy, Default)]
pub struct Drain {
    /// Completions per second between the first poll that saw one and the poll that saw all.
    pub rate: f64,
    /// CPU (user + system) of the worker process(es) per job over that window, µs.
    pub worker_us: f64,
    /// CPU of the queue's Redis (`INFO cpu`) per job over that window, µs.
    pub redis_us: f64,
}

impl Drain {
    pub fn cpu_cell(&self) -> String {
        format!(
            "{:.0} + {:.0} µs CPU/job (worker + Redis)",
            self.worker_us, self.redis_us
        )
    }
}

struct Sample {
    at: Instant,
    done: usize,
    worker: f64,
    redis: f64,
}

/// Poll `ZCARD key` on the Redis at `port` until it reaches `n` (bounded by `within`); CPU of
/// `pids` from `/proc/<pid>/stat`. Fails unless exactly `n` completions are recorded.
pub async fn measure(
    port: u16,
    key: &str,
    n: usize,
    within: Duration,
    pids: &[u32],
) -> anyhow::Result<Drain> {
    measure_keys(port, &[key], n, within, pids).await
}

/// [`measure`] for jobs spread over several queues drained at once: their completions added up.
pub async fn measure_keys(
    port: u16,
    keys: &[&str],
    n: usize,
    within: Duration,
    pids: &[u32],
) -> anyhow::Result<Drain> {
    let key = keys.join(" + ");
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .context("connect to the queue's Redis")?;
    let deadline = Instant::now() + within;
    let mut first: Option<Sample> = None;
    loop {
        let mut done = 0;
        for k in keys {
            let count: usize = redis::cmd("ZCARD").arg(k).query_async(&mut conn).await?;
            done += count;
        }
        if done > 0 && (first.is_none() || done >= n) {
            let sample = Sample {
                at: Instant::now(),
                done,
                worker: pids.iter().filter_map(|&p| process_cpu_secs(p)).sum(),
                redis: redis_cpu(&mut conn).await?,
            };
            if done >= n {
                if done != n {
                    bail!("{key}: {done} completions recorded for {n} jobs");
                }
                let first = first.unwrap_or(Sample {
                    done: n - 1,
                    ..sample
                });
                let jobs = (n - first.done.min(n - 1)) as f64;
                let secs = sample.at.duration_since(first.at).as_secs_f64().max(0.001);
                return Ok(Drain {
                    rate: jobs / secs,
                    worker_us: 1e6 * (sample.worker - first.worker).max(0.0) / jobs,
                    redis_us: 1e6 * (sample.redis - first.redis).max(0.0) / jobs,
                });
            }
            first = Some(sample);
        }
        if Instant::now() >= deadline {
            bail!("{key}: {done} of {n} jobs completed within {within:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn redis_cpu(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
    Ok(["used_cpu_user:", "used_cpu_sys:"]
        .iter()
        .filter_map(|field| {
            info.lines()
                .find_map(|l| l.trim().strip_prefix(field))?
                .parse::<f64>()
                .ok()
        })
        .sum())
}
