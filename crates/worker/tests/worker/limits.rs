//! Priorities and the limits shared by all workers, with real Redis and real `worker`
//! processes: due jobs start by priority then FIFO, a delayed high-priority job waits for its
//! time, a queue's `concurrency` and `rate_limit` hold over three workers (checked on the jobs'
//! own start stamps — Redis' clock, `started_at` — and finish stamps), a SIGKILLed worker's
//! slots come back, and jobs stored in the layout before priorities run. Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{config_with_jobqueue, queue as client};
use cacheserver_jobqueue::{JobInfo, JobQueue, JobStatus, NewJob};
use cacheserver_testkit::{eventually, RedisServer, WorkerCommand, WorkerProcess};
use std::path::Path;
use std::time::Duration;

/// A worker named `name` serving `queues` with `concurrency` slots.
async fn worker(
    redis: &RedisServer,
    name: &str,
    queues: &str,
    concurrency: u32,
    config: Option<&Path>,
) -> WorkerProcess {
    let mut cmd = WorkerCommand::new(env!("CARGO_BIN_EXE_worker"))
        .redis(&redis.addr())
        .name(name)
        .env("APP__JOBQUEUE__WORKER__QUEUES", queues)
        .env(
            "APP__JOBQUEUE__WORKER__CONCURRENCY",
            concurrency.to_string(),
        );
    if let Some(config) = config {
        cmd = cmd.env("APP_CONFIG_DIR", config);
    }
    cmd.start().await
}

/// Every done job of `q` (at most 1,000), with their start and finish stamps.
async fn done_jobs(q: &JobQueue) -> Vec<JobInfo> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = q
            .list(JobStatus::Done, None, 500, cursor.as_deref())
            .await
            .unwrap();
        all.extend(page.jobs);
        match page.next_cursor {
            Some(next) if all.len() < 1000 => cursor = Some(next),
            _ => return all,
        }
    }
}

async fn wait_done(q: &JobQueue, count: u64, bound: Duration) {
    eventually(bound, &format!("{count} jobs done"), || async {
        q.stats().await.is_ok_and(|s| s.done >= count)
    })
    .await;
}

fn ms(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}

/// The most of the sorted `starts` (ms) in any one second, and the second's first start.
fn most_in_a_second(starts: &[i64]) -> (usize, i64) {
    starts
        .iter()
        .enumerate()
        .map(|(i, &from)| {
            let within = starts[i..].iter().take_while(|&&t| t < from + 1000).count();
            (within, from)
        })
        .max()
        .unwrap_or((0, 0))
}

/// The most jobs whose [start, finish] overlap at one instant (a finish at the same ms as a
/// start counts first: that slot was free).
fn most_at_once(jobs: &[JobInfo]) -> usize {
    let mut events: Vec<(i64, i32)> = Vec::new();
    for job in jobs {
        events.push((ms(job.started_at.expect("started_at")), 1));
        events.push((ms(job.finished_at.expect("finished_at")), -1));
    }
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, delta) in events {
        now += delta;
        most = most.max(now);
    }
    most as usize
}

