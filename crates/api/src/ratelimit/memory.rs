//! In-process fixed windows with the same semantics as the Lua script. Memory is bounded: entries
//! whose hour window has passed are swept once the map grows past a threshold.

use super::{Backend, Counts, Decision, Limits, Windows};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;
const SWEEP_ABOVE: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Entry {
    minute_window: u64,
    minute: u64,
    hour_window: u64,
    hour: u64,
}

#[derive(Clone)]
pub(crate) struct MemoryLimiter {
    limits: Limits,
    shards: Arc<[Mutex<HashMap<IpAddr, Entry>>]>,
}

impl MemoryLimiter {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    pub fn check(&self, client: IpAddr, windows: Windows) -> Decision {
        let shard = &self.shards[shard_of(client)];
        let mut map = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() > SWEEP_ABOVE {
            map.retain(|_, e| e.hour_window >= windows.hour);
        }
        let entry = map.entry(client).or_insert(Entry {
            minute_window: 0,
            minute: 0,
            hour_window: 0,
            hour: 0,
        });
        if entry.minute_window != windows.minute {
            *entry = Entry {
                minute_window: windows.minute,
                minute: 0,
                ..*entry
            };
        }
        if entry.hour_window != windows.hour {
            *entry = Entry {
                hour_window: windows.hour,
                hour: 0,
                ..*entry
            };
        }
        let allowed = entry.minute < self.limits.per_minute && entry.hour < self.limits.per_hour;
        if allowed {
            entry.minute += 1;
            entry.hour += 1;
        }
        let counts = Counts {
            minute: entry.minute,
            hour: entry.hour,
        };
        self.limits
            .decision(allowed, counts, windows, Backend::Memory)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

fn shard_of(ip: IpAddr) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(ip) as usize % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn minute_limit_then_reset_next_minute() {
        let m = MemoryLimiter::new(Limits {
            per_minute: 2,
            per_hour: 10,
        });
        let w = Windows::at(120);
        assert!(m.check(IP, w).allowed);
        let second = m.check(IP, w);
        assert!(second.allowed && second.minute.remaining == 0);
        let refused = m.check(IP, w);
        assert!(!refused.allowed);
        assert_eq!(
            refused.hour.remaining, 8,
            "refused requests do not use quota"
        );
        assert!(m.check(IP, Windows::at(180)).allowed);
    }

    #[test]
    fn hour_limit_spans_minutes() {
        let m = MemoryLimiter::new(Limits {
            per_minute: 5,
            per_hour: 3,
        });
        for minute in 0..3 {
            assert!(m.check(IP, Windows::at(minute * 60)).allowed);
        }
        assert!(!m.check(IP, Windows::at(200)).allowed);
        assert!(m.check(IP, Windows::at(3600)).allowed);
    }

    #[test]
    fn expired_entries_are_evicted() {
        let m = MemoryLimiter::new(Limits {
            per_minute: 5,
            per_hour: 5,
        });
        for i in 0..(SWEEP_ABOVE as u32 * SHARDS as u32 + 100) {
            m.check(IpAddr::V4(i.into()), Windows::at(0));
        }
        m.check(IP, Windows::at(7200));
        assert!(m.len() < SWEEP_ABOVE * SHARDS + 200);
        for i in 0..(SHARDS as u32 * 64) {
            m.check(IpAddr::V4((i + 1_000_000).into()), Windows::at(7200));
        }
        assert!(
            m.len() <= SWEEP_ABOVE * SHARDS,
            "old windows are swept: {}",
            m.len()
        );
    }
}
