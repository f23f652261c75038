//! The Redis side: one EVALSHA of `lua/rate_limit.lua` decides a batch of clients of one bucket,
//! each client's minute and hour windows atomically. A bucket's counts live in two hashes, one per
//! window (`keys`), with a field per client: two `HINCRBY` per client and one `EXPIRE` per hash
//! and call, where a pair of keys per client cost six commands per client. Refused units are not
//! counted. The script is reloaded once on NOSCRIPT (normal after a restart or failover).

use crate::redis_cluster::{ClusterScript, RedisCluster, RedisError};
use fred::types::{Key, Value};
use std::time::Duration;

/// KEYS: the bucket's minute hash and hour hash. ARGV: minute ttl (s), hour ttl (s), then per
/// client: field, minute limit, hour limit, units wanted. Returns per client {units allowed,
/// minute count, hour count}. Counts first, then units beyond a limit are given back: an
/// allowed client (the common case) costs two commands.
pub(crate) const SCRIPT: &str = include_str!("../../lua/rate_limit.lua");

static SCRIPT_RUN: ClusterScript = ClusterScript::new("rate_limit.lua", SCRIPT);

/// One bounded EVALSHA; `keys` and `args` as described at [`SCRIPT`].
pub(crate) async fn eval(
    cluster: &RedisCluster,
    budget: Duration,
    keys: Vec<Key>,
    args: Vec<Value>,
) -> Result<Vec<i64>, RedisError> {
    cluster.eval_script(budget, &SCRIPT_RUN, keys, args).await
}
