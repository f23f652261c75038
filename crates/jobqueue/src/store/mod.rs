//! The store: the only code that knows a key name or a script. Every Redis key of a queue is
//! built by [`Keys`]; every script in `crates/jobqueue/lua/` has one function here; the client,
//! the inspector and the worker call these functions through a [`Store`] (connections in
//! `pool.rs`). apalis-redis' key layout is kept (see below); its runtime — `RedisStorage`,
//! registration, heartbeats — lives in the worker (`crates/worker/src/apalis.rs`), which names
//! each upstream cause.
//!
//! ## Keys (all under the queue's prefix: `{<queue>}:` — the hash tag keeps one queue's keys in
//! one slot — except the default queue's, which keep the untagged `<queue>:` of earlier
//! versions, e.g. `dm-jobqueue:`, so the jobs they stored still run)
//! apalis-redis' own (we keep its layout so its registration, heartbeats and orphan re-queueing
//! run unchanged): `data` (hash id → job JSON `{"type","payload"}`), `meta:<id>` (hash: apalis'
//! `status`, `attempts`, `locked_at`, `locked_by`, `done_at`… plus ours: `run_at_ms`,
//! `next_run_ms`, `created_ms`, `max_retry`, `failures`, `last_error`, `timeout_ms`, `job_type`,
//! `unique_key`), `active` (list: jobs handed back, taken first), `scheduled` (apalis' retry zset,
//! only from older versions), `inflight:<worker>` (set), `done` and `dead` (sets, only from older
//! versions), `workers` (zset of heartbeats), `workers:metadata:<worker>`.
//! Ours: `delayed` (zset, due time in **ms**), `retrying` (zset, next attempt in ms), `finished`
//! (zset: done jobs by when done), `dead_at` (zset: dead jobs by when dead),
//! `errors:<id>` (list: the last 10 failures as JSON), `unique:<key>` (string: the job id holding a
//! unique key; with `unique_for_seconds` it expires), `paused` (string: set while paused),
//! `history:<minute>` (hash `processed`, `failed`; expires after 24 h), `wake` (list: at most one
//! marker, pushed when a job becomes due sooner than a waiting worker knows; BLPOPed),
//! `cancelled` (zset: cancelled jobs by when cancelled; trimmed like done ones), `cancel:<worker>`
//! (list: ids of jobs that worker runs whose cancel was asked for; the worker BLPOPs it),
//! `events` (stream of job state changes — `registered`, `started`, `progress`, `retrying`,
//! `done`, `dead`, `cancelled` — with `job_id`, `state`, `type`, `attempt`, `time` (ms) and, for
//! progress, `progress` (JSON); capped near [`Keys::events_max_len`] entries, none written when
//! it is 0; what `GET /api/jobs/{id}?wait=` waits on and the SSE routes stream).
//! Priorities and limits: `ready` (zset of due jobs, score `(10 - priority) * 2^42 + due_ms`:
//! higher priority first, FIFO within one; jobs due at enqueue go there at once, later ones when
//! `fetch.lua` finds them due), `started` (zset: the starts of the rate window,
//! scored by Redis' `TIME` in ms), `limits` (hash `concurrency`, `rate_max`, `rate_per_ms`,
//! written by workers from `jobqueue.queues`, read by `fetch.lua` and `GET /api/queues`). The
//! concurrency slots in use are the jobs in the registered workers' `inflight:<worker>` sets.
//! Meta `priority` (absent: 5) and `started_ms` (the start in ms: Redis' clock in a limited
//! queue, the worker's otherwise; jobs started by older versions have only `locked_at`, seconds).
//! Per limit key (meta `limit_key`; `limits` fields `key_concurrency`, `key_rate_max`,
//! `key_rate_per_ms`): `key:<k>:running` (set of ids holding the key's slots), `key:<k>:started`
//! (zset: the key's rate window), `key:<k>:parked` (zset: ready jobs held back by the key's
//! limit, at their ready score), `parked_keys` (zset: key → when to look at its parked jobs again,
//! Redis ms; 0 once a job of it ended). Parked jobs are pending: counted and listed
//! (`list_parked.lua`) over the first [`PARKED_KEYS_READ`] parked keys.
//! A done job keeps only what its readers need (bytes per job until `done_retention`):
//! `finish.lua` rewrites its meta in the done layout — `r` (run_at_ms), `c` (created - r, absent:
//! 0), `s` (start - r), `o` (result), `d` (its job JSON when at most 64 bytes, moved out of
//! `data`), rarer fields unchanged; no `status` (its `finished` entry says done), `job_type` (in
//! the JSON), `next_run_ms`, `locked_by`, `done_at`, `max_retry` 0. `reads.rs` expands it back;
//! done jobs of older versions (long names, `status` `Done`) read the same.
//! Meta fields of results and control: `result` (a done job's result JSON: `o` as stored),
//! `progress` (JSON `{percent, message}`), `cancel_requested` (ms: a cancel was asked for while a
//! worker held it).
//!
//! Outside any prefix: [`QUEUE_NAMES`] (a set of the queues other than the default that ever had
//! a job, so `GET /api/queues` lists them; added to once per process and queue), and
//! apalis-redis' `register_worker.lua` writes the global key
//! `core:apalis:queues:list` (a set of queue names), outside KEYS: an ACL user limited to
//! `~<queue>*` fails on every worker start, so its rules need `~core:apalis:queues:list` too.
//!
//! ## apalis-redis 1.0.0 internals relied on
//! - the key names above ([`ApalisKeys`], checked against apalis-redis' `Config` by the worker's
//!   tests); the meta hash layout (`status` =
//!   `Pending`, `Running`, `Done`, `Failed`, `Killed`; `locked_at` and `done_at` in seconds);
//! - `register_worker.lua`, `keep_alive.lua` and `reenqueue_orphaned.lua` (run by `RedisStorage`
//!   inside the worker's backend) hand orphans back to `active`, which `fetch.lua` takes first
//!   (in a queue with per-key limits it moves them into `ready`, first in their priority band,
//!   so they pass the same key check as every other job).
//!
//! ## Workarounds (upstream: github.com/apalis-dev/apalis-redis)
//! 1. **Whole-second `run_at`, jobs fire up to ~1 s early** (`batch_push.lua`/`fetch_next.lua` use
//!    Unix seconds): we enqueue with our own script into `delayed` scored in ms and `fetch.lua`
//!    takes due jobs from there; the runner also waits if it ever sees a job early.
//! 2. **`fetch_next.lua` unpacks every due job at once** ("too many results to unpack" at ~8,000
//!    due jobs, the worker dies on every restart): `fetch.lua` takes at most what one fetch asks.
//! 3. **`max_attempts` ignored, 25 retries hard-coded, linear 1 s backoff** (`handle_results.lua`):
//!    the runner counts failures and chooses the next run time; `finish.lua` parks retries in
//!    `retrying` (ms) or the job in `dead_at`. Retries an older version left in apalis'
//!    `scheduled` are moved over by `park_retries.lua`.
//! 4. **A Redis error ends the worker for good and the process exits 0** (apalis-redis#76): see
//!    the worker's `supervisor.rs`, which restarts it with backoff. Connections get explicit
//!    timeouts (`cacheserver_redis::single::connection_config`).
//! 5. **Orphans of a SIGKILLed worker wait 300 s** and **a restarted name cannot register while its
//!    old heartbeat is fresh** (apalis#504): we requeue our own name's in-flight jobs before every
//!    start and reap workers whose heartbeat is older than [`ORPHAN_AFTER`] (`requeue_worker.lua`).
//! 6. **Done and dead jobs are kept forever in unordered sets** (no retention, no time):
//!    `finish.lua` writes them to `finished`/`dead_at` with the time, `trim_done.lua` stamps what
//!    older versions left in the sets and deletes done jobs after `jobqueue.done_retention`.
//!    Dead jobs stay until deleted.
//! 7. **The library's stats/list queries are broken**: counts are raw ZCARD/LLEN/SCARD and
//!    listings read our zsets (`reads.rs`, `list.lua`).
//! 8. **Fetch, lease and ack are separate round trips, serialised, with an O(length) LREM per job
//!    and a poll every `poll_interval`** (apalis-core's `Persisted` + `acquire_leases.lua`): our
//!    worker's backend (`backend.rs`) fetches with [`fetch`], its `acks.rs` writes results with
//!    `finish.lua` while the next fetch runs, and idle workers sleep until the next due time or a
//!    `wake` marker. The measurements that made this necessary are in the worker's `backend.rs`.
//! 9. **No pause**: `pause.lua` sets `paused` (then `fetch.lua` takes nothing) and hands `active`
//!    back to `delayed`; only the jobs a worker already fetched start.
//! 10. **`register_worker.lua` writes `core:apalis:queues:list`** outside the prefix (see above).

