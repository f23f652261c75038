//! The worker's HTTP server (actix-web, one thread): `GET /health` (200 running and connected,
//! else 503 with a `reason`) and `GET /metrics` (Prometheus text). Anything else is a JSON 404.

use crate::supervisor::WorkerState;
use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

/// Renders the Prometheus text for `/metrics`.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// Bind `host:port` (port 0 picks one) and return the bound address.
pub fn bind(host: &str, port: u16) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind((host, port))?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// The server on `listener`; run it by awaiting (or spawning) it, stop it with its handle.
/// Signals are left to the worker binary, which drains jobs before it stops this server.
pub fn serve(
    listener: TcpListener,
    state: Arc<WorkerState>,
    metrics: RenderMetrics,
) -> std::io::Result<Server> {
    let state = web::Data::from(state);
    let metrics = web::Data::new(metrics);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(metrics.clone())
            .route("/health", web::get().to(health))
            .route("/metrics", web::get().to(render_metrics))
            .default_service(web::to(not_found))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}

async fn health(state: web::Data<WorkerState>) -> HttpResponse {
    if state.healthy() {
        HttpResponse::Ok().json(status_json(&state, "ok"))
    } else {
        HttpResponse::ServiceUnavailable().json(status_json(&state, "unavailable"))
    }
}

async fn render_metrics(metrics: web::Data<RenderMetrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics())
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({"code": 404, "message": "no such route"}))
}

fn status_json(state: &WorkerState, status: &str) -> serde_json::Value {
    use std::sync::atomic::Ordering::Relaxed;
    let mut body = serde_json::json!({
        "status": status,
        "running": state.running.load(Relaxed),
        "redis_connected": state.connected.load(Relaxed),
        "restarts": state.restarts.load(Relaxed),
    });
    if !state.healthy() {
        body["reason"] = reason(state).into();
    }
    body
}

/// Why the worker is unhealthy: the supervisor's last error, else which part is not up yet.
fn reason(state: &WorkerState) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    state.reason().unwrap_or_else(|| {
        if state.running.load(Relaxed) {
            "the apalis worker cannot reach the jobqueue Redis".into()
        } else {
            "the apalis worker is starting".into()
        }
    })
}
