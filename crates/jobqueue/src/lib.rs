//! Delayed jobs on one Redis through apalis (placeholder: being written).

use cacheserver_config::{JobqueueSettings, SingleRedisSettings};

#[derive(Debug, thiserror::Error)]
pub enum JobQueueError {
    #[error("jobqueue Redis unavailable: {0}")]
    Unavailable(String),
}

#[derive(Clone)]
pub struct JobQueue {}

impl JobQueue {
    /// Never waits for Redis.
    pub fn new(
        _redis: &SingleRedisSettings,
        _settings: &JobqueueSettings,
    ) -> Result<Self, JobQueueError> {
        Ok(Self {})
    }

    pub async fn ping(&self) -> Result<(), JobQueueError> {
        Err(JobQueueError::Unavailable("not implemented".into()))
    }
}
