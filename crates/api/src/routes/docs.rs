//! OpenAPI 3.1 description of every route (utoipa) and Swagger UI (vendored, works offline).
//!
//! Spec: `GET /api-docs/openapi.json`; UI: `/swagger-ui/`. A handler joins the spec by carrying
//! `#[utoipa::path]` and being listed in `paths(...)` below; `tests/docs.rs` fails when a
//! registered route is missing here.

use super::{chaos, dm_jobqueue, health, jobs, ping, queues, ui};
use crate::error::ErrorBody;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::openapi::schema::{Discriminator, Object, OneOf, Schema};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Components, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::SwaggerUi;

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
    components(schemas(ErrorBody, HealthBody, ReadyBody, ReadyChecks)),
    // JobTypes after RequestRules: each type's request is cloned from the finished JobRequest.
    modifiers(&BearerTokens, &RequestRules, &JobTypes, &RateLimited, &ChaosBody),
    tags(
        (name = "health", description = "liveness, readiness, Prometheus metrics"),
        (name = "chaos", description = "close Redis connections on purpose (disabled in production)"),
        (name = "jobs", description = "register, inspect, list, retry and delete jobs of any registered type"),
        (name = "queues", description = "queue counts, pause/resume, per-minute history"),
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
    queues::list_queues,
    queues::pause,
    queues::resume,
    queues::history,
    dm_jobqueue::register,
    dm_jobqueue::register_batch_route,
    dm_jobqueue::list_jobs,
    dm_jobqueue::get_job,
    dm_jobqueue::stats,
    dm_jobqueue::retry_job,
    dm_jobqueue::delete_job,
))]
struct ApiScope;

/// Every registered job type's payload schema, as `components.schemas.<Name>`; `JobRequest`
/// becomes a `oneOf` with one `<Type>JobRequest` per type (its `type` and its payload schema),
/// and the info description names each type with its payload schema (the jobs page reads it).
struct JobTypes;

impl Modify for JobTypes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let registry = cacheserver_jobqueue::Registry::production(&Default::default());
        let components = openapi.components.get_or_insert_with(Default::default);
        let base = match components.schemas.get("JobRequest") {
            Some(RefOr::T(Schema::Object(base))) => base.clone(),
            _ => Object::new(),
        };
        let mut names = Vec::new();
        let mut one_of = OneOf::new();
        let mut discriminator = Discriminator::new("type");
        for (type_name, schemas) in registry.schemas() {
            let Some((payload, _)) = schemas.first() else {
                continue;
            };
            names.push(format!("`{type_name}` → `{payload}`"));
            let request = format!("{}JobRequest", payload.trim_end_matches("Payload"));
            let variant = type_request(&base, type_name, payload);
            components.schemas.insert(request.clone(), variant.into());
            let reference = format!("#/components/schemas/{request}");
            discriminator
                .mapping
                .insert(type_name.to_owned(), reference);
            one_of.items.push(Ref::from_schema_name(request).into());
            components.schemas.extend(schemas);
        }
        one_of.description = base.description.clone();
        one_of.discriminator = Some(discriminator);
        components
            .schemas
            .insert("JobRequest".into(), Schema::OneOf(one_of).into());
        if let Some(info) = openapi.info.description.as_mut() {
            info.push_str(&format!(
                " Job types and their payload schemas: {}.",
                names.join(", ")
            ));
        }
    }
}

/// `base` (the derived `JobRequest`) with `type` fixed to `type_name` and `payload` → its schema.
fn type_request(base: &Object, type_name: &str, payload: &str) -> Object {
    let mut variant = base.clone();
    variant.title = Some(type_name.to_owned());
    let mut type_schema = Object::with_type(utoipa::openapi::Type::String);
    type_schema.enum_values = Some(vec![json!(type_name)]);
    variant
        .properties
        .insert("type".into(), Schema::Object(type_schema).into());
    variant
        .properties
        .insert("payload".into(), Ref::from_schema_name(payload).into());
    variant
}

