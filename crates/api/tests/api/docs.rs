//! The OpenAPI spec documents every route the app serves, and Swagger UI is served offline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::spawn_app;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// Every route of the app, as a user calls it. Static assets of the page and the docs routes
/// themselves (`/static/*`, `/swagger-ui/*`, `/api-docs/openapi.json`) are not API routes.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/api/ping"),
    ("post", "/api/jobs"),
    ("post", "/api/jobs/batch"),
    ("get", "/api/jobs"),
    ("get", "/api/jobs/{id}"),
    ("delete", "/api/jobs/{id}"),
    ("post", "/api/jobs/{id}/retry"),
    ("post", "/api/jobs/retry"),
    ("post", "/api/jobs/delete"),
    ("post", "/api/jobs/cancel"),
    ("post", "/api/jobs/{id}/cancel"),
    ("get", "/api/jobs/{id}/events"),
    ("get", "/api/queues"),
    ("get", "/api/queues/{queue}"),
    ("post", "/api/queues/{queue}/pause"),
    ("post", "/api/queues/{queue}/resume"),
    ("get", "/api/queues/{queue}/history"),
    ("get", "/api/queues/{queue}/events"),
    ("get", "/api/schedules"),
    ("post", "/api/schedules"),
    ("get", "/api/schedules/{name}"),
    ("put", "/api/schedules/{name}"),
    ("delete", "/api/schedules/{name}"),
    ("post", "/api/schedules/{name}/pause"),
    ("post", "/api/schedules/{name}/resume"),
    ("post", "/api/schedules/{name}/trigger"),
    ("post", "/api/dm-jobqueue/register"),
    ("post", "/api/dm-jobqueue/register/batch"),
    ("get", "/api/dm-jobqueue/jobs"),
    ("get", "/api/dm-jobqueue/jobs/{id}"),
    ("delete", "/api/dm-jobqueue/jobs/{id}"),
    ("post", "/api/dm-jobqueue/jobs/{id}/retry"),
    ("get", "/api/dm-jobqueue/stats"),
    ("post", "/chaos/redis-reset"),
    ("get", "/chaos/status"),
];

/// Handlers that are deliberately not in the spec (assets of the jobs page).
const UNDOCUMENTED_HANDLERS: &[&str] = &["app_js", "app_css"];

fn operations(spec: &Value) -> BTreeSet<(String, String)> {
    spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect()
}

/// `{id}` → a concrete value, so the route can be called.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                "01ARZ3NDEKTSV4RRFFQ69G5FAV"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn spec_lists_exactly_the_routes_the_app_serves() {
    let app = spawn_app(&[]).await;
    let resp = app.get("/api-docs/openapi.json").await;
    assert_eq!(resp.status(), 200);
    let spec: Value = resp.json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let documented = operations(&spec);
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, expected, "spec paths vs the routes listed here");

    // Each documented operation is really served: not the default "no such route" 404.
    for (method, path) in &documented {
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let resp = app
            .http
            .request(method.clone(), app.url(&concrete(path)))
            .send()
            .await
            .unwrap();
        let unmatched = resp.status() == 404
            && resp
                .json::<Value>()
                .await
                .is_ok_and(|b| b["message"] == "no such route");
        assert!(!unmatched, "{method} {path} is documented but not served");
    }
    assert!(spec["components"]["schemas"]["ErrorBody"].is_object());
    // Every production job type's payload schema is in the spec (from the worker's registry).
    assert!(
        spec["components"]["schemas"]["DelayPrintPayload"]["properties"]["message"].is_object(),
        "{}",
        spec["components"]["schemas"]
    );
}

/// Every actix handler in `src/routes` carries `#[utoipa::path]`, and the spec holds as many
/// operations as there are such handlers: a new route cannot be left out of `docs.rs`.
#[tokio::test]
async fn every_handler_is_documented() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/routes");
    let mut documented_handlers = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let source = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let mut attributes = String::new();
        for line in source.lines().map(str::trim) {
            if line.starts_with("pub async fn ") || line.starts_with("async fn ") {
                let name = line
                    .split(['(', '<'])
                    .next()
                    .unwrap()
                    .rsplit(' ')
                    .next()
                    .unwrap();
                let is_handler = ["#[get(", "#[post(", "#[put(", "#[delete(", "#[patch("]
                    .iter()
                    .any(|m| attributes.contains(m));
                if is_handler && !UNDOCUMENTED_HANDLERS.contains(&name) {
                    assert!(
                        attributes.contains("#[utoipa::path("),
                        "{name} has no #[utoipa::path]"
                    );
                    documented_handlers += 1;
                }
                attributes.clear();
            } else {
                attributes.push_str(line);
            }
            if line.is_empty() || line.starts_with("}") {
                attributes.clear();
            }
        }
    }
    let app = spawn_app(&[]).await;
    let spec: Value = app
        .get("/api-docs/openapi.json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(operations(&spec).len(), documented_handlers);
}