mod pool;
mod reads;
pub mod schedules;

pub use pool::Store;
pub use reads::*;

use crate::error::JobQueueError;
use cacheserver_config::SingleRedisSettings;
use redis::aio::ConnectionManager;
use redis::{Script, ScriptInvocation};
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Jobs moved per Lua call: far below Lua's unpack limit (~8,000).
pub const PROMOTE_CHUNK: usize = 1_000;
/// How often a worker writes its heartbeat (apalis' default is 30 s).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A worker whose heartbeat is older than this is dead: its in-flight jobs are re-queued.
pub const ORPHAN_AFTER: Duration = Duration::from_secs(5);

static ENQUEUE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/enqueue.lua")));
static PARK_RETRIES: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/park_retries.lua")));
static REQUEUE_WORKER: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/requeue_worker.lua")));
static TRIM_DONE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/trim_done.lua")));
static RETRY_DEAD: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/retry_dead.lua")));
static DELETE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/delete.lua")));
static PAUSE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../../lua/pause.lua")));
static LIST: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../../lua/list.lua")));
static LIST_PARKED: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/list_parked.lua")));
static FETCH: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../../lua/fetch.lua")));
static FINISH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/finish.lua")));
static CANCEL: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/cancel.lua")));
/// Failures kept per job.
pub const ERRORS_KEPT: isize = 10;
/// Per-minute history counters live this long.
pub const HISTORY_TTL: Duration = Duration::from_secs(24 * 3600);

/// The set of queue names, other than the default queue's, that ever had a job.
const QUEUE_NAMES: &str = "jobqueue:queues";

/// Every Redis key of one queue.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The queue's name.
    pub queue: String,
    pub apalis: ApalisKeys,
    pub delayed: String,
    pub retrying: String,
    pub finished: String,
    pub dead_at: String,
    pub meta: String,
    pub errors: String,
    pub unique: String,
    pub paused: String,
    pub history: String,
    pub wake: String,
    pub cancelled: String,
    /// Prefix of the per-worker cancel lists.
    pub cancel: String,
    pub events: String,
    /// Entries kept in `events` (approximately: `XADD MAXLEN ~`); 0: no events are written.
    /// The store sets it from `jobqueue.events_max_len`.
    pub events_max_len: u64,
    pub ready: String,
    /// Prefix of the per-limit-key keys (`<prefix>:<key>:running|started|parked`).
    pub limit_key: String,
    pub parked_keys: String,
    pub started: String,
    pub limits: String,
}

