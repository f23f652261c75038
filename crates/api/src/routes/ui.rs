//! The built-in jobs page: register a job, watch its status, see queue counts, retry dead jobs.
//! Plain HTML/JS/CSS embedded in the binary (no build step, no CDN: it works offline). The page
//! itself is not rate limited; the API calls it makes are.

use actix_web::http::header::{CacheControl, CacheDirective, ContentType};
use actix_web::{get, HttpResponse};

const INDEX_HTML: &str = include_str!("../../static/index.html");
const APP_JS: &str = include_str!("../../static/app.js");
const APP_CSS: &str = include_str!("../../static/app.css");

/// The jobs page (HTML).
#[utoipa::path(
    get,
    path = "/",
    tag = "ui",
    responses((status = 200, description = "the jobs page", content_type = "text/html"))
)]
#[get("/")]
pub async fn index() -> HttpResponse {
    asset(ContentType::html(), INDEX_HTML)
}

#[get("/static/app.js")]
pub async fn app_js() -> HttpResponse {
    asset(
        ContentType(mime_type("text/javascript; charset=utf-8")),
        APP_JS,
    )
}

#[get("/static/app.css")]
pub async fn app_css() -> HttpResponse {
    asset(ContentType(mime_type("text/css; charset=utf-8")), APP_CSS)
}

/// Assets change only with the binary; `no-cache` makes browsers revalidate after a deploy.
fn asset(content_type: ContentType, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(content_type)
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(body)
}

fn mime_type(text: &'static str) -> actix_web::mime::Mime {
    // The literals above are valid media types; fall back to octet-stream rather than panic.
    text.parse()
        .unwrap_or(actix_web::mime::APPLICATION_OCTET_STREAM)
}
