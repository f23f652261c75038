//! CORS for browser clients on other origins: `api.cors.allowed_origins` (default: none, and then
//! no CORS headers at all). actix-cors checks the origin and answers preflights around the whole
//! app, before routing, so a preflight costs no rate-limit unit and needs no token; a preflight's
//! `Access-Control-Allow-Methods` is then narrowed to the methods the OpenAPI spec lists for that
//! path (the spec is the route table: `routes::fallback`).

use crate::error::ApiError;
use crate::routes::fallback::allowed_methods;
use actix_cors::Cors;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::{Condition, Next};
use actix_web::ResponseError;
use cacheserver_config::CorsSettings;

/// Request headers a browser may send: JSON bodies, bearer tokens, the jobs API key.
const ALLOWED_HEADERS: [&str; 3] = ["authorization", "content-type", "x-api-key"];
/// Response headers a browser script may read: the rate-limit answer and where a job went.
const EXPOSED_HEADERS: [&str; 11] = [
    "retry-after",
    "ratelimit",
    "ratelimit-policy",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-hour-limit",
    "x-ratelimit-hour-remaining",
    "x-ratelimit-hour-reset",
    "location",
    "allow",
];
/// How long a browser may cache a preflight answer.
const MAX_AGE_SECS: usize = 3600;

/// actix-cors configured from settings; a no-op when no origin is allowed.
pub fn middleware(settings: &CorsSettings) -> Condition<Cors> {
    if !settings.is_enabled() {
        return Condition::new(false, Cors::default());
    }
    let methods = ["GET", "POST", "PUT", "PATCH", "DELETE"];
    let mut cors = Cors::default()
        .allowed_methods(methods)
        .allowed_headers(ALLOWED_HEADERS)
        .expose_headers(EXPOSED_HEADERS)
        .max_age(MAX_AGE_SECS);
    cors = if settings.any_origin() {
        cors.allow_any_origin().send_wildcard()
    } else {
        settings
            .allowed_origins
            .iter()
            .fold(cors, |c, origin| c.allowed_origin(origin))
    };
    Condition::new(true, cors)
}

/// Around [`middleware`]: a preflight answer lists the spec's methods for its path, and a refused
/// preflight (origin, method or header not allowed) gets our JSON error shape.
pub async fn preflight_methods(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let preflight = req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let path = req.path().to_owned();
    let mut res = next.call(req).await?;
    if !preflight {
        return Ok(res.map_into_left_body());
    }
    if res.status().is_client_error() {
        let error = ApiError::BadRequest(
            "CORS preflight refused: origin, method or headers not allowed".into(),
        );
        let (req, _) = res.into_parts();
        return Ok(ServiceResponse::new(req, error.error_response()).map_into_right_body());
    }
    let methods = allowed_methods(&path);
    if res
        .headers()
        .contains_key(header::ACCESS_CONTROL_ALLOW_METHODS)
        && !methods.is_empty()
    {
        if let Ok(value) = HeaderValue::from_str(&methods.join(", ")) {
            res.headers_mut()
                .insert(header::ACCESS_CONTROL_ALLOW_METHODS, value);
        }
    }
    Ok(res.map_into_left_body())
}