/// The sorted set of recorded completions (one member per finished job), for a bench that counts
/// them as they grow.
pub fn completions_key(keys: &Keys) -> &str {
    &keys.finished
}

impl Keys {
    /// The keys of `queue`: under `{<queue>}:`, or under `<queue>:` when it is `default_queue`
    /// (the layout of earlier versions, which stored only the default queue).
    pub fn of(queue: &str, default_queue: &str) -> Self {
        let prefix = if queue == default_queue {
            queue.to_owned()
        } else {
            format!("{{{queue}}}")
        };
        Self::with_prefix(queue, prefix)
    }

    /// A queue whose keys carry its hash tag (`{<queue>}:`).
    pub fn new(queue: &str) -> Self {
        Self::of(queue, "")
    }

    fn with_prefix(queue: &str, prefix: String) -> Self {
        let key = |name: &str| format!("{prefix}:{name}");
        Self {
            queue: queue.to_owned(),
            delayed: key("delayed"),
            retrying: key("retrying"),
            finished: key("finished"),
            dead_at: key("dead_at"),
            meta: key("meta"),
            errors: key("errors"),
            unique: key("unique"),
            paused: key("paused"),
            history: key("history"),
            wake: key("wake"),
            cancelled: key("cancelled"),
            cancel: key("cancel"),
            events: key("events"),
            events_max_len: cacheserver_config::DEFAULT_EVENTS_MAX_LEN,
            ready: key("ready"),
            limit_key: key("key"),
            parked_keys: key("parked_keys"),
            started: key("started"),
            limits: key("limits"),
            apalis: ApalisKeys { queue: prefix },
        }
    }

    pub fn meta_of(&self, id: &str) -> String {
        format!("{}:{id}", self.meta)
    }

    pub fn errors_of(&self, id: &str) -> String {
        format!("{}:{id}", self.errors)
    }

    pub fn history_of(&self, minute: u64) -> String {
        format!("{}:{minute}", self.history)
    }

    /// The list of cancels for the jobs `worker` holds.
    pub fn cancel_of(&self, worker: &str) -> String {
        format!("{}:{worker}", self.cancel)
    }

    /// A worker's in-flight set (apalis-redis' layout).
    pub fn inflight_of(&self, worker: &str) -> String {
        format!("{}:{worker}", self.apalis.inflight_jobs_set())
    }
}

/// apalis-redis 1.0.0's key names of one queue (its `Config` accessors; the worker's tests
/// check them against the library), so the client needs no apalis-redis.
#[derive(Debug, Clone)]
pub struct ApalisKeys {
    queue: String,
}

impl ApalisKeys {
    /// The namespace apalis-redis is configured with (its `Config::queue`): the key prefix.
    pub fn namespace(&self) -> &str {
        &self.queue
    }
    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.queue)
    }
    pub fn active_jobs_list(&self) -> String {
        self.key("active")
    }
    pub fn workers_set(&self) -> String {
        self.key("workers")
    }
    pub fn dead_jobs_set(&self) -> String {
        self.key("dead")
    }
    pub fn done_jobs_set(&self) -> String {
        self.key("done")
    }
    pub fn inflight_jobs_set(&self) -> String {
        self.key("inflight")
    }
    pub fn job_data_hash(&self) -> String {
        self.key("data")
    }
    pub fn job_meta_hash(&self) -> String {
        self.key("meta")
    }
    pub fn scheduled_jobs_set(&self) -> String {
        self.key("scheduled")
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One job for [`enqueue`].
pub struct StoredJob<'a> {
    pub id: &'a str,
    pub json: &'a str,
    pub job_type: &'a str,
    pub due_ms: u64,
    pub max_retry: u32,
    /// 0: none of its own.
    pub timeout_ms: u64,
    /// "": not unique.
    pub unique_key: &'a str,
    /// 0: held until the job is done or dead.
    pub unique_for_ms: u64,
    /// 1..=10, higher first.
    pub priority: u8,
    /// "": none.
    pub limit_key: &'a str,
}

