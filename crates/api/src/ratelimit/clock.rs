//! The limiter's clock, passed in: the system time unless pinned. Tests pin it to a second of
//! their choice instead of sleeping past window boundaries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Cheap to clone; clones share the pin.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Unix seconds, or 0: follow the system time.
    pinned: Arc<AtomicU64>,
}

impl Clock {
    pub fn system() -> Self {
        Self::default()
    }

    /// Unix seconds now.
    pub fn now_secs(&self) -> u64 {
        match self.pinned.load(Ordering::Relaxed) {
            0 => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            pinned => pinned,
        }
    }

    /// From now on the time is `unix_secs` (≥ 1) until pinned again.
    pub fn pin(&self, unix_secs: u64) {
        self.pinned.store(unix_secs.max(1), Ordering::Relaxed);
    }
}
