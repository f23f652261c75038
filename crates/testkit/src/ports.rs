use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};

/// Ports are picked from `LOW..HIGH`, below Linux's default ephemeral range (32768–60999): an
/// outgoing connection of another test takes its local port from that range, and could take a
/// port between our check and the server's bind ("Address already in use" on a health port).
const LOW: u16 = 10_000;
const HIGH: u16 = 32_768;
/// Redis Cluster's bus listens on port + 10000, which must stay below `HIGH` too.
const CLUSTER_BUS_OFFSET: u16 = 10_000;

/// A loopback port that was free a moment ago. Ports come from a per-process rotating range so
/// that tests running in parallel (and nextest's many processes) rarely collide.
pub fn free_port() -> u16 {
    pick(is_free)
}

/// A port whose cluster bus port (port + 10000) is free too.
pub fn free_cluster_port() -> u16 {
    pick(|port| {
        port < HIGH - CLUSTER_BUS_OFFSET && is_free(port) && is_free(port + CLUSTER_BUS_OFFSET)
    })
}

fn pick(ok: impl Fn(u16) -> bool) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = HIGH - LOW;
    let base = (std::process::id() % 200) as u16 * 100;
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = LOW + (base + offset) % span;
        if ok(port) {
            return port;
        }
    }
    panic!("no free loopback port found");
}

fn is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}