/// Store jobs in one script call (workaround 1). One entry per job: `None` stored, or the id of
/// the job already holding its unique key.
pub async fn enqueue(
    conn: &mut ConnectionManager,
    keys: &Keys,
    jobs: &[StoredJob<'_>],
) -> Result<Vec<Option<String>>, JobQueueError> {
    let out: Vec<String> = enqueue_call(keys, jobs).invoke_async(conn).await?;
    Ok(holders(out))
}

/// [`enqueue`], confirmed by `min_replicas_acked` replicas: the script and `WAIT` go out in one
/// pipeline (see `cacheserver_redis::single::invoke_confirmed`).
pub async fn enqueue_confirmed(
    conn: &mut ConnectionManager,
    keys: &Keys,
    jobs: &[StoredJob<'_>],
    redis: &SingleRedisSettings,
    budget: Duration,
) -> Result<Vec<Option<String>>, JobQueueError> {
    let call = enqueue_call(keys, jobs);
    let out: Vec<String> =
        cacheserver_redis::single::invoke_confirmed(conn, &ENQUEUE, &call, redis, budget).await?;
    Ok(holders(out))
}

fn enqueue_call(keys: &Keys, jobs: &[StoredJob<'_>]) -> ScriptInvocation<'static> {
    let mut call = ENQUEUE.prepare_invoke();
    call.key(keys.apalis.job_data_hash())
        .key(&keys.meta)
        .key(&keys.delayed)
        .key(&keys.unique)
        .key(keys.apalis.dead_jobs_set())
        .key(&keys.dead_at)
        .key(&keys.wake)
        .key(&keys.ready)
        .key(&keys.events)
        .arg(keys.events_max_len);
    let now = now_ms();
    for job in jobs {
        call.arg(job.id)
            .arg(job.json)
            .arg(job.due_ms)
            .arg(job.max_retry)
            .arg(now)
            .arg(job.timeout_ms)
            .arg(job.job_type)
            .arg(job.unique_key)
            .arg(job.unique_for_ms)
            .arg(job.priority)
            .arg(job.limit_key);
    }
    call
}

/// The script's reply: "" stored, else the id holding the unique key.
fn holders(out: Vec<String>) -> Vec<Option<String>> {
    out.into_iter()
        .map(|holder| Some(holder).filter(|h| !h.is_empty()))
        .collect()
}

/// Move retries apalis parked (workaround 3) to ours. Returns (parked, paused).
pub async fn park_retries(
    conn: &mut ConnectionManager,
    keys: &Keys,
) -> Result<(usize, bool), JobQueueError> {
    Ok(PARK_RETRIES
        .key(keys.apalis.scheduled_jobs_set())
        .key(&keys.meta)
        .key(&keys.retrying)
        .key(&keys.paused)
        .arg(now_ms())
        .arg(PROMOTE_CHUNK)
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
        .key(&keys.wake)
        .key(c.inflight_jobs_set())
        .key(&keys.meta)
        .key(format!("{}:metadata", c.workers_set()))
        .key(c.job_data_hash())
        .key(&keys.cancelled)
        .key(&keys.cancel)
        .key(&keys.events)
        .arg(dead_before)
        .arg(worker.unwrap_or(""))
        .arg(now_ms())
        .arg(keys.events_max_len)
        .invoke_async(conn)
        .await?)
}

/// Keep our heartbeat fresh even while every slot is busy (apalis beats only between polls).
/// `XX`: never re-register a worker that was reaped. Returns whether the queue is paused (same
/// round trip).
pub async fn heartbeat(
    conn: &mut ConnectionManager,
    keys: &Keys,
    worker: &str,
) -> Result<bool, JobQueueError> {
    let (paused,): (bool,) = redis::pipe()
        .cmd("ZADD")
        .arg(keys.apalis.workers_set())
        .arg("XX")
        .arg(now_ms() / 1000)
        .arg(worker)
        .ignore()
        .exists(&keys.paused)
        .query_async(conn)
        .await?;
    Ok(paused)
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
        .key(keys.apalis.dead_jobs_set())
        .key(&keys.dead_at)
        .key(&keys.errors)
        .key(&keys.cancelled)
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
    let revived: i64 = RETRY_DEAD
        .key(keys.apalis.dead_jobs_set())
        .key(&keys.dead_at)
        .key(&keys.delayed)
        .key(&keys.meta)
        .arg(id)
        .arg(now_ms())
        .invoke_async(conn)
        .await?;
    if revived == 1 {
        let mut pipe = redis::pipe();
        wake(&mut pipe, keys);
        pipe.query_async::<()>(conn).await?;
    }
    Ok(revived)
}

/// 1 deleted, 0 unknown, -1 running (refused).
pub async fn delete(
    conn: &mut ConnectionManager,
    keys: &Keys,
    id: &str,
) -> Result<i64, JobQueueError> {
    let c = &keys.apalis;
    Ok(DELETE
        .key(c.job_data_hash())
        .key(&keys.meta)
        .key(&keys.delayed)
        .key(c.scheduled_jobs_set())
        .key(c.active_jobs_list())
        .key(c.done_jobs_set())
        .key(c.dead_jobs_set())
        .key(&keys.finished)
        .key(&keys.retrying)
        .key(&keys.dead_at)
        .key(&keys.errors)
        .key(&keys.cancelled)
        .key(&keys.ready)
        .key(&keys.limit_key)
        .arg(id)
        .invoke_async(conn)
        .await?)
}

/// What [`cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was waiting: removed from its queue, now cancelled.
    Cancelled,
    /// A worker holds it: the cancel was sent to that worker.
    Signalled,
    Unknown,
    /// Done, dead or cancelled already.
    Finished,
}

/// Cancel job `id` (`cancel.lua`).
pub async fn cancel(
    conn: &mut ConnectionManager,
    keys: &Keys,
    id: &str,
) -> Result<CancelOutcome, JobQueueError> {
    let c = &keys.apalis;
    let now = now_ms();
    let outcome: i64 = CANCEL
        .key(&keys.meta)
        .key(&keys.delayed)
        .key(&keys.retrying)
        .key(c.scheduled_jobs_set())
        .key(c.active_jobs_list())
        .key(&keys.cancelled)
        .key(&keys.finished)
        .key(&keys.dead_at)
        .key(c.dead_jobs_set())
        .key(&keys.cancel)
        .key(&keys.events)
        .key(&keys.ready)
        .key(&keys.limit_key)
        .arg(id)
        .arg(now)
        .arg(now / 1000)
        .arg(keys.events_max_len)
        .invoke_async(conn)
        .await?;
    Ok(match outcome {
        1 => CancelOutcome::Cancelled,
        2 => CancelOutcome::Signalled,
        0 => CancelOutcome::Unknown,
        _ => CancelOutcome::Finished,
    })
}

/// Block up to `block` for a cancel sent to `worker` in any of `queues` (one BLPOP over their
/// cancel lists, on a single Redis): the (queue, job id) popped, if one came. The connection's
/// response timeout must outlast `block`.
pub async fn wait_for_cancel(
    conn: &mut ConnectionManager,
    queues: &[Keys],
    worker: &str,
    block: Duration,
) -> Result<Option<(String, String)>, JobQueueError> {
    let mut blpop = redis::cmd("BLPOP");
    for keys in queues {
        blpop.arg(keys.cancel_of(worker));
    }
    let popped: Option<(String, String)> = blpop.arg(block.as_secs_f64()).query_async(conn).await?;
    Ok(popped.and_then(|(list, id)| {
        queues
            .iter()
            .find(|k| k.cancel_of(worker) == list)
            .map(|k| (k.queue.clone(), id))
    }))
}

/// Pause (workaround 9). Returns how many waiting jobs were handed back to `delayed`.
pub async fn pause(conn: &mut ConnectionManager, keys: &Keys) -> Result<u64, JobQueueError> {
    Ok(PAUSE
        .key(&keys.paused)
        .key(keys.apalis.active_jobs_list())
        .key(&keys.delayed)
        .key(&keys.meta)
        .arg(now_ms())
        .invoke_async(conn)
        .await?)
}

/// A queue's limits shared by all workers, as stored in its `limits` hash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredLimits {
    /// At most this many jobs of the queue taken (running) at once.
    pub concurrency: Option<u32>,
    /// At most `.0` starts per `.1` ms.
    pub rate: Option<(u32, u64)>,
    /// Per limit key: at most this many running at once.
    pub key_concurrency: Option<u32>,
    /// Per limit key: at most `.0` starts per `.1` ms.
    pub key_rate: Option<(u32, u64)>,
}

/// Replace the queue's limits (none: the queue is unlimited) and wake a waiting worker (a raised
/// limit may let jobs start). One transaction, so `fetch.lua` never sees half of them.
pub async fn write_limits(
    conn: &mut ConnectionManager,
    keys: &Keys,
    limits: StoredLimits,
) -> Result<(), JobQueueError> {
    let mut pipe = redis::pipe();
    pipe.atomic().del(&keys.limits).ignore();
    let mut fields: Vec<(&str, u64)> = Vec::new();
    if let Some(n) = limits.concurrency {
        fields.push(("concurrency", u64::from(n)));
    }
    if let Some((max, per_ms)) = limits.rate {
        fields.push(("rate_max", u64::from(max)));
        fields.push(("rate_per_ms", per_ms));
    }
    if let Some(n) = limits.key_concurrency {
        fields.push(("key_concurrency", u64::from(n)));
    }
    if let Some((max, per_ms)) = limits.key_rate {
        fields.push(("key_rate_max", u64::from(max)));
        fields.push(("key_rate_per_ms", per_ms));
    }
    if !fields.is_empty() {
        pipe.hset_multiple(&keys.limits, &fields).ignore();
    }
    wake(&mut pipe, keys);
    pipe.query_async::<()>(conn).await?;
    Ok(())
}

/// The queue's limits.
pub async fn read_limits(
    conn: &mut ConnectionManager,
    keys: &Keys,
) -> Result<StoredLimits, JobQueueError> {
    type Fields = (
        Option<u32>,
        Option<u32>,
        Option<u64>,
        Option<u32>,
        Option<u32>,
        Option<u64>,
    );
    let (concurrency, rate_max, per_ms, key_concurrency, key_rate_max, key_per_ms): Fields =
        redis::cmd("HMGET")
            .arg(&keys.limits)
            .arg(&[
                "concurrency",
                "rate_max",
                "rate_per_ms",
                "key_concurrency",
                "key_rate_max",
                "key_rate_per_ms",
            ])
            .query_async(conn)
            .await?;
    Ok(StoredLimits {
        concurrency,
        rate: rate_max.zip(per_ms),
        key_concurrency,
        key_rate: key_rate_max.zip(key_per_ms),
    })
}

/// A position in a listing: (score, id) of the last entry shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub score: f64,
    pub id: String,
}

/// One page of `zset` in (score, id) order after `cursor`, within `[min, max]`.
pub async fn list_page(
    conn: &mut ConnectionManager,
    zset: &str,
    (min, max): (&str, &str),
    descending: bool,
    cursor: Option<&Cursor>,
    limit: usize,
) -> Result<Vec<(String, f64)>, JobQueueError> {
    let flat: Vec<String> = LIST
        .key(zset)
        .arg(min)
        .arg(max)
        .arg(if descending { "desc" } else { "asc" })
        .arg(cursor.map(|c| c.score.to_string()).unwrap_or_default())
        .arg(cursor.map(|c| c.id.as_str()).unwrap_or_default())
        .arg(limit)
        .invoke_async(conn)
        .await?;
    Ok(id_score_pairs(flat))
}

/// `[id, score, id, score, ...]` as a listing script returns it.
fn id_score_pairs(flat: Vec<String>) -> Vec<(String, f64)> {
    flat.chunks_exact(2)
        .map(|p| (p[0].clone(), p[1].parse().unwrap_or(0.0)))
        .collect()
}

/// Most limit keys whose parked jobs the pending count and listing read.
pub const PARKED_KEYS_READ: usize = 1_000;

/// One page of the jobs parked by their limit key, scored by due ms (their band taken off, as
/// the ready ones in the pending listing), after `cursor` (`list_parked.lua`).
pub async fn list_parked(
    conn: &mut ConnectionManager,
    keys: &Keys,
    cursor: Option<&Cursor>,
    limit: usize,
) -> Result<Vec<(String, f64)>, JobQueueError> {
    let flat: Vec<String> = LIST_PARKED
        .key(&keys.parked_keys)
        .key(&keys.limit_key)
        .arg(cursor.map(|c| c.score.to_string()).unwrap_or_default())
        .arg(cursor.map(|c| c.id.as_str()).unwrap_or_default())
        .arg(limit)
        .arg(PARKED_KEYS_READ)
        .invoke_async(conn)
        .await?;
    Ok(id_score_pairs(flat))
}

/// A job [`fetch`] took for a worker: its id, stored JSON and the meta fields the runner reads.
#[derive(Debug, Clone)]
pub struct FetchedJob {
    pub id: String,
    pub json: String,
    pub meta: std::collections::HashMap<String, String>,
}

/// What one [`fetch`] call returned.
#[derive(Debug, Default)]
pub struct Fetched {
    pub jobs: Vec<FetchedJob>,
    /// When fewer jobs than asked were taken: the earliest due time (ms) of the rest, or when
    /// the queue's rate window frees a start, if any.
    pub next_due_ms: Option<u64>,
    /// A limit of the queue (concurrency, rate) held due jobs back.
    pub limited: bool,
}

const FETCHED_FIELDS: [&str; 4] = ["next_run_ms", "failures", "max_retry", "timeout_ms"];

/// Take up to `want` due jobs for `worker` in one call (`fetch.lua`).
pub async fn fetch(
    conn: &mut ConnectionManager,
    keys: &Keys,
    worker: &str,
    want: usize,
) -> Result<Fetched, JobQueueError> {
    let c = &keys.apalis;
    let now = now_ms();
    let flat: Vec<String> = FETCH
        .key(c.workers_set())
        .key(c.active_jobs_list())
        .key(keys.inflight_of(worker))
        .key(c.job_data_hash())
        .key(&keys.meta)
        .key(&keys.retrying)
        .key(&keys.delayed)
        .key(&keys.paused)
        .key(&keys.wake)
        .key(&keys.ready)
        .key(&keys.limits)
        .key(c.inflight_jobs_set())
        .key(&keys.started)
        .key(&keys.limit_key)
        .key(&keys.parked_keys)
        .key(&keys.events)
        .arg(now)
        .arg(want.max(1))
        .arg(worker)
        .arg(now / 1000)
        .arg(keys.events_max_len)
        .invoke_async(conn)
        .await?;
    let mut rest = flat.into_iter();
    let next_due_ms = rest
        .next()
        .and_then(|d| d.parse::<f64>().ok())
        .filter(|d| *d >= 0.0)
        .map(|d| d as u64);
    let limited = rest.next().is_some_and(|l| l == "1");
    let rest: Vec<String> = rest.collect();
    let jobs = rest
        .chunks_exact(2 + FETCHED_FIELDS.len())
        .map(|j| FetchedJob {
            id: j[0].clone(),
            json: j[1].clone(),
            meta: FETCHED_FIELDS
                .iter()
                .zip(&j[2..])
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        })
        .collect();
    Ok(Fetched {
        jobs,
        next_due_ms,
        limited,
    })
}

/// How a run ended, for [`finish`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Ran; its result serialised as JSON, if it returned one.
    Done { result: Option<String> },
    /// Stopped by a cancel.
    Cancelled,
    /// The latest progress report (JSON) of a job still running: not an end.
    Progress { json: String },
    /// Failed; runs again at `next_run_ms`.
    Retry {
        failures: u32,
        next_run_ms: u64,
        error: String,
    },
    /// Failed for the last time.
    Dead { failures: u32, error: String },
    /// Not run (early, or released at shutdown): back to waiting until `due_ms`.
    Later { due_ms: u64 },
}

