//! The one error type of the jobqueue library.

use cacheserver_redis::RedisError;

/// What can go wrong with the job queue. The api maps each variant to a status code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JobQueueError {
    /// Redis did not answer in time or refused the connection (api: 503).
    #[error("jobqueue Redis unavailable: {0}")]
    Unavailable(String),
    /// A caller mistake: empty message, too many jobs in a batch, … (api: 400).
    #[error("{0}")]
    Invalid(String),
    /// No job with this id (api: 404).
    #[error("job {0} not found")]
    NotFound(String),
    /// The job exists but is not dead, so it cannot be retried (api: 409).
    #[error("job {id} is {status}, only dead jobs can be retried")]
    NotDead { id: String, status: String },
    /// Redis refused us: wrong password, a missing ACL permission, an untrusted certificate
    /// (api: 503, `/ready` names it). Retrying fast does not help (`cacheserver_redis::classify`).
    #[error("{0}")]
    Misconfigured(String),
    /// The job was written but `WAIT` did not see `min_replicas_acked` replicas take it within
    /// the budget (api: 503 saying so; a retry is safe).
    #[error("{0}")]
    NotConfirmed(String),
    /// The unique key is held by another job (api: 409 with `job_id`).
    #[error("a job with this unique_key exists: {job_id}")]
    Duplicate { job_id: String },
    /// The job is done, dead or cancelled already, so it cannot be cancelled (api: 409).
    #[error(
        "job {id} is {status}; only scheduled, pending, retrying or running jobs can be cancelled"
    )]
    Finished { id: String, status: String },
    /// A worker runs the job now; it cannot be deleted until it finished (api: 409).
    #[error("job {0} is running; delete it once it finished")]
    Running(String),
    /// Settings that cannot work (bad address).
    #[error("jobqueue configuration: {0}")]
    Config(String),
    /// Redis answered with an error, or data we cannot read (api: 500).
    #[error("jobqueue internal error: {0}")]
    Internal(String),
}

impl From<RedisError> for JobQueueError {
    fn from(e: RedisError) -> Self {
        match e {
            RedisError::Unavailable(m) => Self::Unavailable(m),
            RedisError::NotConnected | RedisError::Timeout(_) => Self::Unavailable(e.to_string()),
            RedisError::Misconfigured(m) => Self::Misconfigured(m),
            RedisError::NotConfirmed(m) => Self::NotConfirmed(m),
            RedisError::Config(m) => Self::Config(m),
            RedisError::Internal(m) => Self::Internal(m),
            RedisError::Redis(e) => Self::Internal(e.to_string()),
        }
    }
}

impl From<redis::RedisError> for JobQueueError {
    fn from(e: redis::RedisError) -> Self {
        RedisError::from(e).into()
    }
}

impl From<serde_json::Error> for JobQueueError {
    fn from(e: serde_json::Error) -> Self {
        Self::Internal(format!("json: {e}"))
    }
}
