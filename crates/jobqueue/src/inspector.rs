//! The inspector: one job's detail, listings by state with stable cursors, counts and the
//! per-minute history, read through the store (`store/reads.rs`). Every read is bounded by the
//! call timeout.

use crate::client::{ms_to_time, JobQueue};
use crate::error::JobQueueError;
use crate::jobs::JobEnvelope;
use crate::store::{self, Cursor, Raw};
use crate::types::{
    JobFailure, JobInfo, JobPage, JobStatus, MinuteCount, QueueStats, DEFAULT_PRIORITY,
};
use std::collections::HashMap;

/// Most jobs one list call returns.
pub const MAX_LIST: usize = 500;
/// Longest history, in minutes (the counters expire after 24 h).
pub const MAX_HISTORY_MINUTES: u64 = 24 * 60;

impl JobQueue {
    /// The job's detail, or `None` for an unknown id.
    pub async fn status(&self, id: &str) -> Result<Option<JobInfo>, JobQueueError> {
        let ids = [id.to_owned()];
        Ok(self.infos(&ids).await?.pop().flatten())
    }

    /// Details of `ids` in one round trip (`None` where a job does not exist).
    async fn infos(&self, ids: &[String]) -> Result<Vec<Option<JobInfo>>, JobQueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys().clone();
        let raws = self
            .with_connection(self.call_timeout(), |mut c| async move {
                store::read_jobs(&mut c, &keys, ids).await
            })
            .await?;
        let now = store::now_ms() as f64;
        let registry = self.registry();
        Ok(ids
            .iter()
            .zip(raws)
            .map(|(id, raw)| {
                job_info(self.name(), id, raw, now).map(|mut info| {
                    registry.redact(&info.job_type, &mut info.payload);
                    info
                })
            })
            .collect())
    }

    /// Counts by state from raw key sizes (apalis-redis' own stats are broken).
    pub async fn stats(&self) -> Result<QueueStats, JobQueueError> {
        let keys = self.keys().clone();
        self.with_connection(self.call_timeout(), |mut c| async move {
            store::counts(&mut c, &keys).await
        })
        .await
    }

    /// One page of jobs in `state` (optionally of one type), after `cursor`. Order: scheduled and
    /// retrying by next run time, pending and running by due time, done and dead newest first.
    /// Filtered by type, a page may hold fewer than `limit` jobs; follow `next_cursor`.
    pub async fn list(
        &self,
        state: JobStatus,
        job_type: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<JobPage, JobQueueError> {
        if !(1..=MAX_LIST).contains(&limit) {
            return Err(JobQueueError::Invalid(format!(
                "limit must be 1..={MAX_LIST}"
            )));
        }
        let cursor = cursor.map(parse_cursor).transpose()?;
        let keys = self.keys().clone();
        let cursor_ref = cursor.as_ref();
        let page = self
            .with_connection(self.call_timeout(), |mut c| async move {
                store::page_ids(&mut c, &keys, state, cursor_ref, limit).await
            })
            .await?;
        let next_cursor = (page.len() == limit)
            .then(|| page.last().map(|(id, score)| format!("{score}:{id}")))
            .flatten();
        let ids: Vec<String> = page.into_iter().map(|(id, _)| id).collect();
        let jobs = self
            .infos(&ids)
            .await?
            .into_iter()
            .flatten()
            .filter(|j| job_type.is_none_or(|t| j.job_type == t))
            .collect();
        Ok(JobPage { jobs, next_cursor })
    }

    /// Up to `limit` (1..=[`MAX_LIST`], else `Invalid`) dead jobs, newest first.
    pub async fn dead_jobs(&self, limit: usize) -> Result<Vec<JobInfo>, JobQueueError> {
        Ok(self.list(JobStatus::Dead, None, limit, None).await?.jobs)
    }

    /// Ids of up to [`crate::client::MAX_BULK`] jobs in `state` (for bulk retry/delete).
    pub async fn ids_in(&self, state: JobStatus) -> Result<Vec<String>, JobQueueError> {
        let keys = self.keys().clone();
        let page = self
            .with_connection(self.call_timeout(), |mut c| async move {
                store::page_ids(&mut c, &keys, state, None, crate::client::MAX_BULK).await
            })
            .await?;
        Ok(page.into_iter().map(|(id, _)| id).collect())
    }

    /// Runs per minute over the last `minutes` (oldest first), added up across workers.
    pub async fn history(&self, minutes: u64) -> Result<Vec<MinuteCount>, JobQueueError> {
        if !(1..=MAX_HISTORY_MINUTES).contains(&minutes) {
            return Err(JobQueueError::Invalid(format!(
                "minutes must be 1..={MAX_HISTORY_MINUTES}"
            )));
        }
        let now_minute = store::now_ms() / 60_000;
        let range: Vec<u64> = (now_minute + 1 - minutes..=now_minute).collect();
        let keys = self.keys().clone();
        let range_ref = &range;
        let counts: Vec<HashMap<String, u64>> = self
            .with_connection(self.call_timeout(), |mut c| async move {
                store::history(&mut c, &keys, range_ref).await
            })
            .await?;
        Ok(range
            .iter()
            .zip(counts)
            .map(|(m, c)| MinuteCount {
                minute: ms_to_time(m * 60_000),
                processed: c.get("processed").copied().unwrap_or(0),
                failed: c.get("failed").copied().unwrap_or(0),
            })
            .collect())
    }
}

