//! A real Prometheus, run with `deploy/prometheus/prometheus.yml` and `alerts.yml` (scrape and
//! evaluation every second), scrapes a running stack: the api, a worker, prometheus-redis-exporter
//! logged in as its least-rights ACL user, a jobqueue Redis and a 3+3 cluster. The test provokes
//! what the dashboard panels count (a job done, a job retried then dead, a chaos reset, a 503 while
//! the jobqueue Redis is down, a 429) and then checks that every PromQL expression of
//! `deploy/grafana/cacheserver-dashboard.json` returns a series with a finite value, that every
//! alert rule evaluates without error, and that the exporter's ACL user was never refused a command.
//!
//! Needs `prometheus` and `prometheus-redis-exporter` (scripts/ensure-monitoring.sh; `just test`
//! runs it) and the worker binary (built by `cargo test --workspace`, see `worker_binary`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{eventually, try_eventually};
use cacheserver_testkit::{
    free_port, redis_cli, worker_binary, RedisCluster, RedisServer, WorkerCommand,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const EXPORTER_USER: &str = "redis-exporter";
/// Bound of each wait; the whole test takes ~15 s on an idle 2-core machine.
const STEP: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A child process killed on drop, its output kept in a file for failure messages.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, dir: &Path, command: &mut Command) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { name, child, log }
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(3000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        format!("--- {} (last lines) ---\n{}", self.name, &text[start..])
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// What `promtool check metrics` says about the exposition at `url` (empty: nothing).
async fn promtool_findings(http: &reqwest::Client, url: &str) -> String {
    use std::io::Write as _;
    let text = http.get(url).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("# TYPE"), "no metrics at {url}: {text}");
    let promtool = tool("promtool").expect("promtool (scripts/ensure-monitoring.sh installs it)");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        String::new()
    } else {
        format!("{}: {said}", out.status)
    }
}

/// Create (or reset) the exporter's ACL user with the rules `just monitor` uses.
fn create_exporter_user(port: u16, password: &str) {
    let rules =
        std::fs::read_to_string(repo().join("deploy/prometheus/redis-exporter.acl")).unwrap();
    let pass = format!(">{password}");
    let mut args = vec!["ACL", "SETUSER", EXPORTER_USER];
    args.extend(rules.split_whitespace());
    args.push(&pass);
    let reply = redis_cli(port, &args).unwrap();
    assert_eq!(reply.trim(), "OK", "ACL SETUSER on {port}: {reply}");
}

/// `deploy/prometheus` copied to `dir` with a 1 s scrape and evaluation interval, and targets
/// files naming this test's processes.
fn prometheus_config(
    dir: &Path,
    api: &str,
    worker: &str,
    exporter: &str,
    redis: &[(String, &str)],
) {
    let source = repo().join("deploy/prometheus");
    let config = std::fs::read_to_string(source.join("prometheus.yml")).unwrap();
    for key in ["scrape_interval: 15s", "evaluation_interval: 15s"] {
        assert!(config.contains(key), "prometheus.yml no longer has `{key}`");
    }
    let config = config
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        .replace("scrape_timeout: 5s", "scrape_timeout: 1s");
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    std::fs::copy(source.join("alerts.yml"), dir.join("alerts.yml")).unwrap();
    let targets = dir.join("targets");
    std::fs::create_dir_all(&targets).unwrap();
    std::fs::write(targets.join("api.yml"), format!("- targets: ['{api}']\n")).unwrap();
    std::fs::write(
        targets.join("worker.yml"),
        format!("- targets: ['{worker}']\n"),
    )
    .unwrap();
    std::fs::write(
        targets.join("redis-exporter.yml"),
        format!("- targets: ['{exporter}']\n"),
    )
    .unwrap();
    let redis: String = redis
        .iter()
        .map(|(addr, role)| {
            format!(
                "- targets: ['redis://{addr}']\n  labels: {{role: {role}, __exporter: '{exporter}'}}\n"
            )
        })
        .collect();
    std::fs::write(targets.join("redis.yml"), redis).unwrap();
}

struct Prom {
    http: reqwest::Client,
    base: String,
}

