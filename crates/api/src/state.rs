//! What every handler can reach, built once by `startup`.

use crate::ratelimit::Limiter;
use crate::redis_cluster::RedisCluster;
use cacheserver_config::Settings;
use cacheserver_jobqueue::JobQueue;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

pub struct AppState {
    pub settings: Arc<Settings>,
    /// `None` when no cluster is configured or the limiter runs in memory.
    pub redis: Option<RedisCluster>,
    pub limiter: Limiter,
    pub jobs: JobQueue,
    pub metrics: PrometheusHandle,
    /// Cooldown, serialization and history of chaos resets.
    pub chaos: crate::chaos::ChaosState,
    /// One permit per open event stream (`api.max_event_streams`); a stream holds its permit
    /// until its client disconnects.
    pub event_streams: Arc<tokio::sync::Semaphore>,
}
