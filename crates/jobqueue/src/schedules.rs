//! Schedules (cron) — the client side: the model, checks, and what the api and the worker's
//! scheduler (`crates/worker/src/scheduler.rs`) do with schedules in Redis (through
//! `store::schedules`, which alone knows the keys and scripts).
//!
//! Exactly one job per tick: a tick is claimed by moving the schedule's next-tick score with a
//! compare-and-set script (`schedule_claim.lua`); only the winner enqueues, with the unique key
//! `schedule:<name>:<tick ms>` held for [`TICK_UNIQUE_FOR`], and confirms. A claim whose worker
//! died before confirming is enqueued again by another worker under the same key, so the job
//! is stored once. No process decides from its own memory; no leader is elected.
//!
//! apalis-cron 1.0 was not used: it runs a schedule inside one worker process from its own
//! clock (each process with it would enqueue every tick), so exactly-once across workers and
//! restarts needs this claim in Redis anyway.

use crate::client::ms_to_time;
use crate::error::JobQueueError;
use crate::store::schedules::{self as store, SaveMode, StoredSchedule};
use crate::types::{EnqueuedJob, NewJob};
use crate::JobQueue;
use cacheserver_config::{parse_cron, parse_timezone, ScheduleSettings, MAX_RETRY_LIMIT};
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use std::time::Duration;

pub use cacheserver_config::{Missed, Overlap, ScheduleSettings as Schedule, ScheduledJobSettings};
pub use store::{Due, DueTick};

/// How long a tick's unique key is held: far longer than any worker takes between claiming a
/// tick and storing its job (or another worker recovering the claim).
pub const TICK_UNIQUE_FOR: Duration = Duration::from_secs(3600);

/// A schedule with its state (`GET /api/schedules`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ScheduleInfo {
    #[serde(flatten)]
    pub schedule: Schedule,
    /// The cron expression in words (croner's description).
    #[schema(example = "At 03:00")]
    pub description: String,
    /// The next tick (RFC 3339, UTC); null while paused.
    #[schema(value_type = Option<String>, example = "2026-12-06T03:00:00Z")]
    pub next_run_at: Option<DateTime<Utc>>,
    /// The tick of the last job enqueued (or the time of the last trigger).
    #[schema(value_type = Option<String>)]
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_job_id: Option<String>,
    pub paused: bool,
    /// Ticks skipped (`overlap: skip`, `missed: skip`).
    pub skipped: u64,
    /// Where it was declared: `config` (re-applied at every worker start: it wins over the api)
    /// or `api`.
    #[schema(example = "api")]
    pub source: String,
}

/// The schedules of one Redis; from [`JobQueue::schedules`].
#[derive(Clone)]
pub struct Schedules {
    queue: JobQueue,
}

impl JobQueue {
    /// The schedules handle (shares this client's connections).
    pub fn schedules(&self) -> Schedules {
        Schedules {
            queue: self.default_queue(),
        }
    }
}

/// The first tick of `schedule` after `after_ms` (`inclusive`: at or after), in ms.
pub fn next_tick(
    schedule: &Schedule,
    after_ms: u64,
    inclusive: bool,
) -> Result<u64, JobQueueError> {
    let cron = parse_cron(&schedule.cron).map_err(JobQueueError::Invalid)?;
    let zone = parse_timezone(&schedule.timezone).map_err(JobQueueError::Invalid)?;
    // Whole seconds (croner keeps the start's fraction in what it finds): strictly after
    // `after_ms` searches from its second, at-or-after from the next whole second.
    let second = if inclusive {
        after_ms.div_ceil(1000)
    } else {
        after_ms / 1000
    };
    let at = zone.from_utc_datetime(&ms_to_time(second * 1000).naive_utc());
    let next = cron
        .find_next_occurrence(&at, inclusive)
        .map_err(|e| JobQueueError::Invalid(format!("cron `{}`: {e}", schedule.cron)))?;
    Ok(u64::try_from(next.timestamp_millis()).unwrap_or(0))
}

/// The job of `schedule` for tick `tick_ms` (due then, unique per tick); `None`: a trigger (due
/// now, not unique).
pub fn job_for(schedule: &Schedule, tick_ms: Option<u64>) -> NewJob {
    let spec = &schedule.job;
    let mut job = NewJob::new(&spec.job_type, spec.payload.clone()).retries(spec.max_retry);
    if let Some(queue) = &spec.queue {
        job = job.in_queue(queue);
    }
    if let Some(seconds) = spec.timeout_seconds {
        job = job.timeout(Duration::from_secs(seconds));
    }
    job.priority = spec.priority;
    if let Some(tick) = tick_ms {
        job = job
            .at(ms_to_time(tick))
            .unique(tick_unique_key(&schedule.name, tick), Some(TICK_UNIQUE_FOR));
    }
    job
}

