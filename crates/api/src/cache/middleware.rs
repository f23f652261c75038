//! The actix middleware: put it on a scope or route (`.wrap(from_fn(response_cache))`) with a
//! `web::Data<ResponseCache>` in the app; `api.cache.routes` decides what is cached. Reads on a
//! cached route: HIT / MISS / STALE / BYPASS; writes (2xx) drop the tags `api.cache.invalidate`
//! names before their response is sent. Everything else passes through untouched.

use super::entry::Entry;
use super::flight::{follow, Join, Leader, Outcome};
use super::key::{self, RequestParts};
use super::metrics::{redis_error, CacheResult};
use super::rules::{fill, path_params, RouteRule};
use super::store::{entry_key, generation_keys, EntryKeys};
use super::ResponseCache;
use crate::http_metrics::MatchedRoute;
use crate::ratelimit::client_ip;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{
    HeaderMap, HeaderName, HeaderValue, AGE, CACHE_CONTROL, ETAG, IF_NONE_MATCH, SET_COOKIE,
};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

type Answer = Result<ServiceResponse<BoxBody>, actix_web::Error>;

/// The hit path awaits nothing. The paths that call Redis are boxed: their futures are KBs
/// (fred's), and inlined they would make every request's future as large (actix boxes it:
/// a large allocation and copy per request, hits included).
pub async fn response_cache(req: ServiceRequest, next: Next<impl MessageBody + 'static>) -> Answer {
    let cache = req
        .app_data::<web::Data<ResponseCache>>()
        .filter(|c| c.is_enabled())
        .cloned();
    let Some(cache) = cache else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let method = req.method().clone();
    if [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(&method) {
        let res = next.call(req).await?;
        if res.status().is_success() {
            Box::pin(cache.invalidate_after(&method, res.request())).await;
        }
        return Ok(res.map_into_boxed_body());
    }
    let inner = &cache.inner;
    let Some((_, rule)) = inner.rules.route_for(&method, req.path()) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    if inner.store.is_none() {
        return pass(rule, next, req, CacheResult::Bypass).await;
    }
    let client = || {
        let peer = req
            .peer_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        client_ip(peer, req.headers(), &inner.trusted_proxies)
    };
    let parts = RequestParts {
        path: req.path(),
        query: req.query_string(),
        headers: req.headers(),
        ip: &client,
    };
    let hash = match key::hash(rule, &parts, inner.max_query_bytes) {
        Ok(hash) => hash,
        Err(why) => return bypass(rule, next, req, why).await,
    };
    let refresh = key::wants_refresh(req.headers());
    if let Some(local) = inner.local.as_ref().filter(|_| !refresh) {
        // The hit path: no Redis round trip, one key built.
        let now = Instant::now();
        let key = entry_key(&rule.prefix, &hash);
        if let Some(copy) = local.state().get(&key, now) {
            if copy.entry.matches_vary(req.headers()) {
                rule.counters.local_hits.increment(1);
                let fresh_for = copy.fresh_until.saturating_duration_since(now);
                let pattern = copy.pattern.as_ref();
                return Ok(answer(
                    req,
                    rule,
                    &copy.entry,
                    CacheResult::Hit,
                    fresh_for,
                    pattern,
                ));
            }
        }
    }
    let pattern: Option<Arc<str>> = req.match_pattern().map(Arc::from);
    let tags = match key::tags(rule, pattern.as_deref().unwrap_or(req.path()), req.path()) {
        Ok(tags) => tags,
        Err(why) => return bypass(rule, next, req, why).await,
    };
    let keys = EntryKeys::new(&rule.prefix, &hash, &tags, pattern);
    if refresh {
        return Box::pin(cache.refresh(rule, &keys, next, req)).await;
    }
    match inner.flights.join(&keys.entry()) {
        Join::Follower(slot) => match follow(slot, inner.lock_timeout).await {
            Some(Outcome::Entry {
                entry,
                fresh_for,
                stale,
            }) if entry.matches_vary(req.headers()) => {
                let result = if stale {
                    CacheResult::Stale
                } else {
                    CacheResult::Hit
                };
                Ok(answer(req, rule, &entry, result, fresh_for, keys.pattern()))
            }
            // The leader had nothing to share (not cacheable, Redis down) or went away.
            _ => pass(rule, next, req, CacheResult::Miss).await,
        },
        Join::Leader(leader) => Box::pin(cache.lead(rule, &keys, Some(leader), next, req)).await,
        Join::Full => Box::pin(cache.lead(rule, &keys, None, next, req)).await,
    }
}

impl ResponseCache {
    /// The first request for a key in this instance: ask Redis, then answer from the entry,
    /// refresh it, or wait for the instance that is refreshing it.
    async fn lead<B: MessageBody + 'static>(
        &self,
        rule: &RouteRule,
        keys: &EntryKeys,
        mut leader: Option<Leader>,
        next: Next<B>,
        req: ServiceRequest,
    ) -> Answer {
        let inner = &self.inner;
        let Some(store) = inner.store.as_ref() else {
            return pass(rule, next, req, CacheResult::Bypass).await;
        };
        let token = ulid::Ulid::new().to_string();
        let deadline = Instant::now() + inner.lock_timeout;
        let mut pause = Duration::from_millis(10);
        loop {
            let started = Instant::now();
            let ticket = inner.local.as_ref().and_then(|l| l.state().ticket(started));
            let lookup = match store
                .lookup(keys, rule.stale, false, &token, inner.lock_timeout)
                .await
            {
                Ok(lookup) => lookup,
                Err(e) => {
                    redis_error();
                    tracing::debug!(error = %e, "response cache lookup failed; bypassing");
                    publish(&mut leader, Outcome::Nothing);
                    return pass(rule, next, req, CacheResult::Bypass).await;
                }
            };
            let usable = lookup
                .entry
                .filter(|(entry, _)| entry.matches_vary(req.headers()));
            if let Some((entry, pttl)) = usable {
                let fresh_ms = pttl - millis(rule.stale);
                let entry = Arc::new(entry);
                if fresh_ms > 0 {
                    let fresh_for = Duration::from_millis(u64::try_from(fresh_ms).unwrap_or(0));
                    if let (Some(local), Some(ticket)) = (&inner.local, ticket) {
                        local
                            .state()
                            .fill(ticket, keys, entry.clone(), started, fresh_for);
                    }
                    publish(
                        &mut leader,
                        Outcome::Entry {
                            entry: entry.clone(),
                            fresh_for,
                            stale: false,
                        },
                    );
                    let pattern = keys.pattern();
                    return Ok(answer(
                        req,
                        rule,
                        &entry,
                        CacheResult::Hit,
                        fresh_for,
                        pattern,
                    ));
                }
                publish(
                    &mut leader,
                    Outcome::Entry {
                        entry: entry.clone(),
                        fresh_for: Duration::ZERO,
                        stale: true,
                    },
                );
                if !lookup.locked {
                    // Another request (here or in another instance) is refreshing it.
                    return Ok(answer(
                        req,
                        rule,
                        &entry,
                        CacheResult::Stale,
                        Duration::ZERO,
                        keys.pattern(),
                    ));
                }
                return Ok(self.serve_stale_and_refresh(
                    rule,
                    keys,
                    entry,
                    lookup.generations,
                    token,
                    next,
                    req,
                ));
            }
            if lookup.locked {
                return self
                    .fetch_and_store(rule, keys, lookup.generations, &token, leader, next, req)
                    .await;
            }
            // Another instance holds the lock: wait for its entry, within the lock's time.
            if Instant::now() + pause >= deadline {
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
        publish(&mut leader, Outcome::Nothing);
        pass(rule, next, req, CacheResult::Miss).await
    }

    /// `Cache-Control: no-cache` from the client: run the handler and store its answer.
    async fn refresh<B: MessageBody + 'static>(
        &self,
        rule: &RouteRule,
        keys: &EntryKeys,
        next: Next<B>,
        req: ServiceRequest,
    ) -> Answer {
        let inner = &self.inner;
        let Some(store) = inner.store.as_ref() else {
            return pass(rule, next, req, CacheResult::Bypass).await;
        };
        let token = ulid::Ulid::new().to_string();
        match store
            .lookup(keys, rule.stale, true, &token, inner.lock_timeout)
            .await
        {
            Ok(lookup) => {
                let token = if lookup.locked { token } else { String::new() };
                self.fetch_and_store(rule, keys, lookup.generations, &token, None, next, req)
                    .await
            }
            Err(e) => {
                redis_error();
                tracing::debug!(error = %e, "response cache lookup failed; bypassing");
                pass(rule, next, req, CacheResult::Bypass).await
            }
        }
    }

    /// Run the handler; store a cacheable answer (with the generations seen before it ran) and
    /// share it with this instance's followers.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_and_store<B: MessageBody + 'static>(
        &self,
        rule: &RouteRule,
        keys: &EntryKeys,
        generations: Bytes,
        token: &str,
        mut leader: Option<Leader>,
        next: Next<B>,
        req: ServiceRequest,
    ) -> Answer {
        let (http_req, fetched) = self.fetch(rule, next, req).await?;
        let entry = match fetched {
            Fetched::Entry(entry) => Arc::new(entry),
            Fetched::NotCacheable(res) => {
                publish(&mut leader, Outcome::Nothing);
                self.release(keys, generations, token).await;
                let mut res = ServiceResponse::new(http_req, res);
                mark(res.headers_mut(), CacheResult::Miss);
                rule.counters.count(CacheResult::Miss);
                return Ok(res);
            }
        };
        publish(
            &mut leader,
            Outcome::Entry {
                entry: entry.clone(),
                fresh_for: rule.ttl,
                stale: false,
            },
        );
        self.store_entry(rule, keys, generations, &entry, token)
            .await;
        let response = render(
            http_req.headers(),
            rule,
            &entry,
            CacheResult::Miss,
            rule.ttl,
        );
        rule.counters.count(CacheResult::Miss);
        Ok(ServiceResponse::new(http_req, response))
    }

    /// Answer STALE now; refresh in the background once the client's answer is gone (the
    /// request is handed to the handler then: actix needs it unshared to route it).
    #[allow(clippy::too_many_arguments)]
    fn serve_stale_and_refresh<B: MessageBody + 'static>(
        &self,
        rule: &RouteRule,
        keys: &EntryKeys,
        entry: Arc<Entry>,
        generations: Bytes,
        token: String,
        next: Next<B>,
        req: ServiceRequest,
    ) -> ServiceResponse<BoxBody> {
        // The answer goes out before the refresh reaches routing.
        say_route(&req, keys.pattern());
        let http_req = req.request().clone();
        let (sent, wait_sent) = tokio::sync::oneshot::channel::<()>();
        let response = render(
            req.headers(),
            rule,
            &entry,
            CacheResult::Stale,
            Duration::ZERO,
        )
        .map_body(|_, body| {
            BoxBody::new(OnDrop {
                body,
                done: Some(sent),
            })
        });
        rule.counters.count(CacheResult::Stale);
        let cache = self.clone();
        let route = rule.prefix.clone();
        let keys = keys.clone();
        actix_web::rt::spawn(async move {
            // Resolves when the client's body is dropped (sent or the client went away).
            let _ = wait_sent.await;
            let Some(rule) = cache.inner.rules.routes.iter().find(|r| r.prefix == route) else {
                return;
            };
            match cache.fetch(rule, next, req).await {
                Ok((_, Fetched::Entry(entry))) => {
                    cache
                        .store_entry(rule, &keys, generations, &Arc::new(entry), &token)
                        .await;
                }
                Ok((_, Fetched::NotCacheable(_))) => {
                    cache.release(&keys, generations, &token).await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "background cache refresh failed");
                    cache.release(&keys, generations, &token).await;
                }
            }
        });
        ServiceResponse::new(http_req, response)
    }

    /// Call the handler (a HEAD as a GET, so the entry serves both) and read a cacheable body.
    async fn fetch<B: MessageBody + 'static>(
        &self,
        rule: &RouteRule,
        next: Next<B>,
        mut req: ServiceRequest,
    ) -> Result<(HttpRequest, Fetched), actix_web::Error> {
        if req.method() == Method::HEAD {
            // actix still answers the client without a body: its codec remembers the HEAD.
            req.head_mut().method = Method::GET;
        }
        let started = Instant::now();
        let res = next.call(req).await?;
        let (http_req, res) = res.into_parts();
        if !storable(
            res.status(),
            res.headers(),
            res.body().size(),
            self.inner.max_entry_bytes,
        ) {
            return Ok((http_req, Fetched::NotCacheable(res.map_into_boxed_body())));
        }
        let (head, body) = res.into_parts();
        let bytes = actix_web::body::to_bytes(body)
            .await
            .map_err(|e| actix_web::error::ErrorInternalServerError(e.into().to_string()))?;
        match Entry::new(
            head.status(),
            head.headers(),
            http_req.headers(),
            bytes.clone(),
        ) {
            Some(entry) => {
                rule.counters
                    .refresh
                    .record(started.elapsed().as_secs_f64());
                #[allow(clippy::cast_precision_loss)]
                rule.counters.entry_bytes.record(bytes.len() as f64);
                Ok((http_req, Fetched::Entry(entry)))
            }
            None => Ok((
                http_req,
                Fetched::NotCacheable(head.set_body(BoxBody::new(bytes))),
            )),
        }
    }

    /// Store `entry`; with the local tier, keep a copy from the store's own push on (waits for
    /// it, within the Redis budget, so this instance's next request is answered locally).
    async fn store_entry(
        &self,
        rule: &RouteRule,
        keys: &EntryKeys,
        generations: Bytes,
        entry: &Arc<Entry>,
        token: &str,
    ) {
        let Some(store) = self.inner.store.as_ref() else {
            return;
        };
        let lifetime = rule.ttl + rule.stale;
        // Before the call: the entry is fresh at least this long from here.
        let fresh_until = Instant::now() + rule.ttl;
        let own = self.inner.local.as_ref().and_then(|local| {
            let markers = keys.markers();
            let heard = local
                .state()
                .expect_own(keys, &markers, entry.clone(), fresh_until)?;
            Some((local, markers, heard))
        });
        let markers = own.as_ref().map(|(_, markers, _)| markers);
        let stored = store
            .store(keys, generations, entry.encode(), lifetime, token, markers)
            .await;
        if let Err(e) = &stored {
            redis_error();
            tracing::debug!(error = %e, "response cache store failed");
        }
        let Some((local, markers, heard)) = own else {
            return;
        };
        if matches!(stored, Ok(true)) {
            // The pushes normally arrive with the reply; without them the copy is kept later.
            let _ = tokio::time::timeout(store.budget(), heard).await;
        } else {
            local.state().forget_own(&markers);
        }
    }

    /// Give the lock back without storing (the answer was not cacheable).
    async fn release(&self, keys: &EntryKeys, generations: Bytes, token: &str) {
        let Some(store) = self.inner.store.as_ref() else {
            return;
        };
        if token.is_empty() {
            return;
        }
        let _ = generations;
        if let Err(e) = store.release(keys, token).await {
            redis_error();
            tracing::debug!(error = %e, "response cache lock release failed (it expires)");
        }
    }

    /// After a successful write: new generations for the tags the write rules name, in every
    /// route carrying them. Failures are counted and logged; the write's answer stands.
    async fn invalidate_after(&self, method: &Method, req: &HttpRequest) {
        let inner = &self.inner;
        let Some(invalidator) = inner.invalidator.as_ref() else {
            return;
        };
        let path = req.path();
        let pattern = req.match_pattern().unwrap_or_else(|| path.to_owned());
        let params = path_params(&pattern, path);
        let mut per_route: Vec<Vec<String>> = vec![Vec::new(); inner.rules.routes.len()];
        for rule in inner.rules.writes_for(method, path) {
            for tag in &rule.tags {
                let Some(value) = fill(&tag.template, &params) else {
                    continue;
                };
                tag.invalidations.increment(1);
                for &route in &tag.routes {
                    if let Some(tags) = per_route.get_mut(route) {
                        if !tags.contains(&value) {
                            tags.push(value.clone());
                        }
                    }
                }
            }
        }
        if per_route.iter().all(Vec::is_empty) {
            return;
        }
        // Together with the other writes that finish meanwhile: one call per route and batch.
        let outcome = invalidator.invalidate(&per_route).await;
        for (tags, result) in per_route.iter().zip(outcome.iter()) {
            if let (false, Err(e)) = (tags.is_empty(), result) {
                redis_error();
                tracing::warn!(error = %e, path, "response cache invalidation failed; entries may stay until their TTL");
            }
        }
        // After Redis has the new generations (a lookup from now on cannot find an old entry),
        // before the write answers: this instance's next read neither follows a lookup that
        // began before (a flight) nor is a local hit.
        let routes: Vec<String> = per_route
            .iter()
            .zip(&inner.rules.routes)
            .filter(|(tags, _)| !tags.is_empty())
            .map(|(_, route)| entry_key(&route.prefix, ""))
            .collect();
        inner.flights.invalidate(&routes);
        if let Some(local) = &inner.local {
            let dropped: Vec<String> = per_route
                .iter()
                .zip(&inner.rules.routes)
                .flat_map(|(tags, route)| generation_keys(&route.prefix, tags))
                .collect();
            if !dropped.is_empty() {
                local.state().drop_generations(&dropped);
            }
        }
    }
}

