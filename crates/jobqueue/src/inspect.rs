//! Reading jobs back: one job's detail, listings by state with stable cursors, counts and the
//! per-minute history. Every read is bounded by the call timeout.

use crate::error::JobQueueError;
use crate::jobs::JobEnvelope;
use crate::queue::{ms_to_time, JobQueue};
use crate::storage::{self, Cursor, Keys};
use crate::types::{JobFailure, JobInfo, JobPage, JobStatus, MinuteCount, QueueStats};
use apalis_redis::ConnectionManager;
use std::collections::HashMap;

/// Most jobs one list call returns.
pub const MAX_LIST: usize = 500;
/// Longest history, in minutes (the counters expire after 24 h).
pub const MAX_HISTORY_MINUTES: u64 = 24 * 60;

/// What Redis holds about one job, read in one pipeline.
#[derive(Debug, Default)]
struct Raw {
    meta: HashMap<String, String>,
    data: Option<String>,
    delayed: Option<f64>,
    retrying: Option<f64>,
    apalis_scheduled: Option<f64>,
    dead: bool,
    dead_at: Option<f64>,
    finished: Option<f64>,
    errors: Vec<String>,
}

type RawTuple = (
    HashMap<String, String>,
    Option<String>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    bool,
    Option<f64>,
    Option<f64>,
    Vec<String>,
);

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
        let raws: Vec<RawTuple> = self
            .with_connection(self.call_timeout(), |mut c| async move {
                let mut pipe = redis::pipe();
                for id in ids {
                    add_reads(&mut pipe, &keys, id);
                }
                Ok(pipe.query_async(&mut c).await?)
            })
            .await?;
        let now = storage::now_ms() as f64;
        let registry = self.registry();
        Ok(ids
            .iter()
            .zip(raws)
            .map(|(id, t)| {
                let raw = Raw {
                    meta: t.0,
                    data: t.1,
                    delayed: t.2,
                    retrying: t.3,
                    apalis_scheduled: t.4,
                    dead: t.5,
                    dead_at: t.6,
                    finished: t.7,
                    errors: t.8,
                };
                job_info(id, raw, now).map(|mut info| {
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
            let k = &keys.apalis;
            let now = storage::now_ms();
            #[allow(clippy::type_complexity)]
            let (
                delayed,
                due,
                retrying,
                due_retries,
                parked,
                active,
                done,
                finished,
                dead,
                dead_at,
                workers,
            ): (
                u64,
                u64,
                u64,
                u64,
                u64,
                u64,
                u64,
                u64,
                u64,
                u64,
                Vec<String>,
            ) = redis::pipe()
                .zcard(&keys.delayed)
                .zcount(&keys.delayed, "-inf", now)
                .zcard(&keys.retrying)
                .zcount(&keys.retrying, "-inf", now)
                .zcard(k.scheduled_jobs_set())
                .llen(k.active_jobs_list())
                .scard(k.done_jobs_set())
                .zcard(&keys.finished)
                .scard(k.dead_jobs_set())
                .zcard(&keys.dead_at)
                .zrange(k.workers_set(), 0, 999)
                .query_async(&mut c)
                .await?;
            let running = running_ids(&mut c, &keys, &workers).await?.len() as u64;
            Ok(QueueStats {
                scheduled: delayed.saturating_sub(due),
                // Due jobs held back while apalis' active list is full (or paused) are pending.
                pending: active + due + due_retries,
                running,
                retrying: retrying.saturating_sub(due_retries) + parked,
                done: done + finished,
                dead: dead + dead_at,
            })
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
                page_ids(&mut c, &keys, state, cursor_ref, limit).await
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

    /// Ids of up to [`crate::queue::MAX_BULK`] jobs in `state` (for bulk retry/delete).
    pub async fn ids_in(&self, state: JobStatus) -> Result<Vec<String>, JobQueueError> {
        let keys = self.keys().clone();
        let page = self
            .with_connection(self.call_timeout(), |mut c| async move {
                page_ids(&mut c, &keys, state, None, crate::queue::MAX_BULK).await
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
        let now_minute = storage::now_ms() / 60_000;
        let range: Vec<u64> = (now_minute + 1 - minutes..=now_minute).collect();
        let keys = self.keys().clone();
        let range_ref = &range;
        let counts: Vec<HashMap<String, u64>> = self
            .with_connection(self.call_timeout(), |mut c| async move {
                let mut pipe = redis::pipe();
                for m in range_ref {
                    pipe.hgetall(keys.history_of(*m));
                }
                Ok(pipe.query_async(&mut c).await?)
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

fn add_reads(pipe: &mut redis::Pipeline, keys: &Keys, id: &str) {
    let k = &keys.apalis;
    pipe.hgetall(keys.meta_of(id))
        .hget(k.job_data_hash(), id)
        .zscore(&keys.delayed, id)
        .zscore(&keys.retrying, id)
        .zscore(k.scheduled_jobs_set(), id)
        .sismember(k.dead_jobs_set(), id)
        .zscore(&keys.dead_at, id)
        .zscore(&keys.finished, id)
        .lrange(keys.errors_of(id), 0, storage::ERRORS_KEPT - 1);
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

/// (id, score) of the next page of `state`.
async fn page_ids(
    c: &mut ConnectionManager,
    keys: &Keys,
    state: JobStatus,
    cursor: Option<&Cursor>,
    limit: usize,
) -> Result<Vec<(String, f64)>, JobQueueError> {
    let now = storage::now_ms().to_string();
    let after_now = format!("({now}");
    let upcoming = (after_now.as_str(), "+inf");
    let due = ("-inf", now.as_str());
    match state {
        JobStatus::Scheduled => {
            storage::list_page(c, &keys.delayed, upcoming, false, cursor, limit).await
        }
        JobStatus::Retrying => {
            storage::list_page(c, &keys.retrying, upcoming, false, cursor, limit).await
        }
        JobStatus::Done => {
            storage::list_page(c, &keys.finished, ("-inf", "+inf"), true, cursor, limit).await
        }
        JobStatus::Dead => dead_page(c, keys, cursor, limit).await,
        JobStatus::Pending => {
            let mut all = storage::list_page(c, &keys.delayed, due, false, cursor, limit).await?;
            all.extend(storage::list_page(c, &keys.retrying, due, false, cursor, limit).await?);
            let active: Vec<String> = redis::cmd("LRANGE")
                .arg(keys.apalis.active_jobs_list())
                .arg(0)
                .arg(-1)
                .query_async(c)
                .await?;
            all.extend(scored_by(c, keys, active, "next_run_ms", 1.0).await?);
            Ok(merge_page(all, cursor, limit, false))
        }
        JobStatus::Running => {
            let workers: Vec<String> = redis::cmd("ZRANGE")
                .arg(keys.apalis.workers_set())
                .arg(0)
                .arg(999)
                .query_async(c)
                .await?;
            let ids = running_ids(c, keys, &workers).await?;
            let scored = scored_by(c, keys, ids, "next_run_ms", 1.0).await?;
            Ok(merge_page(scored, cursor, limit, false))
        }
    }
}

/// Dead jobs newest first: those apalis just added to its set (not yet stamped into `dead_at`,
/// at most a second) come first, then `dead_at`.
async fn dead_page(
    c: &mut ConnectionManager,
    keys: &Keys,
    cursor: Option<&Cursor>,
    limit: usize,
) -> Result<Vec<(String, f64)>, JobQueueError> {
    let mut page = Vec::new();
    if cursor.is_none() {
        let fresh: Vec<String> = redis::cmd("SRANDMEMBER")
            .arg(keys.apalis.dead_jobs_set())
            .arg(limit)
            .query_async(c)
            .await?;
        let now = storage::now_ms() as f64;
        page.extend(fresh.into_iter().map(|id| (id, now)));
    }
    if page.len() < limit {
        let rest = storage::list_page(
            c,
            &keys.dead_at,
            ("-inf", "+inf"),
            true,
            cursor,
            limit - page.len(),
        )
        .await?;
        page.extend(rest);
    }
    Ok(page)
}

/// Sort by (score, id), keep what comes after `cursor`, take `limit`.
fn merge_page(
    mut all: Vec<(String, f64)>,
    cursor: Option<&Cursor>,
    limit: usize,
    descending: bool,
) -> Vec<(String, f64)> {
    all.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    if descending {
        all.reverse();
    }
    all.dedup_by(|a, b| a.0 == b.0);
    all.into_iter()
        .filter(|(id, score)| {
            cursor.is_none_or(|c| (*score, id.as_str()) > (c.score, c.id.as_str()))
        })
        .take(limit)
        .collect()
}

/// Score ids by a numeric meta field (× `scale`), one pipeline.
async fn scored_by(
    c: &mut ConnectionManager,
    keys: &Keys,
    ids: Vec<String>,
    field: &str,
    scale: f64,
) -> Result<Vec<(String, f64)>, JobQueueError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.hget(keys.meta_of(id), field);
    }
    let values: Vec<Option<f64>> = pipe.query_async(c).await?;
    Ok(ids
        .into_iter()
        .zip(values)
        .map(|(id, v)| (id, v.unwrap_or(0.0) * scale))
        .collect())
}

/// Every job some worker holds now.
async fn running_ids(
    c: &mut ConnectionManager,
    keys: &Keys,
    workers: &[String],
) -> Result<Vec<String>, JobQueueError> {
    if workers.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for w in workers {
        pipe.smembers(format!("{}:{w}", keys.apalis.inflight_jobs_set()));
    }
    let sets: Vec<Vec<String>> = pipe.query_async(c).await?;
    Ok(sets.into_iter().flatten().collect())
}

/// The state a job is in, from where its id is found.
fn status_of(raw: &Raw, now: f64) -> JobStatus {
    let failures = raw.meta.get("failures").is_some_and(|f| f != "0");
    match raw.meta.get("status").map(String::as_str) {
        _ if raw.dead || raw.dead_at.is_some() => JobStatus::Dead,
        _ if raw.delayed.is_some_and(|due| due > now) => JobStatus::Scheduled,
        _ if raw.retrying.is_some_and(|due| due > now) || raw.apalis_scheduled.is_some() => {
            JobStatus::Retrying
        }
        _ if raw.delayed.is_some() || raw.retrying.is_some() => JobStatus::Pending,
        Some("Running") => JobStatus::Running,
        _ if raw.finished.is_some() => JobStatus::Done,
        Some("Done") => JobStatus::Done,
        Some("Killed") => JobStatus::Dead,
        Some("Failed") if failures => JobStatus::Retrying,
        _ => JobStatus::Pending,
    }
}

/// Map what was read to a [`JobInfo`]; `None` when the job does not exist.
fn job_info(id: &str, raw: Raw, now: f64) -> Option<JobInfo> {
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
        _ => None,
    };
    let timeout_ms = num("timeout_ms");
    Some(JobInfo {
        job_id: id.to_owned(),
        job_type,
        payload: envelope.map(JobEnvelope::into_payload).unwrap_or_default(),
        status,
        attempts: failures + ran_now,
        max_retry: num("max_retry") as u32,
        timeout_seconds: (timeout_ms > 0).then(|| timeout_ms as f64 / 1000.0),
        run_at: ms_to_time(num("run_at_ms")),
        created_at: Some(num("created_ms")).filter(|&m| m > 0).map(ms_to_time),
        started_at: seconds_ms(num("locked_at")).map(ms_to_time),
        finished_at: finished_ms.map(ms_to_time),
        last_error: raw.meta.get("last_error").cloned(),
        errors: raw.errors.iter().filter_map(|e| failure(e)).collect(),
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

    #[test]
    fn merge_page_is_ordered_and_skips_up_to_the_cursor() {
        let all = vec![("b".into(), 2.0), ("a".into(), 2.0), ("c".into(), 1.0)];
        let cursor = Cursor {
            score: 2.0,
            id: "a".into(),
        };
        let page = merge_page(all.clone(), None, 10, false);
        assert_eq!(
            page.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
            ["c", "a", "b"]
        );
        let page = merge_page(all, Some(&cursor), 10, false);
        assert_eq!(page.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), ["b"]);
    }
}