/// Deterministic priorities 1..=10 (a fixed LCG: the same run every time).
fn priorities(count: usize) -> Vec<u8> {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..count)
        .map(|_| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((seed >> 33) % 10 + 1) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_jobs_start_by_priority_then_in_order() {
    let redis = RedisServer::start();
    let q = client(&redis);
    let given = priorities(1000);
    let jobs: Vec<NewJob> = given
        .iter()
        .enumerate()
        .map(|(i, p)| {
            NewJob::delay_print(format!("{p}-{i}"))
                .in_queue("prio")
                .priority(*p)
        })
        .collect();
    q.enqueue_batch(jobs).await.unwrap();
    let w = worker(&redis, "w1", "prio", 1, None).await;
    eventually(Duration::from_secs(120), "1,000 jobs started", || async {
        w.messages().len() >= 1000
    })
    .await;
    let started: Vec<(u8, usize)> = w
        .messages()
        .iter()
        .map(|m| {
            let (p, i) = m.split_once('-').unwrap();
            (p.parse().unwrap(), i.parse().unwrap())
        })
        .collect();
    for pair in started.windows(2) {
        let ((p0, i0), (p1, i1)) = (pair[0], pair[1]);
        assert!(
            p0 > p1 || (p0 == p1 && i0 < i1),
            "{p0}-{i0} started before {p1}-{i1}"
        );
    }
    assert_eq!(started.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_high_priority_job_waits_for_its_time() {
    let redis = RedisServer::start();
    let q = client(&redis);
    // A limit far above what runs, so each start is stamped by Redis (`started_at` in ms).
    let config = config_with_jobqueue("queues", "    - { name: prio, concurrency: 1000 }\n");
    let w = worker(&redis, "w1", "prio", 1, Some(config.path())).await;
    eventually(Duration::from_secs(30), "the worker registered", || async {
        redis.cli(&["ZCARD", "{prio}:workers"]).trim() == "1"
    })
    .await;
    let low: Vec<NewJob> = (0..200)
        .map(|i| {
            NewJob::delay_print(format!("slow:10:low-{i}"))
                .in_queue("prio")
                .priority(1)
        })
        .collect();
    q.enqueue_batch(low).await.unwrap();
    let urgent = q
        .enqueue(
            NewJob::delay_print("urgent")
                .in_queue("prio")
                .priority(10)
                .after(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "201 jobs started", || async {
        w.messages().len() >= 201
    })
    .await;
    let printed = w.messages();
    let at = printed.iter().position(|m| m == "urgent").unwrap();
    let info = q.find(&urgent.job_id).await.unwrap().unwrap();
    let info = info.status(&urgent.job_id).await.unwrap().unwrap();
    assert_eq!(info.priority, 10);
    assert!(
        info.started_at.unwrap() >= urgent.run_at,
        "started {:?} before due {:?}",
        info.started_at,
        urgent.run_at
    );
    // Not before it was due, but ahead of the lower jobs still waiting once it was.
    assert!(
        at > 0 && at < 200,
        "urgent started at {at} of {}",
        printed.len()
    );
    let low_order: Vec<usize> = printed
        .iter()
        .filter_map(|m| m.strip_prefix("slow:10:low-")?.parse().ok())
        .collect();
    assert!(low_order.windows(2).all(|p| p[0] < p[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_holds_across_three_workers() {
    let redis = RedisServer::start();
    let q = client(&redis);
    let config = config_with_jobqueue("queues", "    - { name: conc, concurrency: 3 }\n");
    let mut workers = Vec::new();
    for name in ["w1", "w2", "w3"] {
        workers.push(worker(&redis, name, "conc", 16, Some(config.path())).await);
    }
    let jobs: Vec<NewJob> = (0..45)
        .map(|i| NewJob::delay_print(format!("slow:100:c-{i}")).in_queue("conc"))
        .collect();
    q.enqueue_batch(jobs).await.unwrap();
    let conc = q.queue("conc").unwrap();
    wait_done(&conc, 45, Duration::from_secs(90)).await;
    let done = done_jobs(&conc).await;
    assert_eq!(done.len(), 45);
    let most = most_at_once(&done);
    assert!(most <= 3, "{most} jobs ran at once with concurrency 3");
    assert_eq!(most, 3, "the limit was never reached: slots were lost");
    // Started by more than one worker: the limit is shared, not per worker.
    let by_workers = workers.iter().filter(|w| !w.messages().is_empty()).count();
    assert!(by_workers >= 2, "only {by_workers} worker ran jobs");
    assert_eq!(conc.limits().await.unwrap().concurrency, Some(3));
    assert_eq!(conc.stats().await.unwrap().running, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_across_three_workers() {
    let redis = RedisServer::start();
    let q = client(&redis);
    let config = config_with_jobqueue(
        "queues",
        "    - { name: rate, rate_limit: { max: 50, per: 1s } }\n",
    );
    let mut workers = Vec::new();
    for name in ["w1", "w2", "w3"] {
        workers.push(worker(&redis, name, "rate", 16, Some(config.path())).await);
    }
    let jobs: Vec<NewJob> = (0..300)
        .map(|i| NewJob::delay_print(format!("r-{i}")).in_queue("rate"))
        .collect();
    q.enqueue_batch(jobs).await.unwrap();
    let rate = q.queue("rate").unwrap();
    wait_done(&rate, 300, Duration::from_secs(90)).await;
    let mut starts: Vec<i64> = done_jobs(&rate)
        .await
        .iter()
        .map(|j| ms(j.started_at.expect("started_at")))
        .collect();
    assert_eq!(starts.len(), 300);
    starts.sort_unstable();
    // Any window of 1 s (Redis' clock) holds at most 50 starts.
    let (within, from) = most_in_a_second(&starts);
    assert!(within <= 50, "{within} starts in the second from {from}");
    // The first 5 s hold at most 5 windows' worth, and the limit did not stall the queue.
    let first = starts[0];
    let in_five = starts.iter().filter(|&&t| t < first + 5000).count();
    assert!(
        (100..=250).contains(&in_five),
        "{in_five} starts in the first 5 s"
    );
    let limits = rate.limits().await.unwrap();
    assert_eq!(limits.rate, Some((50, Duration::from_secs(1))));
}

/// A worker SIGKILLed while it holds every slot: the reaper of another worker frees them (at
/// most the orphan bound after the last heartbeat) and every job still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_of_a_killed_worker_come_back() {
    let redis = RedisServer::start();
    let q = client(&redis);
    let config = config_with_jobqueue("queues", "    - { name: killq, concurrency: 2 }\n");
    let mut a = worker(&redis, "a", "killq", 4, Some(config.path())).await;
    let jobs: Vec<NewJob> = (0..6)
        .map(|i| NewJob::delay_print(format!("slow:3000:k-{i}")).in_queue("killq"))
        .collect();
    let ids: Vec<String> = q
        .enqueue_batch(jobs)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.job_id)
        .collect();
    // Both slots held by `a` (the jobs in its in-flight set).
    let held = eventually(Duration::from_secs(30), "a holds both slots", || async {
        let inflight = members(&redis, "{killq}:inflight:a");
        (inflight.len() == 2).then_some(inflight)
    })
    .await;
    a.kill();
    let b = worker(&redis, "b", "killq", 4, Some(config.path())).await;
    // The killed runs are re-queued and run again by `b`; every job is done.
    let killq = q.queue("killq").unwrap();
    wait_done(&killq, 6, Duration::from_secs(90)).await;
    for id in &ids {
        let info = killq.status(id).await.unwrap().unwrap();
        assert_eq!(info.status, JobStatus::Done, "{id}");
    }
    let printed = b.messages();
    for id in &held {
        let i = ids.iter().position(|j| j == id).unwrap();
        let message = format!("slow:3000:k-{i}");
        assert!(
            printed.contains(&message),
            "{message} held by the killed worker did not run again: {printed:?}"
        );
    }
    assert_eq!(killq.stats().await.unwrap().running, 0);
    let done = done_jobs(&killq).await;
    assert!(most_at_once(&done) <= 2);
}

fn members(redis: &RedisServer, key: &str) -> Vec<String> {
    let mut out: Vec<String> = redis
        .cli(&["SMEMBERS", key])
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    out.sort();
    out
}

/// Jobs written as the version before priorities stored them (no `priority`, in `delayed`,
/// `retrying` and apalis' `active` list, no `ready` set) run, in a limited queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_stored_before_priorities_still_run() {
    let redis = RedisServer::start();
    let now_ms = chrono::Utc::now().timestamp_millis().to_string();
    let store = |message: &str, status: &str, failures: &str| {
        let id = ulid::Ulid::new().to_string();
        redis.cli(&[
            "HSET",
            "{old}:data",
            &id,
            &format!(r#"{{"type":"demo:delay_print","payload":{{"message":"{message}"}}}}"#),
        ]);
        redis.cli(&[
            "HSET",
            &format!("{{old}}:meta:{id}"),
            "status",
            status,
            "run_at_ms",
            &now_ms,
            "next_run_ms",
            &now_ms,
            "max_retry",
            "3",
            "created_ms",
            &now_ms,
            "job_type",
            "demo:delay_print",
            "failures",
            failures,
        ]);
        id
    };
    let delayed = store("old delayed", "Pending", "0");
    redis.cli(&["ZADD", "{old}:delayed", &now_ms, &delayed]);
    let retrying = store("old retrying", "Failed", "1");
    redis.cli(&["ZADD", "{old}:retrying", &now_ms, &retrying]);
    let active = store("old active", "Pending", "0");
    redis.cli(&["RPUSH", "{old}:active", &active]);
    redis.cli(&["SADD", "jobqueue:queues", "old"]);
    let q = client(&redis);
    let old = q.queue("old").unwrap();
    assert_eq!(old.stats().await.unwrap().pending, 3);
    let config = config_with_jobqueue("queues", "    - { name: old, concurrency: 1 }\n");
    let w = worker(&redis, "w1", "old", 4, Some(config.path())).await;
    eventually(Duration::from_secs(30), "the old jobs ran", || async {
        let printed = w.messages();
        ["old delayed", "old retrying", "old active"]
            .iter()
            .all(|m| printed.iter().any(|p| p == m))
    })
    .await;
    for id in [&delayed, &retrying, &active] {
        let info = old.status(id).await.unwrap().unwrap();
        assert_eq!(info.priority, 5);
    }
}

/// Per-key limits: one key flooded, another with a few jobs behind the flood. The other key's
/// jobs start at their own rate (parked jobs of the flooded key do not block them), and no key
/// starts more than its rate in any second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_limit_key_does_not_hold_up_another() {
    let redis = RedisServer::start();
    let q = client(&redis);
    let config = config_with_jobqueue(
        "queues",
        "    - { name: keys, key_rate_limit: { max: 5, per: 1s } }\n",
    );
    let mut jobs: Vec<NewJob> = (0..100)
        .map(|i| {
            NewJob::delay_print(format!("big-{i}"))
                .in_queue("keys")
                .limit_key("big")
        })
        .collect();
    jobs.extend((0..10).map(|i| {
        NewJob::delay_print(format!("small-{i}"))
            .in_queue("keys")
            .limit_key("small")
    }));
    let ids: Vec<String> = q
        .enqueue_batch(jobs)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.job_id)
        .collect();
    let keys = q.queue("keys").unwrap();
    assert_eq!(keys.stats().await.unwrap().pending, 110);
    let _a = worker(&redis, "w1", "keys", 8, Some(config.path())).await;
    let _b = worker(&redis, "w2", "keys", 8, Some(config.path())).await;
    let small = &ids[100..];
    eventually(
        Duration::from_secs(60),
        "the small key's jobs done",
        || async {
            let mut done = 0;
            for id in small {
                if keys.status(id).await.unwrap().unwrap().status == JobStatus::Done {
                    done += 1;
                }
            }
            done == small.len()
        },
    )
    .await;
    let big_done = keys.stats().await.unwrap().done - small.len() as u64;
    assert!(
        big_done < 100,
        "the flooded key ran all its jobs before the small key's last one"
    );
    let done = done_jobs(&keys).await;
    for key in ["big", "small"] {
        let mut starts: Vec<i64> = done
            .iter()
            .filter(|j| j.limit_key.as_deref() == Some(key))
            .map(|j| ms(j.started_at.expect("started_at")))
            .collect();
        starts.sort_unstable();
        let (within, from) = most_in_a_second(&starts);
        assert!(
            within <= 5,
            "{key}: {within} starts in the second from {from}"
        );
    }
    let limits = keys.limits().await.unwrap();
    assert_eq!(limits.key_rate, Some((5, Duration::from_secs(1))));
}

/// `key_concurrency: 1`: each key's jobs run one at a time, two keys side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_concurrency_holds_per_key_not_per_queue() {
    let redis = RedisServer::start();
    let q = client(&redis);
    let config = config_with_jobqueue("queues", "    - { name: kc, key_concurrency: 1 }\n");
    let jobs: Vec<NewJob> = (0..12)
        .map(|i| {
            let key = if i % 2 == 0 { "a" } else { "b" };
            NewJob::delay_print(format!("slow:200:{key}-{i}"))
                .in_queue("kc")
                .limit_key(key)
        })
        .collect();
    q.enqueue_batch(jobs).await.unwrap();
    let _a = worker(&redis, "w1", "kc", 8, Some(config.path())).await;
    let _b = worker(&redis, "w2", "kc", 8, Some(config.path())).await;
    let kc = q.queue("kc").unwrap();
    wait_done(&kc, 12, Duration::from_secs(60)).await;
    let done = done_jobs(&kc).await;
    for key in ["a", "b"] {
        let of_key: Vec<JobInfo> = done
            .iter()
            .filter(|j| j.limit_key.as_deref() == Some(key))
            .cloned()
            .collect();
        assert_eq!(of_key.len(), 6);
        assert_eq!(most_at_once(&of_key), 1, "key {key} ran two at once");
    }
    assert_eq!(
        most_at_once(&done),
        2,
        "the two keys never ran side by side"
    );
    assert_eq!(kc.stats().await.unwrap().running, 0);
}

/// `http:webhook` counts its calls per target host (its default limit key), and
/// `jobqueue.webhook.per_host_rate_limit` caps them over all workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_rate_limited_per_host() {
    let redis = RedisServer::start();
    let (port, _hits, server) = crate::jobs::receiver();
    let host = format!("127.0.0.1:{port}");
    let env = [
        ("APP__JOBQUEUE__WEBHOOK__ALLOWED_HOSTS", host.as_str()),
        ("APP__JOBQUEUE__WEBHOOK__PER_HOST_RATE_LIMIT__MAX", "2"),
        ("APP__JOBQUEUE__WEBHOOK__PER_HOST_RATE_LIMIT__PER", "1s"),
    ];
    let s = crate::common::settings(&redis, &env);
    let q = JobQueue::new(&s.cache_server.redis.jobqueue, &s.jobqueue).unwrap();
    let jobs: Vec<NewJob> = (0..6)
        .map(|_| {
            NewJob::new(
                "http:webhook",
                serde_json::json!({"url": format!("http://{host}/ok")}),
            )
        })
        .collect();
    q.enqueue_batch(jobs).await.unwrap();
    let _w = WorkerCommand::new(env!("CARGO_BIN_EXE_worker"))
        .redis(&redis.addr())
        .name("w-hooks")
        .envs(env)
        .start()
        .await;
    wait_done(&q, 6, Duration::from_secs(60)).await;
    let done = done_jobs(&q).await;
    assert!(done
        .iter()
        .all(|j| j.limit_key.as_deref() == Some(host.as_str())));
    let mut starts: Vec<i64> = done
        .iter()
        .map(|j| ms(j.started_at.expect("started_at")))
        .collect();
    starts.sort_unstable();
    let (within, from) = most_in_a_second(&starts);
    assert!(
        within <= 2,
        "{within} calls to {host} in the second from {from}"
    );
    assert_eq!(
        q.limits().await.unwrap().key_rate,
        Some((2, Duration::from_secs(1)))
    );
    server.stop(true).await;
}

/// Jobs held back by their limit key (parked in `key:<k>:parked`) are pending: the pending
/// listing shows them, paged, as many as the pending count says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_jobs_are_listed_as_pending() {
    let redis = RedisServer::start();
    let q = client(&redis);
    let config = config_with_jobqueue("queues", "    - { name: park, key_concurrency: 1 }\n");
    let mut jobs: Vec<NewJob> = (0..25)
        .map(|i| {
            NewJob::delay_print(format!("slow:120000:big-{i}"))
                .in_queue("park")
                .limit_key("big")
        })
        .collect();
    // one of a lower priority, parked in another band (taken off in the listing, as for the
    // ready ones)
    jobs.push(
        NewJob::delay_print("slow:120000:big-low")
            .in_queue("park")
            .limit_key("big")
            .priority(2),
    );
    let ids: Vec<String> = q
        .enqueue_batch(jobs)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.job_id)
        .collect();
    let _w = worker(&redis, "w1", "park", 4, Some(config.path())).await;
    let park = q.queue("park").unwrap();
    eventually(Duration::from_secs(30), "25 jobs parked", || async {
        redis.cli(&["ZCARD", "{park}:key:big:parked"]).trim() == "25"
    })
    .await;
    let stats = park.stats().await.unwrap();
    assert_eq!((stats.running, stats.pending), (1, 25));
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = park
            .list(JobStatus::Pending, None, 7, cursor.as_deref())
            .await
            .unwrap();
        assert!(page.jobs.iter().all(|j| j.status == JobStatus::Pending));
        listed.extend(page.jobs.into_iter().map(|j| j.job_id));
        match page.next_cursor {
            Some(next) if listed.len() <= ids.len() => cursor = Some(next),
            _ => break,
        }
    }
    assert_eq!(listed.len() as u64, stats.pending, "listed {listed:?}");
    let mut unique = listed.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), listed.len(), "a job listed twice");
    // the one running is not among them; all the others are
    let running = park.list(JobStatus::Running, None, 10, None).await.unwrap();
    assert_eq!(running.jobs.len(), 1);
    let mut expected: Vec<String> = ids
        .iter()
        .filter(|id| **id != running.jobs[0].job_id)
        .cloned()
        .collect();
    expected.sort();
    assert_eq!(unique, expected);
}

