//! The scheduler: every worker runs it; together they enqueue exactly one job per tick of each
//! schedule (see `cacheserver_jobqueue::schedules` for the claim). It applies the config's
//! schedules at start, then loops: read the ticks due soon, claim each (one wins among all
//! workers), enqueue the winner's job due at the tick, confirm; enqueue again claims whose
//! worker died before confirming. The clock is passed in ([`Clock`]): tests drive the ticks.
//!
//! Timing rules:
//! - a tick is claimed and its job stored up to `jobqueue.scheduler.enqueue_ahead` (250 ms)
//!   before it, due at the tick itself (`run_at` = the tick; the runner never starts a job
//!   before its due time);
//! - a tick more than `missed_after` (5 s) in the past when reached was missed (no worker ran, Redis
//!   was down): `missed: skip` drops the missed ticks, `run_once` enqueues one job (for the
//!   latest of them, due at once); later ticks run as usual;
//! - `overlap: skip` skips a tick while the schedule's previous job is not done or dead;
//! - a claim not confirmed `recover_after` (5 s) after it was made is enqueued again by any
//!   worker; passes are at most `reload_every` (1 s) apart.

use cacheserver_config::{ScheduleSettings, SchedulerSettings};
use cacheserver_jobqueue::schedules::{next_tick, Due, Missed, Overlap, Schedule, Schedules};
use cacheserver_jobqueue::{JobQueue, JobQueueError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Ticks (and stale claims) looked at per pass.
const PER_PASS: usize = 100;

/// What time it is, in ms since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        cacheserver_jobqueue::store::now_ms()
    }
}

/// What to do with a due tick: move the next tick to `next_ms`, enqueue the job of `run_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub next_ms: u64,
    pub run_ms: Option<u64>,
}

/// The rule for tick `tick_ms` of `schedule` reached at `now_ms` (overlap aside); a tick
/// more than `missed_after` before `now_ms` was missed.
pub fn decide(
    schedule: &Schedule,
    tick_ms: u64,
    now_ms: u64,
    missed_after: Duration,
) -> Result<Decision, JobQueueError> {
    let missed_before = now_ms.saturating_sub(missed_after.as_millis() as u64);
    if tick_ms >= missed_before {
        return Ok(Decision {
            next_ms: next_tick(schedule, tick_ms, false)?,
            run_ms: Some(tick_ms),
        });
    }
    // Missed: go on with the first tick that is not, run at most one for the others.
    let next_ms = next_tick(schedule, missed_before, true)?;
    let run_ms = match schedule.missed {
        Missed::Skip => None,
        Missed::RunOnce => Some(latest_tick_before(schedule, tick_ms, missed_before)?),
    };
    Ok(Decision { next_ms, run_ms })
}

/// The last tick of `schedule` before `before_ms`, from `first_ms` (a tick before it) on.
fn latest_tick_before(
    schedule: &Schedule,
    first_ms: u64,
    before_ms: u64,
) -> Result<u64, JobQueueError> {
    let mut latest = first_ms;
    // Bounded: a per-second schedule missed for a day is 86,400 steps; beyond, the first.
    for _ in 0..100_000 {
        let next = next_tick(schedule, latest, false)?;
        if next >= before_ms {
            return Ok(latest);
        }
        latest = next;
    }
    Ok(first_ms)
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Ticks this worker claimed (whether it enqueued or skipped them).
    pub claimed: usize,
    /// Ticks another worker claimed first.
    pub lost: usize,
    /// Unconfirmed claims enqueued again.
    pub recovered: usize,
    /// How long until the next pass is needed.
    pub wait: Duration,
}

/// One worker's scheduler.
pub struct Scheduler<C: Clock> {
    schedules: Schedules,
    clock: Arc<C>,
    timings: SchedulerSettings,
}

impl<C: Clock> Scheduler<C> {
    /// With the default timings (`jobqueue.scheduler`).
    pub fn new(schedules: Schedules, clock: Arc<C>) -> Self {
        Self::with_timings(schedules, clock, SchedulerSettings::default())
    }

