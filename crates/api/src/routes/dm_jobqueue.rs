//! The seed's routes under `/api/dm-jobqueue`, kept with their request shapes and defaults
//! (delay 180 s) as thin calls into the generic jobs code (`jobs.rs`). They register the demo
//! job `demo:delay_print`: the worker prints `[YYYY-MM-DD HH:MM:SS] <message>` after the delay;
//! a message starting with `fail:` fails on every run.

use super::job_dto::{
    detail, present_integer, BatchResponse, DeadState, JobDetail, JobIdPath, RegisteredJob,
};
use super::jobs::{
    delete_response, job_response, parse_batch, parse_state, register_batch, register_one,
    retry_response,
};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use actix_web::{delete, get, post, web, HttpResponse};
use cacheserver_jobqueue::{DelayPrint, JobStatus, JobType, NewJob, QueueStats};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

/// Most dead jobs one seed listing returns.
const MAX_SEED_LIST: usize = 200;
/// Dead jobs returned without `limit`.
const DEFAULT_SEED_LIST: usize = 50;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(register)
        .service(register_batch_route)
        .service(list_jobs)
        .service(get_job)
        .service(stats)
        .service(retry_job)
        .service(delete_job);
}

// Bounds are literals (attributes take no consts); tests/api/spec_walk.rs checks them against the api.
// Operation ids are prefixed `dm_jobqueue_`: they are unique across the spec (tests/api/docs.rs), and
// the generic routes (`jobs.rs`) use the plain handler names.

/// `POST /api/dm-jobqueue/register` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// What the job prints: at most 10240 characters, not only whitespace. `fail:` prefix: the
    /// job fails on purpose.
    #[schema(
        example = "hello later",
        min_length = 1,
        max_length = 10240,
        pattern = r"\S"
    )]
    pub message: String,
    /// Seconds until it runs (default `jobqueue.default_delay_seconds`).
    #[serde(default, deserialize_with = "present_integer")]
    #[schema(nullable = false, minimum = 0, maximum = 2592000, example = 5)]
    pub delay_seconds: Option<i64>,
    /// Extra runs after failures (default `jobqueue.default_max_retry`).
    #[serde(default, deserialize_with = "present_integer")]
    #[schema(nullable = false, minimum = 0, maximum = 100, example = 3)]
    pub max_retry: Option<i64>,
}

/// `POST /api/dm-jobqueue/register/batch` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Each like the single register body.
    #[schema(value_type = Vec<RegisterRequest>, min_items = 1, max_items = 1000)]
    pub jobs: Vec<serde_json::Value>,
}

/// `GET /api/dm-jobqueue/stats` body: jobs per state (the same words as a job's `status`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatsBody {
    pub scheduled: u64,
    pub pending: u64,
    pub running: u64,
    pub retrying: u64,
    pub done: u64,
    pub dead: u64,
    pub cancelled: u64,
}

impl From<QueueStats> for StatsBody {
    fn from(s: QueueStats) -> Self {
        Self {
            scheduled: s.scheduled,
            pending: s.pending,
            running: s.running,
            retrying: s.retrying,
            done: s.done,
            dead: s.dead,
            cancelled: s.cancelled,
        }
    }
}

/// `GET /api/dm-jobqueue/jobs` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only `dead` (the generic `GET /api/jobs` lists every state).
    #[param(value_type = DeadState, inline)]
    pub status: String,
    /// How many (default 50); out of range is a 400, never clamped.
    #[param(nullable = false, minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobDetail>,
}