/// Rules between fields that utoipa's attributes cannot state, as JSON Schema keywords (written
/// through the schema's extension map, which is flattened into the object).
struct RequestRules;

impl Modify for RequestRules {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let one_of_ids_state = json!([{"required": ["ids"]}, {"required": ["state"]}]);
        for bulk in ["BulkRetryRequest", "BulkDeleteRequest"] {
            add_keyword(components, bulk, "oneOf", one_of_ids_state.clone());
        }
        let not_both = json!({"required": ["delay_seconds", "run_at"]});
        add_keyword(components, "JobRequest", "not", not_both);
        let needs_key = json!({"unique_for_seconds": ["unique_key"]});
        add_keyword(components, "JobRequest", "dependentRequired", needs_key);
    }
}

fn add_keyword(components: &mut Components, schema: &str, keyword: &str, value: Value) {
    if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(schema) {
        object
            .extensions
            .get_or_insert_with(Default::default)
            .insert(keyword.into(), value);
    }
}

/// `POST /chaos/redis-reset` takes an empty body or a `ResetRequest`, never `null`: utoipa writes
/// an optional body as `oneOf [.., null]`, so the schema is replaced by the plain reference.
struct ChaosBody;

impl Modify for ChaosBody {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let body = openapi
            .paths
            .paths
            .get_mut("/chaos/redis-reset")
            .and_then(|item| item.post.as_mut())
            .and_then(|op| op.request_body.as_mut());
        if let Some(RefOr::T(body)) = body {
            for content in body.content.values_mut() {
                let RefOr::T(content) = content else { continue };
                content.schema = Some(Ref::from_schema_name("ResetRequest").into());
            }
        }
    }
}

/// 429 on every operation behind the rate limiter (`/api/...`, `/chaos/...`).
struct RateLimited;

impl Modify for RateLimited {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let too_many = ResponseBuilder::new()
            .description("rate limited (`Retry-After` says when to try again)")
            .content(
                "application/json",
                utoipa::openapi::Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            )
            .build();
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !(path.starts_with("/api/") || path.starts_with("/chaos/")) {
                continue;
            }
            for operation in operations(item) {
                let responses = &mut operation.responses.responses;
                responses
                    .entry("429".into())
                    .or_insert_with(|| too_many.clone().into());
            }
        }
    }
}

fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

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

/// The spec as served.
pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Swagger UI at `/swagger-ui/` and the spec at [`SPEC_PATH`].
pub fn swagger_ui() -> SwaggerUi {
    SwaggerUi::new("/swagger-ui/{_:.*}").url(SPEC_PATH, spec())
}

/// `GET /health` body (documentation only; the handler writes the same JSON).
#[derive(Serialize, ToSchema)]
pub struct HealthBody {
    #[schema(example = "ok")]
    pub status: String,
}

/// `GET /ready` body (documentation only; the handler writes the same JSON).
#[derive(Serialize, ToSchema)]
pub struct ReadyBody {
    /// `ready` or `not_ready`.
    #[schema(example = "ready")]
    pub status: String,
    pub checks: ReadyChecks,
}

#[derive(Serialize, ToSchema)]
pub struct ReadyChecks {
    /// `ok`, or the misconfiguration that keeps a Redis unusable (wrong password, missing ACL
    /// permission naming the command or script, untrusted certificate, plain text on a TLS
    /// port); never a secret.
    #[schema(example = "ok")]
    pub config: String,
    /// `ok` or the error reaching the jobqueue Redis.
    #[schema(example = "ok")]
    pub jobqueue_redis: String,
    /// `redis`, `memory` or `fail_open` (then not ready).
    #[schema(example = "redis")]
    pub rate_limit_backend: String,
    /// Only while the Redis Cluster is misconfigured: why.
    #[schema(nullable = false)]
    pub rate_limit_redis: Option<String>,
}
