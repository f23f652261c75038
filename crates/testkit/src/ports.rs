use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};

/// A loopback port that was free a moment ago. Ports come from a per-process rotating range so
/// that tests running in parallel (and nextest's many processes) rarely collide.
pub fn free_port() -> u16 {
    pick(is_free)
}

/// A port whose cluster bus port (port + 10000) is free too.
pub fn free_cluster_port() -> u16 {
    pick(|port| port < 55_000 && is_free(port) && is_free(port + 10_000))
}

fn pick(ok: impl Fn(u16) -> bool) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 300) as u16 * 100;
    for _ in 0..30_000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 30_000;
        let port = 20_000 + (base - 20_000 + offset) % 30_000;
        if ok(port) {
            return port;
        }
    }
    panic!("no free loopback port found");
}

fn is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}
