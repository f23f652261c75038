//! Redis bytes a finished job keeps, measured as the bench does (`used_memory` growth over an
//! empty queue, after the drain, default `done_retention` and `events_max_len`), with the
//! parts named so a regression says where the bytes went. Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::queue as client;
use cacheserver_jobqueue::{JobStatus, NewJob};
use cacheserver_testkit::{eventually, RedisServer, WorkerCommand};
use std::time::Duration;

/// BullMQ's bytes per completed job in the bench run this was measured against.
const BULLMQ_BYTES: f64 = 423.0;
/// What this test measured with the done layout (466 B), with a little room for allocator noise.
const KEPT_BYTES: f64 = 475.0;
/// The done layout's meta listpack fits jemalloc's 128-byte class (it took the 192 one before).
const META_HASH_BYTES: f64 = 216.0;

fn used_memory(redis: &RedisServer) -> f64 {
    let info = redis.cli(&["INFO", "memory"]);
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory")
}

fn memory_usage(redis: &RedisServer, key: &str) -> f64 {
    redis
        .cli(&["MEMORY", "USAGE", key, "SAMPLES", "0"])
        .trim()
        .parse()
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_keeps_only_what_its_readers_need() {
    let redis = RedisServer::start();
    let q = client(&redis);
    q.ping().await.unwrap();
    let n: usize = std::env::var("MEMORY_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let empty = used_memory(&redis);
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let jobs = chunk
            .iter()
            .map(|i| NewJob::delay_print(format!("w4-{i}")))
            .collect();
        q.enqueue_batch(jobs).await.unwrap();
    }
    let _w = WorkerCommand::new(env!("CARGO_BIN_EXE_worker"))
        .redis(&redis.addr())
        .name("w-mem")
        .env("APP__JOBQUEUE__WORKER__CONCURRENCY", "4")
        .start()
        .await;
    eventually(Duration::from_secs(300), "every job done", || async {
        q.stats().await.is_ok_and(|s| s.done as usize >= n)
    })
    .await;
    let per_job = (used_memory(&redis) - empty) / n as f64;
    let one = q
        .list(JobStatus::Done, None, 1, None)
        .await
        .unwrap()
        .jobs
        .remove(0);
    let meta_key = format!("dm-jobqueue:meta:{}", one.job_id);
    let parts = [
        ("meta hash (one)", memory_usage(&redis, &meta_key)),
        (
            "data hash / job",
            memory_usage(&redis, "dm-jobqueue:data") / n as f64,
        ),
        (
            "finished zset / job",
            memory_usage(&redis, "dm-jobqueue:finished") / n as f64,
        ),
        (
            "events stream / job",
            memory_usage(&redis, "dm-jobqueue:events") / n as f64,
        ),
    ];
    let encoding = redis.cli(&["OBJECT", "ENCODING", &meta_key]);
    let fields = redis.cli(&["HGETALL", &meta_key]).replace('\n', " ");
    eprintln!(
        "bytes per finished job: {per_job:.0}; {parts:?}; meta {} {fields}",
        encoding.trim()
    );
    // This measure (its own queue and worker names, a fresh Redis) reads more than the bench's:
    // before the slimming 699 B here for 587 B in the bench, after it 529 B, with the done layout
    // 466 B. What is checked is what the slimming keeps: the meta hash a small listpack holding
    // the short JSON, `data` empty.
    assert_eq!(encoding.trim(), "listpack");
    assert_eq!(redis.cli(&["HLEN", "dm-jobqueue:data"]).trim(), "0");
    assert!(parts[0].1 <= META_HASH_BYTES, "{parts:?}");
    assert!(
        per_job <= KEPT_BYTES,
        "{per_job:.0} B per finished job (was 699; BullMQ in the bench: {BULLMQ_BYTES}): {parts:?}"
    );
}

/// A done job as versions before the slimming left it (long names, `status`, `done_at`,
/// `job_type`, `next_run_ms`, `locked_by`, `max_retry` 0, its JSON in `data`) reads exactly as
/// one this version finished in the done layout, and neither can be cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_done_job_stored_before_the_slimming_reads_the_same() {
    let redis = RedisServer::start();
    let q = client(&redis);
    let new = q.enqueue(NewJob::delay_print("kept")).await.unwrap().job_id;
    let _w = WorkerCommand::new(env!("CARGO_BIN_EXE_worker"))
        .redis(&redis.addr())
        .name("w-old")
        .start()
        .await;
    eventually(Duration::from_secs(30), "the job done", || async {
        q.stats().await.is_ok_and(|s| s.done == 1)
    })
    .await;
    let meta = |id: &str| format!("dm-jobqueue:meta:{id}");
    let field = |id: &str, f: &str| redis.cli(&["HGET", &meta(id), f]).trim().to_owned();
    // the done layout: short names, no status, no type, the JSON in meta
    for gone in ["status", "job_type", "run_at_ms", "created_ms", "locked_at"] {
        assert_eq!(
            redis.cli(&["HEXISTS", &meta(&new), gone]).trim(),
            "0",
            "{gone}"
        );
    }
    assert_eq!(
        redis.cli(&["HEXISTS", "dm-jobqueue:data", &new]).trim(),
        "0"
    );
    let run_at: u64 = field(&new, "r").parse().unwrap();
    let started = run_at as i64 + field(&new, "s").parse::<i64>().unwrap();
    // stored a moment after its due time was taken, or at it (then no `c`)
    let created = run_at + field(&new, "c").parse::<u64>().unwrap_or(0);
    let old = ulid::Ulid::new().to_string();
    let json = field(&new, "d");
    redis.cli(&["HSET", "dm-jobqueue:data", &old, &json]);
    let locked_at = (started / 1000).to_string();
    redis.cli(&[
        "HSET",
        &meta(&old),
        "status",
        "Done",
        "run_at_ms",
        &run_at.to_string(),
        "next_run_ms",
        &run_at.to_string(),
        "max_retry",
        "0",
        "created_ms",
        &created.to_string(),
        "job_type",
        "demo:delay_print",
        "locked_at",
        &locked_at,
        "started_ms",
        &started.to_string(),
        "locked_by",
        "w-old",
        "done_at",
        &locked_at,
        "result",
        &field(&new, "o"),
    ]);
    let finished = redis
        .cli(&["ZSCORE", "dm-jobqueue:finished", &new])
        .trim()
        .to_owned();
    redis.cli(&["ZADD", "dm-jobqueue:finished", &finished, &old]);
    let mut was = q.status(&old).await.unwrap().unwrap();
    let is = q.status(&new).await.unwrap().unwrap();
    assert_eq!(was.job_id, old);
    was.job_id = is.job_id.clone();
    assert_eq!(was, is);
    assert_eq!(is.status, JobStatus::Done);
    assert_eq!(is.job_type, "demo:delay_print");
    assert_eq!(is.payload["message"], "kept");
    assert!(is.created_at >= Some(is.run_at));
    // the start in ms (apalis' `locked_at` alone floored it to the second, before its due time)
    assert!(is.started_at >= Some(is.run_at), "{is:?}");
    for id in [&old, &new] {
        assert!(
            q.cancel(id).await.is_err(),
            "a done job cannot be cancelled"
        );
    }
    // listed alike, both filtered by their type
    let page = q
        .list(JobStatus::Done, Some("demo:delay_print"), 10, None)
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 2);
}
