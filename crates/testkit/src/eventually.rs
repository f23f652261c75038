//! Bounded waits for an event: poll a check until it holds, fail naming what never happened.
//! A wait is never a sleep standing in for an event; the bound only ends a hang.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often a check is polled.
const POLL: Duration = Duration::from_millis(50);

/// What a check returns: `true`, `Some(v)` or `Ok(v)` when the event happened; otherwise a
/// description of what was seen instead (`false`, `None`, or the error), kept for the failure
/// message.
pub trait Outcome {
    type Value;
    fn into_result(self) -> Result<Self::Value, String>;
}

impl Outcome for bool {
    type Value = ();
    fn into_result(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("false".into())
        }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.ok_or_else(|| "None".into())
    }
}

impl<T, E: Debug> Outcome for Result<T, E> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// Poll `check` every 50 ms until it reports the event, at most `bound`; panics naming `what`
/// and the last thing seen when the bound passes. Returns the event's value (`()` for a bool).
pub async fn eventually<F, Fut, O>(bound: Duration, what: &str, check: F) -> O::Value
where
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
    O: Outcome,
{
    match try_eventually(bound, check).await {
        Ok(value) => value,
        Err(last) => panic!("{what}: not within {bound:?} (last seen: {last})"),
    }
}

/// [`eventually`] that returns the last thing seen instead of panicking, for a test that
/// expects the event not to happen or adds its own message.
pub async fn try_eventually<F, Fut, O>(bound: Duration, mut check: F) -> Result<O::Value, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
    O: Outcome,
{
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let last = check().await.into_result();
        if last.is_ok() || tokio::time::Instant::now() >= deadline {
            return last;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Await `fut`; a hang past `bound` fails the test naming `what` (a bound on the wait, not a
/// speed check).
pub async fn within<T>(bound: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(bound, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {bound:?}"))
}

/// Poll `check` every 50 ms until it returns true or `bound` passes, blocking the thread (for
/// code outside a runtime, like starting servers). Returns whether it did.
pub fn wait_until(bound: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_check_holds() {
        let mut n = 0;
        let v = eventually(Duration::from_secs(5), "n reaches 3", || {
            n += 1;
            let now = n;
            async move { (now >= 3).then_some(now) }
        })
        .await;
        assert_eq!(v, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "the impossible: not within")]
    async fn panics_naming_what_never_happened() {
        eventually(Duration::from_millis(120), "the impossible", || async {
            Err::<(), _>("still no")
        })
        .await;
    }

    #[tokio::test]
    async fn try_eventually_gives_the_last_thing_seen() {
        let last = try_eventually(Duration::from_millis(60), || async { false }).await;
        assert_eq!(last, Err("false".into()));
    }
}
