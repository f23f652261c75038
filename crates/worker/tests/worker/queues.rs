//! Named queues with real Redis and real `worker` processes: weighted and strict service,
//! wake-ups across the served set, each queue's keys under its hash tag, and jobs stored in the
//! default queue's layout before queues existed. Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{config_root, queue as client};
use cacheserver_jobqueue::{JobQueue, NewJob};
use cacheserver_testkit::{free_port, ChildProcess, Line, RedisServer, Stderr, Stream};
use std::process::Command;
use std::time::Duration;

/// A `worker` process with `args`; its stdout (the jobs' output) is collected.
fn worker(redis: &RedisServer, args: &[&str], env: &[(&str, &str)]) -> ChildProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_worker"));
    cmd.args(args)
        .env("APP_ENV", "test")
        .env("APP_CONFIG_DIR", config_root())
        .env("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", redis.addr())
        .env(
            "APP__JOBQUEUE__WORKER__HEALTH_PORT",
            free_port().to_string(),
        )
        .envs(env.iter().copied());
    ChildProcess::spawn(&mut cmd, Stderr::Inherit)
}

/// `[YYYY-MM-DD HH:MM:SS] message` → `message`.
fn message_of(line: &str) -> &str {
    line.split_once("] ").map_or(line, |(_, m)| m)
}

fn messages(w: &ChildProcess) -> Vec<String> {
    w.texts(Stream::Stdout)
        .iter()
        .map(|l| message_of(l).to_owned())
        .collect()
}

async fn enqueue_many(q: &JobQueue, queue: &str, count: usize) {
    let jobs: Vec<NewJob> = (0..count)
        .map(|i| NewJob::delay_print(format!("{queue}-{i}")).in_queue(queue))
        .collect();
    for chunk in jobs.chunks(1000) {
        q.enqueue_batch(chunk.to_vec()).await.unwrap();
    }
}

async fn wait_printed(w: &ChildProcess, bound: Duration, count: usize) -> bool {
    w.wait_for(Stream::Stdout, bound, |lines: &[Line]| lines.len() >= count)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_queues_share_starts_by_weight() {
    let redis = RedisServer::start();
    let q = client(&redis);
    // More in each than its share of the first 1,000 starts, so none runs dry.
    enqueue_many(&q, "critical", 800).await;
    enqueue_many(&q, "default", 500).await;
    enqueue_many(&q, "low", 300).await;
    let mut w = worker(
        &redis,
        &[
            "--name",
            "w1",
            "--concurrency",
            "1",
            "--queues",
            "critical=6,default=3,low=1",
        ],
        &[],
    );
    assert!(
        wait_printed(&w, Duration::from_secs(120), 1000).await,
        "1,000 jobs did not start in time; printed {}",
        messages(&w).len()
    );
    let first: Vec<String> = messages(&w).into_iter().take(1000).collect();
    let share = |queue: &str| {
        let prefix = format!("{queue}-");
        first.iter().filter(|m| m.starts_with(&prefix)).count() as f64 / 10.0
    };
    let (critical, default, low) = (share("critical"), share("default"), share("low"));
    assert!((critical - 60.0).abs() <= 5.0, "critical {critical} %");
    assert!((default - 30.0).abs() <= 5.0, "default {default} %");
    assert!((low - 10.0).abs() <= 5.0, "low {low} %");
    // FIFO within each queue.
    let critical_order: Vec<usize> = first
        .iter()
        .filter_map(|m| m.strip_prefix("critical-")?.parse().ok())
        .collect();
    assert!(critical_order.windows(2).all(|p| p[0] < p[1]));
    w.terminate(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_order_drains_the_first_queue_first() {
    let redis = RedisServer::start();
    let q = client(&redis);
    enqueue_many(&q, "first", 100).await;
    enqueue_many(&q, "second", 100).await;
    let mut w = worker(
        &redis,
        &[
            "--name",
            "w1",
            "--concurrency",
            "4",
            "--queues",
            "first=1,second=100",
            "--strict",
        ],
        &[],
    );
    assert!(wait_printed(&w, Duration::from_secs(60), 200).await);
    let printed = messages(&w);
    let last_first = printed.iter().rposition(|m| m.starts_with("first-"));
    let first_second = printed.iter().position(|m| m.starts_with("second-"));
    assert!(
        last_first < first_second,
        "a job of `second` started before `first` was drained: {printed:?}"
    );
    w.terminate(Duration::from_secs(10));
}

/// An idle worker sleeps until a marker of any served queue: a job for its last queue starts
/// long before the (here 60 s) poll interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_wakes_for_any_served_queue() {
    let redis = RedisServer::start();
    let q = client(&redis);
    let mut w = worker(
        &redis,
        &["--name", "w1", "--queues", "a=1,b=1,c=1"],
        &[("APP__JOBQUEUE__WORKER__POLL_INTERVAL", "60s")],
    );
    // Registered in its last queue: the worker has started (and is going to sleep).
    assert!(cacheserver_testkit::wait_until(
        Duration::from_secs(30),
        || redis.cli(&["ZCARD", "{c}:workers"]).trim() == "1"
    ));
    q.enqueue(NewJob::delay_print("woken").in_queue("c"))
        .await
        .unwrap();
    assert!(
        w.wait_for_line(Stream::Stdout, Duration::from_secs(20), |l| message_of(l)
            == "woken")
            .await,
        "the job of the third served queue did not wake the worker"
    );
    w.terminate(Duration::from_secs(10));
}

/// Jobs written in the layout of the versions before named queues (the default queue's
/// untagged keys, even the legacy envelope) run; a new queue's keys carry its hash tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_stored_before_queues_existed_still_run() {
    let redis = RedisServer::start();
    let id = ulid::Ulid::new().to_string();
    let now_ms = chrono::Utc::now().timestamp_millis().to_string();
    redis.cli(&[
        "HSET",
        "dm-jobqueue:data",
        &id,
        r#"{"type":"demo:delay_print","message":"from before"}"#,
    ]);
    redis.cli(&[
        "HSET",
        &format!("dm-jobqueue:meta:{id}"),
        "status",
        "Pending",
        "run_at_ms",
        &now_ms,
        "next_run_ms",
        &now_ms,
        "max_retry",
        "0",
        "created_ms",
        &now_ms,
    ]);
    redis.cli(&["ZADD", "dm-jobqueue:delayed", &now_ms, &id]);
    let q = client(&redis);
    q.enqueue(NewJob::delay_print("tagged").in_queue("reports"))
        .await
        .unwrap();
    assert_eq!(redis.cli(&["HLEN", "{reports}:data"]).trim(), "1");
    assert_eq!(redis.cli(&["HLEN", "reports:data"]).trim(), "0");
    // Without --queues: the default queue (and declared ones); then the new queue by name.
    let mut w = worker(&redis, &["--name", "w1"], &[]);
    assert!(
        w.wait_for_line(Stream::Stdout, Duration::from_secs(30), |l| message_of(l)
            == "from before")
            .await,
        "the job stored before queues existed did not run"
    );
    w.terminate(Duration::from_secs(10));
    let mut w = worker(&redis, &["--name", "w2", "--queues", "reports"], &[]);
    assert!(
        w.wait_for_line(Stream::Stdout, Duration::from_secs(30), |l| message_of(l)
            == "tagged")
            .await
    );
    w.terminate(Duration::from_secs(10));
    let info = q.find(&id).await.unwrap().unwrap();
    assert_eq!(info.name(), "dm-jobqueue");
}
