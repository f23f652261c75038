#![allow(clippy::unwrap_used, clippy::expect_used)]

use cacheserver_config::{AppEnv, ConfigError, ExposeSecret, LogFormat, Settings, StorageType};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const MINIMAL_CACHE: &str = "cache_server: {}\n";
const MINIMAL_CONFIG: &str = "{}\n";

/// Writes the base layer (`base/`), which the `test` environment uses as it is.
fn write_env(dir: &Path, cache_server: &str, config: &str) -> PathBuf {
    let env_dir = dir.join("base");
    std::fs::create_dir_all(&env_dir).unwrap();
    std::fs::write(env_dir.join("cacheserver.yaml"), cache_server).unwrap();
    std::fs::write(env_dir.join("config.yaml"), config).unwrap();
    dir.to_path_buf()
}

fn load(cache_server: &str, config: &str, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let root = write_env(dir.path(), cache_server, config);
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::load_from(&root, AppEnv::Test, Some(vars))
}

fn load_err(cache_server: &str, config: &str, vars: &[(&str, &str)]) -> String {
    load(cache_server, config, vars)
        .expect_err("config should be rejected")
        .to_string()
}

#[test]
fn every_shipped_environment_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    for env in [
        AppEnv::Develop,
        AppEnv::Staging,
        AppEnv::Production,
        AppEnv::Test,
    ] {
        let s = Settings::load_from(&root, env, Some(HashMap::new()))
            .unwrap_or_else(|e| panic!("{}: {e}", env.as_str()));
        assert_eq!(s.cache_server.redis.default.cluster.addrs.len(), 3);
    }
    let prod = Settings::load_from(&root, AppEnv::Production, Some(HashMap::new())).unwrap();
    assert!(!prod.chaos.enabled, "production ships with chaos disabled");
    assert_eq!(prod.logging.format, LogFormat::Json);
}

#[test]
fn defaults_apply_to_empty_files() {
    let s = load(MINIMAL_CACHE, MINIMAL_CONFIG, &[]).unwrap();
    assert_eq!((s.server.host.as_str(), s.server.port), ("127.0.0.1", 8080));
    let rl = &s.api.rate_limit;
    assert!(rl.enabled);
    assert_eq!((rl.requests_per_minute, rl.requests_per_hour), (60, 1000));
    assert_eq!(rl.storage_type, StorageType::Auto);
    assert_eq!(rl.redis_timeout, Duration::from_millis(150));
    let c = &s.cache_server.redis.default;
    assert!(c.cluster.addrs.is_empty() && !c.is_enabled());
    assert_eq!(c.max_retries, 2);
    assert_eq!(c.min_retry_backoff, Duration::from_millis(8));
    assert_eq!(c.max_retry_backoff, Duration::from_millis(512));
    assert_eq!(c.dial_timeout, Duration::from_secs(5));
    assert_eq!(c.read_timeout, Duration::from_secs(3));
    assert_eq!(c.pool_timeout, Duration::from_secs(4));
    assert!(c.pool_size >= 2);
    let j = &s.cache_server.redis.jobqueue;
    assert_eq!(j.addr, "127.0.0.1:6379");
    assert_eq!(j.write_timeout, Duration::from_secs(3));
    assert_eq!(s.jobqueue.default_delay_seconds, 180);
    assert_eq!(s.jobqueue.default_max_retry, 10);
    assert_eq!(s.jobqueue.done_retention, Duration::from_secs(86_400));
    assert_eq!(s.jobqueue.events_max_len, 10_000);
    assert_eq!(s.api.max_event_streams, 1000);
    assert_eq!(
        s.jobqueue.scheduler.enqueue_ahead,
        Duration::from_millis(250)
    );
    assert_eq!(s.jobqueue.scheduler.missed_after, Duration::from_secs(5));
    assert_eq!(s.api.event_heartbeat, Duration::from_secs(15));
    assert_eq!(s.jobqueue.worker.health_port, 8082);
    assert_eq!(s.jobqueue.worker.concurrency, 8);
    assert!(!s.chaos.enabled);
    assert_eq!(s.chaos.cooldown, Duration::from_secs(1));
    assert_eq!(s.logging.format, LogFormat::Pretty);
}

