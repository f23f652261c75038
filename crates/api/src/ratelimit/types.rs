//! The limiter's shared values: windows, limits, counts and the decision a request gets. Every
//! other file of the module uses these; this one uses none of them.

pub const MINUTE_SECS: u64 = 60;
pub const HOUR_SECS: u64 = 3600;

/// One window's state as seen by a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the window resets.
    pub reset_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Decided by a Lua call.
    Redis,
    /// A spare unit taken in Redis earlier for this client.
    Local,
    /// Refused: a window is known exhausted until it resets (no Redis call).
    Cached,
    Memory,
    /// Redis was unreachable in `redis` mode: let through, not counted.
    FailOpen,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Local => "local",
            Self::Cached => "cached",
            Self::Memory => "memory",
            Self::FailOpen => "fail_open",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub minute: Quota,
    pub hour: Quota,
    pub backend: Backend,
}

impl Decision {
    /// Seconds until a refused client may try again: the latest reset of the exhausted windows.
    pub fn retry_after_secs(&self) -> u64 {
        [self.minute, self.hour]
            .iter()
            .filter(|q| q.remaining == 0)
            .map(|q| q.reset_secs)
            .max()
            .unwrap_or(1)
            .max(1)
    }
}

/// Counts of one client in the current windows, after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    pub minute: u64,
    pub hour: u64,
}

/// The current minute and hour windows, computed once per decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Windows {
    pub minute: u64,
    pub hour: u64,
    pub minute_reset: u64,
    pub hour_reset: u64,
}

impl Windows {
    pub fn at(unix_secs: u64) -> Self {
        Self {
            minute: unix_secs / MINUTE_SECS,
            hour: unix_secs / HOUR_SECS,
            minute_reset: MINUTE_SECS - unix_secs % MINUTE_SECS,
            hour_reset: HOUR_SECS - unix_secs % HOUR_SECS,
        }
    }
}

/// Limits of both windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_minute: u64,
    pub per_hour: u64,
}

impl Limits {
    pub(crate) fn decision(
        &self,
        allowed: bool,
        counts: Counts,
        windows: Windows,
        backend: Backend,
    ) -> Decision {
        Decision {
            allowed,
            minute: Quota {
                limit: self.per_minute,
                remaining: self.per_minute.saturating_sub(counts.minute),
                reset_secs: windows.minute_reset,
            },
            hour: Quota {
                limit: self.per_hour,
                remaining: self.per_hour.saturating_sub(counts.hour),
                reset_secs: windows.hour_reset,
            },
            backend,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_reset_at_their_boundaries() {
        let w = Windows::at(3600 * 5 + 61);
        assert_eq!((w.minute, w.hour), (301, 5));
        assert_eq!((w.minute_reset, w.hour_reset), (59, 3600 - 61));
    }

    #[test]
    fn retry_after_is_the_latest_exhausted_window() {
        let limits = Limits {
            per_minute: 2,
            per_hour: 3,
        };
        let w = Windows::at(30);
        let d = limits.decision(false, Counts { minute: 2, hour: 2 }, w, Backend::Memory);
        assert_eq!(d.retry_after_secs(), 30);
        let d = limits.decision(false, Counts { minute: 2, hour: 3 }, w, Backend::Memory);
        assert_eq!(d.retry_after_secs(), 3570);
    }
}
