//! apalis-redis setup and every workaround for its known bugs, in one place.
//!
//! Layout: we keep apalis-redis' own keys and hash formats (`{q}:data`, `{q}:meta:<id>`,
//! `{q}:active`, `{q}:inflight:<worker>`, `{q}:done`, `{q}:dead`, `{q}:workers`) so its worker,
//! acks, leases and heartbeats run unchanged, and add two keys of our own:
//! `{q}:delayed` (zset, due time in **milliseconds**) and `{q}:finished` (zset, when a job was seen
//! done, for trimming). Workarounds (apalis-redis 1.0.0; upstream: github.com/apalis-dev/apalis-redis):
//!
//! 1. **Whole-second `run_at`, jobs fire up to ~1 s early** (`batch_push.lua`/`fetch_next.lua` use
//!    Unix seconds): we enqueue with our own script into `{q}:delayed` scored in ms and promote
//!    due jobs ourselves (`promote.lua`); the handler also waits if it ever sees a job early.
//! 2. **`fetch_next.lua` unpacks every due job at once** ("too many results to unpack" at ~8,000
//!    due jobs, the worker dies on every restart): our jobs never enter apalis' `{q}:scheduled`;
//!    `promote.lua` moves due jobs in chunks of [`PROMOTE_CHUNK`].
//! 3. **`max_attempts` ignored, 25 retries hard-coded, linear 1 s backoff** (`handle_results.lua`):
//!    we count failures in the job's meta, choose the next run time (configurable backoff), park
//!    retries in `{q}:delayed` and reset apalis' `attempts`, and end the last attempt with an
//!    `AbortError` so apalis moves the job to `{q}:dead`.
//! 4. **A Redis error ends the worker for good and the process exits 0** (apalis-redis#76): see
//!    `supervisor.rs`, which restarts it with backoff. Connections get explicit timeouts
//!    ([`connection_config`]).
//! 5. **Orphans of a SIGKILLed worker wait 300 s** and **a restarted name cannot register while its
//!    old heartbeat is fresh** (apalis#504): we requeue our own name's in-flight jobs before every
//!    start and reap workers whose heartbeat is older than [`ORPHAN_AFTER`] (`requeue_worker.lua`).
//! 6. **Done jobs are kept forever** (no retention): `trim_done.lua` deletes them after
//!    `jobqueue.done_retention`. Dead jobs stay until deleted.
//! 7. **The library's stats/list queries are broken**: stats are raw ZCARD/LLEN/SCARD (`queue.rs`).
//! 8. **Each fetched job is removed from `{q}:active` with LREM** (`acquire_leases.lua`), O(list
//!    length): `promote.lua` keeps at most [`MAX_ACTIVE`] jobs there; the rest wait in `{q}:delayed`.

use crate::error::JobQueueError;
use apalis_redis::{Config, ConnectionManager, RedisStorage};
use cacheserver_config::SingleRedisSettings;
use redis::aio::ConnectionManagerConfig;
use redis::Script;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Jobs moved per Lua call: far below Lua's unpack limit (~8,000).
pub const PROMOTE_CHUNK: usize = 1_000;
/// Most jobs waiting in apalis' `{q}:active` list: apalis removes each fetched job with an
/// O(length) LREM, so a long list makes every job slower (workaround 8).
pub const MAX_ACTIVE: usize = 1_000;
/// How often a worker writes its heartbeat (apalis' default is 30 s).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A worker whose heartbeat is older than this is dead: its in-flight jobs are re-queued.
pub const ORPHAN_AFTER: Duration = Duration::from_secs(5);

static ENQUEUE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/enqueue.lua")));
static PROMOTE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/promote.lua")));
static REQUEUE_WORKER: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/requeue_worker.lua")));
static TRIM_DONE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/trim_done.lua")));
static RETRY_DEAD: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/retry_dead.lua")));
static DELETE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/delete.lua")));

/// Every Redis key of one queue.
#[derive(Debug, Clone)]
pub struct Keys {
    pub queue: String,
    pub apalis: Config,
    pub delayed: String,
    pub finished: String,
    pub meta: String,
}

