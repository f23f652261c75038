use actix_web::{get, HttpResponse};

/// The cheapest rate-limited route (benchmarks use it).
#[get("/ping")]
pub async fn ping() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}
