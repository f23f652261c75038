//! Keeps a worker alive across Redis outages and drains it on shutdown.
//!
//! apalis-redis ends its worker on the first Redis error and `run()` simply returns
//! (apalis-redis#76), so a process would exit 0 on a Redis blip. The supervisor restarts it with
//! backoff and logs each outage and recovery with timings. Beside the apalis worker it runs the
//! result writer (`acks.rs`), the wake-up listener (`backend.rs`) and the housekeeping loop
//! (`housekeeping.rs`: heartbeat, reap dead workers, trim done jobs).

use crate::acks::Acks;
use crate::backend::{self, Fetcher, QueueBackend};
use crate::housekeeping::housekeeping_loop;
use crate::runner::{self, Backoff, Runner};
use apalis::prelude::{WorkerBuilder, WorkerBuilderExt, WorkerError};
use cacheserver_config::{JobqueueSettings, ServedQueue, SingleRedisSettings};
use cacheserver_jobqueue::store::{self, Store};
use cacheserver_jobqueue::{JobQueueError, Registry};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A misconfiguration (wrong password, missing ACL permission, TLS trust) is said this often.
const MISCONFIG_LOG_EVERY: Duration = Duration::from_secs(60);
/// How long queued results may take to be written before a restart or exit.
const FLUSH_WITHIN: Duration = Duration::from_secs(3);

/// How one worker process runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub name: String,
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub shutdown_grace: Duration,
    pub done_retention: Duration,
    pub backoff: Backoff,
    /// Longest run of a job whose type and registration name none.
    pub default_timeout: Duration,
    /// The queues served, in order, with their weights (never empty).
    pub queues: Vec<ServedQueue>,
    /// Always fetch from the first queue (in order) with a due job, instead of by weight.
    pub strict: bool,
}

impl WorkerOptions {
    /// From `jobqueue.worker`; `name` empty means `<hostname>-<pid>`.
    pub fn from_settings(settings: &JobqueueSettings) -> Self {
        let w = &settings.worker;
        Self {
            name: if w.name.trim().is_empty() {
                default_worker_name()
            } else {
                w.name.clone()
            },
            concurrency: w.concurrency.clamp(1, 1024) as usize,
            poll_interval: w.poll_interval,
            shutdown_grace: w.shutdown_grace,
            done_retention: settings.done_retention,
            backoff: Backoff {
                base: w.retry_backoff,
                max: w.retry_backoff_max,
            },
            default_timeout: settings.default_timeout,
            queues: served_queues(settings),
            strict: w.strict,
        }
    }
}

/// `jobqueue.worker.queues`, else the default queue and every declared one (validated at load).
fn served_queues(settings: &JobqueueSettings) -> Vec<ServedQueue> {
    cacheserver_config::parse_served_queues(&settings.worker.queues)
        .ok()
        .filter(|q| !q.is_empty())
        .unwrap_or_else(|| {
            cacheserver_config::default_served_queues(&settings.queue, &settings.queues)
        })
}

/// `<hostname>-<pid>`: unique per process, which apalis needs (apalis#504).
pub fn default_worker_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// What `/health` and `/metrics` read.
#[derive(Debug, Default)]
pub struct WorkerState {
    /// The apalis worker is running (not between restarts).
    pub running: AtomicBool,
    /// The last Redis call of the housekeeping loop (every heartbeat) succeeded.
    pub connected: AtomicBool,
    pub restarts: AtomicU64,
    /// Why the apalis worker last stopped (`misconfigured: ...` or the outage), until it runs
    /// again; `/health` shows it. Redis' replies, never a secret.
    reason: std::sync::Mutex<Option<String>>,
}

impl WorkerState {
    pub fn healthy(&self) -> bool {
        self.running.load(Ordering::Relaxed) && self.connected.load(Ordering::Relaxed)
    }

    pub fn reason(&self) -> Option<String> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }

    fn set_reason(&self, why: Option<String>) {
        if let Ok(mut r) = self.reason.lock() {
            *r = why;
        }
    }
}

pub struct Supervisor {
    redis: SingleRedisSettings,
    store: Store,
    options: WorkerOptions,
    state: Arc<WorkerState>,
    registry: Registry,
    /// For the scheduler's client (`jobqueue.schedules` and the enqueue settings).
    settings: JobqueueSettings,
}

impl Supervisor {
    pub fn new(
        redis: &SingleRedisSettings,
        settings: &JobqueueSettings,
        options: WorkerOptions,
    ) -> Result<Self, JobQueueError> {
        Ok(Self {
            redis: redis.clone(),
            store: Store::new(redis, &settings.queue, settings.events_max_len)?,
            options,
            state: Arc::new(WorkerState::default()),
            registry: Registry::production(settings),
            settings: settings.clone(),
        })
    }

    /// Run the job types of `registry` instead of the production ones (tests, embedders).
    pub fn with_registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    pub fn state(&self) -> Arc<WorkerState> {
        self.state.clone()
    }

