//! The generic jobs API: register (one or a batch) any registered job type, read a job, list by
//! state with stable cursors, retry, delete, and bulk retry/delete. Under `/api`, so rate
//! limited; when `jobqueue.api_key` is set every route needs `Authorization: Bearer <key>`.
//! The queue's rules (limits, unique keys, states) are the jobqueue library's; this file turns
//! HTTP into its calls. The seed's `/api/dm-jobqueue/*` routes (`dm_jobqueue.rs`) call the same
//! functions.

use crate::error::{json_error_handler, ApiError, ErrorBody};
use crate::state::AppState;
use actix_web::{delete, get, post, web, HttpResponse};
use cacheserver_jobqueue::{
    EnqueuedJob, JobFailure, JobInfo, JobStatus, NewJob, MAX_BATCH, MAX_BULK,
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::time::Duration;
use utoipa::ToSchema;

/// Page size of `GET /api/jobs` without `limit`.
const DEFAULT_LIMIT: usize = 50;

/// Largest body of `POST /api/jobs/batch`.
pub const MAX_BATCH_BODY_BYTES: usize = 2 * 1024 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // The batch route takes larger bodies than the rest of the api.
    cfg.service(
        web::scope("/jobs/batch")
            .app_data(
                web::JsonConfig::default()
                    .limit(MAX_BATCH_BODY_BYTES)
                    .error_handler(json_error_handler),
            )
            .service(create_batch),
    )
    .service(create)
    .service(list)
    .service(bulk_retry)
    .service(bulk_delete)
    .service(get_job)
    .service(retry_job)
    .service(delete_job);
}

// The bounds in `#[schema(..)]` are literals (the attributes take no consts); the jobqueue's
// constants enforce them and tests/spec_walk.rs sends requests at and past every bound.

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
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, minimum = 0, maximum = 2592000, example = 5)]
    pub delay_seconds: Option<i64>,
    /// When it is due (RFC 3339), at most 30 days ahead (else 400); in the past: due now. Not
    /// with `delay_seconds`.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, format = DateTime, example = "2026-12-01T12:00:00Z")]
    pub run_at: Option<String>,
    /// Extra runs after failures (default `jobqueue.default_max_retry`).
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, minimum = 0, maximum = 100, example = 3)]
    pub max_retry: Option<i64>,
    /// Longest run in seconds (default: the type's, else `jobqueue.default_timeout`).
    #[serde(default, deserialize_with = "present")]
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
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, minimum = 1, maximum = 2592000, example = 60)]
    pub unique_for_seconds: Option<i64>,
}

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
}

/// `GET /api/jobs` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[param(value_type = JobStatus, inline)]
    pub state: String,
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
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BulkResponse {
    pub affected: u64,
}