/// The unique key of one tick's job.
pub fn tick_unique_key(name: &str, tick_ms: u64) -> String {
    format!("schedule:{name}:{tick_ms}")
}

fn timing(schedule: &Schedule) -> String {
    format!("{}|{}", schedule.cron, schedule.timezone)
}

impl Schedules {
    /// Everything that makes a schedule unusable, named: name, cron, zone, queue, job type and
    /// payload (the registry's schema), `max_retry`, `timeout_seconds`.
    pub fn check(&self, schedule: &Schedule) -> Result<(), JobQueueError> {
        if let Some(problem) = schedule.problem() {
            return Err(JobQueueError::Invalid(problem));
        }
        let job = &schedule.job;
        if i64::from(job.max_retry) > MAX_RETRY_LIMIT {
            return Err(JobQueueError::Invalid(format!(
                "job.max_retry must be 0..={MAX_RETRY_LIMIT}"
            )));
        }
        if job
            .timeout_seconds
            .is_some_and(|t| !(1..=crate::MAX_TIMEOUT_SECONDS).contains(&t))
        {
            return Err(JobQueueError::Invalid(format!(
                "job.timeout_seconds must be 1..={}",
                crate::MAX_TIMEOUT_SECONDS
            )));
        }
        if job
            .priority
            .is_some_and(|p| !(crate::MIN_PRIORITY..=crate::MAX_PRIORITY).contains(&p))
        {
            return Err(JobQueueError::Invalid(format!(
                "job.priority must be {}..={} (higher starts first)",
                crate::MIN_PRIORITY,
                crate::MAX_PRIORITY
            )));
        }
        self.queue
            .registry()
            .validate(&job.job_type, &job.payload)
            .map_err(|e| match e {
                JobQueueError::Invalid(m) => JobQueueError::Invalid(format!("job: {m}")),
                other => other,
            })
    }

    /// `POST`: store a new schedule; `false` when the name exists.
    pub async fn create(&self, schedule: &Schedule) -> Result<bool, JobQueueError> {
        self.save(schedule, SaveMode::Create, "api").await
    }

    /// `PUT`: replace a schedule; `false` when unknown. The next tick stays unless the cron or
    /// zone changed.
    pub async fn replace(&self, schedule: &Schedule) -> Result<bool, JobQueueError> {
        self.save(schedule, SaveMode::Replace, "api").await
    }

    /// The config's schedules (`jobqueue.schedules`), applied at worker start: they replace a
    /// schedule of the same name made through the api.
    pub async fn apply_declared(&self, declared: &[ScheduleSettings]) -> Result<(), JobQueueError> {
        for schedule in declared {
            self.check(schedule)?;
            self.save(schedule, SaveMode::Apply, "config").await?;
        }
        Ok(())
    }

    async fn save(
        &self,
        schedule: &Schedule,
        mode: SaveMode,
        source: &str,
    ) -> Result<bool, JobQueueError> {
        self.check(schedule)?;
        let first = next_tick(schedule, crate::store::now_ms(), false)?;
        let json = serde_json::to_string(schedule)?;
        let timing = timing(schedule);
        let (json, timing) = (&json, &timing);
        self.queue
            .with_connection(self.queue.call_timeout(), |mut c| async move {
                store::save(&mut c, &schedule.name, json, timing, first, mode, source).await
            })
            .await
    }

    /// Every schedule, by name.
    pub async fn list(&self) -> Result<Vec<ScheduleInfo>, JobQueueError> {
        let stored = self
            .queue
            .with_connection(self.queue.call_timeout(), |mut c| async move {
                store::list(&mut c).await
            })
            .await?;
        Ok(stored.into_iter().filter_map(|(_, s)| info(s)).collect())
    }

    /// One schedule; `None` when unknown.
    pub async fn get(&self, name: &str) -> Result<Option<ScheduleInfo>, JobQueueError> {
        let stored = self
            .queue
            .with_connection(self.queue.call_timeout(), |mut c| async move {
                store::get(&mut c, name).await
            })
            .await?;
        Ok(stored.and_then(info))
    }

    /// `false` when unknown.
    pub async fn delete(&self, name: &str) -> Result<bool, JobQueueError> {
        self.queue
            .with_connection(self.queue.call_timeout(), |mut c| async move {
                store::delete(&mut c, name).await
            })
            .await
    }

    /// No tick is claimed while paused. `false` when unknown.
    pub async fn pause(&self, name: &str) -> Result<bool, JobQueueError> {
        self.queue
            .with_connection(self.queue.call_timeout(), |mut c| async move {
                store::pause(&mut c, name).await
            })
            .await
    }

