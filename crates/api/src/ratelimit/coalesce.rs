//! Concurrent requests of one client share Redis calls. Up to [`MAX_CALLS_IN_FLIGHT`] calls per
//! client run at once; later requests queue, and each call that ends hands the whole queue to the
//! next call as one batch (`units = queue length`). One hot client then costs one Redis round trip
//! per batch, and a few overlapping round trips hide the latency. The Lua call is atomic, so
//! overlapping calls stay exact.

use super::lease::spare_units;
use super::lua::{CallResult, Inner};
use super::Counts;
use crate::redis_cluster::RedisError;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::oneshot;

/// Calls of one client that may be in flight together.
const MAX_CALLS_IN_FLIGHT: usize = 4;

type Reply = Result<(bool, Counts), Arc<RedisError>>;
type Waiter = oneshot::Sender<Reply>;

#[derive(Default)]
struct ClientState {
    calls_in_flight: usize,
    queue: Vec<Waiter>,
}

#[derive(Default)]
pub(crate) struct Coalescer {
    clients: Mutex<HashMap<IpAddr, ClientState>>,
}

impl Coalescer {
    /// Decide one request of `client`: `(allowed, counts after)`.
    pub async fn decide(inner: Arc<Inner>, client: IpAddr) -> Reply {
        let waiting = {
            let mut clients = inner.coalescer().lock();
            let state = clients.entry(client).or_default();
            if state.calls_in_flight < MAX_CALLS_IN_FLIGHT {
                state.calls_in_flight += 1;
                None
            } else {
                let (tx, rx) = oneshot::channel();
                state.queue.push(tx);
                Some(rx)
            }
        };
        if let Some(rx) = waiting {
            return rx
                .await
                .unwrap_or_else(|_| Err(Arc::new(RedisError::NotConnected)));
        }
        // This request leads a call; the guard hands the queue on even if it is dropped.
        let guard = NextRound {
            inner: Some(inner.clone()),
            client,
        };
        let result = inner.call(client, 1).await;
        drop(guard);
        result.map(|o| (o.allowed >= 1, o.counts))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, ClientState>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A call of `client` ended: take the queued waiters for the next call, or, when none wait,
    /// release the call slot (and forget the client when it has none left).
    fn next_batch(&self, client: IpAddr) -> Vec<Waiter> {
        let mut clients = self.lock();
        let Some(state) = clients.get_mut(&client) else {
            return Vec::new();
        };
        if !state.queue.is_empty() {
            return std::mem::take(&mut state.queue);
        }
        state.calls_in_flight = state.calls_in_flight.saturating_sub(1);
        if state.calls_in_flight == 0 {
            clients.remove(&client);
        }
        Vec::new()
    }
}

/// Runs the queued rounds of a client after a leading call ends (or is cancelled).
struct NextRound {
    inner: Option<Arc<Inner>>,
    client: IpAddr,
}

impl Drop for NextRound {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        let waiters = inner.coalescer().next_batch(self.client);
        if waiters.is_empty() {
            return;
        }
        let client = self.client;
        // A request future may be dropped while its runtime shuts down: then nobody can make the
        // call, and the waiters get an error (and fall back) instead of a panic in `drop`.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            answer(waiters, &Err(Arc::new(RedisError::NotConnected)));
            return;
        };
        runtime.spawn(async move {
            let mut waiters = waiters;
            // Bounded: each round serves at least one request, and requests queue only while
            // calls are in flight.
            while !waiters.is_empty() {
                let waiting = waiters.len() as u64;
                let spare = spare_units(waiting, inner.limits());
                let result = inner.call(client, waiting + spare).await.map(|mut o| {
                    // Units beyond this batch are kept for the next requests; the batch sees
                    // the counts without them.
                    let left = o.allowed.saturating_sub(waiting);
                    inner.leases().store(client, o.windows, left, o.counts);
                    o.allowed -= left;
                    o.counts.minute = o.counts.minute.saturating_sub(left);
                    o.counts.hour = o.counts.hour.saturating_sub(left);
                    o
                });
                answer(waiters, &result);
                waiters = inner.coalescer().next_batch(client);
            }
        });
    }
}

fn answer(waiters: Vec<Waiter>, result: &CallResult) {
    for (index, waiter) in waiters.into_iter().enumerate() {
        let reply = result
            .clone()
            .map(|o| ((index as u64) < o.allowed, o.counts));
        let _ = waiter.send(reply);
    }
}
