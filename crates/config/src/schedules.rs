//! Schedules (cron): `jobqueue.schedules`, and the one rule for a schedule's name, cron
//! expression and time zone (the api and the worker check with the same functions).
//!
//! Cron: the `croner` crate, 5 fields (`m h dom mon dow`) or 6 with seconds first
//! (`s m h dom mon dow`); no year field. Zones: IANA names through `chrono-tz`.

use serde::{Deserialize, Serialize};

/// Longest schedule name.
pub const MAX_SCHEDULE_NAME: usize = 64;

/// One entry of `jobqueue.schedules` (also the body of `POST /api/schedules`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSettings {
    /// `[A-Za-z0-9_.-]{1,64}`, unique.
    pub name: String,
    /// `*/10 * * * * *` (seconds first) or `0 3 * * *` (5 fields).
    #[schema(example = "0 3 * * *")]
    pub cron: String,
    /// IANA zone the cron fields are read in (default `UTC`).
    #[serde(default = "utc")]
    pub timezone: String,
    pub job: ScheduledJobSettings,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub missed: Missed,
}

/// The job a schedule enqueues on each tick.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduledJobSettings {
    /// A registered job type, e.g. `demo:delay_print`.
    #[serde(rename = "type")]
    pub job_type: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Default: the default queue.
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub max_retry: u32,
    /// Default: the type's own, else `jobqueue.default_timeout`.
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// 1..=10, higher starts first among due jobs of its queue (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
}

/// What a tick does while the schedule's previous job is not done or dead yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Enqueue anyway.
    #[default]
    Allow,
    /// Skip this tick.
    Skip,
}

/// What happens to ticks missed while no worker ran (or Redis was down).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Drop them; go on with the next tick.
    #[default]
    Skip,
    /// Run one job for them (the latest missed tick), then go on.
    RunOnce,
}

fn utc() -> String {
    "UTC".into()
}

/// Why `name` is not a schedule name, if it is not one: 1–64 of `A-Z a-z 0-9 _ . -`.
pub fn schedule_name_problem(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SCHEDULE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    (!ok).then(|| {
        format!("schedule name `{name}` must be 1..={MAX_SCHEDULE_NAME} of A-Z a-z 0-9 _ . -")
    })
}

/// Parse a cron expression: 5 fields, or 6 with seconds first. The error names it.
pub fn parse_cron(cron: &str) -> Result<croner::Cron, String> {
    let fields = cron.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(format!(
            "cron `{cron}`: expected 5 fields (m h dom mon dow) or 6 (s m h dom mon dow), got {fields}"
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(cron)
        .map_err(|e| format!("cron `{cron}`: {e}"))
}

/// Parse an IANA time zone name. The error names it.
pub fn parse_timezone(zone: &str) -> Result<chrono_tz::Tz, String> {
    zone.parse::<chrono_tz::Tz>().map_err(|_| {
        format!("timezone `{zone}` is not an IANA zone name (e.g. UTC, Europe/Berlin)")
    })
}

impl ScheduleSettings {
    /// Name, cron, zone and the job's queue; the job type and payload are the job registry's
    /// to check (the worker and the api do it before storing).
    pub fn problem(&self) -> Option<String> {
        if let Some(p) = schedule_name_problem(&self.name) {
            return Some(p);
        }
        if let Err(p) = parse_cron(&self.cron) {
            return Some(p);
        }
        if let Err(p) = parse_timezone(&self.timezone) {
            return Some(p);
        }
        if let Some(p) = self
            .job
            .queue
            .as_deref()
            .and_then(crate::queue_name_problem)
        {
            return Some(format!("job.queue: {p}"));
        }
        if self.job.job_type.is_empty() {
            return Some("job.type must name a job type".into());
        }
        None
    }
}

/// `jobqueue.schedules`: each entry valid, names unique. The error names the entry.
pub fn validate_declared(schedules: &[ScheduleSettings]) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    for (i, s) in schedules.iter().enumerate() {
        if let Some(problem) = s.problem() {
            return Err(format!("[{i}] ({}): {problem}", s.name));
        }
        if !names.insert(&s.name) {
            return Err(format!("[{i}].name: `{}` is declared twice", s.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_with_and_without_seconds() {
        assert!(parse_cron("*/10 * * * * *").is_ok());
        assert!(parse_cron("0 3 * * *").is_ok());
        for bad in [
            "",
            "* * * *",
            "61 * * * *",
            "* * * * * * 2030",
            "nonsense x y z w",
        ] {
            let err = parse_cron(bad).err().unwrap_or_default();
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
    }

    #[test]
    fn zones_are_iana_names() {
        assert!(parse_timezone("Europe/Berlin").is_ok());
        assert!(parse_timezone("UTC").is_ok());
        assert!(parse_timezone("Mars/Olympus").is_err());
    }
}
