//! The job queue against real Redis and the real `worker` binary. Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use crate::common::{queue, settings};
use cacheserver_jobqueue::{JobInfo, JobQueue, JobQueueError, JobStatus, NewJob};
use cacheserver_testkit::{
    eventually, message_of, Line, RedisServer, Stream, WorkerCommand, WorkerProcess,
};
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn job(message: &str, delay_ms: u64, max_retry: u32) -> NewJob {
    NewJob::delay_print(message)
        .after(Duration::from_millis(delay_ms))
        .retries(max_retry)
}

/// A `worker` process (the testkit's) on `redis`, named `name`, with quick retries.
async fn start_worker(
    redis: &RedisServer,
    name: &str,
    extra_env: &[(&str, &str)],
) -> WorkerProcess {
    WorkerCommand::new(env!("CARGO_BIN_EXE_worker"))
        .redis(&redis.addr())
        .name(name)
        .env("APP__LOGGING__LEVEL", "info")
        .env("APP__JOBQUEUE__WORKER__RETRY_BACKOFF", "100ms")
        .envs(extra_env.iter().copied())
        .start()
        .await
}

/// When `message` was printed, and its line.
fn seen_at(worker: &WorkerProcess, message: &str) -> Option<(DateTime<Utc>, String)> {
    worker
        .lines(Stream::Stdout)
        .into_iter()
        .find(|l| message_of(&l.text) == message)
        .map(|l| (DateTime::<Utc>::from(l.at), l.text))
}

/// Wait until the printed lines satisfy `check`, at most `bound`.
async fn wait_lines(
    worker: &WorkerProcess,
    bound: Duration,
    check: impl FnMut(&[Line]) -> bool,
) -> bool {
    worker.wait_for(Stream::Stdout, bound, check).await
}

/// Wait until `message` is printed, at most `bound`.
async fn wait_printed(worker: &WorkerProcess, bound: Duration, message: &str) -> bool {
    worker
        .wait_for_line(Stream::Stdout, bound, |l| message_of(l) == message)
        .await
}

/// Wait until job `id` has status `want`, at most `bound`; panics naming the last status seen.
async fn wait_for_status(q: &JobQueue, id: &str, want: JobStatus, bound: Duration) -> JobInfo {
    let what = format!("job {id} becomes {want:?}");
    eventually(bound, &what, || async {
        match q.status(id).await {
            Ok(Some(info)) if info.status == want => Ok(info),
            other => Err(other.map(|o| o.map(|i| i.status))),
        }
    })
    .await
}

#[tokio::test]
async fn delayed_jobs_run_after_their_delay_never_early_and_done_jobs_are_trimmed() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let worker = start_worker(
        &redis,
        "w-delay",
        &[("APP__JOBQUEUE__DONE_RETENTION", "1s")],
    )
    .await;
    let mut expected = Vec::new();
    for i in 0..20u64 {
        let message = format!("hello {i}");
        let enqueued = q.enqueue(job(&message, 1000 + i * 37, 0)).await.unwrap();
        assert_eq!(
            q.status(&enqueued.job_id).await.unwrap().unwrap().status,
            JobStatus::Scheduled
        );
        expected.push((message, enqueued));
    }
    assert!(
        wait_lines(&worker, Duration::from_secs(10), |l| l.len() >= 20).await,
        "only {:?} ran",
        worker.messages()
    );
    let line_format = |l: &str| {
        l.len() > 22
            && l.starts_with('[')
            && chrono::NaiveDateTime::parse_from_str(&l[1..20], "%Y-%m-%d %H:%M:%S").is_ok()
            && &l[20..22] == "] "
    };
    let mut late_ms = Vec::new();
    for (message, enqueued) in &expected {
        let (at, line) = seen_at(&worker, message).expect("line printed");
        assert!(line_format(&line), "bad line {line:?}");
        let late = (at - enqueued.run_at).num_milliseconds();
        assert!(late >= 0, "{message} ran {late} ms early");
        late_ms.push(late);
    }
    late_ms.sort_unstable();
    println!("lateness ms: {late_ms:?}");
    assert!(*late_ms.last().unwrap() < 500, "too late: {late_ms:?}");
    assert_eq!(worker.messages().len(), 20, "a job ran twice");

    // Done, then trimmed after done_retention (1 s) by the worker's housekeeping.
    let id = &expected[0].1.job_id;
    let info = q.status(id).await.unwrap();
    assert!(info.is_none_or(|i| i.status == JobStatus::Done && i.attempts == 1));
    eventually(Duration::from_secs(10), "done job trimmed", || async {
        match q.status(id).await.unwrap() {
            None => Ok(()),
            Some(info) => Err(info.status),
        }
    })
    .await;
    let (code, _) = worker.get("/health").await.unwrap();
    assert_eq!(code, 200);
}

