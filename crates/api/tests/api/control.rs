//! Results, progress and cancel over HTTP: the real app, a real Redis and a real `worker`
//! process. Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{eventually, spawn_app, TestApp};
use cacheserver_testkit::{message_of, worker_binary, RedisServer, WorkerCommand, WorkerProcess};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

const BOUND: Duration = Duration::from_secs(15);

async fn start(redis: &RedisServer) -> (TestApp, WorkerProcess) {
    let addr = redis.addr();
    let app = spawn_app(&[
        ("APP__API__RATE_LIMIT__ENABLED", "false"),
        ("APP__API__RATE_LIMIT__STORAGE_TYPE", "memory"),
        ("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", addr.as_str()),
    ])
    .await;
    let worker = WorkerCommand::new(worker_binary())
        .redis(&addr)
        .name("w-control")
        .start()
        .await;
    (app, worker)
}

async fn call(app: &TestApp, post: bool, path: &str, body: Value) -> (StatusCode, Value) {
    let url = app.url(&format!("/api{path}"));
    let req = if post {
        app.http.post(url).json(&body)
    } else {
        app.http.get(url)
    };
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn register(app: &TestApp, message: &str, delay_seconds: u64) -> String {
    let body = json!({"type": "demo:delay_print", "payload": {"message": message},
                      "delay_seconds": delay_seconds, "max_retry": 3});
    let (status, body) = call(app, true, "/jobs", body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["job_id"].as_str().unwrap().to_owned()
}

/// `GET /api/jobs/{id}` until `check` holds.
async fn wait_job(app: &TestApp, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(BOUND, &format!("job {id}: {what}"), || async {
        let (_, job) = call(app, false, &format!("/jobs/{id}"), Value::Null).await;
        if check(&job) {
            Ok(job)
        } else {
            Err(job)
        }
    })
    .await
}

fn running_with_progress(job: &Value) -> bool {
    job["status"] == "running" && job["progress"]["percent"].is_u64()
}

#[tokio::test]
async fn result_and_progress_show_in_the_job_and_a_65_kb_result_fails_the_run() {
    let redis = RedisServer::start();
    let (app, _worker) = start(&redis).await;
    let id = register(&app, "slow:1500:reported", 0).await;
    let running = wait_job(&app, &id, "running with progress", running_with_progress).await;
    assert!(running["result"].is_null(), "{running}");
    assert_eq!(running["cancel_requested"], false);
    let done = wait_job(&app, &id, "done", |j| j["status"] == "done").await;
    assert_eq!(done["result"], json!({"printed": "slow:1500:reported"}));
    assert_eq!(done["progress"]["percent"], 90, "{done}");

    let big = register(&app, "big:66560:too big", 0).await;
    let dead = wait_job(&app, &big, "dead", |j| j["status"] == "dead").await;
    assert_eq!(dead["attempts"], 1, "{dead}");
    let error = dead["last_error"].as_str().unwrap();
    assert!(error.contains("result too large"), "{error}");
    assert!(dead["result"].is_null());
}

#[tokio::test]
async fn cancel_stops_running_jobs_removes_waiting_ones_and_answers_409_404_400() {
    let redis = RedisServer::start();
    let (app, worker) = start(&redis).await;
    let message = "slow:20000:cancelled over http";
    let running = register(&app, message, 0).await;
    wait_job(
        &app,
        &running,
        "running with progress",
        running_with_progress,
    )
    .await;
    let (status, body) = call(&app, true, &format!("/jobs/{running}/cancel"), Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"job_id": running, "status": "running"}));
    let cancelled = wait_job(&app, &running, "cancelled", |j| j["status"] == "cancelled").await;
    assert!(cancelled["finished_at"].is_string(), "{cancelled}");

    let scheduled = register(&app, "scheduled, then cancelled", 3600).await;
    let (status, body) = call(
        &app,
        true,
        &format!("/jobs/{scheduled}/cancel"),
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "cancelled");

    // Finished → 409, unknown → 404, not an id → 400.
    let (status, body) = call(&app, true, &format!("/jobs/{running}/cancel"), Value::Null).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("cancelled"),
        "{body}"
    );
    let unknown = ulid::Ulid::new().to_string();
    let (status, _) = call(&app, true, &format!("/jobs/{unknown}/cancel"), Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&app, true, "/jobs/not-an-id/cancel", Value::Null).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Bulk: by ids, then by state; a finished state is refused.
    let a = register(&app, "bulk a", 3600).await;
    let b = register(&app, "bulk b", 3600).await;
    let c = register(&app, "bulk c", 3600).await;
    let (status, body) = call(&app, true, "/jobs/cancel", json!({"ids": [a, b, running]})).await;
    assert_eq!(
        (status, body["affected"].clone()),
        (StatusCode::OK, json!(2)),
        "{body}"
    );
    let (status, body) = call(&app, true, "/jobs/cancel", json!({"state": "scheduled"})).await;
    assert_eq!(
        (status, body["affected"].clone()),
        (StatusCode::OK, json!(1)),
        "{body}"
    );
    let (status, _) = call(&app, true, "/jobs/cancel", json!({"state": "done"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, job) = call(&app, false, &format!("/jobs/{c}"), Value::Null).await;
    assert_eq!(job["status"], "cancelled");

    // Counted and listed as their own state.
    let (status, page) = call(&app, false, "/jobs?state=cancelled", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["jobs"].as_array().unwrap().len(), 5, "{page}");
    let (_, queue) = call(&app, false, "/queues/dm-jobqueue", Value::Null).await;
    assert_eq!(queue["counts"]["cancelled"], 5, "{queue}");
    assert_eq!(queue["counts"]["scheduled"], 0, "{queue}");

    // The cancelled run never printed (a later job's line shows the output is read that far).
    let marker = register(&app, "marker", 0).await;
    wait_job(&app, &marker, "done", |j| j["status"] == "done").await;
    assert!(
        worker
            .wait_for_line(cacheserver_testkit::Stream::Stdout, BOUND, |l| message_of(
                l
            )
                == "marker")
            .await
    );
    assert!(!worker.messages().iter().any(|m| m == message));
}

#[tokio::test]
async fn the_spec_types_result_progress_and_cancel() {
    let redis = RedisServer::start();
    let addr = redis.addr();
    let app = spawn_app(&[("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", addr.as_str())]).await;
    let spec: Value = app
        .http
        .get(app.url("/api-docs/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemas = &spec["components"]["schemas"];
    let results: Vec<&str> = schemas["JobResult"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["$ref"].as_str())
        .collect();
    assert!(
        results.contains(&"#/components/schemas/DelayPrintResult")
            && results.contains(&"#/components/schemas/WebhookResult"),
        "{results:?}"
    );
    assert_eq!(
        schemas["WebhookResult"]["properties"]["status"]["type"],
        "integer"
    );
    let detail = schemas["JobDetail"]["properties"].to_string();
    assert!(
        detail.contains("#/components/schemas/JobResult"),
        "{detail}"
    );
    assert!(
        detail.contains("#/components/schemas/JobProgress"),
        "{detail}"
    );
    let cancel = &spec["paths"]["/api/jobs/{id}/cancel"]["post"]["responses"];
    for status in ["200", "404", "409"] {
        assert!(cancel[status].is_object(), "{status}: {cancel}");
    }
}

#[tokio::test]
async fn wait_answers_when_the_job_ends_or_with_its_state_when_the_wait_is_over() {
    let redis = RedisServer::start();
    let (app, worker) = start(&redis).await;
    let id = register(&app, "slow:1000:awaited", 0).await;
    // A job due 5 s from now: still scheduled when the answer comes proves the answer did not
    // wait out the 10 s (events in order, no clock read).
    let later = register(&app, "due in five seconds", 5).await;
    let (status, job) = call(&app, false, &format!("/jobs/{id}?wait=10"), Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["result"], json!({"printed": "slow:1000:awaited"}));
    assert!(worker.messages().iter().any(|m| m == "slow:1000:awaited"));
    let (_, pending) = call(&app, false, &format!("/jobs/{later}"), Value::Null).await;
    assert_eq!(pending["status"], "scheduled", "{pending}");

    // The wait ends first: the job as it is then.
    let far = register(&app, "far ahead", 3600).await;
    let (status, job) = call(&app, false, &format!("/jobs/{far}?wait=1"), Value::Null).await;
    assert_eq!(
        (status, job["status"].clone()),
        (StatusCode::OK, json!("scheduled"))
    );

    // A cancel from another client ends a wait.
    let path = format!("/jobs/{far}?wait=30");
    let waiting = {
        let app_url = app.url(&format!("/api{path}"));
        let http = app.http.clone();
        tokio::spawn(async move {
            http.get(app_url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
        })
    };
    // (Should the cancel come before the wait registers, the wait reads the job cancelled at
    // once: either way it answers cancelled.)
    let (status, _) = call(&app, true, &format!("/jobs/{far}/cancel"), Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    let job = waiting.await.unwrap().unwrap();
    assert_eq!(job["status"], "cancelled", "{job}");

    // Bad input.
    for bad in ["0", "61", "abc"] {
        let (status, body) =
            call(&app, false, &format!("/jobs/{id}?wait={bad}"), Value::Null).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "wait={bad}: {body}");
    }
    let unknown = ulid::Ulid::new().to_string();
    let (status, _) = call(&app, false, &format!("/jobs/{unknown}?wait=5"), Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
