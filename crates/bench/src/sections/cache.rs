//! The response cache (`api.cache`, README "Response cache"): `GET /api/queues` with 64
//! connections on an api caching it (the hit path) vs one with the cache off, alternated in one
//! run; the hit path vs `/api/ping` (the cheapest route); the jobqueue Redis commands/s each
//! load causes; the cluster CPU per hit. Stampede: 500 concurrent requests on a key a write just
//! invalidated → how many reached the handler.

use super::{api_rss, prometheus_sum};
use crate::report::Report;
use crate::resources::{process_cpu_secs, redis_cpu_secs, redis_info};
use crate::stack::{Api, Stack};
use crate::stats::median;
use crate::wrk::{self, WrkResult};
use crate::Plan;
use anyhow::{bail, Context};

const CONNS: usize = 64;
const SECTION: &str = "7 cache";
const STAMPEDE: usize = 500;

pub async fn run(stack: &Stack, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    stack.flush_jobqueue();
    // Rate limiting off in both: the comparison is the cache alone.
    let off = stack
        .api(
            "api-cache-off",
            0,
            &[
                ("APP__API__RATE_LIMIT__ENABLED", "false"),
                ("APP__API__CACHE__ENABLED", "false"),
            ],
        )
        .await?;
    let on = stack
        .api(
            "api-cache-on",
            0,
            &[("APP__API__RATE_LIMIT__ENABLED", "false")],
        )
        .await?;
    wait_for_hit(stack, &on).await?;
    if plan.warm_up {
        for api in [&off, &on] {
            wrk::run(&queues(api), None, CONNS, plan.load)?;
        }
    }
    let mut runs: [Vec<Load>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..plan.rounds {
        runs[0].push(load(stack, plan, &off, &queues(&off))?);
        runs[1].push(load(stack, plan, &on, &queues(&on))?);
        runs[2].push(load(stack, plan, &on, &format!("{}/api/ping", on.base))?);
    }
    let [off_r, on_r, ping_r] = runs.map(|r| median_of(&r));
    let fmt = |r: &WrkResult| {
        format!(
            "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
            r.ok_rps, r.p50_ms, r.p99_ms
        )
    };
    report.info(SECTION, "GET /api/queues, cache off", fmt(&off_r.wrk));
    report.info(SECTION, "GET /api/queues, cached (hits)", fmt(&on_r.wrk));
    report.info(SECTION, "GET /api/ping (same api)", fmt(&ping_r.wrk));
    let ratio = on_r.wrk.ok_rps / off_r.wrk.ok_rps.max(1.0);
    report.goal(
        SECTION,
        "req/s ratio cached / cache off",
        format!("{ratio:.2}"),
        "≥ 5",
        ratio >= 5.0,
    );
    // What bounds the row above on this machine: a hit goes through the same HTTP stack as
    // ping, so cached / off cannot pass ping / off however cheap the cache makes a hit.
    report.info(
        SECTION,
        "req/s ratio ping / cache off (the most cached / off can reach here)",
        format!("{:.2}", ping_r.wrk.ok_rps / off_r.wrk.ok_rps.max(1.0)),
    );
    let vs_ping = on_r.wrk.ok_rps / ping_r.wrk.ok_rps.max(1.0);
    report.goal(
        SECTION,
        "req/s ratio cached hit / ping",
        format!("{vs_ping:.2}"),
        "≥ 0.90",
        vs_ping >= 0.9,
    );
    report.info(
        SECTION,
        "jobqueue Redis commands/s: cache off / cached",
        format!(
            "{:.0} / {:.0}",
            off_r.jobqueue_cmds_per_s, on_r.jobqueue_cmds_per_s
        ),
    );
    report.info(
        SECTION,
        "CPU µs per request: api off / api cached / api ping / cluster per hit (6 nodes)",
        format!(
            "{:.1} / {:.1} / {:.1} / {:.1}",
            off_r.api_us, on_r.api_us, ping_r.api_us, on_r.cluster_us
        ),
    );
    report.info(
        SECTION,
        "load generator (wrk, one thread) CPU in cores: cache off / cached / ping",
        format!(
            "{:.2} / {:.2} / {:.2}",
            off_r.wrk.cores, on_r.wrk.cores, ping_r.wrk.cores
        ),
    );
    let hits = prometheus_sum(stack, &on, "cache_requests_total", "result=\"hit\"").await;
    let all = prometheus_sum(stack, &on, "cache_requests_total", "route=\"/api/queues\"").await;
    report.info(
        SECTION,
        "hit ratio of /api/queues over the loads",
        format!("{:.3}", hits / all.max(1.0)),
    );
    stampede(stack, &on, report).await?;
    api_rss(report, &on, "the cache loads");
    Ok(())
}

/// One wrk load with what it cost: api and cluster CPU per request, jobqueue commands/s.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    wrk: WrkResult,
    api_us: f64,
    cluster_us: f64,
    jobqueue_cmds_per_s: f64,
}