#[utoipa::path(
    tag = "jobs",
    request_body = JobRequest,
    responses(
        (status = 201, description = "stored", body = RegisteredJob),
        (status = 400, description = "a body the schema rejects (the message names the field; an unknown type names the known ones), `run_at` over 30 days ahead, a webhook host not allowed or webhooks disabled", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 409, description = "`unique_key` held by another job (`job_id`)", body = ErrorBody),
        (status = 413, description = "body over 64 KB", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[post("/jobs")]
pub async fn create(
    state: web::Data<AppState>,
    body: web::Json<JobRequest>,
) -> Result<HttpResponse, ApiError> {
    let job = new_job(&state, body.into_inner()).map_err(ApiError::BadRequest)?;
    register_one(&state, job).await
}

#[utoipa::path(
    tag = "jobs",
    path = "/jobs/batch",
    request_body = BatchJobsRequest,
    responses(
        (status = 201, description = "all valid: each `registered` or `duplicate`", body = BatchResponse),
        (status = 400, description = "a body the schema rejects, or an item the single route would reject (the message names its index); nothing stored", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 413, description = "body over 2 MB", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[post("")]
pub async fn create_batch(
    state: web::Data<AppState>,
    body: web::Json<BatchJobsRequest>,
) -> Result<HttpResponse, ApiError> {
    let jobs = parse_batch(body.into_inner().jobs, |item| {
        serde_json::from_value::<JobRequest>(item)
            .map_err(|e| e.to_string())
            .and_then(|r| new_job(&state, r))
    })?;
    register_batch(&state, jobs).await
}

#[utoipa::path(
    tag = "jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "one page: scheduled/retrying by next run time, pending/running by due time, done/dead newest first", body = JobPageBody),
        (status = 400, description = "a query the schema rejects: unknown state, limit outside 1..=500, a cursor this api did not return, an unknown parameter", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[get("/jobs")]
pub async fn list(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let status = parse_state(&q.state)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    let page = state
        .jobs
        .list(status, q.job_type.as_deref(), limit, q.cursor.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(JobPageBody {
        jobs: page.jobs.into_iter().map(detail).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(
    tag = "jobs",
    params(JobIdPath),
    responses(
        (status = 200, description = "the job with its error history", body = JobDetail),
        (status = 400, description = "not a ULID", body = ErrorBody),
        (status = 404, description = "unknown id", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[get("/jobs/{id}")]
pub async fn get_job(
    state: web::Data<AppState>,
    path: web::Path<JobIdPath>,
) -> Result<HttpResponse, ApiError> {
    job_response(&state, &path.id).await
}

#[utoipa::path(
    tag = "jobs",
    params(JobIdPath),
    responses(
        (status = 200, description = "dead job due again (pending)", body = JobDetail),
        (status = 400, description = "not a ULID", body = ErrorBody),
        (status = 404, description = "unknown id", body = ErrorBody),
        (status = 409, description = "the job is not dead", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[post("/jobs/{id}/retry")]
pub async fn retry_job(
    state: web::Data<AppState>,
    path: web::Path<JobIdPath>,
) -> Result<HttpResponse, ApiError> {
    retry_response(&state, &path.id).await
}

#[utoipa::path(
    tag = "jobs",
    params(JobIdPath),
    responses(
        (status = 204, description = "deleted (scheduled, pending, retrying, done or dead)"),
        (status = 400, description = "not a ULID", body = ErrorBody),
        (status = 404, description = "unknown id", body = ErrorBody),
        (status = 409, description = "running now", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[delete("/jobs/{id}")]
pub async fn delete_job(
    state: web::Data<AppState>,
    path: web::Path<JobIdPath>,
) -> Result<HttpResponse, ApiError> {
    delete_response(&state, &path.id).await
}

#[utoipa::path(
    tag = "jobs",
    request_body = BulkRetryRequest,
    responses(
        (status = 200, description = "dead jobs among them due again", body = BulkResponse),
        (status = 400, description = "neither or both of ids/state, over 1000 ids, an id not a ULID, state other than dead", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 413, description = "body over 64 KB", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[post("/jobs/retry")]
pub async fn bulk_retry(
    state: web::Data<AppState>,
    body: web::Json<BulkRetryRequest>,
) -> Result<HttpResponse, ApiError> {
    let BulkRetryRequest { ids, state: which } = body.into_inner();
    let ids = bulk_ids(&state, ids, which, |s| s == JobStatus::Dead).await?;
    let affected = state.jobs.retry_many(&ids).await?;
    Ok(HttpResponse::Ok().json(BulkResponse { affected }))
}

#[utoipa::path(
    tag = "jobs",
    request_body = BulkDeleteRequest,
    responses(
        (status = 200, description = "jobs deleted (running ones are skipped)", body = BulkResponse),
        (status = 400, description = "neither or both of ids/state, over 1000 ids, an id not a ULID, state running or unknown", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 413, description = "body over 64 KB", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[post("/jobs/delete")]
pub async fn bulk_delete(
    state: web::Data<AppState>,
    body: web::Json<BulkDeleteRequest>,
) -> Result<HttpResponse, ApiError> {
    let BulkDeleteRequest { ids, state: which } = body.into_inner();
    let ids = bulk_ids(&state, ids, which, |s| s != JobStatus::Running).await?;
    let affected = state.jobs.delete_many(&ids).await?;
    Ok(HttpResponse::Ok().json(BulkResponse { affected }))
}

// ---- shared with the seed routes ----

/// HTTP fields → a [`NewJob`]. Out-of-range numbers are passed on saturated so the jobqueue's
/// own checks (the one owner of the limits) name them.
fn new_job(state: &AppState, r: JobRequest) -> Result<NewJob, String> {
    let (delay, at) = match (r.delay_seconds, r.run_at.as_deref()) {
        (Some(_), Some(_)) => return Err("give delay_seconds or run_at, not both".into()),
        (Some(secs), None) => (seconds(secs), None),
        (None, Some(at)) => (Duration::ZERO, Some(parse_time(at)?)),
        (None, None) => (Duration::ZERO, None),
    };
    let max_retry = r
        .max_retry
        .unwrap_or(state.settings.jobqueue.default_max_retry);
    let mut job = NewJob::new(r.job_type, r.payload)
        .after(delay)
        .retries(u32::try_from(max_retry).unwrap_or(u32::MAX));
    job.at = at;
    job.timeout = r.timeout_seconds.map(seconds);
    job.unique_key = r.unique_key;
    job.unique_for = r.unique_for_seconds.map(seconds);
    Ok(job)
}

/// Negative → zero-or-huge so the queue's range check rejects it with its own message.
fn seconds(secs: i64) -> Duration {
    u64::try_from(secs).map_or(Duration::MAX, Duration::from_secs)
}

fn parse_time(at: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(at)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("run_at must be an RFC 3339 time ({e})"))
}

/// Check the item count, turn every item into a job (the error names its index).
pub(crate) fn parse_batch(
    items: Vec<Value>,
    mut parse: impl FnMut(Value) -> Result<NewJob, String>,
) -> Result<Vec<NewJob>, ApiError> {
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "jobs must hold 1..={MAX_BATCH} items, got {}",
            items.len()
        )));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| parse(item).map_err(|e| ApiError::BadRequest(format!("jobs[{i}]: {e}"))))
        .collect()
}

pub(crate) async fn register_one(state: &AppState, job: NewJob) -> Result<HttpResponse, ApiError> {
    let stored = state.jobs.enqueue(job).await?;
    crate::domain_metrics::jobs_registered(1);
    Ok(HttpResponse::Created().json(registered(stored)))
}

pub(crate) async fn register_batch(
    state: &AppState,
    jobs: Vec<NewJob>,
) -> Result<HttpResponse, ApiError> {
    let stored = state.jobs.enqueue_batch(jobs).await?;
    let new = stored.iter().filter(|j| !j.duplicate).count();
    crate::domain_metrics::jobs_registered(new as u64);
    let jobs = stored.into_iter().map(registered).collect();
    Ok(HttpResponse::Created().json(BatchResponse { jobs }))
}

/// 200 with the job in full, 400 for a malformed id, 404 for an unknown one.
pub(crate) async fn job_response(state: &AppState, id: &str) -> Result<HttpResponse, ApiError> {
    check_id(id)?;
    let info = state.jobs.status(id).await?.ok_or_else(|| not_found(id))?;
    Ok(HttpResponse::Ok().json(detail(info)))
}

pub(crate) async fn retry_response(state: &AppState, id: &str) -> Result<HttpResponse, ApiError> {
    check_id(id)?;
    state.jobs.retry(id).await?;
    job_response(state, id).await
}

pub(crate) async fn delete_response(state: &AppState, id: &str) -> Result<HttpResponse, ApiError> {
    check_id(id)?;
    if state.jobs.delete(id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(not_found(id))
    }
}

pub(crate) fn parse_state(text: &str) -> Result<JobStatus, ApiError> {
    JobStatus::parse(text).ok_or_else(|| {
        let known: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
        ApiError::BadRequest(format!("state must be one of {}", known.join(", ")))
    })
}

/// The ids a bulk call acts on: the given ones, or (up to 1000) of a state `allowed` accepts.
async fn bulk_ids(
    state: &AppState,
    ids: Option<Vec<String>>,
    which: Option<String>,
    allowed: impl Fn(JobStatus) -> bool,
) -> Result<Vec<String>, ApiError> {
    match (ids, which) {
        (Some(ids), None) => {
            if ids.len() > MAX_BULK {
                return Err(ApiError::BadRequest(format!(
                    "ids must hold at most {MAX_BULK} items"
                )));
            }
            ids.iter().try_for_each(|id| check_id(id))?;
            Ok(ids)
        }
        (None, Some(s)) => {
            let status = parse_state(&s)?;
            if !allowed(status) {
                return Err(ApiError::BadRequest(format!(
                    "state {s} is not allowed here"
                )));
            }
            Ok(state.jobs.ids_in(status).await?)
        }
        _ => Err(ApiError::BadRequest("give either ids or state".into())),
    }
}

fn check_id(id: &str) -> Result<(), ApiError> {
    ulid::Ulid::from_string(id)
        .map(|_| ())
        .map_err(|_| ApiError::BadRequest(format!("{id:?} is not a job id (ULID)")))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("job {id} not found"))
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn registered(job: EnqueuedJob) -> RegisteredJob {
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
    }
}
