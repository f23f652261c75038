//! Request and response bodies of the jobs API (and the seed routes' shared ones): what the
//! OpenAPI spec documents, how JSON reads into them, and how the jobqueue's records become them.

use cacheserver_jobqueue::{
    CancelledJob, EnqueuedJob, JobFailure, JobInfo, JobProgress, JobStatus,
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

// The bounds in `#[schema(..)]` are literals (the attributes take no consts); the jobqueue's
// constants enforce them and tests/api/spec_walk.rs sends requests at and past every bound.

/// `POST /api/jobs` body (and each item of a batch). The spec states it once per job type
/// (`oneOf`, by `type`), each with its payload schema.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// A registered job type (`demo:delay_print`, `http:webhook`).
    #[serde(rename = "type")]
    #[schema(example = "demo:delay_print")]
    pub job_type: String,
    /// The type's payload (`<Type>Payload` in the components).
    #[schema(value_type = Object, example = json!({"message": "hello"}))]
    pub payload: Value,
    /// Seconds until it is due; not with `run_at`. Neither: due now.
    #[serde(default, deserialize_with = "present_integer")]
    #[schema(nullable = false, minimum = 0, maximum = 2592000, example = 5)]
    pub delay_seconds: Option<i64>,
    /// When it is due (RFC 3339), at most 30 days ahead (else 400); in the past: due now. Not
    /// with `delay_seconds`.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, format = DateTime, example = "2026-12-01T12:00:00Z")]
    pub run_at: Option<String>,
    /// Extra runs after failures (default `jobqueue.default_max_retry`).
    #[serde(default, deserialize_with = "present_integer")]
    #[schema(nullable = false, minimum = 0, maximum = 100, example = 3)]
    pub max_retry: Option<i64>,
    /// Longest run in seconds (default: the type's, else `jobqueue.default_timeout`).
    #[serde(default, deserialize_with = "present_integer")]
    #[schema(nullable = false, minimum = 1, maximum = 86400, example = 30)]
    pub timeout_seconds: Option<i64>,
    /// While a job with this key is not done or dead, another → 409 (batch: `duplicate`).
    #[serde(default, deserialize_with = "present")]
    #[schema(
        nullable = false,
        min_length = 1,
        max_length = 200,
        example = "order-42"
    )]
    pub unique_key: Option<String>,
    /// The key is held exactly this long after registration instead; needs `unique_key`.
    #[serde(default, deserialize_with = "present_integer")]
    #[schema(nullable = false, minimum = 1, maximum = 2592000, example = 60)]
    pub unique_for_seconds: Option<i64>,
    /// The queue it goes to (default `jobqueue.queue`, `dm-jobqueue`); a new name creates the
    /// queue. Unique keys are per queue.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, value_type = QueueName)]
    pub queue: Option<String>,
    /// 1..=10 (default 5). Among due jobs of the queue a higher priority starts first, equal
    /// priorities in due-time order; a job not yet due waits for its time whatever its priority.
    /// A steady flood of higher priorities starves lower ones (no aging).
    #[serde(default, deserialize_with = "present_integer")]
    #[schema(nullable = false, minimum = 1, maximum = 10, example = 5)]
    pub priority: Option<i64>,
    /// The key the queue's per-key limits (`key_concurrency`, `key_rate_limit` in
    /// `jobqueue.queues`) count this job under, e.g. a customer id: one key's flood does not hold
    /// up the others.
    #[serde(default, deserialize_with = "present")]
    #[schema(
        nullable = false,
        min_length = 1,
        max_length = 200,
        example = "customer-42"
    )]
    pub limit_key: Option<String>,
}

/// A queue name: 1–64 of `A-Z a-z 0-9 _ . -`; another is a 400.
#[derive(ToSchema)]
#[schema(value_type = String, pattern = "^[A-Za-z0-9_.-]{1,64}$", min_length = 1, max_length = 64, example = "critical")]
pub struct QueueName(pub String);

/// `POST /api/jobs/batch` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchJobsRequest {
    #[schema(value_type = Vec<JobRequest>, min_items = 1, max_items = 1000)]
    pub jobs: Vec<Value>,
}

