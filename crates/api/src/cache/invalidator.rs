//! Invalidations of concurrent writes go out together: one INVALIDATE call per route and batch
//! instead of one per route and write (64 writers on one queue used to make thousands of
//! identical calls a second on the same generation keys).
//!
//! One task owns the batches and starts the next one as soon as it has tags and fewer than
//! [`IN_FLIGHT`] are in flight. A write whose change is done adds its tags to the *next* batch,
//! the one that has not started, and waits for that batch to finish before it answers. Never to
//! a batch in flight: its new generations may already be set, before the write's change, so a
//! read in between could store the pre-write answer under them and serve it after the write
//! answered. Batches in flight together are safe: each sets fresh generations, so whichever lands
//! last, no answer read before a write's change is under the generation that follows it. Tags of
//! a batch are merged and deduplicated per route; a batch holds at most [`MAX_TAGS`] of them (a
//! write that would pass that waits for the next batch), so nothing queues without bound: the
//! batches in flight and the next one.

use super::store::Store;
use crate::redis_cluster::RedisError;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{watch, Notify, Semaphore};

/// Distinct tags (summed over routes) one batch carries at most.
const MAX_TAGS: usize = 1024;
/// Batches in flight at once. With one, a write waited for the batch in flight and then its own
/// (up to two round trips); with two, its batch mostly starts at once, and writes still merge
/// while both are busy. On the bench's loopback cluster the change was within noise (HTTP
/// register, cache on / off: 0.78 before, 0.75–0.86 over three runs after); the saved wait
/// grows with the cluster's round trip.
pub(crate) const IN_FLIGHT: usize = 2;

/// A batch's outcome, one result per route (`Ok` for the routes it had no tags for).
pub(crate) type Outcome = Arc<[Result<(), Arc<RedisError>>]>;

/// Gives `tags` of route `route` (an index in the rules) new generations: one Redis call.
pub(crate) trait Apply: Send + Sync + 'static {
    fn apply(
        &self,
        route: usize,
        tags: Vec<String>,
    ) -> impl Future<Output = Result<(), RedisError>> + Send;
}

/// The cluster: route `i` is `routes[i]` (its path prefix).
pub(crate) struct Generations {
    pub store: Store,
    pub routes: Vec<Box<str>>,
}

impl Apply for Generations {
    async fn apply(&self, route: usize, tags: Vec<String>) -> Result<(), RedisError> {
        match self.routes.get(route) {
            Some(prefix) => self.store.invalidate(prefix, &tags).await,
            None => Ok(()),
        }
    }
}

struct Batch {
    /// Per route, deduplicated.
    tags: Vec<Vec<String>>,
    len: usize,
    done: watch::Sender<Option<Outcome>>,
}

impl Batch {
    fn new(routes: usize) -> Self {
        Self {
            tags: vec![Vec::new(); routes],
            len: 0,
            done: watch::channel(None).0,
        }
    }
}

struct Next {
    batch: Batch,
    closed: bool,
}

struct Shared {
    next: Mutex<Next>,
    /// Tags were added to the next batch (or the invalidator is gone).
    wake: Notify,
    /// The next batch started (a full batch has room again).
    started: Notify,
    routes: usize,
}

impl Shared {
    fn next(&self) -> MutexGuard<'_, Next> {
        // Nothing panics while holding it; a poisoned batch is still consistent.
        self.next.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The owner of the batches; its task ends when this is dropped.
pub(crate) struct Invalidator {
    shared: Arc<Shared>,
    /// How long a waiter waits at most: a batch in flight and its own, each a bounded call.
    patience: Duration,
}

impl Invalidator {
    /// Start the owner task for `routes` routes, `in_flight` batches at most at once ([`IN_FLIGHT`]
    /// in the api); `budget` bounds one Redis call. Fails outside a tokio runtime.
    pub fn start(
        routes: usize,
        budget: Duration,
        in_flight: usize,
        apply: impl Apply,
    ) -> Result<Self, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "the response cache starts inside a tokio runtime".to_owned())?;
        let shared = Arc::new(Shared {
            next: Mutex::new(Next {
                batch: Batch::new(routes),
                closed: false,
            }),
            wake: Notify::new(),
            started: Notify::new(),
            routes,
        });
        runtime.spawn(run(shared.clone(), in_flight.max(1), apply));
        Ok(Self {
            shared,
            patience: budget * 3,
        })
    }

    /// Give `tags` (per route index) new generations in a batch that starts after this call,
    /// and wait for it. The outcome is per route.
    pub async fn invalidate(&self, tags: &[Vec<String>]) -> Outcome {
        let count: usize = tags.iter().map(Vec::len).sum();
        let joined = async {
            let mut done = loop {
                let mut started = pin!(self.shared.started.notified());
                // Registered before the check: a start between the check and the wait wakes it.
                started.as_mut().enable();
                {
                    let mut next = self.shared.next();
                    let batch = &mut next.batch;
                    if batch.len == 0 || batch.len + count <= MAX_TAGS {
                        for (route, tags) in tags.iter().enumerate() {
                            let Some(merged) = batch.tags.get_mut(route) else {
                                continue;
                            };
                            for tag in tags {
                                if !merged.contains(tag) {
                                    merged.push(tag.clone());
                                    batch.len += 1;
                                }
                            }
                        }
                        break batch.done.subscribe();
                    }
                }
                // Full: have it started, then join the one after.
                self.shared.wake.notify_one();
                started.await;
            };
            self.shared.wake.notify_one();
            let outcome = match done.wait_for(Option::is_some).await {
                Ok(outcome) => outcome.clone(),
                Err(_) => None,
            };
            outcome
        };
        let error = |e: RedisError| -> Outcome {
            let e = Arc::new(e);
            (0..self.shared.routes).map(|_| Err(e.clone())).collect()
        };
        match tokio::time::timeout(self.patience, joined).await {
            Ok(Some(outcome)) => outcome,
            // The owner task is gone (its runtime shut down).
            Ok(None) => error(RedisError::NotConnected),
            Err(_) => error(RedisError::Timeout(self.patience)),
        }
    }
}

