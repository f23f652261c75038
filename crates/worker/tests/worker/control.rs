//! Results, progress and cancellation against real Redis and the real `worker` binary (the
//! demo type: `slow:<ms>:` reports progress in ten steps and watches `ctx.cancelled()`,
//! `big:<bytes>:` pads its result). Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::queue;
use cacheserver_jobqueue::{JobInfo, JobQueue, JobQueueError, JobStatus, NewJob, MAX_RESULT_BYTES};
use cacheserver_testkit::{
    eventually, message_of, RedisServer, Stream, WorkerCommand, WorkerProcess,
};
use std::time::Duration;

const BOUND: Duration = Duration::from_secs(15);

async fn start_worker(redis: &RedisServer, name: &str) -> WorkerProcess {
    WorkerCommand::new(env!("CARGO_BIN_EXE_worker"))
        .redis(&redis.addr())
        .name(name)
        .env("APP__LOGGING__LEVEL", "info")
        .env("APP__JOBQUEUE__WORKER__RETRY_BACKOFF", "100ms")
        .start()
        .await
}

/// Wait until job `id` satisfies `check`; panics naming what was seen last.
async fn wait_for(q: &JobQueue, id: &str, what: &str, check: impl Fn(&JobInfo) -> bool) -> JobInfo {
    eventually(BOUND, &format!("job {id}: {what}"), || async {
        match q.status(id).await {
            Ok(Some(info)) if check(&info) => Ok(info),
            other => Err(other),
        }
    })
    .await
}

async fn wait_for_status(q: &JobQueue, id: &str, want: JobStatus) -> JobInfo {
    wait_for(q, id, &format!("{want:?}"), |i| i.status == want).await
}

/// A marker job printed by `worker`: everything it printed before is in its output by then.
async fn printed_after(q: &JobQueue, worker: &WorkerProcess, marker: &str) {
    q.enqueue(NewJob::delay_print(marker)).await.unwrap();
    assert!(
        worker
            .wait_for_line(Stream::Stdout, BOUND, |l| message_of(l) == marker)
            .await,
        "{marker} not printed"
    );
}

fn printed(worker: &WorkerProcess, message: &str) -> bool {
    worker.messages().iter().any(|m| m == message)
}

#[tokio::test]
async fn results_and_progress_are_recorded_and_a_result_over_64_kb_fails_the_run() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let _worker = start_worker(&redis, "w-results").await;

    let slow = q
        .enqueue(NewJob::delay_print("slow:1500:with progress"))
        .await
        .unwrap()
        .job_id;
    let running = wait_for(&q, &slow, "running with progress", |i| {
        i.status == JobStatus::Running && i.progress.is_some()
    })
    .await;
    assert!(running.result.is_none(), "{running:?}");
    let done = wait_for_status(&q, &slow, JobStatus::Done).await;
    assert_eq!(
        done.result,
        Some(serde_json::json!({"printed": "slow:1500:with progress"}))
    );
    let progress = done.progress.expect("the last progress stays");
    assert_eq!(progress.percent, 90, "{progress:?}");
    assert!(progress.message.starts_with("waited 9/10"), "{progress:?}");

    // A result that fits is stored whole; one over 64 KB fails the run for good.
    let fits = MAX_RESULT_BYTES - 100;
    let fits_id = q
        .enqueue(NewJob::delay_print(format!("big:{fits}:fits")).retries(3))
        .await
        .unwrap()
        .job_id;
    let too_big = q
        .enqueue(NewJob::delay_print("big:66560:too big").retries(3))
        .await
        .unwrap()
        .job_id;
    let stored = wait_for_status(&q, &fits_id, JobStatus::Done).await;
    let padding = stored.result.unwrap()["padding"].as_str().unwrap().len();
    assert_eq!(padding, fits);
    let dead = wait_for_status(&q, &too_big, JobStatus::Dead).await;
    assert_eq!(
        dead.attempts, 1,
        "a result too large is not retried: {dead:?}"
    );
    let error = dead.last_error.unwrap();
    assert!(
        error.contains("result too large") && error.contains("at most 65536"),
        "{error}"
    );
    assert!(dead.result.is_none());
}

#[tokio::test]
async fn cancelling_a_running_job_stops_it_and_it_is_never_retried() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let worker = start_worker(&redis, "w-cancel").await;
    let message = "slow:20000:never printed";
    let id = q
        .enqueue(NewJob::delay_print(message).retries(3))
        .await
        .unwrap()
        .job_id;
    // Started: it reported its first progress.
    wait_for(&q, &id, "running with progress", |i| {
        i.status == JobStatus::Running && i.progress.is_some()
    })
    .await;
    let cancel = q.cancel(&id).await.unwrap();
    assert_eq!(cancel.status, JobStatus::Running, "signalled to its worker");
    let cancelled = wait_for_status(&q, &id, JobStatus::Cancelled).await;
    assert!(cancelled.finished_at.is_some(), "{cancelled:?}");
    assert!(!cancelled.cancel_requested);
    printed_after(&q, &worker, "after the cancel").await;
    assert!(!printed(&worker, message), "the cancelled run printed");
    let info = q.status(&id).await.unwrap().unwrap();
    assert_eq!(info.status, JobStatus::Cancelled, "never retried: {info:?}");
    assert!(
        info.errors.is_empty(),
        "a cancel is not a failure: {info:?}"
    );
    let (_, metrics) = worker.get("/metrics").await.unwrap();
    assert!(
        metrics.contains(r#"jobqueue_jobs_cancelled_total{type="demo:delay_print"} 1"#),
        "{metrics}"
    );

    // Counted and listed; cancelling again is a conflict, an unknown id is not found.
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.cancelled, stats.running, stats.retrying), (1, 0, 0));
    let listed = q.list(JobStatus::Cancelled, None, 10, None).await.unwrap();
    assert_eq!(listed.jobs.len(), 1);
    assert_eq!(listed.jobs[0].job_id, id);
    assert!(matches!(
        q.cancel(&id).await,
        Err(JobQueueError::Finished { .. })
    ));
    let unknown = ulid::Ulid::new().to_string();
    assert!(matches!(
        q.cancel(&unknown).await,
        Err(JobQueueError::NotFound(_))
    ));
}

