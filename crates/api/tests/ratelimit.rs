//! Rate limiting against a real 3+3 Redis Cluster started by the test (or in memory where the
//! test says so). The limiter's clock is pinned: windows change when a test moves the clock,
//! never because the wall clock crossed a minute.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cacheserver_config::RateLimitRule;
use cacheserver_testkit::RedisCluster;
use common::{eventually, header, seeds, settings, spawn_app, spawn_app_with, within, TestApp};
use futures::StreamExt;
use std::collections::HashMap;
use std::time::Duration;

const SECS: Duration = Duration::from_secs(1);

/// A start of a minute near now (keys then expire at sensible times), plus a few seconds.
fn pinned_time() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    now / 60 * 60 + 5
}

fn pin(app: &TestApp, unix_secs: u64) {
    app.state.limiter.clock().pin(unix_secs);
}

/// Keys of the cluster matching `pattern`, looked up on every node (replicas included).
fn find_keys(cluster: &RedisCluster, pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = (0..6)
        .flat_map(|node| {
            let port = cluster.node(node).port().to_string();
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &port, "--scan", "--pattern", pattern])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            out.lines().map(str::to_owned).collect::<Vec<_>>()
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// `redis-cli -c` on the first node: follows MOVED to the key's master.
fn cluster_cli(cluster: &RedisCluster, args: &[&str]) -> String {
    let args: Vec<&str> = ["-c"].into_iter().chain(args.iter().copied()).collect();
    cacheserver_testkit::redis_cli(cluster.node(0).port(), &args).unwrap_or_default()
}

/// Field `field` of hash `key` as the cluster sees it.
fn redis_hget(cluster: &RedisCluster, key: &str, field: &str) -> Option<u64> {
    cluster_cli(cluster, &["HGET", key, field]).parse().ok()
}

/// The fields of every hash matching `pattern`.
fn hash_fields(cluster: &RedisCluster, pattern: &str) -> Vec<String> {
    find_keys(cluster, pattern)
        .iter()
        .flat_map(|key| {
            let fields = cluster_cli(cluster, &["HKEYS", key]);
            fields.lines().map(str::to_owned).collect::<Vec<_>>()
        })
        .collect()
}

/// The minute hash (of its bucket) counting `client` (`<ip>` or `<rule>:<id>`) at `unix_secs`.
fn minute_key(cluster: &RedisCluster, client: &str, unix_secs: u64) -> Option<String> {
    let pattern = format!("rl:{{*}}:m:{}", unix_secs / 60);
    find_keys(cluster, &pattern)
        .into_iter()
        .find(|key| redis_hget(cluster, key, client).is_some())
}

fn redis_count(cluster: &RedisCluster, client: &str, unix_secs: u64) -> Option<u64> {
    redis_hget(cluster, &minute_key(cluster, client, unix_secs)?, client)
}

/// Sum of the samples of `metric` whose labels contain every one of `labels`.
async fn metric(app: &TestApp, metric: &str, labels: &[&str]) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(metric) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait_for_redis(app: &TestApp) {
    assert!(
        eventually(10 * SECS, || async {
            app.limiter_backend().await == "redis"
        })
        .await,
        "limiter never used Redis"
    );
}

fn cluster_overrides(seeds: &str, extra: &[(&'static str, &'static str)]) -> Vec<(String, String)> {
    let mut v = vec![
        (
            "APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS".to_owned(),
            seeds.to_owned(),
        ),
        (
            "APP__API__RATE_LIMIT__STORAGE_TYPE".to_owned(),
            "redis".to_owned(),
        ),
    ];
    v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    v
}

async fn spawn(overrides: &[(String, String)]) -> TestApp {
    let pairs: Vec<(&str, &str)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    spawn_app(&pairs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_over_the_minute_limit_gets_429_with_headers() {
    let cluster = RedisCluster::start();
    let app = spawn(&cluster_overrides(
        &seeds(&cluster),
        &[("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", "60")],
    ))
    .await;
    let t = pinned_time();
    pin(&app, t);
    wait_for_redis(&app).await;

    for i in 1..=60u64 {
        let resp = app.ping().await;
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(header(&resp, "x-ratelimit-limit"), "60");
        assert_eq!(header(&resp, "x-ratelimit-remaining"), (60 - i).to_string());
        assert_eq!(header(&resp, "x-ratelimit-hour-limit"), "1000");
        assert_eq!(header(&resp, "x-ratelimit-reset"), "55", "pinned clock");
    }
    assert_eq!(
        redis_count(&cluster, "127.0.0.1", t),
        Some(60),
        "counted in Redis"
    );
    let resp = app.ping().await;
    assert_eq!(resp.status(), 429);
    for name in ["retry-after", "x-ratelimit-hour-remaining", "ratelimit"] {
        assert!(!header(&resp, name).is_empty(), "missing {name}");
    }
    assert_eq!(
        header(&resp, "ratelimit-policy"),
        "\"minute\";q=60;w=60, \"hour\";q=1000;w=3600"
    );
    assert_eq!(header(&resp, "x-ratelimit-remaining"), "0");
    assert_eq!(header(&resp, "x-ratelimit-hour-remaining"), "940");
    assert_eq!(header(&resp, "retry-after"), "55");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"code": 429, "message": "Too Many Requests"})
    );
    assert_eq!(
        redis_count(&cluster, "127.0.0.1", t),
        Some(60),
        "refused requests are not counted"
    );
    // Health and metrics are never limited.
    assert_eq!(app.get("/health").await.status(), 200);
    assert_eq!(app.get("/metrics").await.status(), 200);
    // The refusal after the first came from the local cache of exhausted windows.
    assert_eq!(app.ping().await.status(), 429);
    assert!(
        metric(
            &app,
            "ratelimit_decisions_total",
            &["backend=\"cached\"", "rule=\"default\""]
        )
        .await
            >= 1.0
    );
    // The next minute is free again.
    pin(&app, t + 60);
    let resp = app.ping().await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-ratelimit-remaining"), "59");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hour_limit_applies_across_minutes() {
    let cluster = RedisCluster::start();
    let app = spawn(&cluster_overrides(
        &seeds(&cluster),
        &[
            ("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", "100"),
            ("APP__API__RATE_LIMIT__REQUESTS_PER_HOUR", "3"),
        ],
    ))
    .await;
    let t = pinned_time() / 3600 * 3600;
    wait_for_redis(&app).await;
    for minute in 0..3 {
        pin(&app, t + minute * 60);
        assert_eq!(app.ping().await.status(), 200);
    }
    pin(&app, t + 200);
    let resp = app.ping().await;
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "x-ratelimit-hour-remaining"), "0");
    assert_eq!(header(&resp, "retry-after"), (3600 - 200).to_string());
    assert_eq!(
        header(&resp, "retry-after"),
        header(&resp, "x-ratelimit-hour-reset")
    );
    assert!(
        header(&resp, "ratelimit").starts_with("\"hour\";r=0"),
        "{}",
        header(&resp, "ratelimit")
    );
    pin(&app, t + 3600);
    assert_eq!(app.ping().await.status(), 200, "next hour");
}

