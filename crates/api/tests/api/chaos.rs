//! Chaos routes against real Redis: a 3+3 cluster for rate limiting and a single Redis for the
//! jobqueue. "Closed" is checked on the Redis side with `CLIENT LIST`, not by asking the client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{eventually, header, seeds, spawn_app, TestApp};
use cacheserver_testkit::{redis_cli, RedisCluster, RedisServer};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const SECS: Duration = Duration::from_secs(1);

/// Ids of the ordinary client connections a Redis server holds: not replication links (flags
/// S/M) and not the `redis-cli` asking. In these tests only the api connects, so these are its.
fn client_ids(port: u16) -> BTreeSet<u64> {
    let list = redis_cli(port, &["CLIENT", "LIST"]).unwrap_or_default();
    list.lines()
        .filter(|line| !line.contains("cmd=client|list"))
        .filter(|line| {
            field(line, "flags").is_some_and(|flags| !flags.contains('S') && !flags.contains('M'))
        })
        .filter_map(|line| field(line, "id")?.parse().ok())
        .collect()
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// `(node port, client id)` over every node of the cluster.
fn cluster_client_ids(cluster: &RedisCluster) -> BTreeSet<(u16, u64)> {
    (0..6)
        .map(|i| cluster.node(i).port())
        .flat_map(|port| client_ids(port).into_iter().map(move |id| (port, id)))
        .collect()
}

async fn reset(app: &TestApp, body: Option<Value>) -> reqwest::Response {
    let req = app.http.post(app.url("/chaos/redis-reset"));
    let req = match body {
        Some(body) => req.json(&body),
        None => req,
    };
    req.send().await.expect("reset request")
}

async fn chaos_status(app: &TestApp) -> Value {
    let resp = app.get("/chaos/status").await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Register a job through the api, as a user would; returns the HTTP status.
async fn register_job(app: &TestApp, message: &str) -> u16 {
    app.http
        .post(app.url("/api/dm-jobqueue/register"))
        .json(&json!({"message": message, "delay_seconds": 60, "max_retry": 0}))
        .send()
        .await
        .expect("register request")
        .status()
        .as_u16()
}

#[tokio::test]
async fn reset_closes_every_redis_connection_and_the_next_call_reconnects() {
    let cluster = RedisCluster::start();
    let jobqueue = RedisServer::start();
    let seeds = seeds(&cluster);
    let app = spawn_app(&[
        ("APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS", &seeds),
        ("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", &jobqueue.addr()),
        ("APP__API__RATE_LIMIT__STORAGE_TYPE", "redis"),
    ])
    .await;
    eventually(10 * SECS, "the limiter on Redis", || async {
        app.limiter_backend().await == "redis"
    })
    .await;
    assert_eq!(register_job(&app, "before the reset").await, 201);
    let cluster_before = cluster_client_ids(&cluster);
    let jobqueue_before = client_ids(jobqueue.port());
    assert!(!cluster_before.is_empty() && !jobqueue_before.is_empty());
    let status = chaos_status(&app).await;
    assert_eq!(status["redis"]["connected"], true);
    assert_eq!(status["redis"]["last_reset"], Value::Null);

    let resp = reset(&app, None).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "redis_connections_reset");
    let closed = body["connections_closed"].as_u64().unwrap();
    // fred counts its command connections (at least one per master); its per-client discovery
    // socket is closed as well but not counted.
    let listed = (cluster_before.len() + jobqueue_before.len()) as u64;
    assert!(
        (jobqueue_before.len() as u64 + 3..=listed).contains(&closed),
        "closed {closed}, listed by Redis {listed}"
    );
    assert!(chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap()).is_ok());

    // Redis itself no longer lists any of the old connections.
    eventually(5 * SECS, "the old connections closed", || async {
        let (cluster_now, jobqueue_now) = (cluster_client_ids(&cluster), client_ids(jobqueue.port()));
        if cluster_now.is_disjoint(&cluster_before) && jobqueue_now.is_disjoint(&jobqueue_before) {
            Ok(())
        } else {
            Err(format!(
                "cluster {cluster_now:?} (was {cluster_before:?}), jobqueue {jobqueue_now:?} (was {jobqueue_before:?})"
            ))
        }
    })
    .await;

    // The next calls reconnect by themselves: Redis decides the rate limit again and a job is
    // stored, each over new connections.
    eventually(
        10 * SECS,
        "reconnected: ping 200 with the limiter on Redis",
        || async {
            let resp = app.ping().await;
            resp.status() == 200 && app.limiter_backend().await == "redis"
        },
    )
    .await;
    assert_eq!(register_job(&app, "after the reset").await, 201);
    assert!(!cluster_client_ids(&cluster).is_empty());
    assert!(!client_ids(jobqueue.port()).is_empty());
    let status = chaos_status(&app).await;
    assert!(status["redis"]["last_reset"].is_string());
    assert!(status["redis"]["reconnects"].as_u64().unwrap() >= 1);
    assert_eq!(status["jobqueue"]["connected"], true);
    assert_eq!(status["jobqueue"]["reconnects"], 1);
}