impl Keys {
    pub fn new(queue: &str) -> Self {
        let apalis = apalis_config(queue);
        Self {
            queue: queue.to_owned(),
            delayed: format!("{queue}:delayed"),
            finished: format!("{queue}:finished"),
            meta: apalis.job_meta_hash(),
            apalis,
        }
    }

    pub fn meta_of(&self, id: &str) -> String {
        format!("{}:{id}", self.meta)
    }
}

/// apalis-redis config: short heartbeats (workaround 5), results persisted (acks drive
/// done/dead), no pub/sub events (nobody listens; they cost a PUBLISH per job).
pub fn apalis_config(queue: &str) -> Config {
    Config::default()
        .queue(queue)
        .heartbeat_interval(HEARTBEAT_INTERVAL)
        .missed_heartbeats((ORPHAN_AFTER.as_secs() / HEARTBEAT_INTERVAL.as_secs().max(1)) as usize)
        .emit_events(false)
        .persist_results(true)
        .lock_tasks(true)
}

/// The apalis storage for the worker, on its own connection.
pub fn apalis_storage<Args>(
    conn: ConnectionManager,
    queue: &str,
    batch: usize,
) -> RedisStorage<Args> {
    let config = apalis_config(queue).batch_size(batch.max(1));
    RedisStorage::new(conn).with_config(config)
}

/// Connection settings from `cache_server.redis.jobqueue`. Explicit response timeouts keep a
/// stalled Redis from hanging calls (workaround 4); `max_retries` bounds reconnect attempts per call.
pub fn connection_config(redis: &SingleRedisSettings) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(redis.dial_timeout))
        .set_response_timeout(Some(redis.read_timeout.max(redis.write_timeout)))
        .set_number_of_retries(redis.max_retries.max(0) as usize)
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(Duration::from_millis(500))
}

/// A connection manager that connects on first use (never blocks startup).
pub fn lazy_connection(redis: &SingleRedisSettings) -> Result<ConnectionManager, JobQueueError> {
    let client = crate::connection::client(redis)?;
    ConnectionManager::new_lazy_with_config(client, connection_config(redis))
        .map_err(|e| JobQueueError::Config(format!("cannot create Redis client: {e}")))
}

/// A connected manager, or an error after `dial_timeout` (the supervisor uses it).
pub async fn connect(redis: &SingleRedisSettings) -> Result<ConnectionManager, JobQueueError> {
    let mut conn = lazy_connection(redis)?;
    let cmd = redis::cmd("PING");
    let ping = cmd.query_async::<String>(&mut conn);
    tokio::time::timeout(redis.dial_timeout, ping)
        .await
        .map_err(|_| JobQueueError::Unavailable("connect timed out".into()))??;
    Ok(conn)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One job for [`enqueue`]: id, JSON, due time, retry budget.
pub struct StoredJob<'a> {
    pub id: &'a str,
    pub json: &'a str,
    pub due_ms: u64,
    pub max_retry: u32,
}

