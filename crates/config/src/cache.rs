//! `api.cache`: the response cache on the api's Redis Cluster (see README "Response cache").

use crate::duration::{self, or_default};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Off: every route answers from its handler and writes invalidate nothing.
    pub enabled: bool,
    /// Budget for one cache call to Redis before the request bypasses the cache (default 100ms).
    #[serde(deserialize_with = "duration::deserialize")]
    pub redis_timeout: Duration,
    /// Largest body kept in the cache (≤ 0: default 262144 = 256 KB); larger ones are not cached.
    pub max_entry_bytes: i64,
    /// How long one refresh holds a key's lock and how long others wait for it (default 3s).
    #[serde(deserialize_with = "duration::deserialize")]
    pub lock_timeout: Duration,
    /// Longest query string a cached route keys on (≤ 0: default 2048 bytes); longer: bypass.
    pub max_query_bytes: i64,
    /// Distinct keys being refreshed at once in one api instance (≤ 0: default 10,000); beyond
    /// it requests are not coalesced (they still answer).
    pub max_inflight_keys: i64,
    /// The local (in-process) tier in front of Redis, kept coherent by Redis' invalidation
    /// pushes (`CLIENT TRACKING`).
    pub local: LocalCacheSettings,
    /// Cached routes; the first matching rule applies.
    pub routes: Vec<CacheRoute>,
    /// Writes that drop tags after a successful answer; every matching rule applies.
    pub invalidate: Vec<CacheInvalidation>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            redis_timeout: Duration::ZERO,
            max_entry_bytes: 0,
            lock_timeout: Duration::ZERO,
            max_query_bytes: 0,
            max_inflight_keys: 0,
            local: LocalCacheSettings::default(),
            routes: Vec::new(),
            invalidate: Vec::new(),
        }
    }
}

/// `api.cache.local`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalCacheSettings {
    /// Off: every hit is one Redis round trip (as without this tier).
    pub enabled: bool,
    /// Entries kept per api instance (≤ 0: default 10,000).
    pub max_entries: i64,
    /// Bytes of bodies and headers kept per api instance (≤ 0: default 33554432 = 32 MB).
    pub max_bytes: i64,
}

impl Default for LocalCacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_entries: 0,
            max_bytes: 0,
        }
    }
}

/// One entry of `api.cache.routes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRoute {
    /// Requests whose path is this prefix (whole segments, like the limiter's rules).
    pub path_prefix: String,
    /// `GET` and/or `HEAD` (default both; `HEAD` is answered from the `GET` entry).
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// How long an entry is fresh; must be > 0.
    #[serde(deserialize_with = "duration::deserialize")]
    pub ttl: Duration,
    /// How long after `ttl` an entry may still be served (STALE) while one request refreshes it.
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub stale_ttl: Duration,
    /// `shared` (one entry for everyone), `ip` (per client IP) or `header:<Name>` (per value of
    /// that header, hashed; `header:Authorization` caches per credential).
    #[serde(default = "default_key")]
    pub key: String,
    /// Tags the responses carry; `{param}` is filled from the route's path, e.g. `queue:{queue}`.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// One entry of `api.cache.invalidate`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheInvalidation {
    pub path_prefix: String,
    /// Unsafe methods it covers (default POST, PUT, PATCH, DELETE).
    #[serde(default = "default_write_methods")]
    pub methods: Vec<String>,
    /// Tags dropped after a 2xx answer; `{param}` is filled from the write's path.
    pub tags: Vec<String>,
}

fn default_methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into()]
}

fn default_write_methods() -> Vec<String> {
    ["POST", "PUT", "PATCH", "DELETE"]
        .map(String::from)
        .to_vec()
}

fn default_key() -> String {
    "shared".into()
}

/// What a cached route keys its entries by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheKey {
    Shared,
    Ip,
    /// Lower-case header name.
    Header(String),
}

impl CacheRoute {
    pub fn parsed_key(&self) -> Result<CacheKey, String> {
        let key = self.key.trim();
        match key {
            "shared" => Ok(CacheKey::Shared),
            "ip" => Ok(CacheKey::Ip),
            _ => match key.strip_prefix("header:").map(str::trim) {
                Some(name) if is_token(name) => Ok(CacheKey::Header(name.to_ascii_lowercase())),
                _ => Err(format!("`{key}` is not `shared`, `ip` or `header:<Name>`")),
            },
        }
    }
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A tag template: `[A-Za-z0-9_:.-]` and `{param}` placeholders.
fn tag_ok(tag: &str) -> bool {
    let mut open = false;
    !tag.is_empty()
        && tag.len() <= 128
        && tag.chars().all(|c| match c {
            '{' if !open => {
                open = true;
                true
            }
            '}' if open => {
                open = false;
                true
            }
            c => c.is_ascii_alphanumeric() || "_:.-".contains(c),
        })
        && !open
}

fn prefix_ok(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') {
        return Err(format!("`{prefix}` must start with `/`"));
    }
    // The prefix names the route's hash tag `rc:{<prefix>}`: braces would end it early.
    if prefix.contains(['{', '}', ' ']) || prefix.len() > 200 {
        return Err(format!(
            "`{prefix}` must not contain `{{`, `}}` or spaces (≤ 200 bytes)"
        ));
    }
    Ok(())
}

