//! Settings and clients every module builds the same way.
#![allow(clippy::unwrap_used)]

use cacheserver_config::{AppEnv, Settings};
use cacheserver_jobqueue::JobQueue;
use cacheserver_testkit::RedisServer;
use std::collections::HashMap;
use std::path::PathBuf;

/// The repository's `config/` directory.
pub fn config_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

/// A copy of the repo's `config/` whose test environment sets `jobqueue.<key>` to `yaml` (the
/// lines under the key, indented by four spaces), e.g. declared queues or schedules.
pub fn config_with_jobqueue(key: &str, yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    std::fs::create_dir_all(&base).unwrap();
    for file in ["cacheserver.yaml", "config.yaml"] {
        std::fs::copy(config_root().join("base").join(file), base.join(file)).unwrap();
    }
    let test = dir.path().join("test");
    std::fs::create_dir_all(&test).unwrap();
    std::fs::write(
        test.join("config.yaml"),
        format!("logging:\n  level: warn\njobqueue:\n  {key}:\n{yaml}"),
    )
    .unwrap();
    dir
}

/// The test environment's settings for a jobqueue Redis at `addr`, with `vars` on top.
pub fn settings_at<K: Into<String>, V: Into<String>>(
    addr: &str,
    vars: impl IntoIterator<Item = (K, V)>,
) -> Settings {
    let mut all: HashMap<String, String> = HashMap::new();
    all.insert(
        "APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR".into(),
        addr.into(),
    );
    all.insert("APP__JOBQUEUE__ENQUEUE_TIMEOUT".into(), "500ms".into());
    all.extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
    Settings::load_from(&config_root(), AppEnv::Test, Some(all)).unwrap()
}

/// The test environment's settings for `redis`, with `extra` on top.
pub fn settings(redis: &RedisServer, extra: &[(&str, &str)]) -> Settings {
    settings_at(&redis.addr(), extra.iter().copied())
}

/// A client of the job queue on `redis`.
pub fn queue(redis: &RedisServer) -> JobQueue {
    let s = settings(redis, &[]);
    JobQueue::new(&s.cache_server.redis.jobqueue, &s.jobqueue).unwrap()
}