#[test]
fn zero_and_negative_values_mean_default() {
    let cache = r#"
cache_server:
  redis:
    default:
      cluster: { addrs: ["127.0.0.1:7100"] }
      max_retries: -1
      min_retry_backoff: 0
      max_retry_backoff: -5s
      dial_timeout: 0s
      read_timeout: -1
      pool_size: -3
    jobqueue:
      addr: ""
      dial_timeout: 0
      pool_size: 0
"#;
    let s = load(cache, MINIMAL_CONFIG, &[]).unwrap();
    let c = &s.cache_server.redis.default;
    assert_eq!(c.max_retries, 2);
    assert_eq!(c.min_retry_backoff, Duration::from_millis(8));
    assert_eq!(c.max_retry_backoff, Duration::from_millis(512));
    assert_eq!(c.dial_timeout, Duration::from_secs(5));
    assert_eq!(c.read_timeout, Duration::from_secs(3));
    assert!(c.pool_size >= 2);
    assert_eq!(s.cache_server.redis.jobqueue.addr, "127.0.0.1:6379");
    assert_eq!(
        s.cache_server.redis.jobqueue.dial_timeout,
        Duration::from_secs(5)
    );
}

#[test]
fn environment_overrides_every_kind_of_key() {
    let s = load(
        MINIMAL_CACHE,
        MINIMAL_CONFIG,
        &[
            ("APP__SERVER__PORT", "9000"),
            ("APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR", "127.0.0.1:6390"),
            (
                "APP__CACHE_SERVER__REDIS__DEFAULT__CLUSTER__ADDRS",
                "127.0.0.1:7100,127.0.0.1:7101",
            ),
            ("APP__CACHE_SERVER__REDIS__DEFAULT__READ_TIMEOUT", "250ms"),
            ("APP__CACHE_SERVER__REDIS__DEFAULT__PASSWORD", "s3cret"),
            ("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", "5"),
            ("APP__API__RATE_LIMIT__STORAGE_TYPE", "memory"),
            (
                "APP__API__RATE_LIMIT__TRUSTED_PROXIES",
                "10.0.0.0/8,127.0.0.1",
            ),
            ("APP__CHAOS__ENABLED", "true"),
            ("APP__CHAOS__TOKEN", "tok"),
            ("APP__JOBQUEUE__WORKER__NAME", "worker-a"),
            ("APP__LOGGING__FORMAT", "json"),
        ],
    )
    .unwrap();
    assert_eq!(s.server.port, 9000);
    assert_eq!(s.cache_server.redis.jobqueue.addr, "127.0.0.1:6390");
    assert_eq!(
        s.cache_server.redis.default.cluster.addrs,
        ["127.0.0.1:7100", "127.0.0.1:7101"]
    );
    assert_eq!(
        s.cache_server.redis.default.read_timeout,
        Duration::from_millis(250)
    );
    assert_eq!(
        s.cache_server
            .redis
            .default
            .password
            .as_ref()
            .unwrap()
            .expose_secret(),
        "s3cret"
    );
    assert_eq!(s.api.rate_limit.requests_per_minute, 5);
    assert_eq!(s.api.rate_limit.storage_type, StorageType::Memory);
    assert_eq!(s.api.rate_limit.trusted_networks().unwrap().len(), 2);
    assert!(s.chaos.enabled);
    assert_eq!(s.chaos.token.as_ref().unwrap().expose_secret(), "tok");
    assert_eq!(s.jobqueue.worker.name, "worker-a");
    assert_eq!(s.logging.format, LogFormat::Json);
}

#[test]
fn secrets_are_never_printed() {
    let s = load(
        MINIMAL_CACHE,
        MINIMAL_CONFIG,
        &[("APP__CACHE_SERVER__REDIS__DEFAULT__PASSWORD", "hunter2")],
    )
    .unwrap();
    assert!(!format!("{s:?}").contains("hunter2"));
}

