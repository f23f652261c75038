//! 7. Reconnect: time from Redis (single, then the whole cluster) accepting connections again to
//!    the first successful api operation, polled every few ms by a client that never stopped
//!    trying; and the limiter's latency while the master owning the hot client's slot fails over.

use crate::report::Report;
use crate::stack::{Api, Stack, HIGH_LIMIT};
use crate::stats;
use crate::Plan;
use anyhow::bail;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(5);
/// How long Redis stays down before it is started again.
const OUTAGE: Duration = Duration::from_secs(1);

pub async fn run(stack: &mut Stack, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    single(stack, report).await?;
    cluster_restart(stack, report).await?;
    failover(stack, plan, report).await
}

/// Successful probes, by time; the prober stops when `stop` is set.
#[derive(Default)]
struct Probe {
    ok_at: Mutex<Vec<Instant>>,
    stop: AtomicBool,
}

impl Probe {
    fn first_ok_after(&self, t0: Instant) -> Option<Duration> {
        let ok = self.ok_at.lock().ok()?;
        ok.iter().find(|t| **t >= t0).map(|t| t.duration_since(t0))
    }
}

/// Call `attempt` every `POLL` until stopped, recording when it succeeded.
fn start_probe<F, Fut>(attempt: F) -> Arc<Probe>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let probe = Arc::new(Probe::default());
    let p = probe.clone();
    tokio::spawn(async move {
        while !p.stop.load(Ordering::Relaxed) {
            let ok = tokio::time::timeout(Duration::from_secs(1), attempt())
                .await
                .unwrap_or(false);
            if ok {
                if let Ok(mut v) = p.ok_at.lock() {
                    v.push(Instant::now());
                }
            }
            tokio::time::sleep(POLL).await;
        }
    });
    probe
}

