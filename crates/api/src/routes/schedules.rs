//! Schedules (cron): create, list, read, replace, delete, pause, resume and trigger. The rules
//! (exactly one job per tick, missed ticks, overlap) live in the job queue
//! (`cacheserver_jobqueue::schedules`) and the worker's scheduler; this is HTTP only.
//! A schedule declared in config (`jobqueue.schedules`) may be changed here, but every worker
//! start applies the config again: for the same name, config wins.

use super::job_dto::{present, present_integer, QueueName};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use actix_web::{delete, get, post, put, web, HttpResponse};
use cacheserver_config::{schedule_name_problem, Missed, Overlap};
use cacheserver_jobqueue::schedules::{Schedule, ScheduleInfo, ScheduledJobSettings};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list_schedules)
        .service(create_schedule)
        .service(get_schedule)
        .service(replace_schedule)
        .service(delete_schedule)
        .service(pause_schedule)
        .service(resume_schedule)
        .service(trigger_schedule);
}

/// A schedule name: 1–64 of `A-Z a-z 0-9 _ . -`; another is a 400.
#[derive(ToSchema)]
#[schema(value_type = String, pattern = "^[A-Za-z0-9_.-]{1,64}$", min_length = 1, max_length = 64, example = "nightly-report")]
pub struct ScheduleName(pub String);

/// The job a schedule enqueues on each tick. The spec states it once per job type (`oneOf`, by
/// `type`), each with its payload schema.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleJob {
    /// A registered job type.
    #[serde(rename = "type")]
    #[schema(example = "demo:delay_print")]
    pub job_type: String,
    #[schema(value_type = Object, example = json!({"message": "hello"}))]
    pub payload: Value,
    /// The queue (default `jobqueue.queue`).
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, value_type = QueueName)]
    pub queue: Option<String>,
    /// Extra runs after failures (default 0).
    #[serde(default, deserialize_with = "present_integer")]
    #[schema(nullable = false, minimum = 0, maximum = 100, example = 3)]
    pub max_retry: Option<i64>,
    /// Longest run in seconds (default: the type's, else `jobqueue.default_timeout`).
    #[serde(default, deserialize_with = "present_integer")]
    #[schema(nullable = false, minimum = 1, maximum = 86400, example = 30)]
    pub timeout_seconds: Option<i64>,
    /// 1..=10 (default 5): among due jobs of the queue a higher priority starts first.
    #[serde(default, deserialize_with = "present_integer")]
    #[schema(nullable = false, minimum = 1, maximum = 10, example = 5)]
    pub priority: Option<i64>,
}

/// `PUT /api/schedules/{name}` body: everything but the name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleUpdate {
    /// 5 fields (`m h dom mon dow`) or 6 with seconds first (`s m h dom mon dow`); a bad one
    /// is a 400 naming it.
    #[schema(format = "cron", example = "0 3 * * *")]
    pub cron: String,
    /// IANA zone the cron is read in (default `UTC`); an unknown one is a 400 naming it.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, format = "iana-time-zone", example = "Europe/Berlin")]
    pub timezone: Option<String>,
    pub job: ScheduleJob,
    /// `skip`: skip a tick while the schedule's previous job is not done or dead (default
    /// `allow`).
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub overlap: Option<Overlap>,
    /// After downtime: `skip` the missed ticks (default) or `run_once` (one job for them).
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub missed: Option<Missed>,
}

/// `POST /api/schedules` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    #[schema(value_type = ScheduleName)]
    pub name: String,
    #[schema(format = "cron", example = "0 3 * * *")]
    pub cron: String,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, format = "iana-time-zone", example = "Europe/Berlin")]
    pub timezone: Option<String>,
    pub job: ScheduleJob,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub overlap: Option<Overlap>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub missed: Option<Missed>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleInfo>,
}

/// `POST /api/schedules/{name}/trigger` answer: the job enqueued now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TriggeredBody {
    pub name: String,
    pub job_id: String,
    /// When it is due (now; RFC 3339).
    pub run_at: String,
}