#[test]
fn secrets_in_files_are_rejected() {
    let cache = "cache_server: { redis: { default: { password: hunter2 } } }\n";
    let err = load_err(cache, MINIMAL_CONFIG, &[]);
    assert!(err.contains("cache_server.redis.default.password"), "{err}");
    assert!(
        err.contains("APP__CACHE_SERVER__REDIS__DEFAULT__PASSWORD"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn bad_yaml_names_the_file() {
    let err = load_err(MINIMAL_CACHE, "server: [unclosed\n", &[]);
    assert!(err.contains("config.yaml"), "{err}");
}

#[test]
fn unknown_storage_type_names_the_key() {
    let err = load_err(
        MINIMAL_CACHE,
        "api: { rate_limit: { storage_type: disk } }\n",
        &[],
    );
    assert!(err.contains("storage_type"), "{err}");
    assert!(err.contains("disk"), "{err}");
}

#[test]
fn negative_limit_names_the_key() {
    let err = load_err(
        MINIMAL_CACHE,
        "api: { rate_limit: { requests_per_minute: -5 } }\n",
        &[],
    );
    assert!(err.contains("api.rate_limit.requests_per_minute"), "{err}");
    assert!(err.contains("config.yaml"), "{err}");
    let err = load_err(
        MINIMAL_CACHE,
        MINIMAL_CONFIG,
        &[("APP__API__RATE_LIMIT__REQUESTS_PER_HOUR", "0")],
    );
    assert!(err.contains("api.rate_limit.requests_per_hour"), "{err}");
}

#[test]
fn unparsable_duration_names_the_key_and_file() {
    let cache = "cache_server: { redis: { default: { dial_timeout: five } } }\n";
    let err = load_err(cache, MINIMAL_CONFIG, &[]);
    assert!(err.contains("dial_timeout"), "{err}");
    assert!(err.contains("cacheserver.yaml"), "{err}");
    let err = load_err(cache.replace("five", "5").as_str(), MINIMAL_CONFIG, &[]);
    assert!(err.contains("no unit"), "{err}");
}

#[test]
fn unknown_keys_are_rejected() {
    let err = load_err(MINIMAL_CACHE, "server: { prot: 80 }\n", &[]);
    assert!(err.contains("prot"), "{err}");
}

#[test]
fn bad_values_name_the_key() {
    for (config, key) in [
        (
            "api: { rate_limit: { trusted_proxies: [not-an-ip] } }\n",
            "api.rate_limit.trusted_proxies",
        ),
        (
            "jobqueue: { default_max_retry: 101 }\n",
            "jobqueue.default_max_retry",
        ),
        (
            "jobqueue: { default_delay_seconds: -1 }\n",
            "jobqueue.default_delay_seconds",
        ),
        ("jobqueue: { queue: 'a b' }\n", "jobqueue.queue"),
        (
            "jobqueue: { events_max_len: 10000001 }\n",
            "jobqueue.events_max_len",
        ),
        ("jobqueue: { events_max_len: -1 }\n", "events_max_len"),
        (
            "jobqueue: { scheduler: { reload_every: 2m } }\n",
            "jobqueue.scheduler.reload_every",
        ),
        (
            "api: { max_event_streams: 1000001 }\n",
            "api.max_event_streams",
        ),
    ] {
        let err = load_err(MINIMAL_CACHE, config, &[]);
        assert!(err.contains(key), "{key}: {err}");
    }
    let err = load_err(
        MINIMAL_CACHE,
        "api: { rate_limit: { storage_type: redis } }\n",
        &[],
    );
    assert!(err.contains("cluster.addrs"), "{err}");
    let err = load_err(
        "cache_server: { redis: { jobqueue: { addr: nowhere } } }\n",
        MINIMAL_CONFIG,
        &[],
    );
    assert!(
        err.contains("cache_server.redis.jobqueue.addr") && err.contains("cacheserver.yaml"),
        "{err}"
    );
}

#[test]
fn unknown_app_env_is_an_error() {
    let err = "qa".parse::<AppEnv>().unwrap_err().to_string();
    assert!(err.contains("qa") && err.contains("develop"), "{err}");
    assert_eq!("".parse::<AppEnv>().unwrap(), AppEnv::Develop);
}

#[test]
fn missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = Settings::load_from(dir.path(), AppEnv::Staging, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("staging") && err.contains("cacheserver.yaml"),
        "{err}"
    );
}

#[test]
fn rate_limit_rules_load_and_inherit_nothing_they_set() {
    let config = r#"
api:
  rate_limit:
    max_tracked_clients: 5000
    rules:
      - { name: register, path_prefix: /api/jobs, methods: [post], requests_per_minute: 10 }
      - { name: per-key, path_prefix: /api, key: "header:X-Api-Key", requests_per_hour: 50 }
"#;
    let s = load(MINIMAL_CACHE, config, &[]).unwrap();
    let rl = &s.api.rate_limit;
    assert_eq!(rl.max_tracked_clients, 5000);
    assert_eq!(rl.rules.len(), 2);
    assert_eq!(rl.rules[0].key, "ip", "default key");
    assert_eq!(rl.rules[0].requests_per_hour, None, "inherited later");
    assert_eq!(
        rl.rules[1].parsed_key().unwrap(),
        cacheserver_config::RuleKey::Header("x-api-key".into())
    );
    let defaults = load(MINIMAL_CACHE, MINIMAL_CONFIG, &[]).unwrap();
    assert_eq!(defaults.api.rate_limit.max_tracked_clients, 100_000);
}

#[test]
fn bad_rules_name_the_index_and_field() {
    for (rule, wanted) in [
        ("{ name: a, path_prefix: /x, key: cookie }", "rules[1].key"),
        ("{ name: a, path_prefix: x }", "rules[1].path_prefix"),
        ("{ name: 'a b', path_prefix: /x }", "rules[1].name"),
        ("{ name: ok, path_prefix: /x }", "rules[1].name"),
        (
            "{ name: a, path_prefix: /x, methods: [FETCH] }",
            "rules[1].methods",
        ),
        (
            "{ name: a, path_prefix: /x, requests_per_hour: 0 }",
            "rules[1].requests_per_hour",
        ),
        (
            "{ name: a, path_prefix: /x, key: 'header:' }",
            "rules[1].key",
        ),
    ] {
        let config = format!(
            "api: {{ rate_limit: {{ rules: [ {{ name: ok, path_prefix: /ok }}, {rule} ] }} }}\n"
        );
        let err = load_err(MINIMAL_CACHE, &config, &[]);
        assert!(err.contains("api.rate_limit.rules"), "{err}");
        assert!(err.contains(wanted), "{rule}: {err}");
    }
    let err = load_err(
        MINIMAL_CACHE,
        "api: { rate_limit: { rules: [ { name: a, path_prefix: /x, limit: 3 } ] } }\n",
        &[],
    );
    assert!(err.contains("limit"), "unknown field named: {err}");
}

#[test]
fn job_timeouts_and_webhook_hosts_have_defaults_and_env_lists() {
    let s = load(MINIMAL_CACHE, MINIMAL_CONFIG, &[]).unwrap();
    assert_eq!(s.jobqueue.default_timeout, Duration::from_secs(300));
    assert_eq!(s.jobqueue.webhook.timeout, Duration::from_secs(10));
    assert!(s.jobqueue.webhook.allowed_hosts.is_empty());
    let s = load(
        MINIMAL_CACHE,
        "jobqueue: { default_timeout: 90s, webhook: { timeout: 2s } }\n",
        &[(
            "APP__JOBQUEUE__WEBHOOK__ALLOWED_HOSTS",
            "Hooks.Example.com, 127.0.0.1:9000,",
        )],
    )
    .unwrap();
    assert_eq!(s.jobqueue.default_timeout, Duration::from_secs(90));
    assert_eq!(s.jobqueue.webhook.timeout, Duration::from_secs(2));
    assert_eq!(
        s.jobqueue.webhook.allowed_hosts,
        ["hooks.example.com", "127.0.0.1:9000"]
    );
}

#[test]
fn cors_origins_default_to_none_load_from_env_and_bad_ones_name_the_key() {
    let defaults = load(MINIMAL_CACHE, MINIMAL_CONFIG, &[]).unwrap();
    assert!(!defaults.api.cors.is_enabled(), "default: no CORS");
    let s = load(
        MINIMAL_CACHE,
        MINIMAL_CONFIG,
        &[(
            "APP__API__CORS__ALLOWED_ORIGINS",
            "https://app.example.com,http://localhost:3000",
        )],
    )
    .unwrap();
    assert_eq!(
        s.api.cors.allowed_origins,
        ["https://app.example.com", "http://localhost:3000"]
    );
    for bad in [
        "app.example.com",
        "https://app.example.com/",
        "https://app.example.com/path",
        "ftp://app.example.com",
        "https://app.example.com:http",
        "'*', https://a.example",
    ] {
        let config = format!("api: {{ cors: {{ allowed_origins: [{bad}] }} }}\n");
        let err = load_err(MINIMAL_CACHE, &config, &[]);
        assert!(err.contains("api.cors.allowed_origins"), "{bad}: {err}");
    }
}

#[test]
fn an_environment_file_overrides_only_what_it_names_and_is_named_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = write_env(
        dir.path(),
        "cache_server:\n  redis:\n    jobqueue: { addr: \"10.0.0.1:6379\" }\n",
        "server: { host: \"10.0.0.2\", port: 9000 }\nchaos: { enabled: true }\n",
    );
    let env_dir = root.join("test");
    std::fs::create_dir_all(&env_dir).unwrap();
    std::fs::write(env_dir.join("config.yaml"), "server: { port: 9100 }\n").unwrap();
    let none = Some(HashMap::new());
    let s = Settings::load_from(&root, AppEnv::Test, none.clone()).unwrap();
    assert_eq!((s.server.host.as_str(), s.server.port), ("10.0.0.2", 9100));
    assert!(s.chaos.enabled, "kept from base");
    assert_eq!(s.cache_server.redis.jobqueue.addr, "10.0.0.1:6379");
    // An environment without files of its own is the base as it is.
    let staging = Settings::load_from(&root, AppEnv::Staging, none.clone()).unwrap();
    assert_eq!(staging.server.port, 9000);

    // A bad value names the layer that set it.
    let bad = "api: { rate_limit: { requests_per_minute: 0 } }\n";
    std::fs::write(env_dir.join("config.yaml"), bad).unwrap();
    let err = Settings::load_from(&root, AppEnv::Test, none.clone())
        .unwrap_err()
        .to_string();
    let env_file = env_dir.join("config.yaml").display().to_string();
    assert!(err.contains(&env_file), "{err}");
    std::fs::write(env_dir.join("config.yaml"), "{}\n").unwrap();
    std::fs::write(root.join("base/config.yaml"), bad).unwrap();
    let err = Settings::load_from(&root, AppEnv::Test, none)
        .unwrap_err()
        .to_string();
    let base_file = root.join("base/config.yaml").display().to_string();
    assert!(err.contains(&base_file), "{err}");
}

#[test]
fn schedules_load_with_defaults_and_a_bad_one_is_named_with_file_and_key() {
    let config = r#"
jobqueue:
  schedules:
    - name: nightly
      cron: "0 3 * * *"
      job: { type: "demo:delay_print", payload: { message: report } }
    - name: every-10s
      cron: "*/10 * * * * *"
      timezone: Europe/Berlin
      job: { type: "demo:delay_print", payload: { message: tick }, queue: reports, max_retry: 2 }
      overlap: skip
      missed: run_once
"#;
    let s = load(MINIMAL_CACHE, config, &[]).unwrap();
    let [nightly, every] = &s.jobqueue.schedules[..] else {
        panic!("two schedules: {:?}", s.jobqueue.schedules)
    };
    assert_eq!(nightly.timezone, "UTC");
    assert_eq!(
        (nightly.overlap, nightly.missed),
        (Default::default(), Default::default())
    );
    assert_eq!(every.job.queue.as_deref(), Some("reports"));
    assert_eq!(every.overlap, cacheserver_config::Overlap::Skip);
    assert_eq!(every.missed, cacheserver_config::Missed::RunOnce);

    for (bad, named) in [
        (config.replace("0 3 * * *", "0 25 * * *"), "0 25 * * *"),
        (
            config.replace("Europe/Berlin", "Europe/Nowhere"),
            "Europe/Nowhere",
        ),
        (config.replace("every-10s", "nightly"), "declared twice"),
    ] {
        let err = load_err(MINIMAL_CACHE, &bad, &[]);
        assert!(
            err.contains("jobqueue.schedules")
                && err.contains("config.yaml")
                && err.contains(named),
            "{err}"
        );
    }
}

#[test]
fn local_cache_tier_loads_and_a_too_small_one_names_the_key() {
    let s = load(MINIMAL_CACHE, MINIMAL_CONFIG, &[]).unwrap();
    assert!(s.api.cache.local.enabled, "on by default");
    assert_eq!(s.api.cache.local.max_entries, 10_000);
    assert_eq!(s.api.cache.local.max_bytes, 32 * 1024 * 1024);
    let s = load(
        MINIMAL_CACHE,
        MINIMAL_CONFIG,
        &[("APP__API__CACHE__LOCAL__ENABLED", "false")],
    )
    .unwrap();
    assert!(!s.api.cache.local.enabled);
    let err = load_err(
        MINIMAL_CACHE,
        "api: { cache: { local: { max_bytes: 1000 } } }\n",
        &[],
    );
    assert!(err.contains("api.cache"), "{err}");
    assert!(err.contains("local.max_bytes"), "{err}");
    assert!(err.contains("config.yaml"), "{err}");
}
