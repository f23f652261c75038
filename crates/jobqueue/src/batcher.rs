//! Single enqueues that arrive while earlier ones are being written are stored together: one
//! script call for all of them instead of one each. A lone enqueue goes out at once; under load
//! each connection carries one call at a time and the next call takes everything that queued
//! up meanwhile (at most [`MAX_BATCH`]), which saves Redis and the api a round trip per job.
//! The enqueue script handles jobs in order, so two jobs with the same unique key in one call
//! behave as two calls would.

use crate::error::JobQueueError;
use crate::types::{EnqueuedJob, MAX_BATCH};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// One job waiting to be stored, and where its result goes.
pub(crate) struct Waiting<J> {
    pub job: J,
    pub reply: oneshot::Sender<Result<EnqueuedJob, JobQueueError>>,
}

/// Stores one batch: one result per job, in order, or one error for all.
pub(crate) trait Store<J>: Send + 'static {
    fn store(
        &self,
        jobs: Vec<J>,
    ) -> impl std::future::Future<Output = Result<Vec<EnqueuedJob>, JobQueueError>> + Send;
}

/// Collect waiting jobs into batches and store each with `store`, at most `in_flight` at once.
/// Ends when every sender is dropped, or when `store` cannot be had any more.
pub(crate) async fn run<J: Send + 'static, S: Store<J> + Sync>(
    mut rx: mpsc::UnboundedReceiver<Waiting<J>>,
    store: impl Fn() -> Option<S>,
    in_flight: usize,
) {
    let permits = Arc::new(Semaphore::new(in_flight.max(1)));
    while let Some(first) = rx.recv().await {
        // While every call is in flight, later jobs queue up and join the next batch.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        // A caller that gave up (its enqueue timed out) was told 503: never store its job later.
        batch.retain(|w| !w.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let Some(store) = store() else { return };
        tokio::spawn(async move {
            let _permit = permit;
            let (jobs, replies): (Vec<J>, Vec<_>) =
                batch.into_iter().map(|w| (w.job, w.reply)).unzip();
            match store.store(jobs).await {
                Ok(stored) => {
                    for (reply, job) in replies.into_iter().zip(stored) {
                        let _ = reply.send(Ok(job));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}
