//! Optional bearer-token guards (`jobqueue.api_key`, `chaos.token`).

use crate::error::ApiError;
use actix_web::http::header::AUTHORIZATION;
use actix_web::HttpRequest;
use cacheserver_config::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

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
