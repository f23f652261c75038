//! Single enqueues under concurrency, against real Redis: they are stored together in fewer
//! script calls than jobs (batcher.rs), with the same results as one call each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cacheserver_config::{AppEnv, Settings};
use cacheserver_jobqueue::{JobQueue, JobQueueError, NewJob};
use cacheserver_testkit::RedisServer;
use futures::future::join_all;
use std::collections::{HashMap, HashSet};
use std::path::Path;

fn queue(redis: &RedisServer) -> JobQueue {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let vars = HashMap::from([(
        "APP__CACHE_SERVER__REDIS__JOBQUEUE__ADDR".to_owned(),
        redis.addr(),
    )]);
    let s = Settings::load_from(&root, AppEnv::Test, Some(vars)).unwrap();
    JobQueue::new(&s.cache_server.redis.jobqueue, &s.jobqueue).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_single_enqueues_share_script_calls_and_all_are_stored() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    q.ping().await.unwrap();
    let before = redis.script_calls();
    let n = 500;
    let results = join_all((0..n).map(|i| q.enqueue(NewJob::delay_print(format!("m{i}"))))).await;
    let calls = redis.script_calls() - before;
    let ids: HashSet<String> = results.into_iter().map(|r| r.unwrap().job_id).collect();
    assert_eq!(ids.len(), n, "every job stored under its own id");
    // Due now: they wait in the priority-ordered ready set, not among the delayed ones.
    assert_eq!(
        redis.cli(&["ZCARD", "dm-jobqueue:ready"]).trim(),
        n.to_string()
    );
    assert_eq!(redis.cli(&["ZCARD", "dm-jobqueue:delayed"]).trim(), "0");
    assert!(
        calls < n as u64 / 2,
        "{n} enqueues took {calls} script calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_with_one_unique_key_store_one_job() {
    let redis = RedisServer::start();
    let q = queue(&redis);
    let results = join_all(
        (0..50).map(|i| q.enqueue(NewJob::delay_print(format!("u{i}")).unique("same", None))),
    )
    .await;
    let stored: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|j| j.job_id.clone()))
        .collect();
    assert_eq!(stored.len(), 1, "exactly one stored: {results:?}");
    for r in &results {
        match r {
            Ok(_) => {}
            Err(JobQueueError::Duplicate { job_id }) => assert_eq!(job_id, &stored[0]),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
}
