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
//! A miss this instance stored itself keeps a copy too, once the tracking pushes of its own
//! store have come: Redis pushes a script's writes to its own caller's tracking connections
//! (`NOLOOP` does not cover scripts), so those pushes must not drop the copy, while every later
//! one must. The store script also sets and deletes two marker keys of its own, one under each
//! tracked prefix. An entry and its generations live on one primary, whose pushes arrive in
//! order on one connection, one push per prefix for the keys an event loop iteration changed: the
//! pushes naming the markers are those of the store's iteration. Generation pushes before them
//! are from before the store (which checked the generations); the store's generation push naming
//! one of the copy's generations means a change after the store in that iteration: no copy. Any
//! later push of the entry or its generations drops the copy as usual. A change of the entry
//! itself in the very iteration of the store cannot be told apart: an entry another instance
//! stored under the same generations (as valid), or one expired, evicted or deleted by hand at
//! that instant (the copy then lives out its fresh time).
//!
//! A push for an entry key drops that copy; one for a generation key retires every copy stored
//! under it; a lost tracking connection, a reconnect, a topology change or a lagging listener
//! drops everything (and the tier stays off until tracking is verified again). The api's own
//! invalidations retire copies before the write's response is sent.
//!
//! Retiring is O(1) in the number of copies (the issue's rule for tag invalidation): each
//! generation key has a local version, bumped when the key changes, and a copy remembers the
//! versions it was made under; a copy whose versions moved on is never served and goes when it
//! is next asked for or evicted. (Scanning the copies on every write made a write cost O(copies):
//! 10,000 copies of other tags took HTTP register from ~20k to 6k/s.)

use super::entry::Entry;
use super::store::{is_generation_key, is_marker, EntryKeys, Markers};
use cacheserver_redis::tracking::{Tracking, TrackingEvent};
use fnv::FnvHashMap;
use fred::types::Key;
use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::{DefaultHashBuilder, OptionsBuilder, Weighter};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How often the tracking connections are pinged; a copy is trusted at most two of these
/// after the last answer (a silent connection cannot hide lost pushes for longer).
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);

/// Per-entry bookkeeping counted on top of body and headers.
const OVERHEAD_BYTES: usize = 256;

/// Own stores waiting for their push at most (beyond, a store keeps no copy).
const MAX_OWN: usize = 1024;

/// Generation versions kept before the first sweep of those no copy refers to.
const MIN_GENERATIONS: usize = 1024;

/// A tag generation key and its local version: bumped whenever the key changes (its push, or
/// the api's own invalidation), so copies made under an older version are retired.
struct Generation {
    key: Box<[u8]>,
    version: AtomicU64,
}

pub(crate) struct LocalEntry {
    pub entry: Arc<Entry>,
    pub fresh_until: Instant,
    /// The route pattern it answers (see [`EntryKeys::pattern`]).
    pub pattern: Option<Arc<str>>,
    /// The generations the entry was stored under, with their versions when the copy was made.
    generations: Box<[(Arc<Generation>, u64)]>,
    bytes: usize,
}

impl LocalEntry {
    /// None of its generations changed since the copy was made.
    fn is_current(&self) -> bool {
        self.generations
            .iter()
            .all(|(g, version)| g.version.load(Ordering::SeqCst) == *version)
    }
}

/// The versions of the generation keys copies refer to. Bounded: keys no copy refers to any
/// more (evicted, dropped) are swept once the map has doubled since the last sweep.
struct Generations {
    map: FnvHashMap<Box<[u8]>, Arc<Generation>>,
    sweep_at: usize,
}

impl Generations {
    fn new() -> Self {
        Self {
            map: FnvHashMap::default(),
            sweep_at: MIN_GENERATIONS,
        }
    }

    /// `keys` with their current versions (created at 0 when new).
    fn current<'a>(
        &mut self,
        keys: impl Iterator<Item = &'a [u8]>,
    ) -> Box<[(Arc<Generation>, u64)]> {
        let handles: Box<[(Arc<Generation>, u64)]> = keys
            .map(|key| {
                let g = match self.map.get(key) {
                    Some(g) => Arc::clone(g),
                    None => {
                        let g = Arc::new(Generation {
                            key: key.into(),
                            version: AtomicU64::new(0),
                        });
                        self.map.insert(key.into(), Arc::clone(&g));
                        g
                    }
                };
                let version = g.version.load(Ordering::SeqCst);
                (g, version)
            })
            .collect();
        if self.map.len() >= self.sweep_at {
            // Only the map holds it: no copy refers to it, and a new copy starts a new one.
            self.map.retain(|_, g| Arc::strong_count(g) > 1);
            self.sweep_at = (self.map.len() * 2).max(MIN_GENERATIONS);
        }
        handles
    }

    /// Retire the copies made under `key` (none refer to a key the map does not hold).
    fn bump(&self, key: &[u8]) {
        if let Some(g) = self.map.get(key) {
            g.version.fetch_add(1, Ordering::SeqCst);
        }
    }
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