#[tokio::test]
async fn failing_job_runs_exactly_1_plus_max_retry_times_then_is_dead_and_retry_revives_it() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let worker = start_worker(&redis, "w-fail", &[]).await;
    let id = q.enqueue(job("fail: boom", 0, 3)).await.unwrap().job_id;
    wait_for_status(&q, &id, JobStatus::Dead, Duration::from_secs(15)).await;
    let info = q.status(&id).await.unwrap().unwrap();
    assert_eq!(info.attempts, 4, "{info:?}");
    assert!(info.last_error.as_deref().unwrap().contains("boom"));
    let attempts: Vec<u32> = info.errors.iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, [4, 3, 2, 1], "newest first: {:?}", info.errors);
    assert!(
        info.finished_at.is_some() && info.started_at.is_some(),
        "{info:?}"
    );
    assert_eq!(info.job_type, "demo:delay_print");
    // The runner counts before apalis stores the job as dead: no wait needed.
    let (_, metrics) = worker.get("/metrics").await.unwrap();
    assert!(
        metrics.contains(r#"jobqueue_jobs_failed_total{type="demo:delay_print"} 4"#),
        "metrics: {metrics}"
    );
    assert!(metrics.contains(r#"jobqueue_jobs_dead_total{type="demo:delay_print"} 1"#));
    assert_eq!(q.stats().await.unwrap().dead, 1);
    let dead = q.dead_jobs(50).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].job_id.as_str(), dead[0].status),
        (id.as_str(), JobStatus::Dead)
    );

    // Retry: dead → pending → runs 4 more times → dead again.
    let retried = q.retry(&id).await.unwrap();
    assert_eq!(retried.status, JobStatus::Pending);
    assert!(matches!(
        q.retry(&id).await,
        Err(JobQueueError::NotDead { .. })
    ));
    assert!(matches!(
        q.retry("01NOTAJOB").await,
        Err(JobQueueError::NotFound(_))
    ));
    wait_for_status(&q, &id, JobStatus::Dead, Duration::from_secs(15)).await;
    let (_, metrics) = worker.get("/metrics").await.unwrap();
    assert!(
        metrics.contains(r#"jobqueue_jobs_failed_total{type="demo:delay_print"} 8"#),
        "{metrics}"
    );

    assert!(q.delete(&id).await.unwrap());
    assert!(!q.delete(&id).await.unwrap());
    assert!(q.status(&id).await.unwrap().is_none());
}