    pub fn with_timings(schedules: Schedules, clock: Arc<C>, timings: SchedulerSettings) -> Self {
        Self {
            schedules,
            clock,
            timings,
        }
    }

    /// One pass at the clock's time: recover stale claims, claim and enqueue due ticks.
    pub async fn pass(&self) -> Result<Pass, JobQueueError> {
        let now = self.clock.now_ms();
        let ahead = self.timings.enqueue_ahead.as_millis() as u64;
        let stale_before = now.saturating_sub(self.timings.recover_after.as_millis() as u64);
        let due: Due = self
            .schedules
            .due(now + ahead, stale_before, PER_PASS)
            .await?;
        let mut pass = Pass::default();
        for (tick, name, json) in &due.stale_claims {
            let schedule = json.as_deref().and_then(parse);
            let job_id = match &schedule {
                Some(s) => self.schedules.enqueue_tick(s, *tick).await?,
                None => String::new(),
            };
            self.schedules
                .confirm(name, *tick, &job_id, schedule.is_some())
                .await?;
            tracing::warn!(schedule = %name, tick_ms = tick, job_id, "recovered a tick claimed by a worker that stopped before storing its job");
            pass.recovered += 1;
        }
        for due_tick in &due.ticks {
            let Some(schedule) = due_tick.json.as_deref().and_then(parse) else {
                continue;
            };
            let mut decision = decide(&schedule, due_tick.tick_ms, now, self.timings.missed_after)?;
            if decision.run_ms.is_some() && schedule.overlap == Overlap::Skip {
                if let Some(last) = &due_tick.last_job_id {
                    if self.schedules.still_running(&schedule, last).await? {
                        decision.run_ms = None;
                    }
                }
            }
            let won = self
                .schedules
                .claim(
                    &schedule.name,
                    due_tick.tick_ms,
                    decision.next_ms,
                    decision.run_ms,
                    now,
                )
                .await?;
            if !won {
                pass.lost += 1;
                continue;
            }
            pass.claimed += 1;
            match decision.run_ms {
                Some(tick) => {
                    let job_id = self.schedules.enqueue_tick(&schedule, tick).await?;
                    self.schedules
                        .confirm(&schedule.name, tick, &job_id, true)
                        .await?;
                    tracing::debug!(schedule = %schedule.name, tick_ms = tick, job_id, "tick enqueued");
                }
                None => {
                    tracing::info!(schedule = %schedule.name, tick_ms = due_tick.tick_ms, "tick skipped")
                }
            }
        }
        pass.wait = if pass.claimed + pass.lost + pass.recovered > 0 {
            Duration::ZERO
        } else {
            let until = due
                .earliest_ms
                .map_or(u64::MAX, |e| e.saturating_sub(ahead).saturating_sub(now));
            Duration::from_millis(until).min(self.timings.reload_every)
        };
        Ok(pass)
    }
}

fn parse(json: &str) -> Option<Schedule> {
    match serde_json::from_str(json) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "a stored schedule cannot be read; its ticks are not run");
            None
        }
    }
}