    /// Go on from the first tick after now (ticks while paused are not run). `false` when
    /// unknown.
    pub async fn resume(&self, name: &str) -> Result<bool, JobQueueError> {
        let Some(info) = self.get(name).await? else {
            return Ok(false);
        };
        let first = next_tick(&info.schedule, crate::store::now_ms(), false)?;
        self.queue
            .with_connection(self.queue.call_timeout(), |mut c| async move {
                store::resume(&mut c, name, first).await
            })
            .await
    }

    /// Enqueue the schedule's job now (besides its ticks). `None` when unknown.
    pub async fn trigger(&self, name: &str) -> Result<Option<EnqueuedJob>, JobQueueError> {
        let Some(info) = self.get(name).await? else {
            return Ok(None);
        };
        let job = self.queue.enqueue(job_for(&info.schedule, None)).await?;
        let now = crate::store::now_ms();
        self.confirm(name, now, &job.job_id, true).await?;
        Ok(Some(job))
    }

    // --- the scheduler's steps (crates/worker/src/scheduler.rs) ---

    /// Ticks due by `horizon_ms`, claims older than `stale_before_ms`, the earliest next tick.
    pub async fn due(
        &self,
        horizon_ms: u64,
        stale_before_ms: u64,
        limit: usize,
    ) -> Result<Due, JobQueueError> {
        self.queue
            .with_connection(self.queue.call_timeout(), |mut c| async move {
                store::due(&mut c, horizon_ms, stale_before_ms, limit).await
            })
            .await
    }

    /// Move `name`'s next tick from `seen_ms` to `next_ms` if no one did; the winner enqueues
    /// the job of `run_ms` (`None`: the tick is skipped).
    pub async fn claim(
        &self,
        name: &str,
        seen_ms: u64,
        next_ms: u64,
        run_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<bool, JobQueueError> {
        self.queue
            .with_connection(self.queue.call_timeout(), |mut c| async move {
                store::claim(&mut c, name, seen_ms, next_ms, run_ms, now_ms).await
            })
            .await
    }

    /// Store the job of a claimed tick: a taken unique key means it is stored already (by the
    /// claimer whose claim is being recovered). Returns the job id.
    pub async fn enqueue_tick(
        &self,
        schedule: &Schedule,
        tick_ms: u64,
    ) -> Result<String, JobQueueError> {
        match self.queue.enqueue(job_for(schedule, Some(tick_ms))).await {
            Ok(job) => Ok(job.job_id),
            Err(JobQueueError::Duplicate { job_id }) => Ok(job_id),
            Err(e) => Err(e),
        }
    }

    /// The job of tick `tick_ms` is stored as `job_id`: the claim is done.
    pub async fn confirm(
        &self,
        name: &str,
        tick_ms: u64,
        job_id: &str,
        exists: bool,
    ) -> Result<(), JobQueueError> {
        self.queue
            .with_connection(self.queue.call_timeout(), |mut c| async move {
                store::confirm(&mut c, name, tick_ms, job_id, exists).await
            })
            .await
    }

    /// Whether job `id` of `schedule` is still to finish (scheduled, pending, running or
    /// retrying): `overlap: skip` skips a tick then. A job no longer stored is finished.
    pub async fn still_running(
        &self,
        schedule: &Schedule,
        id: &str,
    ) -> Result<bool, JobQueueError> {
        let queue = match &schedule.job.queue {
            Some(q) => self.queue.queue(q)?,
            None => self.queue.default_queue(),
        };
        use crate::types::JobStatus as S;
        Ok(queue.status(id).await?.is_some_and(|info| {
            matches!(
                info.status,
                S::Scheduled | S::Pending | S::Running | S::Retrying
            )
        }))
    }
}

fn info(stored: StoredSchedule) -> Option<ScheduleInfo> {
    let schedule: Schedule = serde_json::from_str(&stored.json).ok()?;
    let description = parse_cron(&schedule.cron)
        .map(|c| c.describe())
        .unwrap_or_default();
    let state = &stored.state;
    let ms = |field: &str| {
        state
            .get(field)
            .and_then(|v| v.parse::<u64>().ok())
            .map(ms_to_time)
    };
    Some(ScheduleInfo {
        description,
        next_run_at: stored.next_ms.map(ms_to_time),
        last_run_at: ms("last_run_ms"),
        last_job_id: state.get("last_job_id").cloned(),
        paused: state.get("paused").is_some_and(|p| p == "1"),
        skipped: state
            .get("skipped")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        source: state.get("source").cloned().unwrap_or_else(|| "api".into()),
        schedule,
    })
}