    /// Run until `shutdown` turns true, then stop fetching, let in-flight jobs finish within
    /// `shutdown_grace`, write their results and return.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let wake = Arc::new(tokio::sync::Notify::new());
        let listener = tokio::spawn(backend::listen_for_wakeups(
            self.blocking_settings(),
            self.served_keys(),
            wake.clone(),
            self.options.poll_interval,
        ));
        let cancels = runner::Cancels::default();
        let cancel_listener = tokio::spawn(runner::listen_for_cancels(
            self.blocking_settings(),
            self.served_keys(),
            self.options.name.clone(),
            cancels.clone(),
            self.options.poll_interval,
        ));
        let (acks, writer) = Acks::start(self.store.clone(), self.options.name.clone());
        let housekeeping = tokio::spawn(housekeeping_loop(
            self.store.clone(),
            self.options.clone(),
            self.state.clone(),
            shutdown.clone(),
        ));
        let scheduler = self.start_scheduler(shutdown.clone());
        self.supervise(shutdown, &acks, &wake, &cancels).await;
        listener.abort();
        cancel_listener.abort();
        housekeeping.abort();
        if let Some(scheduler) = scheduler {
            scheduler.abort();
        }
        if !acks.flush(FLUSH_WITHIN).await {
            tracing::warn!(
                "could not write every job result before stopping; those jobs will run again"
            );
        }
        drop(acks);
        writer.abort();
        tracing::info!(worker = %self.options.name, "worker stopped");
    }

    /// The scheduler (`scheduler.rs`), with a job client of this worker's registry.
    fn start_scheduler(
        &self,
        shutdown: watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let client = cacheserver_jobqueue::JobQueue::with_registry(
            &self.redis,
            &self.settings,
            self.registry.clone(),
        );
        match client {
            Ok(client) => Some(tokio::spawn(crate::scheduler::run(
                client,
                self.settings.schedules.clone(),
                self.settings.scheduler,
                Arc::new(crate::scheduler::SystemClock),
                shutdown,
            ))),
            Err(e) => {
                tracing::error!(error = %e, "schedules will not run: no job client");
                None
            }
        }
    }

    /// The keys of every served queue, in order.
    fn served_keys(&self) -> Vec<store::Keys> {
        self.options
            .queues
            .iter()
            .map(|q| self.store.keys_of(&q.name))
            .collect()
    }

    /// Settings for the wake-up listener's connection: it blocks in BLPOP for up to
    /// `poll_interval`, so its response timeout must outlast that.
    fn blocking_settings(&self) -> SingleRedisSettings {
        let mut blocking = self.redis.clone();
        blocking.read_timeout = blocking.read_timeout.max(self.options.poll_interval * 2);
        blocking.write_timeout = blocking.read_timeout;
        blocking
    }

    async fn supervise(
        &self,
        mut shutdown: watch::Receiver<bool>,
        acks: &Acks,
        wake: &Arc<tokio::sync::Notify>,
        cancels: &runner::Cancels,
    ) {
        let mut backoff = RESTART_BACKOFF_MIN;
        let mut outage_since: Option<Instant> = None;
        let mut misconfig = cacheserver_redis::classify::Throttle::new(MISCONFIG_LOG_EVERY);
        while !*shutdown.borrow() {
            let started = Instant::now();
            match self.run_once(shutdown.clone(), acks, wake, cancels).await {
                Ok(()) if *shutdown.borrow() => return,
                Ok(()) => tracing::warn!("apalis worker ended without error; restarting"),
                Err(JobQueueError::Misconfigured(why)) => {
                    // Not an outage: retry at the slowest pace, say why once per minute.
                    backoff = RESTART_BACKOFF_MAX;
                    self.state.set_reason(Some(format!("misconfigured: {why}")));
                    if misconfig.ready(Instant::now()) {
                        tracing::error!(error = %why, retry_every = ?backoff, "worker cannot use the jobqueue Redis (misconfiguration); repeating this once per minute");
                    }
                }
                Err(e) => {
                    self.state.set_reason(Some(e.to_string()));
                    let since = *outage_since.get_or_insert_with(Instant::now);
                    tracing::warn!(error = %e, outage_for = ?since.elapsed(), retry_in = ?backoff, "worker lost Redis; restarting");
                }
            }
            self.state.running.store(false, Ordering::Relaxed);
            self.state.restarts.fetch_add(1, Ordering::Relaxed);
            if started.elapsed() > Duration::from_secs(10) {
                backoff = RESTART_BACKOFF_MIN;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
            if let Some(since) =
                outage_since.take_if(|_| self.state.connected.load(Ordering::Relaxed))
            {
                tracing::info!(outage_for = ?since.elapsed(), "Redis reachable again");
            }
        }
    }

    /// One life of the apalis worker: connect, reclaim our own orphans, run until error or shutdown.
    async fn run_once(
        &self,
        mut shutdown: watch::Receiver<bool>,
        acks: &Acks,
        wake: &Arc<tokio::sync::Notify>,
        cancels: &runner::Cancels,
    ) -> Result<(), JobQueueError> {
        let connected = cacheserver_redis::single::connect(&self.redis).await;
        let mut conn = cacheserver_redis::single::explained(&self.redis, connected).await?;
        let served = self.served_keys();
        let name = &self.options.name;
        // Results of the previous life first: their jobs must not be re-queued as orphans.
        acks.flush(FLUSH_WITHIN).await;
        for (i, keys) in served.iter().enumerate() {
            let requeued = store::requeue_worker(&mut conn, keys, Some(name)).await?;
            if requeued > 0 {
                tracing::info!(requeued, worker = %name, queue = %keys.queue, "re-queued jobs left in flight by a previous run");
            }
            // apalis registers the worker in the first queue; the others are ours to do.
            if i > 0 {
                store::register_worker(&mut conn, keys, name).await?;
            }
            // A declared queue's limits go to Redis, where fetch.lua decides them for every
            // worker (the last worker started wins); an undeclared queue's are left as they are.
            let declared = self.settings.queues.iter().find(|q| q.name == keys.queue);
            let per_host = self.settings.webhook.per_host_rate_limit;
            if declared.is_some() || (keys.queue == self.settings.queue && per_host.is_some()) {
                let mut limits = declared.map(stored_limits).unwrap_or_default();
                // webhooks go to the default queue, their host as their limit key
                if keys.queue == self.settings.queue && limits.key_rate.is_none() {
                    limits.key_rate = per_host.map(|r| (r.max, r.per.as_millis().max(1) as u64));
                }
                store::write_limits(&mut conn, keys, limits).await?;
            }
        }
        let opts = &self.options;
        let weights = opts.queues.iter().map(|q| q.weight).collect();
        let fetcher = Fetcher {
            conn: conn.clone(),
            picker: std::sync::Mutex::new(backend::Picker::new(weights, opts.strict)),
            queues: served.clone(),
            worker: name.clone(),
            want: (opts.concurrency * 2).max(backend::MIN_FETCH),
            idle_wait: opts.poll_interval,
            wake: wake.clone(),
            acks: acks.clone(),
        };
        let apalis = crate::apalis::storage::<cacheserver_jobqueue::JobEnvelope>(
            conn,
            served[0].apalis.namespace(),
            opts.concurrency,
        );
        let runner = Runner {
            acks: acks.clone(),
            backoff: opts.backoff,
            registry: self.registry.clone(),
            default_timeout: opts.default_timeout,
            cancels: cancels.clone(),
        };
        let worker = WorkerBuilder::new(name.as_str())
            .backend(QueueBackend::new(apalis, fetcher))
            .data(runner)
            .concurrency(opts.concurrency)
            .build(runner::handle);
        self.state.running.store(true, Ordering::Relaxed);
        self.state.set_reason(None);
        let queues: Vec<String> = opts
            .queues
            .iter()
            .map(|q| format!("{}={}", q.name, q.weight))
            .collect();
        tracing::info!(worker = %name, concurrency = opts.concurrency, queues = %queues.join(","), strict = opts.strict, "apalis worker started");
        let mut signal = shutdown.clone();
        let run = worker.run_until(async move {
            let _ = signal.wait_for(|stop| *stop).await;
            Ok::<(), WorkerError>(())
        });
        tokio::pin!(run);
        let result = tokio::select! {
            res = &mut run => res,
            // The watch guard is dropped at once: the future stays `Send` for embedders' spawns.
            _ = async { drop(shutdown.wait_for(|stop| *stop).await) } => self.drain(run).await,
        };
        result.map_err(|e| crate::apalis::worker_error(&e))
    }

    /// After the stop signal: wait for in-flight jobs at most `shutdown_grace`.
    async fn drain(
        &self,
        run: std::pin::Pin<&mut impl std::future::Future<Output = Result<(), WorkerError>>>,
    ) -> Result<(), WorkerError> {
        tracing::info!(grace = ?self.options.shutdown_grace, "stopping: finishing in-flight jobs");
        match tokio::time::timeout(self.options.shutdown_grace, run).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!("shutdown grace elapsed; unfinished jobs will be re-queued");
                Ok(())
            }
        }
    }
}

/// `jobqueue.queues` entry → what `fetch.lua` reads.
fn stored_limits(declared: &cacheserver_config::QueueSettings) -> store::StoredLimits {
    store::StoredLimits {
        concurrency: declared.concurrency,
        rate: declared
            .rate_limit
            .map(|r| (r.max, r.per.as_millis().max(1) as u64)),
        key_concurrency: declared.key_concurrency,
        key_rate: declared
            .key_rate_limit
            .map(|r| (r.max, r.per.as_millis().max(1) as u64)),
    }
}
