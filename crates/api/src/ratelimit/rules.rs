//! `api.rate_limit.rules`: which limits apply to a request and what it is counted by. Rule 0 is
//! the top-level limits (every request no rule matches, counted by client IP).

use super::keys::{hash128, hash64, ClientId, ClientKey};
use super::types::{Backend, Limits};
use actix_web::http::header::{HeaderMap, HeaderValue};
use actix_web::http::Method;
use cacheserver_config::{RateLimitSettings, RuleKey};
use std::net::IpAddr;

pub(crate) struct Rule {
    /// `None` for the top-level limits.
    pub name: Option<Box<str>>,
    /// Names of its windows in `RateLimit` / `RateLimit-Policy`: `minute` or `<rule>:minute`.
    pub minute_name: Box<str>,
    pub hour_name: Box<str>,
    path_prefix: Box<str>,
    methods: Vec<Method>,
    key: RuleKey,
    pub limits: Limits,
    pub policy_header: HeaderValue,
    /// `ratelimit_decisions_total{decision, backend, rule}`, looked up once.
    counters: Vec<metrics::Counter>,
}

const BACKENDS: [Backend; 5] = [
    Backend::Redis,
    Backend::Local,
    Backend::Cached,
    Backend::Memory,
    Backend::FailOpen,
];

impl Rule {
    fn new(
        name: Option<&str>,
        path_prefix: &str,
        methods: Vec<Method>,
        key: RuleKey,
        limits: Limits,
    ) -> Self {
        let window = |w: &str| match name {
            Some(n) => format!("{n}:{w}").into_boxed_str(),
            None => w.into(),
        };
        let (minute_name, hour_name) = (window("minute"), window("hour"));
        let policy = format!(
            "\"{minute_name}\";q={};w=60, \"{hour_name}\";q={};w=3600",
            limits.per_minute, limits.per_hour
        );
        let label = name.unwrap_or("default").to_owned();
        let counters = [true, false]
            .iter()
            .flat_map(|&allowed| BACKENDS.iter().map(move |&b| (allowed, b)))
            .map(|(allowed, b)| {
                let decision = if allowed { "allowed" } else { "limited" };
                metrics::counter!("ratelimit_decisions_total", "decision" => decision, "backend" => b.as_str(), "rule" => label.clone())
            })
            .collect();
        Self {
            name: name.map(Into::into),
            minute_name,
            hour_name,
            path_prefix: path_prefix.into(),
            methods,
            key,
            limits,
            policy_header: HeaderValue::from_str(&policy)
                .unwrap_or_else(|_| HeaderValue::from_static("")),
            counters,
        }
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        let prefix = &*self.path_prefix;
        let on_segment = path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'));
        on_segment && (self.methods.is_empty() || self.methods.contains(method))
    }

    /// Count one decision in `ratelimit_decisions_total`.
    pub fn count(&self, allowed: bool, backend: Backend) {
        let b = BACKENDS.iter().position(|&x| x == backend).unwrap_or(0);
        let index = if allowed { 0 } else { BACKENDS.len() } + b;
        if let Some(counter) = self.counters.get(index) {
            counter.increment(1);
        }
    }
}

pub(crate) struct Rules {
    /// Index 0: the top-level limits; then the configured rules in order.
    rules: Box<[Rule]>,
}

