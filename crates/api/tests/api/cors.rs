//! CORS (`api.cors.allowed_origins`): an allowed origin gets the headers, another origin does
//! not, a preflight lists the methods the OpenAPI spec gives its path, and with the default (no
//! origins) no CORS header is ever sent. The real app, no Redis needed (limiter in memory).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::spawn_app;
use reqwest::Method;

const ALLOWED: &str = "https://app.example.com";
const OTHER: &str = "https://evil.example.net";
const ALLOW_ORIGIN: &str = "access-control-allow-origin";
const ALLOW_METHODS: &str = "access-control-allow-methods";

fn overrides() -> [(&'static str, &'static str); 2] {
    [
        ("APP__API__CORS__ALLOWED_ORIGINS", ALLOWED),
        ("APP__API__RATE_LIMIT__STORAGE_TYPE", "memory"),
    ]
}

async fn preflight(
    app: &crate::common::TestApp,
    path: &str,
    origin: &str,
    method: &str,
) -> reqwest::Response {
    app.http
        .request(Method::OPTIONS, app.url(path))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method)
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .unwrap()
}

fn methods(resp: &reqwest::Response) -> Vec<String> {
    let mut m: Vec<String> = resp
        .headers()
        .get(ALLOW_METHODS)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
        .split(',')
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .collect();
    m.sort();
    m
}

#[tokio::test]
async fn allowed_origin_gets_the_headers_another_does_not() {
    let app = spawn_app(&overrides()).await;
    let resp = app
        .http
        .get(app.url("/api/ping"))
        .header("Origin", ALLOWED)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[ALLOW_ORIGIN], ALLOWED);
    let exposed = resp.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("retry-after"), "{exposed}");

    let resp = app
        .http
        .get(app.url("/api/ping"))
        .header("Origin", OTHER)
        .send()
        .await
        .unwrap();
    // Served (non-browser clients keep working) but without CORS headers: a browser blocks it.
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get(ALLOW_ORIGIN).is_none(), "{resp:?}");

    let resp = preflight(&app, "/api/ping", OTHER, "GET").await;
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get(ALLOW_ORIGIN).is_none(), "{resp:?}");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 400, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn preflight_lists_the_methods_the_spec_gives_each_path() {
    let app = spawn_app(&overrides()).await;
    let spec: serde_json::Value = app
        .get("/api-docs/openapi.json")
        .await
        .json()
        .await
        .unwrap();
    let paths = spec["paths"].as_object().unwrap();
    let mut checked = 0;
    for (template, item) in paths {
        // A concrete path for the template: every `{param}` becomes one segment.
        let path: String = template
            .split('/')
            .map(|s| {
                if s.starts_with('{') {
                    "01ARZ3NDEKTSV4RRFFQ69G5FAV"
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let mut wanted: Vec<String> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_uppercase())
            .collect();
        wanted.sort();
        let resp = preflight(&app, &path, ALLOWED, &wanted[0]).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()[ALLOW_ORIGIN], ALLOWED, "{path}");
        // Other templates may match the same concrete path (`/jobs/{id}` and `/jobs/bulk`):
        // the answer lists at least this template's methods, and only methods of the spec.
        let got = methods(&resp);
        for m in &wanted {
            assert!(got.contains(m), "{path}: {got:?} lacks {m}");
        }
        checked += 1;
    }
    assert!(checked >= 10, "paths checked: {checked}");
    let health = preflight(&app, "/health", ALLOWED, "GET").await;
    assert_eq!(methods(&health), ["GET"]);
    let reset = preflight(&app, "/chaos/redis-reset", ALLOWED, "POST").await;
    assert_eq!(methods(&reset), ["POST"]);
    app.stop().await;
}

#[tokio::test]
async fn no_cors_headers_by_default() {
    let app = spawn_app(&[("APP__API__RATE_LIMIT__STORAGE_TYPE", "memory")]).await;
    let resp = app
        .http
        .get(app.url("/api/ping"))
        .header("Origin", ALLOWED)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get(ALLOW_ORIGIN).is_none(), "{resp:?}");
    let resp = preflight(&app, "/api/ping", ALLOWED, "GET").await;
    assert!(resp.headers().get(ALLOW_ORIGIN).is_none(), "{resp:?}");
    app.stop().await;
}
