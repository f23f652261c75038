//! Queues: every queue with its counts, pause/resume, and the per-minute history the workers keep
//! in Redis. A queue exists when it is the default (`jobqueue.queue`), declared
//! (`jobqueue.queues`) or ever had a job; any other name is a 404.

use super::dm_jobqueue::StatsBody;
use super::jobs::existing_queue;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use actix_web::{get, post, web, HttpResponse};
use cacheserver_jobqueue::{JobQueue, MAX_HISTORY_MINUTES};
use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list_queues)
        .service(get_queue)
        .service(pause)
        .service(resume)
        .service(history);
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueBody {
    #[schema(example = "dm-jobqueue")]
    pub name: String,
    pub paused: bool,
    pub counts: StatsBody,
    pub limits: LimitsBody,
}

/// A queue's limits shared by all workers (`jobqueue.queues` entries, written to Redis by the
/// workers serving the queue when they start), the slots in use and the jobs waiting.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LimitsBody {
    /// At most this many of the queue's jobs running at once; `null`: no limit.
    #[schema(example = 5)]
    pub concurrency: Option<u32>,
    /// At most `max` starts in any window of `per_seconds`; `null`: no limit.
    pub rate_limit: Option<RateLimitBody>,
    /// Jobs workers hold now (running, or fetched and about to start): what `concurrency`
    /// counts.
    pub running: u64,
    /// Due jobs not started yet (the `pending` count): waiting for a worker or a limit.
    pub waiting: u64,
    /// Per limit key (a job's `limit_key`): at most this many of one key's jobs running at
    /// once; `null`: no limit.
    pub key_concurrency: Option<u32>,
    /// Per limit key: at most `max` starts of one key's jobs per `per_seconds`.
    pub key_rate_limit: Option<RateLimitBody>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RateLimitBody {
    #[schema(example = 100)]
    pub max: u32,
    /// The sliding window, in seconds.
    #[schema(example = 60.0)]
    pub per_seconds: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueList {
    pub queues: Vec<QueueBody>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PausedBody {
    #[schema(example = "dm-jobqueue")]
    pub name: String,
    pub paused: bool,
}

/// `GET /api/queues/{queue}/history` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// How many minutes back (default 60); out of range is a 400.
    #[param(nullable = false, minimum = 1, maximum = 1440)]
    pub minutes: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MinuteBody {
    /// The minute's start (RFC 3339, UTC).
    #[schema(example = "2026-12-01T12:00:00Z")]
    pub minute: String,
    /// Runs that succeeded.
    pub processed: u64,
    /// Runs that failed (a retried job counts once per failed run).
    pub failed: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryBody {
    pub name: String,
    /// Oldest first.
    pub minutes: Vec<MinuteBody>,
}

#[utoipa::path(
    tag = "queues",
    responses(
        (status = 200, description = "every queue with its counts", body = QueueList),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[get("/queues")]
pub async fn list_queues(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut queues = Vec::new();
    for name in state.jobs.queue_names().await? {
        queues.push(queue_body(&state.jobs.queue(&name)?).await?);
    }
    Ok(HttpResponse::Ok().json(QueueList { queues }))
}

#[utoipa::path(
    tag = "queues",
    params(("queue" = String, Path, description = "queue name: the default (`jobqueue.queue`), a declared one (`jobqueue.queues`) or one that ever had a job; another → 404", example = "dm-jobqueue")),
    responses(
        (status = 200, description = "the queue with its counts", body = QueueBody),
        (status = 400, description = "not a queue name (1–64 of A-Z a-z 0-9 _ . -)", body = ErrorBody),
        (status = 404, description = "unknown queue", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[get("/queues/{queue}")]
pub async fn get_queue(
    state: web::Data<AppState>,
    queue: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let queue = existing_queue(&state, Some(&queue)).await?;
    Ok(HttpResponse::Ok().json(queue_body(&queue).await?))
}

async fn queue_body(queue: &JobQueue) -> Result<QueueBody, ApiError> {
    let stats = queue.stats().await?;
    let limits = queue.limits().await?;
    Ok(QueueBody {
        name: queue.name().to_owned(),
        paused: queue.is_paused().await?,
        limits: LimitsBody {
            concurrency: limits.concurrency,
            rate_limit: limits.rate.map(|(max, per)| RateLimitBody {
                max,
                per_seconds: per.as_secs_f64(),
            }),
            running: stats.running,
            waiting: stats.pending,
            key_concurrency: limits.key_concurrency,
            key_rate_limit: limits.key_rate.map(|(max, per)| RateLimitBody {
                max,
                per_seconds: per.as_secs_f64(),
            }),
        },
        counts: stats.into(),
    })
}

#[utoipa::path(
    tag = "queues",
    params(("queue" = String, Path, description = "queue name: the default (`jobqueue.queue`), a declared one (`jobqueue.queues`) or one that ever had a job; another → 404", example = "dm-jobqueue")),
    responses(
        (status = 200, description = "paused: no new job starts; running jobs finish, and each worker may still start the few it had fetched (at most its concurrency)", body = PausedBody),
        (status = 400, description = "not a queue name (1–64 of A-Z a-z 0-9 _ . -)", body = ErrorBody),
        (status = 404, description = "unknown queue", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[post("/queues/{queue}/pause")]
pub async fn pause(
    state: web::Data<AppState>,
    queue: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let queue = existing_queue(&state, Some(&queue)).await?;
    queue.pause().await?;
    Ok(paused(&queue, true))
}

#[utoipa::path(
    tag = "queues",
    params(("queue" = String, Path, description = "queue name: the default (`jobqueue.queue`), a declared one (`jobqueue.queues`) or one that ever had a job; another → 404", example = "dm-jobqueue")),
    responses(
        (status = 200, description = "resumed", body = PausedBody),
        (status = 400, description = "not a queue name (1–64 of A-Z a-z 0-9 _ . -)", body = ErrorBody),
        (status = 404, description = "unknown queue", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[post("/queues/{queue}/resume")]
pub async fn resume(
    state: web::Data<AppState>,
    queue: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let queue = existing_queue(&state, Some(&queue)).await?;
    queue.resume().await?;
    Ok(paused(&queue, false))
}

#[utoipa::path(
    tag = "queues",
    params(("queue" = String, Path, description = "queue name: the default (`jobqueue.queue`), a declared one (`jobqueue.queues`) or one that ever had a job; another → 404", example = "dm-jobqueue"), HistoryQuery),
    responses(
        (status = 200, description = "runs per minute, from counters the workers add to in Redis (kept 24 h)", body = HistoryBody),
        (status = 400, description = "minutes outside 1..=1440 or not a number, an unknown parameter, not a queue name", body = ErrorBody),
        (status = 404, description = "unknown queue", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "jobqueue Redis unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[get("/queues/{queue}/history")]
pub async fn history(
    state: web::Data<AppState>,
    queue: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let queue = existing_queue(&state, Some(&queue)).await?;
    let minutes = query.minutes.unwrap_or(60);
    if !(1..=MAX_HISTORY_MINUTES).contains(&minutes) {
        return Err(ApiError::BadRequest(format!(
            "minutes must be 1..={MAX_HISTORY_MINUTES}"
        )));
    }
    let counts = queue.history(minutes).await?;
    Ok(HttpResponse::Ok().json(HistoryBody {
        name: queue.name().to_owned(),
        minutes: counts
            .into_iter()
            .map(|c| MinuteBody {
                minute: c.minute.to_rfc3339_opts(SecondsFormat::Secs, true),
                processed: c.processed,
                failed: c.failed,
            })
            .collect(),
    }))
}

fn paused(queue: &JobQueue, paused: bool) -> HttpResponse {
    HttpResponse::Ok().json(PausedBody {
        name: queue.name().to_owned(),
        paused,
    })
}