impl Prom {
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        self.query_at(expr, &Value::Null).await
    }

    /// Evaluate `expr` at `time` (a Prometheus timestamp; null: now).
    async fn query_at(&self, expr: &str, time: &Value) -> Result<Vec<Value>, String> {
        let mut params = vec![("query", expr.to_owned())];
        if !time.is_null() {
            params.push(("time", time.to_string()));
        }
        let resp = self
            .http
            .get(format!("{}/api/v1/query", self.base))
            .query(&params)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(body.to_string());
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The series of `expr` once one has a finite value (polled every 200 ms, bounded by `STEP`).
    async fn finite(&self, expr: &str) -> Result<Vec<Value>, String> {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let last = self.query(expr).await;
            if last.as_ref().is_ok_and(|series| has_finite(series)) {
                return last;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "no finite series for `{expr}` within {STEP:?}: {last:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// At least one series of an instant query has a finite value (not NaN, not ±Inf).
fn has_finite(series: &[Value]) -> bool {
    series.iter().any(|s| {
        s["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    })
}

/// Every PromQL expression of the dashboard (panel targets and annotations), with Grafana's
/// variables replaced the way Grafana would with "All" selected.
fn dashboard_exprs() -> Vec<String> {
    let text =
        std::fs::read_to_string(repo().join("deploy/grafana/cacheserver-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let panels = dashboard["panels"].as_array().unwrap().iter();
    let targets = panels.filter_map(|p| p["targets"].as_array()).flatten();
    let annotations = dashboard["annotations"]["list"].as_array().unwrap().iter();
    let exprs: Vec<String> = targets
        .chain(annotations)
        .filter_map(|t| t["expr"].as_str())
        .map(|e| {
            // Grafana's $__rate_interval is at least 4 scrapes; 10m covers the whole test here.
            e.replace("$__rate_interval", "10m")
                .replace("$__range", "1h")
                .replace("$__interval", "5s")
                .replace("$worker_job", ".*")
                .replace("$redis_instance", ".*")
                .replace("$job", ".*")
        })
        .collect();
    for expr in &exprs {
        assert!(!expr.contains('$'), "unknown variable in `{expr}`");
    }
    exprs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_series_from_a_real_prometheus() {
    let (Some(prometheus), Some(exporter_bin)) =
        (tool("prometheus"), tool("prometheus-redis-exporter"))
    else {
        panic!(
            "prometheus or prometheus-redis-exporter is missing: run scripts/ensure-monitoring.sh \
             (just test does)"
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let password = format!("test-{}", ulid::Ulid::new());

    let mut jobqueue = RedisServer::start();
    let cluster = RedisCluster::start();
    create_exporter_user(jobqueue.port(), &password);
    for addr in cluster.addrs() {
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        create_exporter_user(port, &password);
    }

    let app = crate::common::spawn_app(&[
        ("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", &jobqueue.addr()),
        (
            "APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS",
            &crate::common::seeds(&cluster),
        ),
        ("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", "6"),
    ])
    .await;
    let worker = WorkerCommand::new(worker_binary())
        .redis(&jobqueue.addr())
        .name("prometheus-test")
        .env("APP__JOBQUEUE__WORKER__RETRY_BACKOFF", "100ms")
        .capture_stderr()
        .start()
        .await;
    let worker_port = worker.health_port();
    let exporter_addr = format!("127.0.0.1:{}", free_port());
    let exporter = Proc::spawn(
        "redis-exporter",
        dir.path(),
        Command::new(exporter_bin)
            .env("REDIS_EXPORTER_WEB_LISTEN_ADDRESS", &exporter_addr)
            .env("REDIS_ADDR", "")
            .env("REDIS_USER", EXPORTER_USER)
            .env("REDIS_PASSWORD", &password)
            .env("REDIS_EXPORTER_INCL_SYSTEM_METRICS", "true"),
    );
    let mut redis = vec![(jobqueue.addr(), "jobqueue")];
    redis.extend(cluster.addrs().into_iter().map(|a| (a, "cluster")));
    let api_addr = app.base.trim_start_matches("http://").to_owned();
    prometheus_config(
        dir.path(),
        &api_addr,
        &format!("127.0.0.1:{worker_port}"),
        &exporter_addr,
        &redis,
    );
    let prom_port = free_port();
    let prom_proc = Proc::spawn(
        "prometheus",
        dir.path(),
        Command::new(prometheus)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg("--log.level=warn"),
    );
    let procs = [&exporter, &prom_proc];
    let logs = || {
        let others = procs.iter().map(|p| p.tail()).collect::<Vec<_>>();
        format!("--- worker ---\n{}\n{}", worker.output(), others.join("\n"))
    };
    let prom = Prom {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
        base: format!("http://127.0.0.1:{prom_port}"),
    };
    let ready = try_eventually(STEP, || async {
        prom.http
            .get(format!("{}/-/ready", prom.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await
    .is_ok();
    assert!(ready, "prometheus not ready\n{}", logs());
    // api, worker, exporter and the 7 Redis instances through it.
    let up = prom.finite("count(up == 1) >= 10").await;
    assert!(up.is_ok(), "{up:?}\n{}", logs());
    let redis_up = prom.finite("count(redis_up == 1) >= 7").await;
    assert!(redis_up.is_ok(), "{redis_up:?}\n{}", logs());

    // What the panels count: a job done, a job that fails, is retried and dies.
    for (message, max_retry) in [("counted by prometheus", 0), ("fail: on purpose", 1)] {
        let resp = app
            .http
            .post(app.url("/api/dm-jobqueue/register"))
            .json(&json!({"message": message, "delay_seconds": 0, "max_retry": max_retry}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    }
    for expr in [
        "sum(jobqueue_jobs_processed_total) >= 1",
        "sum(jobqueue_jobs_retried_total) >= 1",
        "sum(jobqueue_jobs_dead_total) >= 1",
        r#"sum(jobqueue_jobs{state="dead"}) >= 1"#,
    ] {
        let seen = prom.finite(expr).await;
        assert!(seen.is_ok(), "{seen:?}\n{}", logs());
    }

    // A 5xx: registration while the jobqueue Redis is down answers 503.
    jobqueue.kill();
    let resp = app
        .http
        .post(app.url("/api/dm-jobqueue/register"))
        .json(&json!({"message": "while redis is down", "delay_seconds": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let down = prom.finite("min(redis_up) == 0").await;
    assert!(
        down.is_ok(),
        "the exporter never saw the jobqueue down: {down:?}\n{}",
        logs()
    );
    jobqueue.restart();
    create_exporter_user(jobqueue.port(), &password);

    let back = prom.finite("count(redis_up == 1) >= 7").await;
    assert!(back.is_ok(), "{back:?}\n{}", logs());

    // Last, in quick succession, a chaos reset and a 429 (the minute budget of 6 is shared with
    // the calls above; a window reset only delays it). The moment Prometheus has scraped both is
    // when every panel, and the reset annotation's 1m window, has something to show, however
    // long the steps above took: the dashboard is evaluated at that moment.
    let resp = app
        .http
        .post(app.url("/chaos/redis-reset"))
        .json(&json!({"force": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut limited = false;
    for _ in 0..20 {
        if app.ping().await.status() == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "no 429 within 20 pings");
    let mut at = Value::Null;
    for expr in [
        r#"sum(http_requests_total{status="503"}) >= 1"#,
        "sum(chaos_resets_total) >= 1",
        r#"sum(http_requests_total{status="429"}) >= 1"#,
        // A series born with its first event needs a second sample before increase() sees it.
        r#"min(count_over_time(http_requests_total{status="429"}[1m])) >= 3"#,
    ] {
        let seen = prom.finite(expr).await;
        at = seen.unwrap_or_else(|e| panic!("{e}\n{}", logs()))[0]["value"][0].clone();
    }

    let mut missing = Vec::new();
    for expr in dashboard_exprs() {
        match prom.query_at(&expr, &at).await {
            Ok(series) if has_finite(&series) => {}
            other => missing.push(format!("`{expr}` at {at}: {other:?}")),
        }
    }
    assert!(missing.is_empty(), "{}\n{}", missing.join("\n"), logs());

    // Both expositions, with every family the test provoked, pass `promtool check metrics`
    // (HELP text for each metric, counter and unit naming): any finding fails.
    for (name, url) in [
        ("api", app.url("/metrics")),
        ("worker", format!("http://127.0.0.1:{worker_port}/metrics")),
    ] {
        let findings = promtool_findings(&prom.http, &url).await;
        assert!(
            findings.is_empty(),
            "promtool check metrics on the {name}'s /metrics:\n{findings}"
        );
    }

    // Every alert rule evaluates (a typo or a many-to-many match shows up as health "err").
    let rules: Value = prom
        .http
        .get(format!("{}/api/v1/rules", prom.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rules: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert!(rules.len() >= 12, "{rules:?}");
    eventually(
        STEP,
        &format!("a rule does not evaluate: {rules:?}"),
        || async {
            let body: Value = match prom
                .http
                .get(format!("{}/api/v1/rules", prom.base))
                .send()
                .await
            {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => return false,
            };
            body["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .all(|r| r["health"] == "ok")
        },
    )
    .await;

    // Least rights were enough: the exporter was never refused a command (the cluster nodes
    // ran the whole test with the same user).
    let denied = redis_cli(cluster.node(0).port(), &["ACL", "LOG"]).unwrap();
    assert!(
        denied.trim().is_empty(),
        "ACL denials for the exporter: {denied}"
    );
    app.stop().await;
}
