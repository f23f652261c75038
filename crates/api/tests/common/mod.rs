//! Shared helpers for the api's integration tests: build the real app on port 0 with the test
//! config plus overrides, and talk to it over HTTP like a user.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use cacheserver_api::startup::Application;
use cacheserver_api::state::AppState;
use cacheserver_config::{AppEnv, Settings};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// The waits of every test (one harness, in the testkit).
pub use cacheserver_testkit::{eventually, try_eventually, within};

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub state: actix_web::web::Data<AppState>,
    handle: actix_web::dev::ServerHandle,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("request failed")
    }

    pub async fn ping(&self) -> reqwest::Response {
        self.get("/api/ping").await
    }

    pub async fn ping_as(&self, forwarded_for: &str) -> reqwest::Response {
        self.http
            .get(self.url("/api/ping"))
            .header("X-Forwarded-For", forwarded_for)
            .send()
            .await
            .expect("request")
    }

    /// `checks.rate_limit_backend` of `/ready`: redis, memory or fail_open.
    pub async fn limiter_backend(&self) -> String {
        let body: serde_json::Value = self.get("/ready").await.json().await.expect("ready json");
        body["checks"]["rate_limit_backend"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

/// Settings of `APP_ENV=test` (`config/base` + `config/test`) with `APP__...` overrides (the
/// process environment is not read).
pub fn settings(overrides: &[(&str, &str)]) -> Settings {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut vars: HashMap<String, String> = HashMap::from([
        ("APP__SERVER__PORT".into(), "0".into()),
        // No jobqueue Redis unless a test gives one: a closed loopback port.
        (
            "APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR".into(),
            "127.0.0.1:1".into(),
        ),
        (
            "APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS".into(),
            String::new(),
        ),
    ]);
    vars.extend(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    Settings::load_from(&root, AppEnv::Test, Some(vars)).expect("test settings")
}

/// Build the app exactly as `main` does and serve it on a free port.
pub async fn spawn_app(overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_with(settings(overrides)).await
}

/// `spawn_app` with settings the test built (e.g. lists of structs, which env overrides lack).
pub async fn spawn_app_with(settings: Settings) -> TestApp {
    let registry = cacheserver_jobqueue::Registry::production(&settings.jobqueue);
    spawn_app_with_registry(settings, registry).await
}

/// `spawn_app_with` whose jobs API accepts (and documents) the types of `registry`.
pub async fn spawn_app_with_registry(
    settings: Settings,
    registry: cacheserver_jobqueue::Registry,
) -> TestApp {
    // Logs show up with a failing test's output (RUST_LOG=debug for more).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
    let metrics = cacheserver_api::telemetry::metrics_recorder();
    let app = Application::build_with_registry(settings, metrics, registry)
        .await
        .expect("app builds");
    let base = format!("http://{}", app.addr());
    let state = app.state();
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    TestApp {
        base,
        http,
        state,
        handle,
    }
}

/// Settings of a jobs-API test: the jobqueue on `redis_addr`, no rate limiter in the way.
pub fn jobqueue_settings(redis_addr: &str) -> Settings {
    settings(&[
        ("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", redis_addr),
        ("APP__API__RATE_LIMIT__ENABLED", "false"),
        ("APP__API__RATE_LIMIT__STORAGE_TYPE", "memory"),
    ])
}

/// The app seen as a JSON API: every call answers (status, body), the body `null` when it is
/// not JSON.
pub struct JsonApi {
    pub app: TestApp,
}

impl JsonApi {
    pub async fn start(settings: Settings) -> Self {
        Self {
            app: spawn_app_with(settings).await,
        }
    }

    pub async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    pub async fn get(&self, path: &str) -> (reqwest::StatusCode, serde_json::Value) {
        self.send(self.app.http.get(self.app.url(path))).await
    }

    pub async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        self.send(self.app.http.post(self.app.url(path)).json(&body))
            .await
    }

    pub async fn put(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        self.send(self.app.http.put(self.app.url(path)).json(&body))
            .await
    }

    pub async fn delete(&self, path: &str) -> (reqwest::StatusCode, serde_json::Value) {
        self.send(self.app.http.delete(self.app.url(path))).await
    }
}

/// Cluster seed list for `APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS`.
pub fn seeds(cluster: &cacheserver_testkit::RedisCluster) -> String {
    cluster.addrs()[..3].join(",")
}

/// Pin the limiter's clock a few seconds into the current minute: windows then change only when
/// a test moves the clock, never because the wall clock crossed a minute.
pub fn pin_limiter_clock(app: &TestApp) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let pinned = now / 60 * 60 + 5;
    app.state.limiter.clock().pin(pinned);
    pinned
}

pub fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}
