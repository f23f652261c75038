//! The job routes over HTTP against the real app and a real Redis. Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use cacheserver_api::startup::Application;
use cacheserver_config::{AppEnv, Settings};
use cacheserver_testkit::{free_port, RedisServer};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct App {
    base: String,
    http: reqwest::Client,
}

impl App {
    async fn start(redis: &RedisServer, extra: &[(&str, &str)]) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let mut vars: HashMap<String, String> = [
            ("APP__SERVER__PORT", "0".to_owned()),
            ("APP__API__RATE_LIMIT__ENABLED", "false".to_owned()),
            ("APP__API__RATE_LIMIT__STORAGE_TYPE", "memory".to_owned()),
            ("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", redis.addr()),
            ("APP__JOBQUEUE__ENQUEUE_TIMEOUT", "500ms".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in extra {
            vars.insert((*k).into(), (*v).into());
        }
        let settings = Settings::load_from(&root, AppEnv::Test, Some(vars)).unwrap();
        let app = Application::build(settings, cacheserver_api::telemetry::metrics_recorder())
            .await
            .unwrap();
        let base = format!("http://127.0.0.1:{}/api/dm-jobqueue", app.port());
        tokio::spawn(app.run_until_stopped());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Self { base, http }
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let resp = self.http.post(format!("{}{path}", self.base)).json(&body);
        read(resp.send().await.unwrap()).await
    }

    async fn raw(&self, path: &str, content_type: &str, body: String) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        read(resp.send().await.unwrap()).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        read(
            self.http
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        read(
            self.http
                .delete(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }
}

async fn read(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn assert_400(got: (StatusCode, Value), needle: &str) {
    assert_eq!(got.0, StatusCode::BAD_REQUEST, "{needle}: {:?}", got.1);
    assert_eq!(got.1["code"], 400);
    let message = got.1["message"].as_str().unwrap();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}

#[tokio::test]
async fn register_validates_every_field() {
    let redis = RedisServer::start();
    let app = App::start(&redis, &[]).await;
    let r = "/register";
    assert_400(app.post(r, json!({})).await, "message");
    assert_400(app.post(r, json!({"message": ""})).await, "message");
    assert_400(app.post(r, json!({"message": "   "})).await, "message");
    assert_400(
        app.post(r, json!({"message": "x".repeat(10 * 1024 + 1)}))
            .await,
        "10240",
    );
    assert_400(
        app.post(r, json!({"message": "m", "delay_seconds": -1}))
            .await,
        "delay_seconds",
    );
    assert_400(
        app.post(r, json!({"message": "m", "delay_seconds": 2_592_001}))
            .await,
        "delay_seconds",
    );
    assert_400(
        app.post(r, json!({"message": "m", "max_retry": -1})).await,
        "max_retry",
    );
    assert_400(
        app.post(r, json!({"message": "m", "max_retry": 101})).await,
        "max_retry",
    );
    assert_400(app.post(r, json!({"message": 5})).await, "invalid");
    assert_400(
        app.post(r, json!({"message": "m", "delay_seconds": "5"}))
            .await,
        "invalid",
    );
    assert_400(
        app.post(r, json!({"message": "m", "max_retry": 1.5})).await,
        "invalid",
    );
    assert_400(
        app.post(r, json!({"message": "m", "colour": "red"})).await,
        "unknown field",
    );
    assert_400(
        app.raw(r, "application/json", "{not json".into()).await,
        "JSON",
    );
    assert_400(
        app.raw(r, "text/plain", r#"{"message":"m"}"#.into()).await,
        "Content-Type",
    );
    let big = format!(r#"{{"message":"{}"}}"#, "x".repeat(70 * 1024));
    let (status, body) = app.raw(r, "application/json", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["code"], 413);

    // Limits themselves are accepted.
    let edge =
        json!({"message": "x".repeat(10 * 1024), "delay_seconds": 2_592_000, "max_retry": 100});
    assert_eq!(app.post(r, edge).await.0, StatusCode::CREATED);
    let zero = json!({"message": "now", "delay_seconds": 0, "max_retry": 0});
    assert_eq!(app.post(r, zero).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn batch_validates_each_item_by_index() {
    let redis = RedisServer::start();
    let app = App::start(&redis, &[]).await;
    let b = "/register/batch";
    assert_400(app.post(b, json!({"jobs": []})).await, "1..=1000");
    let too_many: Vec<Value> = (0..1001).map(|_| json!({"message": "m"})).collect();
    assert_400(app.post(b, json!({"jobs": too_many})).await, "1..=1000");
    let bad = json!({"jobs": [{"message": "ok"}, {"message": ""}]});
    assert_400(app.post(b, bad).await, "jobs[1]");
    let bad_type = json!({"jobs": [{"message": "ok"}, {"message": "ok"}, {"message": "m", "delay_seconds": "x"}]});
    assert_400(app.post(b, bad_type).await, "jobs[2]");
    assert_400(app.post(b, json!({"jobs": "nope"})).await, "invalid");

    let jobs: Vec<Value> = (0..1000)
        .map(|i| json!({"message": format!("m{i}"), "delay_seconds": 60}))
        .collect();
    let (status, body) = app.post(b, json!({"jobs": jobs})).await;
    assert_eq!(status, StatusCode::CREATED);
    let stored = body["jobs"].as_array().unwrap();
    assert_eq!(stored.len(), 1000);
    assert_eq!(stored[0]["status"], "registered");
    let (_, stats) = app.get("/stats").await;
    assert_eq!(stats["scheduled"], 1000);
}

#[tokio::test]
async fn job_lifecycle_routes_answer_201_200_404_409_204() {
    let redis = RedisServer::start();
    let app = App::start(&redis, &[]).await;
    let before = chrono::Utc::now();
    let (status, body) = app
        .post(
            "/register",
            json!({"message": "later", "delay_seconds": 60}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["status"], "registered");
    let id = body["job_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 26, "a ULID: {id}");
    let run_at = chrono::DateTime::parse_from_rfc3339(body["run_at"].as_str().unwrap()).unwrap();
    let delay = run_at.with_timezone(&chrono::Utc) - before;
    assert!(
        (59_000..=61_000).contains(&delay.num_milliseconds()),
        "{delay}"
    );

    // Defaults from config (180 s, 10 retries).
    let (_, defaulted) = app.post("/register", json!({"message": "defaults"})).await;
    let (_, info) = app
        .get(&format!("/jobs/{}", defaulted["job_id"].as_str().unwrap()))
        .await;
    assert_eq!(info["max_retry"], 10);

    let (status, info) = app.get(&format!("/jobs/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["status"], "scheduled");
    assert_eq!(info["attempts"], 0);
    assert_eq!(info["run_at"], body["run_at"]);

    let (status, stats) = app.get("/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["scheduled"], 2);
    for key in ["pending", "running", "retrying", "done", "dead"] {
        assert_eq!(stats[key], 0, "{key}");
    }
    let (status, dead) = app.get("/jobs?status=dead").await;
    assert_eq!((status, dead), (StatusCode::OK, json!({"jobs": []})));
    let (status, body) = app.get("/jobs?status=pending").await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(400))
    );

    let unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    assert_eq!(
        app.get(&format!("/jobs/{unknown}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.post(&format!("/jobs/{unknown}/retry"), json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete(&format!("/jobs/{unknown}")).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = app.post(&format!("/jobs/{id}/retry"), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], 409);

    assert_eq!(
        app.delete(&format!("/jobs/{id}")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!("/jobs/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn api_key_is_required_when_configured() {
    let redis = RedisServer::start();
    let app = App::start(&redis, &[("APP__JOBQUEUE__API_KEY", "s3cret")]).await;
    let url = format!("{}/register", app.base);
    let body = json!({"message": "m", "delay_seconds": 60});
    for auth in [
        None,
        Some("Bearer nope"),
        Some("s3cret"),
        Some("Bearer s3cret2"),
    ] {
        let mut req = app.http.post(&url).json(&body);
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        let (status, body) = read(req.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(body["code"], 401);
    }
    assert_eq!(app.get("/stats").await.0, StatusCode::UNAUTHORIZED);
    let req = app.http.post(&url).bearer_auth("s3cret").json(&body);
    assert_eq!(req.send().await.unwrap().status(), StatusCode::CREATED);
}

#[tokio::test]
async fn redis_down_answers_503_within_the_enqueue_timeout() {
    let redis = RedisServer::reserve(); // never started
    let app = App::start(&redis, &[]).await;
    for path in ["/register", "/register/batch"] {
        let body = if path == "/register" {
            json!({"message": "m"})
        } else {
            json!({"jobs": [{"message": "m"}]})
        };
        let started = Instant::now();
        let (status, body) = app.post(path, body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["code"], 503);
        assert!(
            started.elapsed() < Duration::from_millis(2_000),
            "{:?}",
            started.elapsed()
        );
    }
    let started = Instant::now();
    assert_eq!(app.get("/stats").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// The worker binary, built now when missing or stale (cargo is a no-op when it is up to date).
fn worker_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new(env!("CARGO"))
        .args(["build", "-p", "cacheserver-jobqueue", "--bin", "worker"])
        .current_dir(&root)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building the worker failed");
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let bin = tmp.parent().unwrap().join("debug").join("worker");
    assert!(bin.is_file(), "no worker at {}", bin.display());
    bin
}

#[tokio::test]
async fn registered_job_is_printed_by_a_real_worker_after_its_delay() {
    let bin = worker_binary();
    let redis = RedisServer::start();
    let app = App::start(&redis, &[]).await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut worker = Command::new(bin)
        .env("APP_ENV", "test")
        .env("APP_CONFIG_DIR", root)
        .env("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", redis.addr())
        .env(
            "APP__JOBQUEUE__WORKER__HEALTH_PORT",
            free_port().to_string(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(
        Vec::<(chrono::DateTime<chrono::Utc>, String)>::new(),
    ));
    let sink = lines.clone();
    let stdout = worker.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push((chrono::Utc::now(), line));
        }
    });

    let (status, body) = app
        .post(
            "/register",
            json!({"message": "e2e hello", "delay_seconds": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let run_at = chrono::DateTime::parse_from_rfc3339(body["run_at"].as_str().unwrap()).unwrap();
    let id = body["job_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let found = lines
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| l.ends_with("] e2e hello"))
            .cloned();
        if found.is_some() || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = worker.kill();
    let _ = worker.wait();
    let (at, line) = seen.expect("the worker printed the job");
    assert!(at >= run_at, "ran early: {at} < {run_at}");
    assert!(
        line.starts_with('[') && line.as_bytes()[20] == b']',
        "{line}"
    );
    let (_, info) = app.get(&format!("/jobs/{id}")).await;
    assert_eq!(info["status"], "done");
    assert_eq!(info["attempts"], 1);
}
