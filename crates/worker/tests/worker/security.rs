//! The jobqueue against a Redis that needs TLS, a password or an ACL user, with the real
//! `worker` binary: the right credentials run jobs; wrong ones are a misconfiguration the
//! worker survives and names once (per minute), never printing the secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cacheserver_jobqueue::{JobQueue, JobQueueError, NewJob};
use cacheserver_testkit::{
    eventually, free_port, RedisServer, Stream, TestCerts, WorkerCommand, WorkerProcess,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

const USER: &str = "cacheserver-jobqueue";
const SECRET: &str = "jq-Secret-7f3a9c";

/// The shipped ACL rules of the jobqueue user.
fn acl_rules() -> String {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/redis/cacheserver-jobqueue.acl");
    std::fs::read_to_string(file).unwrap().trim().to_owned()
}

fn tls_env(certs: &TestCerts, ca: PathBuf) -> Vec<(String, String)> {
    let p = |p: PathBuf| p.display().to_string();
    vec![
        (
            "APP__CACHE_SERVER__REDIS__JOBQUEUE__TLS__ENABLED".into(),
            "true".into(),
        ),
        (
            "APP__CACHE_SERVER__REDIS__JOBQUEUE__TLS__CA_FILE".into(),
            p(ca),
        ),
        (
            "APP__CACHE_SERVER__REDIS__JOBQUEUE__TLS__CERT_FILE".into(),
            p(certs.client_cert()),
        ),
        (
            "APP__CACHE_SERVER__REDIS__JOBQUEUE__TLS__KEY_FILE".into(),
            p(certs.client_key()),
        ),
    ]
}

fn user_env(user: &str, password: &str) -> Vec<(String, String)> {
    vec![
        (
            "APP__CACHE_SERVER__REDIS__JOBQUEUE__USERNAME".into(),
            user.into(),
        ),
        (
            "APP__CACHE_SERVER__REDIS__JOBQUEUE__PASSWORD".into(),
            password.into(),
        ),
    ]
}

fn queue(addr: &str, env: &[(String, String)]) -> JobQueue {
    let mut vars = env.to_vec();
    vars.push(("APP__JOBQUEUE__ENQUEUE_TIMEOUT".into(), "2s".into()));
    let s = crate::common::settings_at(addr, vars);
    JobQueue::new(&s.cache_server.redis.jobqueue, &s.jobqueue).unwrap()
}

fn job(message: &str) -> NewJob {
    NewJob::delay_print(message)
}

/// A `worker` process on `addr` with debug logs collected (and `RUST_LOG` ignored).
async fn start_worker(addr: &str, env: &[(String, String)]) -> WorkerProcess {
    WorkerCommand::new(env!("CARGO_BIN_EXE_worker"))
        .redis(addr)
        .name(&format!("sec-{}", free_port()))
        .env("APP__LOGGING__LEVEL", "debug")
        .env_remove("RUST_LOG")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .capture_stderr()
        .start()
        .await
}

/// Wait until a job prints `text`, at most `bound`.
async fn wait_printed(worker: &WorkerProcess, bound: Duration, text: &str) -> bool {
    worker
        .wait_for_line(Stream::Stdout, bound, |l| l.ends_with(text))
        .await
}

/// Wait until a log line contains `needle`, at most `bound`.
async fn wait_logged(worker: &WorkerProcess, bound: Duration, needle: &str) -> bool {
    worker
        .wait_for_line(Stream::Stderr, bound, |l| l.contains(needle))
        .await
}

fn log_lines(worker: &WorkerProcess, needle: &str) -> usize {
    worker
        .texts(Stream::Stderr)
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

#[tokio::test]
async fn mutual_tls_and_the_shipped_acl_user_register_and_run_a_job() {
    let certs = TestCerts::generate();
    let redis = RedisServer::start_tls(&certs, true);
    redis.add_acl_user(USER, &acl_rules(), SECRET);
    let mut env = tls_env(&certs, certs.ca());
    env.extend(user_env(USER, SECRET));
    let addr = format!("localhost:{}", redis.port());
    let q = queue(&addr, &env);
    q.ping().await.unwrap();
    let worker = start_worker(&addr, &env).await;
    q.enqueue(job("over mutual tls")).await.unwrap();
    assert!(
        wait_printed(&worker, Duration::from_secs(20), "over mutual tls").await,
        "the job did not run; worker log:\n{}",
        worker.output()
    );
    assert!(
        !worker.output().contains(SECRET),
        "the secret reached a log line"
    );
}

#[tokio::test]
async fn requirepass_works_and_a_wrong_password_is_named_without_the_secret() {
    let redis = RedisServer::start_with_password(SECRET);
    let password = [(
        "APP__CACHE_SERVER__REDIS__JOBQUEUE__PASSWORD".to_owned(),
        SECRET.to_owned(),
    )];
    let q = queue(&redis.addr(), &password);
    q.ping().await.unwrap();
    q.enqueue(job("with a password")).await.unwrap();
    let wrong = [(
        "APP__CACHE_SERVER__REDIS__JOBQUEUE__PASSWORD".to_owned(),
        "not-the-password".to_owned(),
    )];
    let err = queue(&redis.addr(), &wrong).ping().await.unwrap_err();
    assert!(matches!(err, JobQueueError::Misconfigured(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("authentication failed"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
    let none = queue(&redis.addr(), &[]).ping().await.unwrap_err();
    assert!(matches!(none, JobQueueError::Misconfigured(_)), "{none:?}");
}

#[tokio::test]
async fn an_unknown_ca_or_plain_text_on_the_tls_port_fails_without_hanging() {
    let certs = TestCerts::generate();
    let redis = RedisServer::start_tls(&certs, false);
    let addr = format!("localhost:{}", redis.port());
    let err = queue(&addr, &tls_env(&certs, certs.other_ca()))
        .ping()
        .await
        .unwrap_err();
    assert!(matches!(err, JobQueueError::Misconfigured(_)), "{err:?}");
    assert!(err.to_string().contains("TLS"), "{err}");
    // Plain text on a TLS port: the server drops the connection, which is named, not an outage.
    let err = queue(&addr, &[]).ping().await.unwrap_err();
    assert!(matches!(err, JobQueueError::Misconfigured(_)), "{err:?}");
    assert!(err.to_string().contains("is it a TLS port"), "{err}");
}

#[tokio::test]
async fn a_missing_acl_permission_keeps_the_worker_running_and_says_why_once() {
    let redis = RedisServer::start();
    // The shipped rules minus the global key apalis-redis' register_worker.lua writes.
    let rules = acl_rules().replace("~core:apalis:queues:list", "");
    redis.add_acl_user(USER, &rules, SECRET);
    let env = user_env(USER, SECRET);
    let mut worker = start_worker(&redis.addr(), &env).await;
    assert!(
        wait_logged(&worker, Duration::from_secs(20), "misconfiguration").await,
        "the worker never said why; log:\n{}",
        worker.output()
    );
    let said = worker.output();
    assert!(said.contains("register_worker.lua"), "{said}");
    // It retries (restarts count up) but repeats the reason only once per minute.
    eventually(
        Duration::from_secs(30),
        "the worker retrying (2 restarts)",
        || async { worker.restarts().await.filter(|r| *r >= 2) },
    )
    .await;
    assert!(worker.is_alive(), "the worker exited");
    assert_eq!(
        log_lines(&worker, "misconfiguration"),
        1,
        "{}",
        worker.output()
    );
    assert!(!worker.output().contains(SECRET));
}

#[tokio::test]
async fn a_write_to_a_replica_is_unavailable_not_an_internal_error() {
    let master = RedisServer::start();
    let port = master.port().to_string();
    let replica = RedisServer::start_with(|_| {
        (
            vec!["--replicaof".into(), "127.0.0.1".into(), port],
            Vec::new(),
        )
    });
    // A demoted master answers READONLY during a failover: the api must say 503, not 500.
    let err = queue(&replica.addr(), &[])
        .enqueue(job("to a replica"))
        .await
        .unwrap_err();
    assert!(matches!(err, JobQueueError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("failover"), "{err}");
}

/// Polls the worker's `/health` until it is 503 with a `reason` containing `needle`; panics
/// with the last body seen and the worker's log otherwise.
async fn health_reason(worker: &WorkerProcess, needle: &str) -> serde_json::Value {
    let what = format!("worker health 503 naming `{needle}`");
    eventually(Duration::from_secs(20), &what, || async {
        match worker.health().await {
            Some((503, body)) if body["reason"].as_str().is_some_and(|r| r.contains(needle)) => {
                Ok(body)
            }
            other => Err(format!("{other:?}\n{}", worker.output())),
        }
    })
    .await
}

#[tokio::test]
async fn a_wrong_password_is_named_in_the_worker_health_without_the_secret() {
    let redis = RedisServer::start_with_password(SECRET);
    let wrong = "wrong-Pw-4e21";
    let env = [(
        "APP__CACHE_SERVER__REDIS__JOBQUEUE__PASSWORD".to_owned(),
        wrong.to_owned(),
    )];
    let worker = start_worker(&redis.addr(), &env).await;
    let body = health_reason(&worker, "authentication").await;
    let text = body.to_string();
    assert!(text.contains("misconfigured:"), "{text}");
    assert!(!text.contains(wrong) && !text.contains(SECRET), "{text}");
}

#[tokio::test]
async fn plain_text_on_a_tls_port_is_a_misconfiguration_in_the_worker_health() {
    let certs = TestCerts::generate();
    let redis = RedisServer::start_tls(&certs, false);
    let worker = start_worker(&redis.addr(), &[]).await;
    let body = health_reason(&worker, "is it a TLS port").await;
    assert!(body.to_string().contains("misconfigured:"), "{body}");
}

#[tokio::test]
async fn a_killed_redis_is_unavailable_not_a_misconfiguration() {
    let mut redis = RedisServer::start();
    let q = queue(&redis.addr(), &[]);
    q.ping().await.unwrap();
    // The open connection sees the server go (reset / EOF): the probe finds nothing listening.
    redis.kill();
    let err = q.ping().await.unwrap_err();
    assert!(matches!(err, JobQueueError::Unavailable(_)), "{err:?}");
    // Back on the same port: the old socket fails, the probe finds a plain Redis answering PING.
    redis.restart();
    eventually(
        Duration::from_secs(5),
        "the queue reaching the restarted Redis",
        || async {
            let pinged = q.ping().await;
            if let Err(e) = &pinged {
                assert!(matches!(e, JobQueueError::Unavailable(_)), "{e:?}");
            }
            pinged
        },
    )
    .await;
}
