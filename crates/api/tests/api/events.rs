//! Job events over SSE (`GET /api/queues/{queue}/events`, `GET /api/jobs/{id}/events`) with a
//! real worker process: every state change arrives in order, a reconnect with `Last-Event-ID`
//! misses none, a client that falls behind gets `lagged` and its stream ends, open streams are
//! capped and freed on disconnect, and `events_max_len: 0` writes
//! no stream (while `?wait=` still answers). Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{eventually, spawn_app, within, TestApp};
use cacheserver_testkit::{worker_binary, RedisServer, WorkerCommand, WorkerProcess};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

const BOUND: Duration = Duration::from_secs(30);
const QUEUE_EVENTS: &str = "/api/queues/dm-jobqueue/events";

async fn start(redis: &RedisServer, extra: &[(&str, &str)]) -> (TestApp, WorkerProcess) {
    let addr = redis.addr();
    let mut settings = vec![
        ("APP__API__RATE_LIMIT__ENABLED", "false"),
        ("APP__API__RATE_LIMIT__STORAGE_TYPE", "memory"),
        ("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", addr.as_str()),
    ];
    settings.extend_from_slice(extra);
    let app = spawn_app(&settings).await;
    let worker = WorkerCommand::new(worker_binary())
        .redis(&addr)
        .name("w-events")
        .envs(extra.iter().copied())
        .start()
        .await;
    (app, worker)
}

/// One parsed SSE event.
#[derive(Debug, Clone)]
struct Sse {
    id: String,
    event: String,
    data: Value,
}

/// A tiny SSE reader over a streaming response: comments and `retry:` are skipped.
struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    async fn open(app: &TestApp, path: &str, last_event_id: Option<&str>) -> Self {
        let mut req = app
            .http
            .get(app.url(path))
            .timeout(Duration::from_secs(120));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(
            crate::common::header(&resp, "content-type"),
            "text/event-stream"
        );
        // Never through the response cache (which marks every answer it sees, even a bypass).
        assert_eq!(crate::common::header(&resp, "x-cache"), "", "{path}");
        Self {
            resp,
            buf: String::new(),
        }
    }

    /// The next event; `None` when the stream ended.
    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut sse = Sse {
                    id: String::new(),
                    event: String::new(),
                    data: Value::Null,
                };
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        sse.id = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        sse.event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        sse.data = serde_json::from_str(v).unwrap();
                    }
                }
                if !sse.event.is_empty() {
                    return Some(sse);
                }
                continue;
            }
            let chunk = self.resp.chunk().await.unwrap()?;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

