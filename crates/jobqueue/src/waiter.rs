//! Watching a queue's job events: one watcher task per queue and process reads the queue's
//! `events` stream (`XREAD BLOCK` on a connection of its own, the store's `read_events`) and
//! - wakes the requests waiting for those jobs to end (`GET /api/jobs/{id}?wait=`): a waiting
//!   request reads the job once, sleeps, and reads it once more — it never polls Redis in a loop;
//! - fans every event out to the open event feeds (the api's SSE routes) through a bounded
//!   broadcast channel: a feed that falls [`FEED_BUFFER`] events behind gets
//!   [`FeedItem::Lagged`] and ends (its client reconnects with the last id it saw and replays
//!   from the stream), so a slow client never slows the watcher.
//!
//! After a lost connection the watcher resumes after the last event it read, so nothing still in
//! the stream is missed. With `jobqueue.events_max_len: 0` there is no stream: the watcher then
//! re-reads the states of the jobs being waited for, all in one pipeline, every
//! [`POLL_WITHOUT_EVENTS`], and feeds are refused.

use crate::client::JobQueue;
use crate::error::JobQueueError;
use crate::store::{self, JobEvent, Keys};
use crate::types::{JobInfo, JobStatus};
use cacheserver_config::SingleRedisSettings;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::time::Instant;

/// Longest `wait` of one request, in seconds.
pub const MAX_WAIT_SECONDS: u64 = 60;
/// Events one feed may fall behind the watcher before it is ended with [`FeedItem::Lagged`].
pub const FEED_BUFFER: usize = 4096;
/// How often waiters' jobs are re-read when the event stream is off.
pub const POLL_WITHOUT_EVENTS: Duration = Duration::from_secs(1);
/// How long one `XREAD` blocks (the watcher notices a dropped client within this).
const BLOCK: Duration = Duration::from_secs(2);
/// Pause after an error before the watcher reconnects.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// Events one `XRANGE` of a replay reads.
const REPLAY_PAGE: usize = 500;
/// A job's replay starts this long before it was created (clocks of the api and Redis differ).
const REPLAY_SLACK_MS: u64 = 60_000;
/// Longest a new feed waits for its queue's watcher to know where the stream ends.
const READY_WITHIN: Duration = Duration::from_secs(5);

/// The watchers of one client, by queue (started on first use).
#[derive(Default)]
pub(crate) struct Watchers {
    by_queue: Mutex<HashMap<String, Arc<Watch>>>,
}

/// Who waits for which job of one queue, and the queue's live events.
struct Watch {
    waiting: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
    /// `true` once the watcher knows where the stream ends (events after that reach waiters
    /// and feeds).
    ready: watch::Receiver<bool>,
    events: broadcast::Sender<Arc<JobEvent>>,
}