/// `<score>:<id>` → a cursor; anything else is a 400.
fn parse_cursor(text: &str) -> Result<Cursor, JobQueueError> {
    let bad = || JobQueueError::Invalid("cursor is not one this api returned".into());
    let (score, id) = text.split_once(':').ok_or_else(bad)?;
    let score: f64 = score.parse().map_err(|_| bad())?;
    if id.is_empty() || !score.is_finite() {
        return Err(bad());
    }
    Ok(Cursor {
        score,
        id: id.to_owned(),
    })
}

/// The state a job is in, from where its id is found.
fn status_of(raw: &Raw, now: f64) -> JobStatus {
    let failures = raw.meta.get("failures").is_some_and(|f| f != "0");
    match raw.meta.get("status").map(String::as_str) {
        _ if raw.cancelled.is_some() => JobStatus::Cancelled,
        Some("Cancelled") => JobStatus::Cancelled,
        _ if raw.dead || raw.dead_at.is_some() => JobStatus::Dead,
        _ if raw.delayed.is_some_and(|due| due > now) => JobStatus::Scheduled,
        _ if raw.retrying.is_some_and(|due| due > now) || raw.apalis_scheduled.is_some() => {
            JobStatus::Retrying
        }
        _ if raw.delayed.is_some()
            || raw.retrying.is_some()
            || raw.ready.is_some()
            || raw.parked.is_some() =>
        {
            JobStatus::Pending
        }
        Some("Running") => JobStatus::Running,
        _ if raw.finished.is_some() => JobStatus::Done,
        Some("Done") => JobStatus::Done,
        Some("Killed") => JobStatus::Dead,
        Some("Failed") if failures => JobStatus::Retrying,
        _ => JobStatus::Pending,
    }
}

/// Map what was read to a [`JobInfo`]; `None` when the job does not exist.
fn job_info(queue: &str, id: &str, raw: Raw, now: f64) -> Option<JobInfo> {
    let num = |k: &str| {
        raw.meta
            .get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    raw.meta.get("run_at_ms")?;
    let status = status_of(&raw, now);
    let failures = num("failures") as u32;
    let ran_now = matches!(status, JobStatus::Done | JobStatus::Running) as u32;
    let envelope = raw
        .data
        .as_deref()
        .and_then(|d| serde_json::from_str::<JobEnvelope>(d).ok());
    let job_type = raw
        .meta
        .get("job_type")
        .filter(|t| !t.is_empty())
        .cloned()
        .or_else(|| envelope.as_ref().map(|e| e.job_type.clone()))
        .unwrap_or_default();
    let finished_ms = match status {
        JobStatus::Done => raw
            .finished
            .map(|s| s as u64)
            .or(seconds_ms(num("done_at"))),
        JobStatus::Dead => raw.dead_at.map(|s| s as u64).or(seconds_ms(num("done_at"))),
        JobStatus::Cancelled => raw
            .cancelled
            .map(|s| s as u64)
            .or(seconds_ms(num("done_at"))),
        _ => None,
    };
    let timeout_ms = num("timeout_ms");
    Some(JobInfo {
        job_id: id.to_owned(),
        queue: queue.to_owned(),
        job_type,
        payload: envelope.map(JobEnvelope::into_payload).unwrap_or_default(),
        status,
        attempts: failures + ran_now,
        max_retry: num("max_retry") as u32,
        timeout_seconds: (timeout_ms > 0).then(|| timeout_ms as f64 / 1000.0),
        run_at: ms_to_time(num("run_at_ms")),
        created_at: Some(num("created_ms")).filter(|&m| m > 0).map(ms_to_time),
        // the start in ms; jobs started by older versions have only apalis' seconds
        started_at: Some(num("started_ms"))
            .filter(|&m| m > 0)
            .or(seconds_ms(num("locked_at")))
            .map(ms_to_time),
        finished_at: finished_ms.map(ms_to_time),
        last_error: raw.meta.get("last_error").cloned(),
        errors: raw.errors.iter().filter_map(|e| failure(e)).collect(),
        result: raw
            .meta
            .get("result")
            .and_then(|r| serde_json::from_str(r).ok()),
        progress: raw
            .meta
            .get("progress")
            .and_then(|p| serde_json::from_str(p).ok()),
        cancel_requested: status == JobStatus::Running && raw.meta.contains_key("cancel_requested"),
        priority: raw
            .meta
            .get("priority")
            .and_then(|p| p.parse().ok())
            .unwrap_or(DEFAULT_PRIORITY),
        limit_key: raw.meta.get("limit_key").cloned(),
    })
}

/// apalis writes Unix seconds; 0 means never.
fn seconds_ms(secs: u64) -> Option<u64> {
    (secs > 0).then(|| {
        if secs > 100_000_000_000 {
            secs
        } else {
            secs * 1000
        }
    })
}

fn failure(json: &str) -> Option<JobFailure> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    Some(JobFailure {
        at: ms_to_time(v["at_ms"].as_u64()?),
        attempt: v["attempt"].as_u64()? as u32,
        error: v["error"].as_str()?.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = parse_cursor("1733000000123:01JABC").unwrap_or(Cursor {
            score: 0.0,
            id: String::new(),
        });
        assert_eq!((c.score, c.id.as_str()), (1_733_000_000_123.0, "01JABC"));
        for bad in ["", "x", "1:", "abc:id", "inf:id"] {
            assert!(parse_cursor(bad).is_err(), "{bad}");
        }
    }
}