impl CacheSettings {
    pub(crate) fn apply_defaults(&mut self) {
        or_default(&mut self.redis_timeout, Duration::from_millis(100));
        or_default(&mut self.lock_timeout, Duration::from_secs(3));
        if self.max_entry_bytes <= 0 {
            self.max_entry_bytes = 256 * 1024;
        }
        if self.max_query_bytes <= 0 {
            self.max_query_bytes = 2048;
        }
        if self.max_inflight_keys <= 0 {
            self.max_inflight_keys = 10_000;
        }
        if self.local.max_entries <= 0 {
            self.local.max_entries = 10_000;
        }
        if self.local.max_bytes <= 0 {
            self.local.max_bytes = 32 * 1024 * 1024;
        }
    }

    /// The first problem, naming the list, the rule's index and the field.
    pub fn validate_rules(&self) -> Result<(), String> {
        if self.local.enabled && self.local.max_bytes < self.max_entry_bytes {
            return Err(format!(
                "local.max_bytes: must be ≥ max_entry_bytes ({}), got {}",
                self.max_entry_bytes, self.local.max_bytes
            ));
        }
        for (i, route) in self.routes.iter().enumerate() {
            let at = |field: &str, reason: String| Err(format!("routes[{i}].{field}: {reason}"));
            if let Err(reason) = prefix_ok(&route.path_prefix) {
                return at("path_prefix", reason);
            }
            if route.methods.is_empty() {
                return at("methods", "list GET and/or HEAD".into());
            }
            if let Some(bad) = route
                .methods
                .iter()
                .find(|m| !["GET", "HEAD"].contains(&m.to_ascii_uppercase().as_str()))
            {
                return at(
                    "methods",
                    format!("`{bad}` cannot be cached (only GET and HEAD)"),
                );
            }
            if route.ttl.is_zero() {
                return at("ttl", "must be > 0 (e.g. `2s`)".into());
            }
            if let Err(reason) = route.parsed_key() {
                return at("key", reason);
            }
            if let Some(bad) = route.tags.iter().find(|t| !tag_ok(t)) {
                return at(
                    "tags",
                    format!("`{bad}` must be ≤ 128 of A-Z a-z 0-9 _ : . - and {{param}}"),
                );
            }
        }
        const WRITES: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];
        for (i, rule) in self.invalidate.iter().enumerate() {
            let at =
                |field: &str, reason: String| Err(format!("invalidate[{i}].{field}: {reason}"));
            if let Err(reason) = prefix_ok(&rule.path_prefix) {
                return at("path_prefix", reason);
            }
            if let Some(bad) = rule
                .methods
                .iter()
                .find(|m| !WRITES.contains(&m.to_ascii_uppercase().as_str()))
            {
                return at(
                    "methods",
                    format!("`{bad}` is not a write (POST, PUT, PATCH, DELETE)"),
                );
            }
            if rule.tags.is_empty() {
                return at("tags", "name at least one tag".into());
            }
            if let Some(bad) = rule.tags.iter().find(|t| !tag_ok(t)) {
                return at(
                    "tags",
                    format!("`{bad}` must be ≤ 128 of A-Z a-z 0-9 _ : . - and {{param}}"),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn route() -> CacheRoute {
        CacheRoute {
            path_prefix: "/api/queues".into(),
            methods: default_methods(),
            ttl: Duration::from_secs(2),
            stale_ttl: Duration::ZERO,
            key: "shared".into(),
            tags: vec!["queue:{queue}".into()],
        }
    }

    fn check(r: CacheRoute) -> Result<(), String> {
        CacheSettings {
            routes: vec![route(), r],
            ..CacheSettings::default()
        }
        .validate_rules()
    }

    #[test]
    fn errors_name_the_rule_and_field() {
        assert!(check(route()).is_ok());
        let e = check(CacheRoute {
            methods: vec!["POST".into()],
            ..route()
        })
        .unwrap_err();
        assert!(e.starts_with("routes[1].methods:"), "{e}");
        let e = check(CacheRoute {
            ttl: Duration::ZERO,
            ..route()
        })
        .unwrap_err();
        assert!(e.starts_with("routes[1].ttl:"), "{e}");
        let e = check(CacheRoute {
            key: "cookie".into(),
            ..route()
        })
        .unwrap_err();
        assert!(e.starts_with("routes[1].key:"), "{e}");
        let e = check(CacheRoute {
            path_prefix: "/a/{x}".into(),
            ..route()
        })
        .unwrap_err();
        assert!(e.starts_with("routes[1].path_prefix:"), "{e}");
        let e = check(CacheRoute {
            tags: vec!["a b".into()],
            ..route()
        })
        .unwrap_err();
        assert!(e.starts_with("routes[1].tags:"), "{e}");
    }

    #[test]
    fn local_tier_holds_the_largest_entry() {
        let mut s = CacheSettings::default();
        s.apply_defaults();
        assert!(s.validate_rules().is_ok());
        s.local.max_bytes = 1000;
        let e = s.validate_rules().unwrap_err();
        assert!(e.starts_with("local.max_bytes:"), "{e}");
        s.local.enabled = false;
        assert!(s.validate_rules().is_ok());
    }

    #[test]
    fn keys_parse() {
        let key = |k: &str| {
            CacheRoute {
                key: k.into(),
                ..route()
            }
            .parsed_key()
        };
        assert_eq!(key("shared"), Ok(CacheKey::Shared));
        assert_eq!(key("ip"), Ok(CacheKey::Ip));
        assert_eq!(
            key("header:Authorization"),
            Ok(CacheKey::Header("authorization".into()))
        );
        assert!(key("header:").is_err());
    }
}
