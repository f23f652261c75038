//! What the spec states beyond the route attributes: one request schema per job type, the rules
//! between fields (JSON Schema keywords utoipa's attributes lack), the chaos body, and 429 on
//! every rate-limited operation. Applied as modifiers by `docs.rs`; `tests/api/spec_walk.rs` checks
//! the api against all of it.

use serde_json::{json, Value};
use utoipa::openapi::schema::{Discriminator, Object, OneOf, Schema};
use utoipa::openapi::{Components, Ref, RefOr, ResponseBuilder};
use utoipa::Modify;

/// Every registered job type's payload and result schemas, as `components.schemas.<Name>`
/// (`JobResult` becomes a `oneOf` of the result schemas); `JobRequest`
/// becomes a `oneOf` with one `<Type>JobRequest` per type (its `type` and its payload schema),
/// and the info description names each type with its payload schema (the jobs page reads it).
pub struct JobTypes<'r>(pub &'r cacheserver_jobqueue::Registry);

impl Modify for JobTypes<'_> {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let registry = self.0;
        let components = openapi.components.get_or_insert_with(Default::default);
        let names = one_of_per_type(components, registry, "JobRequest");
        // A schedule's job (`POST /api/schedules`) names a type and its payload the same way.
        one_of_per_type(components, registry, "ScheduleJob");
        // A job's `result`: one of the types' result schemas (types returning `()` add none).
        let mut results = OneOf::new();
        results.description =
            Some("What the run returned: the result schema of the job's type.".into());
        for (_, schemas) in registry.result_schemas() {
            let Some((name, _)) = schemas.first() else {
                continue;
            };
            if name == "TupleUnit" {
                continue;
            }
            let reference = Ref::from_schema_name(name.clone());
            if !results.items.contains(&reference.clone().into()) {
                results.items.push(reference.into());
            }
            components.schemas.extend(schemas);
        }
        if !results.items.is_empty() {
            components
                .schemas
                .insert("JobResult".into(), Schema::OneOf(results).into());
        }
        if let Some(info) = openapi.info.description.as_mut() {
            info.push_str(&format!(
                " Job types and their payload schemas: {}.",
                names.join(", ")
            ));
        }
    }
}

/// `components.schemas.<base>` becomes a `oneOf` of one `<Type><base>` per registered type;
/// returns `` `type` → `Payload` `` per type.
fn one_of_per_type(
    components: &mut Components,
    registry: &cacheserver_jobqueue::Registry,
    base_name: &str,
) -> Vec<String> {
    let base = match components.schemas.get(base_name) {
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
        let request = format!("{}{base_name}", payload.trim_end_matches("Payload"));
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
        .insert(base_name.into(), Schema::OneOf(one_of).into());
    names
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
pub struct RequestRules;

impl Modify for RequestRules {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let one_of_ids_state = json!([{"required": ["ids"]}, {"required": ["state"]}]);
        for bulk in ["BulkRetryRequest", "BulkDeleteRequest", "BulkCancelRequest"] {
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
pub struct ChaosBody;

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
pub struct RateLimited;

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
