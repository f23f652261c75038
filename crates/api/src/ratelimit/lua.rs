//! The Redis side: one EVALSHA decides a batch of clients of one bucket, each client's minute and
//! hour windows atomically. A bucket's counts live in two hashes, one per window (`keys`), with a
//! field per client: two `HINCRBY` per client and one `EXPIRE` per hash and call, where a pair of
//! keys per client cost six commands per client. Refused units are not counted. The script is reloaded once on NOSCRIPT
//! (normal after a restart or failover).

use crate::redis_cluster::{RedisCluster, RedisError};
use fred::interfaces::LuaInterface;
use fred::types::{Key, Value};
use std::sync::LazyLock;
use std::time::Duration;

/// KEYS: the bucket's minute hash and hour hash. ARGV: minute ttl (s), hour ttl (s), then per
/// client: field, minute limit, hour limit, units wanted. Returns per client {units allowed,
/// minute count, hour count}. Counts first, then units beyond a limit are given back: an
/// allowed client (the common case) costs two commands.
pub(crate) const SCRIPT: &str = r"
local mk, hk = KEYS[1], KEYS[2]
local out = {}
for i = 0, (#ARGV - 2) / 4 - 1 do
  local a = 3 + 4 * i
  local field, want = ARGV[a], tonumber(ARGV[a + 3])
  local m = redis.call('HINCRBY', mk, field, want)
  local h = redis.call('HINCRBY', hk, field, want)
  local allowed = math.min(want, tonumber(ARGV[a + 1]) - m + want, tonumber(ARGV[a + 2]) - h + want)
  if allowed < want then
    if allowed < 0 then allowed = 0 end
    m = redis.call('HINCRBY', mk, field, allowed - want)
    h = redis.call('HINCRBY', hk, field, allowed - want)
  end
  out[3 * i + 1], out[3 * i + 2], out[3 * i + 3] = allowed, m, h
end
redis.call('EXPIRE', mk, ARGV[1], 'NX')
redis.call('EXPIRE', hk, ARGV[2], 'NX')
return out
";

static SCRIPT_SHA: LazyLock<String> = LazyLock::new(|| fred::util::sha1_hash(SCRIPT));

/// One bounded EVALSHA; `keys` and `args` as described at [`SCRIPT`].
pub(crate) async fn eval(
    cluster: &RedisCluster,
    budget: Duration,
    keys: Vec<Key>,
    args: Vec<Value>,
) -> Result<Vec<i64>, RedisError> {
    cluster
        .call(budget, |c| async move {
            match c
                .evalsha(SCRIPT_SHA.as_str(), keys.clone(), args.clone())
                .await
            {
                Err(e) if e.details().starts_with("NOSCRIPT") => {
                    tracing::info!(
                        "rate limit script not loaded (restart or failover); loading it"
                    );
                    c.script_load_cluster::<(), _>(SCRIPT).await?;
                    c.evalsha(SCRIPT_SHA.as_str(), keys, args).await
                }
                other => other,
            }
        })
        .await
}