#[tokio::test]
async fn sigkilled_worker_jobs_complete_on_a_worker_with_another_name() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let mut first = start_worker(
        &redis,
        "w-doomed",
        &[("APP__JOBQUEUE__WORKER__CONCURRENCY", "1")],
    )
    .await;
    // Each job takes 100 ms, so the single-slot worker is killed while it holds one.
    let jobs: Vec<NewJob> = (0..300)
        .map(|i| job(&format!("slow:100:k{i}"), 500, 0))
        .collect();
    q.enqueue_batch(jobs).await.unwrap();
    let inflight = || {
        redis
            .cli(&["SCARD", "dm-jobqueue:inflight:w-doomed"])
            .parse::<u64>()
            .unwrap_or(0)
            > 0
    };
    assert!(wait_lines(&first, Duration::from_secs(10), |l| !l.is_empty()).await);
    eventually(
        Duration::from_secs(5),
        "a job in flight on w-doomed",
        || std::future::ready(inflight()),
    )
    .await;
    first.kill();
    let orphaned: u64 = redis
        .cli(&["SCARD", "dm-jobqueue:inflight:w-doomed"])
        .parse()
        .unwrap();
    assert!(orphaned > 0, "no job was in flight when the worker died");
    let ran_first: HashSet<String> = first.messages().into_iter().collect();
    let second = start_worker(&redis, "w-heir", &[]).await;
    let all_printed = wait_lines(&second, Duration::from_secs(25), |lines| {
        let mut seen = ran_first.clone();
        seen.extend(lines.iter().map(|l| message_of(&l.text).to_owned()));
        seen.len() == 300
    })
    .await;
    assert!(
        all_printed,
        "first {} second {}",
        ran_first.len(),
        second.messages().len()
    );
    // Every job, including those the dead worker held, is finished (acked) by the heir.
    eventually(Duration::from_secs(20), "all 300 jobs done", || async {
        let stats = q.stats().await.unwrap();
        if stats.done == 300 {
            Ok(())
        } else {
            Err(stats)
        }
    })
    .await;
    assert_eq!(redis.cli(&["EXISTS", "dm-jobqueue:inflight:w-doomed"]), "0");
}

#[tokio::test]
async fn enqueue_is_unavailable_within_its_timeout_while_redis_is_down_and_reconnects() {
    let mut redis = RedisServer::reserve();
    let q = queue(&redis); // enqueue_timeout 500ms
                           // Bounded by the enqueue timeout: a hang past 1.5 s fails.
    let enqueue = tokio::time::timeout(Duration::from_millis(1500), q.enqueue(job("x", 0, 0)));
    let err = enqueue.await.expect("no hang").unwrap_err();
    assert!(matches!(err, JobQueueError::Unavailable(_)), "{err:?}");
    assert!(q.ping().await.is_err());
    assert!(!q.is_connected());

    redis.restart();
    eventually(
        Duration::from_secs(5),
        "enqueue after the restart",
        || async { q.enqueue(job("x", 0, 0)).await },
    )
    .await;
    assert!(q.is_connected());

    // Chaos reset: the server sees the connections go, the next call reconnects.
    for _ in 0..4 {
        q.ping().await.unwrap();
    }
    let clients = || redis.cli(&["CLIENT", "LIST"]).lines().count();
    let before = clients();
    let closed = q.reset_connections().await;
    assert!(
        closed >= 1 && closed == before - 1,
        "closed {closed}, clients before {before}"
    );
    eventually(Duration::from_secs(2), "only redis-cli connected", || {
        std::future::ready(if clients() == 1 {
            Ok(())
        } else {
            Err(redis.cli(&["CLIENT", "LIST"]))
        })
    })
    .await;
    assert_eq!(q.connection_count(), 0);
    q.ping().await.unwrap();
    assert!(q.connection_count() >= 1);
}

