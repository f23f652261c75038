//! The local (in-process) tier: copies of entries this instance read from Redis, served without
//! a round trip while Redis' invalidation pushes (`CLIENT TRACKING` BCAST on the entry and
//! generation keys of the cached routes, `cacheserver_redis::tracking`) say nothing changed.
//!
//! A copy is served only while
//! - it is fresh (its fresh-until comes from the PTTL Redis reported, on this clock; stale
//!   entries and misses go through Redis as before);
//! - tracking is verified (on every primary, each answered a PING within two heartbeats);
//! - no invalidation raced the lookup that filled it: an epoch is read before the lookup and
//!   checked after the insert (an invalidation bumps it before dropping).
//!
//! A push for an entry key drops that copy; one for a generation key drops every copy stored
//! under it; a lost tracking connection, a reconnect, a topology change or a lagging listener
//! drops everything (and the tier stays off until tracking is verified again). The api's own
//! invalidations drop copies before the write's response is sent.

use super::entry::Entry;
use super::store::{is_generation_key, EntryKeys};
use cacheserver_redis::tracking::{Tracking, TrackingEvent};
use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::{DefaultHashBuilder, OptionsBuilder, Weighter};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the tracking connections are pinged; a copy is trusted at most two of these
/// after the last answer (a silent connection cannot hide lost pushes for longer).
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);

/// Per-entry bookkeeping counted on top of body and headers.
const OVERHEAD_BYTES: usize = 256;

pub(crate) struct LocalEntry {
    pub entry: Arc<Entry>,
    pub fresh_until: Instant,
    /// Generation keys the entry was stored under.
    generation_keys: Box<[Box<[u8]>]>,
    bytes: usize,
}

/// Weight = bytes, but at least `max_bytes / max_entries`: the cache holds at most
/// `max_entries` entries and `max_bytes` bytes.
#[derive(Clone)]
struct Weigh {
    floor: u64,
}

impl Weighter<Box<str>, Arc<LocalEntry>> for Weigh {
    fn weight(&self, _key: &Box<str>, value: &Arc<LocalEntry>) -> u64 {
        u64::try_from(value.bytes)
            .unwrap_or(u64::MAX)
            .max(self.floor)
    }
}

type Entries = Cache<
    Box<str>,
    Arc<LocalEntry>,
    Weigh,
    DefaultHashBuilder,
    DefaultLifecycle<Box<str>, Arc<LocalEntry>>,
>;

pub(crate) struct LocalState {
    entries: Entries,
    epoch: AtomicU64,
    /// Tracking verified until `base + valid_until` ms; 0: not verified.
    valid_until: AtomicU64,
    base: Instant,
}

/// Taken before a Redis lookup; a fill is kept only if nothing was invalidated since.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

pub(crate) struct LocalTier {
    state: Arc<LocalState>,
    /// Keeps the tracking client running; `None` in unit tests.
    _tracking: Mutex<Option<Tracking>>,
}

impl LocalTier {
    pub fn new(max_entries: usize, max_bytes: u64, max_entry_bytes: usize) -> Self {
        let max_entries = max_entries.max(1);
        let floor = (max_bytes / u64::try_from(max_entries).unwrap_or(u64::MAX)).max(1);
        // Each shard holds its share of the bytes: keep a share ≥ 4 of the largest entries.
        let largest = u64::try_from(max_entry_bytes + OVERHEAD_BYTES).unwrap_or(u64::MAX);
        let mut shards = 16usize;
        while shards > 1 && max_bytes / (shards as u64) < largest.saturating_mul(4) {
            shards /= 2;
        }
        let options = OptionsBuilder::new()
            .estimated_items_capacity(max_entries)
            .weight_capacity(max_bytes.max(1))
            .shards(shards)
            .build();
        let entries = match options {
            Ok(options) => Cache::with_options(
                options,
                Weigh { floor },
                DefaultHashBuilder::default(),
                DefaultLifecycle::default(),
            ),
            Err(_) => Cache::with(
                max_entries,
                max_bytes.max(1),
                Weigh { floor },
                DefaultHashBuilder::default(),
                DefaultLifecycle::default(),
            ),
        };
        Self {
            state: Arc::new(LocalState {
                entries,
                epoch: AtomicU64::new(0),
                valid_until: AtomicU64::new(0),
                base: Instant::now(),
            }),
            _tracking: Mutex::new(None),
        }
    }

