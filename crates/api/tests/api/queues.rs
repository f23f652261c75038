//! Named queues through the HTTP API against a real Redis: the `queue` field, listing every
//! queue, the per-queue routes for any queue, and 400/404 for bad or unknown names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{self, JsonApi};
use cacheserver_config::{QueueRateLimit, QueueSettings};
use cacheserver_testkit::RedisServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A jobs API with one declared queue, `critical`: weight 6, concurrency 2, 100 starts a minute.
fn critical_queue_settings(redis: &RedisServer) -> cacheserver_config::Settings {
    let mut settings = common::jobqueue_settings(&redis.addr());
    settings.jobqueue.queues = vec![QueueSettings {
        name: "critical".into(),
        weight: 6,
        concurrency: Some(2),
        rate_limit: Some(QueueRateLimit {
            max: 100,
            per: std::time::Duration::from_secs(60),
        }),
        key_concurrency: None,
        key_rate_limit: None,
    }];
    settings
}

fn job(message: &str, queue: Option<&str>) -> Value {
    let mut body =
        json!({"type": "demo:delay_print", "payload": {"message": message}, "delay_seconds": 600});
    if let Some(queue) = queue {
        body["queue"] = json!(queue);
    }
    body
}

fn assert_error(got: &(StatusCode, Value), status: StatusCode) {
    assert_eq!(got.0, status, "{:?}", got.1);
    assert_eq!(got.1["code"], status.as_u16(), "{:?}", got.1);
    assert!(got.1["message"].is_string(), "{:?}", got.1);
}