#[tokio::test]
async fn worker_process_survives_a_redis_restart_and_drains_on_sigterm() {
    let mut redis = RedisServer::start();
    let q = queue(&redis);
    let mut worker = start_worker(&redis, "w-survivor", &[]).await;
    q.enqueue(job("before", 0, 0)).await.unwrap();
    assert!(wait_printed(&worker, Duration::from_secs(10), "before").await);

    redis.kill();
    eventually(
        Duration::from_secs(6),
        "health 503 while Redis is down",
        || async { worker.get("/health").await.filter(|(c, _)| *c == 503) },
    )
    .await;
    // Surviving means retrying: the supervisor restarts the apalis worker while Redis is down.
    let before = worker.restarts().await.expect("health answers");
    eventually(
        Duration::from_secs(10),
        "the worker retrying (restarts counting up)",
        || async { worker.restarts().await.unwrap_or(before) > before },
    )
    .await;
    assert!(worker.is_alive(), "worker exited during the outage");

    redis.restart();
    eventually(
        Duration::from_secs(5),
        "enqueue after the restart",
        || async { q.enqueue(job("after", 0, 0)).await },
    )
    .await;
    assert!(
        wait_printed(&worker, Duration::from_secs(15), "after").await,
        "worker did not resume: {:?}",
        worker.messages()
    );
    eventually(Duration::from_secs(5), "health 200 again", || async {
        worker.get("/health").await.filter(|(c, _)| *c == 200)
    })
    .await;
    assert_eq!(
        worker
            .terminate(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
}

#[tokio::test]
async fn a_backlog_of_10000_jobs_due_at_once_is_processed() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    for chunk in 0..10 {
        let jobs = (0..1000)
            .map(|i| job(&format!("b{}", chunk * 1000 + i), 0, 0))
            .collect();
        q.enqueue_batch(jobs).await.unwrap();
    }
    // Due at once: pending (held in `delayed` until apalis' active list has room).
    assert_eq!(q.stats().await.unwrap().pending, 10_000);
    let started = Instant::now();
    let worker = start_worker(
        &redis,
        "w-backlog",
        &[
            ("APP__JOBQUEUE__WORKER__CONCURRENCY", "64"),
            ("APP__LOGGING__LEVEL", "warn"),
        ],
    )
    .await;
    let done = wait_lines(&worker, Duration::from_secs(40), |l| l.len() >= 10_000).await;
    let unique: HashSet<String> = worker.messages().into_iter().collect();
    println!("10,000 jobs in {:?}", started.elapsed());
    assert!(
        done && unique.len() == 10_000,
        "ran {} stats {:?}",
        unique.len(),
        q.stats().await
    );
}

/// The worker's heartbeat score (Unix seconds); it moves once per housekeeping round (~1 s),
/// so two moves prove the worker kept running (and fetching) for a while.
fn heartbeat(redis: &RedisServer, name: &str) -> String {
    redis.cli(&["ZSCORE", "dm-jobqueue:workers", name])
}

async fn wait_for_ticks(redis: &RedisServer, name: &str) {
    for _ in 0..2 {
        let before = heartbeat(redis, name);
        let what = format!("worker {name} beating");
        eventually(Duration::from_secs(10), &what, || {
            std::future::ready(heartbeat(redis, name) != before)
        })
        .await;
    }
}

#[tokio::test]
async fn jobs_stored_in_the_seed_format_still_run() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let id = ulid::Ulid::new().to_string();
    let now = Utc::now().timestamp_millis().to_string();
    // Exactly what the seed's enqueue.lua wrote (no job_type / timeout_ms, fields beside `type`).
    redis.cli(&[
        "HSET",
        "dm-jobqueue:data",
        &id,
        r#"{"type":"demo:delay_print","message":"legacy hello"}"#,
    ]);
    redis.cli(&[
        "HSET",
        &format!("dm-jobqueue:meta:{id}"),
        "attempts",
        "0",
        "max_attempts",
        "1",
        "status",
        "Pending",
        "idempotency_key",
        "",
        "run_at_ms",
        &now,
        "next_run_ms",
        &now,
        "max_retry",
        "0",
        "failures",
        "0",
        "created_ms",
        &now,
    ]);
    redis.cli(&["ZADD", "dm-jobqueue:delayed", &now, &id]);
    let info = q.status(&id).await.unwrap().unwrap();
    assert_eq!(info.job_type, "demo:delay_print");
    assert_eq!(info.payload, serde_json::json!({"message": "legacy hello"}));
    let worker = start_worker(&redis, "w-legacy", &[]).await;
    assert!(wait_printed(&worker, Duration::from_secs(15), "legacy hello").await);
    wait_for_status(&q, &id, JobStatus::Done, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_run_past_its_timeout_is_cancelled_and_counts_as_a_failure() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let worker = start_worker(&redis, "w-timeout", &[]).await;
    let job = job("slow:60000:never printed", 0, 1).timeout(Duration::from_secs(1));
    let id = q.enqueue(job).await.unwrap().job_id;
    wait_for_status(&q, &id, JobStatus::Dead, Duration::from_secs(20)).await;
    let info = q.status(&id).await.unwrap().unwrap();
    assert_eq!(info.attempts, 2, "{info:?}");
    assert_eq!(info.timeout_seconds, Some(1.0));
    assert_eq!(info.last_error.as_deref(), Some("timed out after 1 s"));
    assert!(worker.messages().is_empty());
    let (_, metrics) = worker.get("/metrics").await.unwrap();
    assert!(
        metrics.contains(r#"jobqueue_jobs_timed_out_total{type="demo:delay_print"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn unique_keys_are_held_until_done_or_for_unique_for() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let first = q
        .enqueue(job("unique one", 60_000, 0).unique("report-42", None))
        .await
        .unwrap();
    let again = q
        .enqueue(job("unique two", 0, 0).unique("report-42", None))
        .await;
    match again {
        Err(JobQueueError::Duplicate { job_id }) => assert_eq!(job_id, first.job_id),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    // In a batch: a second job with a taken key is `duplicate`, the others are stored.
    let batch = q
        .enqueue_batch(vec![
            job("b1", 60_000, 0).unique("report-42", None),
            job("b2", 60_000, 0).unique("batch-key", None),
            job("b3", 60_000, 0).unique("batch-key", None),
        ])
        .await
        .unwrap();
    let flags: Vec<bool> = batch.iter().map(|j| j.duplicate).collect();
    assert_eq!(flags, [true, false, true]);
    assert_eq!(batch[0].job_id, first.job_id);
    assert_eq!(batch[2].job_id, batch[1].job_id);

    // Once the holder is done the key is free again.
    q.delete(&first.job_id).await.unwrap();
    let worker = start_worker(&redis, "w-unique", &[]).await;
    let now = q
        .enqueue(job("unique now", 0, 0).unique("report-42", None))
        .await
        .unwrap();
    wait_for_status(&q, &now.job_id, JobStatus::Done, Duration::from_secs(15)).await;
    assert!(seen_at(&worker, "unique now").is_some());
    q.enqueue(job("unique after done", 0, 0).unique("report-42", None))
        .await
        .unwrap();

    // With unique_for the key is held exactly that long, whatever the job's state.
    let held = q
        .enqueue(job("window", 60_000, 0).unique("window-key", Some(Duration::from_secs(30))))
        .await
        .unwrap();
    let pttl: i64 = redis
        .cli(&["PTTL", "dm-jobqueue:unique:window-key"])
        .parse()
        .unwrap();
    assert!((1..=30_000).contains(&pttl), "{pttl}");
    q.delete(&held.job_id).await.unwrap();
    assert!(matches!(
        q.enqueue(job("window 2", 0, 0).unique("window-key", None))
            .await,
        Err(JobQueueError::Duplicate { .. })
    ));
    assert!(matches!(
        q.enqueue(job("x", 0, 0).unique("k".repeat(201), None)).await,
        Err(JobQueueError::Invalid(m)) if m.contains("unique_key")
    ));
}

#[tokio::test]
async fn paused_queues_start_nothing_and_resume_where_they_were() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let worker = start_worker(&redis, "w-pause", &[]).await;
    q.enqueue(job("before pause", 0, 0)).await.unwrap();
    assert!(wait_printed(&worker, Duration::from_secs(15), "before pause").await);
    q.pause().await.unwrap();
    assert!(q.is_paused().await.unwrap());
    let ids: Vec<String> = q
        .enqueue_batch((0..5).map(|i| job(&format!("paused {i}"), 0, 0)).collect())
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.job_id)
        .collect();
    wait_for_ticks(&redis, "w-pause").await;
    assert_eq!(
        worker.messages(),
        ["before pause"],
        "a job started while paused"
    );
    assert_eq!(q.stats().await.unwrap().pending, 5);
    let (_, metrics) = worker.get("/metrics").await.unwrap();
    assert!(
        metrics.contains(r#"jobqueue_paused{queue="dm-jobqueue"} 1"#),
        "{metrics}"
    );
    let page = q.list(JobStatus::Pending, None, 500, None).await.unwrap();
    assert_eq!(page.jobs.len(), 5);

    q.resume().await.unwrap();
    assert!(
        wait_lines(&worker, Duration::from_secs(15), |l| l.len() >= 6).await,
        "{:?}",
        worker.messages()
    );
    assert_eq!(worker.messages().len(), 6, "{:?}", worker.messages());
    for id in &ids {
        wait_for_status(&q, id, JobStatus::Done, Duration::from_secs(10)).await;
    }
    // The per-minute history (in Redis) counts the 6 runs.
    eventually(
        Duration::from_secs(5),
        "the history counts 6 runs",
        || async {
            let counted: u64 = q
                .history(5)
                .await
                .unwrap()
                .iter()
                .map(|m| m.processed)
                .sum();
            if counted == 6 {
                Ok(())
            } else {
                Err(counted)
            }
        },
    )
    .await;
    let ttl: i64 = redis
        .cli(&[
            "TTL",
            &format!("dm-jobqueue:history:{}", Utc::now().timestamp() / 60),
        ])
        .parse()
        .unwrap();
    assert!(ttl > 23 * 3600, "history ttl {ttl}");
}

#[tokio::test]
async fn listings_page_with_stable_cursors_and_running_jobs_cannot_be_deleted() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let mut ids = Vec::new();
    for i in 0..7u64 {
        let stored = q
            .enqueue(job(&format!("later {i}"), 60_000 + i * 1000, 0))
            .await
            .unwrap();
        ids.push(stored.job_id);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for round in 0..10 {
        let page = q
            .list(
                JobStatus::Scheduled,
                Some("demo:delay_print"),
                3,
                cursor.as_deref(),
            )
            .await
            .unwrap();
        seen.extend(page.jobs.iter().map(|j| j.job_id.clone()));
        if round == 0 {
            // A job added before the cursor does not shift the next pages.
            q.enqueue(job("sooner", 30_000, 0)).await.unwrap();
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, ids, "pages in due order, none twice");
    assert!(q
        .list(JobStatus::Scheduled, Some("http:nothing"), 3, None)
        .await
        .unwrap()
        .jobs
        .is_empty());
    assert!(matches!(
        q.list(JobStatus::Scheduled, None, 0, None).await,
        Err(JobQueueError::Invalid(_))
    ));
    assert!(matches!(
        q.list(JobStatus::Scheduled, None, 5, Some("nonsense"))
            .await,
        Err(JobQueueError::Invalid(_))
    ));

    let _worker = start_worker(&redis, "w-running", &[]).await;
    let slow = q
        .enqueue(job("slow:3000:slow one", 0, 0))
        .await
        .unwrap()
        .job_id;
    wait_for_status(&q, &slow, JobStatus::Running, Duration::from_secs(15)).await;
    let running = q.list(JobStatus::Running, None, 10, None).await.unwrap();
    assert_eq!(running.jobs.len(), 1);
    assert!(running.jobs[0].started_at.is_some());
    assert!(matches!(
        q.delete(&slow).await,
        Err(JobQueueError::Running(_))
    ));
    wait_for_status(&q, &slow, JobStatus::Done, Duration::from_secs(15)).await;
    assert!(q.delete(&slow).await.unwrap());
    assert_eq!(q.delete_many(&ids[..3]).await.unwrap(), 3);
}

/// What the loopback receiver saw: (method, path, x-token header, body).
type Hits = Arc<Mutex<Vec<(String, String, String, String)>>>;

/// A loopback HTTP receiver: `/ok` 204, `/flaky` 503 once then 200, `/gone` 410,
/// `/redirect` 302 to `/ok`.
pub(crate) fn receiver() -> (u16, Hits, actix_web::dev::ServerHandle) {
    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    let hits: Hits = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sink = hits.clone();
    let server = HttpServer::new(move || {
        let sink = sink.clone();
        App::new().default_service(web::to(move |req: HttpRequest, body: String| {
            let sink = sink.clone();
            async move {
                let token = req
                    .headers()
                    .get("x-token")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let path = req.path().to_owned();
                let mut hits = sink.lock().unwrap();
                let before = hits.iter().filter(|h| h.1 == path).count();
                hits.push((req.method().to_string(), path.clone(), token, body));
                match path.as_str() {
                    "/ok" => HttpResponse::NoContent().finish(),
                    "/flaky" if before == 0 => HttpResponse::ServiceUnavailable().finish(),
                    "/flaky" => HttpResponse::Ok().finish(),
                    "/redirect" => HttpResponse::Found()
                        .insert_header(("Location", format!("http://127.0.0.1:{port}/ok")))
                        .finish(),
                    _ => HttpResponse::Gone().finish(),
                }
            }
        }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    (port, hits, handle)
}

fn hook(port: u16, path: &str) -> NewJob {
    NewJob::new(
        "http:webhook",
        serde_json::json!({
            "url": format!("http://127.0.0.1:{port}{path}"),
            "headers": {"x-token": "s3cret"},
            "body": {"order": 7},
        }),
    )
    .retries(3)
}

#[tokio::test]
async fn webhook_jobs_call_allowed_hosts_retry_5xx_and_die_on_4xx_and_redirects() {
    let redis = RedisServer::start();
    let (port, hits, server) = receiver();
    let allowed = format!("127.0.0.1:{port}");
    let env = [("APP__JOBQUEUE__WEBHOOK__ALLOWED_HOSTS", allowed.as_str())];
    let s = settings(&redis, &env);
    let q = JobQueue::new(&s.cache_server.redis.jobqueue, &s.jobqueue).unwrap();

    // Refused before anything is stored: another host, a disabled type.
    let other = NewJob::new(
        "http:webhook",
        serde_json::json!({"url": "http://127.0.0.2:80/"}),
    );
    assert!(
        matches!(q.enqueue(other).await, Err(JobQueueError::Invalid(m)) if m.contains("allowed_hosts"))
    );
    let disabled = queue(&redis).enqueue(hook(port, "/ok")).await;
    assert!(
        matches!(&disabled, Err(JobQueueError::Invalid(m)) if m.contains("webhook jobs are disabled")),
        "{disabled:?}"
    );

    let _worker = start_worker(&redis, "w-hooks", &env).await;
    let ok = q.enqueue(hook(port, "/ok")).await.unwrap().job_id;
    let mut put = hook(port, "/ok");
    put.payload["method"] = serde_json::json!("PUT");
    let put = q.enqueue(put).await.unwrap().job_id;
    let flaky = q.enqueue(hook(port, "/flaky")).await.unwrap().job_id;
    let gone = q.enqueue(hook(port, "/gone")).await.unwrap().job_id;
    let redirect = q.enqueue(hook(port, "/redirect")).await.unwrap().job_id;
    for (id, want) in [
        (&ok, JobStatus::Done),
        (&put, JobStatus::Done),
        (&flaky, JobStatus::Done),
        (&gone, JobStatus::Dead),
        (&redirect, JobStatus::Dead),
    ] {
        wait_for_status(&q, id, want, Duration::from_secs(20)).await;
    }
    let info = |id: String| {
        let q = q.clone();
        async move { q.status(&id).await.unwrap().unwrap() }
    };
    let flaky = info(flaky).await;
    assert_eq!(flaky.attempts, 2, "{flaky:?}");
    assert!(flaky.errors[0].error.contains("503"), "{flaky:?}");
    let gone = info(gone).await;
    assert_eq!(gone.attempts, 1, "a 4xx is not retried: {gone:?}");
    let redirect = info(redirect).await;
    assert_eq!(redirect.attempts, 1);
    assert!(redirect
        .last_error
        .unwrap()
        .contains("redirects are not followed"));

    let hits = hits.lock().unwrap().clone();
    let ok_hits: Vec<_> = hits.iter().filter(|h| h.1 == "/ok").collect();
    assert_eq!(ok_hits.len(), 2, "the redirect was not followed: {hits:?}");
    let methods: HashSet<&str> = ok_hits.iter().map(|h| h.0.as_str()).collect();
    assert_eq!(methods, HashSet::from(["POST", "PUT"]));
    assert!(
        ok_hits
            .iter()
            .all(|h| h.2 == "s3cret" && h.3 == r#"{"order":7}"#),
        "{ok_hits:?}"
    );

    // Header values never leave the queue.
    let shown = info(ok).await;
    assert_eq!(shown.payload["headers"]["x-token"], "***");
    // The answer is the result: status, headers (secrets hidden), the body's first 4 KB.
    let result = shown.result.clone().unwrap();
    assert_eq!(result["status"], 204, "{result}");
    assert_eq!(result["body"], "");
    assert!(result["headers"].is_object(), "{result}");
    assert_eq!(shown.payload["url"], format!("http://127.0.0.1:{port}/ok"));
    server.stop(false).await;
}
