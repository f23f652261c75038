//! The store's reads for the inspector: one job's keys in one pipeline, counts from raw key
//! sizes (apalis-redis' own stats are broken: workaround 7), listings by state, history.

use super::{list_page, list_parked, now_ms, Cursor, Keys, ERRORS_KEPT, PARKED_KEYS_READ};
use crate::error::JobQueueError;
use crate::types::{JobStatus, QueueStats};
use redis::aio::ConnectionManager;
use std::collections::HashMap;

/// What Redis holds about one job, read in one pipeline.
#[derive(Debug, Default)]
pub struct Raw {
    pub meta: HashMap<String, String>,
    pub data: Option<String>,
    pub delayed: Option<f64>,
    pub retrying: Option<f64>,
    pub apalis_scheduled: Option<f64>,
    pub dead: bool,
    pub dead_at: Option<f64>,
    pub finished: Option<f64>,
    pub errors: Vec<String>,
    pub cancelled: Option<f64>,
    /// Its score in `ready` (due, waiting for a worker or a limit).
    pub ready: Option<f64>,
    /// Its score in its limit key's `parked` set (due, held back by the key's limit).
    pub parked: Option<f64>,
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
    Option<f64>,
    Option<f64>,
);

/// What Redis holds about each of `ids`, in one round trip.
pub async fn read_jobs(
    c: &mut ConnectionManager,
    keys: &Keys,
    ids: &[String],
) -> Result<Vec<Raw>, JobQueueError> {
    let mut pipe = redis::pipe();
    for id in ids {
        add_reads(&mut pipe, keys, id);
    }
    let raws: Vec<RawTuple> = pipe.query_async(c).await?;
    let mut raws: Vec<Raw> = raws
        .into_iter()
        .map(|t| {
            let mut meta = expand_done_layout(t.0);
            Raw {
                // a done job's short JSON lives in its meta (finish.lua)
                data: t.1.or_else(|| meta.remove("data")),
                meta,
                delayed: t.2,
                retrying: t.3,
                apalis_scheduled: t.4,
                dead: t.5,
                dead_at: t.6,
                finished: t.7,
                errors: t.8,
                cancelled: t.9,
                ready: t.10,
                parked: None,
            }
        })
        .collect();
    // A job with a limit key found nowhere else may be parked by it: a second round trip, only
    // for those.
    let keyed: Vec<(usize, String)> = raws
        .iter()
        .enumerate()
        .filter(|(_, r)| r.ready.is_none() && r.delayed.is_none() && r.retrying.is_none())
        .filter_map(|(i, r)| r.meta.get("limit_key").map(|k| (i, k.clone())))
        .collect();
    if !keyed.is_empty() {
        let mut pipe = redis::pipe();
        for (i, key) in &keyed {
            pipe.zscore(format!("{}:{key}:parked", keys.limit_key), &ids[*i]);
        }
        let scores: Vec<Option<f64>> = pipe.query_async(c).await?;
        for ((i, _), score) in keyed.into_iter().zip(scores) {
            raws[i].parked = score;
        }
    }
    Ok(raws)
}

/// A done job's meta as `finish.lua` (`slim_done`) rewrites it — short names, times as offsets
/// from `r` — in the names every other state and older versions use. Other metas pass unchanged.
fn expand_done_layout(mut meta: HashMap<String, String>) -> HashMap<String, String> {
    let Some(run_at) = meta.get("r").and_then(|v| v.parse::<i64>().ok()) else {
        return meta;
    };
    let mut offset = |short: &str| meta.remove(short).and_then(|v| v.parse::<i64>().ok());
    let created = run_at + offset("c").unwrap_or(0);
    let started = offset("s").map(|s| run_at + s);
    meta.remove("r");
    meta.insert("run_at_ms".into(), run_at.to_string());
    meta.insert("created_ms".into(), created.to_string());
    if let Some(started) = started {
        meta.insert("started_ms".into(), started.to_string());
    }
    for (short, long) in [("o", "result"), ("d", "data")] {
        if let Some(v) = meta.remove(short) {
            meta.insert(long.into(), v);
        }
    }
    meta
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
        .lrange(keys.errors_of(id), 0, ERRORS_KEPT - 1)
        .zscore(&keys.cancelled, id)
        .zscore(&keys.ready, id);
}

/// Counts by state from raw key sizes.
pub async fn counts(c: &mut ConnectionManager, keys: &Keys) -> Result<QueueStats, JobQueueError> {
    let k = &keys.apalis;
    let now = now_ms();
    // 14 replies: more than redis-rs' tuples take, so read them as values.
    let mut replies: Vec<redis::Value> = redis::pipe()
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
        .zcard(&keys.cancelled)
        .zcard(&keys.ready)
        .zrange(k.workers_set(), 0, 999)
        .zrange(&keys.parked_keys, 0, PARKED_KEYS_READ as isize - 1)
        .query_async(c)
        .await?;
    let parked_keys: Vec<String> =
        redis::from_redis_value(replies.pop().unwrap_or(redis::Value::Nil))
            .map_err(redis::RedisError::from)?;
    let workers: Vec<String> = redis::from_redis_value(replies.pop().unwrap_or(redis::Value::Nil))
        .map_err(redis::RedisError::from)?;
    let sizes = replies
        .into_iter()
        .map(redis::from_redis_value::<u64>)
        .collect::<Result<Vec<u64>, _>>()
        .map_err(redis::RedisError::from)?;
    let [delayed, due, retrying, due_retries, parked, active, done, finished, dead, dead_at, cancelled, ready] =
        sizes[..]
    else {
        return Err(JobQueueError::Internal(format!(
            "counts: {} replies, expected 12",
            sizes.len()
        )));
    };
    let running = running_ids(c, keys, &workers).await?.len() as u64;
    // Jobs held back by their limit key wait in one parked set per key.
    let held_by_key: u64 = if parked_keys.is_empty() {
        0
    } else {
        let mut pipe = redis::pipe();
        for key in &parked_keys {
            pipe.zcard(format!("{}:{key}:parked", keys.limit_key));
        }
        pipe.query_async::<Vec<u64>>(c).await?.into_iter().sum()
    };
    Ok(QueueStats {
        scheduled: delayed.saturating_sub(due),
        // Due jobs held back while apalis' active list is full (or paused) are pending.
        pending: active + ready + due + due_retries + held_by_key,
        running,
        retrying: retrying.saturating_sub(due_retries) + parked,
        done: done + finished,
        dead: dead + dead_at,
        cancelled,
    })
}

