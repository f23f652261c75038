//! Everything the worker borrows from apalis-redis 1.0.0's internals, with the upstream causes
//! (github.com/apalis-dev/apalis-redis; the full list of workarounds and the key layout is in
//! `cacheserver_jobqueue::store`):
//! - its `RedisStorage` still registers the worker, beats its heart and re-queues orphans, with a
//!   short heartbeat so a SIGKILLed worker's jobs wait seconds, not 300 s (apalis#504), and no
//!   pub/sub events (nobody listens; a PUBLISH per job). Leases and acks are ours (`backend.rs`,
//!   `acks.rs`).
//! - a Redis error ends the apalis worker and the process would exit 0 (apalis-redis#76): its
//!   errors reach us as text only, classified here ([`worker_error`]); `supervisor.rs` restarts.
//! - `register_worker.lua` writes the global key `core:apalis:queues:list` outside KEYS: a
//!   least-privilege ACL user needs it (named in the misconfiguration message, [`SCRIPTS`]).

use apalis_redis::{Config, RedisStorage};
use cacheserver_jobqueue::store::{HEARTBEAT_INTERVAL, ORPHAN_AFTER};
use cacheserver_jobqueue::JobQueueError;
use cacheserver_redis::classify;
use redis::aio::ConnectionManager;

/// apalis-redis config: short heartbeats, no pub/sub events, no locks or results (ours).
pub fn config(queue: &str) -> Config {
    Config::default()
        .queue(queue)
        .heartbeat_interval(HEARTBEAT_INTERVAL)
        .missed_heartbeats((ORPHAN_AFTER.as_secs() / HEARTBEAT_INTERVAL.as_secs().max(1)) as usize)
        .emit_events(false)
        .persist_results(false)
        .lock_tasks(false)
}

/// The apalis storage for the worker, on its own connection.
pub fn storage<Args>(conn: ConnectionManager, queue: &str, batch: usize) -> RedisStorage<Args> {
    let config = config(queue).batch_size(batch.max(1));
    RedisStorage::new(conn).with_config(config)
}

/// SHA1 of apalis-redis 1.0.0's scripts (`sha1sum lua/*.lua`), to name a script Redis refused.
pub const SCRIPTS: [(&str, &str); 10] = [
    (
        "0d5fbce91e1dcff1121ece41f7169da3c0e39194",
        "register_worker.lua (writes core:apalis:queues:list)",
    ),
    ("5c1d697dfa0d68de2954ceefa235f87162ecc839", "keep_alive.lua"),
    ("f053fd9b41b61a2d32b8b7d8dba3f1a96e3aa6e1", "fetch_next.lua"),
    (
        "f7ff133460a6cd6a739e294b0f4f7a584599f1fc",
        "acquire_leases.lua",
    ),
    (
        "d30754a560d0f0ae884decdcb986ceb755020d07",
        "renew_leases.lua",
    ),
    (
        "069de2f0e15b5d3b604f2282151a8bed17d0ea52",
        "release_leases.lua",
    ),
    (
        "8484d0d3ad46723dcfb37f839d4ca67fca29d664",
        "handle_results.lua",
    ),
    (
        "6b6f3808de063cd4ca38e9e11b6968a6cc826069",
        "reenqueue_orphaned.lua",
    ),
    ("3db3e4f4b96d92c5dd8874e33f1dd4c0152c0682", "batch_push.lua"),
    (
        "49b411930b0ce562b5aa77eeb765516635a88ae8",
        "fetch_by_id.lua",
    ),
];

/// An error that ended the apalis worker (text only: apalis wraps Redis errors in its own): a
/// misconfiguration, else an outage.
pub fn worker_error(e: &impl std::fmt::Display) -> JobQueueError {
    let text = e.to_string();
    let script = SCRIPTS
        .iter()
        .find(|(sha, _)| text.contains(sha))
        .map(|(_, name)| format!("apalis-redis' {name}"));
    match classify::misconfiguration_in(classify::JOBQUEUE, &text, false, false, script.as_deref())
    {
        Some(why) => JobQueueError::Misconfigured(why),
        None => JobQueueError::Unavailable(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cacheserver_jobqueue::store::Keys;

    #[test]
    fn classifies_misconfiguration_by_the_reply() {
        let noperm = worker_error(&"ResponseError: The user executing the script can't access at least one of the keys mentioned in the command arguments script: 0d5fbce91e1dcff1121ece41f7169da3c0e39194, on @user_script:26.");
        assert!(
            matches!(noperm, JobQueueError::Misconfigured(ref m) if m.contains("register_worker.lua")),
            "{noperm}"
        );
        assert!(matches!(
            worker_error(&"WRONGPASS invalid username-password pair"),
            JobQueueError::Misconfigured(_)
        ));
        assert!(matches!(
            worker_error(&"invalid peer certificate: UnknownIssuer"),
            JobQueueError::Misconfigured(_)
        ));
        assert!(matches!(
            worker_error(&"Connection refused (os error 111)"),
            JobQueueError::Unavailable(_)
        ));
    }

    /// The store names apalis-redis' keys without linking it: they must be the library's.
    #[test]
    fn the_store_uses_apalis_redis_key_names() {
        let ours = Keys::new("q").apalis;
        let theirs = config(ours.namespace());
        assert_eq!(ours.active_jobs_list(), theirs.active_jobs_list());
        assert_eq!(ours.workers_set(), theirs.workers_set());
        assert_eq!(ours.dead_jobs_set(), theirs.dead_jobs_set());
        assert_eq!(ours.done_jobs_set(), theirs.done_jobs_set());
        assert_eq!(ours.inflight_jobs_set(), theirs.inflight_jobs_set());
        assert_eq!(ours.job_data_hash(), theirs.job_data_hash());
        assert_eq!(ours.job_meta_hash(), theirs.job_meta_hash());
        assert_eq!(ours.scheduled_jobs_set(), theirs.scheduled_jobs_set());
    }
}
