//! `/metrics` as Prometheus scrapes it: HTTP metrics by route pattern, chaos and queue gauges.
//! All apps of this process share one recorder, so assertions look for series, not totals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{spawn_app, TestApp};
use cacheserver_testkit::RedisServer;

async fn scrape(app: &TestApp) -> String {
    let resp = app.get("/metrics").await;
    assert_eq!(resp.status(), 200);
    assert!(crate::common::header(&resp, "content-type").starts_with("text/plain"));
    resp.text().await.unwrap()
}

/// The value of the first sample whose line starts with `series` (name plus labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn http_requests_are_counted_by_route_pattern() {
    let app = spawn_app(&[]).await;
    for _ in 0..3 {
        assert_eq!(app.ping().await.status(), 200);
    }
    assert_eq!(app.get("/no/such/thing").await.status(), 404);
    assert_eq!(app.get("/swagger-ui/index.html").await.status(), 200);
    let text = scrape(&app).await;

    let ping = r#"http_requests_total{method="GET",route="/api/ping",status="200"}"#;
    assert!(sample(&text, ping).unwrap() >= 3.0, "{text}");
    assert!(text.contains(r#"http_requests_total{method="GET",route="unmatched",status="404"}"#));
    // A path with a parameter is labelled by its pattern, never by the raw path.
    assert!(text.contains(r#"route="/swagger-ui/{_:.*}""#));
    assert!(!text.contains("/no/such/thing"));
    assert!(!text.contains("index.html"));
    assert!(
        text.contains(r#"http_request_duration_seconds_bucket{method="GET",route="/api/ping",le="#)
    );
    assert!(text.contains(
        r#"ratelimit_decisions_total{decision="allowed",backend="memory",rule="default"}"#
    ));
    // metrics-exporter-prometheus 0.18 recommended naming: `_total` once, on TYPE lines too.
    assert!(
        text.contains("# TYPE http_requests_total counter"),
        "{text}"
    );
    assert!(!text.contains("_total_total"), "{text}");
    // Counters exist at 0 before their first event, so rate() and alerts see them.
    assert!(text.contains("redis_errors_total "), "{text}");
}

#[tokio::test]
async fn rate_limited_requests_are_counted_with_their_429() {
    let app = spawn_app(&[("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", "1")]).await;
    crate::common::pin_limiter_clock(&app);
    assert_eq!(app.ping().await.status(), 200);
    assert_eq!(app.ping().await.status(), 429);
    let text = scrape(&app).await;
    assert!(text.contains(r#"http_requests_total{method="GET",route="/api/ping",status="429"}"#));
}

#[tokio::test]
async fn chaos_resets_and_queue_depth_are_exported() {
    let jobqueue = RedisServer::start();
    let app = spawn_app(&[("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", &jobqueue.addr())]).await;
    app.state
        .jobs
        .enqueue(
            cacheserver_jobqueue::NewJob::delay_print("counted")
                .after(std::time::Duration::from_secs(600)),
        )
        .await
        .unwrap();
    let resp = app
        .http
        .post(app.url("/chaos/redis-reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = scrape(&app).await;
    assert!(sample(&text, "chaos_resets_total").unwrap() >= 1.0);
    // Refreshed from this app's own jobqueue Redis at scrape time (one scheduled job).
    assert_eq!(
        sample(&text, r#"jobqueue_jobs{state="scheduled"}"#),
        Some(1.0)
    );
    assert!(text.contains(r#"jobqueue_jobs{state="dead"}"#));
}

/// Every metric the api panels of the Grafana dashboard query is one the api emits (catches renames/typos).
#[test]
fn dashboard_queries_only_metrics_the_api_emits() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard =
        std::fs::read_to_string(root.join("../../deploy/grafana/cacheserver-dashboard.json"))
            .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut sources = String::new();
    for dir in ["src", "src/routes", "src/ratelimit", "src/cache"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    // The api's panels (filtered by the `job` variable); worker and Redis panels, and every
    // expression against real scrapes, are checked by prometheus.rs.
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["targets"].as_array())
        .flatten()
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .filter(|e| e.contains(r#"job=~"$job""#))
        .collect();
    assert!(!exprs.is_empty());
    for expr in &exprs {
        // A metric is the identifier right before `{` (histograms end in _bucket there).
        for part in expr
            .split('{')
            .map(|s| s.trim_end())
            .filter(|s| !s.is_empty())
        {
            let name: String = part
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if name.is_empty() || expr.ends_with(part) {
                continue;
            }
            let metric = name.trim_end_matches("_bucket");
            assert!(
                sources.contains(&format!("\"{metric}\"")),
                "{metric} (in `{expr}`) is not emitted"
            );
        }
    }
}
