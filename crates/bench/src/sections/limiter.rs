//! 1. Limiter cost: `GET /api/ping` with the Redis limiter vs rate limiting disabled, one hot
//!    client and many distinct clients. 2. The backend's ceiling: `redis-benchmark` running the
//!    limiter's own script on the node owning the hot client's slot. 3. Soak: many distinct
//!    clients for six 10 s slices on a fresh api per mode (memory, redis): req/s must hold and
//!    RSS stay bounded.

use super::{api_rss, prometheus_sum};
use crate::report::Report;
use crate::resources::{process_cpu_secs, redis_cpu_secs};
use crate::stack::{Api, Stack, HIGH_LIMIT};
use crate::stats::median;
use crate::wrk::{self, WrkResult};
use crate::Plan;
use anyhow::{bail, Context};
use cacheserver_testkit::redis_cli;
use std::process::Command;

const CONNS: usize = 64;

/// The apis compared: the same binary with the limiter off, deciding in Redis (batched), and the
/// naive limiter (`batching: false`: one Lua call per request) on the same cluster. Another
/// build (`--config-dir`) that has no `rate_limit.batching` runs without the naive one.
async fn start_apis(stack: &Stack, report: &mut Report) -> anyhow::Result<(Api, Api, Option<Api>)> {
    let off = stack
        .api(
            "api-limiter-off",
            0,
            &[("APP__API__RATE_LIMIT__ENABLED", "false")],
        )
        .await?;
    let on = stack
        .api(
            "api-limiter-redis",
            0,
            &[
                ("APP__API__RATE_LIMIT__STORAGE_TYPE", "redis"),
                ("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", HIGH_LIMIT),
                ("APP__API__RATE_LIMIT__REQUESTS_PER_HOUR", HIGH_LIMIT),
                ("APP__API__RATE_LIMIT__TRUSTED_PROXIES", "127.0.0.1"),
            ],
        )
        .await?;
    let naive = stack
        .api(
            "api-limiter-naive",
            0,
            &[
                ("APP__API__RATE_LIMIT__STORAGE_TYPE", "redis"),
                ("APP__API__RATE_LIMIT__BATCHING", "false"),
                ("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", HIGH_LIMIT),
                ("APP__API__RATE_LIMIT__REQUESTS_PER_HOUR", HIGH_LIMIT),
                ("APP__API__RATE_LIMIT__TRUSTED_PROXIES", "127.0.0.1"),
            ],
        )
        .await;
    let naive = match naive {
        Ok(naive) => Some(naive),
        Err(e) if stack.other_build() => {
            report.info(
                "1 limiter",
                "naive limiter",
                format!("not run: this build refused `rate_limit.batching` ({e:#})")
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            );
            None
        }
        Err(e) => return Err(e),
    };
    Ok((off, on, naive))
}

pub async fn run(stack: &Stack, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let ceiling = redis_ceiling(stack, plan)?;
    report.info(
        "2 backend",
        "redis-benchmark EVALSHA limiter script, hot key, 50 clients",
        format!("{ceiling:.0} calls/s"),
    );
    let (off, on, naive) = start_apis(stack, report).await?;
    // Warm-up: connections, script cache, allocator.
    let mut all: Vec<&Api> = vec![&off, &on];
    all.extend(naive.as_ref());
    for api in all.iter().copied().filter(|_| plan.warm_up) {
        wrk::run(&ping(api), Some("ping_many.lua"), CONNS, plan.load)?;
    }
    for (label, script, goal) in [
        ("one hot client", None, 0.95),
        ("many clients", Some("ping_many.lua"), 0.80),
    ] {
        // The naive limiter runs beside them only with many clients, where batching matters.
        let apis: &[&Api] = if script.is_some() { &all } else { &all[..2] };
        let (medians, cpu) = alternate(stack, apis, script, plan)?;
        let (off_r, on_r) = (medians[0], medians[1]);
        compare(report, label, &off_r, &on_r, goal);
        if let (Some(naive_r), Some(naive_cpu)) = (medians.get(2), cpu.get(2)) {
            report.info(
                "1 limiter",
                &format!("{label}: naive limiter (one Lua call per request)"),
                format!(
                    "{:.0} req/s, p99 {:.2} ms, CPU µs/request api {:.1} cluster {:.1}",
                    naive_r.ok_rps,
                    naive_r.p99_ms,
                    naive_cpu.api_us(),
                    naive_cpu.cluster_us()
                ),
            );
            report.info(
                "1 limiter",
                &format!("{label}: req/s ratio batched / naive limiter (what batching buys)"),
                format!("{:.2}", on_r.ok_rps / naive_r.ok_rps.max(1.0)),
            );
        }
        report.info(
            "1 limiter",
            &format!("{label}: CPU µs per request: api off / api on / cluster (6 nodes, on)"),
            format!(
                "{:.1} / {:.1} / {:.1}",
                cpu[0].api_us(),
                cpu[1].api_us(),
                cpu[1].cluster_us()
            ),
        );
        if script.is_some() {
            report.info(
                "2 backend",
                "api rate-limited req/s (many clients) / redis-benchmark ceiling",
                format!("{:.2}", on_r.ok_rps / ceiling.max(1.0)),
            );
        }
    }
    check_redis_decided(stack, &on, report).await?;
    api_rss(report, &on, "the ping loads (Redis limiter)");
    drop(all);
    drop((off, on, naive));
    for mode in ["memory", "redis"] {
        soak(stack, plan, report, mode).await?;
    }
    Ok(())
}