fn load(stack: &Stack, plan: &Plan, api: &Api, url: &str) -> anyhow::Result<Load> {
    let cpu = |api: &Api| {
        let a = api
            .proc
            .pid()
            .and_then(process_cpu_secs)
            .unwrap_or_default();
        let c: f64 = (0..6).map(|i| redis_cpu_secs(stack.cluster.node(i))).sum();
        (a, c)
    };
    let commands =
        || redis_info(&stack.jobqueue, "stats", "total_commands_processed").unwrap_or(0.0);
    let (a0, c0, j0) = {
        let (a, c) = cpu(api);
        (a, c, commands())
    };
    let started = std::time::Instant::now();
    let wrk = wrk::run(url, None, CONNS, plan.load)?;
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    let (a1, c1) = cpu(api);
    let j1 = commands();
    let n = wrk.requests.max(1) as f64;
    Ok(Load {
        wrk,
        api_us: (a1 - a0) * 1e6 / n,
        cluster_us: (c1 - c0) * 1e6 / n,
        jobqueue_cmds_per_s: (j1 - j0) / secs,
    })
}

fn median_of(runs: &[Load]) -> Load {
    let m = median(&runs.iter().map(|r| r.wrk.ok_rps).collect::<Vec<_>>());
    runs.iter()
        .copied()
        .find(|r| r.wrk.ok_rps == m)
        .unwrap_or_default()
}

fn queues(api: &Api) -> String {
    format!("{}/api/queues", api.base)
}

/// The cluster client connects lazily: wait until `/api/queues` is a HIT.
async fn wait_for_hit(stack: &Stack, api: &Api) -> anyhow::Result<()> {
    for _ in 0..300 {
        let resp = stack.http().get(queues(api)).send().await?;
        if resp.headers().get("x-cache").is_some_and(|v| v == "HIT") {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    bail!("GET /api/queues never became a HIT on the cached api")
}

/// A write invalidates `/api/queues`, then 500 concurrent GETs: how many reached the handler
/// (misses counted by the api; coalesced requests count as hits).
async fn stampede(stack: &Stack, api: &Api, report: &mut Report) -> anyhow::Result<()> {
    let misses = || prometheus_sum(stack, api, "cache_requests_total", "result=\"miss\"");
    let resume = stack
        .http()
        .post(format!("{}/api/queues/dm-jobqueue/resume", api.base))
        .send()
        .await
        .context("resume")?;
    if !resume.status().is_success() {
        bail!("resume answered {}", resume.status());
    }
    let before = misses().await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(STAMPEDE)
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let url = queues(api);
    let answers = futures::future::join_all((0..STAMPEDE).map(|_| client.get(&url).send())).await;
    let ok = answers
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.status().is_success()))
        .count();
    let calls = misses().await - before;
    report.info(
        SECTION,
        &format!("stampede: {STAMPEDE} concurrent GETs after an invalidation: 2xx answers"),
        format!("{ok}"),
    );
    report.goal(
        SECTION,
        "stampede: handler calls (misses)",
        format!("{calls:.0}"),
        "≤ 2",
        calls <= 2.0,
    );
    Ok(())
}