/// The result of one run of job `id` of `queue`.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub queue: String,
    pub id: String,
    pub outcome: Outcome,
}

/// Record results of `worker`'s runs in `keys`' queue in one call (`finish.lua`; replaces apalis' acks and
/// workaround 3's separate failure write). Returns how many were recorded (a result for a job
/// no longer in flight at this worker is skipped).
pub async fn finish(
    conn: &mut ConnectionManager,
    keys: &Keys,
    worker: &str,
    results: &[Finished],
) -> Result<u64, JobQueueError> {
    let now = now_ms();
    let mut call = FINISH.prepare_invoke();
    call.key(keys.inflight_of(worker))
        .key(&keys.meta)
        .key(&keys.finished)
        .key(&keys.retrying)
        .key(&keys.dead_at)
        .key(&keys.errors)
        .key(keys.history_of(now / 60_000))
        .key(&keys.delayed)
        .key(&keys.wake)
        .key(&keys.cancelled)
        .key(&keys.events)
        .key(&keys.limits)
        .key(&keys.ready)
        .key(keys.apalis.active_jobs_list())
        .key(&keys.limit_key)
        .key(&keys.parked_keys)
        .key(keys.apalis.job_data_hash())
        .arg(now)
        .arg(now / 1000)
        .arg(ERRORS_KEPT)
        .arg(HISTORY_TTL.as_secs())
        .arg(keys.events_max_len);
    for result in results {
        let (kind, failures, next_run_ms, error, data) = match &result.outcome {
            Outcome::Done { result } => ("done", 0, 0, "", result.as_deref().unwrap_or("")),
            Outcome::Cancelled => ("cancelled", 0, 0, "", ""),
            Outcome::Progress { json } => ("progress", 0, 0, "", json.as_str()),
            Outcome::Retry {
                failures,
                next_run_ms,
                error,
            } => ("retry", *failures, *next_run_ms, error.as_str(), ""),
            Outcome::Dead { failures, error } => ("dead", *failures, now, error.as_str(), ""),
            Outcome::Later { due_ms } => ("later", 0, *due_ms, "", ""),
        };
        let entry = if error.is_empty() {
            String::new()
        } else {
            serde_json::json!({ "at_ms": now, "attempt": failures, "error": error }).to_string()
        };
        call.arg(&result.id)
            .arg(kind)
            .arg(failures)
            .arg(next_run_ms)
            .arg(error)
            .arg(entry)
            .arg(data);
    }
    Ok(call.invoke_async(conn).await?)
}