#[utoipa::path(
    tag = "jobs",
    operation_id = "dm_jobqueue_register",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "stored", body = RegisteredJob),
        (status = 400, description = "a body the schema rejects (the message names the field)", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 413, description = "body over 64 KB", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[post("/dm-jobqueue/register")]
pub async fn register(
    state: web::Data<AppState>,
    body: web::Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let job = demo_job(&state, body.into_inner()).map_err(ApiError::BadRequest)?;
    register_one(&state, job).await
}

#[utoipa::path(
    tag = "jobs",
    operation_id = "dm_jobqueue_register_batch_route",
    request_body = BatchRequest,
    responses(
        (status = 201, description = "all stored", body = BatchResponse),
        (status = 400, description = "a body the schema rejects (the message names the item's index); nothing stored", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 413, description = "body over 64 KB", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[post("/dm-jobqueue/register/batch")]
pub async fn register_batch_route(
    state: web::Data<AppState>,
    body: web::Json<BatchRequest>,
) -> Result<HttpResponse, ApiError> {
    let jobs = parse_batch(body.into_inner().jobs, |item| {
        serde_json::from_value::<RegisterRequest>(item)
            .map_err(|e| e.to_string())
            .and_then(|r| demo_job(&state, r))
    })?;
    register_batch(&state, jobs).await
}

#[utoipa::path(
    tag = "jobs",
    operation_id = "dm_jobqueue_get_job",
    params(JobIdPath),
    responses(
        (status = 200, description = "the job", body = JobDetail),
        (status = 400, description = "not a ULID", body = ErrorBody),
        (status = 404, description = "unknown id", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[get("/dm-jobqueue/jobs/{id}")]
pub async fn get_job(
    state: web::Data<AppState>,
    path: web::Path<JobIdPath>,
) -> Result<HttpResponse, ApiError> {
    job_response(&state, &path.id).await
}

#[utoipa::path(
    tag = "jobs",
    operation_id = "dm_jobqueue_list_jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "dead jobs, newest first", body = JobList),
        (status = 400, description = "status other than dead, limit outside 1..=200, an unknown parameter", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[get("/dm-jobqueue/jobs")]
pub async fn list_jobs(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    if parse_state(&query.status)? != JobStatus::Dead {
        return Err(ApiError::BadRequest(
            "only status=dead can be listed here; GET /api/jobs?state= lists every state".into(),
        ));
    }
    let limit = query.limit.unwrap_or(DEFAULT_SEED_LIST);
    if !(1..=MAX_SEED_LIST).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1..={MAX_SEED_LIST}"
        )));
    }
    let jobs = state.jobs.dead_jobs(limit).await?;
    Ok(HttpResponse::Ok().json(JobList {
        jobs: jobs.into_iter().map(detail).collect(),
    }))
}

#[utoipa::path(
    tag = "jobs",
    operation_id = "dm_jobqueue_stats",
    responses(
        (status = 200, description = "jobs per state", body = StatsBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[get("/dm-jobqueue/stats")]
pub async fn stats(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(StatsBody::from(state.jobs.stats().await?)))
}

#[utoipa::path(
    tag = "jobs",
    operation_id = "dm_jobqueue_retry_job",
    params(JobIdPath),
    responses(
        (status = 200, description = "dead job queued again", body = JobDetail),
        (status = 400, description = "not a ULID", body = ErrorBody),
        (status = 404, description = "unknown id", body = ErrorBody),
        (status = 409, description = "the job is not dead", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[post("/dm-jobqueue/jobs/{id}/retry")]
pub async fn retry_job(
    state: web::Data<AppState>,
    path: web::Path<JobIdPath>,
) -> Result<HttpResponse, ApiError> {
    retry_response(&state, &path.id).await
}

#[utoipa::path(
    tag = "jobs",
    operation_id = "dm_jobqueue_delete_job",
    params(JobIdPath),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "not a ULID", body = ErrorBody),
        (status = 404, description = "unknown id", body = ErrorBody),
        (status = 409, description = "running now", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[delete("/dm-jobqueue/jobs/{id}")]
pub async fn delete_job(
    state: web::Data<AppState>,
    path: web::Path<JobIdPath>,
) -> Result<HttpResponse, ApiError> {
    delete_response(&state, &path.id).await
}

/// The seed's body → a `demo:delay_print` job with the seed's defaults; the jobqueue checks
/// the limits and the payload (its messages name the field).
fn demo_job(state: &AppState, body: RegisterRequest) -> Result<NewJob, String> {
    let defaults = &state.settings.jobqueue;
    let delay = body.delay_seconds.unwrap_or(defaults.default_delay_seconds);
    let max_retry = body.max_retry.unwrap_or(defaults.default_max_retry);
    let payload = serde_json::json!({ "message": body.message });
    Ok(NewJob::new(DelayPrint::NAME, payload)
        .after(u64::try_from(delay).map_or(Duration::MAX, Duration::from_secs))
        .retries(u32::try_from(max_retry).unwrap_or(u32::MAX)))
}