/// Two api instances on one cluster, 1,000 clients sending at once through both: no client is
/// admitted beyond its minute or hour limit, and those that sent more get exactly the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_through_two_instances_get_exactly_their_limits() {
    const CLIENTS: usize = 1000;
    const PER_WINDOW: usize = 7;
    let cluster = RedisCluster::start();
    let overrides = cluster_overrides(
        &seeds(&cluster),
        &[
            ("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", "5"),
            ("APP__API__RATE_LIMIT__REQUESTS_PER_HOUR", "8"),
            ("APP__API__RATE_LIMIT__TRUSTED_PROXIES", "127.0.0.1"),
            // A debug build on a busy machine: no request may fail open for slowness.
            ("APP__API__RATE_LIMIT__REDIS_TIMEOUT", "5s"),
        ],
    );
    let a = spawn(&overrides).await;
    let b = spawn(&overrides).await;
    let t = pinned_time() / 3600 * 3600;
    for app in [&a, &b] {
        wait_for_redis(app).await;
    }
    // Minute 1: 5 of 7 pass. Minute 2: the hour has 3 left of 8.
    for (minute, wanted) in [(0, 5), (1, 3)] {
        for app in [&a, &b] {
            pin(app, t + minute * 60);
        }
        let requests = (0..CLIENTS).flat_map(|c| (0..PER_WINDOW).map(move |i| (c, i)));
        let statuses: Vec<(usize, u16)> = futures::stream::iter(requests)
            .map(|(c, i)| {
                let app = if i % 2 == 0 { &a } else { &b };
                let ip = format!("10.{}.{}.1", c / 256, c % 256);
                async move { (c, app.ping_as(&ip).await.status().as_u16()) }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        let mut passed: HashMap<usize, usize> = HashMap::new();
        for (client, status) in statuses {
            match status {
                200 => *passed.entry(client).or_default() += 1,
                429 => {}
                other => panic!("unexpected status {other}"),
            }
        }
        let wrong: Vec<_> = (0..CLIENTS)
            .map(|c| (c, passed.get(&c).copied().unwrap_or(0)))
            .filter(|&(_, n)| n != wanted)
            .take(10)
            .collect();
        assert!(
            wrong.is_empty(),
            "minute {minute}: clients with ≠ {wanted} passed: {wrong:?}"
        );
    }
    // Redis decided. (No request failed open: that would have let a client pass more than its
    // limit above. The metric cannot say it: the recorder is shared by the tests running in
    // this process, and one of them fails open on purpose.)
    for app in [&a, &b] {
        let redis = metric(app, "ratelimit_decisions_total", &["backend=\"redis\""]).await;
        assert!(redis > 0.0, "redis {redis}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_with_the_cluster_down_then_moves_to_redis() {
    let mut cluster = RedisCluster::reserve();
    let seeds = seeds(&cluster);
    let app = spawn_app(&[("APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS", &seeds)]).await;
    let t = pinned_time();
    pin(&app, t);
    // Serves at once, limited in memory.
    let resp = within(2 * SECS, "ping while Redis is down", app.ping()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-ratelimit-remaining"), "59");
    assert_eq!(app.limiter_backend().await, "memory");

    cluster.create();
    let moved = eventually(20 * SECS, || async {
        app.limiter_backend().await == "redis"
    })
    .await;
    assert!(
        moved,
        "limiter did not move to Redis after the cluster started"
    );
    assert_eq!(app.ping().await.status(), 200);
    assert!(
        redis_count(&cluster, "127.0.0.1", t).is_some(),
        "request counted in Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_cluster_falls_back_without_hanging() {
    let mut cluster = RedisCluster::start();
    let seeds = seeds(&cluster);
    let app = spawn_app(&[("APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS", &seeds)]).await;
    wait_for_redis(&app).await;
    assert_eq!(app.ping().await.status(), 200);

    cluster.kill_all();
    for i in 0..20 {
        let resp = within(2 * SECS, &format!("request {i}"), app.ping()).await;
        assert_eq!(resp.status(), 200, "request {i} while the cluster is down");
        assert!(!header(&resp, "x-ratelimit-remaining").is_empty());
    }
    assert_eq!(app.limiter_backend().await, "memory");
    assert!(metric(&app, "ratelimit_decisions_total", &["backend=\"memory\""]).await >= 1.0);
    // Closed connections of a killed cluster are an outage, not plain text on a TLS port.
    let stats = app.state.redis.as_ref().unwrap().stats();
    assert_eq!(stats.misconfiguration(), None);

    cluster.create();
    assert!(
        eventually(20 * SECS, || async {
            app.limiter_backend().await == "redis"
        })
        .await,
        "back to Redis"
    );
    assert_eq!(
        stats.misconfiguration(),
        None,
        "a restart is not a misconfiguration"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_mode_fails_open_while_the_cluster_is_down() {
    let cluster = RedisCluster::reserve();
    let app = spawn(&cluster_overrides(
        &seeds(&cluster),
        &[("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", "2")],
    ))
    .await;
    for _ in 0..5 {
        assert_eq!(app.ping().await.status(), 200, "fail open");
    }
    assert_eq!(app.limiter_backend().await, "fail_open");
    assert_eq!(app.get("/ready").await.status(), 503);
    assert_eq!(
        metric(
            &app,
            "ratelimit_decisions_total",
            &["backend=\"fail_open\""]
        )
        .await,
        5.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limiting_continues_after_a_master_failover() {
    let mut cluster = RedisCluster::start();
    let seeds = cluster.addrs().join(",");
    let app = spawn_app(&[
        ("APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS", &seeds),
        ("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", "1000"),
    ])
    .await;
    let t = pinned_time();
    pin(&app, t);
    wait_for_redis(&app).await;
    assert_eq!(app.ping().await.status(), 200);
    let key = minute_key(&cluster, "127.0.0.1", t).expect("counted before failover");
    let master = cluster.master_for_key(&key);
    let before = redis_hget(&cluster, &key, "127.0.0.1").expect("counted");

    cluster.node_mut(master).kill();
    // Requests are answered promptly throughout the failover.
    for _ in 0..10 {
        let resp = within(2 * SECS, "ping during the failover", app.ping()).await;
        assert_eq!(resp.status(), 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.wait_ok();
    let promoted = cluster.master_for_key(&key);
    assert_ne!(promoted, master, "a replica took over");
    let counted = eventually(20 * SECS, || async {
        app.ping().await;
        redis_hget(&cluster, &key, "127.0.0.1").is_some_and(|n| n > before)
    })
    .await;
    assert!(
        counted,
        "limiting continues in Redis on the promoted replica"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    // Untrusted peer: X-Forwarded-For is ignored, so every request counts against 127.0.0.1.
    let app = spawn_app(&[("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", "2")]).await;
    pin(&app, pinned_time());
    assert_eq!(app.ping_as("1.1.1.1").await.status(), 200);
    assert_eq!(app.ping_as("2.2.2.2").await.status(), 200);
    assert_eq!(
        app.ping_as("3.3.3.3").await.status(),
        429,
        "spoofed header ignored"
    );

    // Trusted proxy: each forwarded client has its own quota.
    let app = spawn_app(&[
        ("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", "2"),
        ("APP__API__RATE_LIMIT__TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    pin(&app, pinned_time());
    for client in ["1.1.1.1", "2.2.2.2", "1.1.1.1", "2.2.2.2"] {
        assert_eq!(app.ping_as(client).await.status(), 200, "{client}");
    }
    assert_eq!(app.ping_as("1.1.1.1").await.status(), 429);
    assert_eq!(app.ping_as("9.9.9.9").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_client_in_parallel_is_batched_and_never_exceeds_its_limit() {
    let cluster = RedisCluster::start();
    let app = spawn(&cluster_overrides(
        &seeds(&cluster),
        &[
            ("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", "2000"),
            ("APP__API__RATE_LIMIT__REQUESTS_PER_HOUR", "100000"),
        ],
    ))
    .await;
    let t = pinned_time();
    pin(&app, t);
    wait_for_redis(&app).await;
    // 3,000 requests, 32 at a time.
    let statuses: Vec<u16> = futures::stream::iter(0..3000)
        .map(|_| async { app.ping().await.status().as_u16() })
        .buffer_unordered(32)
        .collect()
        .await;
    let allowed = statuses.iter().filter(|&&s| s == 200).count() as u64;
    assert!(statuses.iter().all(|&s| s == 200 || s == 429));
    let counted = redis_count(&cluster, "127.0.0.1", t).expect("counted in Redis");
    assert!(counted <= 2000, "Redis counted {counted} > limit");
    assert!(allowed <= counted, "allowed {allowed} > counted {counted}");
    // Spare units of the last batch may be left unused (≤ 2000/16 per batch).
    assert!(allowed >= 2000 - 125, "allowed only {allowed}");
    // Batching and spare units really happened: fewer Lua calls than decisions made with Redis.
    let redis = metric(&app, "ratelimit_decisions_total", &["backend=\"redis\""]).await;
    let local = metric(&app, "ratelimit_decisions_total", &["backend=\"local\""]).await;
    let calls = metric(&app, "ratelimit_redis_calls_total", &[]).await;
    assert!(local > 0.0, "no spare units were used");
    assert!(
        calls < redis,
        "{calls} Lua calls for {redis} Redis decisions: no batching"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_naive_limiter_makes_one_call_per_request_and_allows_exactly_the_limit() {
    let cluster = RedisCluster::start();
    let app = spawn(&cluster_overrides(
        &seeds(&cluster),
        &[
            ("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", "300"),
            ("APP__API__RATE_LIMIT__REQUESTS_PER_HOUR", "100000"),
            ("APP__API__RATE_LIMIT__BATCHING", "false"),
        ],
    ))
    .await;
    let t = pinned_time();
    pin(&app, t);
    wait_for_redis(&app).await;
    let calls_before = metric(&app, "ratelimit_redis_calls_total", &[]).await;
    let statuses: Vec<u16> = futures::stream::iter(0..400)
        .map(|_| async { app.ping().await.status().as_u16() })
        .buffer_unordered(32)
        .collect()
        .await;
    let allowed = statuses.iter().filter(|&&s| s == 200).count();
    assert!(statuses.iter().all(|&s| s == 200 || s == 429));
    // One unit per call and no spare units: exactly the limit passes.
    assert_eq!(allowed, 300, "allowed {allowed} of 400 with a limit of 300");
    let local = metric(&app, "ratelimit_decisions_total", &["backend=\"local\""]).await;
    let calls = metric(&app, "ratelimit_redis_calls_total", &[]).await - calls_before;
    assert_eq!(local, 0.0, "the naive limiter decided locally");
    assert_eq!(calls, 400.0, "{calls} Lua calls for 400 requests");
}

fn rule(name: &str, prefix: &str, key: &str, per_minute: Option<i64>) -> RateLimitRule {
    RateLimitRule {
        name: name.into(),
        path_prefix: prefix.into(),
        key: key.into(),
        requests_per_minute: per_minute,
        ..RateLimitRule::default()
    }
}

/// Rules per route and key, end to end against the cluster: the stricter rule on
/// `POST /api/jobs`, a per-API-key rule on `/api/ping`, the top-level limits elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_limit_per_route_and_key() {
    let cluster = RedisCluster::start();
    let seeds = seeds(&cluster);
    let mut s = settings(&[
        ("APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS", &seeds),
        ("APP__API__RATE_LIMIT__STORAGE_TYPE", "redis"),
        ("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", "50"),
    ]);
    s.api.rate_limit.rules = vec![
        RateLimitRule {
            methods: vec!["POST".into()],
            ..rule("register", "/api/jobs", "ip", Some(2))
        },
        rule("per-key", "/api/ping", "header:X-Api-Key", Some(3)),
        rule("chaos", "/chaos", "ip+route", Some(1)),
    ];
    let app = spawn_app_with(s).await;
    let t = pinned_time();
    pin(&app, t);
    wait_for_redis(&app).await;

    let register = || {
        app.http
            .post(app.url("/api/jobs"))
            .json(&serde_json::json!({}))
            .send()
    };
    for _ in 0..2 {
        let resp = register().await.unwrap();
        assert_ne!(resp.status(), 429);
        assert_eq!(
            header(&resp, "ratelimit-policy"),
            "\"register:minute\";q=2;w=60, \"register:hour\";q=1000;w=3600"
        );
    }
    let resp = register().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert!(header(&resp, "ratelimit").starts_with("\"register:minute\";r=0"));
    let key = minute_key(&cluster, "register:127.0.0.1", t).expect("rule key in Redis");
    assert_eq!(redis_hget(&cluster, &key, "register:127.0.0.1"), Some(2));

    let ping_with_key = |k: &'static str| {
        app.http
            .get(app.url("/api/ping"))
            .header("X-Api-Key", k)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(ping_with_key("key-a").await.unwrap().status(), 200);
    }
    assert_eq!(
        ping_with_key("key-a").await.unwrap().status(),
        429,
        "key-a used up"
    );
    assert_eq!(
        ping_with_key("key-b").await.unwrap().status(),
        200,
        "own count per key"
    );
    // No key: the client IP within the rule.
    for _ in 0..3 {
        assert_eq!(app.ping().await.status(), 200);
    }
    assert_eq!(app.ping().await.status(), 429);
    let hashed: Vec<String> = hash_fields(&cluster, "rl:{*}:m:*")
        .into_iter()
        .filter(|field| field.starts_with("per-key:k"))
        .collect();
    assert!(
        !hashed.is_empty() && hashed.iter().all(|k| !k.contains("key-a")),
        "{hashed:?}"
    );

    // ip+route: each chaos route counts on its own.
    assert_ne!(app.get("/chaos/status").await.status(), 429);
    assert_eq!(app.get("/chaos/status").await.status(), 429);
    // GET on the POST-only reset route: not a reset, but the rule's other route pattern.
    let other = app.get("/chaos/redis-reset").await;
    assert_ne!(other.status(), 429, "another route of the rule");

    // Outside every rule: the top-level limits and policy names.
    let resp = app.get("/api/jobs/01J00000000000000000000000").await;
    assert_ne!(resp.status(), 429);
    assert_eq!(header(&resp, "x-ratelimit-limit"), "50");
    assert!(header(&resp, "ratelimit-policy").starts_with("\"minute\";q=50"));
    for rule in ["register", "per-key", "chaos"] {
        let label = format!("rule=\"{rule}\"");
        let limited = metric(
            &app,
            "ratelimit_decisions_total",
            &[&label, "decision=\"limited\""],
        )
        .await;
        assert!(limited >= 1.0, "{rule}: {limited}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_mode_state_is_bounded_by_max_tracked_clients() {
    let app = spawn_app(&[
        ("APP__API__RATE_LIMIT__STORAGE_TYPE", "memory"),
        ("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", "1"),
        ("APP__API__RATE_LIMIT__TRUSTED_PROXIES", "127.0.0.1"),
        ("APP__API__RATE_LIMIT__MAX_TRACKED_CLIENTS", "16"),
    ])
    .await;
    pin(&app, pinned_time());
    for c in 0..200 {
        assert_eq!(
            app.ping_as(&format!("10.0.{}.{}", c / 256, c % 256))
                .await
                .status(),
            200
        );
    }
    let evicted = metric(&app, "ratelimit_evicted_clients_total", &[]).await;
    assert!(evicted >= 200.0 - 32.0, "evicted {evicted}");
    // The newest client is still tracked; the oldest starts a fresh window (documented).
    assert_eq!(app.ping_as("10.0.0.199").await.status(), 429);
    assert_eq!(app.ping_as("10.0.0.0").await.status(), 200);
}
