//! `media:thumbnail {image_url, width}`: the README's "Adding a job type" example.

use cacheserver_jobqueue::{JobContext, JobError, JobType};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub struct Thumbnail;

/// The payload of `media:thumbnail`. Its `#[schema(..)]` attributes are its rules: the api checks
/// every payload against this schema (400 naming the field) and the OpenAPI spec publishes it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailPayload {
    /// The image to scale (http or https).
    #[schema(example = "https://images.example.com/cat.png", pattern = "^https?://")]
    pub image_url: String,
    /// Width of the thumbnail in pixels.
    #[schema(minimum = 1, maximum = 4096, example = 256)]
    pub width: u32,
}

impl JobType for Thumbnail {
    const NAME: &'static str = "media:thumbnail";
    type Payload = ThumbnailPayload;

    fn default_timeout(&self) -> Option<Duration> {
        Some(Duration::from_secs(30))
    }

    async fn run(&self, payload: ThumbnailPayload, ctx: &JobContext) -> Result<(), JobError> {
        // Fail with JobError::retry("..") to try again with backoff, JobError::fatal("..") to
        // make the job dead at once.
        tracing::info!(job_id = %ctx.job_id, url = %payload.image_url, width = payload.width, "thumbnail");
        Ok(())
    }
}
