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

/// What a run returns: stored with the job (at most 64 KB as JSON) and shown as its `result`.
/// A type with nothing to return says `type Output = ();`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ThumbnailResult {
    /// Where the thumbnail was stored.
    #[schema(example = "https://images.example.com/cat.256.png")]
    pub thumbnail_url: String,
}

impl JobType for Thumbnail {
    const NAME: &'static str = "media:thumbnail";
    type Payload = ThumbnailPayload;
    type Output = ThumbnailResult;

    fn default_timeout(&self) -> Option<Duration> {
        Some(Duration::from_secs(30))
    }

    async fn run(
        &self,
        payload: ThumbnailPayload,
        ctx: &JobContext,
    ) -> Result<ThumbnailResult, JobError> {
        // Fail with JobError::retry("..") to try again with backoff, JobError::fatal("..") to
        // make the job dead at once. Progress is cheap (coalesced); a cancel drops the run at its
        // next `.await` (a long loop can also check `ctx.is_cancelled()`).
        ctx.progress(0, "fetching the image")?;
        tracing::info!(job_id = %ctx.job_id, url = %payload.image_url, width = payload.width, "thumbnail");
        ctx.progress(100, "stored")?;
        Ok(ThumbnailResult {
            thumbnail_url: payload
                .image_url
                .replace(".png", &format!(".{}.png", payload.width)),
        })
    }
}