/// What this instance is storing: its copy is made (at the generations' versions of then) once
/// the store's own pushes have come.
struct OwnStore {
    keys: EntryKeys,
    entry: Arc<Entry>,
    fresh_until: Instant,
    markers: Markers,
    /// `generation_epoch` when the store began.
    epoch: u64,
    /// The push naming the entry marker came (the entry changed after it: no copy).
    seen_entry: bool,
    /// The push naming the generations marker came.
    seen_generations: bool,
    kept: tokio::sync::oneshot::Sender<()>,
}

pub(crate) struct LocalState {
    entries: Entries,
    epoch: AtomicU64,
    /// Bumped by what own stores cannot follow through pushes: the api's own invalidations
    /// (dropped here before their push comes), flushes, outages, tracking (re)verified.
    generation_epoch: AtomicU64,
    /// Own stores waiting for their pushes (at most [`MAX_OWN`]).
    own: Mutex<Vec<OwnStore>>,
    generations: Mutex<Generations>,
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
                generation_epoch: AtomicU64::new(0),
                own: Mutex::new(Vec::new()),
                generations: Mutex::new(Generations::new()),
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
        if hit.fresh_until > now && hit.is_current() {
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
        let copy = self.copy_of(keys, entry, started + fresh_for);
        self.entries.insert(key.into(), copy);
        // After the insert: an invalidation bumps the epoch before it drops copies, so either
        // it sees this copy or this check sees its bump.
        if self.epoch.load(Ordering::SeqCst) != ticket.0 || !self.verified(Instant::now()) {
            self.entries.remove(key);
        }
    }