impl Drop for Invalidator {
    fn drop(&mut self) {
        self.shared.next().closed = true;
        self.shared.wake.notify_one();
    }
}

/// Take the next batch whenever it has tags and a slot is free; its routes' calls run together.
async fn run(shared: Arc<Shared>, in_flight: usize, apply: impl Apply) {
    let apply = Arc::new(apply);
    let slots = Arc::new(Semaphore::new(in_flight));
    loop {
        // A slot first: while every one is busy, writes keep merging into the next batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let batch = loop {
            shared.wake.notified().await;
            let mut next = shared.next();
            if next.closed {
                return;
            }
            if next.batch.len > 0 {
                break std::mem::replace(&mut next.batch, Batch::new(shared.routes));
            }
        };
        shared.started.notify_waiters();
        let apply = apply.clone();
        tokio::spawn(async move {
            let apply = &apply;
            let calls = batch
                .tags
                .into_iter()
                .enumerate()
                .map(|(route, tags)| async move {
                    if tags.is_empty() {
                        return Ok(());
                    }
                    apply.apply(route, tags).await.map_err(Arc::new)
                });
            let outcome: Outcome = futures::future::join_all(calls).await.into();
            batch.done.send_replace(Some(outcome));
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Records each call's tags; a call waits until the test opens the gate.
    struct Gated {
        calls: Mutex<Vec<(usize, Vec<String>)>>,
        started: AtomicUsize,
        gate: watch::Sender<usize>,
    }

    impl Apply for Arc<Gated> {
        fn apply(
            &self,
            route: usize,
            mut tags: Vec<String>,
        ) -> impl Future<Output = Result<(), RedisError>> + Send {
            let me = self.clone();
            async move {
                let n = me.started.fetch_add(1, Ordering::SeqCst);
                tags.sort();
                me.calls.lock().unwrap().push((route, tags));
                // Call `n` may finish once the gate is above `n`.
                let _ = me.gate.subscribe().wait_for(|open| *open > n).await;
                Ok(())
            }
        }
    }

    fn gated() -> Arc<Gated> {
        Arc::new(Gated {
            calls: Mutex::new(Vec::new()),
            started: AtomicUsize::new(0),
            gate: watch::channel(0).0,
        })
    }

    fn tags(route0: &[&str], route1: &[&str]) -> Vec<Vec<String>> {
        [route0, route1]
            .iter()
            .map(|t| t.iter().map(|s| (*s).to_owned()).collect())
            .collect()
    }

    async fn until(what: &str, ok: impl Fn() -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !ok() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}"));
    }

    #[tokio::test]
    async fn a_write_never_joins_the_batch_in_flight_and_waiting_ones_are_merged() {
        let g = gated();
        let inv = Arc::new(Invalidator::start(2, Duration::from_secs(10), 1, g.clone()).unwrap());
        let first = tokio::spawn({
            let inv = inv.clone();
            async move { inv.invalidate(&tags(&["a"], &[])).await }
        });
        until("the first batch started", || {
            g.started.load(Ordering::SeqCst) == 1
        })
        .await;
        // Three writes done while the first batch is in flight: all in the next one.
        let later: Vec<_> = [
            tags(&["a"], &["x"]),
            tags(&["b", "a"], &[]),
            tags(&[], &["x"]),
        ]
        .into_iter()
        .map(|t| {
            let inv = inv.clone();
            tokio::spawn(async move { inv.invalidate(&t).await })
        })
        .collect();
        until("the later writes joined", || {
            inv.shared.next().batch.len == 3
        })
        .await;
        assert!(!first.is_finished());
        assert_eq!(g.started.load(Ordering::SeqCst), 1, "one batch at a time");
        g.gate.send_replace(1);
        assert!(first.await.unwrap().iter().all(Result::is_ok));
        until("the second batch started", || {
            g.started.load(Ordering::SeqCst) == 3
        })
        .await;
        assert!(
            later.iter().all(|t| !t.is_finished()),
            "they wait for their own batch"
        );
        g.gate.send_replace(3);
        for t in later {
            assert!(t.await.unwrap().iter().all(Result::is_ok));
        }
        let mut calls = g.calls.lock().unwrap().clone();
        calls[1..].sort();
        assert_eq!(
            calls,
            vec![
                (0, vec!["a".to_owned()]),
                (0, vec!["a".to_owned(), "b".to_owned()]),
                (1, vec!["x".to_owned()]),
            ]
        );
    }

    struct Failing;

    impl Apply for Failing {
        async fn apply(&self, route: usize, _: Vec<String>) -> Result<(), RedisError> {
            if route == 1 {
                Err(RedisError::NotConnected)
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn every_waiter_of_a_failed_call_gets_its_error() {
        let inv = Invalidator::start(2, Duration::from_secs(10), IN_FLIGHT, Failing).unwrap();
        let (a, b) = (tags(&["a"], &["x"]), tags(&[], &["y"]));
        let (one, two) = tokio::join!(inv.invalidate(&a), inv.invalidate(&b));
        for outcome in [one, two] {
            assert!(outcome[0].is_ok());
            assert!(matches!(
                outcome[1].as_ref().map_err(|e| &**e),
                Err(RedisError::NotConnected)
            ));
        }
    }

    #[tokio::test]
    async fn a_full_batch_sends_the_next_write_to_the_one_after() {
        let g = gated();
        let inv = Arc::new(Invalidator::start(1, Duration::from_secs(10), 1, g.clone()).unwrap());
        let first = tokio::spawn({
            let inv = inv.clone();
            async move { inv.invalidate(&[vec!["0".to_owned()]]).await }
        });
        until("the first batch started", || {
            g.started.load(Ordering::SeqCst) == 1
        })
        .await;
        let many: Vec<String> = (0..MAX_TAGS).map(|i| format!("t{i}")).collect();
        let full = tokio::spawn({
            let inv = inv.clone();
            async move { inv.invalidate(&[many]).await }
        });
        until("the next batch is full", || {
            inv.shared.next().batch.len == MAX_TAGS
        })
        .await;
        let extra = tokio::spawn({
            let inv = inv.clone();
            async move { inv.invalidate(&[vec!["extra".to_owned()]]).await }
        });
        g.gate.send_replace(usize::MAX);
        for t in [first, full, extra] {
            assert!(t.await.unwrap().iter().all(Result::is_ok));
        }
        let calls = g.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 3, "the extra tag went in a third batch");
        assert_eq!(calls[1].1.len(), MAX_TAGS);
        assert_eq!(calls[2].1, vec!["extra".to_owned()]);
    }

    #[tokio::test]
    async fn with_two_in_flight_a_write_starts_its_batch_beside_a_slow_one() {
        let g = gated();
        let inv = Arc::new(Invalidator::start(1, Duration::from_secs(10), 2, g.clone()).unwrap());
        let write = |tag: &'static str| {
            let inv = inv.clone();
            tokio::spawn(async move { inv.invalidate(&[vec![tag.to_owned()]]).await })
        };
        let first = write("a");
        until("the first batch started", || {
            g.started.load(Ordering::SeqCst) == 1
        })
        .await;
        let second = write("b");
        until("the second batch started beside it", || {
            g.started.load(Ordering::SeqCst) == 2
        })
        .await;
        // Both slots busy: the next writes merge and wait for a slot.
        let (third, fourth) = (write("c"), write("d"));
        until("the next writes joined", || {
            inv.shared.next().batch.len == 2
        })
        .await;
        assert_eq!(g.started.load(Ordering::SeqCst), 2);
        // The first finishes: its writer answers, and the merged batch takes the free slot while
        // the second is still in flight.
        g.gate.send_replace(1);
        assert!(first.await.unwrap().iter().all(Result::is_ok));
        until("the merged batch took the free slot", || {
            g.started.load(Ordering::SeqCst) == 3
        })
        .await;
        assert!(!second.is_finished());
        g.gate.send_replace(usize::MAX);
        for t in [second, third, fourth] {
            assert!(t.await.unwrap().iter().all(Result::is_ok));
        }
        let calls = g.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[2].1, vec!["c".to_owned(), "d".to_owned()]);
    }
}
