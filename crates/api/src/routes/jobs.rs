//! Delayed jobs: register (one or a batch), inspect, retry, delete, stats. Under `/api`, so rate
//! limited. When `jobqueue.api_key` is set every route needs `Authorization: Bearer <key>`.
//!
//! Demo job `demo:delay_print`: the worker prints `[YYYY-MM-DD HH:MM:SS] <message>` after the
//! delay. A message starting with `fail:` fails on every run (to watch retries and dead jobs).

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use cacheserver_config::{MAX_DELAY_SECONDS, MAX_RETRY_LIMIT};
use cacheserver_jobqueue::{EnqueuedJob, JobInfo, NewJob, QueueStats, MAX_BATCH};
use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

/// Largest message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 10 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(register)
        .service(register_batch)
        .service(list_jobs)
        .service(get_job)
        .service(stats)
        .service(retry_job)
        .service(delete_job);
}

/// `POST /api/dm-jobqueue/register` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// What the job prints; 1 byte to 10 KB. `fail:` prefix: the job fails on purpose.
    #[schema(example = "hello later")]
    pub message: Option<String>,
    /// Seconds until it runs, 0..=2592000 (default `jobqueue.default_delay_seconds`).
    #[schema(example = 5)]
    pub delay_seconds: Option<i64>,
    /// Extra runs after failures, 0..=100 (default `jobqueue.default_max_retry`).
    #[schema(example = 3)]
    pub max_retry: Option<i64>,
}

/// `POST /api/dm-jobqueue/register/batch` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1..=1000 jobs, each like the single register body.
    #[schema(value_type = Vec<RegisterRequest>)]
    pub jobs: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RegisteredJob {
    #[schema(example = "01JDQ2X7Q9W5K8M3N4P6R7S8T9")]
    pub job_id: String,
    #[schema(example = "registered")]
    pub status: String,
    /// When it becomes due (RFC 3339, UTC); it never runs earlier.
    #[schema(example = "2026-11-28T12:00:05.123Z")]
    pub run_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchResponse {
    pub jobs: Vec<RegisteredJob>,
}

/// `GET /api/dm-jobqueue/jobs/{id}` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobBody {
    pub job_id: String,
    /// scheduled | pending | running | done | failed | dead
    #[schema(example = "scheduled")]
    pub status: String,
    /// Runs so far.
    pub attempts: u32,
    pub max_retry: u32,
    #[schema(example = "2026-11-28T12:00:05.123Z")]
    pub run_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// `GET /api/dm-jobqueue/stats` body: jobs per state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatsBody {
    pub scheduled: u64,
    pub pending: u64,
    pub active: u64,
    pub done: u64,
    pub dead: u64,
}

#[utoipa::path(
    tag = "jobs",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "stored", body = RegisteredJob),
        (status = 400, description = "invalid body", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 413, description = "body over 64 KB", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[post("/dm-jobqueue/register")]
pub async fn register(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req)?;
    let job = validate(&state, body.into_inner()).map_err(ApiError::BadRequest)?;
    let stored = state.jobs.enqueue(job).await?;
    crate::http_metrics::jobs_registered(1);
    Ok(HttpResponse::Created().json(registered(stored)))
}