impl ScheduleUpdate {
    fn into_schedule(self, name: String) -> Result<Schedule, ApiError> {
        let job = self.job;
        let int = |field: &str, v: Option<i64>| {
            v.map(|v| {
                u64::try_from(v)
                    .map_err(|_| ApiError::BadRequest(format!("job.{field} must be ≥ 0")))
            })
            .transpose()
        };
        let max_retry = int("max_retry", job.max_retry)?.unwrap_or(0);
        Ok(Schedule {
            name,
            cron: self.cron,
            timezone: self.timezone.unwrap_or_else(|| "UTC".into()),
            job: ScheduledJobSettings {
                job_type: job.job_type,
                payload: job.payload,
                queue: job.queue,
                max_retry: u32::try_from(max_retry).unwrap_or(u32::MAX),
                timeout_seconds: int("timeout_seconds", job.timeout_seconds)?,
                // out of 1..=10 (even past u8) is refused by the check, naming the field
                priority: job
                    .priority
                    .map(|p| u8::try_from(p.clamp(0, 255)).unwrap_or(0)),
            },
            overlap: self.overlap.unwrap_or_default(),
            missed: self.missed.unwrap_or_default(),
        })
    }
}

/// A 400 for a name that cannot be a schedule's.
fn checked_name(name: &str) -> Result<&str, ApiError> {
    match schedule_name_problem(name) {
        Some(problem) => Err(ApiError::BadRequest(problem)),
        None => Ok(name),
    }
}

fn unknown(name: &str) -> ApiError {
    ApiError::NotFound(format!("schedule {name} not found"))
}

async fn info(state: &AppState, name: &str) -> Result<ScheduleInfo, ApiError> {
    state
        .jobs
        .schedules()
        .get(name)
        .await?
        .ok_or_else(|| unknown(name))
}

