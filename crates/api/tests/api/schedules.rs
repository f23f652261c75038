//! Schedules through the HTTP API against a real Redis: create, list, read, replace, pause,
//! resume, trigger, delete; 400 naming a bad cron, zone, name or job; 404 for unknown names;
//! 409 for a taken name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{self, JsonApi};
use cacheserver_testkit::RedisServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn nightly() -> Value {
    json!({
        "name": "nightly",
        "cron": "0 3 * * *",
        "timezone": "Europe/Berlin",
        "job": {"type": "demo:delay_print", "payload": {"message": "report"}, "max_retry": 2},
        "overlap": "skip",
        "missed": "run_once",
    })
}

#[tokio::test]
async fn schedules_are_managed_through_the_api() {
    let redis = RedisServer::start();
    let api = JsonApi::start(common::jobqueue_settings(&redis.addr())).await;

    let (status, created) = api.post("/api/schedules", nightly()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "nightly");
    assert_eq!(created["timezone"], "Europe/Berlin");
    assert_eq!(created["paused"], false);
    assert_eq!(created["source"], "api");
    assert_eq!(created["last_job_id"], Value::Null);
    // 03:00 in Berlin is 01:00 or 02:00 UTC, depending on daylight saving time.
    let next = created["next_run_at"].as_str().unwrap();
    let next = chrono::DateTime::parse_from_rfc3339(next).unwrap();
    assert!(next > chrono::Utc::now());
    let berlin = next.with_timezone(&chrono_tz::Europe::Berlin);
    assert_eq!(berlin.format("%H:%M:%S").to_string(), "03:00:00");

    let (status, body) = api.post("/api/schedules", nightly()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let (status, list) = api.get("/api/schedules").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["schedules"].as_array().unwrap().len(), 1);

    // Replace with the same timing: the next tick stays.
    let mut update = nightly();
    update.as_object_mut().unwrap().remove("name");
    update["job"]["payload"]["message"] = json!("report v2");
    let (status, replaced) = api.put("/api/schedules/nightly", update.clone()).await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["job"]["payload"]["message"], "report v2");
    assert_eq!(replaced["next_run_at"], created["next_run_at"]);

    let (status, paused) = api.post("/api/schedules/nightly/pause", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (paused["paused"].clone(), paused["next_run_at"].clone()),
        (json!(true), Value::Null)
    );
    let (status, resumed) = api.post("/api/schedules/nightly/resume", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resumed["paused"], false);
    assert_eq!(resumed["next_run_at"], created["next_run_at"]);

    let (status, triggered) = api.post("/api/schedules/nightly/trigger", json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{triggered}");
    let job_id = triggered["job_id"].as_str().unwrap();
    let (status, job) = api.get(&format!("/api/jobs/{job_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["payload"]["message"], "report v2");
    let (_, read) = api.get("/api/schedules/nightly").await;
    assert_eq!(read["last_job_id"], job_id);

    let (status, _) = api.delete("/api/schedules/nightly").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = api.get("/api/schedules/nightly").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn bad_schedules_are_400_naming_the_problem_and_unknown_ones_404() {
    let redis = RedisServer::start();
    let api = JsonApi::start(common::jobqueue_settings(&redis.addr())).await;
    let with = |field: &str, value: Value| {
        let mut body = nightly();
        body[field] = value;
        body
    };
    let cases = [
        (with("cron", json!("61 * * * *")), "61 * * * *"),
        (with("cron", json!("* * *")), "* * *"),
        (with("timezone", json!("Mars/Olympus")), "Mars/Olympus"),
        (with("name", json!("no spaces")), "no spaces"),
        (
            with("job", json!({"type": "nope:nothing", "payload": {}})),
            "nope:nothing",
        ),
        (
            with("job", json!({"type": "demo:delay_print", "payload": {}})),
            "message",
        ),
        (with("overlap", json!("sometimes")), "sometimes"),
    ];
    for (body, named) in cases {
        let (status, answer) = api.post("/api/schedules", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        assert_eq!(answer["code"], 400);
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(named), "{body}: {message}");
    }
    let (status, list) = api.get("/api/schedules").await;
    assert_eq!((status, list), (StatusCode::OK, json!({"schedules": []})));

    let mut update = nightly();
    update.as_object_mut().unwrap().remove("name");
    for (method, path) in [
        ("GET", "/api/schedules/ghost"),
        ("PUT", "/api/schedules/ghost"),
        ("DELETE", "/api/schedules/ghost"),
        ("POST", "/api/schedules/ghost/pause"),
        ("POST", "/api/schedules/ghost/resume"),
        ("POST", "/api/schedules/ghost/trigger"),
    ] {
        let (status, body) = match method {
            "GET" => api.get(path).await,
            "PUT" => api.put(path, update.clone()).await,
            "DELETE" => api.delete(path).await,
            _ => api.post(path, json!({})).await,
        };
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert_eq!(body["code"], 404);
        assert!(body["message"].as_str().unwrap().contains("ghost"));
    }
    let (status, body) = api.get("/api/schedules/bad~name").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}