enum Fetched {
    Entry(Entry),
    NotCacheable(HttpResponse<BoxBody>),
}

fn publish(leader: &mut Option<Leader>, outcome: Outcome) {
    if let Some(leader) = leader.take() {
        leader.publish(outcome);
    }
}

/// A request the cache does not serve (see [`key::Bypass`]).
async fn bypass<B: MessageBody + 'static>(
    rule: &RouteRule,
    next: Next<B>,
    req: ServiceRequest,
    why: key::Bypass,
) -> Answer {
    tracing::debug!(?why, path = req.path(), "response cache bypassed");
    pass(rule, next, req, CacheResult::Bypass).await
}

/// The handler's answer, untouched but for `X-Cache`.
async fn pass<B: MessageBody + 'static>(
    rule: &RouteRule,
    next: Next<B>,
    req: ServiceRequest,
    result: CacheResult,
) -> Answer {
    rule.counters.count(result);
    let mut res = next.call(req).await?.map_into_boxed_body();
    mark(res.headers_mut(), result);
    Ok(res)
}

/// An answer from the cache; the request never reached routing, so it says its route pattern
/// for the request metrics and span.
fn answer(
    req: ServiceRequest,
    rule: &RouteRule,
    entry: &Entry,
    result: CacheResult,
    fresh_for: Duration,
    pattern: Option<&Arc<str>>,
) -> ServiceResponse<BoxBody> {
    rule.counters.count(result);
    say_route(&req, pattern);
    let response = render(req.headers(), rule, entry, result, fresh_for);
    req.into_response(response)
}