impl Watch {
    fn register(&self, job_id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut waiting) = self.waiting.lock() {
            let senders = waiting.entry(job_id.to_owned()).or_default();
            senders.retain(|s| !s.is_closed());
            senders.push(tx);
        }
        rx
    }

    fn wake(&self, job_id: &str) {
        let senders = self.waiting.lock().ok().and_then(|mut w| w.remove(job_id));
        for tx in senders.into_iter().flatten() {
            let _ = tx.send(());
        }
    }

    /// Forget waiters that gave up (their requests ended).
    fn prune(&self) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.retain(|_, senders| {
                senders.retain(|s| !s.is_closed());
                !senders.is_empty()
            });
        }
    }

    fn waited_ids(&self) -> Vec<String> {
        self.waiting
            .lock()
            .map(|w| w.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Wait (at most `within`) until the watcher knows where the stream ends.
    async fn until_ready(&self, within: Duration) {
        let mut ready = self.ready.clone();
        let _ = tokio::time::timeout(within, ready.wait_for(|r| *r)).await;
    }
}

impl Watchers {
    fn get(&self, keys: &Keys, redis: &SingleRedisSettings) -> Option<Arc<Watch>> {
        let mut by_queue = self.by_queue.lock().ok()?;
        if let Some(watch) = by_queue.get(&keys.queue) {
            return Some(watch.clone());
        }
        let (ready_tx, ready) = watch::channel(false);
        let watch = Arc::new(Watch {
            waiting: Mutex::default(),
            ready,
            events: broadcast::channel(FEED_BUFFER).0,
        });
        let mut blocking = redis.clone();
        blocking.read_timeout = blocking.read_timeout.max(BLOCK * 2);
        blocking.write_timeout = blocking.read_timeout;
        let weak = Arc::downgrade(&watch);
        if keys.events_max_len == 0 {
            tokio::spawn(poll_loop(weak, redis.clone(), keys.clone(), ready_tx));
        } else {
            tokio::spawn(watch_loop(weak, blocking, keys.clone(), ready_tx));
        }
        by_queue.insert(keys.queue.clone(), watch.clone());
        Some(watch)
    }
}

async fn watch_loop(
    watch: Weak<Watch>,
    redis: SingleRedisSettings,
    keys: Keys,
    ready: watch::Sender<bool>,
) {
    // Where the watcher is in the stream; kept across reconnections so none is missed.
    let mut after: Option<String> = None;
    while watch.strong_count() > 0 {
        let Ok(mut conn) = cacheserver_redis::single::lazy_connection(&redis) else {
            tokio::time::sleep(RETRY_AFTER).await;
            continue;
        };
        if after.is_none() {
            match store::last_event_id(&mut conn, &keys).await {
                Ok(id) => after = Some(id),
                Err(e) => {
                    tracing::debug!(error = %e, queue = %keys.queue, "job watcher cannot read events");
                    tokio::time::sleep(RETRY_AFTER).await;
                    continue;
                }
            }
        }
        ready.send_replace(true);
        loop {
            let from = after.as_deref().unwrap_or("0-0");
            let events = store::read_events(&mut conn, &keys, from, BLOCK).await;
            let Some(watch) = watch.upgrade() else {
                return;
            };
            match events {
                Ok(events) => {
                    for event in events {
                        if event.is_terminal() {
                            watch.wake(&event.job_id);
                        }
                        after = Some(event.event_id.clone());
                        // No receiver is not an error: nobody streams this queue now.
                        let _ = watch.events.send(Arc::new(event));
                    }
                    watch.prune();
                }
                Err(e) => {
                    tracing::debug!(error = %e, queue = %keys.queue, "job watcher lost Redis");
                    tokio::time::sleep(RETRY_AFTER).await;
                    break;
                }
            }
        }
    }
}

/// Without an event stream: re-read the waited jobs' states, one pipeline per interval.
async fn poll_loop(
    watch: Weak<Watch>,
    redis: SingleRedisSettings,
    keys: Keys,
    ready: watch::Sender<bool>,
) {
    ready.send_replace(true);
    let mut conn = None;
    loop {
        tokio::time::sleep(POLL_WITHOUT_EVENTS).await;
        let Some(watch) = watch.upgrade() else {
            return;
        };
        watch.prune();
        let ids = watch.waited_ids();
        if ids.is_empty() {
            continue;
        }
        if conn.is_none() {
            conn = cacheserver_redis::single::lazy_connection(&redis).ok();
        }
        let Some(c) = conn.as_mut() else {
            continue;
        };
        match tokio::time::timeout(redis.read_timeout, store::ended(c, &keys, &ids)).await {
            Ok(Ok(ended)) => {
                for (id, ended) in ids.iter().zip(ended) {
                    if ended {
                        watch.wake(id);
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, queue = %keys.queue, "job watcher cannot read jobs");
                conn = None;
            }
            Err(_) => conn = None,
        }
    }
}

fn finished(info: &JobInfo) -> bool {
    matches!(
        info.status,
        JobStatus::Done | JobStatus::Dead | JobStatus::Cancelled
    )
}

/// A stream entry id as (ms, seq), to order ids; `None` for anything else.
pub fn parse_event_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// What an [`EventFeed`] yields.
#[derive(Debug, Clone)]
pub enum FeedItem {
    Event(Arc<JobEvent>),
    /// The feed fell too far behind and ends; resume with the id of the last event seen.
    Lagged,
}

/// The events of one queue (or one job of it) from a point on: first those still in the
/// stream after the resume point (`XRANGE`), then live ones from the queue's watcher.
pub struct EventFeed {
    queue: JobQueue,
    /// Only this job's events; the feed ends after its end.
    job: Option<String>,
    /// Replay position: events after it up to `until` are read from the stream.
    replay_after: Option<String>,
    until: String,
    replayed: VecDeque<JobEvent>,
    live: broadcast::Receiver<Arc<JobEvent>>,
    /// The newest event id yielded (live events at or before it are duplicates).
    last: (u64, u64),
    /// The job had ended before the feed opened and its end is no longer in the stream: said
    /// last, after the replay.
    ended_before: Option<JobEvent>,
    done: bool,
}

impl EventFeed {
    /// The next item; `None` when the feed is over (a job feed after the job's end, or after
    /// [`FeedItem::Lagged`]). Waits for live events.
    pub async fn next(&mut self) -> Result<Option<FeedItem>, JobQueueError> {
        loop {
            if self.done {
                return Ok(None);
            }
            if let Some(event) = self.replayed.pop_front() {
                if let Some(item) = self.accept(Arc::new(event)) {
                    return Ok(Some(item));
                }
                continue;
            }
            // Cloned, not taken: a feed dropped or timed out mid-read replays the page again.
            if let Some(after) = self.replay_after.clone() {
                self.replay_page(after).await?;
                continue;
            }
            if let Some(end) = self.ended_before.take() {
                self.done = true;
                return Ok(Some(FeedItem::Event(Arc::new(end))));
            }
            match self.live.recv().await {
                Ok(event) => {
                    if let Some(item) = self.accept(event) {
                        return Ok(Some(item));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.done = true;
                    return Ok(Some(FeedItem::Lagged));
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.done = true;
                    return Ok(None);
                }
            }
        }
    }

    /// `event` as the feed's next item, or `None` when it is a duplicate or another job's.
    fn accept(&mut self, event: Arc<JobEvent>) -> Option<FeedItem> {
        let id = parse_event_id(&event.event_id)?;
        if id <= self.last {
            return None;
        }
        self.last = id;
        if self.job.as_ref().is_some_and(|j| *j != event.job_id) {
            return None;
        }
        if self.job.is_some() && event.is_terminal() {
            self.done = true;
            self.ended_before = None;
        }
        Some(FeedItem::Event(event))
    }

    async fn replay_page(&mut self, after: String) -> Result<(), JobQueueError> {
        let keys = self.queue.keys().clone();
        let until = self.until.clone();
        let page = self
            .queue
            .with_connection(self.queue.call_timeout(), |mut c| async move {
                store::events_between(&mut c, &keys, &after, &until, REPLAY_PAGE).await
            })
            .await?;
        self.replay_after = if page.len() == REPLAY_PAGE {
            page.last().map(|e| e.event_id.clone())
        } else {
            None
        };
        self.replayed.extend(page);
        Ok(())
    }
}

impl JobQueue {
    /// Whether job events are written (`jobqueue.events_max_len` > 0).
    pub fn events_enabled(&self) -> bool {
        self.keys().events_max_len > 0
    }

    /// The queue's events after `after` (a stream entry id a client saw last, `None`: from
    /// now on). `Invalid` for an id that is not one; `Disabled` when events are off.
    pub async fn event_feed(&self, after: Option<&str>) -> Result<EventFeed, JobQueueError> {
        self.open_feed(after, None)
            .await?
            .ok_or_else(|| JobQueueError::Internal("a queue feed names no job".into()))
    }

    /// The events of job `id` (`None`: no such job): from `after` if given, else every event of
    /// the job still in the stream; the feed ends after the job's end (at once, with its state,
    /// for a job that had ended before and whose end is no longer in the stream).
    pub async fn job_event_feed(
        &self,
        id: &str,
        after: Option<&str>,
    ) -> Result<Option<EventFeed>, JobQueueError> {
        self.open_feed(after, Some(id)).await
    }

    async fn open_feed(
        &self,
        after: Option<&str>,
        job: Option<&str>,
    ) -> Result<Option<EventFeed>, JobQueueError> {
        if !self.events_enabled() {
            return Err(JobQueueError::Invalid(
                "job events are off (jobqueue.events_max_len: 0)".into(),
            ));
        }
        if let Some(after) = after {
            if parse_event_id(after).is_none() {
                return Err(JobQueueError::Invalid(format!(
                    "`{after}` is not an event id (<ms>-<seq>)"
                )));
            }
        }
        let watch = self
            .watchers()
            .get(self.keys(), self.store().redis())
            .ok_or_else(|| JobQueueError::Internal("job watchers poisoned".into()))?;
        watch.until_ready(READY_WITHIN).await;
        // Subscribed before the stream's end is read: every event after that end comes live.
        let live = watch.events.subscribe();
        let info = match job {
            Some(id) => match self.status(id).await? {
                Some(info) => Some(info),
                None => return Ok(None),
            },
            None => None,
        };
        let keys = self.keys().clone();
        let until = self
            .with_connection(self.call_timeout(), |mut c| async move {
                store::last_event_id(&mut c, &keys).await
            })
            .await?;
        let start = match (after, &info) {
            (Some(after), _) => Some(after.to_owned()),
            (None, Some(info)) => {
                let created = info.created_at.unwrap_or(info.run_at).timestamp_millis();
                let from = (created.max(0) as u64).saturating_sub(REPLAY_SLACK_MS);
                Some(format!("{from}-0"))
            }
            (None, None) => None,
        };
        let last = start
            .as_deref()
            .or(Some(until.as_str()))
            .and_then(parse_event_id)
            .unwrap_or((0, 0));
        // A job that ended before now: its end is at or before `until`, or trimmed away.
        let ended_before = info.as_ref().filter(|i| finished(i)).map(|i| JobEvent {
            event_id: until.clone(),
            job_id: i.job_id.clone(),
            state: i.status.as_str().to_owned(),
            job_type: i.job_type.clone(),
            attempt: i.attempts,
            time_ms: i
                .finished_at
                .map_or(0, |t| t.timestamp_millis().max(0) as u64),
            progress: None,
        });
        Ok(Some(EventFeed {
            queue: self.clone(),
            job: job.map(str::to_owned),
            replay_after: start.filter(|s| parse_event_id(s) < parse_event_id(&until)),
            until,
            replayed: VecDeque::new(),
            live,
            last,
            ended_before,
            done: false,
        }))
    }

    /// The job once it is done, dead or cancelled, or as it is when `within` (at most
    /// [`MAX_WAIT_SECONDS`], else `Invalid`) has passed; `None` for an unknown id.
    pub async fn wait_finished(
        &self,
        id: &str,
        within: Duration,
    ) -> Result<Option<JobInfo>, JobQueueError> {
        if within.is_zero() || within > Duration::from_secs(MAX_WAIT_SECONDS) {
            return Err(JobQueueError::Invalid(format!(
                "wait must be 1..={MAX_WAIT_SECONDS} seconds"
            )));
        }
        let deadline = Instant::now() + within;
        let Some(watch) = self.watchers().get(self.keys(), self.store().redis()) else {
            return self.status(id).await;
        };
        let mut ready = watch.ready.clone();
        let _ = tokio::time::timeout_at(deadline, ready.wait_for(|r| *r)).await;
        loop {
            // Registered before the read: an end recorded after it wakes this request.
            let fired = watch.register(id);
            let info = self.status(id).await?;
            match info {
                Some(info) if !finished(&info) && Instant::now() < deadline => {
                    if tokio::time::timeout_at(deadline, fired).await.is_err() {
                        return self.status(id).await;
                    }
                }
                other => return Ok(other),
            }
        }
    }
}
