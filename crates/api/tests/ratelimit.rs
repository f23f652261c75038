//! Rate limiting against a real 3+3 Redis Cluster started by the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cacheserver_testkit::{redis_cli, RedisCluster};
use common::{avoid_minute_boundary, eventually, header, seeds, spawn_app};
use std::time::{Duration, Instant};

const SECS: Duration = Duration::from_secs(1);

fn minute_key(ip: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!("rl:{{{ip}}}:m:{}", now / 60)
}

/// The minute counter of `ip` as the cluster sees it (redis-cli follows MOVED with -c).
fn redis_count(cluster: &RedisCluster, ip: &str) -> Option<u64> {
    let out = std::process::Command::new("redis-cli")
        .args([
            "-c",
            "-p",
            &cluster.node(0).port().to_string(),
            "GET",
            &minute_key(ip),
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_over_the_minute_limit_gets_429_with_headers() {
    let cluster = RedisCluster::start();
    let seeds = seeds(&cluster);
    let app = spawn_app(&[
        ("APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS", &seeds),
        ("APP__API__RATE_LIMIT__STORAGE_TYPE", "redis"),
        ("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", "60"),
    ])
    .await;
    assert!(
        eventually(10 * SECS, || async {
            app.limiter_backend().await == "redis"
        })
        .await
    );
    avoid_minute_boundary(10 * SECS).await;

    for i in 1..=60u64 {
        let resp = app.ping().await;
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(header(&resp, "x-ratelimit-limit"), "60");
        assert_eq!(header(&resp, "x-ratelimit-remaining"), (60 - i).to_string());
        assert_eq!(header(&resp, "x-ratelimit-hour-limit"), "1000");
    }
    assert_eq!(
        redis_count(&cluster, "127.0.0.1"),
        Some(60),
        "counted in Redis"
    );
    let resp = app.ping().await;
    assert_eq!(resp.status(), 429);
    for name in [
        "retry-after",
        "x-ratelimit-reset",
        "x-ratelimit-hour-remaining",
        "ratelimit",
        "ratelimit-policy",
    ] {
        assert!(!header(&resp, name).is_empty(), "missing {name}");
    }
    assert_eq!(header(&resp, "x-ratelimit-remaining"), "0");
    assert_eq!(header(&resp, "x-ratelimit-hour-remaining"), "940");
    let retry_after: u64 = header(&resp, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"code": 429, "message": "Too Many Requests"})
    );
    assert_eq!(
        redis_count(&cluster, "127.0.0.1"),
        Some(60),
        "refused requests are not counted"
    );
    // Health and metrics are never limited.
    assert_eq!(app.get("/health").await.status(), 200);
    assert_eq!(app.get("/metrics").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hour_limit_applies_across_minutes() {
    let cluster = RedisCluster::start();
    let seeds = seeds(&cluster);
    let app = spawn_app(&[
        ("APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS", &seeds),
        ("APP__API__RATE_LIMIT__STORAGE_TYPE", "redis"),
        ("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", "100"),
        ("APP__API__RATE_LIMIT__REQUESTS_PER_HOUR", "3"),
    ])
    .await;
    assert!(
        eventually(10 * SECS, || async {
            app.limiter_backend().await == "redis"
        })
        .await
    );
    for _ in 0..3 {
        assert_eq!(app.ping().await.status(), 200);
    }
    let resp = app.ping().await;
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "x-ratelimit-hour-remaining"), "0");
    assert_eq!(
        header(&resp, "retry-after"),
        header(&resp, "x-ratelimit-hour-reset")
    );
    assert!(
        header(&resp, "ratelimit").starts_with("\"hour\";r=0"),
        "{}",
        header(&resp, "ratelimit")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_instances_share_one_quota() {
    let cluster = RedisCluster::start();
    let seeds = seeds(&cluster);
    let overrides = [
        (
            "APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS",
            seeds.as_str(),
        ),
        ("APP__API__RATE_LIMIT__STORAGE_TYPE", "redis"),
        ("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", "4"),
    ];
    let a = spawn_app(&overrides).await;
    let b = spawn_app(&overrides).await;
    for app in [&a, &b] {
        assert!(
            eventually(10 * SECS, || async {
                app.limiter_backend().await == "redis"
            })
            .await
        );
    }
    avoid_minute_boundary(5 * SECS).await;
    for app in [&a, &b, &a, &b] {
        assert_eq!(app.ping().await.status(), 200);
    }
    assert_eq!(a.ping().await.status(), 429);
    assert_eq!(b.ping().await.status(), 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_with_the_cluster_down_then_moves_to_redis() {
    let mut cluster = RedisCluster::reserve();
    let seeds = seeds(&cluster);
    let app = spawn_app(&[("APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS", &seeds)]).await;
    // Serves at once, limited in memory.
    let started = Instant::now();
    let resp = app.ping().await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-ratelimit-remaining"), "59");
    assert!(started.elapsed() < 2 * SECS, "no hang while Redis is down");
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
    avoid_minute_boundary(3 * SECS).await;
    assert_eq!(app.ping().await.status(), 200);
    assert!(
        redis_count(&cluster, "127.0.0.1").is_some(),
        "request counted in Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_cluster_falls_back_without_hanging() {
    let mut cluster = RedisCluster::start();
    let seeds = seeds(&cluster);
    let app = spawn_app(&[("APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS", &seeds)]).await;
    assert!(
        eventually(10 * SECS, || async {
            app.limiter_backend().await == "redis"
        })
        .await
    );
    assert_eq!(app.ping().await.status(), 200);

    cluster.kill_all();
    for i in 0..20 {
        let started = Instant::now();
        let resp = app.ping().await;
        assert_eq!(resp.status(), 200, "request {i} while the cluster is down");
        assert!(!header(&resp, "x-ratelimit-remaining").is_empty());
        assert!(
            started.elapsed() < 2 * SECS,
            "request {i} took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(app.limiter_backend().await, "memory");

    cluster.create();
    assert!(
        eventually(20 * SECS, || async {
            app.limiter_backend().await == "redis"
        })
        .await,
        "back to Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_mode_fails_open_while_the_cluster_is_down() {
    let cluster = RedisCluster::reserve();
    let seeds = seeds(&cluster);
    let app = spawn_app(&[
        ("APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS", &seeds),
        ("APP__API__RATE_LIMIT__STORAGE_TYPE", "redis"),
        ("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", "2"),
    ])
    .await;
    for _ in 0..5 {
        assert_eq!(app.ping().await.status(), 200, "fail open");
    }
    assert_eq!(app.limiter_backend().await, "fail_open");
    assert_eq!(app.get("/ready").await.status(), 503);
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
    assert!(
        eventually(10 * SECS, || async {
            app.limiter_backend().await == "redis"
        })
        .await
    );
    avoid_minute_boundary(25 * SECS).await;
    assert_eq!(app.ping().await.status(), 200);
    let master = cluster.master_for_key(&minute_key("127.0.0.1"));
    let before = redis_count(&cluster, "127.0.0.1").expect("counted before failover");

    cluster.node_mut(master).kill();
    // Requests are answered promptly throughout the failover.
    for _ in 0..10 {
        let started = Instant::now();
        assert_eq!(app.ping().await.status(), 200);
        assert!(started.elapsed() < 2 * SECS);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.wait_ok();
    let promoted = cluster.master_for_key(&minute_key("127.0.0.1"));
    assert_ne!(promoted, master, "a replica took over");
    let counted = eventually(20 * SECS, || async {
        app.ping().await;
        redis_count(&cluster, "127.0.0.1").is_some_and(|n| n > before)
    })
    .await;
    assert!(
        counted,
        "limiting continues in Redis on the promoted replica"
    );
    let _ = redis_cli(cluster.node(promoted).port(), &["PING"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    // Untrusted peer: X-Forwarded-For is ignored, so every request counts against 127.0.0.1.
    let app = spawn_app(&[("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", "2")]).await;
    avoid_minute_boundary(3 * SECS).await;
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
    for client in ["1.1.1.1", "2.2.2.2", "1.1.1.1", "2.2.2.2"] {
        assert_eq!(app.ping_as(client).await.status(), 200, "{client}");
    }
    assert_eq!(app.ping_as("1.1.1.1").await.status(), 429);
    assert_eq!(app.ping_as("9.9.9.9").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_client_in_parallel_never_exceeds_its_limit() {
    let cluster = RedisCluster::start();
    let seeds = seeds(&cluster);
    let app = spawn_app(&[
        ("APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS", &seeds),
        ("APP__API__RATE_LIMIT__STORAGE_TYPE", "redis"),
        ("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", "200"),
        ("APP__API__RATE_LIMIT__REQUESTS_PER_HOUR", "100000"),
    ])
    .await;
    assert!(
        eventually(10 * SECS, || async {
            app.limiter_backend().await == "redis"
        })
        .await
    );
    avoid_minute_boundary(15 * SECS).await;
    // 400 requests, 32 at a time: batches and spare units (leases) are used.
    let mut allowed = 0;
    for _ in 0..(400 / 32) + 1 {
        let batch = (0..32).map(|_| app.ping());
        for resp in futures::future::join_all(batch).await {
            match resp.status().as_u16() {
                200 => allowed += 1,
                429 => {}
                other => panic!("unexpected status {other}"),
            }
        }
    }
    let counted = redis_count(&cluster, "127.0.0.1").expect("counted in Redis");
    assert!(counted <= 200, "Redis counted {counted} > limit");
    assert!(allowed <= 200, "allowed {allowed} > limit");
    // Spare units of the last batches may be left unused, never more than a few per batch.
    assert!(allowed >= 200 - 2 * 12, "allowed only {allowed}");
}
