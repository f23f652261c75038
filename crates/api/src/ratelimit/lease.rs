//! Hot clients borrow a few units ahead. When a batch of `n` concurrent requests of one client is
//! decided, the call asks Redis for up to `n` more units; those are counted in Redis at once and
//! handed out locally to the client's next requests in the same windows, without a round trip.
//!
//! Limits are never exceeded: every unit is taken in Redis before it is used. A client that sends
//! one request at a time never gets spare units, so its decisions stay exact. The cost: spare units
//! left when a window ends are lost from the hour window (and from other api instances sharing the
//! quota). [`spare_units`] caps that at 1/16 of the minute limit and 1/960 of the hour limit per
//! minute (≤ ~6% of the hour limit in the worst case); with the default 60/1000 there are none.

use super::{Counts, Limits, Windows};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

const SWEEP_ABOVE: usize = 4096;
const MAX_SPARE: u64 = 1024;
/// Spare units asked per request of the batch: hot clients keep enough to skip most round trips.
const SPARE_PER_WAITING: u64 = 8;

#[derive(Debug, Clone, Copy)]
struct Lease {
    minute_window: u64,
    hour_window: u64,
    units: u64,
    /// Counts in Redis right after the units were taken.
    counts: Counts,
    /// Units of the last refill; when half are used the next refill starts in the background.
    size: u64,
    refilling: bool,
}

/// A spare unit, and whether the caller should now refill the lease (`Some(units)`).
pub(crate) struct Taken {
    pub counts: Counts,
    pub refill: Option<u64>,
}

#[derive(Default)]
pub(crate) struct Leases {
    entries: Mutex<HashMap<IpAddr, Lease>>,
}

/// Spare units to ask for when `waiting` requests of a client are decided together.
pub(crate) fn spare_units(waiting: u64, limits: Limits) -> u64 {
    if waiting < 2 {
        return 0;
    }
    let cap = (limits.per_minute / 16)
        .min(limits.per_hour / 960)
        .min(MAX_SPARE);
    (waiting * SPARE_PER_WAITING).min(cap)
}

impl Leases {
    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, Lease>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Use one spare unit of `client` in the current windows: the counts as if only the used
    /// units were taken.
    pub fn take(&self, client: IpAddr, now: Windows) -> Option<Taken> {
        let mut entries = self.lock();
        if entries.is_empty() {
            return None;
        }
        let lease = entries.get_mut(&client)?;
        if lease.minute_window != now.minute || lease.hour_window != now.hour {
            entries.remove(&client);
            return None;
        }
        if lease.units == 0 {
            // Used up while a refill is on its way: this request is decided by Redis.
            return None;
        }
        lease.units -= 1;
        let counts = Counts {
            minute: lease.counts.minute.saturating_sub(lease.units),
            hour: lease.counts.hour.saturating_sub(lease.units),
        };
        let refill = (!lease.refilling && lease.units <= lease.size / 2).then_some(lease.size);
        lease.refilling |= refill.is_some();
        if lease.units == 0 && !lease.refilling {
            entries.remove(&client);
        }
        Some(Taken { counts, refill })
    }

    /// Keep `units` spare units taken in `windows`; `counts` are the Redis counts after the call.
    pub fn store(&self, client: IpAddr, windows: Windows, units: u64, counts: Counts) {
        if units == 0 {
            self.refill_failed(client);
            return;
        }
        let mut entries = self.lock();
        if entries.len() > SWEEP_ABOVE {
            entries.retain(|_, l| l.minute_window >= windows.minute);
        }
        let fresh = Lease {
            minute_window: windows.minute,
            hour_window: windows.hour,
            units: 0,
            counts,
            size: units,
            refilling: false,
        };
        let lease = entries.entry(client).or_insert(fresh);
        if lease.minute_window != windows.minute || lease.hour_window != windows.hour {
            *lease = fresh;
        }
        // Overlapping calls may both leave spares: the later counts include the earlier units.
        lease.units += units;
        lease.size = units;
        lease.refilling = false;
        lease.counts = Counts {
            minute: lease.counts.minute.max(counts.minute),
            hour: lease.counts.hour.max(counts.hour),
        };
    }

    /// A background refill got nothing: later requests go through Redis again.
    pub fn refill_failed(&self, client: IpAddr) {
        let mut entries = self.lock();
        if let Some(lease) = entries.get_mut(&client) {
            lease.refilling = false;
            if lease.units == 0 {
                entries.remove(&client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));

    #[test]
    fn spare_units_only_for_batches_and_capped_by_the_limits() {
        let big = Limits {
            per_minute: 100_000_000,
            per_hour: 100_000_000,
        };
        assert_eq!(spare_units(1, big), 0);
        assert_eq!(spare_units(8, big), 64);
        assert_eq!(spare_units(5000, big), MAX_SPARE);
        assert_eq!(
            spare_units(
                8,
                Limits {
                    per_minute: 60,
                    per_hour: 1000
                }
            ),
            1
        );
        assert_eq!(
            spare_units(
                8,
                Limits {
                    per_minute: 4,
                    per_hour: 1000
                }
            ),
            0
        );
    }

    #[test]
    fn spare_units_are_used_in_their_windows_and_refilled_at_half() {
        let leases = Leases::default();
        let w = Windows::at(600);
        let c = |minute, hour| Counts { minute, hour };
        let counts = |l: &Leases, w| l.take(IP, w).map(|t| t.counts);
        leases.store(IP, w, 4, c(10, 30));
        assert_eq!(counts(&leases, w), Some(c(7, 27)));
        let half = leases.take(IP, w).expect("a unit");
        assert_eq!(
            (half.counts, half.refill),
            (c(8, 28), Some(4)),
            "half used: refill"
        );
        assert_eq!(
            leases.take(IP, w).map(|t| t.refill),
            Some(None),
            "one refill at a time"
        );
        leases.store(IP, w, 4, c(14, 34));
        assert_eq!(counts(&leases, w), Some(c(10, 30)));
        for _ in 0..4 {
            assert!(leases.take(IP, w).is_some());
        }
        leases.refill_failed(IP);
        assert_eq!(counts(&leases, w), None, "used up");
        leases.store(IP, w, 3, c(17, 37));
        assert_eq!(
            counts(&leases, Windows::at(660)),
            None,
            "next minute: dropped"
        );
        assert_eq!(counts(&leases, w), None);
    }
}