/// Many distinct clients on a fresh api limiting in `mode`: req/s per slice and RSS at the end.
async fn soak(stack: &Stack, plan: &Plan, report: &mut Report, mode: &str) -> anyhow::Result<()> {
    let (slices, slice) = if plan.smoke {
        (2, std::time::Duration::from_secs(1))
    } else {
        (6, std::time::Duration::from_secs(10))
    };
    let api = stack
        .api(
            &format!("api-soak-{mode}"),
            0,
            &[
                ("APP__API__RATE_LIMIT__STORAGE_TYPE", mode),
                ("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", HIGH_LIMIT),
                ("APP__API__RATE_LIMIT__REQUESTS_PER_HOUR", HIGH_LIMIT),
                ("APP__API__RATE_LIMIT__TRUSTED_PROXIES", "127.0.0.1"),
            ],
        )
        .await?;
    let mut rps = Vec::with_capacity(slices);
    for _ in 0..slices {
        rps.push(wrk::run(&ping(&api), Some("ping_many.lua"), CONNS, slice)?.ok_rps);
    }
    let shown: Vec<String> = rps.iter().map(|r| format!("{:.1}k", r / 1000.0)).collect();
    let section = "3 limiter soak";
    report.info(
        section,
        &format!("{mode}: many clients, req/s per {}s slice", slice.as_secs()),
        shown.join(" → "),
    );
    let (first, last) = (rps[0], rps[rps.len() - 1]);
    let held = last / first.max(1.0);
    report.goal(
        section,
        &format!("{mode}: last slice / first"),
        format!("{held:.2}"),
        "≥ 0.90",
        held >= 0.90,
    );
    let rss = api.proc.rss_mib().unwrap_or(0.0);
    report.goal(
        section,
        &format!("{mode}: api RSS after {}s", slice.as_secs() * slices as u64),
        format!("{rss:.1} MB"),
        "≤ 50 MB",
        rss <= 50.0,
    );
    let evicted = super::prometheus_sum(stack, &api, "ratelimit_evicted_clients_total", "").await;
    report.info(
        section,
        &format!("{mode}: clients evicted from local state"),
        format!("{evicted:.0}"),
    );
    Ok(())
}

/// CPU used during some wrk runs: the api's and the cluster's (all six nodes), per request. The
/// cluster shares the machine's cores with the api and wrk, so its CPU per request bounds what
/// the limiter can reach against the limiter-off api on this machine.
#[derive(Debug, Clone, Copy, Default)]
struct CpuPerRequest {
    api_secs: f64,
    cluster_secs: f64,
    requests: u64,
}

impl CpuPerRequest {
    fn api_us(&self) -> f64 {
        self.api_secs * 1e6 / self.requests.max(1) as f64
    }

    fn cluster_us(&self) -> f64 {
        self.cluster_secs * 1e6 / self.requests.max(1) as f64
    }
}

fn cpu_now(stack: &Stack, api: &Api) -> (f64, f64) {
    let api_secs = api
        .proc
        .pid()
        .and_then(process_cpu_secs)
        .unwrap_or_default();
    let cluster = (0..6).map(|i| redis_cpu_secs(stack.cluster.node(i))).sum();
    (api_secs, cluster)
}

/// Off, on, off, on, …: each configuration sees the same background noise. Medians, and the CPU
/// per request over all runs of each configuration, in the order of `apis`.
fn alternate(
    stack: &Stack,
    apis: &[&Api],
    script: Option<&str>,
    plan: &Plan,
) -> anyhow::Result<(Vec<WrkResult>, Vec<CpuPerRequest>)> {
    let mut runs: Vec<Vec<WrkResult>> = vec![Vec::new(); apis.len()];
    let mut cpu = vec![CpuPerRequest::default(); apis.len()];
    for _ in 0..plan.rounds {
        for (i, api) in apis.iter().enumerate() {
            let before = cpu_now(stack, api);
            let result = wrk::run(&ping(api), script, CONNS, plan.load)?;
            let after = cpu_now(stack, api);
            cpu[i].api_secs += after.0 - before.0;
            cpu[i].cluster_secs += after.1 - before.1;
            cpu[i].requests += result.requests;
            runs[i].push(result);
        }
    }
    Ok((runs.iter().map(|r| median_of(r)).collect(), cpu))
}

