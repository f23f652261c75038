//! What the chaos routes remember between calls: the reset lock (serialization and cooldown) and
//! when the last reset happened. Lives in `AppState`; `routes::chaos` drives it.

use chrono::{DateTime, Utc};
use std::sync::Mutex;
use std::time::Instant;
use tokio::sync::MutexGuard;

#[derive(Default)]
pub struct ChaosState {
    /// Held for the whole reset so concurrent resets run one after the other; holds when the
    /// last reset finished (for the cooldown).
    reset_lock: tokio::sync::Mutex<Option<Instant>>,
    /// Wall-clock time of the last reset, readable by `status` while a reset runs.
    last_reset: Mutex<Option<DateTime<Utc>>>,
}

impl ChaosState {
    /// Wait for any running reset; the guard holds when the previous reset finished.
    pub async fn lock_reset(&self) -> MutexGuard<'_, Option<Instant>> {
        self.reset_lock.lock().await
    }

    pub fn last_reset(&self) -> Option<DateTime<Utc>> {
        self.last_reset.lock().ok().and_then(|t| *t)
    }

    pub fn set_last_reset(&self, at: DateTime<Utc>) {
        if let Ok(mut last) = self.last_reset.lock() {
            *last = Some(at);
        }
    }
}