    /// Start tracking `prefixes` on `redis`; the tier serves nothing until it is verified.
    pub fn track(
        &self,
        redis: &crate::redis_cluster::RedisCluster,
        prefixes: Vec<String>,
    ) -> Result<(), crate::redis_cluster::RedisError> {
        let weak = Arc::downgrade(&self.state);
        let tracking = redis.track(
            prefixes,
            HEARTBEAT,
            Arc::new(move |event| {
                if let Some(state) = weak.upgrade() {
                    state.apply(event);
                }
            }),
        )?;
        if let Ok(mut slot) = self._tracking.lock() {
            *slot = Some(tracking);
        }
        Ok(())
    }

    pub fn state(&self) -> &LocalState {
        &self.state
    }
}

impl LocalState {
    fn now_ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether copies may be served (and filled) now.
    pub fn verified(&self, now: Instant) -> bool {
        let until = self.valid_until.load(Ordering::Acquire);
        until != 0 && self.now_ms(now) < until
    }

    /// A fresh copy of `key`, if it may be served now.
    pub fn get(&self, key: &str, now: Instant) -> Option<Arc<LocalEntry>> {
        if !self.verified(now) {
            return None;
        }
        let hit = self.entries.get(key)?;
        if hit.fresh_until > now {
            Some(hit)
        } else {
            self.entries.remove(key);
            None
        }
    }

