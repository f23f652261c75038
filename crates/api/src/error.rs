//! The one HTTP error type: a status and `{"code": <status>, "message": "..."}`. Causes are
//! logged here and never sent to the client.

use actix_web::{http::StatusCode, HttpResponse, ResponseError};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("unauthorized")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// 409 naming the job that already holds a unique key.
    #[error("{message}")]
    Duplicate { message: String, job_id: String },
    #[error("request body too large")]
    PayloadTooLarge,
    /// The path exists, not with this method; `allow` lists the ones it has.
    #[error("{method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed { method: String, allow: String },
    #[error("Too Many Requests")]
    TooManyRequests { retry_after_secs: u64 },
    /// A backend (Redis) did not answer in time; the cause is logged.
    #[error("service unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// A job was written but not confirmed by `min_replicas_acked` replicas; the client is told.
    #[error("{0}")]
    NotConfirmed(String),
    /// Anything else; the cause is logged, the client sees an opaque message.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The error body every route returns.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The HTTP status code again.
    #[schema(example = 400)]
    pub code: u16,
    #[schema(example = "message must not be empty")]
    pub message: String,
    /// On a 409 for a taken `unique_key`: the job that holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) | Self::Duplicate { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::NotConfirmed(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Unavailable(cause) => {
                tracing::warn!(error = %format!("{cause:#}"), "backend unavailable")
            }
            Self::Internal(cause) => {
                tracing::error!(error = %format!("{cause:#}"), "internal error")
            }
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        if let Self::TooManyRequests { retry_after_secs } = self {
            response.insert_header(("Retry-After", retry_after_secs.to_string()));
        }
        if let Self::MethodNotAllowed { allow, .. } = self {
            response.insert_header(("Allow", allow.as_str()));
        }
        if matches!(self, Self::Unauthorized) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        let job_id = match self {
            Self::Duplicate { job_id, .. } => Some(job_id.clone()),
            _ => None,
        };
        response.json(ErrorBody {
            code: self.status_code().as_u16(),
            message: self.to_string(),
            job_id,
        })
    }
}

/// JSON body errors from actix (bad JSON, wrong content type, too large) in our error shape.
pub fn json_error_handler(
    err: actix_web::error::JsonPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    let api_error = match &err {
        E::OverflowKnownLength { .. } | E::Overflow { .. } => ApiError::PayloadTooLarge,
        E::ContentType => ApiError::BadRequest("Content-Type must be application/json".into()),
        E::Deserialize(e) => ApiError::BadRequest(format!("invalid JSON body: {e}")),
        _ => ApiError::BadRequest(format!("invalid request body: {err}")),
    };
    api_error.into()
}

/// Path parameter errors in our error shape.
pub fn path_error_handler(
    err: actix_web::error::PathError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid path: {err}")).into()
}

/// Query string errors in our error shape.
pub fn query_error_handler(
    err: actix_web::error::QueryPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid query: {err}")).into()
}

/// Jobqueue failures: outage → 503, caller mistakes → 400/404/409, the rest → opaque 500.
impl From<cacheserver_jobqueue::JobQueueError> for ApiError {
    fn from(e: cacheserver_jobqueue::JobQueueError) -> Self {
        use cacheserver_jobqueue::JobQueueError as E;
        match e {
            E::Unavailable(_) | E::Misconfigured(_) => Self::Unavailable(e.into()),
            E::NotConfirmed(m) => Self::NotConfirmed(m),
            E::Invalid(m) => Self::BadRequest(m),
            E::NotFound(id) => Self::NotFound(format!("job {id} not found")),
            E::NotDead { .. } | E::Running(_) | E::Finished { .. } => Self::Conflict(e.to_string()),
            E::Duplicate { ref job_id } => Self::Duplicate {
                message: e.to_string(),
                job_id: job_id.clone(),
            },
            E::Config(_) | E::Internal(_) => Self::Internal(e.into()),
        }
    }
}
