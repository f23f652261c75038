//! Schedules' keys and scripts (part of the store: the only code that knows them).
//!
//! ## Keys (global: schedules name the queue of their job, they belong to none)
//! - `jobqueue:schedules` (hash name → definition JSON, [`cacheserver_config::ScheduleSettings`])
//! - `jobqueue:schedules:next` (zset name → next tick in ms; a paused schedule is absent)
//! - `jobqueue:schedules:claims` (zset `<tick ms>:<name>` → when claimed, ms): ticks claimed
//!   whose job is not confirmed stored yet
//! - `jobqueue:schedules:state:<name>` (hash: `last_run_ms`, `last_job_id`, `paused`, `skipped`,
//!   `timing` = `cron|zone` the next tick was computed with, `source` = `config` | `api`)
//!
//! An ACL user of the job queue needs `~jobqueue:schedules*`.

use crate::error::JobQueueError;
use redis::aio::ConnectionManager;
use redis::Script;
use std::collections::HashMap;
use std::sync::LazyLock;

const DEFINITIONS: &str = "jobqueue:schedules";
const NEXT: &str = "jobqueue:schedules:next";
const CLAIMS: &str = "jobqueue:schedules:claims";

fn state_key(name: &str) -> String {
    format!("jobqueue:schedules:state:{name}")
}

static SAVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/schedule_save.lua")));
static CLAIM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/schedule_claim.lua")));
static CONFIRM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/schedule_confirm.lua")));

/// How [`save`] treats an existing definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveMode {
    /// Only when absent (`POST`).
    Create,
    /// Only when present (`PUT`).
    Replace,
    /// Either (config at worker start).
    Apply,
}

/// One stored schedule as read back: its definition JSON and state.
#[derive(Debug, Clone, Default)]
pub struct StoredSchedule {
    pub json: String,
    /// `None` while paused.
    pub next_ms: Option<u64>,
    pub state: HashMap<String, String>,
}

/// Save a definition (`schedule_save.lua`). `false`: refused by `mode`.
#[allow(clippy::too_many_arguments)]
pub async fn save(
    conn: &mut ConnectionManager,
    name: &str,
    json: &str,
    timing: &str,
    first_tick_ms: u64,
    mode: SaveMode,
    source: &str,
) -> Result<bool, JobQueueError> {
    let mode = match mode {
        SaveMode::Create => "create",
        SaveMode::Replace => "replace",
        SaveMode::Apply => "apply",
    };
    let saved: i64 = SAVE
        .key(DEFINITIONS)
        .key(NEXT)
        .key(state_key(name))
        .arg(name)
        .arg(json)
        .arg(timing)
        .arg(first_tick_ms)
        .arg(mode)
        .arg(source)
        .invoke_async(conn)
        .await?;
    Ok(saved == 1)
}

/// Every schedule (one round trip for the names, one pipeline for the rest).
pub async fn list(
    conn: &mut ConnectionManager,
) -> Result<Vec<(String, StoredSchedule)>, JobQueueError> {
    let defs: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(DEFINITIONS)
        .query_async(conn)
        .await?;
    let mut names: Vec<String> = defs.keys().cloned().collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for chunk in names.chunks(500) {
        let mut pipe = redis::pipe();
        for name in chunk {
            pipe.zscore(NEXT, name).hgetall(state_key(name));
        }
        let rows: Vec<(Option<f64>, HashMap<String, String>)> = pipe.query_async(conn).await?;
        for (name, (next, state)) in chunk.iter().zip(rows) {
            let json = defs.get(name).cloned().unwrap_or_default();
            out.push((
                name.clone(),
                StoredSchedule {
                    json,
                    next_ms: next.map(|n| n as u64),
                    state,
                },
            ));
        }
    }
    Ok(out)
}

/// One schedule, `None` when unknown.
pub async fn get(
    conn: &mut ConnectionManager,
    name: &str,
) -> Result<Option<StoredSchedule>, JobQueueError> {
    let (json, next, state): (Option<String>, Option<f64>, HashMap<String, String>) = redis::pipe()
        .hget(DEFINITIONS, name)
        .zscore(NEXT, name)
        .hgetall(state_key(name))
        .query_async(conn)
        .await?;
    Ok(json.map(|json| StoredSchedule {
        json,
        next_ms: next.map(|n| n as u64),
        state,
    }))
}

/// Delete a schedule; `false` when unknown. Its unconfirmed claims are dropped by the
/// scheduler (a claim of a deleted schedule enqueues nothing).
pub async fn delete(conn: &mut ConnectionManager, name: &str) -> Result<bool, JobQueueError> {
    let (deleted,): (i64,) = redis::pipe()
        .atomic()
        .hdel(DEFINITIONS, name)
        .zrem(NEXT, name)
        .ignore()
        .del(state_key(name))
        .ignore()
        .query_async(conn)
        .await?;
    Ok(deleted == 1)
}

/// Pause: no tick is claimed until [`resume`]. `false` when unknown.
pub async fn pause(conn: &mut ConnectionManager, name: &str) -> Result<bool, JobQueueError> {
    let (exists,): (bool,) = redis::pipe()
        .atomic()
        .hexists(DEFINITIONS, name)
        .zrem(NEXT, name)
        .ignore()
        .hset(state_key(name), "paused", 1)
        .ignore()
        .query_async(conn)
        .await?;
    if !exists {
        let _: () = redis::cmd("DEL")
            .arg(state_key(name))
            .query_async(conn)
            .await?;
    }
    Ok(exists)
}