    /// Before a Redis lookup that may fill a copy; `None` while tracking is not verified.
    pub fn ticket(&self, now: Instant) -> Option<Ticket> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        self.verified(now).then_some(Ticket(epoch))
    }

    /// Keep a copy of what a lookup (started with `ticket`) found fresh for `fresh_for` from
    /// `started`, unless an invalidation came in since.
    pub fn fill(
        &self,
        ticket: Ticket,
        keys: &EntryKeys,
        entry: Arc<Entry>,
        started: Instant,
        fresh_for: Duration,
    ) {
        let key = keys.entry_key();
        let generation_keys: Box<[Box<[u8]>]> = keys.generation_keys().map(Box::from).collect();
        let bytes = entry.body.len()
            + entry
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len())
                .sum::<usize>()
            + key.len()
            + generation_keys.iter().map(|g| g.len()).sum::<usize>()
            + OVERHEAD_BYTES;
        let copy = Arc::new(LocalEntry {
            entry,
            fresh_until: started + fresh_for,
            generation_keys,
            bytes,
        });
        self.entries.insert(key.into(), copy);
        // After the insert: an invalidation bumps the epoch before it drops copies, so either
        // it sees this copy or this check sees its bump.
        if self.epoch.load(Ordering::SeqCst) != ticket.0 || !self.verified(Instant::now()) {
            self.entries.remove(key);
        }
    }

    /// Drop copies stored under these generation keys (the api's own invalidation, before the
    /// write answers).
    pub fn drop_generations(&self, generation_keys: &[String]) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.entries.retain(|_, v| {
            !v.generation_keys
                .iter()
                .any(|g| generation_keys.iter().any(|k| k.as_bytes() == &**g))
        });
    }

    fn drop_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
    }

    /// Entries held now (tests, metrics).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn apply(&self, event: TrackingEvent) {
        match event {
            TrackingEvent::Invalidate(keys) => {
                super::metrics::local_invalidations(keys.len());
                self.epoch.fetch_add(1, Ordering::SeqCst);
                let mut generations: Vec<&[u8]> = Vec::new();
                for key in &keys {
                    let bytes = key.as_bytes();
                    if is_generation_key(bytes) {
                        generations.push(bytes);
                    } else if let Ok(k) = std::str::from_utf8(bytes) {
                        self.entries.remove(k);
                    }
                }
                if !generations.is_empty() {
                    self.entries.retain(|_, v| {
                        !v.generation_keys
                            .iter()
                            .any(|g| generations.contains(&&**g))
                    });
                }
            }
            TrackingEvent::Flush => self.drop_all(),
            TrackingEvent::Down => {
                let was = self.valid_until.swap(0, Ordering::SeqCst);
                self.drop_all();
                if was != 0 {
                    super::metrics::local_tracking(false);
                }
            }
            TrackingEvent::Verified { until } => {
                let until = self.now_ms(until).max(1);
                let was = self.valid_until.swap(until, Ordering::SeqCst);
                if was == 0 {
                    // Lookups that began untracked may not fill.
                    self.epoch.fetch_add(1, Ordering::SeqCst);
                    super::metrics::local_tracking(true);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use actix_web::http::header::HeaderMap;
    use actix_web::http::StatusCode;
    use actix_web::web::Bytes;

    fn entry() -> Arc<Entry> {
        Arc::new(
            Entry::new(
                StatusCode::OK,
                &HeaderMap::new(),
                &HeaderMap::new(),
                Bytes::from_static(b"{}"),
            )
            .unwrap(),
        )
    }

    fn verified(tier: &LocalTier) {
        tier.state.apply(TrackingEvent::Verified {
            until: Instant::now() + Duration::from_secs(60),
        });
    }

    #[test]
    fn serves_only_while_verified_fresh_and_not_raced() {
        let tier = LocalTier::new(100, 1 << 20, 1024);
        let s = tier.state();
        let keys = EntryKeys::new("/r", "h", &["t".into()]);
        let now = Instant::now();
        assert!(s.ticket(now).is_none(), "not verified yet");
        verified(&tier);
        let ticket = s.ticket(Instant::now()).unwrap();
        s.fill(
            ticket,
            &keys,
            entry(),
            Instant::now(),
            Duration::from_secs(10),
        );
        assert!(s.get(keys.entry_key(), Instant::now()).is_some());
        // Past its fresh time.
        assert!(s
            .get(keys.entry_key(), Instant::now() + Duration::from_secs(11))
            .is_none());

        // An invalidation between the ticket and the fill: nothing kept.
        let ticket = s.ticket(Instant::now()).unwrap();
        s.apply(TrackingEvent::Invalidate(vec!["rc:{/x}:e:other".into()]));
        s.fill(
            ticket,
            &keys,
            entry(),
            Instant::now(),
            Duration::from_secs(10),
        );
        assert!(s.get(keys.entry_key(), Instant::now()).is_none());

        // A generation push drops copies stored under it; an entry push drops that entry.
        let ticket = s.ticket(Instant::now()).unwrap();
        s.fill(
            ticket,
            &keys,
            entry(),
            Instant::now(),
            Duration::from_secs(10),
        );
        assert_eq!(s.len(), 1);
        s.apply(TrackingEvent::Invalidate(vec!["rc:{/r}:g:t".into()]));
        assert_eq!(s.len(), 0);
        let ticket = s.ticket(Instant::now()).unwrap();
        s.fill(
            ticket,
            &keys,
            entry(),
            Instant::now(),
            Duration::from_secs(10),
        );
        s.apply(TrackingEvent::Invalidate(vec![keys.entry_key().into()]));
        assert_eq!(s.len(), 0);

        // Down: everything dropped, nothing served or filled until verified again.
        let ticket = s.ticket(Instant::now()).unwrap();
        s.fill(
            ticket,
            &keys,
            entry(),
            Instant::now(),
            Duration::from_secs(10),
        );
        s.apply(TrackingEvent::Down);
        assert_eq!(s.len(), 0);
        assert!(s.ticket(Instant::now()).is_none());
        s.fill(
            ticket,
            &keys,
            entry(),
            Instant::now(),
            Duration::from_secs(10),
        );
        assert_eq!(s.len(), 0, "a ticket from before the outage fills nothing");

        // The api's own invalidation.
        verified(&tier);
        let ticket = s.ticket(Instant::now()).unwrap();
        s.fill(
            ticket,
            &keys,
            entry(),
            Instant::now(),
            Duration::from_secs(10),
        );
        s.drop_generations(&["rc:{/r}:g:t".into()]);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn bounded_by_entries() {
        let tier = LocalTier::new(40, 1 << 30, 1024);
        verified(&tier);
        let s = tier.state();
        for i in 0..1000 {
            let keys = EntryKeys::new("/r", &i.to_string(), &[]);
            let ticket = s.ticket(Instant::now()).unwrap();
            s.fill(
                ticket,
                &keys,
                entry(),
                Instant::now(),
                Duration::from_secs(10),
            );
        }
        assert!(s.len() <= 40, "{}", s.len());
    }
}
