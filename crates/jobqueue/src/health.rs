//! The worker's tiny HTTP server: `GET /health` (200 running and connected, else 503) and
//! `GET /metrics` (Prometheus text). Plain tokio: two fixed routes need no web framework.

use crate::supervisor::WorkerState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Renders the Prometheus text for `/metrics`.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// Bind `127.0.0.1`-or-any `host:port` (port 0 picks one) and return the bound address.
pub async fn bind(host: &str, port: u16) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind((host, port)).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Serve until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<WorkerState>, metrics: RenderMetrics) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (state, metrics) = (state.clone(), metrics.clone());
        tokio::spawn(async move {
            let answer =
                tokio::time::timeout(Duration::from_secs(5), answer(stream, &state, &metrics));
            if let Ok(Err(e)) = answer.await {
                tracing::debug!(error = %e, "health request failed");
            }
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    state: &WorkerState,
    metrics: &RenderMetrics,
) -> std::io::Result<()> {
    let mut buf = [0u8; 2048];
    let n = stream.read(&mut buf).await?;
    let request = String::from_utf8_lossy(&buf[..n]);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, kind, body) = match path {
        "/health" if state.healthy() => ("200 OK", "application/json", status_json(state, "ok")),
        "/health" => (
            "503 Service Unavailable",
            "application/json",
            status_json(state, "unavailable"),
        ),
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics()),
        _ => (
            "404 Not Found",
            "application/json",
            r#"{"code":404,"message":"no such route"}"#.into(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

fn status_json(state: &WorkerState, status: &str) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    serde_json::json!({
        "status": status,
        "running": state.running.load(Relaxed),
        "redis_connected": state.connected.load(Relaxed),
        "restarts": state.restarts.load(Relaxed),
    })
    .to_string()
}
