//! Who a count belongs to, and where it lives in Redis.
//!
//! Clients are spread over [`BUCKETS`] buckets; each bucket has its own hash tag, chosen so the
//! buckets cover the 16,384 cluster slots evenly (and so every master). A bucket's counts are two
//! hashes, `rl:{<bucket tag>}:m:<minute>` and `rl:{<bucket tag>}:h:<hour>`, with one field per
//! client, so one Lua call can decide many clients of one bucket. The field (`<client>`) is the
//! IP for the top-level limits and `<rule>:<id>` inside a rule. The bucket of a client is a fixed
//! hash (FNV-1a) of its key, so every api instance agrees on it.

use fnv::FnvHasher;
use std::fmt::Write as _;
use std::hash::Hasher as _;
use std::net::IpAddr;

/// Buckets (Lua calls that may be in flight at once per instance). Few, so that batches are big:
/// each call costs Redis far more (syscalls, replication, AOF) than each client in it; 8 beat 32
/// by 1.2–1.4× in req/s with many clients (`just bench`, 2 cores) and still spread over the
/// masters. Changing it moves every client's counts: they restart for the current windows.
pub const BUCKETS: usize = 8;

/// What a client is counted by within its rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientId {
    Ip(IpAddr),
    /// Client IP and the route pattern (hashed).
    IpRoute(IpAddr, u64),
    /// A header value (hashed: secrets such as API keys never reach Redis).
    Hashed(u128),
}

/// A client within a rule (0: the top-level limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub rule: u16,
    pub id: ClientId,
}

impl ClientKey {
    pub fn bucket(&self) -> usize {
        // Raw bytes through `Hasher::write` (not `Hash`), so the buckets are plain FNV-1a of
        // them: the same in every instance and version.
        let mut h = FnvHasher::default();
        h.write(&self.rule.to_le_bytes());
        match self.id {
            ClientId::Ip(ip) => write_ip(&mut h, 0, ip),
            ClientId::IpRoute(ip, route) => {
                write_ip(&mut h, 1, ip);
                h.write(&route.to_le_bytes());
            }
            ClientId::Hashed(v) => {
                h.write(&[2]);
                h.write(&v.to_le_bytes());
            }
        }
        usize::try_from(h.finish() % BUCKETS as u64).unwrap_or(0)
    }

    /// `<client>` (its field in the bucket's hashes): `ip`, or `<rule>:<ip>`,
    /// `<rule>:<ip>:r<route>`, `<rule>:k<hash>`.
    pub fn write_client(&self, rule_name: Option<&str>, buf: &mut String) {
        if let Some(name) = rule_name {
            let _ = write!(buf, "{name}:");
        }
        let _ = match self.id {
            ClientId::Ip(ip) => write!(buf, "{ip}"),
            ClientId::IpRoute(ip, route) => write!(buf, "{ip}:r{route:016x}"),
            ClientId::Hashed(v) => write!(buf, "k{v:032x}"),
        };
    }
}

/// The minute hash of `tag`'s bucket for `minute` (unix minutes), and its hour hash.
pub(crate) fn window_keys(tag: &str, minute: u64, hour: u64) -> [String; 2] {
    [
        format!("rl:{{{tag}}}:m:{minute}"),
        format!("rl:{{{tag}}}:h:{hour}"),
    ]
}

/// The minute and hour hashes that count `ip` (field `<ip>`) under the top-level limits at
/// `unix_secs` (benchmarks and tools look them up).
pub fn top_level_keys(ip: IpAddr, unix_secs: u64) -> [String; 2] {
    let key = ClientKey {
        rule: 0,
        id: ClientId::Ip(ip),
    };
    let tags = bucket_tags();
    let tag = tags.get(key.bucket()).map_or("", String::as_str);
    window_keys(tag, unix_secs / 60, unix_secs / 3600)
}

/// The first 128 bits of SHA-1: stable across instances and versions.
pub fn hash128(text: &str) -> u128 {
    let hex = fred::util::sha1_hash(text);
    u128::from_str_radix(hex.get(..32).unwrap_or("0"), 16).unwrap_or(0)
}

pub fn hash64(text: &str) -> u64 {
    u64::try_from(hash128(text) >> 64).unwrap_or(0)
}

/// The hash tag of each bucket: bucket `i` maps into slots `[i, i+1) × 16384 / BUCKETS`.
pub fn bucket_tags() -> Vec<String> {
    const SLOTS: usize = 16_384;
    (0..BUCKETS)
        .map(|bucket| {
            let wanted = bucket * SLOTS / BUCKETS..(bucket + 1) * SLOTS / BUCKETS;
            // Bounded: about BUCKETS tries on average; any tag works if none is found.
            (0..1_000_000u32)
                .map(|n| format!("{bucket}.{n}"))
                .find(|tag| {
                    wanted.contains(&usize::from(fred::util::redis_keyslot(tag.as_bytes())))
                })
                .unwrap_or_else(|| bucket.to_string())
        })
        .collect()
}

fn write_ip(h: &mut FnvHasher, tag: u8, ip: IpAddr) {
    h.write(&[tag]);
    match ip {
        IpAddr::V4(v4) => h.write(&v4.octets()),
        IpAddr::V6(v6) => h.write(&v6.octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_tags_spread_over_the_slots() {
        let tags = bucket_tags();
        assert_eq!(tags.len(), BUCKETS);
        for (i, tag) in tags.iter().enumerate() {
            let slot = usize::from(fred::util::redis_keyslot(
                format!("rl:{{{tag}}}:x").as_bytes(),
            ));
            assert_eq!(slot * BUCKETS / 16_384, i, "tag {tag} slot {slot}");
        }
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        let key = |i: u32| ClientKey {
            rule: 0,
            id: ClientId::Ip(IpAddr::V4(i.into())),
        };
        assert_eq!(key(7).bucket(), key(7).bucket());
        let mut seen = [0u32; BUCKETS];
        for i in 0..(BUCKETS as u32 * 100) {
            seen[key(i).bucket()] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }

    /// The buckets of FNV-1a 64 over the key's bytes (computed outside Rust): counts stored by
    /// an older version stay where this one looks for them.
    #[test]
    fn buckets_are_fnv_1a_of_the_key_bytes() {
        let ip = |a, b, c, d| IpAddr::V4([a, b, c, d].into());
        let bucket = |rule, id| ClientKey { rule, id }.bucket();
        assert_eq!(bucket(0, ClientId::Ip(ip(10, 0, 0, 1))), 2);
        assert_eq!(bucket(3, ClientId::Ip(ip(192, 168, 1, 20))), 7);
        assert_eq!(bucket(1, ClientId::IpRoute(ip(10, 0, 0, 1), 42)), 0);
        assert_eq!(bucket(2, ClientId::Hashed(7)), 0);
    }

    #[test]
    fn client_names_in_keys() {
        let ip: IpAddr = [10, 0, 0, 1].into();
        let mut s = String::new();
        ClientKey {
            rule: 0,
            id: ClientId::Ip(ip),
        }
        .write_client(None, &mut s);
        assert_eq!(s, "10.0.0.1");
        s.clear();
        let hashed = ClientKey {
            rule: 2,
            id: ClientId::Hashed(hash128("secret")),
        };
        hashed.write_client(Some("per-key"), &mut s);
        assert!(s.starts_with("per-key:k") && !s.contains("secret"), "{s}");
    }
}