/// An optional field that, when given, holds a value: `null` is a 400 like any wrong type, so
/// "absent" has one spelling and the spec's types need no `null`.
pub(crate) fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// [`present`] for an integer field. JSON Schema's `integer` is any number with no fraction, so
/// `89.0` reads as 89 like `89` does; `89.5` and `"89"` stay 400s.
pub(crate) fn present_integer<'de, D>(deserializer: D) -> Result<Option<i64>, D::Error>
where
    D: Deserializer<'de>,
{
    use serde::de::{Error, Unexpected, Visitor};

    struct Integer;

    impl Visitor<'_> for Integer {
        type Value = i64;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an integer")
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<i64, E> {
            // Every f64 in [-2^63, 2^63) with no fraction is exactly an i64.
            let integral = v.fract() == 0.0 && v >= i64::MIN as f64 && v < i64::MAX as f64;
            integral
                .then_some(v as i64)
                .ok_or_else(|| E::invalid_value(Unexpected::Float(v), &self))
        }
    }

    deserializer.deserialize_any(Integer).map(Some)
}

/// `{id}` of the job routes: a ULID (Crockford base32, either case); else 400.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct JobIdPath {
    /// Job id.
    #[param(
        pattern = "^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$",
        example = "01JDQ2X7Q9W5K8M3N4P6R7S8T9"
    )]
    pub id: String,
}

/// A registered job.
/// `GET /api/jobs/{id}` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Answer once the job is done, dead or cancelled, or after this many seconds with its state
    /// then (1..=60). Without it: at once.
    #[param(nullable = false, minimum = 1, maximum = 60, example = 30)]
    pub wait: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RegisteredJob {
    #[schema(example = "01JDQ2X7Q9W5K8M3N4P6R7S8T9")]
    pub job_id: String,
    /// `registered`, or in a batch `duplicate` (then `job_id` is the job holding the unique key).
    #[schema(example = "registered")]
    pub status: String,
    /// When it becomes due (RFC 3339, UTC); it never runs earlier. Absent for duplicates.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "2026-11-28T12:00:05.123Z")]
    pub run_at: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchResponse {
    pub jobs: Vec<RegisteredJob>,
}

/// One failed run.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FailureBody {
    pub at: String,
    pub attempt: u32,
    pub error: String,
}

/// A job in full.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobDetail {
    pub job_id: String,
    /// The queue holding it.
    #[schema(example = "dm-jobqueue")]
    pub queue: String,
    #[serde(rename = "type")]
    #[schema(example = "demo:delay_print")]
    pub job_type: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    /// scheduled | pending | running | retrying | done | dead
    #[schema(example = "scheduled")]
    pub status: String,
    /// Runs so far.
    pub attempts: u32,
    pub max_retry: u32,
    /// The job's own timeout; `null`: its type's or `jobqueue.default_timeout`.
    pub timeout_seconds: Option<f64>,
    #[schema(example = "2026-11-28T12:00:05.123Z")]
    pub run_at: String,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub last_error: Option<String>,
    /// The last 10 failures, newest first.
    pub errors: Vec<FailureBody>,
    /// What the run returned (done jobs of types that return something; at most 64 KB as JSON):
    /// one of the job types' result schemas.
    #[schema(value_type = Option<JobResult>)]
    pub result: Option<Value>,
    /// What the run last reported (`ctx.progress`).
    pub progress: Option<JobProgress>,
    /// A cancel was asked for while it runs; it ends `cancelled` once its worker stops it.
    pub cancel_requested: bool,
    /// 1..=10; higher starts first among due jobs of its queue.
    #[schema(minimum = 1, maximum = 10, example = 5)]
    pub priority: u8,
    /// The key its queue's per-key limits count it under.
    pub limit_key: Option<String>,
}

/// A job's result: the result schema of its type (`components.schemas.JobResult` is a `oneOf`
/// of every registered type's, filled in per registry).
#[derive(ToSchema)]
#[schema(value_type = Object)]
pub struct JobResult(pub Value);

/// `POST /api/jobs/{id}/cancel` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CancelBody {
    #[schema(example = "01JDQ2X7Q9W5K8M3N4P6R7S8T9")]
    pub job_id: String,
    /// `cancelled` (it was waiting), or `running`: the cancel was sent to the worker running it,
    /// which stops it at its next `.await` (within about a second) and records it `cancelled`.
    #[schema(example = "cancelled")]
    pub status: String,
}