/// Tell the request metrics and span the route pattern of a request answered before routing
/// reached its resource.
fn say_route(req: &ServiceRequest, pattern: Option<&Arc<str>>) {
    if let Some(pattern) = pattern {
        req.extensions_mut().insert(MatchedRoute(pattern.clone()));
    }
}

/// An answer from `entry`: 304 when `If-None-Match` names it, else the stored response.
fn render(
    request_headers: &HeaderMap,
    rule: &RouteRule,
    entry: &Entry,
    result: CacheResult,
    fresh_for: Duration,
) -> HttpResponse {
    // Headers go straight into the map (the builder would convert and check each again).
    let not_modified = entry.not_modified(request_headers.get(IF_NONE_MATCH));
    let mut response = if not_modified {
        HttpResponse::new(StatusCode::NOT_MODIFIED)
    } else {
        HttpResponse::with_body(entry.status, BoxBody::new(entry.body.clone()))
    };
    let headers = response.headers_mut();
    if !not_modified {
        for (name, value) in &entry.headers {
            headers.append(name.clone(), value.clone());
        }
    }
    let age = rule.ttl.saturating_sub(fresh_for).as_secs();
    let visibility = if rule.is_public() {
        "public"
    } else {
        "private"
    };
    let mut cache_control = String::with_capacity(32);
    for part in [
        visibility,
        ", max-age=",
        itoa::Buffer::new().format(fresh_for.as_secs()),
    ] {
        cache_control.push_str(part);
    }
    headers.insert(ETAG, entry.etag.clone());
    headers.insert(AGE, HeaderValue::from(age));
    if let Ok(value) = HeaderValue::try_from(cache_control) {
        headers.insert(CACHE_CONTROL, value);
    }
    headers.insert(X_CACHE, HeaderValue::from_static(result.header()));
    response
}

