//! The api (and the worker) against Redis that needs TLS, passwords and the shipped ACL users,
//! all real processes: the right credentials work end to end; wrong ones make `/ready` 503 naming
//! the cause in every storage mode, and no secret ever reaches a log line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use crate::common::{spawn_app, try_eventually};
use cacheserver_testkit::{
    free_port, worker_binary, ChildProcess, RedisCluster, RedisServer, Stderr, Stream, TestCerts,
    WorkerCommand,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const ADMIN: &str = "admin-Pw-0c41";
const API_PW: &str = "api-Pw-5d2e";
const JQ_PW: &str = "jq-Pw-91b7";

fn acl(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/redis")
        .join(file);
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

/// Create `name` from `rules` on every node (ACL users are per node, not replicated).
fn add_cluster_user(cluster: &RedisCluster, name: &str, rules: &str, password: &str) {
    for i in 0..cluster.addrs().len() {
        cluster.node(i).add_acl_user(name, rules, password);
    }
}

fn ready_body(body: &serde_json::Value) -> String {
    body.to_string()
}

/// Everything a process said so far: its log (stderr), then its stdout.
fn output(process: &ChildProcess) -> String {
    let mut all = process.texts(Stream::Stderr).join("\n");
    all.push('\n');
    all.push_str(&process.texts(Stream::Stdout).join("\n"));
    all
}

fn config_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

#[tokio::test]
async fn the_stack_runs_on_tls_with_the_shipped_acl_users_and_never_logs_a_secret() {
    let certs = TestCerts::generate();
    let cluster = RedisCluster::start_secure(Some(&certs), Some(ADMIN));
    add_cluster_user(
        &cluster,
        "cacheserver-api",
        &acl("cacheserver-api.acl"),
        API_PW,
    );
    let jobqueue = RedisServer::start_with(|port| {
        let mut args = certs.server_args(port, true);
        args.extend(["--requirepass".into(), ADMIN.into()]);
        let mut cli = certs.cli_args();
        cli.extend(cacheserver_testkit::admin_cli_args(ADMIN));
        (args, cli)
    });
    jobqueue.add_acl_user(
        "cacheserver-jobqueue",
        &acl("cacheserver-jobqueue.acl"),
        JQ_PW,
    );

    let p = |p: PathBuf| p.display().to_string();
    let port = free_port();
    let jq_addr = format!("localhost:{}", jobqueue.port());
    let env: Vec<(&str, String)> = vec![
        ("APP_ENV", "test".into()),
        ("APP_CONFIG_DIR", p(config_root())),
        ("APP__LOGGING__LEVEL", "debug".into()),
        ("APP__SERVER__PORT", port.to_string()),
        ("APP__API__RATE_LIMIT__STORAGE_TYPE", "redis".into()),
        ("APP__API__RATE_LIMIT__REDIS_TIMEOUT", "2s".into()),
        ("APP__CHAOS__ENABLED", "true".into()),
        (
            "APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS",
            cluster.addrs()[..3].join(","),
        ),
        (
            "APP__CACHE_SERVER__REDIS__DEFAULT__USERNAME",
            "cacheserver-api".into(),
        ),
        ("APP__CACHE_SERVER__REDIS__DEFAULT__PASSWORD", API_PW.into()),
        (
            "APP__CACHE_SERVER__REDIS__DEFAULT__TLS__CA_FILE",
            p(certs.ca()),
        ),
        (
            "APP__CACHE_SERVER__REDIS__DEFAULT__TLS__SERVER_NAME",
            "localhost".into(),
        ),
        (
            "APP__CACHE_SERVER__REDIS__DEFAULT__TLS__CERT_FILE",
            p(certs.client_cert()),
        ),
        (
            "APP__CACHE_SERVER__REDIS__DEFAULT__TLS__KEY_FILE",
            p(certs.client_key()),
        ),
        ("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", jq_addr),
        (
            "APP__CACHE_SERVER__REDIS__JOBQUEUE__USERNAME",
            "cacheserver-jobqueue".into(),
        ),
        ("APP__CACHE_SERVER__REDIS__JOBQUEUE__PASSWORD", JQ_PW.into()),
        (
            "APP__CACHE_SERVER__REDIS__JOBQUEUE__TLS__CA_FILE",
            p(certs.ca()),
        ),
        (
            "APP__CACHE_SERVER__REDIS__JOBQUEUE__TLS__CERT_FILE",
            p(certs.client_cert()),
        ),
        (
            "APP__CACHE_SERVER__REDIS__JOBQUEUE__TLS__KEY_FILE",
            p(certs.client_key()),
        ),
    ];
    let mut api_cmd = Command::new(env!("CARGO_BIN_EXE_api"));
    api_cmd
        .env_remove("RUST_LOG")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let api = ChildProcess::spawn(&mut api_cmd, Stderr::Capture);
    let worker = WorkerCommand::new(worker_binary())
        .env_remove("RUST_LOG")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .capture_stderr()
        .start()
        .await;

    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let ready = try_eventually(Duration::from_secs(30), || async {
        let Ok(resp) = http.get(format!("{base}/ready")).send().await else {
            return false;
        };
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        status == 200 && body["checks"]["rate_limit_backend"] == "redis"
    })
    .await
    .is_ok();
    assert!(ready, "not ready; api log:\n{}", output(&api));

    // The limiter decides in the cluster: remaining counts down, keys exist there.
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let resp = http.get(format!("{base}/api/ping")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{}", output(&api));
        remaining.push(
            crate::common::header(&resp, "x-ratelimit-remaining")
                .parse::<i64>()
                .unwrap(),
        );
    }
    assert!(remaining.windows(2).all(|w| w[1] < w[0]), "{remaining:?}");
    let keys: usize = cluster
        .masters()
        .into_iter()
        .map(|i| cluster.node(i).cli(&["DBSIZE"]).parse::<usize>().unwrap())
        .sum();
    assert!(keys >= 2, "no rl:* keys in the cluster");

    // Jobs: register, status, stats, with the jobqueue ACL user over mutual TLS.
    let resp = http
        .post(format!("{base}/api/dm-jobqueue/register"))
        .json(&serde_json::json!({"message": "stack over tls", "delay_seconds": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", output(&api));
    let job: serde_json::Value = resp.json().await.unwrap();
    let id = job["job_id"].as_str().unwrap();
    let status = http
        .get(format!("{base}/api/dm-jobqueue/jobs/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    let stats = http
        .get(format!("{base}/api/dm-jobqueue/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 200);
    let dead = http
        .get(format!("{base}/api/dm-jobqueue/jobs?status=dead&limit=10"))
        .send()
        .await
        .unwrap();
    assert_eq!(dead.status(), 200, "{}", output(&api));
    let other: serde_json::Value = http
        .post(format!("{base}/api/dm-jobqueue/register"))
        .json(&serde_json::json!({"message": "to delete", "delay_seconds": 3600}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let delete = http
        .delete(format!(
            "{base}/api/dm-jobqueue/jobs/{}",
            other["job_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert!(delete.status().is_success(), "{}", output(&api));

    // Chaos reset works without CLIENT KILL rights (closed from the client side), and
    // everything comes back.
    let api_conns = |server: &RedisServer, user: &str| -> Vec<String> {
        let list = server.cli(&["CLIENT", "LIST"]);
        let me = format!(" user={user} ");
        list.lines()
            .filter(|l| l.contains(&me))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect()
    };
    let before_jq = api_conns(&jobqueue, "cacheserver-jobqueue");
    let master = cluster.masters()[0];
    let before_cluster = api_conns(cluster.node(master), "cacheserver-api");
    assert!(!before_jq.is_empty() && !before_cluster.is_empty());
    let reset = http
        .post(format!("{base}/chaos/redis-reset"))
        .json(&serde_json::json!({"force": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200, "{}", output(&api));
    let back = try_eventually(Duration::from_secs(20), || async {
        let ping = http.get(format!("{base}/api/ping")).send().await;
        let ready = http.get(format!("{base}/ready")).send().await;
        matches!((ping, ready), (Ok(p), Ok(r)) if p.status() == 200 && r.status() == 200)
    })
    .await
    .is_ok();
    assert!(back, "no comeback after the chaos reset:\n{}", output(&api));
    let gone = |before: &[String], now: Vec<String>| before.iter().any(|id| !now.contains(id));
    assert!(gone(
        &before_cluster,
        api_conns(cluster.node(master), "cacheserver-api")
    ));
    assert!(gone(
        &before_jq,
        api_conns(&jobqueue, "cacheserver-jobqueue")
    ));

    let ran = try_eventually(Duration::from_secs(30), || async {
        worker.output().contains("stack over tls")
    })
    .await
    .is_ok();
    assert!(ran, "the worker did not run the job:\n{}", worker.output());
    let mut logs = output(&api);
    logs.push_str(&worker.output());
    assert!(
        logs.lines().count() > 5,
        "too few log lines to judge:\n{logs}"
    );
    for secret in [ADMIN, API_PW, JQ_PW] {
        let leaked: Vec<&str> = logs.lines().filter(|l| l.contains(secret)).collect();
        assert!(leaked.is_empty(), "secret in logs: {leaked:?}");
    }
}

#[tokio::test]
async fn a_wrong_cluster_password_is_503_even_in_auto_and_names_the_cause() {
    let cluster = RedisCluster::start_secure(None, Some(ADMIN));
    let redis = RedisServer::start();
    let app = spawn_app(&[
        (
            "APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS",
            &crate::common::seeds(&cluster),
        ),
        (
            "APP__CACHE_SERVER__REDIS__DEFAULT__PASSWORD",
            "wrong-password-1",
        ),
        ("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", &redis.addr()),
        ("APP__API__RATE_LIMIT__STORAGE_TYPE", "auto"),
    ])
    .await;
    let named = try_eventually(Duration::from_secs(20), || async {
        let resp = app.get("/ready").await;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap();
        status == 503 && ready_body(&body).contains("authentication failed")
    })
    .await
    .is_ok();
    assert!(named, "{}", app.get("/ready").await.text().await.unwrap());
    let body = app.get("/ready").await.text().await.unwrap();
    assert!(!body.contains("wrong-password-1"), "{body}");
    // The api keeps serving (rate limiting from memory).
    assert_eq!(app.ping().await.status(), 200);
}

#[tokio::test]
async fn a_limiter_user_without_evalsha_is_named_in_ready() {
    let cluster = RedisCluster::start();
    let rules = acl("cacheserver-api.acl").replace("+evalsha", "");
    add_cluster_user(&cluster, "cacheserver-api", &rules, API_PW);
    let redis = RedisServer::start();
    let app = spawn_app(&[
        (
            "APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS",
            &crate::common::seeds(&cluster),
        ),
        (
            "APP__CACHE_SERVER__REDIS__DEFAULT__USERNAME",
            "cacheserver-api",
        ),
        ("APP__CACHE_SERVER__REDIS__DEFAULT__PASSWORD", API_PW),
        ("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", &redis.addr()),
        ("APP__API__RATE_LIMIT__STORAGE_TYPE", "redis"),
        ("APP__API__RATE_LIMIT__REDIS_TIMEOUT", "2s"),
    ])
    .await;
    let named = try_eventually(Duration::from_secs(20), || async {
        // A limiter call makes the cluster answer NOPERM; the ping's own status is not the point.
        app.ping().await;
        let resp = app.get("/ready").await;
        let status = resp.status();
        let body = resp.text().await.unwrap();
        status == 503 && body.contains("evalsha") && body.contains("cacheserver-api.acl")
    })
    .await
    .is_ok();
    assert!(named, "{}", app.get("/ready").await.text().await.unwrap());
}

#[tokio::test]
async fn a_wrong_jobqueue_password_is_503_in_memory_mode_too() {
    let redis = RedisServer::start_with_password(ADMIN);
    let app = spawn_app(&[
        ("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", &redis.addr()),
        (
            "APP__CACHE_SERVER__REDIS__JOBQUEUE__PASSWORD",
            "wrong-password-2",
        ),
        ("APP__API__RATE_LIMIT__STORAGE_TYPE", "memory"),
    ])
    .await;
    let resp = app.get("/ready").await;
    assert_eq!(resp.status(), 503);
    let body = resp.text().await.unwrap();
    assert!(body.contains("authentication failed"), "{body}");
    assert!(!body.contains("wrong-password-2"), "{body}");
    let reg = app
        .http
        .post(app.url("/api/dm-jobqueue/register"))
        .json(&serde_json::json!({"message": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reg.status(), 503);
}

#[tokio::test]
async fn a_cluster_certificate_from_an_unknown_ca_is_503_naming_tls() {
    let certs = TestCerts::generate();
    let cluster = RedisCluster::start_secure(Some(&certs), None);
    let redis = RedisServer::start();
    let other_ca = certs.other_ca().display().to_string();
    let app = spawn_app(&[
        (
            "APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS",
            &crate::common::seeds(&cluster),
        ),
        ("APP__CACHE_SERVER__REDIS__DEFAULT__TLS__CA_FILE", &other_ca),
        ("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", &redis.addr()),
        ("APP__API__RATE_LIMIT__STORAGE_TYPE", "auto"),
    ])
    .await;
    let named = try_eventually(Duration::from_secs(20), || async {
        let resp = app.get("/ready").await;
        let status = resp.status();
        let body = resp.text().await.unwrap();
        status == 503 && body.contains("TLS")
    })
    .await
    .is_ok();
    assert!(named, "{}", app.get("/ready").await.text().await.unwrap());
    assert_eq!(
        app.ping().await.status(),
        200,
        "the api keeps serving from memory"
    );
}

/// Plain text to a TLS port: the server closes the connection, which looks like an outage. It is
/// a misconfiguration: `/ready` 503 naming TLS for both clients, even in `auto`; the api keeps
/// serving. (fred never gets past the connection, so one TLS server stands in for the cluster.)
#[tokio::test]
async fn plain_text_on_a_tls_port_is_503_naming_tls_even_in_auto() {
    let certs = TestCerts::generate();
    let tls = RedisServer::start_tls(&certs, false);
    let app = spawn_app(&[
        (
            "APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS",
            &tls.addr(),
        ),
        ("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", &tls.addr()),
        ("APP__API__RATE_LIMIT__STORAGE_TYPE", "auto"),
    ])
    .await;
    let named = try_eventually(Duration::from_secs(20), || async {
        let resp = app.get("/ready").await;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap();
        let says = |check: &str, key: &str| {
            body["checks"][check]
                .as_str()
                .is_some_and(|t| t.contains("is it a TLS port") && t.contains(key))
        };
        status == 503
            && says("rate_limit_redis", "redis.default.tls.enabled=false")
            && says("jobqueue_redis", "redis.jobqueue.tls.enabled=false")
    })
    .await
    .is_ok();
    assert!(named, "{}", app.get("/ready").await.text().await.unwrap());
    assert_eq!(app.ping().await.status(), 200, "the api keeps serving");
}
