//! The response cache against a real 3+3 Redis Cluster: the api's own read routes (built with
//! `Application::build`) and a small test route whose handler counts its calls and can be held
//! at a gate (how a user caches their own route: config + `response_cache` on a scope).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{eventually, header, seeds, settings, spawn_app, within};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use cacheserver_api::cache::{response_cache, ResponseCache};
use cacheserver_api::redis_cluster::RedisCluster as Cluster;
use cacheserver_config::{CacheInvalidation, CacheRoute, CacheSettings};
use cacheserver_testkit::{RedisCluster, RedisServer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const BOUND: Duration = Duration::from_secs(20);

/// Keys of the cluster matching `pattern` (masters and replicas).
fn find_keys(cluster: &RedisCluster, pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = (0..6)
        .flat_map(|node| {
            cluster
                .node(node)
                .cli(&["--scan", "--pattern", pattern])
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn cluster_cli(cluster: &RedisCluster, args: &[&str]) -> String {
    let args: Vec<&str> = ["-c"].into_iter().chain(args.iter().copied()).collect();
    cacheserver_testkit::redis_cli(cluster.node(0).port(), &args).unwrap_or_default()
}

/// What the test route's handler shares with the test.
struct Probe {
    calls: AtomicUsize,
    arrivals: AtomicUsize,
    version: AtomicUsize,
    gate: watch::Sender<bool>,
}

impl Probe {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            calls: AtomicUsize::new(0),
            arrivals: AtomicUsize::new(0),
            version: AtomicUsize::new(1),
            gate: watch::channel(true).0,
        })
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// GET: `{"version", "user"}` (after the gate opens); POST: a new version.
async fn item(probe: web::Data<Arc<Probe>>, req: HttpRequest) -> HttpResponse {
    probe.calls.fetch_add(1, Ordering::SeqCst);
    let mut gate = probe.gate.subscribe();
    let _ = gate.wait_for(|open| *open).await;
    let user = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous");
    HttpResponse::Ok().json(serde_json::json!({
        "id": req.match_info().get("id"),
        "version": probe.version.load(Ordering::SeqCst),
        "user": user,
    }))
}

/// A new version, named in `x-version` (a read after this write must see it or a later one).
async fn update(probe: web::Data<Arc<Probe>>) -> HttpResponse {
    let version = probe.version.fetch_add(1, Ordering::SeqCst) + 1;
    HttpResponse::NoContent()
        .insert_header(("x-version", version.to_string()))
        .finish()
}

async fn teapot() -> HttpResponse {
    HttpResponse::ImATeapot().body("no")
}

fn test_cache_settings(key: &str) -> CacheSettings {
    let mut s = settings(&[]).api.cache;
    s.routes = vec![CacheRoute {
        path_prefix: "/t".into(),
        methods: vec!["GET".into(), "HEAD".into()],
        ttl: Duration::from_secs(60),
        stale_ttl: Duration::from_secs(60),
        key: key.into(),
        tags: vec!["item:{id}".into()],
    }];
    s.invalidate = vec![CacheInvalidation {
        path_prefix: "/t".into(),
        methods: vec!["POST".into()],
        tags: vec!["item:{id}".into()],
    }];
    s.redis_timeout = Duration::from_millis(500);
    s.lock_timeout = Duration::from_secs(10);
    s
}

struct TestRoute {
    base: String,
    http: reqwest::Client,
    cache: web::Data<ResponseCache>,
}

impl TestRoute {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{path}", self.base));
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        within(BOUND, "GET", req.send()).await.unwrap()
    }
}

/// A server with the test route cached by `cache_settings` on `cluster`, sharing `probe`.
async fn spawn_route(cluster: &RedisCluster, key: &str, probe: Arc<Probe>) -> TestRoute {
    let s = settings(&[(
        "APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS",
        &seeds(cluster),
    )]);
    let redis = Cluster::connect_lazy(&s.cache_server.redis.default).unwrap();
    let cache =
        web::Data::new(ResponseCache::new(&test_cache_settings(key), vec![], Some(redis)).unwrap());
    let data = web::Data::new(probe.clone());
    let counted = probe.clone();
    let ours = cache.clone();
    let server = HttpServer::new(move || {
        let counted = counted.clone();
        App::new()
            .app_data(cache.clone())
            .app_data(data.clone())
            .service(
                web::scope("/t")
                    .wrap(from_fn(response_cache))
                    // Outermost: counts requests as they arrive, before the cache sees them.
                    .wrap(from_fn(move |req, next: actix_web::middleware::Next<_>| {
                        counted.arrivals.fetch_add(1, Ordering::SeqCst);
                        async move { next.call(req).await }
                    }))
                    .route("/items/{id}", web::get().to(item))
                    .route("/items/{id}", web::head().to(item))
                    .route("/items/{id}", web::post().to(update))
                    .route("/teapot", web::get().to(teapot)),
            )
    })
    .workers(2)
    .bind("127.0.0.1:0")
    .unwrap();
    let base = format!("http://{}", server.addrs()[0]);
    tokio::spawn(server.run());
    TestRoute {
        base,
        http: reqwest::Client::builder().timeout(BOUND).build().unwrap(),
        cache: ours,
    }
}

/// Script calls (the cache's only Redis commands but the tracking PINGs) on every node.
fn script_calls(cluster: &RedisCluster) -> u64 {
    (0..cluster.addrs().len())
        .map(|i| cluster.node(i).script_calls())
        .sum()
}

/// Wait until a GET of `path` is a HIT that sent no command to the cluster (the local tier);
/// returns its body.
async fn until_local_hit(
    get: impl AsyncFn() -> reqwest::Response,
    cluster: &RedisCluster,
) -> serde_json::Value {
    eventually(BOUND, "a HIT from the local tier", || async {
        let before = script_calls(cluster);
        let r = get().await;
        let hit = header(&r, "x-cache") == "HIT";
        let body: serde_json::Value = r.json().await.ok()?;
        (hit && script_calls(cluster) == before).then_some(body)
    })
    .await
}

/// Wait until the cache answers (the cluster client connects lazily).
async fn until_cached(route: &TestRoute, path: &str) {
    eventually(BOUND, &format!("{path} never became a HIT"), || async {
        header(&route.get(path, &[]).await, "x-cache") == "HIT"
    })
    .await;
}

#[tokio::test]
async fn seed_procedure_on_our_routes_miss_hit_write_miss_and_ttl() {
    let cluster = RedisCluster::start();
    let jobqueue = RedisServer::start();
    let app = spawn_app(&[
        (
            "APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS",
            &seeds(&cluster),
        ),
        ("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", &jobqueue.addr()),
        ("APP__API__RATE_LIMIT__ENABLED", "false"),
    ])
    .await;
    // The first answers may BYPASS while the cluster client connects.
    eventually(BOUND, "a first MISS", || async {
        header(&app.get("/api/queues").await, "x-cache") == "MISS"
    })
    .await;
    let hit = app.get("/api/queues").await;
    assert_eq!(header(&hit, "x-cache"), "HIT");
    let cache_control = header(&hit, "cache-control");
    let max_age: u64 = cache_control
        .rsplit("max-age=")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        cache_control.starts_with("public") && max_age <= 2,
        "{cache_control}"
    );
    let body: serde_json::Value = hit.json().await.unwrap();
    assert_eq!(body["queues"][0]["paused"], false);
    let again: serde_json::Value = app.get("/api/queues").await.json().await.unwrap();
    assert_eq!(again, body, "a HIT has the same body");

    // The entry's TTL in Redis: at most ttl + stale_ttl (2s + 5s in config/test).
    let keys = find_keys(&cluster, "rc:{/api/queues}:e:*");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let pttl: i64 = cluster_cli(&cluster, &["PTTL", &keys[0]]).parse().unwrap();
    assert!(pttl > 0 && pttl <= 7000, "PTTL {pttl}");

    // A write through the api drops the tags: the next read is a MISS with the new data.
    let paused = app
        .http
        .post(app.url("/api/queues/dm-jobqueue/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 200);
    let after = app.get("/api/queues").await;
    assert_eq!(header(&after, "x-cache"), "MISS");
    let after: serde_json::Value = after.json().await.unwrap();
    assert_eq!(after["queues"][0]["paused"], true);
    // The history route carries `queue:{queue}`: resume (an update) drops it too.
    let history = "/api/queues/dm-jobqueue/history";
    assert_eq!(header(&app.get(history).await, "x-cache"), "MISS");
    assert_eq!(header(&app.get(history).await, "x-cache"), "HIT");
    let resumed = app
        .http
        .post(app.url("/api/queues/dm-jobqueue/resume"))
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    assert_eq!(header(&app.get(history).await, "x-cache"), "MISS");
    let list = app.get("/api/queues").await;
    assert_eq!(header(&list, "x-cache"), "MISS");
    let list: serde_json::Value = list.json().await.unwrap();
    assert_eq!(list["queues"][0]["paused"], false);

    // Poisoning: headers the key ignores share the entry and cannot change it.
    let poisoned = app
        .http
        .get(app.url("/api/queues"))
        .header("X-Forwarded-Host", "evil.example")
        .header("Accept-Encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&poisoned, "x-cache"), "HIT");
    assert_eq!(poisoned.json::<serde_json::Value>().await.unwrap(), list);
    // A spoofed Authorization on a shared route is never cached nor served from the cache.
    let spoofed = app
        .http
        .get(app.url("/api/queues"))
        .header("Authorization", "Bearer someone-else")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&spoofed, "x-cache"), "BYPASS");

    // Chaos reset drops every connection: requests still answer, caching resumes by itself.
    let reset = app
        .http
        .post(app.url("/chaos/redis-reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    for _ in 0..5 {
        assert_eq!(app.get("/api/queues").await.status(), 200);
    }
    eventually(BOUND, "caching resumes after a chaos reset", || async {
        header(&app.get("/api/queues").await, "x-cache") == "HIT"
    })
    .await;
    // The local tier too, once its tracking connections are back and verified.
    until_local_hit(|| app.get("/api/queues"), &cluster).await;
    until_local_hit(|| app.get(history), &cluster).await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    // Answers from the cache are labelled with their route pattern, never the path.
    let pattern =
        r#"http_requests_total{method="GET",route="/api/queues/{queue}/history",status="200"}"#;
    assert!(metrics.contains(pattern), "{metrics}");
    assert!(!metrics.contains(r#"route="/api/queues/dm-jobqueue/history""#));
    assert!(metrics.contains("cache_requests_total{route=\"/api/queues\",result=\"hit\"}"));
    assert!(metrics.contains("cache_local_hits_total{route=\"/api/queues\"}"));
    assert!(metrics.contains("cache_local_tracking 1"));
    assert!(metrics.contains("# HELP cache_invalidations_total"));
}

#[tokio::test]
async fn concurrent_cold_gets_call_the_handler_once_per_instance_at_most() {
    let cluster = RedisCluster::start();
    let probe = Probe::new();
    let one = spawn_route(&cluster, "shared", probe.clone()).await;
    let two = spawn_route(&cluster, "shared", probe.clone()).await;
    until_cached(&one, "/t/items/warm").await;
    let calls_before = probe.calls();
    let arrivals_before = probe.arrivals.load(Ordering::SeqCst);
    probe.gate.send_replace(false);
    let one = Arc::new(one);
    let two = Arc::new(two);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let route = if i % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move {
            let r = route.get("/t/items/cold", &[]).await;
            (r.status(), r.text().await.unwrap())
        }));
    }
    // Every request is inside the servers before the handler may answer.
    eventually(BOUND, "50 requests inside the servers", || async {
        probe.arrivals.load(Ordering::SeqCst) >= arrivals_before + 50
    })
    .await;
    probe.gate.send_replace(true);
    let mut bodies = Vec::new();
    for t in tasks {
        let (status, body) = within(BOUND, "answer", t).await.unwrap();
        assert_eq!(status, 200);
        bodies.push(body);
    }
    bodies.dedup();
    assert_eq!(bodies.len(), 1, "every client got the same body");
    let calls = probe.calls() - calls_before;
    assert!(
        (1..=2).contains(&calls),
        "{calls} handler calls for 50 cold GETs on two instances"
    );

    // One instance: 50 concurrent GETs on another cold key, exactly one handler call.
    let calls_before = probe.calls();
    let arrivals_before = probe.arrivals.load(Ordering::SeqCst);
    probe.gate.send_replace(false);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let one = one.clone();
            tokio::spawn(async move { one.get("/t/items/solo", &[]).await.status() })
        })
        .collect();
    eventually(BOUND, "50 requests inside the servers", || async {
        probe.arrivals.load(Ordering::SeqCst) >= arrivals_before + 50
    })
    .await;
    probe.gate.send_replace(true);
    for t in tasks {
        assert_eq!(within(BOUND, "answer", t).await.unwrap(), 200);
    }
    assert_eq!(
        probe.calls() - calls_before,
        1,
        "one handler call for 50 cold GETs"
    );
}

