//! OpenAPI 3.1 description of every route (utoipa) and Swagger UI (vendored, works offline).
//!
//! Spec: `GET /api-docs/openapi.json`; UI: `/swagger-ui/`. A handler joins the spec by carrying
//! `#[utoipa::path]` and being listed in `paths(...)` below; `tests/api/docs.rs` fails when a
//! registered route is missing here. The job types (and their payload schemas) are those of the
//! app's registry, so an app built with extra types documents them too.

use super::spec_rules::{ChaosBody, JobTypes, RateLimited, RequestRules};
use super::{chaos, dm_jobqueue, events, health, jobs, ping, queues, schedules, ui};
use crate::error::ErrorBody;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use cacheserver_jobqueue::Registry;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

pub const SPEC_PATH: &str = "/api-docs/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cacheserver api",
        description = "Rate limiting on a Redis Cluster, delayed jobs, chaos, health and metrics. \
            `/api/...` and `/chaos/...` are rate limited per client IP (429 with `Retry-After`). \
            Every error is `{\"code\": <status>, \"message\": \"...\"}`."
    ),
    paths(
        health::health,
        health::ready,
        health::metrics,
        ping::ping,
        chaos::redis_reset,
        chaos::status,
        ui::index,
    ),
    // The jobs handlers are declared relative to their `/api` scope.
    nest((path = "/api", api = ApiScope)),
    components(schemas(ErrorBody, health::HealthBody, health::ReadyBody, health::ReadyChecks, events::JobEventBody)),
    // `JobTypes` (per registry) is applied by `spec_for`, after these: each type's request is
    // cloned from the finished `JobRequest`.
    modifiers(&BearerTokens, &RequestRules, &RateLimited, &ChaosBody),
    tags(
        (name = "health", description = "liveness, readiness, Prometheus metrics"),
        (name = "chaos", description = "close Redis connections on purpose (disabled in production)"),
        (name = "jobs", description = "register, inspect, list, retry and delete jobs of any registered type"),
        (name = "queues", description = "queue counts, pause/resume, per-minute history"),
        (name = "schedules", description = "cron schedules: exactly one job per tick, whatever the number of workers"),
        (name = "ui", description = "the built-in jobs page"),
    )
)]
pub struct ApiDoc;

/// Routes registered inside `web::scope("/api")` whose `#[utoipa::path]` omits the prefix.
#[derive(OpenApi)]
#[openapi(paths(
    jobs::create,
    jobs::create_batch,
    jobs::list,
    jobs::get_job,
    jobs::retry_job,
    jobs::delete_job,
    jobs::bulk_retry,
    jobs::bulk_delete,
    jobs::cancel_job,
    jobs::bulk_cancel,
    events::job_events,
    queues::list_queues,
    queues::get_queue,
    queues::pause,
    queues::resume,
    queues::history,
    events::queue_events,
    schedules::list_schedules,
    schedules::create_schedule,
    schedules::get_schedule,
    schedules::replace_schedule,
    schedules::delete_schedule,
    schedules::pause_schedule,
    schedules::resume_schedule,
    schedules::trigger_schedule,
    dm_jobqueue::register,
    dm_jobqueue::register_batch_route,
    dm_jobqueue::list_jobs,
    dm_jobqueue::get_job,
    dm_jobqueue::stats,
    dm_jobqueue::retry_job,
    dm_jobqueue::delete_job,
))]
struct ApiScope;

/// Bearer schemes referenced by `security(...)` in the route docs.
struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["chaos_token", "jobs_api_key"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
        }
    }
}

/// The spec of an app running the production job types.
pub fn spec() -> utoipa::openapi::OpenApi {
    spec_for(&Registry::production(&Default::default()))
}

/// The spec of an app whose jobs API accepts the types of `registry`.
pub fn spec_for(registry: &Registry) -> utoipa::openapi::OpenApi {
    let mut spec = ApiDoc::openapi();
    JobTypes(registry).modify(&mut spec);
    spec
}

/// `GET` [`SPEC_PATH`]: the spec for this app's registry (built per request: it is rarely read).
pub async fn openapi_json(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(spec_for(state.jobs.registry()))
}

/// Swagger UI at `/swagger-ui/`, reading the spec at [`SPEC_PATH`].
pub fn swagger_ui() -> SwaggerUi {
    SwaggerUi::new("/swagger-ui/{_:.*}").config(Config::from(SPEC_PATH))
}
