//! Schedules with real Redis and real `worker` processes: exactly one job per tick across three
//! workers and a Redis restart, declared in config; `overlap: skip` with a job slower than the
//! interval. (Missed ticks and lost claims are driven by a test clock in the worker's
//! `scheduler.rs` tests.) Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{config_with_jobqueue, queue as client};
use cacheserver_jobqueue::schedules::{Missed, Overlap, Schedule};
use cacheserver_jobqueue::{JobInfo, JobQueue, JobStatus};
use cacheserver_testkit::{eventually, RedisServer, WorkerCommand, WorkerProcess};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

async fn worker(redis: &RedisServer, name: &str, config: &Path) -> WorkerProcess {
    WorkerCommand::new(env!("CARGO_BIN_EXE_worker"))
        .redis(&redis.addr())
        .name(name)
        .env("APP_CONFIG_DIR", config)
        .start()
        .await
}

/// Every done job of the default queue (at most 500).
async fn done_jobs(q: &JobQueue) -> Vec<JobInfo> {
    q.list(JobStatus::Done, None, 500, None).await.unwrap().jobs
}

fn printed(workers: &[WorkerProcess], text: &str) -> usize {
    workers
        .iter()
        .map(|w| w.messages().iter().filter(|m| m.as_str() == text).count())
        .sum()
}

/// The tick a schedule's job was enqueued for: its unique key `schedule:<name>:<tick ms>`,
/// read from the job's meta hash (the default queue's layout) with redis-cli.
fn tick_of(redis: &RedisServer, job: &JobInfo) -> i64 {
    let key = redis.cli(&[
        "HGET",
        &format!("{}:meta:{}", job.queue, job.job_id),
        "unique_key",
    ]);
    key.rsplit(':')
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no tick key: {key:?}"))
}

/// Jobs of the schedule: one per tick, each tick a whole second, none due or started before
/// its tick; due exactly at it unless the tick was reached late (Redis was down).
fn assert_one_job_per_tick(redis: &RedisServer, jobs: &[JobInfo]) -> BTreeSet<i64> {
    let ticks: BTreeSet<i64> = jobs.iter().map(|j| tick_of(redis, j)).collect();
    assert_eq!(ticks.len(), jobs.len(), "a tick ran twice: {jobs:#?}");
    let mut on_time = 0;
    for job in jobs {
        let tick = tick_of(redis, job);
        assert_eq!(tick % 1000, 0, "not a tick: {job:?}");
        let run_at = job.run_at.timestamp_millis();
        assert!(run_at >= tick, "due before its tick: {job:?}");
        on_time += usize::from(run_at == tick);
        // `started_at` is whole seconds (apalis' `locked_at`): never before the tick's second.
        let started = job
            .started_at
            .expect("done jobs started")
            .timestamp_millis();
        assert!(started >= tick, "started before its tick: {job:?}");
    }
    assert!(
        on_time * 2 > jobs.len(),
        "most jobs are due at their tick: {jobs:#?}"
    );
    ticks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_run_one_job_per_tick_across_a_redis_restart() {
    let mut redis = RedisServer::start();
    let q = client(&redis);
    let config = config_with_jobqueue("schedules", 
        "    - name: every-second\n      cron: \"*/1 * * * * *\"\n      job: { type: \"demo:delay_print\", payload: { message: tick } }\n",
    );
    let mut workers = Vec::new();
    for name in ["s1", "s2", "s3"] {
        workers.push(worker(&redis, name, config.path()).await);
    }
    let info = eventually(
        Duration::from_secs(10),
        "the config's schedule applied",
        || {
            let q = q.clone();
            async move { q.schedules().get("every-second").await.ok().flatten() }
        },
    )
    .await;
    assert_eq!(info.source, "config");
    eventually(Duration::from_secs(30), "5 ticks ran", || async {
        printed(&workers, "tick") >= 5
    })
    .await;

    redis.shutdown();
    redis.restart();
    let before = printed(&workers, "tick");
    eventually(
        Duration::from_secs(60),
        "5 more ticks after the restart",
        || async { printed(&workers, "tick") >= before + 5 },
    )
    .await;

    // Stop the ticks, let the last jobs finish, then count.
    assert!(q.schedules().pause("every-second").await.unwrap());
    let ran = eventually(Duration::from_secs(30), "every enqueued tick done", || {
        let q = q.clone();
        async move {
            let stats = q.stats().await.ok()?;
            let busy = stats.scheduled + stats.pending + stats.running + stats.retrying;
            (busy == 0).then_some(stats.done)
        }
    })
    .await;
    let jobs = done_jobs(&q).await;
    assert_eq!(jobs.len() as u64, ran);
    let ticks = assert_one_job_per_tick(&redis, &jobs);
    assert_eq!(printed(&workers, "tick"), jobs.len(), "a job ran twice");
    assert!(ticks.len() >= 10, "{ticks:?}");
    // All three competed; each tick was still claimed by one of them only.
    let info = q.schedules().get("every-second").await.unwrap().unwrap();
    assert!(info.paused && info.next_run_at.is_none());
    assert_eq!(
        info.last_run_at.map(|t| t.timestamp_millis()),
        ticks.last().copied()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_skip_skips_ticks_while_the_previous_job_runs() {
    let redis = RedisServer::start();
    let q = client(&redis);
    let slow: Schedule = serde_json::from_value(serde_json::json!({
        "name": "slow",
        "cron": "* * * * * *",
        "overlap": "skip",
        "job": {"type": "demo:delay_print", "payload": {"message": "slow:2500:slow tick"}},
    }))
    .unwrap();
    assert_eq!((slow.overlap, slow.missed), (Overlap::Skip, Missed::Skip));
    assert!(q.schedules().create(&slow).await.unwrap());
    let config = config_with_jobqueue("schedules", "    []\n");
    let workers = vec![worker(&redis, "o1", config.path()).await];
    eventually(Duration::from_secs(40), "3 slow jobs ran", || async {
        printed(&workers, "slow:2500:slow tick") >= 3
    })
    .await;
    assert!(q.schedules().pause("slow").await.unwrap());
    eventually(Duration::from_secs(30), "the last slow job done", || {
        let q = q.clone();
        async move {
            let s = q.stats().await.ok()?;
            (s.scheduled + s.pending + s.running + s.retrying == 0).then_some(())
        }
    })
    .await;
    let jobs = done_jobs(&q).await;
    let ticks: Vec<i64> = assert_one_job_per_tick(&redis, &jobs).into_iter().collect();
    // Each job takes 2.5 s and ticks come every second: the ticks while it ran were skipped.
    for pair in ticks.windows(2) {
        assert!(
            pair[1] - pair[0] >= 2000,
            "overlapping ticks ran: {ticks:?}"
        );
    }
    let info = q.schedules().get("slow").await.unwrap().unwrap();
    assert!(info.skipped >= 2, "{info:?}");
}
