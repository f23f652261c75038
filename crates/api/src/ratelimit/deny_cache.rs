//! Clients whose window is exhausted stay refused until it resets, so they are refused locally
//! without a Redis call (as Envoy's rate limiter does). Counts only grow inside a window, so this
//! never refuses a request Redis would allow (except after Redis lost data, where it is stricter).

use super::{Backend, Counts, Decision, Limits, Windows};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

const SWEEP_ABOVE: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Exhausted {
    minute_window: u64,
    hour_window: u64,
    counts: Counts,
}

#[derive(Default)]
pub(crate) struct DenyCache {
    entries: Mutex<HashMap<IpAddr, Exhausted>>,
}

impl DenyCache {
    /// A refusal when `client` is known to be over a limit in the current windows.
    pub fn lookup(&self, client: IpAddr, now: Windows, limits: Limits) -> Option<Decision> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.is_empty() {
            return None;
        }
        let entry = *entries.get(&client)?;
        let counts = current_counts(entry, now);
        if counts.minute >= limits.per_minute || counts.hour >= limits.per_hour {
            return Some(limits.decision(false, counts, now, Backend::Cached));
        }
        entries.remove(&client);
        None
    }

    /// Remember `client` when `counts` fill a window.
    pub fn remember(&self, client: IpAddr, windows: Windows, counts: Counts, limits: Limits) {
        if counts.minute < limits.per_minute && counts.hour < limits.per_hour {
            return;
        }
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() > SWEEP_ABOVE {
            entries.retain(|_, e| {
                let c = current_counts(*e, windows);
                c.minute >= limits.per_minute || c.hour >= limits.per_hour
            });
        }
        entries.insert(
            client,
            Exhausted {
                minute_window: windows.minute,
                hour_window: windows.hour,
                counts,
            },
        );
    }
}

fn current_counts(entry: Exhausted, now: Windows) -> Counts {
    Counts {
        minute: if entry.minute_window == now.minute {
            entry.counts.minute
        } else {
            0
        },
        hour: if entry.hour_window == now.hour {
            entry.counts.hour
        } else {
            0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_until_the_exhausted_window_resets() {
        let cache = DenyCache::default();
        let limits = Limits {
            per_minute: 2,
            per_hour: 100,
        };
        let ip: IpAddr = [10, 0, 0, 9].into();
        let w = Windows::at(60);
        cache.remember(ip, w, Counts { minute: 1, hour: 1 }, limits);
        assert!(cache.lookup(ip, w, limits).is_none(), "not exhausted yet");
        cache.remember(ip, w, Counts { minute: 2, hour: 2 }, limits);
        let refused = cache
            .lookup(ip, Windows::at(100), limits)
            .expect("cached refusal");
        assert!(!refused.allowed && refused.minute.remaining == 0 && refused.hour.remaining == 98);
        assert!(
            cache.lookup(ip, Windows::at(120), limits).is_none(),
            "next minute is free again"
        );
    }
}