#[tokio::test]
async fn resets_within_the_cooldown_get_429_unless_forced() {
    let app = spawn_app(&[("APP__CHAOS__COOLDOWN", "60s")]).await;
    let first = reset(&app, Some(json!({}))).await;
    assert_eq!(first.status(), 200);
    let second = reset(&app, None).await;
    assert_eq!(second.status(), 429);
    let retry_after: u64 = header(&second, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    let body: Value = second.json().await.unwrap();
    assert_eq!(body, json!({"code": 429, "message": "Too Many Requests"}));
    let forced = reset(&app, Some(json!({"force": true}))).await;
    assert_eq!(forced.status(), 200);
}

#[tokio::test]
async fn concurrent_resets_are_serialized() {
    let app = spawn_app(&[("APP__CHAOS__COOLDOWN", "60s")]).await;
    let (a, b) = tokio::join!(reset(&app, None), reset(&app, None));
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 429], "exactly one reset runs");
}

#[tokio::test]
async fn with_no_connections_nothing_is_closed() {
    // Rate limiting in memory, jobqueue never used: no Redis connection exists.
    let app = spawn_app(&[]).await;
    let body: Value = reset(&app, None).await.json().await.unwrap();
    assert_eq!(body["connections_closed"], 0);
    let status = chaos_status(&app).await;
    assert_eq!(
        status["redis"],
        json!({"connected": false, "connection_count": 0, "last_reset": null, "reconnects": 0})
    );
    assert_eq!(status["jobqueue"]["connection_count"], 0);
    assert!(status["jobqueue"]["last_reset"].is_string());
}

#[tokio::test]
async fn malformed_body_is_a_json_400() {
    let app = spawn_app(&[]).await;
    let resp = app
        .http
        .post(app.url("/chaos/redis-reset"))
        .header("Content-Type", "application/json")
        .body("{force")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 400);
}

#[tokio::test]
async fn disabled_chaos_answers_404() {
    let app = spawn_app(&[("APP__CHAOS__ENABLED", "false")]).await;
    for resp in [reset(&app, None).await, app.get("/chaos/status").await] {
        assert_eq!(resp.status(), 404);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], 404);
    }
}

#[tokio::test]
async fn token_is_required_when_configured() {
    let app = spawn_app(&[("APP__CHAOS__TOKEN", "s3cret")]).await;
    for auth in [None, Some("Bearer wrong"), Some("s3cret")] {
        let mut req = app.http.get(app.url("/chaos/status"));
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        assert_eq!(header(&resp, "www-authenticate"), "Bearer");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, json!({"code": 401, "message": "unauthorized"}));
    }
    let ok = |path: &str| {
        app.http
            .request(
                if path.ends_with("status") {
                    reqwest::Method::GET
                } else {
                    reqwest::Method::POST
                },
                app.url(path),
            )
            .header("Authorization", "Bearer s3cret")
            .send()
    };
    assert_eq!(ok("/chaos/status").await.unwrap().status(), 200);
    assert_eq!(ok("/chaos/redis-reset").await.unwrap().status(), 200);
}

#[tokio::test]
async fn chaos_routes_are_rate_limited() {
    let app = spawn_app(&[("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", "2")]).await;
    crate::common::pin_limiter_clock(&app);
    for _ in 0..2 {
        assert_eq!(app.get("/chaos/status").await.status(), 200);
    }
    let resp = app.get("/chaos/status").await;
    assert_eq!(resp.status(), 429);
    assert!(!header(&resp, "x-ratelimit-limit").is_empty());
}

#[tokio::test]
async fn status_is_a_pure_read() {
    let jobqueue = RedisServer::start();
    let app = spawn_app(&[("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", &jobqueue.addr())]).await;
    assert_eq!(register_job(&app, "first connection").await, 201);
    // Two resets, each followed by a reconnecting call, and no status read in between: both
    // comebacks are counted although nobody looked.
    for round in 0..2 {
        let resp = reset(&app, Some(json!({"force": true}))).await;
        assert_eq!(resp.status(), 200, "reset {round}");
        assert_eq!(register_job(&app, "after a reset").await, 201);
    }
    let first = chaos_status(&app).await;
    let second = chaos_status(&app).await;
    assert_eq!(first["jobqueue"]["reconnects"], 2, "{first}");
    assert_eq!(first, second, "a status read changed the status");
}
