//! `demo:delay_print {message}`: prints `[YYYY-MM-DD HH:MM:SS] <message>` (local time) on the
//! worker's stdout. A message starting with [`FAIL_PREFIX`] (`fail:`) fails on every run, so tests
//! and demos can watch retries and dead jobs. `slow:<ms>:<text>` takes that long (at most 60 s)
//! before printing, reporting progress every tenth of it and stopping early if the job is
//! cancelled, so drills can kill or cancel a worker mid-job. `big:<bytes>:<text>` returns a
//! result padded by that many bytes (at most 1 MB), so tests can pass the 64 KB result limit.
//! The result is what was printed.
//!
//! This file is the one to copy for a new job type.

use super::{JobContext, JobError, JobType};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Messages starting with this fail on every run (for tests and demos).
pub const FAIL_PREFIX: &str = "fail:";
/// Messages `slow:<ms>:<text>` take `<ms>` to run (for tests and drills).
pub const SLOW_PREFIX: &str = "slow:";
/// `slow:` never takes longer than this.
const MAX_SLOW: Duration = Duration::from_secs(60);
/// Messages `big:<bytes>:<text>` return a result padded by `<bytes>` (for tests of the limit).
pub const BIG_PREFIX: &str = "big:";
/// `big:` never pads more than this.
const MAX_BIG: usize = 1024 * 1024;

pub struct DelayPrint;

/// The payload of `demo:delay_print`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DelayPrintPayload {
    /// What the job prints: at most 10240 characters, not only whitespace. `fail:` prefix:
    /// fails on purpose; `slow:<ms>:` prefix: takes that long.
    // The schema is the check (see `jobs/payload_schema.rs`): `maxLength` counts characters
    // (code points) and `\S` is ECMA-262's, so these attributes are the whole rule.
    #[schema(
        example = "hello later",
        min_length = 1,
        max_length = 10240,
        pattern = r"\S"
    )]
    pub message: String,
}

impl JobType for DelayPrint {
    const NAME: &'static str = "demo:delay_print";
    type Payload = DelayPrintPayload;
    type Output = DelayPrintResult;

    async fn run(
        &self,
        payload: DelayPrintPayload,
        ctx: &JobContext,
    ) -> Result<DelayPrintResult, JobError> {
        let message = payload.message;
        if let Some(duration) = slow_duration(&message) {
            // Ten steps, each reported: what a long job does with `progress` and `cancelled`.
            for step in 0..10u8 {
                ctx.progress(step * 10, format!("waited {}/10 of {duration:?}", step))?;
                tokio::select! {
                    _ = tokio::time::sleep(duration / 10) => {}
                    _ = ctx.cancelled() => return Err(JobError::fatal("cancelled")),
                }
            }
        }
        print_line(&message)?;
        Ok(DelayPrintResult {
            padding: big_padding(&message).map(|n| "x".repeat(n)),
            printed: message,
        })
    }
}

/// The result of `demo:delay_print`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DelayPrintResult {
    /// The message as printed.
    #[schema(example = "hello later")]
    pub printed: String,
    /// `big:<bytes>:` messages only: that many `x`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding: Option<String>,
}

/// `big:<bytes>:<text>` → the bytes (capped).
fn big_padding(message: &str) -> Option<usize> {
    let (n, _) = message.strip_prefix(BIG_PREFIX)?.split_once(':')?;
    Some(n.parse::<usize>().ok()?.min(MAX_BIG))
}

/// `slow:<ms>:...` → how long to take, capped at 60 s.
fn slow_duration(message: &str) -> Option<Duration> {
    let (ms, _) = message.strip_prefix(SLOW_PREFIX)?.split_once(':')?;
    Some(Duration::from_millis(ms.parse::<u64>().ok()?).min(MAX_SLOW))
}

/// Print the line (by design: this is the demo's output) and log it.
#[allow(clippy::print_stdout)]
fn print_line(message: &str) -> Result<(), JobError> {
    if let Some(reason) = message.strip_prefix(FAIL_PREFIX) {
        return Err(JobError::retry(format!("demo failure: {}", reason.trim())));
    }
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
    println!("[{now}] {message}");
    tracing::info!(%message, "demo:delay_print ran");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(message: &str) -> bool {
        let registry = crate::jobs::Registry::empty().with(DelayPrint);
        registry
            .validate(DelayPrint::NAME, &serde_json::json!({ "message": message }))
            .is_ok()
    }

    #[test]
    fn blank_is_ecma_whitespace_only() {
        assert!(!accepts(""));
        assert!(!accepts(" \t\n\u{a0}\u{feff}\u{3000}"));
        assert!(accepts(" x "));
        // NEL is whitespace to Rust, not to ECMA-262's `\s` (the spec's pattern language).
        assert!(accepts("\u{85}"));
    }

    #[test]
    fn length_counts_characters() {
        assert!(accepts(&"é".repeat(10 * 1024)));
        assert!(!accepts(&"x".repeat(10 * 1024 + 1)));
    }

    #[test]
    fn slow_is_parsed_and_capped() {
        assert_eq!(
            slow_duration("slow:250:x"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(slow_duration("slow:999999:x"), Some(MAX_SLOW));
        assert_eq!(slow_duration("slow:x"), None);
        assert_eq!(slow_duration("hello"), None);
    }
}