#[tokio::test]
async fn stale_while_revalidate_etag_head_invalidation_and_users() {
    let cluster = RedisCluster::start();
    let probe = Probe::new();
    let route = spawn_route(&cluster, "header:Authorization", probe.clone()).await;
    until_cached(&route, "/t/items/1").await;

    // 304 on a matching ETag, without a body; HEAD from the GET entry.
    let hit = route.get("/t/items/1", &[]).await;
    let etag = header(&hit, "etag");
    assert!(
        header(&hit, "cache-control").starts_with("private"),
        "keyed per credential"
    );
    let not_modified = route.get("/t/items/1", &[("If-None-Match", &etag)]).await;
    assert_eq!(not_modified.status(), 304);
    assert_eq!(header(&not_modified, "etag"), etag);
    assert!(not_modified.bytes().await.unwrap().is_empty());
    let head = within(
        BOUND,
        "HEAD",
        route.http.head(format!("{}/t/items/1", route.base)).send(),
    )
    .await
    .unwrap();
    assert_eq!(
        (head.status().as_u16(), header(&head, "x-cache")),
        (200, "HIT".into())
    );

    // Per user: a response cached for one credential is never served to another.
    let alice = route
        .get("/t/items/1", &[("Authorization", "Bearer alice")])
        .await;
    assert_eq!(header(&alice, "x-cache"), "MISS");
    let bob = route
        .get("/t/items/1", &[("Authorization", "Bearer bob")])
        .await;
    assert_eq!(header(&bob, "x-cache"), "MISS");
    let bob: serde_json::Value = bob.json().await.unwrap();
    assert_eq!(bob["user"], "Bearer bob");
    let alice = route
        .get("/t/items/1", &[("Authorization", "Bearer alice")])
        .await;
    assert_eq!(header(&alice, "x-cache"), "HIT");
    assert_eq!(
        alice.json::<serde_json::Value>().await.unwrap()["user"],
        "Bearer alice"
    );
    // The credential is hashed: it is in no key or value in clear.
    for key in find_keys(&cluster, "rc:*") {
        assert!(!key.contains("alice"), "{key}");
    }

    // Stale while one request refreshes in the background: make the entry stale (its Redis TTL
    // inside the stale window), hold the handler, and the client still gets the old body now.
    probe.version.store(2, Ordering::SeqCst);
    for k in find_keys(&cluster, "rc:{/t}:e:*") {
        cluster_cli(&cluster, &["PEXPIRE", &k, "30000"]);
    }
    // The local tier's copies go with the pushes of those changes.
    eventually(
        BOUND,
        "local copies dropped by the PEXPIRE pushes",
        || async { route.cache.local_entries() == 0 },
    )
    .await;
    probe.gate.send_replace(false);
    let calls_before = probe.calls();
    let stale = route.get("/t/items/1", &[]).await;
    assert_eq!(header(&stale, "x-cache"), "STALE");
    assert_eq!(
        stale.json::<serde_json::Value>().await.unwrap()["version"],
        1
    );
    eventually(
        BOUND,
        "the background refresh called the handler",
        || async { probe.calls() > calls_before },
    )
    .await;
    probe.gate.send_replace(true);
    eventually(BOUND, "the refreshed entry is served", || async {
        let r = route.get("/t/items/1", &[]).await;
        header(&r, "x-cache") == "HIT"
            && r.json::<serde_json::Value>().await.unwrap()["version"] == 2
    })
    .await;

    // A successful write drops the item's tag: the next GET is a MISS with the new data.
    let post = within(
        BOUND,
        "POST",
        route.http.post(format!("{}/t/items/1", route.base)).send(),
    )
    .await
    .unwrap();
    assert_eq!(post.status(), 204);
    let after = route.get("/t/items/1", &[]).await;
    assert_eq!(header(&after, "x-cache"), "MISS");
    assert_eq!(
        after.json::<serde_json::Value>().await.unwrap()["version"],
        3
    );
    // Another item keeps its entry.
    assert_eq!(
        header(&route.get("/t/items/2", &[]).await, "x-cache"),
        "MISS"
    );
    assert_eq!(
        header(&route.get("/t/items/2", &[]).await, "x-cache"),
        "HIT"
    );

    // A lost generation (evicted under volatile-lru, or expired) costs a miss, never an entry
    // stored under an older generation.
    cluster_cli(&cluster, &["DEL", "rc:{/t}:g:item:2"]);
    // (A local copy may answer until the DEL's push arrives.)
    eventually(BOUND, "a MISS after the generation is lost", || async {
        header(&route.get("/t/items/2", &[]).await, "x-cache") == "MISS"
    })
    .await;
    assert_eq!(
        header(&route.get("/t/items/2", &[]).await, "x-cache"),
        "HIT"
    );

    // `Cache-Control: no-cache` refreshes; non-2xx answers are never stored.
    let calls = probe.calls();
    let fresh = route
        .get("/t/items/2", &[("Cache-Control", "no-cache")])
        .await;
    assert_eq!(header(&fresh, "x-cache"), "MISS");
    assert_eq!(probe.calls(), calls + 1);
    for _ in 0..2 {
        let t = route.get("/t/teapot", &[]).await;
        assert_eq!(
            (t.status().as_u16(), header(&t, "x-cache")),
            (418, "MISS".into())
        );
    }
    // Huge query strings bypass the cache (no key, no memory).
    let long = format!("/t/items/3?q={}", "x".repeat(5000));
    assert_eq!(header(&route.get(&long, &[]).await, "x-cache"), "BYPASS");
}

