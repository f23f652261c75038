//! Waiting for a job to end (`GET /api/jobs/{id}?wait=`): one watcher task per queue and
//! process reads the queue's `events` stream (`XREAD BLOCK` on a connection of its own, the
//! store's `read_events`) and wakes the requests waiting for those jobs, so a waiting request
//! reads the job once, sleeps, and reads it once more — it never polls Redis in a loop.
//! Events missed while the watcher reconnects only make a waiter answer at its deadline, with
//! the job's state then.

use crate::client::JobQueue;
use crate::error::JobQueueError;
use crate::store::{self, Keys};
use crate::types::{JobInfo, JobStatus};
use cacheserver_config::SingleRedisSettings;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// Longest `wait` of one request, in seconds.
pub const MAX_WAIT_SECONDS: u64 = 60;
/// How long one `XREAD` blocks (the watcher notices a dropped client within this).
const BLOCK: Duration = Duration::from_secs(2);
/// Pause after an error before the watcher reconnects.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// The watchers of one client, by queue (started on first use).
#[derive(Default)]
pub(crate) struct Watchers {
    by_queue: Mutex<HashMap<String, Arc<Watch>>>,
}

/// Who waits for which job of one queue.
struct Watch {
    waiting: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
    /// `true` once the watcher knows where the stream ends (events after that reach waiters).
    ready: watch::Receiver<bool>,
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
        });
        let mut blocking = redis.clone();
        blocking.read_timeout = blocking.read_timeout.max(BLOCK * 2);
        blocking.write_timeout = blocking.read_timeout;
        tokio::spawn(watch_loop(
            Arc::downgrade(&watch),
            blocking,
            keys.clone(),
            ready_tx,
        ));
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
    while watch.strong_count() > 0 {
        let Ok(mut conn) = cacheserver_redis::single::lazy_connection(&redis) else {
            tokio::time::sleep(RETRY_AFTER).await;
            continue;
        };
        let mut after = match store::last_event_id(&mut conn, &keys).await {
            Ok(id) => id,
            Err(e) => {
                tracing::debug!(error = %e, queue = %keys.queue, "job watcher cannot read events");
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
        };
        ready.send_replace(true);
        loop {
            let events = store::read_events(&mut conn, &keys, &after, BLOCK).await;
            let Some(watch) = watch.upgrade() else {
                return;
            };
            match events {
                Ok(events) => {
                    for event in events {
                        watch.wake(&event.job_id);
                        after = event.event_id;
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

fn finished(info: &JobInfo) -> bool {
    matches!(
        info.status,
        JobStatus::Done | JobStatus::Dead | JobStatus::Cancelled
    )
}

impl JobQueue {
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