/// `GET /api/jobs` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[param(value_type = JobStatus, inline)]
    pub state: String,
    /// The queue (default `jobqueue.queue`); one that never existed → 404, a bad name → 400.
    #[param(
        nullable = false,
        pattern = "^[A-Za-z0-9_.-]{1,64}$",
        min_length = 1,
        max_length = 64,
        example = "dm-jobqueue"
    )]
    pub queue: Option<String>,
    /// Only jobs of this type (a page may then hold fewer than `limit`; follow `next_cursor`).
    #[serde(rename = "type")]
    #[param(rename = "type", nullable = false, example = "demo:delay_print")]
    pub job_type: Option<String>,
    /// Page size (default 50); out of range is a 400, never clamped.
    #[param(nullable = false, minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page (`<score>:<id>`; another → 400).
    #[param(
        nullable = false,
        pattern = "^[0-9]+(\\.[0-9]+)?:[0-9A-Za-z]+$",
        example = "1764590400000:01JDQ2X7Q9W5K8M3N4P6R7S8T9"
    )]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobPageBody {
    pub jobs: Vec<JobDetail>,
    /// Pass as `cursor` for the next page; `null` at the end.
    pub next_cursor: Option<String>,
}

/// `POST /api/jobs/retry` body: exactly one of `ids` and `state`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRetryRequest {
    /// These jobs (the dead ones among them are retried).
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, value_type = Vec<JobId>, max_items = 1000)]
    pub ids: Option<Vec<String>>,
    /// Dead jobs, at most 1000 per call; repeat while `affected` is 1000.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, value_type = DeadState)]
    pub state: Option<String>,
    /// The queue of `ids` or `state` (default `jobqueue.queue`); one that never existed → 404.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, value_type = QueueName)]
    pub queue: Option<String>,
}

/// `POST /api/jobs/delete` body: exactly one of `ids` and `state`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkDeleteRequest {
    /// These jobs (running ones are skipped).
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, value_type = Vec<JobId>, max_items = 1000)]
    pub ids: Option<Vec<String>>,
    /// Jobs in this state, at most 1000 per call; repeat while `affected` is 1000.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, value_type = DeletableState)]
    pub state: Option<String>,
    /// The queue of `ids` or `state` (default `jobqueue.queue`); one that never existed → 404.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, value_type = QueueName)]
    pub queue: Option<String>,
}

/// A job id (ULID, Crockford base32, either case).
#[derive(ToSchema)]
#[schema(value_type = String, pattern = "^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$", example = "01JDQ2X7Q9W5K8M3N4P6R7S8T9")]
pub struct JobId(pub String);

/// The only state whose jobs can be retried.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum DeadState {
    Dead,
}

/// The states whose jobs can be deleted (not `running`).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum DeletableState {
    Scheduled,
    Pending,
    Retrying,
    Done,
    Dead,
    Cancelled,
}

/// The states whose jobs can be cancelled.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum CancellableState {
    Scheduled,
    Pending,
    Retrying,
    Running,
}

/// `POST /api/jobs/cancel` body: `ids` or `state` (up to 1000 jobs of it), not both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkCancelRequest {
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, value_type = Vec<JobId>, max_items = 1000)]
    pub ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, value_type = CancellableState)]
    pub state: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, value_type = QueueName)]
    pub queue: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BulkResponse {
    pub affected: u64,
}

// ---- from the jobqueue's records ----

pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn registered(job: EnqueuedJob) -> RegisteredJob {
    RegisteredJob {
        job_id: job.job_id,
        status: if job.duplicate {
            "duplicate"
        } else {
            "registered"
        }
        .into(),
        run_at: (!job.duplicate).then(|| time(job.run_at)),
    }
}

pub(crate) fn detail(info: JobInfo) -> JobDetail {
    let failure = |f: JobFailure| FailureBody {
        at: time(f.at),
        attempt: f.attempt,
        error: f.error,
    };
    JobDetail {
        job_id: info.job_id,
        queue: info.queue,
        job_type: info.job_type,
        payload: info.payload,
        status: info.status.as_str().into(),
        attempts: info.attempts,
        max_retry: info.max_retry,
        timeout_seconds: info.timeout_seconds,
        run_at: time(info.run_at),
        created_at: info.created_at.map(time),
        started_at: info.started_at.map(time),
        finished_at: info.finished_at.map(time),
        last_error: info.last_error,
        errors: info.errors.into_iter().map(failure).collect(),
        result: info.result,
        progress: info.progress,
        cancel_requested: info.cancel_requested,
        priority: info.priority,
        limit_key: info.limit_key,
    }
}

pub(crate) fn cancelled(job: CancelledJob) -> CancelBody {
    CancelBody {
        job_id: job.job_id,
        status: job.status.as_str().into(),
    }
}