/// An orphan handed back through apalis' active list (what `requeue_worker.lua` and apalis-redis'
/// `reenqueue_orphaned.lua` both do) gets the per-key check: with `key_concurrency: 1`, the
/// SIGKILLed worker's job does not run again while another job of its key runs on another worker,
/// and neither is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeued_orphan_waits_for_its_key() {
    let redis = RedisServer::start();
    let q = client(&redis);
    let config = config_with_jobqueue("queues", "    - { name: orph, key_concurrency: 1 }\n");
    let mut a = worker(&redis, "a", "orph", 2, Some(config.path())).await;
    let first = q
        .enqueue(
            NewJob::delay_print("slow:1500:first")
                .in_queue("orph")
                .limit_key("k"),
        )
        .await
        .unwrap()
        .job_id;
    eventually(Duration::from_secs(30), "a runs the first job", || async {
        members(&redis, "{orph}:inflight:a") == [first.clone()]
    })
    .await;
    a.kill();
    // Registered while no worker lives: due in `ready` when the orphan comes back.
    let second = q
        .enqueue(
            NewJob::delay_print("slow:1500:second")
                .in_queue("orph")
                .limit_key("k"),
        )
        .await
        .unwrap()
        .job_id;
    // The dead worker's run handed back as both re-queue paths do (its key slot still names it).
    redis.cli(&["SREM", "{orph}:inflight:a", &first]);
    redis.cli(&["RPUSH", "{orph}:active", &first]);
    redis.cli(&[
        "HSET",
        &format!("{{orph}}:meta:{first}"),
        "status",
        "Pending",
    ]);
    redis.cli(&[
        "HDEL",
        &format!("{{orph}}:meta:{first}"),
        "locked_at",
        "locked_by",
    ]);
    redis.cli(&["ZREM", "{orph}:workers", "a"]);
    let _b = worker(&redis, "b", "orph", 4, Some(config.path())).await;
    let _c = worker(&redis, "c", "orph", 4, Some(config.path())).await;
    let orph = q.queue("orph").unwrap();
    wait_done(&orph, 2, Duration::from_secs(60)).await;
    let done = done_jobs(&orph).await;
    let ids: Vec<&str> = done.iter().map(|j| j.job_id.as_str()).collect();
    assert!(ids.contains(&first.as_str()) && ids.contains(&second.as_str()));
    assert_eq!(
        most_at_once(&done),
        1,
        "the orphan ran beside its key's other job: {done:?}"
    );
    assert_eq!(orph.stats().await.unwrap().running, 0);
}
