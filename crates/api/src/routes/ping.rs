use super::health::HealthBody;
use actix_web::{get, web::Json};

/// The cheapest rate-limited route (benchmarks use it).
#[utoipa::path(
    get,
    path = "/api/ping",
    tag = "health",
    responses(
        (status = 200, description = "pong", body = HealthBody),
        (status = 429, description = "rate limited", body = crate::error::ErrorBody),
    )
)]
#[get("/ping")]
pub async fn ping() -> Json<HealthBody> {
    Json(HealthBody::ok())
}
