//! Concurrent requests of one client share Redis calls: while a call for a client is in flight,
//! later requests queue, and the queue is decided by the next call with `units = queue length`.
//! One hot client then costs one Redis round trip per batch, not per request.

use super::lua::{CallResult, Inner};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

type Waiter = oneshot::Sender<Result<(bool, super::Counts), Arc<crate::redis_cluster::RedisError>>>;

#[derive(Default)]
pub(crate) struct Coalescer {
    /// Clients with a call in flight, and the requests waiting for the next one.
    queues: Mutex<HashMap<IpAddr, Vec<Waiter>>>,
}

impl Coalescer {
    /// Decide one request of `client`: `(allowed, counts after)`.
    pub async fn decide(
        inner: Arc<Inner>,
        client: IpAddr,
    ) -> Result<(bool, super::Counts), Arc<crate::redis_cluster::RedisError>> {
        let waiting = {
            let mut queues = inner.coalescer().lock();
            match queues.get_mut(&client) {
                Some(queue) => {
                    let (tx, rx) = oneshot::channel();
                    queue.push(tx);
                    Some(rx)
                }
                None => {
                    queues.insert(client, Vec::new());
                    None
                }
            }
        };
        if let Some(rx) = waiting {
            return rx
                .await
                .unwrap_or_else(|_| Err(Arc::new(crate::redis_cluster::RedisError::NotConnected)));
        }
        // This request leads: it makes the call; the guard hands the queue on even if it is dropped.
        let guard = NextRound {
            inner: Some(inner.clone()),
            client,
        };
        let result = inner.call(client, 1).await;
        drop(guard);
        result.map(|(allowed, counts)| (allowed >= 1, counts))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Vec<Waiter>>> {
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Take the queued waiters of `client`, or forget the client when none wait.
    fn take_queue(&self, client: IpAddr) -> Vec<Waiter> {
        let mut queues = self.lock();
        match queues.get_mut(&client) {
            Some(queue) if !queue.is_empty() => std::mem::take(queue),
            _ => {
                queues.remove(&client);
                Vec::new()
            }
        }
    }
}

/// Runs the queued rounds of a client after its leading call ends (or is cancelled).
struct NextRound {
    inner: Option<Arc<Inner>>,
    client: IpAddr,
}

impl Drop for NextRound {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        let waiters = inner.coalescer().take_queue(self.client);
        if waiters.is_empty() {
            return;
        }
        let client = self.client;
        tokio::spawn(async move {
            let mut waiters = waiters;
            // Bounded: each round serves at least one request and new requests join only while
            // a round is in flight.
            while !waiters.is_empty() {
                let result = inner.call(client, waiters.len() as u64).await;
                answer(waiters, &result);
                waiters = inner.coalescer().take_queue(client);
            }
        });
    }
}

fn answer(waiters: Vec<Waiter>, result: &CallResult) {
    for (index, waiter) in waiters.into_iter().enumerate() {
        let reply = result
            .clone()
            .map(|(allowed, counts)| ((index as u64) < allowed, counts));
        let _ = waiter.send(reply);
    }
}
