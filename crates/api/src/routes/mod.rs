//! Every route of the api, registered in one place.
//!
//! `/api/...` and `/chaos/...` are rate limited; health, readiness, metrics and docs are not.
//! The response cache wraps everything under `/api` but `ping` and the event streams.
//! Bearer tokens are checked per scope (`auth::jobs_api_key`, `chaos::guard`), not per handler.

pub mod chaos;
pub mod dm_jobqueue;
pub mod docs;
pub mod events;
pub(crate) mod fallback;
pub mod health;
pub mod job_dto;
pub mod jobs;
pub mod ping;
pub mod queues;
pub mod schedules;
mod spec_rules;
pub mod ui;

use crate::ratelimit::rate_limit;
use actix_web::middleware::from_fn;
use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(health::health)
        .service(health::ready)
        .service(health::metrics)
        .service(
            web::scope("/api")
                .wrap(from_fn(rate_limit))
                .service(ping::ping)
                // Event streams (SSE) before the cached scope: never through the response
                // cache; each checks the jobs API key itself.
                .configure(events::configure)
                .service(
                    // Everything under `/api` but `ping`: one guard for the jobs API key, then
                    // the response cache (`api.cache` decides which routes it caches).
                    web::scope("")
                        .wrap(from_fn(crate::cache::response_cache))
                        .wrap(from_fn(crate::auth::jobs_api_key))
                        .configure(jobs::configure)
                        .configure(queues::configure)
                        .configure(schedules::configure)
                        .configure(dm_jobqueue::configure),
                ),
        )
        .service(
            web::scope("/chaos")
                // The last wrap runs first: rate limit, then the guard.
                .wrap(from_fn(chaos::guard))
                .wrap(from_fn(rate_limit))
                .service(chaos::redis_reset)
                .service(chaos::status),
        )
        .service(ui::index)
        .service(ui::app_js)
        .service(ui::app_css)
        .route(docs::SPEC_PATH, web::get().to(docs::openapi_json))
        .service(docs::swagger_ui())
        .default_service(web::to(fallback::unmatched));
}
