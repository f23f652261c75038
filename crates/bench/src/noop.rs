//! `bench:noop {}`: does nothing, so the benchmark measures the queue without the demo job's
//! printing. Only the bench's own worker (`bench-worker`) and queue register it; it is never in
//! the production registry.

use cacheserver_jobqueue::{JobContext, JobError, JobType};
use serde::{Deserialize, Serialize};

/// The type's name.
pub const NOOP: &str = "bench:noop";

pub struct Noop;

/// The payload of `bench:noop`: nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NoopPayload {}

impl JobType for Noop {
    const NAME: &'static str = NOOP;
    type Payload = NoopPayload;
    type Output = ();

    async fn run(&self, _payload: NoopPayload, _ctx: &JobContext) -> Result<(), JobError> {
        Ok(())
    }
}