/// Apply `declared` (retrying while Redis is away), then run passes until `shutdown`.
pub async fn run<C: Clock>(
    queue: JobQueue,
    declared: Vec<ScheduleSettings>,
    timings: SchedulerSettings,
    clock: Arc<C>,
    mut shutdown: watch::Receiver<bool>,
) {
    let reload_every = timings.reload_every;
    let scheduler = Scheduler::with_timings(queue.schedules(), clock, timings);
    let mut applied = declared.is_empty();
    let mut failing = false;
    while !*shutdown.borrow() {
        let wait = if !applied {
            match scheduler.schedules.apply_declared(&declared).await {
                Ok(()) => {
                    tracing::info!(count = declared.len(), "schedules from config applied");
                    applied = true;
                    Duration::ZERO
                }
                Err(JobQueueError::Invalid(why)) => {
                    // The job type or payload is not this worker's registry's: say it, run the
                    // schedules stored already.
                    tracing::error!(error = %why, "jobqueue.schedules: not applied");
                    applied = true;
                    Duration::ZERO
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot apply the config's schedules yet");
                    reload_every
                }
            }
        } else {
            match scheduler.pass().await {
                Ok(pass) => {
                    if failing {
                        tracing::info!("scheduler reaches Redis again");
                        failing = false;
                    }
                    pass.wait
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "scheduler pass failed; retrying every reload_every");
                        failing = true;
                    }
                    reload_every
                }
            }
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use cacheserver_config::{AppEnv, Settings};
    use cacheserver_jobqueue::{JobQueue, JobStatus};
    use cacheserver_testkit::RedisServer;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct TestClock(AtomicU64);

    impl Clock for TestClock {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    impl TestClock {
        fn set(&self, ms: u64) {
            self.0.store(ms, Ordering::SeqCst);
        }
    }

    fn schedule(name: &str, cron: &str, overlap: Overlap, missed: Missed) -> Schedule {
        serde_json::from_value(serde_json::json!({
            "name": name, "cron": cron,
            "job": {"type": "demo:delay_print", "payload": {"message": name}},
        }))
        .map(|s: Schedule| Schedule {
            overlap,
            missed,
            ..s
        })
        .unwrap()
    }

    fn client(redis: &RedisServer) -> JobQueue {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let vars = HashMap::from([(
            "APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR".to_string(),
            redis.addr(),
        )]);
        let s = Settings::load_from(&root, AppEnv::Test, Some(vars)).unwrap();
        JobQueue::new(&s.cache_server.redis.jobqueue, &s.jobqueue).unwrap()
    }

    /// Run-at of every job in the default queue (no worker runs here: each is scheduled, or
    /// pending once its time came), in ms, sorted.
    async fn scheduled_run_ats(q: &JobQueue) -> Vec<u64> {
        let mut at = Vec::new();
        for state in [JobStatus::Scheduled, JobStatus::Pending] {
            let page = q.list(state, None, 500, None).await.unwrap();
            at.extend(page.jobs.iter().map(|j| j.run_at.timestamp_millis() as u64));
        }
        at.sort();
        at
    }

    const MIN: u64 = 60_000;
    const MISSED: Duration = Duration::from_secs(5);

    #[test]
    fn on_time_ticks_run_missed_ones_follow_the_rule() {
        let every_minute = schedule("m", "* * * * *", Overlap::Allow, Missed::Skip);
        let t = 1_800_000_000_000 / MIN * MIN; // a whole minute
        assert_eq!(
            decide(&every_minute, t, t + 100, MISSED).unwrap(),
            Decision {
                next_ms: t + MIN,
                run_ms: Some(t)
            }
        );
        // Reached 10 minutes late: skip all, go on with the next one not missed.
        assert_eq!(
            decide(&every_minute, t, t + 10 * MIN, MISSED).unwrap(),
            Decision {
                next_ms: t + 10 * MIN,
                run_ms: None
            }
        );
        let once = Schedule {
            missed: Missed::RunOnce,
            ..every_minute
        };
        // run_once: one job, for the latest missed tick.
        assert_eq!(
            decide(&once, t, t + 10 * MIN + 1, MISSED).unwrap(),
            Decision {
                next_ms: t + 10 * MIN,
                run_ms: Some(t + 9 * MIN)
            }
        );
    }

    /// Three schedulers (as in three workers) passing at the same instants: every tick is
    /// claimed by exactly one, its job due exactly at the tick.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_schedulers_enqueue_each_tick_once_due_at_the_tick() {
        let redis = RedisServer::start();
        let q = client(&redis);
        let s = schedule("every-second", "* * * * * *", Overlap::Allow, Missed::Skip);
        assert!(q.schedules().create(&s).await.unwrap());
        let first = q.schedules().get("every-second").await.unwrap().unwrap();
        let first = first.next_run_at.unwrap().timestamp_millis() as u64;
        let clock = Arc::new(TestClock(AtomicU64::new(first - 1000)));
        let schedulers: Vec<_> = (0..3)
            .map(|_| Scheduler::new(q.schedules(), clock.clone()))
            .collect();
        let ahead = SchedulerSettings::default().enqueue_ahead.as_millis() as u64;
        let mut claimed = 0;
        for step in 0..10u64 {
            // Just before the lead time: nothing; inside it: the tick.
            clock.set(first + step * 1000 - ahead - 1);
            for s in &schedulers {
                assert_eq!(s.pass().await.unwrap().claimed, 0);
            }
            clock.set(first + step * 1000 - ahead + 10);
            let passes = futures::future::join_all(schedulers.iter().map(|s| s.pass())).await;
            claimed += passes
                .iter()
                .map(|p| p.as_ref().unwrap().claimed)
                .sum::<usize>();
        }
        assert_eq!(claimed, 10);
        let expected: Vec<u64> = (0..10).map(|i| first + i * 1000).collect();
        assert_eq!(scheduled_run_ats(&q).await, expected);
        let info = q.schedules().get("every-second").await.unwrap().unwrap();
        assert_eq!(
            info.last_run_at.unwrap().timestamp_millis() as u64,
            first + 9000
        );
        assert_eq!(
            info.next_run_at.unwrap().timestamp_millis() as u64,
            first + 10_000
        );
    }

    /// After downtime, `missed: run_once` enqueues exactly one job for the missed ticks, then
    /// goes on on time; `missed: skip` enqueues none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missed_ticks_run_once_or_are_skipped() {
        let redis = RedisServer::start();
        let q = client(&redis);
        for (name, missed) in [("once", Missed::RunOnce), ("skip", Missed::Skip)] {
            let s = schedule(name, "*/10 * * * * *", Overlap::Allow, missed);
            assert!(q.schedules().create(&s).await.unwrap());
        }
        let next = |name: &'static str| {
            let q = q.clone();
            async move {
                let info = q.schedules().get(name).await.unwrap().unwrap();
                info.next_run_at.unwrap().timestamp_millis() as u64
            }
        };
        let first = next("once").await;
        // Down for two minutes: 12 ticks missed.
        let clock = Arc::new(TestClock(AtomicU64::new(first + 2 * MIN + 1)));
        let scheduler = Scheduler::new(q.schedules(), clock.clone());
        let pass = scheduler.pass().await.unwrap();
        assert_eq!(pass.claimed, 2);
        assert_eq!(scheduled_run_ats(&q).await, vec![first + 2 * MIN - 10_000]);
        // Both go on with the tick that is not missed (1 ms ago), then nothing is due.
        assert_eq!(next("once").await, first + 2 * MIN);
        assert_eq!(next("skip").await, first + 2 * MIN);
        let skip = q.schedules().get("skip").await.unwrap().unwrap();
        assert_eq!((skip.skipped, skip.last_job_id), (1, None));
        assert_eq!(scheduler.pass().await.unwrap().claimed, 2);
        assert_eq!(scheduler.pass().await.unwrap().claimed, 0);
        let on_time = first + 2 * MIN;
        assert_eq!(
            scheduled_run_ats(&q).await,
            vec![on_time - 10_000, on_time, on_time]
        );
    }

    /// A claim whose worker stopped before storing the job is stored by another, once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unconfirmed_claim_is_enqueued_by_another_worker() {
        let redis = RedisServer::start();
        let q = client(&redis);
        let s = schedule("lost", "*/10 * * * * *", Overlap::Allow, Missed::Skip);
        assert!(q.schedules().create(&s).await.unwrap());
        let info = q.schedules().get("lost").await.unwrap().unwrap();
        let tick = info.next_run_at.unwrap().timestamp_millis() as u64;
        // A worker claims the tick and dies before enqueueing.
        let now = tick - 100;
        assert!(q
            .schedules()
            .claim("lost", tick, tick + 10_000, Some(tick), now)
            .await
            .unwrap());
        let clock = Arc::new(TestClock(AtomicU64::new(now + 1000)));
        let other = Scheduler::new(q.schedules(), clock.clone());
        assert_eq!(other.pass().await.unwrap().recovered, 0, "too early");
        clock.set(now + SchedulerSettings::default().recover_after.as_millis() as u64 + 1);
        assert_eq!(other.pass().await.unwrap().recovered, 1);
        assert_eq!(other.pass().await.unwrap().recovered, 0);
        assert_eq!(scheduled_run_ats(&q).await, vec![tick]);
        // The dead worker's late enqueue of the same tick stores nothing new.
        let again = q.schedules().enqueue_tick(&s, tick).await.unwrap();
        assert_eq!(scheduled_run_ats(&q).await, vec![tick]);
        let info = q.schedules().get("lost").await.unwrap().unwrap();
        assert_eq!(info.last_job_id, Some(again));
    }

    /// Config wins: a declared schedule replaces the api's of the same name at worker start,
    /// keeping its next tick when the timing is the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_config_replaces_an_api_schedule_of_the_same_name() {
        let redis = RedisServer::start();
        let q = client(&redis);
        let from_api = schedule("report", "0 3 * * *", Overlap::Allow, Missed::Skip);
        assert!(q.schedules().create(&from_api).await.unwrap());
        let before = q.schedules().get("report").await.unwrap().unwrap();
        let mut declared = from_api.clone();
        declared.job.payload = serde_json::json!({"message": "from config"});
        q.schedules().apply_declared(&[declared]).await.unwrap();
        let after = q.schedules().get("report").await.unwrap().unwrap();
        assert_eq!(after.source, "config");
        assert_eq!(after.schedule.job.payload["message"], "from config");
        assert_eq!(after.next_run_at, before.next_run_at);
        // A new timing moves the next tick.
        let mut hourly = after.schedule.clone();
        hourly.cron = "0 * * * *".into();
        q.schedules().apply_declared(&[hourly]).await.unwrap();
        let moved = q.schedules().get("report").await.unwrap().unwrap();
        assert_eq!(moved.schedule.cron, "0 * * * *");
        assert!(moved.next_run_at <= before.next_run_at);
    }

    /// The DST rule the README states (croner's): in Berlin's spring gap (02:00 → 03:00 on
    /// 2027-03-28) a fixed-time job runs right after the gap; in the autumn overlap (03:00 →
    /// 02:00 on 2027-10-31) once.
    #[test]
    fn daylight_saving_time_follows_croners_rule() {
        let mut s = schedule("dst", "30 2 * * *", Overlap::Allow, Missed::Skip);
        s.timezone = "Europe/Berlin".into();
        let ms = |iso: &str| {
            chrono::DateTime::parse_from_rfc3339(iso)
                .unwrap()
                .timestamp_millis() as u64
        };
        let iso = |ms: u64| {
            chrono::DateTime::from_timestamp_millis(ms as i64)
                .unwrap()
                .to_rfc3339()
        };
        let spring = next_tick(&s, ms("2027-03-27T23:00:00Z"), false).unwrap();
        assert_eq!(
            iso(spring),
            "2027-03-28T01:00:00+00:00",
            "03:00 CEST, after the gap"
        );
        let autumn = next_tick(&s, ms("2027-10-30T22:00:00Z"), false).unwrap();
        assert_eq!(
            iso(autumn),
            "2027-10-31T00:30:00+00:00",
            "the first 02:30 (CEST)"
        );
        let after = next_tick(&s, autumn, false).unwrap();
        assert_eq!(
            iso(after),
            "2027-11-01T01:30:00+00:00",
            "not again at 02:30 CET"
        );
    }
}