/// One entry of a queue's `events` stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    /// The stream entry's id (resume after it).
    pub event_id: String,
    pub job_id: String,
    /// `registered`, `started`, `progress`, `retrying`, `done`, `dead` or `cancelled`.
    pub state: String,
    /// The job's type ("" for jobs stored by versions that did not record it).
    pub job_type: String,
    /// The run the event concerns (1 = first; 0 for `registered`, and for `cancelled` before
    /// any run).
    pub attempt: u32,
    /// When it happened (ms since the Unix epoch).
    pub time_ms: u64,
    /// `progress` events: the report (JSON `{percent, message}`).
    pub progress: Option<String>,
}

impl JobEvent {
    /// Whether the job ends with this event (`done`, `dead` or `cancelled`).
    pub fn is_terminal(&self) -> bool {
        matches!(self.state.as_str(), "done" | "dead" | "cancelled")
    }
}

type StreamEntries = Vec<(String, Vec<(String, String)>)>;

fn job_events(entries: StreamEntries) -> Vec<JobEvent> {
    entries
        .into_iter()
        .map(|(event_id, fields)| {
            let mut event = JobEvent {
                event_id,
                job_id: String::new(),
                state: String::new(),
                job_type: String::new(),
                attempt: 0,
                time_ms: 0,
                progress: None,
            };
            for (k, v) in fields {
                match k.as_str() {
                    "job_id" => event.job_id = v,
                    "state" => event.state = v,
                    "type" => event.job_type = v,
                    "attempt" => event.attempt = v.parse().unwrap_or(0),
                    "time" => event.time_ms = v.parse().unwrap_or(0),
                    "progress" => event.progress = Some(v),
                    _ => {}
                }
            }
            // Entries written before events carried a time: the stream id starts with it.
            if event.time_ms == 0 {
                event.time_ms = stream_id_ms(&event.event_id).unwrap_or(0);
            }
            event
        })
        .collect()
}