/// Wait (bounded) for the first success after `t0`.
async fn until_ok(probe: &Probe, t0: Instant) -> anyhow::Result<Duration> {
    let deadline = t0 + Duration::from_secs(20);
    loop {
        if let Some(d) = probe.first_ok_after(t0) {
            probe.stop.store(true, Ordering::Relaxed);
            return Ok(d);
        }
        if Instant::now() >= deadline {
            probe.stop.store(true, Ordering::Relaxed);
            bail!("no successful call within 20 s of Redis coming back");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn single(stack: &mut Stack, report: &mut Report) -> anyhow::Result<()> {
    let api = stack
        .api(
            "api-reconnect-single",
            0,
            &[("APP__API__RATE_LIMIT__ENABLED", "false")],
        )
        .await?;
    let (http, url) = (
        stack.http().clone(),
        format!("{}/api/dm-jobqueue/register", api.base),
    );
    let body = serde_json::json!({"message": "reconnect", "delay_seconds": 3600});
    let probe = start_probe(move || {
        let req = http.post(url.clone()).json(&body).send();
        async move { req.await.is_ok_and(|r| r.status().as_u16() == 201) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.jobqueue.kill();
    tokio::time::sleep(OUTAGE).await;
    tokio::task::block_in_place(|| stack.jobqueue.restart());
    let took = until_ok(&probe, Instant::now()).await?;
    report.goal(
        "7 reconnect",
        "jobqueue Redis back → first 201 from register",
        format!("{} ms", took.as_millis()),
        "≤ 1 s",
        took <= Duration::from_secs(1),
    );
    Ok(())
}

/// A ping decided in Redis: the count moved (fail-open answers show the full limit).
async fn decided_in_redis(http: reqwest::Client, url: String) -> bool {
    let Ok(resp) = http.get(url).send().await else {
        return false;
    };
    let remaining = resp
        .headers()
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    resp.status().is_success() && remaining.is_some_and(|r| r.to_string() != HIGH_LIMIT)
}

async fn cluster_restart(stack: &mut Stack, report: &mut Report) -> anyhow::Result<()> {
    let api = stack
        .api(
            "api-reconnect-cluster",
            0,
            &[
                ("APP__API__RATE_LIMIT__STORAGE_TYPE", "redis"),
                ("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", HIGH_LIMIT),
                ("APP__API__RATE_LIMIT__REQUESTS_PER_HOUR", HIGH_LIMIT),
            ],
        )
        .await?;
    let (http, url) = (stack.http().clone(), format!("{}/api/ping", api.base));
    let probe = start_probe(move || decided_in_redis(http.clone(), url.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    if probe
        .first_ok_after(Instant::now() - Duration::from_millis(500))
        .is_none()
    {
        bail!("the api never decided in Redis before the cluster restart");
    }
    stack.cluster.kill_all();
    tokio::time::sleep(OUTAGE).await;
    tokio::task::block_in_place(|| restart_nodes(stack))?;
    let took = until_ok(&probe, Instant::now()).await?;
    report.goal(
        "7 reconnect",
        "whole cluster restarted (all nodes answer PING) → first ping decided in Redis",
        format!("{} ms", took.as_millis()),
        "≤ 1 s",
        took <= Duration::from_secs(1),
    );
    tokio::task::block_in_place(|| stack.cluster.wait_ok());
    Ok(())
}

/// Four clients ping for `plan.failover` while the master of 127.0.0.1's rate limit keys is SIGKILLed.
async fn failover(stack: &mut Stack, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let api = stack
        .api(
            "api-failover",
            0,
            &[
                ("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", HIGH_LIMIT),
                ("APP__API__RATE_LIMIT__REQUESTS_PER_HOUR", HIGH_LIMIT),
            ],
        )
        .await?;
    let clients: Vec<_> = (0..4).map(|_| pinger(stack, &api, plan.failover)).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let [key, _] = cacheserver_api::ratelimit::top_level_keys([127, 0, 0, 1].into(), 60);
    let victim = stack.cluster.master_for_key(&key);
    stack.cluster.node_mut(victim).kill();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for c in clients {
        let (l, e) = c.await?;
        latencies.extend(l);
        errors += e;
    }
    tokio::task::block_in_place(|| {
        stack.cluster.node_mut(victim).restart();
        stack.cluster.wait_ok();
    });
    report.info(
        "7 reconnect",
        &format!(
            "failover: {} pings, 4 clients, auto mode: p50 / max",
            latencies.len()
        ),
        format!(
            "{:.2} / {:.0} ms",
            stats::q(&latencies, 0.5),
            stats::max(&latencies)
        ),
    );
    let p99 = stats::q(&latencies, 0.99);
    report.goal(
        "7 reconnect",
        &format!("failover: p99 latency ({errors} errors)"),
        format!("{p99:.2} ms"),
        "< 10 ms",
        p99 < 10.0 && errors == 0,
    );
    Ok(())
}

/// One client pinging back to back for `length`: (latencies in ms, non-200 answers).
fn pinger(
    stack: &Stack,
    api: &Api,
    length: Duration,
) -> tokio::task::JoinHandle<(Vec<f64>, usize)> {
    let (http, url) = (stack.http().clone(), format!("{}/api/ping", api.base));
    tokio::spawn(async move {
        let (mut lat, mut errors) = (Vec::new(), 0);
        let end = Instant::now() + length;
        while Instant::now() < end {
            let t = Instant::now();
            let ok = http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            errors += usize::from(!ok);
        }
        (lat, errors)
    })
}

/// Start every cluster node again. testkit panics when a node's bus port is briefly held by some
/// client's ephemeral socket (the ports live in the ephemeral range), so retry a few times.
fn restart_nodes(stack: &mut Stack) -> anyhow::Result<()> {
    for i in 0..6 {
        let mut tries = 0;
        while std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            stack.cluster.node_mut(i).restart();
        }))
        .is_err()
        {
            tries += 1;
            if tries >= 5 {
                bail!("cluster node {i} did not restart (port held by another socket)");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(())
}
