//! The api starts and answers with no Redis at all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{seeds, spawn_app, within};
use cacheserver_testkit::RedisCluster;
use std::time::Duration;

#[tokio::test]
async fn serves_health_with_no_redis_running() {
    // Seed addresses of a cluster that does not run: start-up must not wait for it.
    let cluster = RedisCluster::reserve();
    let seeds = seeds(&cluster);
    let overrides = [(
        "APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS",
        seeds.as_str(),
    )];
    let (app, resp) = within(Duration::from_secs(5), "start-up and /health", async {
        let app = spawn_app(&overrides).await;
        let resp = app.get("/health").await;
        (app, resp)
    })
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"status": "ok"})
    );
    assert_eq!(
        app.get("/ready").await.status(),
        503,
        "not ready without Redis"
    );
    assert_eq!(
        app.ping().await.status(),
        200,
        "rate limited in memory meanwhile"
    );
}

#[tokio::test]
async fn unknown_routes_get_a_json_404() {
    let app = spawn_app(&[]).await;
    let resp = app.get("/nope").await;
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 404);
}
