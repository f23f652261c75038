//! The worker's housekeeping, for each served queue: every heartbeat interval a heartbeat (which also reads whether the
//! queue is paused, for the `jobqueue_paused` gauge); every few, reaping workers whose heartbeat
//! is stale, trimming done jobs and adopting retries apalis parked. All through the store.

use crate::supervisor::{WorkerOptions, WorkerState};
use cacheserver_jobqueue::store::{self, Store};
use cacheserver_jobqueue::JobQueueError;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Reap, trim and adopt retries every this many heartbeats.
const SWEEP_EVERY: u64 = 5;

/// Every heartbeat interval: heartbeat; every [`SWEEP_EVERY`] of them also reap dead workers,
/// trim done jobs and adopt apalis-parked retries (an idle worker costs a few calls a second).
pub async fn housekeeping_loop(
    store: Store,
    options: WorkerOptions,
    state: Arc<WorkerState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(store::HEARTBEAT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0u64.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let result = housekeeping(&store, &options, n.is_multiple_of(SWEEP_EVERY)).await;
        let ok = result.is_ok();
        if let Err(e) = result {
            if state.connected.load(Ordering::Relaxed) {
                tracing::warn!(error = %e, "housekeeping lost Redis");
            }
        }
        state.connected.store(ok, Ordering::Relaxed);
    }
}

async fn housekeeping(
    store: &Store,
    options: &WorkerOptions,
    sweep: bool,
) -> Result<(), JobQueueError> {
    for served in &options.queues {
        let keys = store.keys_of(&served.name);
        housekeep_queue(store, keys, options, sweep).await?;
    }
    Ok(())
}

async fn housekeep_queue(
    store: &Store,
    keys: store::Keys,
    options: &WorkerOptions,
    sweep: bool,
) -> Result<(), JobQueueError> {
    let budget = Duration::from_secs(3);
    let name = options.name.clone();
    let retention = options.done_retention;
    store
        .with_connection(budget, |mut c| async move {
            let paused = store::heartbeat(&mut c, &keys, &name).await?;
            cacheserver_jobqueue::metrics::paused(&keys.queue, paused);
            if !sweep {
                return Ok(());
            }
            store::park_retries(&mut c, &keys).await?;
            let reaped = store::requeue_worker(&mut c, &keys, None).await?;
            if reaped > 0 {
                tracing::warn!(reaped, "re-queued jobs of workers with a stale heartbeat");
            }
            let (_, trimmed) = store::trim_done(&mut c, &keys, retention).await?;
            if trimmed > 0 {
                tracing::debug!(trimmed, "trimmed finished jobs");
            }
            Ok(())
        })
        .await
}
