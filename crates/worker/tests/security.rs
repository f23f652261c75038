//! The jobqueue against a Redis that needs TLS, a password or an ACL user, with the real
//! `worker` binary: the right credentials run jobs; wrong ones are a misconfiguration the
//! worker survives and names once (per minute), never printing the secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cacheserver_config::{AppEnv, Settings};
use cacheserver_jobqueue::{JobQueue, JobQueueError, NewJob};
use cacheserver_testkit::{free_port, ChildProcess, RedisServer, Stderr, Stream, TestCerts};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut vars: HashMap<String, String> = env.iter().cloned().collect();
    vars.insert(
        "APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR".into(),
        addr.into(),
    );
    vars.insert("APP__JOBQUEUE__ENQUEUE_TIMEOUT".into(), "2s".into());
    let s = Settings::load_from(&root, AppEnv::Test, Some(vars)).unwrap();
    JobQueue::new(&s.cache_server.redis.jobqueue, &s.jobqueue).unwrap()
}

fn job(message: &str) -> NewJob {
    NewJob::delay_print(message)
}

/// A `worker` process; stdout (job output) and stderr (logs) collected line by line.
struct Worker {
    proc: ChildProcess,
    health_port: u16,
}

impl Worker {
    fn start(addr: &str, env: &[(String, String)]) -> Self {
        let health_port = free_port();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_worker"));
        cmd.args(["--name", &format!("sec-{health_port}")])
            .env("APP_ENV", "test")
            .env("APP_CONFIG_DIR", root)
            .env("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", addr)
            .env(
                "APP__JOBQUEUE__WORKER__HEALTH_PORT",
                health_port.to_string(),
            )
            .env("APP__LOGGING__LEVEL", "debug")
            .env_remove("RUST_LOG")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        Self {
            proc: ChildProcess::spawn(&mut cmd, Stderr::Capture),
            health_port,
        }
    }

    /// Wait until a job prints `text`, at most `bound`.
    async fn wait_printed(&self, bound: Duration, text: &str) -> bool {
        self.proc
            .wait_for_line(Stream::Stdout, bound, |l| l.ends_with(text))
            .await
    }

    /// Wait until a log line contains `needle`, at most `bound`.
    async fn wait_logged(&self, bound: Duration, needle: &str) -> bool {
        self.proc
            .wait_for_line(Stream::Stderr, bound, |l| l.contains(needle))
            .await
    }

    fn log_lines(&self, needle: &str) -> usize {
        self.proc
            .texts(Stream::Stderr)
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    fn all_output(&self) -> String {
        let mut all = self.proc.texts(Stream::Stderr).join("\n");
        all.push_str(&self.proc.texts(Stream::Stdout).join("\n"));
        all
    }

    /// `restarts` from the worker's `/health`.
    async fn restarts(&self) -> Option<u64> {
        let url = format!("http://127.0.0.1:{}/health", self.health_port);
        let body: serde_json::Value = reqwest::get(url).await.ok()?.json().await.ok()?;
        body["restarts"].as_u64()
    }

    fn is_alive(&mut self) -> bool {
        self.proc.is_alive()
    }
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
    let worker = Worker::start(&addr, &env);
    q.enqueue(job("over mutual tls")).await.unwrap();
    assert!(
        worker
            .wait_printed(Duration::from_secs(20), "over mutual tls")
            .await,
        "the job did not run; worker log:\n{}",
        worker.all_output()
    );
    assert!(
        !worker.all_output().contains(SECRET),
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
    let mut worker = Worker::start(&redis.addr(), &env);
    assert!(
        worker
            .wait_logged(Duration::from_secs(20), "misconfiguration")
            .await,
        "the worker never said why; log:\n{}",
        worker.all_output()
    );
    let said = worker.all_output();
    assert!(said.contains("register_worker.lua"), "{said}");
    // It retries (restarts count up) but repeats the reason only once per minute.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut restarts = 0;
    while Instant::now() < deadline && restarts < 2 {
        restarts = worker.restarts().await.unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(restarts >= 2, "the worker stopped retrying");
    assert!(worker.is_alive(), "the worker exited");
    assert_eq!(
        worker.log_lines("misconfiguration"),
        1,
        "{}",
        worker.all_output()
    );
    assert!(!worker.all_output().contains(SECRET));
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

/// The worker's `/health`: (status, body).
async fn worker_health(port: u16) -> Option<(u16, serde_json::Value)> {
    let resp = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json().await.ok()?))
}

/// Polls the worker's `/health` until its `reason` contains `needle`; the last body seen.
async fn health_reason(worker: &Worker, needle: &str) -> (bool, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        if let Some((status, body)) = worker_health(worker.health_port).await {
            let named = body["reason"].as_str().is_some_and(|r| r.contains(needle));
            last = body;
            if status == 503 && named {
                return (true, last);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (false, last)
}

#[tokio::test]
async fn a_wrong_password_is_named_in_the_worker_health_without_the_secret() {
    let redis = RedisServer::start_with_password(SECRET);
    let wrong = "wrong-Pw-4e21";
    let env = [(
        "APP__CACHE_SERVER__REDIS__JOBQUEUE__PASSWORD".to_owned(),
        wrong.to_owned(),
    )];
    let worker = Worker::start(&redis.addr(), &env);
    let (named, body) = health_reason(&worker, "authentication").await;
    assert!(named, "{body}\n{}", worker.all_output());
    let text = body.to_string();
    assert!(text.contains("misconfigured:"), "{text}");
    assert!(!text.contains(wrong) && !text.contains(SECRET), "{text}");
}

#[tokio::test]
async fn plain_text_on_a_tls_port_is_a_misconfiguration_in_the_worker_health() {
    let certs = TestCerts::generate();
    let redis = RedisServer::start_tls(&certs, false);
    let worker = Worker::start(&redis.addr(), &[]);
    let (named, body) = health_reason(&worker, "is it a TLS port").await;
    assert!(named, "{body}\n{}", worker.all_output());
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
    for _ in 0..50 {
        match q.ping().await {
            Ok(()) => return,
            Err(e) => assert!(matches!(e, JobQueueError::Unavailable(_)), "{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the queue never reached the restarted Redis");
}
