//! Job events as Server-Sent Events: `GET /api/queues/{queue}/events` (every job of a queue)
//! and `GET /api/jobs/{id}/events` (one job; the stream ends after its end). Each event is
//! `id:` (the Redis stream entry id), `event:` (the state) and `data:` (JSON, [`JobEventBody`]).
//! `Last-Event-ID` (or `?last_event_id=`) resumes: the events after it still in the stream are
//! replayed first. The events come from the queue's watcher in the jobqueue library (one
//! `XREAD` per queue and process, fanned out); a client too slow to keep up gets a `lagged`
//! event and the stream ends (reconnect with the last id). Open streams are capped
//! (`api.max_event_streams`, 503 beyond); an idle stream sends a comment every
//! `api.event_heartbeat`.
//!
//! Registered outside the response cache's scope (a stream is never cached, whatever
//! `api.cache.routes` says), behind the rate limit (one request per stream) and the jobs API key.

use super::jobs::existing_queue;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use actix_web::web::Bytes;
use actix_web::{get, web, HttpRequest, HttpResponse};
use cacheserver_jobqueue::store::JobEvent;
use cacheserver_jobqueue::{parse_event_id, EventFeed, FeedItem, JobQueue};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use utoipa::{IntoParams, ToSchema};

/// The routes, each behind the jobs API key (they sit outside the scope that checks it).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(queue_events).service(job_events);
}

/// What a browser's `EventSource` waits before reconnecting, sent first (ms).
const RETRY_MS: u64 = 2000;

/// The `data` of one event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobEventBody {
    /// The stream entry id, as in the event's `id:` line (resume after it with `Last-Event-ID`).
    #[schema(example = "1764979200000-0")]
    pub event_id: String,
    #[schema(example = "01JDQ2X7Q9W5K8M3N4P6R7S8T9")]
    pub job_id: String,
    #[schema(example = "dm-jobqueue")]
    pub queue: String,
    /// `registered`, `started`, `progress`, `retrying`, `done`, `dead` or `cancelled`.
    #[schema(example = "started")]
    pub state: String,
    /// The job's type.
    #[serde(rename = "type")]
    #[schema(example = "demo:delay_print")]
    pub job_type: String,
    /// The run the event is about (1 = first); 0 for `registered` and for a `cancelled` job
    /// that never ran.
    #[schema(example = 1)]
    pub attempt: u32,
    /// When it happened (ms since the Unix epoch).
    #[schema(example = 1764979200000_u64)]
    pub time: u64,
    /// `progress` events: `{percent, message}` as the job reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub progress: Option<serde_json::Value>,
}

/// The resume point of an event stream.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Resume after this event id (what a client that cannot set the `Last-Event-ID` header
    /// sends); the header wins when both are given.
    #[param(
        nullable = false,
        pattern = "^[0-9]{1,20}-[0-9]{1,20}$",
        example = "1764979200000-0"
    )]
    pub last_event_id: Option<String>,
}

/// `{id}` of `GET /api/jobs/{id}/events`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct JobEventsPath {
    /// Job id.
    #[param(
        pattern = "^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$",
        example = "01JDQ2X7Q9W5K8M3N4P6R7S8T9"
    )]
    pub id: String,
}

#[utoipa::path(
    tag = "queues",
    params(
        ("queue" = String, Path, description = "queue name: the default (`jobqueue.queue`), a declared one (`jobqueue.queues`) or one that ever had a job; another → 404", example = "dm-jobqueue"),
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this event id: the events after it still in the stream come first", pattern = "^[0-9]{1,20}-[0-9]{1,20}$", example = "1764979200000-0"),
        EventsQuery,
    ),
    responses(
        (status = 200, description = "Server-Sent Events, one per job state change of the queue: `id:` the stream entry id, `event:` the state (`registered`, `started`, `progress`, `retrying`, `done`, `dead`, `cancelled`), `data:` a `JobEventBody` as JSON. A comment line every `api.event_heartbeat` while idle; `event: lagged` and the end of the stream for a client that fell too far behind (reconnect with `Last-Event-ID`). Never ends otherwise.", content_type = "text/event-stream", body = String),
        (status = 400, description = "not a queue name, a `last_event_id` that is not an event id, an unknown parameter", body = ErrorBody),
        (status = 404, description = "unknown queue, or job events are off (`jobqueue.events_max_len: 0`)", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "`api.max_event_streams` streams are open already, or the jobqueue Redis is unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[get(
    "/queues/{queue}/events",
    wrap = "actix_web::middleware::from_fn(crate::auth::jobs_api_key)"
)]
pub async fn queue_events(
    req: HttpRequest,
    state: web::Data<AppState>,
    queue: web::Path<String>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let queue = existing_queue(&state, Some(&queue)).await?;
    let after = resume_point(&req, &query)?;
    let permit = open(&state, &queue)?;
    let feed = queue.event_feed(after.as_deref()).await?;
    Ok(stream(&state, queue, feed, permit))
}

