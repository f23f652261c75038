use actix_web::{get, HttpResponse};

/// The cheapest rate-limited route (benchmarks use it).
#[utoipa::path(
    get,
    path = "/api/ping",
    tag = "health",
    responses(
        (status = 200, description = "pong", body = crate::routes::docs::HealthBody),
        (status = 429, description = "rate limited", body = crate::error::ErrorBody),
    )
)]
#[get("/ping")]
pub async fn ping() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}
