//! Optional bearer-token guards (`jobqueue.api_key`, `chaos.token`): one middleware per scope,
//! so no handler has to remember the check.

use crate::error::ApiError;
use crate::state::AppState;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest};
use cacheserver_config::{ExposeSecret, SecretString, Settings};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Middleware of the jobs and queues scopes: 401 unless the bearer token is `jobqueue.api_key`
/// (when one is set).
pub async fn jobs_api_key(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let settings = match settings(&req) {
        Ok(settings) => settings,
        Err(error) => return Ok(req.error_response(error).map_into_right_body()),
    };
    bearer(req, next, settings.jobqueue.api_key.as_ref()).await
}

/// The app's settings; a missing state is a wiring bug, answered 500 rather than let through.
pub fn settings(req: &ServiceRequest) -> Result<Arc<Settings>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .map(|state| state.settings.clone())
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("AppState missing from the app")))
}

/// Call `next` when the request carries `secret` (or none is set); else answer 401.
pub async fn bearer(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
    secret: Option<&SecretString>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    match require_bearer(req.request(), secret) {
        Ok(()) => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
        Err(error) => Ok(req.error_response(error).map_into_right_body()),
    }
}

/// Ok when no secret is configured, or when `Authorization: Bearer <secret>` matches it.
pub fn require_bearer(req: &HttpRequest, secret: Option<&SecretString>) -> Result<(), ApiError> {
    let Some(secret) = secret else { return Ok(()) };
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if constant_time_eq(presented.as_bytes(), secret.expose_secret().as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// No early exit on the first differing byte, so timing does not reveal how much of a guess
/// was right (only whether the length was).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn secrets_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn bearer_is_required_only_when_a_secret_is_set() {
        let secret: SecretString = "s3cret".to_owned().into();
        let bare = TestRequest::default().to_http_request();
        assert!(require_bearer(&bare, None).is_ok());
        assert!(require_bearer(&bare, Some(&secret)).is_err());
        let good = TestRequest::default()
            .insert_header((AUTHORIZATION, "Bearer s3cret"))
            .to_http_request();
        assert!(require_bearer(&good, Some(&secret)).is_ok());
        let bad = TestRequest::default()
            .insert_header((AUTHORIZATION, "Bearer s3cre"))
            .to_http_request();
        assert!(require_bearer(&bad, Some(&secret)).is_err());
    }
}
