//! The Redis side: one EVALSHA decides a batch of clients of one bucket, each client's minute and
//! hour windows atomically. Refused units are not counted. The script is reloaded once on
//! NOSCRIPT (normal after a restart or failover).

use crate::redis_cluster::{RedisCluster, RedisError};
use fred::interfaces::LuaInterface;
use fred::types::Key;
use std::sync::LazyLock;
use std::time::Duration;

/// KEYS: minute and hour counter of each client. ARGV: minute ttl (s), hour ttl (s), then per
/// client: minute limit, hour limit, units wanted. Returns per client {units allowed, minute
/// count, hour count}.
pub(crate) const SCRIPT: &str = r"
local out = {}
for i = 1, #KEYS / 2 do
  local mk, hk, a = KEYS[2 * i - 1], KEYS[2 * i], 3 * i
  local m = tonumber(redis.call('GET', mk) or '0')
  local h = tonumber(redis.call('GET', hk) or '0')
  local allowed = math.min(tonumber(ARGV[a + 2]), tonumber(ARGV[a]) - m, tonumber(ARGV[a + 1]) - h)
  if allowed > 0 then
    m = redis.call('INCRBY', mk, allowed)
    if m == allowed then redis.call('EXPIRE', mk, ARGV[1]) end
    h = redis.call('INCRBY', hk, allowed)
    if h == allowed then redis.call('EXPIRE', hk, ARGV[2]) end
  else
    allowed = 0
  end
  out[3 * i - 2], out[3 * i - 1], out[3 * i] = allowed, m, h
end
return out
";

static SCRIPT_SHA: LazyLock<String> = LazyLock::new(|| fred::util::sha1_hash(SCRIPT));

/// One bounded EVALSHA; `keys` and `args` as described at [`SCRIPT`].
pub(crate) async fn eval(
    cluster: &RedisCluster,
    budget: Duration,
    keys: Vec<Key>,
    args: Vec<i64>,
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