#[utoipa::path(
    tag = "jobs",
    params(
        JobEventsPath,
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this event id", pattern = "^[0-9]{1,20}-[0-9]{1,20}$", example = "1764979200000-0"),
        EventsQuery,
    ),
    responses(
        (status = 200, description = "Server-Sent Events of one job, as `GET /api/queues/{queue}/events` sends them: first its events still in the stream (all of them, or those after `Last-Event-ID`), then live ones; the stream ends after its `done`, `dead` or `cancelled` event (for a job that ended before and whose end is no longer in the stream, an event with its final state comes at once).", content_type = "text/event-stream", body = String),
        (status = 400, description = "not a ULID, a `last_event_id` that is not an event id, an unknown parameter", body = ErrorBody),
        (status = 404, description = "unknown id, or job events are off (`jobqueue.events_max_len: 0`)", body = ErrorBody),
        (status = 401, description = "missing or wrong API key", body = ErrorBody),
        (status = 503, description = "`api.max_event_streams` streams are open already, or the jobqueue Redis is unavailable", body = ErrorBody),
    ),
    security((), ("jobs_api_key" = []))
)]
#[get(
    "/jobs/{id}/events",
    wrap = "actix_web::middleware::from_fn(crate::auth::jobs_api_key)"
)]
pub async fn job_events(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<JobEventsPath>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let after = resume_point(&req, &query)?;
    let queue = super::jobs::queue_holding(&state, &path.id).await?;
    let permit = open(&state, &queue)?;
    let feed = queue
        .job_event_feed(&path.id, after.as_deref())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {} not found", path.id)))?;
    Ok(stream(&state, queue, feed, permit))
}

/// `Last-Event-ID`, else `?last_event_id=`; 400 for one that is not a stream entry id.
fn resume_point(req: &HttpRequest, query: &EventsQuery) -> Result<Option<String>, ApiError> {
    let header = req
        .headers()
        .get("Last-Event-ID")
        .map(|v| v.to_str().unwrap_or("?").trim().to_owned())
        .filter(|v| !v.is_empty());
    let after = header.or_else(|| query.last_event_id.clone());
    if let Some(id) = &after {
        if parse_event_id(id).is_none() {
            return Err(ApiError::BadRequest(format!(
                "last event id `{id}` is not an event id (<ms>-<seq>)"
            )));
        }
    }
    Ok(after)
}

/// A permit for one more stream: 404 when events are off, 503 at the cap.
fn open(state: &AppState, queue: &JobQueue) -> Result<OwnedSemaphorePermit, ApiError> {
    if !queue.events_enabled() {
        return Err(ApiError::NotFound(
            "job events are off (jobqueue.events_max_len: 0)".into(),
        ));
    }
    state
        .event_streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::Unavailable(anyhow::anyhow!(
                "{} event streams are open (api.max_event_streams)",
                state.settings.api.max_event_streams
            ))
        })
}

/// What the body stream keeps between chunks; dropped (permit released) when the client goes.
struct Streaming {
    feed: EventFeed,
    queue: String,
    heartbeat: Duration,
    first: bool,
    _permit: OwnedSemaphorePermit,
}

fn stream(
    state: &AppState,
    queue: JobQueue,
    feed: EventFeed,
    permit: OwnedSemaphorePermit,
) -> HttpResponse {
    let start = Streaming {
        feed,
        queue: queue.name().to_owned(),
        heartbeat: state.settings.api.event_heartbeat,
        first: true,
        _permit: permit,
    };
    let body = futures::stream::unfold(start, |mut s| async move {
        if s.first {
            // Sent at once: the client sees the stream open before any event.
            s.first = false;
            return Some((Ok(Bytes::from(format!("retry: {RETRY_MS}\n\n"))), s));
        }
        let chunk = match tokio::time::timeout(s.heartbeat, s.feed.next()).await {
            Err(_) => Bytes::from_static(b": keep-alive\n\n"),
            Ok(Ok(Some(FeedItem::Event(event)))) => Bytes::from(frame(&s.queue, &event)),
            Ok(Ok(Some(FeedItem::Lagged))) => Bytes::from_static(
                b"event: lagged\ndata: {\"message\":\"this client fell behind; reconnect with Last-Event-ID\"}\n\n",
            ),
            Ok(Ok(None)) => return None,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, queue = %s.queue, "event stream ended");
                return None;
            }
        };
        Some((Ok::<_, actix_web::Error>(chunk), s))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-store"))
        // nginx would otherwise buffer the stream
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

/// One SSE event.
fn frame(queue: &str, event: &JobEvent) -> String {
    let body = JobEventBody {
        event_id: event.event_id.clone(),
        job_id: event.job_id.clone(),
        queue: queue.to_owned(),
        state: event.state.clone(),
        job_type: event.job_type.clone(),
        attempt: event.attempt,
        time: event.time_ms,
        progress: event
            .progress
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok()),
    };
    let data = serde_json::to_string(&body).unwrap_or_default();
    // Ids and states never hold a newline; the JSON is one line.
    format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        event.event_id, event.state
    )
}
