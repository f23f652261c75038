//! `api.cache.routes` and `api.cache.invalidate`, compiled once: which cached route a read
//! belongs to, and which tags (in which routes' slots) a write drops.

use super::metrics::RouteCounters;
use actix_web::http::Method;
use cacheserver_config::{CacheKey, CacheSettings};
use std::time::Duration;

pub(crate) struct RouteRule {
    /// The configured prefix: the metrics label and the route's Redis hash tag `rc:{<prefix>}`.
    pub prefix: Box<str>,
    get: bool,
    head: bool,
    pub ttl: Duration,
    pub stale: Duration,
    pub key: CacheKey,
    /// Tag templates, e.g. `queue:{queue}`.
    pub tags: Vec<String>,
    pub counters: RouteCounters,
}

impl RouteRule {
    /// Whether responses may be stored by shared caches too (`public`) or only by the client.
    pub fn is_public(&self) -> bool {
        self.key == CacheKey::Shared
    }
}

/// One tag template of a write rule and the routes whose responses carry it.
pub(crate) struct WriteTag {
    pub template: String,
    pub routes: Vec<usize>,
    /// Writes that dropped this tag.
    pub invalidations: metrics::Counter,
}

pub(crate) struct WriteRule {
    prefix: Box<str>,
    methods: Vec<Method>,
    pub tags: Vec<WriteTag>,
}

pub(crate) struct Rules {
    pub routes: Vec<RouteRule>,
    pub writes: Vec<WriteRule>,
}

impl Rules {
    /// Settings are validated by `cacheserver_config` already; this only compiles them.
    pub fn new(settings: &CacheSettings) -> Result<Self, String> {
        let mut routes = Vec::with_capacity(settings.routes.len());
        for (i, r) in settings.routes.iter().enumerate() {
            let has = |m: &str| r.methods.iter().any(|x| x.eq_ignore_ascii_case(m));
            routes.push(RouteRule {
                prefix: r.path_prefix.as_str().into(),
                get: has("GET"),
                head: has("HEAD"),
                ttl: r.ttl,
                stale: r.stale_ttl,
                key: r
                    .parsed_key()
                    .map_err(|e| format!("routes[{i}].key: {e}"))?,
                tags: r.tags.clone(),
                counters: RouteCounters::new(&r.path_prefix),
            });
        }
        let writes = settings
            .invalidate
            .iter()
            .map(|w| WriteRule {
                prefix: w.path_prefix.as_str().into(),
                methods: w
                    .methods
                    .iter()
                    .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
                    .collect(),
                tags: w
                    .tags
                    .iter()
                    .map(|t| WriteTag {
                        template: t.clone(),
                        invalidations: super::metrics::invalidations(t),
                        routes: routes
                            .iter()
                            .enumerate()
                            .filter(|(_, r)| r.tags.contains(t))
                            .map(|(i, _)| i)
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
        Ok(Self { routes, writes })
    }

    /// The first cached route for a GET or HEAD on `path`.
    pub fn route_for(&self, method: &Method, path: &str) -> Option<(usize, &RouteRule)> {
        self.routes.iter().enumerate().find(|(_, r)| {
            let method_ok =
                (*method == Method::GET && r.get) || (*method == Method::HEAD && r.head);
            method_ok && on_segment(&r.prefix, path)
        })
    }

    /// Every write rule matching `method` on `path`.
    pub fn writes_for<'a>(
        &'a self,
        method: &'a Method,
        path: &'a str,
    ) -> impl Iterator<Item = &'a WriteRule> + 'a {
        self.writes
            .iter()
            .filter(move |w| w.methods.contains(method) && on_segment(&w.prefix, path))
    }
}

/// `path` is `prefix` or below it on whole segments (`/api/queues` matches `/api/queues/a`, not
/// `/api/queuesx`).
fn on_segment(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'))
}

/// The `{name}` segments of route `pattern` (e.g. `/api/queues/{queue}/history`) with their
/// (percent-decoded) values in `path`.
pub(crate) fn path_params(pattern: &str, path: &str) -> Vec<(String, String)> {
    pattern
        .split('/')
        .zip(path.split('/'))
        .filter_map(|(p, v)| {
            let name = p.strip_prefix('{')?.strip_suffix('}')?;
            let name = name.split(':').next().unwrap_or(name);
            let value = percent_decode(v);
            Some((name.to_owned(), value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `template` with its `{param}`s filled, or `None` when a param is not in the path (the tag
/// does not apply to this request).
pub(crate) fn fill(template: &str, params: &[(String, String)]) -> Option<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}')? + open;
        let name = &rest[open + 1..close];
        let (_, value) = params.iter().find(|(n, _)| n == name)?;
        out.push_str(value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn params_and_templates() {
        let p = path_params("/api/queues/{queue}/history", "/api/queues/a%20b/history");
        assert_eq!(p, vec![("queue".to_owned(), "a b".to_owned())]);
        assert_eq!(fill("queue:{queue}", &p).as_deref(), Some("queue:a b"));
        assert_eq!(fill("queues", &p).as_deref(), Some("queues"));
        assert_eq!(fill("queue:{queue}", &[]), None);
    }

    #[test]
    fn segments() {
        assert!(on_segment("/api/queues", "/api/queues"));
        assert!(on_segment("/api/queues", "/api/queues/a/history"));
        assert!(!on_segment("/api/queues", "/api/queuesx"));
    }
}