fn mark(headers: &mut HeaderMap, result: CacheResult) {
    headers.insert(X_CACHE, HeaderValue::from_static(result.header()));
}

/// Only complete, successful, shareable answers of known size are stored.
fn storable(status: StatusCode, headers: &HeaderMap, size: BodySize, max_bytes: usize) -> bool {
    let ok_status = status.is_success() && status != StatusCode::PARTIAL_CONTENT;
    let forbidden = headers
        .get_all(CACHE_CONTROL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .any(|d| d == "no-store" || d == "private" || d == "no-cache");
    let small = matches!(size, BodySize::Sized(n) if usize::try_from(n).is_ok_and(|n| n <= max_bytes))
        || matches!(size, BodySize::None);
    ok_status && !forbidden && !headers.contains_key(SET_COOKIE) && small
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A body that says when it is dropped (sent, or the client went away).
struct OnDrop {
    body: BoxBody,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl MessageBody for OnDrop {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_successful_shareable_answers_are_stored() {
        let ok = HeaderMap::new();
        let sized = BodySize::Sized(10);
        assert!(storable(StatusCode::OK, &ok, sized, 100));
        assert!(!storable(StatusCode::NOT_FOUND, &ok, sized, 100));
        assert!(!storable(StatusCode::PARTIAL_CONTENT, &ok, sized, 100));
        assert!(!storable(StatusCode::OK, &ok, BodySize::Sized(101), 100));
        assert!(!storable(StatusCode::OK, &ok, BodySize::Stream, 100));
        for (name, value) in [
            (SET_COOKIE, "a=b"),
            (CACHE_CONTROL, "private"),
            (CACHE_CONTROL, "max-age=5, no-store"),
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static(value));
            assert!(!storable(StatusCode::OK, &h, sized, 100), "{value}");
        }
    }
}