/// Resume with `first_tick_ms` (the first tick after now: ticks while paused are not run).
/// `false` when unknown.
pub async fn resume(
    conn: &mut ConnectionManager,
    name: &str,
    first_tick_ms: u64,
) -> Result<bool, JobQueueError> {
    let exists: bool = redis::cmd("HEXISTS")
        .arg(DEFINITIONS)
        .arg(name)
        .query_async(conn)
        .await?;
    if !exists {
        return Ok(false);
    }
    let _: () = redis::pipe()
        .atomic()
        .hset(state_key(name), "paused", 0)
        .ignore()
        .zadd(NEXT, name, first_tick_ms)
        .ignore()
        .query_async(conn)
        .await?;
    Ok(true)
}

/// What a scheduler pass must look at.
#[derive(Debug, Default)]
pub struct Due {
    /// Schedules whose next tick is at or before the horizon: (name, tick ms, definition JSON
    /// (`None`: deleted meanwhile), its last job id).
    pub ticks: Vec<DueTick>,
    /// Claims older than the recovery age: (tick ms, name, definition JSON if it still exists).
    pub stale_claims: Vec<(u64, String, Option<String>)>,
    /// The earliest next tick of any schedule (ms), for sleeping until it.
    pub earliest_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct DueTick {
    pub name: String,
    pub tick_ms: u64,
    pub json: Option<String>,
    pub last_job_id: Option<String>,
}

/// Ticks due by `horizon_ms` (at most `limit`) and claims made before `stale_before_ms`.
pub async fn due(
    conn: &mut ConnectionManager,
    horizon_ms: u64,
    stale_before_ms: u64,
    limit: usize,
) -> Result<Due, JobQueueError> {
    type Scored = Vec<(String, f64)>;
    let (ticks, claims, earliest): (Scored, Vec<String>, Scored) = redis::pipe()
        .cmd("ZRANGE")
        .arg(NEXT)
        .arg("-inf")
        .arg(horizon_ms)
        .arg("BYSCORE")
        .arg("LIMIT")
        .arg(0)
        .arg(limit)
        .arg("WITHSCORES")
        .cmd("ZRANGE")
        .arg(CLAIMS)
        .arg("-inf")
        .arg(stale_before_ms)
        .arg("BYSCORE")
        .arg("LIMIT")
        .arg(0)
        .arg(limit)
        .zrange_withscores(NEXT, 0, 0)
        .query_async(conn)
        .await?;
    let stale: Vec<(u64, String)> = claims
        .iter()
        .filter_map(|c| {
            let (tick, name) = c.split_once(':')?;
            Some((tick.parse().ok()?, name.to_owned()))
        })
        .collect();
    let mut due = Due {
        earliest_ms: earliest.first().map(|(_, s)| *s as u64),
        ..Due::default()
    };
    if ticks.is_empty() && stale.is_empty() {
        return Ok(due);
    }
    let mut pipe = redis::pipe();
    for (name, _) in &ticks {
        pipe.hget(DEFINITIONS, name)
            .hget(state_key(name), "last_job_id");
    }
    for (_, name) in &stale {
        pipe.hget(DEFINITIONS, name);
    }
    let flat: Vec<Option<String>> = pipe.query_async(conn).await?;
    let mut flat = flat.into_iter();
    for (name, tick) in ticks {
        let json = flat.next().flatten();
        let last_job_id = flat.next().flatten();
        due.ticks.push(DueTick {
            name,
            tick_ms: tick as u64,
            json,
            last_job_id,
        });
    }
    for (tick, name) in stale {
        let json = flat.next().flatten();
        due.stale_claims.push((tick, name, json));
    }
    Ok(due)
}

/// Claim a tick (`schedule_claim.lua`): move the next tick from `seen_ms` to `next_ms`;
/// `run_ms` is the tick whose job the winner enqueues (`None`: the tick is skipped).
pub async fn claim(
    conn: &mut ConnectionManager,
    name: &str,
    seen_ms: u64,
    next_ms: u64,
    run_ms: Option<u64>,
    now_ms: u64,
) -> Result<bool, JobQueueError> {
    let won: i64 = CLAIM
        .key(NEXT)
        .key(CLAIMS)
        .key(state_key(name))
        .arg(name)
        .arg(seen_ms)
        .arg(next_ms)
        .arg(run_ms.unwrap_or(0))
        .arg(now_ms)
        .invoke_async(conn)
        .await?;
    Ok(won == 1)
}

/// The job of a claimed tick (or of a trigger) is stored as `job_id` (`schedule_confirm.lua`).
pub async fn confirm(
    conn: &mut ConnectionManager,
    name: &str,
    tick_ms: u64,
    job_id: &str,
    exists: bool,
) -> Result<(), JobQueueError> {
    let _: i64 = CONFIRM
        .key(CLAIMS)
        .key(state_key(name))
        .arg(name)
        .arg(tick_ms)
        .arg(job_id)
        .arg(if exists { "1" } else { "0" })
        .invoke_async(conn)
        .await?;
    Ok(())
}