    /// Before this instance stores `entry` (fresh until `fresh_until`) with `markers`: the copy
    /// is kept when the store's own pushes have come (the receiver hears it), unless the entry
    /// or its generations changed since. `None` (no copy) while tracking is not verified or
    /// too many wait.
    pub fn expect_own(
        &self,
        keys: &EntryKeys,
        markers: &Markers,
        entry: Arc<Entry>,
        fresh_until: Instant,
    ) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let epoch = self.generation_epoch.load(Ordering::SeqCst);
        if !self.verified(Instant::now()) {
            return None;
        }
        let mut own = self.own();
        if own.len() >= MAX_OWN {
            return None;
        }
        let (kept, heard) = tokio::sync::oneshot::channel();
        own.push(OwnStore {
            keys: keys.clone(),
            entry,
            fresh_until,
            markers: markers.clone(),
            epoch,
            seen_entry: false,
            seen_generations: false,
            kept,
        });
        Some(heard)
    }

    /// The store with `markers` did not store (or failed): no push will name them.
    pub fn forget_own(&self, markers: &Markers) {
        self.own().retain(|s| s.markers.entry != markers.entry);
    }

    fn own(&self) -> MutexGuard<'_, Vec<OwnStore>> {
        // Nothing panics while holding it.
        self.own.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Retire copies stored under these generation keys (the api's own invalidation, before
    /// the write answers).
    pub fn drop_generations(&self, generation_keys: &[String]) {
        self.generation_epoch.fetch_add(1, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let generations = self.generations();
        for key in generation_keys {
            generations.bump(key.as_bytes());
        }
    }

    fn generations(&self) -> MutexGuard<'_, Generations> {
        // Nothing panics while holding it.
        self.generations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn drop_all(&self) {
        self.generation_epoch.fetch_add(1, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.own().clear();
        self.entries.clear();
    }

    /// Copies that may still be served (tests): held, and none of their generations changed.
    pub fn len(&self) -> usize {
        self.entries.iter().filter(|(_, v)| v.is_current()).count()
    }

    fn apply(&self, event: TrackingEvent) {
        match event {
            TrackingEvent::Invalidate(keys) => {
                super::metrics::local_invalidations(keys.len());
                self.epoch.fetch_add(1, Ordering::SeqCst);
                for key in &keys {
                    let bytes = key.as_bytes();
                    if is_marker(bytes) {
                        // An own store's marker: no copy is stored under it.
                    } else if is_generation_key(bytes) {
                        self.generations().bump(bytes);
                    } else if let Ok(k) = std::str::from_utf8(bytes) {
                        self.entries.remove(k);
                    }
                }
                self.keep_own(&keys);
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
                    // Lookups and stores that began untracked may not fill.
                    self.generation_epoch.fetch_add(1, Ordering::SeqCst);
                    self.epoch.fetch_add(1, Ordering::SeqCst);
                    super::metrics::local_tracking(true);
                }
            }
        }
    }
}

impl LocalState {
    /// After the push of `keys` was applied: follow the own stores it concerns (see the module
    /// doc); those whose pushes have all come keep their copy.
    fn keep_own(&self, keys: &[Key]) {
        let mut own = self.own();
        if own.is_empty() {
            return;
        }
        let named = |k: &[u8]| keys.iter().any(|x| x.as_bytes() == k);
        let mut ready = Vec::new();
        for mut s in std::mem::take(&mut *own) {
            let entry_changed = named(s.keys.entry_key().as_bytes());
            let generation_changed = s.keys.generation_keys().any(named);
            if named(s.markers.entry.as_bytes()) {
                s.seen_entry = true;
            } else if s.seen_entry && entry_changed {
                continue;
            }
            if named(s.markers.generation.as_bytes()) {
                s.seen_generations = true;
                if generation_changed {
                    continue;
                }
            } else if s.seen_generations && generation_changed {
                continue;
            }
            if s.seen_entry && s.seen_generations {
                ready.push(s);
            } else {
                own.push(s);
            }
        }
        drop(own);
        let now = Instant::now();
        for s in ready {
            if s.fresh_until <= now {
                continue;
            }
            // The generation pushes applied so far are from before the store (it checked the
            // generations): the copy holds from today's versions on.
            let copy = self.copy_of(&s.keys, s.entry, s.fresh_until);
            self.entries.insert(s.keys.entry_key().into(), copy);
            // After the insert, as in `fill`: the api's own invalidation (another task) bumps
            // the generation epoch before it drops copies.
            if s.epoch == self.generation_epoch.load(Ordering::SeqCst)
                && self.verified(Instant::now())
            {
                let _ = s.kept.send(());
            } else {
                self.entries.remove(s.keys.entry_key());
            }
        }
    }
}

impl LocalState {
    /// A copy of `entry` under `keys`' generations at their current versions.
    fn copy_of(
        &self,
        keys: &EntryKeys,
        entry: Arc<Entry>,
        fresh_until: Instant,
    ) -> Arc<LocalEntry> {
        let key = keys.entry_key();
        let generations = self.generations().current(keys.generation_keys());
        let bytes = entry.body.len()
            + entry
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len())
                .sum::<usize>()
            + key.len()
            + generations.iter().map(|(g, _)| g.key.len()).sum::<usize>()
            + OVERHEAD_BYTES;
        Arc::new(LocalEntry {
            entry,
            fresh_until,
            pattern: keys.pattern().cloned(),
            generations,
            bytes,
        })
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

    /// Fill a copy of `keys` fresh for `secs`, with a ticket taken just before.
    fn fill(s: &LocalState, keys: &EntryKeys, secs: u64) {
        let ticket = s.ticket(Instant::now()).unwrap();
        s.fill(
            ticket,
            keys,
            entry(),
            Instant::now(),
            Duration::from_secs(secs),
        );
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
        let keys = EntryKeys::new("/r", "h", &["t".into()], None);
        let now = Instant::now();
        assert!(s.ticket(now).is_none(), "not verified yet");
        verified(&tier);
        fill(s, &keys, 10);
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
        fill(s, &keys, 10);
        assert_eq!(s.len(), 1);
        s.apply(TrackingEvent::Invalidate(vec!["rc:{/r}:g:t".into()]));
        assert_eq!(s.len(), 0);
        fill(s, &keys, 10);
        s.apply(TrackingEvent::Invalidate(vec![keys.entry_key().into()]));
        assert_eq!(s.len(), 0);

        // Down: everything dropped, nothing served or filled until verified again.
        fill(s, &keys, 10);
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
        fill(s, &keys, 10);
        s.drop_generations(&["rc:{/r}:g:t".into()]);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn an_own_store_is_kept_from_its_own_pushes_on_unless_something_changed() {
        let tier = LocalTier::new(100, 1 << 20, 1024);
        verified(&tier);
        let s = tier.state();
        let keys = EntryKeys::new("/r", "h", &["t".into()], None);
        let key = keys.entry_key().to_owned();
        let generation = "rc:{/r}:g:t";
        let fresh = || Instant::now() + Duration::from_secs(10);
        let push = |keys: &[&str]| {
            s.apply(TrackingEvent::Invalidate(
                keys.iter().map(|k| (*k).into()).collect(),
            ));
        };
        let m = keys.markers();
        assert!(m.generation.starts_with("rc:{/r}:g:"));
        let mut heard = s.expect_own(&keys, &m, entry(), fresh()).unwrap();
        // Earlier pushes of the entry and its generation (from before the store) keep nothing
        // and do not count.
        push(&[&key]);
        push(&[generation]);
        assert_eq!(s.len(), 0);
        // The store's pushes, one per prefix: the copy is kept, and the store hears it.
        push(&[&key, &m.entry]);
        assert!(
            heard.try_recv().is_err(),
            "the generations push is still to come"
        );
        push(&[&m.generation]);
        assert!(s.get(&key, Instant::now()).is_some());
        assert!(heard.try_recv().is_ok());
        // Any later push of the entry or its generation drops it.
        push(&[&key]);
        assert_eq!(s.len(), 0);

        // A generation changed in the store's own iteration (after the store): nothing kept.
        let m = keys.markers();
        let mut heard = s.expect_own(&keys, &m, entry(), fresh()).unwrap();
        push(&[generation, &m.generation]);
        push(&[&key, &m.entry]);
        assert_eq!(s.len(), 0);
        assert!(heard.try_recv().is_err());
        // Or after it, before the entry's push was read; or the entry changed after it.
        let m = keys.markers();
        s.expect_own(&keys, &m, entry(), fresh()).unwrap();
        push(&[&m.generation]);
        push(&[generation]);
        push(&[&key, &m.entry]);
        assert_eq!(s.len(), 0);
        let m = keys.markers();
        s.expect_own(&keys, &m, entry(), fresh()).unwrap();
        push(&[&key, &m.entry]);
        push(&[&key]);
        push(&[&m.generation]);
        assert_eq!(s.len(), 0);
        // The api's own invalidation before the pushes, and an outage (forgets waiting stores).
        let m = keys.markers();
        s.expect_own(&keys, &m, entry(), fresh()).unwrap();
        s.drop_generations(&[generation.into()]);
        push(&[&key, &m.entry]);
        push(&[&m.generation]);
        assert_eq!(s.len(), 0);
        let m = keys.markers();
        let mut heard = s.expect_own(&keys, &m, entry(), fresh()).unwrap();
        s.apply(TrackingEvent::Down);
        assert!(heard.try_recv().is_err(), "forgotten");
        assert!(s.expect_own(&keys, &m, entry(), fresh()).is_none());
    }

    #[test]
    fn an_invalidation_retires_only_its_copies_and_versions_stay_bounded() {
        let tier = LocalTier::new(20_000, 1 << 30, 1024);
        verified(&tier);
        let s = tier.state();
        let fill = |hash: &str, tag: &str| {
            let keys = EntryKeys::new("/r", hash, &[tag.into()], None);
            fill(s, &keys, 60);
            keys.entry_key().to_owned()
        };
        let kept = fill("kept", "other");
        let users: Vec<String> = (0..5000)
            .map(|i| fill(&i.to_string(), &format!("user:{i}")))
            .collect();
        assert_eq!(s.len(), 5001);
        // The api's own write and another instance's push each retire their tag's copy alone.
        s.drop_generations(&["rc:{/r}:g:user:7".into()]);
        s.apply(TrackingEvent::Invalidate(vec!["rc:{/r}:g:user:8".into()]));
        assert!(s.get(&users[7], Instant::now()).is_none());
        assert!(s.get(&users[8], Instant::now()).is_none());
        assert!(s.get(&users[9], Instant::now()).is_some());
        assert!(s.get(&kept, Instant::now()).is_some());
        assert_eq!(s.len(), 4999);
        // A copy made after the invalidation is served again.
        let again = fill("7", "user:7");
        assert!(s.get(&again, Instant::now()).is_some());

        // Versions of generations no copy refers to any more are swept.
        s.apply(TrackingEvent::Down);
        verified(&tier);
        for i in 0..50_000 {
            fill("churn", &format!("t:{i}"));
        }
        let held = s.generations().map.len();
        assert!(held <= 2 * MIN_GENERATIONS, "{held} versions held");
    }

    #[test]
    fn bounded_by_entries() {
        let tier = LocalTier::new(40, 1 << 30, 1024);
        verified(&tier);
        let s = tier.state();
        for i in 0..1000 {
            let keys = EntryKeys::new("/r", &i.to_string(), &[], None);
            fill(s, &keys, 10);
        }
        assert!(s.len() <= 40, "{}", s.len());
    }
}
