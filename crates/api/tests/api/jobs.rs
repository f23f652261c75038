//! The job routes over HTTP against the real app and a real Redis. Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use crate::common::{eventually, spawn_app};
use cacheserver_testkit::{worker_binary, RedisServer, Stream, WorkerCommand};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

struct App {
    /// The seed's routes, `/api/dm-jobqueue`.
    base: String,
    /// `/api`, the generic routes.
    api: String,
    http: reqwest::Client,
}

impl App {
    /// The app of `common::spawn_app` on `redis`, rate limiting off.
    async fn start(redis: &RedisServer, extra: &[(&str, &str)]) -> Self {
        let jobqueue = redis.addr();
        let mut overrides = vec![
            ("APP__API__RATE_LIMIT__ENABLED", "false"),
            ("APP__API__RATE_LIMIT__STORAGE_TYPE", "memory"),
            (
                "APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR",
                jobqueue.as_str(),
            ),
            // Generous: a loaded machine must not turn a 1,000-job batch into a 503.
            ("APP__JOBQUEUE__ENQUEUE_TIMEOUT", "5s"),
        ];
        overrides.extend_from_slice(extra);
        let app = spawn_app(&overrides).await;
        let api = app.url("/api");
        Self {
            base: format!("{api}/dm-jobqueue"),
            api,
            http: app.http.clone(),
        }
    }

    /// `POST /api<path>`.
    async fn apost(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let resp = self.http.post(format!("{}{path}", self.api)).json(&body);
        read(resp.send().await.unwrap()).await
    }

