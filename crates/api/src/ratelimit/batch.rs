//! Requests that need Redis are queued per bucket. Each bucket runs one task with at most one
//! Lua call in flight: while it is, that bucket's next requests queue, and the next call decides
//! all of them (up to [`MAX_BATCH`] clients). Requests of one client in a batch are one entry
//! asking for several units, plus a few spare units for the next ones (see [`spare_units`]).
//! Many distinct clients then cost one round trip per bucket and batch, not per request.

use super::clock::Clock;
use super::keys::{bucket_tags, window_keys, ClientKey, BUCKETS};
use super::lua;
use super::state::ClientStates;
use super::types::{Counts, Limits, Windows};
use crate::redis_cluster::{RedisCluster, RedisError};
use fred::types::{Key, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Clients decided by one Lua call at most (keeps each call short for Redis).
const MAX_BATCH: usize = 256;
/// Requests waiting per bucket; beyond that a request is not decided by Redis (falls back).
const QUEUE: usize = 8192;
/// Cap of spare units per batch (see [`spare_units`]).
const MAX_SPARE: u64 = 1024;

/// What Redis decided for one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answer {
    pub allowed: bool,
    pub counts: Counts,
    pub windows: Windows,
}

pub(crate) type Reply = Result<Answer, Arc<RedisError>>;

struct Request {
    key: ClientKey,
    limits: Limits,
    /// The client used up spare units before (asks for more even alone).
    hot: bool,
    reply: oneshot::Sender<Reply>,
}

/// What every bucket task shares.
struct Shared {
    cluster: RedisCluster,
    budget: Duration,
    clock: Clock,
    states: Arc<ClientStates>,
    /// Rule names by rule index (`None`: the top-level limits).
    rule_names: Arc<[Option<Box<str>>]>,
    /// `ratelimit_redis_calls_total`: Lua calls made (decisions / calls = batching).
    calls: metrics::Counter,
}

pub(crate) struct Batcher {
    queues: Box<[mpsc::Sender<Request>]>,
    budget: Duration,
    /// `api.rate_limit.batching: false`: each request makes its own call (the naive limiter).
    naive: Option<(Arc<Shared>, Box<[String]>)>,
}

impl Batcher {
    /// Start one task per bucket; they end when the batcher is dropped.
    pub fn start(
        cluster: RedisCluster,
        budget: Duration,
        clock: Clock,
        states: Arc<ClientStates>,
        rule_names: Arc<[Option<Box<str>>]>,
        batching: bool,
    ) -> Self {
        let shared = Arc::new(Shared {
            cluster,
            budget,
            clock,
            states,
            rule_names,
            calls: metrics::counter!("ratelimit_redis_calls_total"),
        });
        if !batching {
            return Self {
                queues: Box::new([]),
                budget,
                naive: Some((shared, bucket_tags().into())),
            };
        }
        let queues = bucket_tags()
            .into_iter()
            .map(|tag| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(run_bucket(tag, rx, shared.clone()));
                tx
            })
            .collect();
        Self {
            queues,
            budget,
            naive: None,
        }
    }

    /// Queue one request of `key` and wait for its batch (bounded: the call in flight and ours).
    pub async fn decide(&self, key: ClientKey, limits: Limits, hot: bool) -> Reply {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            key,
            limits,
            hot,
            reply,
        };
        if let Some((shared, tags)) = &self.naive {
            shared
                .decide(&tags[key.bucket() % BUCKETS], &mut vec![request])
                .await;
            return answer
                .await
                .unwrap_or_else(|_| Err(Arc::new(RedisError::NotConnected)));
        }
        let queue = &self.queues[key.bucket() % BUCKETS];
        if queue.try_send(request).is_err() {
            return Err(Arc::new(RedisError::Timeout(self.budget)));
        }
        match tokio::time::timeout(self.budget * 2, answer).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(Arc::new(RedisError::NotConnected)),
            Err(_) => Err(Arc::new(RedisError::Timeout(self.budget * 2))),
        }
    }
}

async fn run_bucket(tag: String, mut queue: mpsc::Receiver<Request>, shared: Arc<Shared>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        shared.decide(&tag, &mut batch).await;
    }
}

/// The requests of one client in a batch.
struct Group {
    key: ClientKey,
    limits: Limits,
    hot: bool,
    waiters: Vec<oneshot::Sender<Reply>>,
}

