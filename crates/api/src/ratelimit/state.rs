//! The one per-client state map: counts of the `memory` backend, and for the Redis backend the
//! last counts Redis returned plus spare units already taken there.
//!
//! Bounded and O(1) per request: each shard is an LRU map of at most `max / SHARDS` clients.
//! Inserting a new client first drops up to two least recently seen entries whose windows have
//! passed (the sweep), and at the cap drops the least recently seen one
//! (`ratelimit_evicted_clients_total`). In `redis`/`auto` Redis stays the authority, so an
//! evicted client only loses its spare units; in `memory` mode it starts fresh windows.

use super::keys::ClientKey;
use super::types::{Backend, Counts, Limits, Windows};
use hashlink::LruCache;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};

const SHARDS: usize = 16;
/// Entries looked at by the sweep per insert: more than one, so stale entries go faster than
/// new ones come.
const SWEEP_PER_INSERT: usize = 2;

#[derive(Debug, Clone, Copy)]
struct Entry {
    minute_window: u64,
    hour_window: u64,
    counts: Counts,
    /// Units taken in Redis for this client and not used yet (same windows only).
    spare: u64,
    /// `counts` came from Redis (else from the memory backend).
    from_redis: bool,
    /// Redis granted this client spare units before: it sends in bursts, so its next call asks
    /// for spare units even when it arrives alone.
    hot: bool,
}

impl Entry {
    fn new(windows: Windows) -> Self {
        Self {
            minute_window: windows.minute,
            hour_window: windows.hour,
            counts: Counts { minute: 0, hour: 0 },
            spare: 0,
            from_redis: false,
            hot: false,
        }
    }

    /// Move to the current windows: a passed window counts from zero again.
    fn roll(&mut self, now: Windows) {
        if self.minute_window != now.minute {
            self.minute_window = now.minute;
            self.counts.minute = 0;
            self.spare = 0;
        }
        if self.hour_window != now.hour {
            self.hour_window = now.hour;
            self.counts.hour = 0;
            self.spare = 0;
        }
    }

    fn is_stale(&self, now: Windows) -> bool {
        self.hour_window != now.hour || (self.from_redis && self.minute_window != now.minute)
    }
}

/// What local state says about a request that would go to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    Decided(Local),
    /// Ask Redis; `hot`: the client used up spare units before (see `Entry::hot`).
    AskRedis {
        hot: bool,
    },
}

/// A decision made from local state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Local {
    pub allowed: bool,
    pub counts: Counts,
    pub backend: Backend,
}

pub(crate) struct ClientStates {
    shards: Box<[Mutex<LruCache<ClientKey, Entry>>]>,
    hasher: RandomState,
    evicted: metrics::Counter,
}