    async fn aget(&self, path: &str) -> (StatusCode, Value) {
        read(
            self.http
                .get(format!("{}{path}", self.api))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn adelete(&self, path: &str) -> (StatusCode, Value) {
        read(
            self.http
                .delete(format!("{}{path}", self.api))
                .send()
                .await
                .unwrap(),
        )
        .await
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
    let after = chrono::Utc::now();
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["status"], "registered");
    let id = body["job_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 26, "a ULID: {id}");
    let run_at = chrono::DateTime::parse_from_rfc3339(body["run_at"].as_str().unwrap()).unwrap();
    // 60 s after the request was handled, whenever that was between before and after (±1 s for
    // whole-second times): bounded by the request's own clock readings, not by how fast it ran.
    let run_at = run_at.with_timezone(&chrono::Utc);
    let (earliest, latest) = (
        before + chrono::Duration::seconds(59),
        after + chrono::Duration::seconds(61),
    );
    assert!(
        earliest <= run_at && run_at <= latest,
        "{run_at} not in {earliest}..={latest}"
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
    let queues = app.http.get(format!("{}/queues", app.api)).send().await;
    assert_eq!(queues.unwrap().status(), StatusCode::UNAUTHORIZED);
    // The key guards the jobs API, not the rest of `/api`.
    let ping = app.http.get(format!("{}/ping", app.api)).send().await;
    assert_eq!(ping.unwrap().status(), StatusCode::OK);
    let req = app.http.post(&url).bearer_auth("s3cret").json(&body);
    assert_eq!(req.send().await.unwrap().status(), StatusCode::CREATED);
}

#[tokio::test]
async fn redis_down_answers_503_within_the_enqueue_timeout() {
    let redis = RedisServer::reserve(); // never started
    let app = App::start(&redis, &[("APP__JOBQUEUE__ENQUEUE_TIMEOUT", "500ms")]).await;
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

#[tokio::test]
async fn registered_job_is_printed_by_a_real_worker_after_its_delay() {
    let redis = RedisServer::start();
    let app = App::start(&redis, &[]).await;
    let mut worker = WorkerCommand::new(worker_binary())
        .redis(&redis.addr())
        .capture_stderr()
        .start()
        .await;

    let (status, body) = app
        .post(
            "/register",
            json!({"message": "e2e hello", "delay_seconds": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let run_at = chrono::DateTime::parse_from_rfc3339(body["run_at"].as_str().unwrap()).unwrap();
    let id = body["job_id"].as_str().unwrap().to_owned();
    let printed = |l: &str| l.ends_with("] e2e hello");
    worker
        .wait_for_line(Stream::Stdout, Duration::from_secs(30), printed)
        .await;
    let seen = worker
        .lines(Stream::Stdout)
        .into_iter()
        .find(|l| printed(&l.text))
        .map(|l| (chrono::DateTime::<chrono::Utc>::from(l.at), l.text));
    // The line is printed before the job is acknowledged: wait for `done` before the kill.
    let info = eventually(Duration::from_secs(30), "the job done", || async {
        let (_, info) = app.get(&format!("/jobs/{id}")).await;
        if info["status"] == "done" {
            Ok(info)
        } else {
            Err(info)
        }
    })
    .await;
    worker.kill();
    let (at, line) = seen.expect("the worker printed the job");
    assert!(at >= run_at, "ran early: {at} < {run_at}");
    assert!(
        line.starts_with('[') && line.as_bytes()[20] == b']',
        "{line}"
    );
    assert_eq!(info["status"], "done");
    assert_eq!(info["attempts"], 1);
}

fn demo(message: &str) -> Value {
    json!({"type": "demo:delay_print", "payload": {"message": message}})
}

#[tokio::test]
async fn generic_create_validates_type_payload_and_timing() {
    let redis = RedisServer::start();
    let app = App::start(&redis, &[]).await;
    let unknown = app
        .apost("/jobs", json!({"type": "x:y", "payload": {}}))
        .await;
    assert_400(unknown.clone(), "demo:delay_print");
    assert_400(unknown, "x:y");
    assert_400(
        app.apost("/jobs", json!({"type": "demo:delay_print", "payload": {}}))
            .await,
        "message",
    );
    assert_400(
        app.apost(
            "/jobs",
            json!({"type": "demo:delay_print", "payload": {"message": ""}}),
        )
        .await,
        "message",
    );
    let mut both = demo("m");
    both["delay_seconds"] = json!(5);
    both["run_at"] = json!("2030-01-01T00:00:00Z");
    assert_400(app.apost("/jobs", both).await, "not both");
    for (field, value, needle) in [
        ("run_at", json!("tomorrow"), "run_at"),
        ("run_at", json!("2099-01-01T00:00:00Z"), "run_at"),
        ("delay_seconds", json!(2_592_001), "delay_seconds"),
        ("max_retry", json!(101), "max_retry"),
        ("timeout_seconds", json!(0), "timeout_seconds"),
        ("timeout_seconds", json!(86_401), "timeout_seconds"),
        ("unique_key", json!("k".repeat(201)), "unique_key"),
        ("unique_for_seconds", json!(0), "unique_for_seconds"),
        ("colour", json!("red"), "unknown field"),
    ] {
        let mut body = demo("m");
        body[field] = value;
        if field == "unique_for_seconds" {
            body["unique_key"] = json!("k");
        }
        assert_400(app.apost("/jobs", body).await, needle);
    }

    // No delay: due now. A run_at in the past: due now. A future run_at is kept to the ms.
    let before = chrono::Utc::now();
    let (status, now) = app.apost("/jobs", demo("now")).await;
    assert_eq!(status, StatusCode::CREATED, "{now}");
    assert_eq!(now["status"], "registered");
    let run_at = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v["run_at"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    assert!(run_at(&now) >= before - chrono::Duration::milliseconds(1));
    assert!(run_at(&now) <= chrono::Utc::now());
    let mut past = demo("past");
    past["run_at"] = json!("2020-01-01T00:00:00Z");
    let (status, past) = app.apost("/jobs", past).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(run_at(&past) >= before - chrono::Duration::milliseconds(1));
    let at = (chrono::Utc::now() + chrono::Duration::days(10))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut later = demo("later");
    later["run_at"] = json!(at);
    let (status, later) = app.apost("/jobs", later).await;
    assert_eq!(status, StatusCode::CREATED, "{later}");
    assert_eq!(later["run_at"], json!(at));

    // The detail has everything, with the type and payload.
    let mut full = demo("detail");
    full["delay_seconds"] = json!(60);
    full["max_retry"] = json!(2);
    full["timeout_seconds"] = json!(30);
    let (_, stored) = app.apost("/jobs", full).await;
    let id = stored["job_id"].as_str().unwrap();
    let (status, d) = app.aget(&format!("/jobs/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(d["type"], "demo:delay_print");
    assert_eq!(d["payload"], json!({"message": "detail"}));
    assert_eq!(d["status"], "scheduled");
    assert_eq!(
        (d["max_retry"].clone(), d["timeout_seconds"].clone()),
        (json!(2), json!(30.0))
    );
    assert_eq!(d["run_at"], stored["run_at"]);
    assert!(d["created_at"].is_string() && d["started_at"].is_null());
    assert_eq!(d["errors"], json!([]));
    assert_400(app.aget("/jobs/not-a-ulid").await, "ULID");
    assert_eq!(
        app.aget("/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn unique_keys_answer_409_with_the_holder_and_batches_mark_duplicates() {
    let redis = RedisServer::start();
    let app = App::start(&redis, &[]).await;
    let mut body = demo("once");
    body["delay_seconds"] = json!(60);
    body["unique_key"] = json!("invoice-7");
    let (status, first) = app.apost("/jobs", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, dup) = app.apost("/jobs", body.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{dup}");
    assert_eq!(
        (dup["code"].clone(), dup["job_id"].clone()),
        (json!(409), first["job_id"].clone())
    );

    let jobs = json!({"jobs": [body, demo("free")]});
    let (status, batch) = app.apost("/jobs/batch", jobs).await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    assert_eq!(batch["jobs"][0]["status"], "duplicate");
    assert_eq!(batch["jobs"][0]["job_id"], first["job_id"]);
    assert_eq!(batch["jobs"][1]["status"], "registered");
}

#[tokio::test]
async fn generic_batch_takes_up_to_1000_items_and_2_mb() {
    let redis = RedisServer::start();
    let app = App::start(&redis, &[]).await;
    assert_400(
        app.apost("/jobs/batch", json!({"jobs": []})).await,
        "1..=1000",
    );
    let bad =
        json!({"jobs": [demo("ok"), {"type": "demo:delay_print", "payload": {"message": ""}}]});
    assert_400(app.apost("/jobs/batch", bad).await, "jobs[1]");
    let (_, counts) = app.aget("/queues").await;
    assert_eq!(
        counts["queues"][0]["counts"]["pending"], 0,
        "nothing stored"
    );
    // 1000 jobs of ~1.5 KB: over the api's 64 KB default, under the batch's 2 MB.
    let text = "x".repeat(1500);
    let jobs: Vec<Value> = (0..1000).map(|_| demo(&text)).collect();
    let (status, body) = app.apost("/jobs/batch", json!({"jobs": jobs})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["jobs"].as_array().unwrap().len(), 1000);
    let big = "x".repeat(2200);
    let jobs: Vec<Value> = (0..1000).map(|_| demo(&big)).collect();
    let (status, body) = app.apost("/jobs/batch", json!({"jobs": jobs})).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["code"], 413);
}

#[tokio::test]
async fn listing_retry_delete_bulk_and_queues_over_http() {
    let redis = RedisServer::start();
    let app = App::start(&redis, &[]).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut body = demo(&format!("later {i}"));
        body["delay_seconds"] = json!(100 + i);
        ids.push(
            app.apost("/jobs", body).await.1["job_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let (status, page) = app.aget("/jobs?state=scheduled&limit=2").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let first: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(first, [ids[0].as_str(), ids[1].as_str()]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page) = app
        .aget(&format!(
            "/jobs?state=scheduled&limit=2&type=demo:delay_print&cursor={cursor}"
        ))
        .await;
    assert_eq!(page["jobs"][0]["job_id"], ids[2].as_str());
    assert_400(app.aget("/jobs?state=failed").await, "state must be one of");
    assert_400(app.aget("/jobs?state=dead&limit=0").await, "limit");
    assert_400(app.aget("/jobs?state=dead&limit=501").await, "limit");
    assert_400(app.aget("/jobs?state=dead&cursor=zzz").await, "cursor");

    // Retry of a non-dead job: 409; delete: 204 then 404.
    assert_eq!(
        app.apost(&format!("/jobs/{}/retry", ids[0]), json!({}))
            .await
            .0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        app.adelete(&format!("/jobs/{}", ids[0])).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.adelete(&format!("/jobs/{}", ids[0])).await.0,
        StatusCode::NOT_FOUND
    );

    // Bulk.
    assert_400(app.apost("/jobs/delete", json!({})).await, "either");
    assert_400(
        app.apost("/jobs/retry", json!({"state": "scheduled"}))
            .await,
        "not allowed",
    );
    let (status, deleted) = app
        .apost("/jobs/delete", json!({"ids": [ids[1], ids[2]]}))
        .await;
    assert_eq!((status, deleted), (StatusCode::OK, json!({"affected": 2})));
    let (_, deleted) = app
        .apost("/jobs/delete", json!({"state": "scheduled"}))
        .await;
    assert_eq!(deleted, json!({"affected": 2}));
    let (_, retried) = app.apost("/jobs/retry", json!({"state": "dead"})).await;
    assert_eq!(retried, json!({"affected": 0}));

    // Queues.
    let (status, queues) = app.aget("/queues").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(queues["queues"][0]["name"], "dm-jobqueue");
    assert_eq!(queues["queues"][0]["paused"], false);
    let counts = queues["queues"][0]["counts"].as_object().unwrap();
    let keys: Vec<&str> = counts.keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 7, "{keys:?}");
    for k in [
        "scheduled",
        "pending",
        "running",
        "retrying",
        "done",
        "dead",
        "cancelled",
    ] {
        assert!(counts.contains_key(k), "{k}");
    }
    let (status, paused) = app.apost("/queues/dm-jobqueue/pause", json!({})).await;
    assert_eq!(
        (status, paused),
        (
            StatusCode::OK,
            json!({"name": "dm-jobqueue", "paused": true})
        )
    );
    assert_eq!(app.aget("/queues").await.1["queues"][0]["paused"], true);
    let (_, resumed) = app.apost("/queues/dm-jobqueue/resume", json!({})).await;
    assert_eq!(resumed["paused"], false);
    assert_eq!(
        app.apost("/queues/nope/pause", json!({})).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.aget("/queues/nope/history").await.0,
        StatusCode::NOT_FOUND
    );
    let (status, history) = app.aget("/queues/dm-jobqueue/history?minutes=3").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(history["minutes"].as_array().unwrap().len(), 3);
    assert_400(
        app.aget("/queues/dm-jobqueue/history?minutes=0").await,
        "minutes",
    );
    assert_400(
        app.aget("/queues/dm-jobqueue/history?minutes=1441").await,
        "minutes",
    );
}