/// The milliseconds part of a stream entry id (`<ms>-<seq>`), if it is one.
pub fn stream_id_ms(id: &str) -> Option<u64> {
    let (ms, seq) = id.split_once('-')?;
    seq.parse::<u64>().ok()?;
    ms.parse().ok()
}

/// The id of the newest event of `keys`' queue ("0-0": none yet), to read what comes after.
pub async fn last_event_id(
    conn: &mut ConnectionManager,
    keys: &Keys,
) -> Result<String, JobQueueError> {
    let newest: Vec<(String, Vec<String>)> = redis::cmd("XREVRANGE")
        .arg(&keys.events)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(newest
        .into_iter()
        .next()
        .map_or_else(|| "0-0".to_owned(), |(id, _)| id))
}

/// Events of `keys`' queue after `after`, waiting up to `block` for one (the connection's
/// response timeout must outlast `block`).
pub async fn read_events(
    conn: &mut ConnectionManager,
    keys: &Keys,
    after: &str,
    block: Duration,
) -> Result<Vec<JobEvent>, JobQueueError> {
    let read: Option<Vec<(String, StreamEntries)>> = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(1000)
        .arg("BLOCK")
        .arg(block.as_millis() as u64)
        .arg("STREAMS")
        .arg(&keys.events)
        .arg(after)
        .query_async(conn)
        .await?;
    Ok(job_events(
        read.into_iter()
            .flatten()
            .flat_map(|(_, entries)| entries)
            .collect(),
    ))
}

/// Up to `count` events of `keys`' queue after `after` up to `until` (both stream ids;
/// `XRANGE`, no wait): what a reconnecting client missed that is still in the stream.
pub async fn events_between(
    conn: &mut ConnectionManager,
    keys: &Keys,
    after: &str,
    until: &str,
    count: usize,
) -> Result<Vec<JobEvent>, JobQueueError> {
    let entries: StreamEntries = redis::cmd("XRANGE")
        .arg(&keys.events)
        .arg(format!("({after}"))
        .arg(until)
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
    Ok(job_events(entries))
}

/// For each of `ids`, whether it has ended (done, dead, cancelled, or gone): one pipeline of
/// `HGET status` (what waiting falls back to when the event stream is off). A done job keeps no
/// status: absent reads as ended.
pub async fn ended(
    conn: &mut ConnectionManager,
    keys: &Keys,
    ids: &[String],
) -> Result<Vec<bool>, JobQueueError> {
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.hget(keys.meta_of(id), "status");
    }
    let statuses: Vec<Option<String>> = pipe.query_async(conn).await?;
    Ok(statuses
        .into_iter()
        .map(|s| s.is_none_or(|s| matches!(s.as_str(), "Done" | "Killed" | "Cancelled")))
        .collect())
}

/// Remember that `queue` (not the default queue) has had jobs, so listings find it.
pub async fn remember_queue(
    conn: &mut ConnectionManager,
    queue: &str,
) -> Result<(), JobQueueError> {
    redis::cmd("SADD")
        .arg(QUEUE_NAMES)
        .arg(queue)
        .query_async::<()>(conn)
        .await?;
    Ok(())
}

/// The queues other than the default that ever had jobs.
pub async fn remembered_queues(conn: &mut ConnectionManager) -> Result<Vec<String>, JobQueueError> {
    Ok(redis::cmd("SMEMBERS")
        .arg(QUEUE_NAMES)
        .query_async(conn)
        .await?)
}

/// For each of `queues`, whether it holds job `id` (one round trip).
pub async fn holding(
    conn: &mut ConnectionManager,
    queues: &[Keys],
    id: &str,
) -> Result<Vec<bool>, JobQueueError> {
    let mut pipe = redis::pipe();
    for keys in queues {
        pipe.exists(keys.meta_of(id));
    }
    Ok(pipe.query_async(conn).await?)
}