/// How many done jobs are recorded with their time (`finished`).
pub async fn finished_count(c: &mut ConnectionManager, keys: &Keys) -> Result<u64, JobQueueError> {
    Ok(redis::cmd("ZCARD")
        .arg(&keys.finished)
        .query_async(c)
        .await?)
}

/// The per-minute counters (`processed`, `failed`) of each minute in `minutes`.
pub async fn history(
    c: &mut ConnectionManager,
    keys: &Keys,
    minutes: &[u64],
) -> Result<Vec<HashMap<String, u64>>, JobQueueError> {
    let mut pipe = redis::pipe();
    for m in minutes {
        pipe.hgetall(keys.history_of(*m));
    }
    Ok(pipe.query_async(c).await?)
}

/// (id, score) of the next page of `state`.
pub async fn page_ids(
    c: &mut ConnectionManager,
    keys: &Keys,
    state: JobStatus,
    cursor: Option<&Cursor>,
    limit: usize,
) -> Result<Vec<(String, f64)>, JobQueueError> {
    let now = now_ms().to_string();
    let after_now = format!("({now}");
    let upcoming = (after_now.as_str(), "+inf");
    let due = ("-inf", now.as_str());
    match state {
        JobStatus::Scheduled => list_page(c, &keys.delayed, upcoming, false, cursor, limit).await,
        JobStatus::Retrying => list_page(c, &keys.retrying, upcoming, false, cursor, limit).await,
        JobStatus::Done => {
            list_page(c, &keys.finished, ("-inf", "+inf"), true, cursor, limit).await
        }
        JobStatus::Dead => dead_page(c, keys, cursor, limit).await,
        JobStatus::Cancelled => {
            list_page(c, &keys.cancelled, ("-inf", "+inf"), true, cursor, limit).await
        }
        JobStatus::Pending => {
            let mut all = list_page(c, &keys.delayed, due, false, cursor, limit).await?;
            all.extend(list_page(c, &keys.retrying, due, false, cursor, limit).await?);
            all.extend(ready_page(c, keys, cursor, limit).await?);
            // held back by their limit key (counted as pending too)
            all.extend(list_parked(c, keys, cursor, limit).await?);
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

/// Width of a priority band of `ready` (see `fetch.lua`).
const BAND: f64 = 4_398_046_511_104.0;

/// Due jobs of `ready`, scored by due time like the other pending ones (one page per priority
/// band that has jobs, so the listing's cursor stays a due time).
async fn ready_page(
    c: &mut ConnectionManager,
    keys: &Keys,
    cursor: Option<&Cursor>,
    limit: usize,
) -> Result<Vec<(String, f64)>, JobQueueError> {
    let mut pipe = redis::pipe();
    for band in 0..10u8 {
        let lo = f64::from(band) * BAND;
        pipe.zcount(&keys.ready, lo, format!("({}", lo + BAND));
    }
    let sizes: Vec<u64> = pipe.query_async(c).await?;
    let mut out = Vec::new();
    for (band, size) in sizes.into_iter().enumerate() {
        if size == 0 {
            continue;
        }
        let lo = band as f64 * BAND;
        let banded = cursor.map(|k| Cursor {
            score: k.score + lo,
            id: k.id.clone(),
        });
        let range = (format!("{lo}"), format!("({}", lo + BAND));
        let page = list_page(
            c,
            &keys.ready,
            (&range.0, &range.1),
            false,
            banded.as_ref(),
            limit,
        )
        .await?;
        out.extend(page.into_iter().map(|(id, score)| (id, score - lo)));
    }
    Ok(out)
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
        let now = now_ms() as f64;
        page.extend(fresh.into_iter().map(|id| (id, now)));
    }
    if page.len() < limit {
        let rest = list_page(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_done_layout_reads_as_the_long_one() {
        let short: HashMap<String, String> = [
            ("r", "1000"),
            ("c", "-5"),
            ("s", "20"),
            ("o", "{}"),
            ("d", "{\"type\":\"x\"}"),
            ("limit_key", "k"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
        let long = expand_done_layout(short);
        let get = |k: &str| long.get(k).map(String::as_str);
        assert_eq!(get("run_at_ms"), Some("1000"));
        assert_eq!(get("created_ms"), Some("995"));
        assert_eq!(get("started_ms"), Some("1020"));
        assert_eq!(get("result"), Some("{}"));
        assert_eq!(get("data"), Some("{\"type\":\"x\"}"));
        assert_eq!(get("limit_key"), Some("k"));
        assert_eq!(long.len(), 6);
        // created == run_at is stored as no `c`; a pending job's meta is left alone
        let equal = expand_done_layout([("r".to_owned(), "7".to_owned())].into());
        assert_eq!(equal.get("created_ms").map(String::as_str), Some("7"));
        let pending: HashMap<String, String> = [("run_at_ms".to_owned(), "7".to_owned())].into();
        assert_eq!(expand_done_layout(pending.clone()), pending);
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
