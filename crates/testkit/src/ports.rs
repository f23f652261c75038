use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Ports are picked below Linux's default ephemeral range (32768–60999): a port from that range
/// can be taken by any outgoing connection of a parallel test between our check and the server's
/// bind (seen: a worker's "cannot bind the health port 41714").
const LOW: u16 = 10_000;
const EPHEMERAL_START: u16 = 32_768;
/// A cluster node also binds its bus port, port + 10000; both stay below the ephemeral range.
const BUS_OFFSET: u16 = 10_000;

/// A loopback port that was free a moment ago. Each process starts at its own place in the range
/// and walks on from there, so tests running in parallel (and nextest's many processes) rarely
/// collide.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    pick(&NEXT, LOW, EPHEMERAL_START, is_free)
}

/// A port whose cluster bus port (port + 10000) is free too.
pub fn free_cluster_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    pick(&NEXT, LOW, EPHEMERAL_START - BUS_OFFSET, |port| {
        is_free(port) && is_free(port + BUS_OFFSET)
    })
}

/// The first port in `low..high` that `ok` accepts, starting from this process' own offset (spread
/// over the whole range by the pid) and from where its previous call stopped.
fn pick(next: &AtomicU32, low: u16, high: u16, ok: impl Fn(u16) -> bool) -> u16 {
    let span = u32::from(high - low);
    // 100 ports per process' start: consecutive pids land 100 apart, wrapping over the span.
    let start = std::process::id().wrapping_mul(100) % span;
    for _ in 0..span {
        let offset = next.fetch_add(1, Ordering::Relaxed);
        let port = low + ((start + offset) % span) as u16;
        if ok(port) {
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

fn is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_stay_below_the_ephemeral_range() {
        for _ in 0..200 {
            let port = free_port();
            assert!((LOW..EPHEMERAL_START).contains(&port), "{port}");
            let cluster = free_cluster_port();
            assert!(cluster + BUS_OFFSET < EPHEMERAL_START, "{cluster}");
            assert!(cluster >= LOW, "{cluster}");
        }
    }

    #[test]
    fn a_range_is_walked_from_the_offset_and_wraps() {
        let next = AtomicU32::new(0);
        let picked: Vec<u16> = (0..5).map(|_| pick(&next, 100, 104, |_| true)).collect();
        let start = (std::process::id().wrapping_mul(100) % 4) as u16;
        let expected: Vec<u16> = (0..5).map(|i| 100 + (start + i) % 4).collect();
        assert_eq!(picked, expected);
    }
}