impl ClientStates {
    pub fn new(max_clients: usize) -> Self {
        let per_shard = max_clients.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect(),
            hasher: RandomState::new(),
            evicted: metrics::counter!("ratelimit_evicted_clients_total"),
        }
    }

    fn shard(&self, key: &ClientKey) -> MutexGuard<'_, LruCache<ClientKey, Entry>> {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The `memory` backend: count one request of `key` if both windows have room.
    pub fn count_in_memory(&self, key: ClientKey, limits: Limits, now: Windows) -> Local {
        let mut shard = self.shard(&key);
        let entry = self.entry(&mut shard, key, now);
        entry.roll(now);
        // Counts from Redis are the best start when falling back; spare units are not ours.
        entry.from_redis = false;
        entry.spare = 0;
        let allowed =
            entry.counts.minute < limits.per_minute && entry.counts.hour < limits.per_hour;
        if allowed {
            entry.counts.minute += 1;
            entry.counts.hour += 1;
        }
        Local {
            allowed,
            counts: entry.counts,
            backend: Backend::Memory,
        }
    }

    /// Without Redis: a spare unit (`local`), or a refusal while a window is known exhausted
    /// (`cached`; counts only grow inside a window, so Redis would refuse too).
    pub fn decide_locally(&self, key: ClientKey, limits: Limits, now: Windows) -> Lookup {
        let mut shard = self.shard(&key);
        let Some(entry) = shard.get_mut(&key).filter(|e| e.from_redis) else {
            return Lookup::AskRedis { hot: false };
        };
        entry.roll(now);
        if entry.spare > 0 {
            entry.spare -= 1;
            return Lookup::Decided(Local {
                allowed: true,
                counts: Counts {
                    minute: entry.counts.minute - entry.spare,
                    hour: entry.counts.hour - entry.spare,
                },
                backend: Backend::Local,
            });
        }
        let exhausted =
            entry.counts.minute >= limits.per_minute || entry.counts.hour >= limits.per_hour;
        if !exhausted {
            return Lookup::AskRedis { hot: entry.hot };
        }
        Lookup::Decided(Local {
            allowed: false,
            counts: entry.counts,
            backend: Backend::Cached,
        })
    }

    /// After a Redis call: `counts` are Redis' counts, `spare` units of them are not used yet.
    /// A new client is tracked only when there is something to remember.
    pub fn remember(
        &self,
        key: ClientKey,
        limits: Limits,
        now: Windows,
        counts: Counts,
        spare: u64,
    ) {
        let worth_it =
            spare > 0 || counts.minute >= limits.per_minute || counts.hour >= limits.per_hour;
        let mut shard = self.shard(&key);
        let entry = match shard.get_mut(&key) {
            Some(entry) => entry,
            None if worth_it => self.entry(&mut shard, key, now),
            None => return,
        };
        let unused = if entry.from_redis
            && entry.minute_window == now.minute
            && entry.hour_window == now.hour
        {
            entry.spare
        } else {
            0
        };
        *entry = Entry {
            minute_window: now.minute,
            hour_window: now.hour,
            counts,
            spare: unused + spare,
            from_redis: true,
            hot: entry.hot || spare > 0,
        };
    }

    /// The entry of `key`, inserted (after the sweep, evicting at the cap) when missing.
    fn entry<'a>(
        &self,
        shard: &'a mut LruCache<ClientKey, Entry>,
        key: ClientKey,
        now: Windows,
    ) -> &'a mut Entry {
        if !shard.contains_key(&key) {
            for _ in 0..SWEEP_PER_INSERT {
                match shard.iter().next() {
                    Some((_, oldest)) if oldest.is_stale(now) => drop(shard.remove_lru()),
                    _ => break,
                }
            }
            if shard.len() >= shard.capacity() && shard.remove_lru().is_some() {
                self.evicted.increment(1);
            }
            shard.insert(key, Entry::new(now));
        }
        // Just inserted or present: `get_mut` also marks it most recently seen.
        shard
            .get_mut(&key)
            .unwrap_or_else(|| unreachable!("entry inserted above"))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::keys::ClientId;
    use std::net::IpAddr;

    fn key(i: u32) -> ClientKey {
        ClientKey {
            rule: 0,
            id: ClientId::Ip(IpAddr::V4(i.into())),
        }
    }

    const LIMITS: Limits = Limits {
        per_minute: 2,
        per_hour: 3,
    };

    #[test]
    fn memory_counts_both_windows_and_resets_them() {
        let s = ClientStates::new(100);
        let w = Windows::at(120);
        assert!(s.count_in_memory(key(1), LIMITS, w).allowed);
        let second = s.count_in_memory(key(1), LIMITS, w);
        assert!(second.allowed && second.counts.minute == 2);
        let refused = s.count_in_memory(key(1), LIMITS, w);
        assert!(!refused.allowed);
        assert_eq!(refused.counts.hour, 2, "refused requests are not counted");
        assert!(s.count_in_memory(key(1), LIMITS, Windows::at(180)).allowed);
        assert!(
            !s.count_in_memory(key(1), LIMITS, Windows::at(240)).allowed,
            "hour limit"
        );
        assert!(s.count_in_memory(key(1), LIMITS, Windows::at(3600)).allowed);
    }

    #[test]
    fn bounded_with_lru_eviction() {
        let s = ClientStates::new(SHARDS * 8);
        let w = Windows::at(0);
        for i in 0..10_000 {
            s.count_in_memory(key(i), LIMITS, w);
        }
        assert!(s.len() <= SHARDS * 8, "{}", s.len());
    }

    #[test]
    fn the_sweep_drops_passed_windows_before_evicting() {
        let s = ClientStates::new(SHARDS * 1000);
        for i in 0..2000 {
            s.count_in_memory(key(i), LIMITS, Windows::at(0));
        }
        for i in 0..2000 {
            s.count_in_memory(key(10_000 + i), LIMITS, Windows::at(3600));
        }
        assert!(s.len() <= 2000 + SHARDS * 2, "old hour swept: {}", s.len());
    }

    #[test]
    fn spare_units_then_cached_refusals() {
        let s = ClientStates::new(100);
        let w = Windows::at(60);
        let decided = |lookup| match lookup {
            Lookup::Decided(local) => local,
            Lookup::AskRedis { .. } => panic!("expected a local decision"),
        };
        let cold = Lookup::AskRedis { hot: false };
        assert_eq!(s.decide_locally(key(1), LIMITS, w), cold);
        s.remember(key(1), LIMITS, w, Counts { minute: 1, hour: 1 }, 0);
        assert_eq!(s.len(), 0, "nothing worth remembering");
        s.remember(key(1), LIMITS, w, Counts { minute: 2, hour: 2 }, 1);
        let spare = decided(s.decide_locally(key(1), LIMITS, w));
        assert_eq!(
            (spare.allowed, spare.backend, spare.counts.minute),
            (true, Backend::Local, 2)
        );
        let cached = decided(s.decide_locally(key(1), LIMITS, w));
        assert_eq!((cached.allowed, cached.backend), (false, Backend::Cached));
        assert_eq!(
            s.decide_locally(key(1), LIMITS, Windows::at(120)),
            Lookup::AskRedis { hot: true },
            "next minute: ask Redis, for spare units again"
        );
    }
}