#[tokio::test]
async fn waiting_jobs_are_cancelled_at_once_and_finished_ones_cannot_be() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let later = NewJob::delay_print("scheduled, then cancelled")
        .after(Duration::from_secs(3600))
        .unique("report-1", None);
    let scheduled = q.enqueue(later.clone()).await.unwrap().job_id;
    let cancel = q.cancel(&scheduled).await.unwrap();
    assert_eq!(cancel.status, JobStatus::Cancelled);
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.scheduled, stats.cancelled), (0, 1));
    // The unique key is free again: a cancelled job holds it no more.
    let again = q.enqueue(later).await.unwrap();
    assert!(!again.duplicate);

    let worker = start_worker(&redis, "w-finished").await;
    let done = q
        .enqueue(NewJob::delay_print("done first"))
        .await
        .unwrap()
        .job_id;
    wait_for_status(&q, &done, JobStatus::Done).await;
    let err = q.cancel(&done).await.unwrap_err();
    assert!(
        matches!(&err, JobQueueError::Finished { status, .. } if status == "done"),
        "{err:?}"
    );
    // The scheduled job never ran.
    printed_after(&q, &worker, "marker").await;
    assert!(!printed(&worker, "scheduled, then cancelled"));
}

#[tokio::test]
async fn a_job_cancelled_while_its_worker_was_sigkilled_ends_cancelled_not_run_again() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let mut doomed = start_worker(&redis, "w-doomed").await;
    let message = "slow:20000:cancelled while its worker died";
    let id = q
        .enqueue(NewJob::delay_print(message))
        .await
        .unwrap()
        .job_id;
    wait_for(&q, &id, "running with progress", |i| {
        i.status == JobStatus::Running && i.progress.is_some()
    })
    .await;
    doomed.kill();
    // The job still looks held by the dead worker: the cancel is sent to it and marked.
    let cancel = q.cancel(&id).await.unwrap();
    assert_eq!(cancel.status, JobStatus::Running);
    let marked = q.status(&id).await.unwrap().unwrap();
    assert!(marked.cancel_requested, "{marked:?}");
    // The restarted worker re-queues its orphans, honouring the mark.
    let heir = start_worker(&redis, "w-doomed").await;
    wait_for_status(&q, &id, JobStatus::Cancelled).await;
    printed_after(&q, &heir, "after the restart").await;
    assert!(!printed(&heir, message), "the cancelled job ran again");
}

/// Reports progress `STEPS` times, a millisecond apart, and returns how many it sent.
struct Chatty;

const STEPS: u32 = 300;

impl cacheserver_jobqueue::JobType for Chatty {
    const NAME: &'static str = "test:chatty";
    type Payload = serde_json::Value;
    type Output = u32;

    async fn run(
        &self,
        _payload: serde_json::Value,
        ctx: &cacheserver_jobqueue::JobContext,
    ) -> Result<u32, cacheserver_jobqueue::JobError> {
        for step in 1..=STEPS {
            ctx.progress((step * 100 / STEPS) as u8, format!("step {step}"))?;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(STEPS)
    }
}

#[tokio::test]
async fn progress_reports_are_coalesced_not_one_write_per_call() {
    use cacheserver_worker::{Supervisor, WorkerOptions};
    let redis = RedisServer::start();
    let s = crate::common::settings(&redis, &[]);
    let registry = cacheserver_jobqueue::Registry::production(&s.jobqueue).with(Chatty);
    let redis_settings = &s.cache_server.redis.jobqueue;
    let q = JobQueue::with_registry(redis_settings, &s.jobqueue, registry.clone()).unwrap();
    let options = WorkerOptions {
        name: "w-chatty".into(),
        ..WorkerOptions::from_settings(&s.jobqueue)
    };
    let supervisor = Supervisor::new(redis_settings, &s.jobqueue, options)
        .unwrap()
        .with_registry(registry);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(supervisor.run(stopped));

    let before = redis.script_calls();
    let id = q
        .enqueue(NewJob::new("test:chatty", serde_json::json!({})))
        .await
        .unwrap()
        .job_id;
    let done = wait_for_status(&q, &id, JobStatus::Done).await;
    let calls = redis.script_calls() - before;
    assert_eq!(done.result, Some(serde_json::json!(STEPS)));
    let last = done.progress.unwrap();
    assert_eq!((last.percent, last.message.as_str()), (100, "step 300"));
    // One write per report would be 300 script calls; the writer sends the latest at most
    // every 200 ms (the enqueue, the fetches and the result are a few calls more).
    assert!(
        calls < STEPS as u64 / 3,
        "{calls} script calls for {STEPS} reports"
    );
    let _ = stop.send(true);
    let _ = worker.await;
}
