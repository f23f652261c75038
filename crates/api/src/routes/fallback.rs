//! What a request gets when no route took it: `405 Method Not Allowed` with an `Allow` header
//! when the path exists with other methods, else 404. The OpenAPI spec is the route table
//! (`tests/api/docs.rs` keeps it complete), so this needs no list of its own.

use super::docs;
use crate::error::ApiError;
use actix_web::HttpRequest;
use std::collections::BTreeSet;
use std::sync::LazyLock;

/// Path templates split into segments (`{id}` matches any one segment) → their methods.
static ROUTES: LazyLock<Vec<(Vec<String>, Vec<String>)>> = LazyLock::new(route_table);

fn route_table() -> Vec<(Vec<String>, Vec<String>)> {
    let spec = serde_json::to_value(docs::spec()).unwrap_or_default();
    let Some(paths) = spec["paths"].as_object() else {
        return Vec::new();
    };
    paths
        .iter()
        .map(|(path, item)| {
            let segments = path.split('/').map(str::to_owned).collect();
            let methods = item
                .as_object()
                .map(|ops| ops.keys().map(|m| m.to_uppercase()).collect())
                .unwrap_or_default();
            (segments, methods)
        })
        .collect()
}

fn matches(template: &[String], path: &str) -> bool {
    let mut segments = path.split('/');
    let all_match = template
        .iter()
        .all(|t| segments.next().is_some_and(|s| s == t || is_param(t)));
    all_match && segments.next().is_none()
}

fn is_param(segment: &str) -> bool {
    segment.starts_with('{') && segment.ends_with('}')
}

/// The methods the spec lists for `path`, sorted (actix's `GET` routes do not answer `HEAD`).
pub fn allowed_methods(path: &str) -> Vec<String> {
    let allowed: BTreeSet<&String> = ROUTES
        .iter()
        .filter(|(template, _)| matches(template, path))
        .flat_map(|(_, methods)| methods)
        .collect();
    allowed.into_iter().cloned().collect()
}

/// The app's default service.
pub async fn unmatched(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    let allowed = allowed_methods(req.path());
    if allowed.is_empty() {
        return Err(ApiError::NotFound("no such route".into()));
    }
    Err(ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        allow: allowed.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_paths_list_their_methods_and_parameters_match_one_segment() {
        assert_eq!(allowed_methods("/health"), ["GET"]);
        assert_eq!(allowed_methods("/chaos/redis-reset"), ["POST"]);
        let job = allowed_methods("/api/dm-jobqueue/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV");
        assert!(job.contains(&"GET".to_owned()) && job.contains(&"DELETE".to_owned()));
        assert!(allowed_methods("/api/dm-jobqueue/jobs/a/b/c").is_empty());
        assert!(allowed_methods("/nope").is_empty());
        assert!(allowed_methods("/health/extra").is_empty());
    }
}