async fn register_batch(app: &TestApp, n: usize, prefix: &str) -> Vec<String> {
    let jobs: Vec<Value> = (0..n)
        .map(|i| json!({"type": "demo:delay_print", "payload": {"message": format!("{prefix} {i}")}, "delay_seconds": 0}))
        .collect();
    let resp = app
        .http
        .post(app.url("/api/jobs/batch"))
        .json(&json!({ "jobs": jobs }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.unwrap();
    body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_sse_client_sees_every_state_change_of_100_jobs_in_order_and_a_reconnect_misses_none() {
    let redis = RedisServer::start();
    let (app, _worker) = start(&redis, &[]).await;
    let mut sse = SseReader::open(&app, QUEUE_EVENTS, None).await;
    let ids = register_batch(&app, 100, "sse").await;

    // Read part of the events, drop the connection, resume with the last id seen.
    let mut seen: HashMap<String, Vec<Sse>> = HashMap::new();
    let mut last_id = String::new();
    let mut count = 0;
    let collect = |seen: &mut HashMap<String, Vec<Sse>>, event: Sse| {
        let job = event.data["job_id"].as_str().unwrap().to_owned();
        seen.entry(job).or_default().push(event);
    };
    within(BOUND, "the first 120 events", async {
        while count < 120 {
            let event = sse.next().await.expect("stream open");
            last_id = event.id.clone();
            collect(&mut seen, event);
            count += 1;
        }
    })
    .await;
    drop(sse);
    let mut sse = SseReader::open(&app, QUEUE_EVENTS, Some(&last_id)).await;
    let all_done = |seen: &HashMap<String, Vec<Sse>>| {
        ids.iter().all(|id| {
            seen.get(id)
                .is_some_and(|e| e.iter().any(|e| e.event == "done"))
        })
    };
    within(BOUND, "every job done", async {
        while !all_done(&seen) {
            let event = sse.next().await.expect("stream open");
            collect(&mut seen, event);
        }
    })
    .await;

    for id in &ids {
        let events = &seen[id];
        let states: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(states, ["registered", "started", "done"], "job {id}");
        for (e, attempt) in events.iter().zip([0, 1, 1]) {
            assert_eq!(e.data["state"], e.event.as_str());
            assert_eq!(e.data["type"], "demo:delay_print");
            assert_eq!(e.data["queue"], "dm-jobqueue");
            assert_eq!(e.data["attempt"], attempt, "{id}: {:?}", e.data);
            assert_eq!(e.data["event_id"], e.id.as_str());
            assert!(e.data["time"].as_u64().unwrap() > 1_700_000_000_000);
        }
    }

    // One job's stream: its events still in the stream, then the end.
    let job = &ids[7];
    let mut one = SseReader::open(&app, &format!("/api/jobs/{job}/events"), None).await;
    let mut states = Vec::new();
    within(BOUND, "the job's stream to end", async {
        while let Some(event) = one.next().await {
            assert_eq!(event.data["job_id"], job.as_str());
            states.push(event.event);
        }
    })
    .await;
    assert_eq!(states, ["registered", "started", "done"]);
}

#[tokio::test]
async fn a_job_stream_follows_a_running_job_to_its_end_and_bad_input_is_rejected() {
    let redis = RedisServer::start();
    let (app, _worker) = start(&redis, &[]).await;
    let resp = app
        .http
        .post(app.url("/api/jobs"))
        .json(&json!({"type": "demo:delay_print", "payload": {"message": "slow:600:followed"}, "delay_seconds": 0}))
        .send()
        .await
        .unwrap();
    let id = resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut sse = SseReader::open(&app, &format!("/api/jobs/{id}/events"), None).await;
    let mut states = Vec::new();
    within(BOUND, "the job's stream to end", async {
        while let Some(event) = sse.next().await {
            if event.event == "progress" {
                assert!(
                    event.data["progress"]["percent"].is_u64(),
                    "{:?}",
                    event.data
                );
            }
            states.push(event.event);
        }
    })
    .await;
    assert_eq!(states.first().map(String::as_str), Some("registered"));
    assert_eq!(states.get(1).map(String::as_str), Some("started"));
    assert_eq!(states.last().map(String::as_str), Some("done"));
    assert!(
        states[2..states.len() - 1].iter().all(|s| s == "progress"),
        "{states:?}"
    );

    // Unknown queue, unknown job, a bad resume point.
    let unknown = ulid::Ulid::new().to_string();
    for (path, status) in [
        ("/api/queues/nope/events".to_owned(), 404),
        (format!("/api/jobs/{unknown}/events"), 404),
        ("/api/jobs/not-a-ulid/events".to_owned(), 400),
        (format!("{QUEUE_EVENTS}?last_event_id=yesterday"), 400),
    ] {
        let resp = app.get(&path).await;
        assert_eq!(resp.status().as_u16(), status, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], status, "{path}: {body}");
    }
    let resp = app
        .http
        .get(app.url(QUEUE_EVENTS))
        .header("Last-Event-ID", "12-x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn open_streams_are_capped_with_503_and_a_disconnect_frees_one() {
    let redis = RedisServer::start();
    let app = spawn_app(&[
        ("APP__API__RATE_LIMIT__ENABLED", "false"),
        ("APP__API__RATE_LIMIT__STORAGE_TYPE", "memory"),
        ("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", &redis.addr()),
        ("APP__API__MAX_EVENT_STREAMS", "2"),
        // A vanished client is noticed when a write to it fails: at the latest at the second
        // heartbeat after it left (the first may still fit in the socket's buffer).
        ("APP__API__EVENT_HEARTBEAT", "200ms"),
    ])
    .await;
    // The cache covers `/api/queues` (config/base): the queue's own route goes through it.
    let queue = app.get("/api/queues/dm-jobqueue").await;
    assert_ne!(crate::common::header(&queue, "x-cache"), "");
    let first = SseReader::open(&app, QUEUE_EVENTS, None).await;
    let _second = SseReader::open(&app, QUEUE_EVENTS, None).await;
    let resp = app.get(QUEUE_EVENTS).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 503, "{body}");
    assert_eq!(app.state.event_streams.available_permits(), 0);

    drop(first);
    eventually(BOUND, "the closed stream's permit back", || async {
        match app.state.event_streams.available_permits() {
            1 => Ok(()),
            n => Err(n),
        }
    })
    .await;
    let _third = SseReader::open(&app, QUEUE_EVENTS, None).await;
}

#[tokio::test]
async fn events_max_len_0_writes_no_stream_and_wait_still_answers() {
    let redis = RedisServer::start();
    let (app, _worker) = start(&redis, &[("APP__JOBQUEUE__EVENTS_MAX_LEN", "0")]).await;
    let id = register_batch(&app, 1, "no events").await.remove(0);
    let resp = app.get(&format!("/api/jobs/{id}?wait=30")).await;
    let job: Value = resp.json().await.unwrap();
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(redis.cli(&["EXISTS", "dm-jobqueue:events"]).trim(), "0");
    for path in [QUEUE_EVENTS.to_owned(), format!("/api/jobs/{id}/events")] {
        let resp = app.get(&path).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap().contains("events_max_len"),
            "{body}"
        );
    }
}

/// A client that stops reading while its queue's events pile up falls more than the feed's
/// broadcast buffer ([`FEED_BUFFER`]) behind the queue's watcher: it gets `event: lagged` and
/// its stream ends. The client is a raw socket with a small receive buffer that reads nothing
/// after the headers, so the api can push only what the kernel's buffers hold (at most the
/// send buffer's maximum, `tcp_wmem`) before it stops pulling the feed; enough events are
/// registered to overflow that plus the buffer. A second, reading client on the same queue
/// (same watcher) tells when the watcher has broadcast each batch.
#[tokio::test]
async fn a_client_that_falls_behind_gets_lagged_and_its_stream_ends() {
    use cacheserver_jobqueue::{NewJob, FEED_BUFFER, MAX_BATCH};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let redis = RedisServer::start();
    let app = spawn_app(&[
        ("APP__API__RATE_LIMIT__ENABLED", "false"),
        ("APP__API__RATE_LIMIT__STORAGE_TYPE", "memory"),
        ("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", &redis.addr()),
    ])
    .await;
    let addr: std::net::SocketAddr = app
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("api address");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(addr).await.unwrap();
    slow.write_all(
        format!("GET {QUEUE_EVENTS} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    within(BOUND, "the slow client's response head", async {
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            slow.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
    })
    .await;
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut fast = SseReader::open(&app, QUEUE_EVENTS, None).await;

    // A registered event's frame is well over 150 bytes (ids, queue, type, time as JSON).
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20);
    let n = FEED_BUFFER + (wmem_max + (256 << 10)) / 150;
    // One batch at a time, each seen by the reading client before the next: it stays well
    // within the buffer, the slow one falls further behind with every batch.
    for start in (0..n).step_by(MAX_BATCH) {
        let jobs = (start..n.min(start + MAX_BATCH))
            .map(|i| NewJob::delay_print(format!("lag {i}")))
            .collect();
        let stored = app.state.jobs.enqueue_batch(jobs).await.unwrap();
        let last = stored.last().unwrap().job_id.clone();
        within(
            BOUND,
            "the reading client sees the batch's last registration",
            async {
                loop {
                    let sse = fast
                        .next()
                        .await
                        .expect("the reading client's stream ended");
                    assert_ne!(sse.event, "lagged", "the reading client lagged");
                    if sse.data["job_id"] == last.as_str() {
                        break;
                    }
                }
            },
        )
        .await;
    }

    // Now the slow client reads: what the api wrote before it stopped, then `lagged`, then the end
    // of the chunked body (the connection then closes: `Connection: close`).
    let mut body = Vec::new();
    within(BOUND, "the slow client's stream to end", async {
        slow.read_to_end(&mut body).await.unwrap();
    })
    .await;
    let body = String::from_utf8_lossy(&body);
    let lagged = body
        .find("event: lagged\n")
        .unwrap_or_else(|| panic!("no lagged event in {} bytes", body.len()));
    let after = &body[lagged..];
    assert!(after.contains("reconnect with Last-Event-ID"), "{after}");
    assert!(after.ends_with("\r\n0\r\n\r\n"), "not the end: {after}");
    assert_eq!(
        after.matches("\nevent: ").count(),
        0,
        "events after lagged: {after}"
    );
    let registered = body.matches("event: registered\n").count();
    assert!(
        registered < n,
        "{registered} of {n} events reached the slow client"
    );
}