impl Rules {
    pub fn new(settings: &RateLimitSettings) -> Result<Self, String> {
        let limit = |v: i64| u64::try_from(v).map_err(|e| e.to_string());
        let top = Limits {
            per_minute: limit(settings.requests_per_minute)?,
            per_hour: limit(settings.requests_per_hour)?,
        };
        let mut rules = vec![Rule::new(None, "/", Vec::new(), RuleKey::Ip, top)];
        for (i, r) in settings.rules.iter().enumerate() {
            let methods = r
                .methods
                .iter()
                .map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("rules[{i}].methods: {e}"))?;
            let limits = Limits {
                per_minute: r.requests_per_minute.map_or(Ok(top.per_minute), limit)?,
                per_hour: r.requests_per_hour.map_or(Ok(top.per_hour), limit)?,
            };
            let key = r.parsed_key().map_err(|e| format!("rules[{i}].key: {e}"))?;
            rules.push(Rule::new(
                Some(&r.name),
                &r.path_prefix,
                methods,
                key,
                limits,
            ));
        }
        if rules.len() > usize::from(u16::MAX) {
            return Err("too many rules".into());
        }
        Ok(Self {
            rules: rules.into(),
        })
    }

    /// The first matching rule, else the top-level limits: its index and the rule.
    pub fn select(&self, method: &Method, path: &str) -> (u16, &Rule) {
        let index = self.rules[1..]
            .iter()
            .position(|r| r.matches(method, path))
            .map_or(0, |i| i + 1);
        (u16::try_from(index).unwrap_or(0), &self.rules[index])
    }

    pub fn get(&self, index: u16) -> &Rule {
        self.rules.get(usize::from(index)).unwrap_or(&self.rules[0])
    }

    pub fn names(&self) -> std::sync::Arc<[Option<Box<str>>]> {
        self.rules.iter().map(|r| r.name.clone()).collect()
    }
}

/// What a request is counted by under `rule` (index `index`). `route` is asked only for
/// `ip+route` rules (the matched route pattern, e.g. `/api/jobs/{id}`).
pub(crate) fn client_key(
    index: u16,
    rule: &Rule,
    ip: IpAddr,
    headers: &HeaderMap,
    route: impl FnOnce() -> Option<String>,
) -> ClientKey {
    let id = match &rule.key {
        RuleKey::Ip => ClientId::Ip(ip),
        RuleKey::IpRoute => ClientId::IpRoute(ip, hash64(&route().unwrap_or_default())),
        RuleKey::Header(name) => match headers.get(name.as_str()).and_then(|v| v.to_str().ok()) {
            Some(value) if !value.is_empty() => ClientId::Hashed(hash128(value)),
            _ => ClientId::Ip(ip),
        },
    };
    ClientKey { rule: index, id }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use cacheserver_config::RateLimitRule;

    fn rules() -> Rules {
        let settings = RateLimitSettings {
            rules: vec![
                RateLimitRule {
                    name: "register".into(),
                    path_prefix: "/api/jobs".into(),
                    methods: vec!["post".into()],
                    key: "ip".into(),
                    requests_per_minute: Some(10),
                    requests_per_hour: None,
                },
                RateLimitRule {
                    name: "keyed".into(),
                    path_prefix: "/api/".into(),
                    key: "header:X-Api-Key".into(),
                    ..Default::default()
                },
            ],
            ..RateLimitSettings::default()
        };
        Rules::new(&settings).unwrap()
    }

    #[test]
    fn first_matching_rule_on_whole_segments() {
        let r = rules();
        assert_eq!(r.select(&Method::POST, "/api/jobs").0, 1);
        assert_eq!(r.select(&Method::POST, "/api/jobs/batch").0, 1);
        assert_eq!(r.select(&Method::GET, "/api/jobs").0, 2, "method");
        assert_eq!(r.select(&Method::POST, "/api/jobsx").0, 2, "segment");
        assert_eq!(r.select(&Method::GET, "/chaos/status").0, 0, "top level");
        let register = r.get(1);
        assert_eq!(
            register.limits,
            Limits {
                per_minute: 10,
                per_hour: 1000
            },
            "inherits the hour"
        );
        assert_eq!(
            register.policy_header.to_str().unwrap(),
            "\"register:minute\";q=10;w=60, \"register:hour\";q=1000;w=3600"
        );
    }

    #[test]
    fn header_keys_are_hashed_and_fall_back_to_the_ip() {
        let r = rules();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let mut headers = HeaderMap::new();
        let none = client_key(2, r.get(2), ip, &headers, || None);
        assert_eq!(none.id, ClientId::Ip(ip));
        headers.insert("x-api-key".parse().unwrap(), HeaderValue::from_static("k1"));
        let keyed = client_key(2, r.get(2), ip, &headers, || None);
        assert_eq!(keyed.id, ClientId::Hashed(hash128("k1")));
    }
}