fn names(list: &Value) -> Vec<String> {
    list["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn jobs_go_to_the_queue_they_name() {
    let redis = RedisServer::start();
    let api = JsonApi::start(critical_queue_settings(&redis)).await;

    let (status, default) = api.post("/api/jobs", job("d", None)).await;
    assert_eq!(status, StatusCode::CREATED, "{default:?}");
    let (status, reports) = api.post("/api/jobs", job("r", Some("reports"))).await;
    assert_eq!(status, StatusCode::CREATED, "{reports:?}");

    // A job is found by id whatever its queue, and says where it is.
    let id = reports["job_id"].as_str().unwrap();
    let (status, detail) = api.get(&format!("/api/jobs/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["queue"], "reports");
    let default_id = default["job_id"].as_str().unwrap();
    let (_, detail) = api.get(&format!("/api/jobs/{default_id}")).await;
    assert_eq!(detail["queue"], "dm-jobqueue");

    // Batch items name their own queues.
    let (status, batch) = api
        .post(
            "/api/jobs/batch",
            json!({"jobs": [job("b1", Some("critical")), job("b2", Some("reports")), job("b3", None)]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{batch:?}");
    let mut queues = Vec::new();
    for item in batch["jobs"].as_array().unwrap() {
        let id = item["job_id"].as_str().unwrap();
        queues.push(api.get(&format!("/api/jobs/{id}")).await.1["queue"].clone());
    }
    assert_eq!(
        queues,
        [json!("critical"), json!("reports"), json!("dm-jobqueue")]
    );

    // Listing by queue.
    let (status, page) = api.get("/api/jobs?state=scheduled&queue=reports").await;
    assert_eq!(status, StatusCode::OK, "{page:?}");
    assert_eq!(page["jobs"].as_array().unwrap().len(), 2);
    let (_, page) = api.get("/api/jobs?state=scheduled").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 2, "default queue");

    // Delete by id in a queue other than the default.
    let (status, _) = api.delete(&format!("/api/jobs/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.get(&format!("/api/jobs/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, page) = api.get("/api/jobs?state=scheduled&queue=reports").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_queue_names_are_400_and_unknown_queues_404() {
    let redis = RedisServer::start();
    let api = JsonApi::start(critical_queue_settings(&redis)).await;
    let long = "x".repeat(65);
    for bad in ["", "a b", "a:b", "{a}", long.as_str()] {
        let got = api.post("/api/jobs", job("m", Some(bad))).await;
        assert_error(&got, StatusCode::BAD_REQUEST);
        let got = api
            .post("/api/jobs/batch", json!({"jobs": [job("m", Some(bad))]}))
            .await;
        assert_error(&got, StatusCode::BAD_REQUEST);
    }
    let got = api
        .post(
            "/api/jobs",
            json!({"type": "demo:delay_print", "payload": {"message": "m"}, "queue": 7}),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST);

    for path in [
        "/api/queues/never",
        "/api/queues/never/history",
        "/api/jobs?state=pending&queue=never",
    ] {
        assert_error(&api.get(path).await, StatusCode::NOT_FOUND);
    }
    for path in ["/api/queues/never/pause", "/api/queues/never/resume"] {
        assert_error(&api.post(path, json!({})).await, StatusCode::NOT_FOUND);
    }
    let got = api
        .post(
            "/api/jobs/delete",
            json!({"state": "pending", "queue": "never"}),
        )
        .await;
    assert_error(&got, StatusCode::NOT_FOUND);
    assert_error(
        &api.get("/api/jobs?state=pending&queue=a:b").await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(&api.get("/api/queues/a:b").await, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn every_queue_is_listed_and_managed_by_name() {
    let redis = RedisServer::start();
    let api = JsonApi::start(critical_queue_settings(&redis)).await;

    // Before any job: the default and the declared queues.
    let (status, list) = api.get("/api/queues").await;
    assert_eq!(status, StatusCode::OK, "{list:?}");
    assert_eq!(names(&list), ["dm-jobqueue", "critical"]);
    let (status, critical) = api.get("/api/queues/critical/history?minutes=5").await;
    assert_eq!(status, StatusCode::OK, "{critical:?}");

    for i in 0..3 {
        let (status, _) = api
            .post("/api/jobs", job(&format!("r{i}"), Some("reports")))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (_, list) = api.get("/api/queues").await;
    assert_eq!(names(&list), ["dm-jobqueue", "critical", "reports"]);
    let reports = &list["queues"][2];
    assert_eq!(reports["counts"]["scheduled"], 3, "{reports:?}");
    assert_eq!(reports["paused"], false);

    // Pause, resume and counts per queue.
    let (status, body) = api.post("/api/queues/reports/pause", json!({})).await;
    assert_eq!(
        (status, body["paused"].clone()),
        (StatusCode::OK, json!(true))
    );
    let (_, one) = api.get("/api/queues/reports").await;
    assert_eq!(one["paused"], true);
    let (_, default) = api.get("/api/queues/dm-jobqueue").await;
    assert_eq!(
        default["paused"], false,
        "pausing one queue pauses no other"
    );
    let (status, body) = api.post("/api/queues/reports/resume", json!({})).await;
    assert_eq!(
        (status, body["paused"].clone()),
        (StatusCode::OK, json!(false))
    );

    // Bulk delete by state in one queue leaves the others alone.
    api.post("/api/jobs", job("d", None)).await;
    let (status, body) = api
        .post(
            "/api/jobs/delete",
            json!({"state": "scheduled", "queue": "reports"}),
        )
        .await;
    assert_eq!(
        (status, body["affected"].clone()),
        (StatusCode::OK, json!(3))
    );
    let (_, default) = api.get("/api/queues/dm-jobqueue").await;
    assert_eq!(default["counts"]["scheduled"], 1);
    // A queue that had jobs is still a queue once empty.
    let (status, _) = api.get("/api/queues/reports").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn priorities_are_checked_and_shown() {
    let redis = RedisServer::start();
    let api = JsonApi::start(critical_queue_settings(&redis)).await;
    for bad in [
        json!(0),
        json!(11),
        json!(-1),
        json!(300),
        json!("5"),
        json!(null),
        json!(2.5),
    ] {
        let mut body = job("p", None);
        body["priority"] = bad.clone();
        let got = api.post("/api/jobs", body).await;
        assert_error(&got, StatusCode::BAD_REQUEST);
        if bad.is_i64() {
            assert!(
                got.1["message"].as_str().unwrap().contains("priority"),
                "{bad}: {:?}",
                got.1
            );
        }
    }
    let mut bad_item = job("b", None);
    bad_item["priority"] = json!(11);
    let got = api
        .post(
            "/api/jobs/batch",
            json!({"jobs": [job("a", None), bad_item]}),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST);
    assert!(
        got.1["message"].as_str().unwrap().contains("jobs[1]"),
        "{:?}",
        got.1
    );

    let mut high = job("h", None);
    high["priority"] = json!(10);
    let (status, created) = api.post("/api/jobs", high).await;
    assert_eq!(status, StatusCode::CREATED, "{created:?}");
    let (_, detail) = api
        .get(&format!(
            "/api/jobs/{}",
            created["job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(detail["priority"], 10);
    let (_, created) = api.post("/api/jobs", job("d", None)).await;
    let (_, detail) = api
        .get(&format!(
            "/api/jobs/{}",
            created["job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(detail["priority"], 5);
    assert_eq!(detail["limit_key"], Value::Null);

    let long = "k".repeat(201);
    for bad in [json!(""), json!(long), json!(5), json!(null)] {
        let mut body = job("k", None);
        body["limit_key"] = bad.clone();
        assert_error(&api.post("/api/jobs", body).await, StatusCode::BAD_REQUEST);
    }
    let mut keyed = job("k", None);
    keyed["limit_key"] = json!("customer-42");
    let (status, created) = api.post("/api/jobs", keyed).await;
    assert_eq!(status, StatusCode::CREATED, "{created:?}");
    let (_, detail) = api
        .get(&format!(
            "/api/jobs/{}",
            created["job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(detail["limit_key"], "customer-42");
}

/// What the workers wrote to a queue's limits hash (no worker runs here), the slots in use and
/// the due jobs waiting, as `GET /api/queues` shows them; due jobs wait in the priority-ordered
/// ready set and list as pending.
#[tokio::test]
async fn queues_show_their_limits_and_waiting_jobs() {
    let redis = RedisServer::start();
    let api = JsonApi::start(critical_queue_settings(&redis)).await;
    redis.cli(&[
        "HSET",
        "{critical}:limits",
        "concurrency",
        "2",
        "rate_max",
        "100",
        "rate_per_ms",
        "60000",
    ]);
    for (message, priority) in [("low", 1), ("high", 9)] {
        let mut body = job(message, Some("critical"));
        body["delay_seconds"] = json!(0);
        body["priority"] = json!(priority);
        let (status, created) = api.post("/api/jobs", body).await;
        assert_eq!(status, StatusCode::CREATED, "{created:?}");
    }
    let (status, list) = api.get("/api/queues").await;
    assert_eq!(status, StatusCode::OK, "{list:?}");
    let queues = list["queues"].as_array().unwrap();
    let critical = queues.iter().find(|q| q["name"] == "critical").unwrap();
    assert_eq!(
        critical["limits"],
        json!({"concurrency": 2, "rate_limit": {"max": 100, "per_seconds": 60.0}, "running": 0, "waiting": 2, "key_concurrency": null, "key_rate_limit": null})
    );
    assert_eq!(critical["counts"]["pending"], 2);
    let default = queues.iter().find(|q| q["name"] == "dm-jobqueue").unwrap();
    assert_eq!(default["limits"]["concurrency"], Value::Null);
    assert_eq!(default["limits"]["rate_limit"], Value::Null);

    let (status, page) = api.get("/api/jobs?state=pending&queue=critical").await;
    assert_eq!(status, StatusCode::OK, "{page:?}");
    let messages: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["payload"]["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages.len(), 2, "{page:?}");
    assert!(messages.contains(&"low") && messages.contains(&"high"));
}