/// The run with the median req/s (its latencies come with it).
fn median_of(runs: &[WrkResult]) -> WrkResult {
    let m = median(&runs.iter().map(|r| r.ok_rps).collect::<Vec<_>>());
    runs.iter()
        .copied()
        .find(|r| r.ok_rps == m)
        .unwrap_or_default()
}

fn compare(report: &mut Report, label: &str, off: &WrkResult, on: &WrkResult, goal: f64) {
    let fmt = |r: &WrkResult| {
        format!(
            "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
            r.ok_rps, r.p50_ms, r.p99_ms
        )
    };
    report.info("1 limiter", &format!("{label}: limiter off"), fmt(off));
    report.info("1 limiter", &format!("{label}: Redis limiter"), fmt(on));
    let ratio = on.ok_rps / off.ok_rps.max(1.0);
    report.goal(
        "1 limiter",
        &format!("{label}: req/s ratio Redis limiter / off"),
        format!("{ratio:.2}"),
        &format!("≥ {goal:.2}"),
        ratio >= goal,
    );
    let overhead = on.p99_ms - off.p99_ms;
    report.goal(
        "1 limiter",
        &format!("{label}: p99 overhead"),
        format!("{overhead:.2} ms"),
        "< 1 ms",
        overhead < 1.0,
    );
    if on.non_2xx > 0 || on.socket_errors > 0 {
        report.note(format!(
            "{label}: {} non-2xx and {} socket errors with the Redis limiter",
            on.non_2xx, on.socket_errors
        ));
    }
}

/// The Redis limiter must really have decided in Redis (not failed open).
async fn check_redis_decided(stack: &Stack, on: &Api, report: &mut Report) -> anyhow::Result<()> {
    let metric = "ratelimit_decisions_total";
    let redis = prometheus_sum(stack, on, metric, "backend=\"redis\"").await;
    let failopen = prometheus_sum(stack, on, metric, "backend=\"fail_open\"").await;
    if redis <= 0.0 {
        bail!("the Redis limiter decided nothing in Redis ({failopen} failed open)");
    }
    report.info(
        "1 limiter",
        "decisions made in Redis / failed open",
        format!("{redis:.0} / {failopen:.0}"),
    );
    // Each call costs Redis far more than each client in it: the batch size says how well the
    // per-call cost is shared (both loads together).
    let calls = prometheus_sum(stack, on, "ratelimit_redis_calls_total", "").await;
    report.info(
        "1 limiter",
        "requests decided in Redis per Lua call",
        format!("{:.1}", redis / calls.max(1.0)),
    );
    Ok(())
}

/// `redis-benchmark` EVALSHA of the limiter script with the api's key shape, on the slot owner.
fn redis_ceiling(stack: &Stack, plan: &Plan) -> anyhow::Result<f64> {
    let [minute, hour] = cacheserver_api::ratelimit::top_level_keys([127, 0, 0, 1].into(), 60);
    let node = stack.cluster.master_for_key(&minute);
    let port = stack.cluster.node(node).port();
    let sha = redis_cli(
        port,
        &["SCRIPT", "LOAD", cacheserver_api::ratelimit::LUA_SCRIPT],
    )
    .map_err(anyhow::Error::msg)?;
    // The hot client's bucket hashes; the bench's own field in them.
    let output = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-c", "50", "-q"])
        .args(["-n", &plan.redis_requests.to_string()])
        .args(["EVALSHA", &sha, "2", &minute, &hour])
        // ARGV: ttls, then one client's field, limits and units (the batch script, a batch of 1).
        .args(["61", "3601", "bench", HIGH_LIMIT, HIGH_LIMIT, "1"])
        .output()
        .context("run redis-benchmark")?;
    let text = String::from_utf8_lossy(&output.stdout);
    // `-q` prints progress with \r, then `EVALSHA ...: 41152.26 requests per second, p50=...`.
    text.rsplit(['\r', '\n'])
        .find_map(|l| {
            let (head, _) = l.split_once(" requests per second")?;
            head.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .with_context(|| format!("unexpected redis-benchmark output: {text}"))
}

fn ping(api: &Api) -> String {
    format!("{}/api/ping", api.base)
}