#[utoipa::path(
    tag = "jobs",
    request_body = BatchRequest,
    responses(
        (status = 201, description = "all stored", body = BatchResponse),
        (status = 400, description = "an invalid item (the message names its index)", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[post("/dm-jobqueue/register/batch")]
pub async fn register_batch(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<BatchRequest>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req)?;
    let items = body.into_inner().jobs;
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "jobs must hold 1..={MAX_BATCH} items, got {}",
            items.len()
        )));
    }
    let jobs = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            serde_json::from_value::<RegisterRequest>(item)
                .map_err(|e| e.to_string())
                .and_then(|r| validate(&state, r))
                .map_err(|e| ApiError::BadRequest(format!("jobs[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let stored = state.jobs.enqueue_batch(jobs).await?;
    crate::http_metrics::jobs_registered(stored.len() as u64);
    let jobs = stored.into_iter().map(registered).collect();
    Ok(HttpResponse::Created().json(BatchResponse { jobs }))
}

#[utoipa::path(
    tag = "jobs",
    params(("id" = String, Path, description = "job id (ULID)")),
    responses(
        (status = 200, description = "the job", body = JobBody),
        (status = 404, description = "unknown id", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[get("/dm-jobqueue/jobs/{id}")]
pub async fn get_job(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req)?;
    job_response(&state, &id).await
}

/// `GET /api/dm-jobqueue/jobs` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only `dead` can be listed (the other states are counted by `/stats`).
    pub status: String,
    /// How many, 1..=200 (default 50).
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobBody>,
}

#[utoipa::path(
    tag = "jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "dead jobs, newest first", body = JobList),
        (status = 400, description = "status other than dead", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[get("/dm-jobqueue/jobs")]
pub async fn list_jobs(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req)?;
    if query.status != "dead" {
        return Err(ApiError::BadRequest(
            "only status=dead can be listed".into(),
        ));
    }
    let jobs = state.jobs.dead_jobs(query.limit.unwrap_or(50)).await?;
    Ok(HttpResponse::Ok().json(JobList {
        jobs: jobs.into_iter().map(job_body).collect(),
    }))
}

#[utoipa::path(
    tag = "jobs",
    responses(
        (status = 200, description = "jobs per state", body = StatsBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[get("/dm-jobqueue/stats")]
pub async fn stats(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req)?;
    let s: QueueStats = state.jobs.stats().await?;
    Ok(HttpResponse::Ok().json(StatsBody {
        scheduled: s.scheduled,
        pending: s.pending,
        active: s.active,
        done: s.done,
        dead: s.dead,
    }))
}

#[utoipa::path(
    tag = "jobs",
    params(("id" = String, Path, description = "job id (ULID)")),
    responses(
        (status = 200, description = "dead job queued again", body = JobBody),
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
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req)?;
    state.jobs.retry(&id).await?;
    job_response(&state, &id).await
}

#[utoipa::path(
    tag = "jobs",
    params(("id" = String, Path, description = "job id (ULID)")),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "unknown id", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[delete("/dm-jobqueue/jobs/{id}")]
pub async fn delete_job(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req)?;
    if state.jobs.delete(&id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(not_found(&id))
    }
}

/// Defaults from `jobqueue`, then the documented limits. The error names the field.
fn validate(state: &AppState, body: RegisterRequest) -> Result<NewJob, String> {
    let defaults = &state.settings.jobqueue;
    let message = body.message.unwrap_or_default();
    if message.trim().is_empty() {
        return Err("message is required and must not be empty".into());
    }
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(format!("message must be at most {MAX_MESSAGE_BYTES} bytes"));
    }
    let delay = body.delay_seconds.unwrap_or(defaults.default_delay_seconds);
    if !(0..=MAX_DELAY_SECONDS).contains(&delay) {
        return Err(format!("delay_seconds must be 0..={MAX_DELAY_SECONDS}"));
    }
    let max_retry = body.max_retry.unwrap_or(defaults.default_max_retry);
    if !(0..=MAX_RETRY_LIMIT).contains(&max_retry) {
        return Err(format!("max_retry must be 0..={MAX_RETRY_LIMIT}"));
    }
    Ok(NewJob {
        message,
        delay: Duration::from_secs(delay as u64),
        max_retry: max_retry as u32,
    })
}

/// 401 unless the bearer token matches `jobqueue.api_key` (when one is set).
fn authorize(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    crate::auth::require_bearer(req, state.settings.jobqueue.api_key.as_ref())
}

/// 200 with the job's current state, or 404.
async fn job_response(state: &AppState, id: &str) -> Result<HttpResponse, ApiError> {
    let info = state.jobs.status(id).await?.ok_or_else(|| not_found(id))?;
    Ok(HttpResponse::Ok().json(job_body(info)))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("job {id} not found"))
}

fn registered(job: EnqueuedJob) -> RegisteredJob {
    RegisteredJob {
        job_id: job.job_id,
        status: "registered".into(),
        run_at: job.run_at.to_rfc3339_opts(SecondsFormat::Millis, true),
    }
}

fn job_body(info: JobInfo) -> JobBody {
    JobBody {
        job_id: info.job_id,
        status: info.status.as_str().into(),
        attempts: info.attempts,
        max_retry: info.max_retry,
        run_at: info.run_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        last_error: info.last_error,
    }
}
