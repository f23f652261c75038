//! `bench:noop {}`: does nothing. Compiled only with the `bench` feature (`just bench` builds the
//! worker with it), so the benchmark can measure the queue without the demo job's printing; it is
//! never in a production registry.

use super::{JobContext, JobError, JobType};
use serde::{Deserialize, Serialize};

pub struct Noop;

/// The payload of `bench:noop`: nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NoopPayload {}

impl JobType for Noop {
    const NAME: &'static str = "bench:noop";
    type Payload = NoopPayload;

    async fn run(&self, _payload: NoopPayload, _ctx: &JobContext) -> Result<(), JobError> {
        Ok(())
    }
}
