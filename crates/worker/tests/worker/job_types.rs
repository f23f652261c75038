//! "Adding a job type" from the README, done here: a type defined in this file (one `impl`),
//! added to the registry with one line, registered through `JobQueue` and run by a real
//! (in-process) supervised apalis worker on a real Redis. Test-only types never enter the
//! production registry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cacheserver_config::Settings;
use cacheserver_jobqueue::{
    JobContext, JobError, JobQueue, JobQueueError, JobStatus, JobType, NewJob, Registry,
};
use cacheserver_testkit::{eventually, RedisServer};
use cacheserver_worker::{Supervisor, WorkerOptions};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The new type: `test:greet {name}` sends a greeting; `name = "later"` fails once.
struct Greet(mpsc::UnboundedSender<String>);

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
struct GreetPayload {
    name: String,
}

impl JobType for Greet {
    const NAME: &'static str = "test:greet";
    type Payload = GreetPayload;
    type Output = ();

    fn validate(&self, payload: &GreetPayload) -> Result<(), String> {
        if payload.name.is_empty() {
            return Err("name must not be empty".into());
        }
        Ok(())
    }

    async fn run(&self, payload: GreetPayload, ctx: &JobContext) -> Result<(), JobError> {
        if payload.name == "later" && ctx.attempt == 1 {
            return Err(JobError::retry("not yet"));
        }
        if payload.name == "never" {
            return Err(JobError::fatal("no retry can help"));
        }
        let _ = self
            .0
            .send(format!("hello {} (attempt {})", payload.name, ctx.attempt));
        Ok(())
    }
}

/// A type whose default timeout is short, to show the runner applies it.
struct Sleepy;

impl JobType for Sleepy {
    const NAME: &'static str = "test:sleepy";
    type Payload = serde_json::Value;
    type Output = ();

    fn default_timeout(&self) -> Option<Duration> {
        Some(Duration::from_millis(200))
    }

    async fn run(&self, _payload: serde_json::Value, _ctx: &JobContext) -> Result<(), JobError> {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(())
    }
}

fn settings(redis: &RedisServer) -> Settings {
    crate::common::settings(redis, &[("APP__JOBQUEUE__WORKER__RETRY_BACKOFF", "50ms")])
}

/// Wait until job `id` has status `want` (at most 15 s); panics naming the last status seen.
async fn wait_for_status(q: &JobQueue, id: &str, want: JobStatus) {
    let what = format!("job {id} becomes {want:?}");
    eventually(Duration::from_secs(15), &what, || async {
        let status = q.status(id).await.unwrap().map(|i| i.status);
        if status == Some(want) {
            Ok(())
        } else {
            Err(status)
        }
    })
    .await;
}

#[tokio::test]
async fn a_job_type_defined_outside_the_crate_runs_with_retries_timeouts_and_validation() {
    let redis = RedisServer::start();
    let s = settings(&redis);
    let (tx, mut greetings) = mpsc::unbounded_channel();
    // The one line that adds the types.
    let registry = Registry::production(&s.jobqueue)
        .with(Greet(tx))
        .with(Sleepy);
    assert!(!Registry::production(&s.jobqueue).contains("test:greet"));

    let redis_settings = &s.cache_server.redis.jobqueue;
    let q = JobQueue::with_registry(redis_settings, &s.jobqueue, registry.clone()).unwrap();
    let options = WorkerOptions::from_settings(&s.jobqueue);
    let supervisor = Supervisor::new(
        redis_settings,
        &s.jobqueue,
        WorkerOptions {
            name: "w-types".into(),
            ..options
        },
    )
    .unwrap()
    .with_registry(registry);
    let (stop, stopped) = watch::channel(false);
    let worker = tokio::spawn(supervisor.run(stopped));

    // Validation names the field; unknown types name the known ones.
    let bad = q
        .enqueue(NewJob::new("test:greet", serde_json::json!({"name": ""})))
        .await;
    assert!(matches!(bad, Err(JobQueueError::Invalid(m)) if m.contains("name")));
    let unknown = q
        .enqueue(NewJob::new("test:nope", serde_json::json!({})))
        .await;
    assert!(
        matches!(unknown, Err(JobQueueError::Invalid(m)) if m.contains("test:greet") && m.contains("demo:delay_print"))
    );

    let id = q
        .enqueue(NewJob::new("test:greet", serde_json::json!({"name": "later"})).retries(2))
        .await
        .unwrap()
        .job_id;
    let greeting = tokio::time::timeout(Duration::from_secs(15), greetings.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(greeting, "hello later (attempt 2)");
    wait_for_status(&q, &id, JobStatus::Done).await;
    let info = q.status(&id).await.unwrap().unwrap();
    assert_eq!((info.attempts, info.errors.len()), (2, 1), "{info:?}");
    assert_eq!(info.job_type, "test:greet");

    // A fatal error is dead at once, whatever max_retry says.
    let never = q
        .enqueue(NewJob::new("test:greet", serde_json::json!({"name": "never"})).retries(5))
        .await
        .unwrap()
        .job_id;
    wait_for_status(&q, &never, JobStatus::Dead).await;
    assert_eq!(q.status(&never).await.unwrap().unwrap().attempts, 1);

    // The type's default timeout applies when the job gives none.
    let sleepy = q
        .enqueue(NewJob::new("test:sleepy", serde_json::json!({})))
        .await
        .unwrap()
        .job_id;
    wait_for_status(&q, &sleepy, JobStatus::Dead).await;
    let info = q.status(&sleepy).await.unwrap().unwrap();
    assert_eq!(info.last_error.as_deref(), Some("timed out after 0.2 s"));

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), worker)
        .await
        .unwrap()
        .unwrap();
}

/// A type that declares the queue its jobs go to.
struct Routed;

impl JobType for Routed {
    const NAME: &'static str = "test:routed";
    type Payload = serde_json::Value;
    type Output = ();

    fn default_queue(&self) -> Option<&'static str> {
        Some("media")
    }

    async fn run(&self, _payload: serde_json::Value, _ctx: &JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_job_type_may_declare_its_default_queue() {
    let redis = RedisServer::start();
    let s = settings(&redis);
    let registry = Registry::production(&s.jobqueue).with(Routed);
    let q = JobQueue::with_registry(&s.cache_server.redis.jobqueue, &s.jobqueue, registry).unwrap();
    let job = || NewJob::new("test:routed", serde_json::json!({})).after(Duration::from_secs(60));
    let routed = q.enqueue(job()).await.unwrap().job_id;
    let named = q.enqueue(job().in_queue("other")).await.unwrap().job_id;
    let plain = q.enqueue(NewJob::delay_print("x")).await.unwrap().job_id;
    for (id, queue) in [(routed, "media"), (named, "other"), (plain, "dm-jobqueue")] {
        let holder = q.find(&id).await.unwrap().unwrap();
        assert_eq!(holder.name(), queue, "{id}");
    }
}