/// Store jobs in one script call (workaround 1). Returns how many were new.
pub async fn enqueue(
    conn: &mut ConnectionManager,
    keys: &Keys,
    jobs: &[StoredJob<'_>],
) -> Result<u32, JobQueueError> {
    let mut call = ENQUEUE.prepare_invoke();
    call.key(keys.apalis.job_data_hash())
        .key(&keys.meta)
        .key(&keys.delayed);
    let now = now_ms();
    for job in jobs {
        call.arg(job.id)
            .arg(job.json)
            .arg(job.due_ms)
            .arg(job.max_retry)
            .arg(now);
    }
    Ok(call.invoke_async(conn).await?)
}

/// One promotion step (workarounds 1–3). Returns (due jobs moved, retries parked).
pub async fn promote_step(
    conn: &mut ConnectionManager,
    keys: &Keys,
) -> Result<(usize, usize), JobQueueError> {
    let c = &keys.apalis;
    Ok(PROMOTE
        .key(&keys.delayed)
        .key(c.active_jobs_list())
        .key(c.signal_list())
        .key(c.scheduled_jobs_set())
        .key(&keys.meta)
        .arg(now_ms())
        .arg(PROMOTE_CHUNK)
        .arg(MAX_ACTIVE)
        .invoke_async(conn)
        .await?)
}

/// Re-queue the in-flight jobs of `worker` (or of every worker whose heartbeat is older than
/// [`ORPHAN_AFTER`] when `None`) and unregister it (workaround 5). Returns jobs re-queued.
pub async fn requeue_worker(
    conn: &mut ConnectionManager,
    keys: &Keys,
    worker: Option<&str>,
) -> Result<u32, JobQueueError> {
    let c = &keys.apalis;
    let dead_before = (now_ms() / 1000).saturating_sub(ORPHAN_AFTER.as_secs());
    Ok(REQUEUE_WORKER
        .key(c.workers_set())
        .key(c.active_jobs_list())
        .key(c.signal_list())
        .key(c.inflight_jobs_set())
        .key(&keys.meta)
        .key(format!("{}:metadata", c.workers_set()))
        .key(c.job_data_hash())
        .arg(dead_before)
        .arg(worker.unwrap_or(""))
        .invoke_async(conn)
        .await?)
}

/// Keep our heartbeat fresh even while every slot is busy (apalis beats only between polls).
/// `XX`: never re-register a worker that was reaped.
pub async fn heartbeat(
    conn: &mut ConnectionManager,
    keys: &Keys,
    worker: &str,
) -> Result<(), JobQueueError> {
    redis::cmd("ZADD")
        .arg(keys.apalis.workers_set())
        .arg("XX")
        .arg(now_ms() / 1000)
        .arg(worker)
        .query_async::<()>(conn)
        .await?;
    Ok(())
}

/// Stamp and trim finished jobs (workaround 6). Returns (stamped, deleted).
pub async fn trim_done(
    conn: &mut ConnectionManager,
    keys: &Keys,
    retention: Duration,
) -> Result<(usize, usize), JobQueueError> {
    Ok(TRIM_DONE
        .key(keys.apalis.done_jobs_set())
        .key(&keys.finished)
        .key(keys.apalis.job_data_hash())
        .key(&keys.meta)
        .arg(now_ms())
        .arg(retention.as_millis() as u64)
        .arg(PROMOTE_CHUNK)
        .invoke_async(conn)
        .await?)
}

/// Dead → pending. 1 revived, 0 unknown, -1 not dead.
pub async fn retry_dead(
    conn: &mut ConnectionManager,
    keys: &Keys,
    id: &str,
) -> Result<i64, JobQueueError> {
    let c = &keys.apalis;
    Ok(RETRY_DEAD
        .key(c.dead_jobs_set())
        .key(c.active_jobs_list())
        .key(c.signal_list())
        .key(&keys.meta)
        .arg(id)
        .arg(now_ms())
        .invoke_async(conn)
        .await?)
}

pub async fn delete(
    conn: &mut ConnectionManager,
    keys: &Keys,
    id: &str,
) -> Result<bool, JobQueueError> {
    let c = &keys.apalis;
    let existed: i64 = DELETE
        .key(c.job_data_hash())
        .key(&keys.meta)
        .key(&keys.delayed)
        .key(c.scheduled_jobs_set())
        .key(c.active_jobs_list())
        .key(c.done_jobs_set())
        .key(c.dead_jobs_set())
        .key(&keys.finished)
        .arg(id)
        .invoke_async(conn)
        .await?;
    Ok(existed == 1)
}

/// Record a failed run in the job's meta: failures, last error and when it may run next.
pub async fn record_failure(
    conn: &mut ConnectionManager,
    keys: &Keys,
    id: &str,
    failures: u32,
    error: &str,
    next_run_ms: u64,
) -> Result<(), JobQueueError> {
    redis::cmd("HSET")
        .arg(keys.meta_of(id))
        .arg("failures")
        .arg(failures)
        .arg("last_error")
        .arg(error)
        .arg("next_run_ms")
        .arg(next_run_ms)
        .query_async::<()>(conn)
        .await?;
    Ok(())
}