#[utoipa::path(
    tag = "schedules",
    responses(
        (status = 200, description = "every schedule by name, with its next and last run", body = ScheduleList),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[get("/schedules")]
pub async fn list_schedules(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let schedules = state.jobs.schedules().list().await?;
    Ok(HttpResponse::Ok().json(ScheduleList { schedules }))
}

#[utoipa::path(
    tag = "schedules",
    request_body = ScheduleRequest,
    responses(
        (status = 201, description = "created; its first tick is the first after now", body = ScheduleInfo),
        (status = 400, description = "bad name, cron expression, time zone, job type or payload (the message names it)", body = ErrorBody),
        (status = 409, description = "a schedule with this name exists", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[post("/schedules")]
pub async fn create_schedule(
    state: web::Data<AppState>,
    body: web::Json<ScheduleRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let name = checked_name(&body.name)?.to_owned();
    let schedule = ScheduleUpdate {
        cron: body.cron,
        timezone: body.timezone,
        job: body.job,
        overlap: body.overlap,
        missed: body.missed,
    }
    .into_schedule(name.clone())?;
    if !state.jobs.schedules().create(&schedule).await? {
        return Err(ApiError::Conflict(format!("schedule {name} exists")));
    }
    Ok(HttpResponse::Created().json(info(&state, &name).await?))
}

#[utoipa::path(
    tag = "schedules",
    params(("name" = String, Path, description = "schedule name: 1–64 of A-Z a-z 0-9 _ . - (another → 400)", pattern = "^[A-Za-z0-9_.-]{1,64}$", max_length = 64, example = "nightly-report")),
    responses(
        (status = 200, description = "the schedule", body = ScheduleInfo),
        (status = 400, description = "not a schedule name", body = ErrorBody),
        (status = 404, description = "unknown schedule", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[get("/schedules/{name}")]
pub async fn get_schedule(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = checked_name(&name)?;
    Ok(HttpResponse::Ok().json(info(&state, name).await?))
}

#[utoipa::path(
    tag = "schedules",
    params(("name" = String, Path, description = "schedule name: 1–64 of A-Z a-z 0-9 _ . - (another → 400)", pattern = "^[A-Za-z0-9_.-]{1,64}$", max_length = 64, example = "nightly-report")),
    request_body = ScheduleUpdate,
    responses(
        (status = 200, description = "replaced; the next tick stays unless the cron or zone changed", body = ScheduleInfo),
        (status = 400, description = "bad name, cron expression, time zone, job type or payload (the message names it)", body = ErrorBody),
        (status = 404, description = "unknown schedule", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[put("/schedules/{name}")]
pub async fn replace_schedule(
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: web::Json<ScheduleUpdate>,
) -> Result<HttpResponse, ApiError> {
    let name = checked_name(&name)?.to_owned();
    let schedule = body.into_inner().into_schedule(name.clone())?;
    if !state.jobs.schedules().replace(&schedule).await? {
        return Err(unknown(&name));
    }
    Ok(HttpResponse::Ok().json(info(&state, &name).await?))
}

#[utoipa::path(
    tag = "schedules",
    params(("name" = String, Path, description = "schedule name: 1–64 of A-Z a-z 0-9 _ . - (another → 400)", pattern = "^[A-Za-z0-9_.-]{1,64}$", max_length = 64, example = "nightly-report")),
    responses(
        (status = 204, description = "deleted (jobs it enqueued stay)"),
        (status = 400, description = "not a schedule name", body = ErrorBody),
        (status = 404, description = "unknown schedule", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[delete("/schedules/{name}")]
pub async fn delete_schedule(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = checked_name(&name)?;
    if !state.jobs.schedules().delete(name).await? {
        return Err(unknown(name));
    }
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    tag = "schedules",
    params(("name" = String, Path, description = "schedule name: 1–64 of A-Z a-z 0-9 _ . - (another → 400)", pattern = "^[A-Za-z0-9_.-]{1,64}$", max_length = 64, example = "nightly-report")),
    responses(
        (status = 200, description = "paused: no tick is enqueued until resumed", body = ScheduleInfo),
        (status = 400, description = "not a schedule name", body = ErrorBody),
        (status = 404, description = "unknown schedule", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[post("/schedules/{name}/pause")]
pub async fn pause_schedule(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = checked_name(&name)?;
    if !state.jobs.schedules().pause(name).await? {
        return Err(unknown(name));
    }
    Ok(HttpResponse::Ok().json(info(&state, name).await?))
}

#[utoipa::path(
    tag = "schedules",
    params(("name" = String, Path, description = "schedule name: 1–64 of A-Z a-z 0-9 _ . - (another → 400)", pattern = "^[A-Za-z0-9_.-]{1,64}$", max_length = 64, example = "nightly-report")),
    responses(
        (status = 200, description = "resumed from the first tick after now (ticks while paused are not run)", body = ScheduleInfo),
        (status = 400, description = "not a schedule name", body = ErrorBody),
        (status = 404, description = "unknown schedule", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[post("/schedules/{name}/resume")]
pub async fn resume_schedule(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = checked_name(&name)?;
    if !state.jobs.schedules().resume(name).await? {
        return Err(unknown(name));
    }
    Ok(HttpResponse::Ok().json(info(&state, name).await?))
}

#[utoipa::path(
    tag = "schedules",
    params(("name" = String, Path, description = "schedule name: 1–64 of A-Z a-z 0-9 _ . - (another → 400)", pattern = "^[A-Za-z0-9_.-]{1,64}$", max_length = 64, example = "nightly-report")),
    responses(
        (status = 202, description = "the schedule's job, enqueued now (besides its ticks)", body = TriggeredBody),
        (status = 400, description = "not a schedule name", body = ErrorBody),
        (status = 404, description = "unknown schedule", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[post("/schedules/{name}/trigger")]
pub async fn trigger_schedule(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = checked_name(&name)?;
    let job = state
        .jobs
        .schedules()
        .trigger(name)
        .await?
        .ok_or_else(|| unknown(name))?;
    Ok(HttpResponse::Accepted().json(TriggeredBody {
        name: name.to_owned(),
        job_id: job.job_id,
        run_at: job
            .run_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }))
}