/// Register `worker` in a queue it serves besides the one apalis registers it in (`fetch.lua`
/// serves only registered workers; the heartbeat keeps the entry fresh, the reaper removes it).
pub async fn register_worker(
    conn: &mut ConnectionManager,
    keys: &Keys,
    worker: &str,
) -> Result<(), JobQueueError> {
    redis::cmd("ZADD")
        .arg(keys.apalis.workers_set())
        .arg(now_ms() / 1000)
        .arg(worker)
        .query_async::<()>(conn)
        .await?;
    Ok(())
}

/// One PING (the api's readiness).
pub async fn ping(conn: &mut ConnectionManager) -> Result<(), JobQueueError> {
    redis::cmd("PING").query_async::<String>(conn).await?;
    Ok(())
}

/// Resume a paused queue and wake a waiting worker.
pub async fn resume(conn: &mut ConnectionManager, keys: &Keys) -> Result<(), JobQueueError> {
    let mut pipe = redis::pipe();
    pipe.del(&keys.paused).ignore();
    wake(&mut pipe, keys);
    pipe.query_async::<()>(conn).await?;
    Ok(())
}

/// Whether the queue is paused.
pub async fn is_paused(conn: &mut ConnectionManager, keys: &Keys) -> Result<bool, JobQueueError> {
    Ok(redis::cmd("EXISTS")
        .arg(&keys.paused)
        .query_async::<bool>(conn)
        .await?)
}

/// Block up to `block` for a wake-up marker of any of `queues` (one BLPOP over their `wake`
/// lists: on a single Redis; a Cluster would need one per slot); whether one came. The
/// connection's response timeout must outlast `block`.
pub async fn wait_for_wake(
    conn: &mut ConnectionManager,
    queues: &[Keys],
    block: Duration,
) -> Result<bool, JobQueueError> {
    let mut blpop = redis::cmd("BLPOP");
    for keys in queues {
        blpop.arg(&keys.wake);
    }
    let popped: Option<(String, String)> = blpop.arg(block.as_secs_f64()).query_async(conn).await?;
    Ok(popped.is_some())
}

/// Wake one waiting worker (after a resume, or jobs handed back).
pub fn wake(pipe: &mut redis::Pipeline, keys: &Keys) {
    pipe.rpush(&keys.wake, 1)
        .ignore()
        .ltrim(&keys.wake, -1, -1)
        .ignore();
}

/// The rule of this module, checked: outside `store/` (and the Redis layer, which knows no
/// key), no Rust source of the workspace names a queue key, touches a `Keys` field, sends a raw
/// Redis command or loads a job-queue script.
#[cfg(test)]
mod owns_every_key_and_script {
    use std::path::{Path, PathBuf};

    /// Key suffixes of a queue, as they would appear in a string literal.
    const KEY_SUFFIXES: [&str; 23] = [
        ":parked_keys\"",
        ":ready\"",
        ":started\"",
        ":limits\"",
        ":events\"",
        ":cancelled\"",
        ":cancel\"",
        ":delayed\"",
        ":retrying\"",
        ":finished\"",
        ":dead_at\"",
        ":meta\"",
        ":errors\"",
        ":unique\"",
        ":paused\"",
        ":history\"",
        ":wake\"",
        ":data\"",
        ":active\"",
        ":inflight\"",
        ":workers\"",
        ":scheduled\"",
        ":done\"",
    ];
    /// `Keys` fields read outside the store would be key knowledge.
    const KEY_FIELDS: [&str; 19] = [
        "limit_key",
        "parked_keys",
        "ready",
        "started",
        "limits",
        "events",
        "delayed",
        "retrying",
        "finished",
        "dead_at",
        "meta",
        "errors",
        "unique",
        "paused",
        "history",
        "wake",
        "apalis",
        "cancelled",
        "cancel",
    ];
    /// Raw Redis access and script loading (the api's limiter and cache, on the cluster through
    /// fred, have their own scripts and are not the job queue's).
    const RAW: [&str; 4] = [
        "redis::cmd(",
        "redis::pipe(",
        "Script::new(",
        "include_str!(",
    ];

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn no_key_or_script_outside_the_store() {
        let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let store = crates.join("jobqueue/src/store");
        let mut files = Vec::new();
        for krate in ["jobqueue", "worker", "bench", "api"] {
            rust_files(&crates.join(krate).join("src"), &mut files);
        }
        assert!(
            files.len() > 20,
            "sources not found under {}",
            crates.display()
        );
        let mut found = Vec::new();
        for file in files.iter().filter(|f| !f.starts_with(&store)) {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let name = file.to_string_lossy();
            // The bench's drain clock counts BullMQ's keys and reads `INFO cpu` as well as ours
            // (whose key name it gets from `store::completions_key`): a peer's measuring tool.
            let job_queue_code =
                !name.contains("/api/src/") && !name.ends_with("/bench/src/drain.rs");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                let mut bad: Vec<&str> = KEY_SUFFIXES
                    .iter()
                    .copied()
                    .filter(|k| code.contains(k))
                    .collect();
                for field in KEY_FIELDS {
                    for access in [format!("keys.{field}"), format!("keys().{field}")] {
                        let hit = code.match_indices(&access).any(|(i, _)| {
                            let next = code[i + access.len()..].chars().next();
                            !next.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '(')
                        });
                        if hit {
                            bad.push(field);
                        }
                    }
                }
                if job_queue_code {
                    bad.extend(RAW.iter().copied().filter(|r| code.contains(r)));
                }
                if !bad.is_empty() {
                    found.push(format!("{}:{}: {bad:?}: {line}", file.display(), n + 1));
                }
            }
        }
        assert!(
            found.is_empty(),
            "key names, Keys fields or raw Redis calls outside crates/jobqueue/src/store:\n{}",
            found.join("\n")
        );
    }
}
