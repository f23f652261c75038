//! The one error type of the Redis layer.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The cluster pool has no connection (and fails fast rather than queueing).
    #[error("no connection to the Redis cluster")]
    NotConnected,
    /// A call exceeded its budget.
    #[error("Redis call timed out after {0:?}")]
    Timeout(Duration),
    /// fred's error (the cluster pool).
    #[error("Redis error: {0}")]
    Redis(#[from] fred::error::Error),
    /// Settings that cannot work: a bad address, an unreadable or invalid TLS file.
    #[error("invalid Redis settings: {0}")]
    Config(String),
    /// Redis did not answer or refused the connection (an outage; retrying helps).
    #[error("Redis unavailable: {0}")]
    Unavailable(String),
    /// Redis refused us: credentials, an ACL permission, TLS trust ([`crate::classify`]).
    /// Retrying fast does not help.
    #[error("{0}")]
    Misconfigured(String),
    /// A write reached the master but not `min_replicas_acked` replicas within the budget.
    #[error("{0}")]
    NotConfirmed(String),
    /// Redis answered with an error we did not expect (a script or type error: a bug).
    #[error("Redis internal error: {0}")]
    Internal(String),
}

impl From<redis::RedisError> for RedisError {
    /// Connection trouble is an outage; a refusal is a misconfiguration; a script or type error
    /// is a bug on our side.
    fn from(e: redis::RedisError) -> Self {
        if let Some(why) = crate::classify::misconfiguration_single(&e) {
            Self::Misconfigured(why)
        } else if e.code() == Some("READONLY") {
            // The node we talk to was demoted to a replica (a failover is under way).
            Self::Unavailable(format!("failover in progress: {e}"))
        } else if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
            || e.code() == Some("LOADING")
        {
            Self::Unavailable(e.to_string())
        } else {
            Self::Internal(e.to_string())
        }
    }
}
