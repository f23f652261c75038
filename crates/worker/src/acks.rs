//! Results of finished runs, written to Redis by one task per worker process: while one write
//! is in flight the next results queue up and go together, so a busy worker pays one round trip
//! per batch instead of one per job, and the next fetch never waits for an ack.
//!
//! Progress reports (`ctx.progress`) come the same way and are coalesced: only the latest per
//! job is written, with the next batch of results, or alone at most every [`PROGRESS_EVERY`].
//!
//! A result still queued when the process is SIGKILLed is lost with it; its job stays in the
//! worker's in-flight set and is re-queued (run again) by the next start or the reaper: jobs are
//! run at least once.

use backon::{ExponentialBuilder, Retryable as _};
use cacheserver_jobqueue::store::{self, Finished, Outcome, Store};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Results written per call (bounds the script's argument list).
const MAX_PER_WRITE: usize = 512;
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// One write's budget (a stalled Redis must not stall the writer).
const WRITE_BUDGET: Duration = Duration::from_secs(3);
/// A write holding only progress reports goes at most this often.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(200);

enum Msg {
    Result(Finished),
    /// Answered once every result sent before it is written.
    Flush(oneshot::Sender<()>),
}

/// Where runs report their results. Cheap to clone; the writer ends when every clone is dropped
/// and what was queued is written.
#[derive(Clone)]
pub struct Acks {
    tx: mpsc::UnboundedSender<Msg>,
}

impl Acks {
    /// Start the writer for `worker`'s results. It uses the store's connections, which follow
    /// a Sentinel failover.
    pub fn start(store: Store, worker: String) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_loop(rx, store, worker));
        (Self { tx }, writer)
    }

    pub fn send(&self, result: Finished) {
        if self.tx.send(Msg::Result(result)).is_err() {
            tracing::warn!("result writer stopped; the job will be re-queued and run again");
        }
    }

    /// Wait until every result sent so far is written (or `within` passes).
    pub async fn flush(&self, within: Duration) -> bool {
        let (done, written) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(within, written).await, Ok(Ok(())))
    }
}

/// What the next write holds.
#[derive(Default)]
struct Pending {
    results: Vec<Finished>,
    /// The latest progress report per job id.
    progress: HashMap<String, Finished>,
    waiting: Vec<oneshot::Sender<()>>,
}

impl Pending {
    fn add(&mut self, msg: Msg) {
        match msg {
            Msg::Result(r) if matches!(r.outcome, Outcome::Progress { .. }) => {
                self.progress.insert(r.id.clone(), r);
            }
            Msg::Result(r) => self.results.push(r),
            Msg::Flush(done) => self.waiting.push(done),
        }
    }

    fn progress_only(&self) -> bool {
        self.results.is_empty() && self.waiting.is_empty()
    }

    /// Progress first: `finish.lua` records it only for jobs still in flight.
    fn take(&mut self) -> Vec<Finished> {
        let mut batch: Vec<Finished> = self.progress.drain().map(|(_, p)| p).collect();
        batch.append(&mut self.results);
        batch
    }
}

async fn write_loop(mut rx: mpsc::UnboundedReceiver<Msg>, store: Store, worker: String) {
    let mut pending = Pending::default();
    let mut last_progress_write = Instant::now()
        .checked_sub(PROGRESS_EVERY)
        .unwrap_or_else(Instant::now);
    while let Some(first) = rx.recv().await {
        pending.add(first);
        while pending.results.len() < MAX_PER_WRITE {
            match rx.try_recv() {
                Ok(msg) => pending.add(msg),
                Err(_) => break,
            }
        }
        if pending.progress_only() {
            // Only progress: wait out the interval, unless a result or a flush comes.
            let until = last_progress_write + PROGRESS_EVERY;
            while pending.progress_only() {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(msg)) => pending.add(msg),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        if !pending.progress.is_empty() {
            last_progress_write = Instant::now();
        }
        write(&store, &worker, pending.take()).await;
        for done in pending.waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Write one batch, retrying while Redis is unreachable (the jobs are done; only the record of
/// it is pending, and the worker fetches nothing new meanwhile).
async fn write(store: &Store, worker: &str, batch: Vec<Finished>) {
    if batch.is_empty() {
        return;
    }
    // One `finish.lua` call per queue (its keys share the queue's slot).
    let mut by_queue: Vec<(store::Keys, Vec<Finished>)> = Vec::new();
    for result in batch {
        match by_queue.iter_mut().find(|(k, _)| k.queue == result.queue) {
            Some((_, results)) => results.push(result),
            None => by_queue.push((store.keys_of(&result.queue), vec![result])),
        }
    }
    let by_queue = std::sync::Arc::new(by_queue);
    let results: usize = by_queue.iter().map(|(_, r)| r.len()).sum();
    let pauses = ExponentialBuilder::new()
        .with_min_delay(RETRY_MIN)
        .with_max_delay(RETRY_MAX)
        .without_max_times();
    // Retried without end: `Err` never comes back.
    let _ = (|| {
        let groups = by_queue.clone();
        store.with_connection(WRITE_BUDGET, |c| async move {
            // Sent together on the multiplexed connection: a worker serving three queues pays
            // one round trip per batch, not three in a row. A retry sends all again (harmless).
            let calls = groups.iter().map(|(keys, results)| {
                let mut c = c.clone();
                async move { store::finish(&mut c, keys, worker, results).await }
            });
            futures::future::try_join_all(calls).await?;
            Ok(())
        })
    })
    .retry(pauses)
    .sleep(tokio::time::sleep)
    .notify(|e, pause| {
        tracing::warn!(error = %e, results, retry_in = ?pause, "cannot record job results; retrying");
    })
    .await;
}