#[tokio::test]
async fn swagger_ui_is_served_without_a_cdn() {
    let app = spawn_app(&[]).await;
    let resp = app.get("/swagger-ui/").await;
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(html.contains("swagger-ui"));
    assert!(!html.contains("https://"), "assets must be local");
    assert_eq!(
        app.get("/swagger-ui/swagger-ui-bundle.js").await.status(),
        200
    );
}

#[tokio::test]
async fn jobs_page_and_its_assets_are_served() {
    let app = spawn_app(&[]).await;
    let resp = app.get("/").await;
    assert_eq!(resp.status(), 200);
    assert!(crate::common::header(&resp, "content-type").starts_with("text/html"));
    let html = resp.text().await.unwrap();
    assert!(html.contains("/static/app.js") && !html.contains("https://"));
    for (path, kind) in [
        ("/static/app.js", "text/javascript"),
        ("/static/app.css", "text/css"),
    ] {
        let resp = app.get(path).await;
        assert_eq!(resp.status(), 200);
        assert!(crate::common::header(&resp, "content-type").starts_with(kind));
    }
}

/// A documented path called with a method it does not have: 405, `Allow` listing the ones it has.
#[tokio::test]
async fn a_wrong_method_gets_405_with_allow() {
    let app = spawn_app(&[]).await;
    for (method, path, allow) in [
        (reqwest::Method::POST, "/health", "GET"),
        (reqwest::Method::GET, "/chaos/redis-reset", "POST"),
        (
            reqwest::Method::PUT,
            "/api/dm-jobqueue/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "DELETE, GET",
        ),
    ] {
        let resp = app
            .http
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method} {path}");
        assert_eq!(
            crate::common::header(&resp, "allow"),
            allow,
            "{method} {path}"
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], 405);
    }
    let resp = app.get("/no/such/path").await;
    assert_eq!(resp.status(), 404);
}

/// The README's "Adding a job type" example is the file the spec walk compiles, registers and
/// walks (`job_type_example/thumbnail.rs`), word for word: the README cannot drift from code
/// that works.
#[test]
fn readme_job_type_example_is_the_tested_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../../README.md")).unwrap();
    let example =
        std::fs::read_to_string(root.join("tests/job_type_example/thumbnail.rs")).unwrap();
    let section = readme
        .split("## Adding a job type")
        .nth(1)
        .expect("README has an Adding a job type section");
    let block = section
        .split("```rust\n")
        .nth(1)
        .and_then(|rest| rest.split("   ```").next())
        .expect("the section shows a rust block");
    // The block is indented by three spaces inside a numbered list.
    let shown: String = block
        .lines()
        .map(|line| format!("{}\n", line.strip_prefix("   ").unwrap_or(line)))
        .collect();
    assert_eq!(
        shown, example,
        "README's example differs from the tested file"
    );
}

/// The served document is a valid OpenAPI 3.1 description as read by a parser written
/// elsewhere (`oas3`: every object typed, the version checked), and every `operationId` is
/// unique (clients generate one function per id).
#[tokio::test]
async fn served_spec_is_valid_openapi_with_unique_operation_ids() {
    let app = spawn_app(&[]).await;
    let text = app
        .get("/api-docs/openapi.json")
        .await
        .text()
        .await
        .unwrap();
    let spec = oas3::from_json(&text).unwrap_or_else(|e| panic!("not OpenAPI 3.1: {e}"));
    let version = spec.validate_version().unwrap();
    assert_eq!((version.major, version.minor), (3, 1), "{version}");
    let mut seen = std::collections::BTreeMap::new();
    let mut operations = 0;
    for (path, method, operation) in spec.operations() {
        operations += 1;
        let id = operation
            .operation_id
            .clone()
            .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
        if let Some(first) = seen.insert(id.clone(), format!("{method} {path}")) {
            panic!("operationId {id} is used by {first} and {method} {path}");
        }
    }
    assert!(operations > 20, "{operations} operations parsed");
}
