//! The generic jobs API: register (one or a batch) any registered job type, read a job, list by
//! state with stable cursors, retry, delete, cancel, and bulk retry/delete/cancel. Under `/api`, so rate
//! limited; when `jobqueue.api_key` is set every route needs `Authorization: Bearer <key>`.
//! The queue's rules (limits, unique keys, states) are the jobqueue library's; this file turns
//! HTTP into its calls; the bodies are in `job_dto.rs`. The seed's `/api/dm-jobqueue/*` routes
//! (`dm_jobqueue.rs`) are thin adapters over the same functions.

use super::job_dto::{
    cancelled, detail, registered, BatchJobsRequest, BatchResponse, BulkCancelRequest,
    BulkDeleteRequest, BulkResponse, BulkRetryRequest, CancelBody, JobDetail, JobIdPath,
    JobPageBody, JobRequest, ListQuery, RegisteredJob, WaitQuery,
};
use crate::error::{json_error_handler, ApiError, ErrorBody};
use crate::state::AppState;
use actix_web::{delete, get, post, web, HttpResponse};
use cacheserver_jobqueue::{JobQueue, JobStatus, NewJob, MAX_BATCH, MAX_BULK, MAX_WAIT_SECONDS};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::time::Duration;

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
    .service(bulk_cancel)
    .service(get_job)
    .service(retry_job)
    .service(cancel_job)
    .service(delete_job);
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
        (status = 400, description = "a query the schema rejects: unknown state, limit outside 1..=500, a cursor this api did not return, a bad queue name, an unknown parameter", body = ErrorBody),
        (status = 404, description = "a queue that never existed", body = ErrorBody),
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
    let page = existing_queue(&state, q.queue.as_deref())
        .await?
        .list(status, q.job_type.as_deref(), limit, q.cursor.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(JobPageBody {
        jobs: page.jobs.into_iter().map(detail).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(
    tag = "jobs",
    params(JobIdPath, WaitQuery),
    responses(
        (status = 200, description = "the job with its error history, result and progress (with `wait`: once it is done, dead or cancelled, or as it is when the wait ends)", body = JobDetail),
        (status = 400, description = "not a ULID, `wait` outside 1..=60", body = ErrorBody),
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
    query: web::Query<WaitQuery>,
) -> Result<HttpResponse, ApiError> {
    let Some(wait) = query.wait else {
        return job_response(&state, &path.id).await;
    };
    if !(1..=MAX_WAIT_SECONDS).contains(&wait) {
        return Err(ApiError::BadRequest(format!(
            "wait must be 1..={MAX_WAIT_SECONDS} seconds"
        )));
    }
    let queue = queue_holding(&state, &path.id).await?;
    let info = queue
        .wait_finished(&path.id, Duration::from_secs(wait))
        .await?
        .ok_or_else(|| not_found(&path.id))?;
    Ok(HttpResponse::Ok().json(detail(info)))
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
    params(JobIdPath),
    responses(
        (status = 200, description = "`cancelled`: it was scheduled, pending or retrying and left its queue; `running`: the cancel was sent to the worker running it, which drops the run at its next `.await` (within about a second) and records it `cancelled`, never retried (a run that completes before the cancel reaches it stays `done`)", body = CancelBody),
        (status = 400, description = "not a ULID", body = ErrorBody),
        (status = 404, description = "unknown id", body = ErrorBody),
        (status = 409, description = "the job is done, dead or cancelled already", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[post("/jobs/{id}/cancel")]
pub async fn cancel_job(
    state: web::Data<AppState>,
    path: web::Path<JobIdPath>,
) -> Result<HttpResponse, ApiError> {
    let job = queue_holding(&state, &path.id)
        .await?
        .cancel(&path.id)
        .await?;
    Ok(HttpResponse::Ok().json(cancelled(job)))
}

#[utoipa::path(
    tag = "jobs",
    request_body = BulkCancelRequest,
    responses(
        (status = 200, description = "jobs cancelled, or signalled when running; finished ones are skipped", body = BulkResponse),
        (status = 400, description = "neither or both of ids/state, over 1000 ids, an id not a ULID, a state other than scheduled/pending/retrying/running, a bad queue name", body = ErrorBody),
        (status = 404, description = "a queue that never existed", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 413, description = "body over 64 KB", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[post("/jobs/cancel")]
pub async fn bulk_cancel(
    state: web::Data<AppState>,
    body: web::Json<BulkCancelRequest>,
) -> Result<HttpResponse, ApiError> {
    let BulkCancelRequest {
        ids,
        state: which,
        queue,
    } = body.into_inner();
    let queue = existing_queue(&state, queue.as_deref()).await?;
    let unfinished = |s| {
        matches!(
            s,
            JobStatus::Scheduled | JobStatus::Pending | JobStatus::Retrying | JobStatus::Running
        )
    };
    let ids = bulk_ids(&queue, ids, which, unfinished).await?;
    let affected = queue.cancel_many(&ids).await?;
    Ok(HttpResponse::Ok().json(BulkResponse { affected }))
}

#[utoipa::path(
    tag = "jobs",
    request_body = BulkRetryRequest,
    responses(
        (status = 200, description = "dead jobs among them due again", body = BulkResponse),
        (status = 400, description = "neither or both of ids/state, over 1000 ids, an id not a ULID, state other than dead, a bad queue name", body = ErrorBody),
        (status = 404, description = "a queue that never existed", body = ErrorBody),
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
    let BulkRetryRequest {
        ids,
        state: which,
        queue,
    } = body.into_inner();
    let queue = existing_queue(&state, queue.as_deref()).await?;
    let ids = bulk_ids(&queue, ids, which, |s| s == JobStatus::Dead).await?;
    let affected = queue.retry_many(&ids).await?;
    Ok(HttpResponse::Ok().json(BulkResponse { affected }))
}

#[utoipa::path(
    tag = "jobs",
    request_body = BulkDeleteRequest,
    responses(
        (status = 200, description = "jobs deleted (running ones are skipped)", body = BulkResponse),
        (status = 400, description = "neither or both of ids/state, over 1000 ids, an id not a ULID, state running or unknown, a bad queue name", body = ErrorBody),
        (status = 404, description = "a queue that never existed", body = ErrorBody),
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
    let BulkDeleteRequest {
        ids,
        state: which,
        queue,
    } = body.into_inner();
    let queue = existing_queue(&state, queue.as_deref()).await?;
    let ids = bulk_ids(&queue, ids, which, |s| s != JobStatus::Running).await?;
    let affected = queue.delete_many(&ids).await?;
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
    job.queue = r.queue;
    // out of 1..=10 (even past u8) is refused by the jobqueue's check, which names the field
    job.limit_key = r.limit_key;
    job.priority = r
        .priority
        .map(|p| u8::try_from(p.clamp(0, 255)).unwrap_or(0));
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
    let queue = queue_holding(state, id).await?;
    let info = queue.status(id).await?.ok_or_else(|| not_found(id))?;
    Ok(HttpResponse::Ok().json(detail(info)))
}

pub(crate) async fn retry_response(state: &AppState, id: &str) -> Result<HttpResponse, ApiError> {
    queue_holding(state, id).await?.retry(id).await?;
    job_response(state, id).await
}

pub(crate) async fn delete_response(state: &AppState, id: &str) -> Result<HttpResponse, ApiError> {
    if queue_holding(state, id).await?.delete(id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(not_found(id))
    }
}

/// The queue holding job `id` (whichever it is): 400 for a malformed id, 404 if none has it.
pub(crate) async fn queue_holding(state: &AppState, id: &str) -> Result<JobQueue, ApiError> {
    check_id(id)?;
    state.jobs.find(id).await?.ok_or_else(|| not_found(id))
}

/// The queue `name` names (default: `jobqueue.queue`): 400 for a bad name, 404 for one that
/// never existed.
pub(crate) async fn existing_queue(
    state: &AppState,
    name: Option<&str>,
) -> Result<JobQueue, ApiError> {
    let Some(name) = name else {
        return Ok(state.jobs.default_queue());
    };
    state
        .jobs
        .existing_queue(name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("queue {name} not found")))
}

pub(crate) fn parse_state(text: &str) -> Result<JobStatus, ApiError> {
    JobStatus::parse(text).ok_or_else(|| {
        let known: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
        ApiError::BadRequest(format!("state must be one of {}", known.join(", ")))
    })
}

/// The ids a bulk call acts on: the given ones, or (up to 1000) of a state `allowed` accepts.
async fn bulk_ids(
    queue: &JobQueue,
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
            Ok(queue.ids_in(status).await?)
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
