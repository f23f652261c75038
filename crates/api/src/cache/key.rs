//! The cache key of a request: path + normalised query + the key policy's value. Headers
//! the key does not name (`X-Forwarded-Host`, `Accept-Encoding`, ...) never change it, so they
//! cannot poison an entry; a credential is hashed, never stored in clear.

use super::rules::{fill, path_params, RouteRule};
use actix_web::http::header::{HeaderMap, AUTHORIZATION, CACHE_CONTROL, PRAGMA};
use cacheserver_config::CacheKey;
use sha1::{Digest, Sha1};
use std::net::IpAddr;

/// Longest filled tag; longer path params make the request bypass the cache.
const MAX_TAG_BYTES: usize = 256;

/// Why a request on a cached route does not use the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bypass {
    /// `Authorization` on a route whose key does not include it.
    Authorization,
    QueryTooLong,
    /// The request said `Cache-Control: no-store`.
    NoStore,
    TagTooLong,
}

pub(crate) struct RequestParts<'a> {
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    /// The client's address (only the `ip` key policy reads it).
    pub ip: &'a dyn Fn() -> IpAddr,
}

/// SHA-1 (hex) of everything a request's entry depends on: the path (the route pattern follows
/// from it), the normalised query and the key policy's value. No route matching: a local hit
/// needs only this.
pub(crate) fn hash(
    rule: &RouteRule,
    req: &RequestParts<'_>,
    max_query: usize,
) -> Result<String, Bypass> {
    if req.query.len() > max_query {
        return Err(Bypass::QueryTooLong);
    }
    if directives(req.headers).any(|d| d == "no-store") {
        return Err(Bypass::NoStore);
    }
    let keyed_on_authorization =
        matches!(&rule.key, CacheKey::Header(name) if name == "authorization");
    if req.headers.contains_key(AUTHORIZATION) && !keyed_on_authorization {
        return Err(Bypass::Authorization);
    }
    // Fed in pieces, the same bytes as "v2\n<path>\n<query>\n<identity>": no string is built
    // on the hit path.
    let mut material = Sha1::new();
    material.update(b"v2\n");
    material.update(req.path.as_bytes());
    material.update(b"\n");
    if !req.query.is_empty() {
        material.update(normalized_query(req.query).as_bytes());
    }
    material.update(b"\n");
    match &rule.key {
        CacheKey::Shared => material.update(b"shared"),
        CacheKey::Ip => material.update(format!("ip:{}", (req.ip)()).as_bytes()),
        CacheKey::Header(name) => {
            // Every value of the header counts, so `A: x` and `A: x, A: y` differ.
            let values: Vec<&[u8]> = req
                .headers
                .get_all(name.as_str())
                .map(|v| v.as_bytes())
                .collect();
            if values.is_empty() {
                material.update(b"anonymous");
            } else {
                let joined = values.join(&b'\n');
                let credential = fred::util::sha1_hash(&String::from_utf8_lossy(&joined));
                material.update(b"h:");
                material.update(credential.as_bytes());
            }
        }
    }
    Ok(lower_hex(&material.finalize()))
}

fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    hex
}

/// The tags an entry of `rule` carries, filled from the path matched by `pattern` (on a miss:
/// the route's pattern costs a walk of actix' resource map).
pub(crate) fn tags(rule: &RouteRule, pattern: &str, path: &str) -> Result<Vec<String>, Bypass> {
    let params = path_params(pattern, path);
    let mut tags = Vec::with_capacity(rule.tags.len());
    for template in &rule.tags {
        if let Some(tag) = fill(template, &params) {
            if tag.len() > MAX_TAG_BYTES {
                return Err(Bypass::TagTooLong);
            }
            tags.push(tag);
        }
    }
    Ok(tags)
}

/// Decoded `name=value` pairs sorted, so `?b=2&a=1` and `?a=%31&b=2` share an entry.
pub(crate) fn normalized_query(query: &str) -> String {
    let mut pairs = actix_web::web::Query::<Vec<(String, String)>>::from_query(query)
        .map(|q| q.into_inner())
        .unwrap_or_else(|_| vec![(query.to_owned(), String::new())]);
    pairs.sort();
    let mut out = String::with_capacity(query.len());
    for (name, value) in pairs {
        // Lengths first: no pair of names and values can spell another.
        out.push_str(&format!("{}:{name}={}:{value}&", name.len(), value.len()));
    }
    out
}

/// The request asks to skip stored entries (`Cache-Control: no-cache` / `max-age=0`, or
/// `Pragma: no-cache`).
pub(crate) fn wants_refresh(headers: &HeaderMap) -> bool {
    directives(headers).any(|d| d == "no-cache" || d == "max-age=0")
        || headers
            .get(PRAGMA)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("no-cache"))
}

fn directives(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(CACHE_CONTROL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The key is the SHA-1 of "v2\n<path>\n<normalised query>\n<identity>" (instances of
    /// different builds share entries as long as this holds).
    #[test]
    fn the_key_hashes_path_query_and_identity() {
        let rules = |key: &str| {
            let route = serde_json::json!({"path_prefix": "/api/queues", "ttl": "1s", "key": key});
            let settings: cacheserver_config::CacheSettings =
                serde_json::from_value(serde_json::json!({ "routes": [route] })).unwrap();
            super::super::rules::Rules::new(&settings).unwrap()
        };
        let ip = || IpAddr::from([10, 0, 0, 7]);
        let mut headers = HeaderMap::new();
        headers.insert(
            actix_web::http::header::HeaderName::from_static("x-user"),
            actix_web::http::header::HeaderValue::from_static("alice"),
        );
        let parts = |query| RequestParts {
            path: "/api/queues",
            query,
            headers: &headers,
            ip: &ip,
        };
        let q = normalized_query("b=2&a=1");
        let alice = format!("h:{}", fred::util::sha1_hash("alice"));
        for (key, query, identity) in [
            ("shared", "", "shared".to_owned()),
            ("shared", "b=2&a=1", "shared".to_owned()),
            ("ip", "", "ip:10.0.0.7".to_owned()),
            ("header:X-User", "b=2&a=1", alice),
            ("header:X-Other", "", "anonymous".to_owned()),
        ] {
            let rules = rules(key);
            let expected_query = if query.is_empty() { "" } else { q.as_str() };
            let material = format!("v2\n/api/queues\n{expected_query}\n{identity}");
            assert_eq!(
                hash(&rules.routes[0], &parts(query), 2048).unwrap(),
                fred::util::sha1_hash(&material),
                "{key} {query}"
            );
        }
    }

    #[test]
    fn query_is_sorted_and_decoded() {
        assert_eq!(normalized_query("b=2&a=1"), normalized_query("a=%31&b=2"));
        assert_ne!(normalized_query("a=1"), normalized_query("a=2"));
        assert_ne!(normalized_query("a=1&b=2"), normalized_query("a=1%26b%3D2"));
    }
}