impl Shared {
    async fn decide(&self, tag: &str, batch: &mut Vec<Request>) {
        let groups = group(batch);
        let windows = Windows::at(self.clock.now_secs());
        let wanted: Vec<u64> = groups
            .iter()
            .map(|g| {
                let n = g.waiters.len() as u64;
                n + spare_units(n, g.hot, g.limits)
            })
            .collect();
        let keys = window_keys(tag, windows.minute, windows.hour)
            .map(Key::from)
            .to_vec();
        let mut args = Vec::with_capacity(2 + groups.len() * 4);
        args.extend([windows.minute_reset + 1, windows.hour_reset + 1].map(int));
        let mut field = String::with_capacity(64);
        for (g, units) in groups.iter().zip(&wanted) {
            field.clear();
            let rule = self.rule_names.get(usize::from(g.key.rule));
            g.key
                .write_client(rule.and_then(|n| n.as_deref()), &mut field);
            args.push(Value::from(field.as_str()));
            args.extend([g.limits.per_minute, g.limits.per_hour, *units].map(int));
        }
        self.calls.increment(1);
        let reply = lua::eval(&self.cluster, self.budget, keys, args).await;
        match reply {
            Ok(values) if values.len() == groups.len() * 3 => {
                for (g, v) in groups.into_iter().zip(values.chunks_exact(3)) {
                    self.answer(g, v, windows);
                }
            }
            Ok(values) => fail(
                groups,
                RedisError::Config(format!("unexpected rate limit reply {values:?}")),
            ),
            Err(e) => fail(groups, e),
        }
    }

    /// `v` = {allowed, minute count, hour count} of `g`. The first `allowed` waiters pass, each
    /// seeing the counts up to itself; units beyond the waiters are kept as spare units.
    fn answer(&self, g: Group, v: &[i64], windows: Windows) {
        let to_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
        let (allowed, minute, hour) = (to_u64(v[0]), to_u64(v[1]), to_u64(v[2]));
        let n = g.waiters.len() as u64;
        let used = allowed.min(n);
        let spare = allowed - used;
        self.states
            .remember(g.key, g.limits, windows, Counts { minute, hour }, spare);
        let base = Counts {
            minute: minute.saturating_sub(allowed),
            hour: hour.saturating_sub(allowed),
        };
        for (i, waiter) in (0u64..).zip(g.waiters) {
            let (allowed, counts) = if i < used {
                let seen = Counts {
                    minute: base.minute + i + 1,
                    hour: base.hour + i + 1,
                };
                (true, seen)
            } else {
                (
                    false,
                    Counts {
                        minute: minute - spare,
                        hour: hour - spare,
                    },
                )
            };
            let _ = waiter.send(Ok(Answer {
                allowed,
                counts,
                windows,
            }));
        }
    }
}

fn int(v: u64) -> Value {
    Value::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

fn fail(groups: Vec<Group>, error: RedisError) {
    let error = Arc::new(error);
    for waiter in groups.into_iter().flat_map(|g| g.waiters) {
        let _ = waiter.send(Err(error.clone()));
    }
}

/// Requests of one client become one group, in arrival order.
fn group(batch: &mut Vec<Request>) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::with_capacity(batch.len());
    let mut index: HashMap<ClientKey, usize> = HashMap::with_capacity(batch.len());
    for r in batch.drain(..) {
        if let Some(&i) = index.get(&r.key) {
            groups[i].waiters.push(r.reply);
            groups[i].hot |= r.hot;
            continue;
        }
        index.insert(r.key, groups.len());
        groups.push(Group {
            key: r.key,
            limits: r.limits,
            hot: r.hot,
            waiters: vec![r.reply],
        });
    }
    groups
}

/// Spare units to ask for when `waiting` requests of a client are decided together, or for a
/// `hot` client (one that used up spare units before). A client that sends one request at a time
/// never gets any, so its decisions stay exact; a bursty one gets the whole cap, so it comes
/// back to Redis (and its requests wait for a call) once per cap, not once per burst. The cost:
/// spare units left when a window ends are lost from the hour window (and from other api
/// instances sharing the quota); the cap is 1/16 of the minute limit and 1/960 of the hour limit
/// (≤ ~6% of the hour limit in the worst case); with the default 60/1000 it is 1.
pub(crate) fn spare_units(waiting: u64, hot: bool, limits: Limits) -> u64 {
    if waiting < 2 && !hot {
        return 0;
    }
    (limits.per_minute / 16)
        .min(limits.per_hour / 960)
        .min(MAX_SPARE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_units_only_for_batches_and_capped_by_the_limits() {
        let limits = |per_minute, per_hour| Limits {
            per_minute,
            per_hour,
        };
        let big = limits(100_000_000, 100_000_000);
        assert_eq!(spare_units(1, false, big), 0);
        assert_eq!(spare_units(1, true, big), MAX_SPARE, "hot, even alone");
        assert_eq!(spare_units(8, false, big), MAX_SPARE);
        assert_eq!(spare_units(8, false, limits(60, 1000)), 1);
        assert_eq!(spare_units(8, false, limits(4, 1000)), 0);
        assert_eq!(spare_units(8, false, limits(1600, 96_000)), 100);
    }
}