#[tokio::test]
async fn concurrent_writes_share_invalidation_calls_and_no_read_after_a_write_is_older() {
    let cluster = RedisCluster::start();
    let probe = Probe::new();
    let route = Arc::new(spawn_route(&cluster, "shared", probe.clone()).await);
    until_cached(&route, "/t/items/1").await;
    let post = |route: Arc<TestRoute>| async move {
        let req = route.http.post(format!("{}/t/items/1", route.base));
        let r = within(BOUND, "POST", req.send()).await.unwrap();
        assert_eq!(r.status(), 204);
        header(&r, "x-version").parse::<usize>().unwrap()
    };

    // Writes only: their invalidations are the only script calls.
    const WRITES: u64 = 200;
    let before = script_calls(&cluster);
    let writes: Vec<_> = (0..WRITES)
        .map(|_| tokio::spawn(post(route.clone())))
        .collect();
    for w in writes {
        within(BOUND, "a write", w).await.unwrap();
    }
    let calls = script_calls(&cluster) - before;
    assert!(
        (1..=WRITES / 2).contains(&calls),
        "{calls} script calls for {WRITES} concurrent writes"
    );

    // Writes and reads interleaved: a read after a write answered sees that write (a write
    // that joined the batch in flight could find an older answer stored under its new
    // generation).
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let route = route.clone();
            tokio::spawn(async move {
                for _ in 0..5 {
                    if i % 2 == 0 {
                        let written = post(route.clone()).await;
                        let r = route.get("/t/items/1", &[]).await;
                        let seen: serde_json::Value = r.json().await.unwrap();
                        let seen = seen["version"].as_u64().unwrap();
                        assert!(
                            seen >= written as u64,
                            "read version {seen} after write {written} answered"
                        );
                    } else {
                        assert_eq!(route.get("/t/items/1", &[]).await.status(), 200);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        within(BOUND, "writers and readers", t).await.unwrap();
    }
}

#[tokio::test]
async fn the_get_after_a_miss_is_answered_locally_and_stays_coherent() {
    let cluster = RedisCluster::start();
    let probe = Probe::new();
    let a = spawn_route(&cluster, "shared", probe.clone()).await;
    let b = spawn_route(&cluster, "shared", probe.clone()).await;
    // Both instances connected and tracking.
    until_cached(&a, "/t/items/warm").await;
    until_local_hit(|| a.get("/t/items/warm", &[]), &cluster).await;
    until_local_hit(|| b.get("/t/items/warm", &[]), &cluster).await;
    for id in 1..=3 {
        let path = format!("/t/items/{id}");
        let first = a.get(&path, &[]).await;
        assert_eq!(header(&first, "x-cache"), "MISS");
        // The miss's own store kept a copy: the second GET sends nothing to the cluster.
        let before = script_calls(&cluster);
        let second = a.get(&path, &[]).await;
        assert_eq!(header(&second, "x-cache"), "HIT");
        assert_eq!(
            script_calls(&cluster),
            before,
            "GET #2 of {path} asked Redis"
        );
    }
    // Still coherent: another instance's write drops the copy.
    let post = b.http.post(format!("{}/t/items/1", b.base));
    assert_eq!(
        within(BOUND, "POST", post.send()).await.unwrap().status(),
        204
    );
    let version = probe.version.load(Ordering::SeqCst);
    eventually(BOUND, "A serves B's write", || async {
        let r = a.get("/t/items/1", &[]).await;
        let body: Option<serde_json::Value> = r.json().await.ok();
        body.is_some_and(|v| v["version"] == version)
    })
    .await;
}

#[tokio::test]
async fn cluster_down_bypasses_with_normal_answers() {
    let mut cluster = RedisCluster::start();
    let probe = Probe::new();
    let route = spawn_route(&cluster, "shared", probe.clone()).await;
    until_cached(&route, "/t/items/1").await;
    until_local_hit(|| route.get("/t/items/1", &[]), &cluster).await;
    assert_eq!(route.cache.local_entries(), 1);
    cluster.kill_all();
    // The local tier stops serving copies it can no longer verify as soon as the tracking
    // connections are lost (a fresh copy would otherwise answer HIT): only the time the api
    // takes to see the closed connections.
    eventually(BOUND, "BYPASS once the cluster is down", || async {
        header(&route.get("/t/items/1", &[]).await, "x-cache") == "BYPASS"
    })
    .await;
    assert_eq!(route.cache.local_entries(), 0, "copies dropped");
    for _ in 0..5 {
        let r = route.get("/t/items/1", &[]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-cache"), "BYPASS");
        assert_eq!(r.json::<serde_json::Value>().await.unwrap()["version"], 1);
    }
}

#[tokio::test]
async fn local_tier_hits_without_redis_and_instances_stay_coherent() {
    let cluster = RedisCluster::start();
    let probe = Probe::new();
    let a = spawn_route(&cluster, "shared", probe.clone()).await;
    let b = spawn_route(&cluster, "shared", probe.clone()).await;
    let post = |route: &TestRoute| {
        let req = route.http.post(format!("{}/t/items/1", route.base));
        async move { within(BOUND, "POST", req.send()).await.unwrap().status() }
    };
    until_cached(&a, "/t/items/1").await;
    // A repeated GET is answered locally: no command reaches the cluster.
    let body = until_local_hit(|| a.get("/t/items/1", &[]), &cluster).await;
    assert_eq!(body["version"], 1);
    let before = script_calls(&cluster);
    for _ in 0..5 {
        let r = a.get("/t/items/1", &[]).await;
        assert_eq!(header(&r, "x-cache"), "HIT");
        assert!(header(&r, "cache-control").starts_with("public, max-age="));
    }
    assert_eq!(
        script_calls(&cluster),
        before,
        "local hits send nothing to Redis"
    );

    // A write through the api drops this instance's copy before it answers.
    assert_eq!(post(&a).await, 204);
    let after = a.get("/t/items/1", &[]).await;
    assert_eq!(header(&after, "x-cache"), "MISS");
    assert_eq!(
        after.json::<serde_json::Value>().await.unwrap()["version"],
        2
    );

    // Another instance: its copy is dropped by the invalidation push of A's write.
    let body = until_local_hit(|| b.get("/t/items/1", &[]), &cluster).await;
    assert_eq!(body["version"], 2);
    assert_eq!(b.cache.local_entries(), 1);
    assert_eq!(post(&a).await, 204);
    eventually(BOUND, "B's copy dropped by the push", || async {
        b.cache.local_entries() == 0
    })
    .await;
    let fresh = b.get("/t/items/1", &[]).await;
    assert_ne!(header(&fresh, "x-cache"), "STALE");
    assert_eq!(
        fresh.json::<serde_json::Value>().await.unwrap()["version"],
        3
    );

    // A tag generation changed directly in Redis drops B's copy too; its entry no longer
    // matches the generation, so the next GET is a MISS.
    let body = until_local_hit(|| b.get("/t/items/1", &[]), &cluster).await;
    assert_eq!(body["version"], 3);
    cluster_cli(
        &cluster,
        &["SET", "rc:{/t}:g:item:1", "by-hand", "PX", "600000"],
    );
    eventually(BOUND, "B's copy dropped by the generation push", || async {
        b.cache.local_entries() == 0
    })
    .await;
    assert_eq!(header(&b.get("/t/items/1", &[]).await, "x-cache"), "MISS");

    // An entry overwritten in Redis (another instance's refresh) drops the copy as well.
    until_local_hit(|| b.get("/t/items/1", &[]), &cluster).await;
    let fresh = a.get("/t/items/1", &[("Cache-Control", "no-cache")]).await;
    assert_eq!(header(&fresh, "x-cache"), "MISS");
    eventually(BOUND, "B's copy dropped by the entry push", || async {
        b.cache.local_entries() == 0
    })
    .await;
}

#[tokio::test]
async fn the_shipped_api_acl_user_can_cache() {
    let cluster = RedisCluster::start();
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/redis/cacheserver-api.acl"),
    )
    .unwrap();
    for i in 0..cluster.addrs().len() {
        cluster
            .node(i)
            .add_acl_user("cacheserver-api", rules.trim(), "api-Pw-1");
    }
    let mut s = settings(&[
        (
            "APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS",
            &seeds(&cluster),
        ),
        (
            "APP__CACHE_SERVER__REDIS__DEFAULT__USERNAME",
            "cacheserver-api",
        ),
        ("APP__CACHE_SERVER__REDIS__DEFAULT__PASSWORD", "api-Pw-1"),
    ]);
    s.api.cache = test_cache_settings("shared");
    let redis = Cluster::connect_lazy(&s.cache_server.redis.default).unwrap();
    let cache =
        web::Data::new(ResponseCache::new(&s.api.cache, vec![], Some(redis.clone())).unwrap());
    let probe = Probe::new();
    let data = web::Data::new(probe.clone());
    let ours = cache.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(cache.clone())
            .app_data(data.clone())
            .service(
                web::scope("/t")
                    .wrap(from_fn(response_cache))
                    .route("/items/{id}", web::get().to(item))
                    .route("/items/{id}", web::post().to(update)),
            )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let route = TestRoute {
        base: format!("http://{}", server.addrs()[0]),
        http: reqwest::Client::new(),
        cache: ours,
    };
    tokio::spawn(server.run());
    until_cached(&route, "/t/items/1").await;
    let post = route
        .http
        .post(format!("{}/t/items/1", route.base))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 204);
    assert_eq!(
        header(&route.get("/t/items/1", &[]).await, "x-cache"),
        "MISS"
    );
    assert!(redis.stats().misconfiguration().is_none(), "no NOPERM");
    // The local tier's tracking client (same user) may `CLIENT TRACKING`.
    until_local_hit(|| route.get("/t/items/1", &[]), &cluster).await;
}
