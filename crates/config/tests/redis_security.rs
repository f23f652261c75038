//! `cache_server.redis.*.tls`, `jobqueue.sentinel` and `jobqueue.min_replicas_acked`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cacheserver_config::{AppEnv, ConfigError, ExposeSecret, Settings, TlsSettings};
use std::collections::HashMap;
use std::path::PathBuf;

fn load(cache_server: &str, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let env_dir = dir.path().join("base");
    std::fs::create_dir_all(&env_dir).unwrap();
    std::fs::write(env_dir.join("cacheserver.yaml"), cache_server).unwrap();
    std::fs::write(env_dir.join("config.yaml"), "{}\n").unwrap();
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::load_from(dir.path(), AppEnv::Test, Some(vars))
}

#[test]
fn tls_is_off_by_default_and_a_flag_still_works() {
    let s = load("cache_server: {}\n", &[]).unwrap();
    assert_eq!(s.cache_server.redis.default.tls, TlsSettings::default());
    assert!(!s.cache_server.redis.jobqueue.tls.enabled);
    let s = load(
        "cache_server: {redis: {default: {tls: true}, jobqueue: {tls: false}}}\n",
        &[],
    )
    .unwrap();
    assert!(s.cache_server.redis.default.tls.enabled);
    assert!(!s.cache_server.redis.jobqueue.tls.enabled);
}

#[test]
fn a_tls_table_means_enabled_unless_it_says_otherwise() {
    let yaml = "cache_server:\n  redis:\n    default:\n      tls: {ca_file: /etc/ca.pem, server_name: redis.internal}\n    jobqueue:\n      tls: {enabled: false, ca_file: /etc/ca.pem}\n";
    let s = load(yaml, &[]).unwrap();
    let tls = &s.cache_server.redis.default.tls;
    assert!(tls.enabled);
    assert_eq!(tls.ca_file, Some(PathBuf::from("/etc/ca.pem")));
    assert_eq!(tls.server_name.as_deref(), Some("redis.internal"));
    assert!(!s.cache_server.redis.jobqueue.tls.enabled);
    assert!(s.cache_server.redis.jobqueue.url().starts_with("redis://"));
}

#[test]
fn tls_comes_from_the_environment_too() {
    let s = load(
        "cache_server: {redis: {jobqueue: {tls: false}}}\n",
        &[
            ("APP__CACHE_SERVER__REDIS__JOBQUEUE__TLS__ENABLED", "true"),
            (
                "APP__CACHE_SERVER__REDIS__JOBQUEUE__TLS__CA_FILE",
                "/run/ca.pem",
            ),
            (
                "APP__CACHE_SERVER__REDIS__JOBQUEUE__TLS__CERT_FILE",
                "/run/c.pem",
            ),
            (
                "APP__CACHE_SERVER__REDIS__JOBQUEUE__TLS__KEY_FILE",
                "/run/k.pem",
            ),
            ("APP__CACHE_SERVER__REDIS__DEFAULT__TLS", "true"),
        ],
    )
    .unwrap();
    let jq = &s.cache_server.redis.jobqueue;
    assert!(jq.tls.enabled);
    assert_eq!(jq.tls.ca_file, Some(PathBuf::from("/run/ca.pem")));
    assert_eq!(jq.tls.key_file, Some(PathBuf::from("/run/k.pem")));
    assert!(jq.url().starts_with("rediss://"));
    assert!(s.cache_server.redis.default.tls.enabled);
}

#[test]
fn empty_tls_paths_mean_none_and_half_a_client_cert_is_rejected() {
    let s = load(
        "cache_server: {redis: {jobqueue: {tls: {ca_file: '', server_name: ''}}}}\n",
        &[],
    )
    .unwrap();
    assert_eq!(s.cache_server.redis.jobqueue.tls.ca_file, None);
    assert_eq!(s.cache_server.redis.jobqueue.tls.server_name, None);
    let err = load(
        "cache_server: {redis: {default: {tls: {cert_file: /c.pem}}}}\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("cache_server.redis.default.tls"), "{err}");
    assert!(err.contains("key_file"), "{err}");
    let err = load("cache_server: {redis: {default: {tls: {bogus: 1}}}}\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("tls"), "{err}");
}

#[test]
fn sentinel_and_min_replicas_acked() {
    let s = load("cache_server: {}\n", &[]).unwrap();
    let jq = &s.cache_server.redis.jobqueue;
    assert!(!jq.sentinel.is_enabled());
    assert_eq!(jq.min_replicas_acked, 0);
    let s = load(
        "cache_server: {redis: {jobqueue: {sentinel: {master_name: jq, username: sen}, min_replicas_acked: 1}}}\n",
        &[
            ("APP__CACHE_SERVER__REDIS__JOBQUEUE__SENTINEL__ADDRS", "127.0.0.1:26379,127.0.0.1:26380"),
            ("APP__CACHE_SERVER__REDIS__JOBQUEUE__SENTINEL__PASSWORD", "s3cret"),
        ],
    )
    .unwrap();
    let jq = &s.cache_server.redis.jobqueue;
    assert!(jq.sentinel.is_enabled());
    assert_eq!(jq.sentinel.master_name, "jq");
    assert_eq!(jq.sentinel.addrs, ["127.0.0.1:26379", "127.0.0.1:26380"]);
    assert_eq!(jq.sentinel.username.as_deref(), Some("sen"));
    assert_eq!(
        jq.sentinel.password.as_ref().map(|p| p.expose_secret()),
        Some("s3cret")
    );
    assert_eq!(jq.min_replicas_acked, 1);
    assert!(!format!("{s:?}").contains("s3cret"));
}

#[test]
fn sentinel_needs_addresses_and_its_password_stays_out_of_files() {
    let err = load(
        "cache_server: {redis: {jobqueue: {sentinel: {master_name: jq}}}}\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cache_server.redis.jobqueue.sentinel.addrs"),
        "{err}"
    );
    let err = load(
        "cache_server: {redis: {jobqueue: {sentinel: {master_name: jq, addrs: [nope]}}}}\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`nope` is not host:port"), "{err}");
    let err = load(
        "cache_server: {redis: {jobqueue: {sentinel: {password: pw}}}}\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("APP__CACHE_SERVER__REDIS__JOBQUEUE__SENTINEL__PASSWORD"),
        "{err}"
    );
}
