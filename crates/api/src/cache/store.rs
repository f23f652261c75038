//! The Redis side: the only code that knows the cache's keys and scripts. A route's keys share
//! the hash tag `{<path_prefix>}` (one slot per route), so one script sees an entry, its lock and
//! the route's tag generations:
//! - `rc:{<route>}:e:<sha1>`: the entry, `<generations>\n<entry bytes>`, `PX` = ttl + stale_ttl;
//! - `rc:{<route>}:l:<sha1>`: the refresh lock (`SET NX PX`, a random token);
//! - `rc:{<route>}:g:<tag>`: the tag's generation (a ULID, set on invalidation).
//!
//! An entry is served only while the generations it was stored with are still current, so
//! invalidating a tag is one `SET` per route carrying it, whatever the number of entries
//! (Varnish's ban / Souin's surrogate keys without a SCAN). A missing generation (never set,
//! expired or evicted under `volatile-lru`) is created with a fresh value by the next lookup, so
//! an entry stored under an older one can never match again: losing a generation costs misses,
//! never a stale answer.

use super::entry::Entry;
use crate::redis_cluster::{ClusterScript, RedisCluster, RedisError};
use actix_web::web::Bytes;
use fred::types::{Key, Value};
use std::sync::Arc;
use std::time::Duration;

/// KEYS: entry, lock, tag generations. ARGV: stale window (ms), `1` to skip the entry (refresh),
/// lock token, lock time (ms), a fresh generation, how long generations are kept (ms). Returns
/// {entry or nil, entry PTTL, 1 if the lock was taken, generations}. The lock is taken when there
/// is no fresh entry.
const LOOKUP: &str = r"
local gens = {}
for i = 3, #KEYS do
  local g = redis.call('GET', KEYS[i])
  if not g then
    g = ARGV[5]
    redis.call('SET', KEYS[i], g, 'PX', ARGV[6])
  end
  gens[#gens + 1] = g
end
local gen = table.concat(gens, ',')
local entry, pttl = false, -2
if ARGV[2] ~= '1' then
  local v = redis.call('GET', KEYS[1])
  if v then
    local nl = string.find(v, '\n', 1, true)
    if nl and string.sub(v, 1, nl - 1) == gen then
      -- Whole: the caller drops the generations line (no copy of the body in Lua).
      entry = v
      pttl = redis.call('PTTL', KEYS[1])
    end
  end
end
local locked = 0
if (not entry) or pttl <= tonumber(ARGV[1]) then
  if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then locked = 1 end
end
return {entry, pttl, locked, gen}
";

/// KEYS: entry, lock, tag generations, then two markers when ARGV[5] is `1`. ARGV: generations
/// seen by the lookup, entry bytes, PX, lock token (may be empty), marker flag. Stores only if no
/// tag was invalidated since the lookup (a response computed before a write must not outlive it),
/// then releases the lock if it is still ours. The markers (keys of their own, one under each
/// tracked prefix, set and deleted at once) name the tracking pushes of this store: the local
/// tier keeps its copy from those pushes on (see `local`).
const STORE: &str = r"
local last = #KEYS
if ARGV[5] == '1' then last = last - 2 end
local gens = {}
for i = 3, last do gens[#gens + 1] = redis.call('GET', KEYS[i]) or '' end
local stored = 0
if table.concat(gens, ',') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1] .. '\n' .. ARGV[2], 'PX', ARGV[3])
  for i = last + 1, #KEYS do
    redis.call('SET', KEYS[i], '1', 'PX', 60000)
    redis.call('DEL', KEYS[i])
  end
  stored = 1
end
if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
return stored
";

/// KEYS: generation keys of one route. ARGV: new generation, PX.
const INVALIDATE: &str = r"
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2]) end
return #KEYS
";

static LOOKUP_SCRIPT: ClusterScript = ClusterScript::new("cache lookup", LOOKUP);
static STORE_SCRIPT: ClusterScript = ClusterScript::new("cache store", STORE);
static INVALIDATE_SCRIPT: ClusterScript = ClusterScript::new("cache invalidate", INVALIDATE);

/// The keys of one request's entry.
#[derive(Debug, Clone)]
pub(crate) struct EntryKeys {
    keys: Vec<Key>,
    /// The route pattern the entry answers (`/api/queues/{queue}/history`), when actix knows
    /// one: answers from the cache carry it to the request metrics (see [`crate::http_metrics::MatchedRoute`]).
    pattern: Option<Arc<str>>,
}

impl EntryKeys {
    pub fn new(route: &str, hash: &str, tags: &[String], pattern: Option<Arc<str>>) -> Self {
        let mut keys = Vec::with_capacity(2 + tags.len());
        keys.push(entry_key(route, hash).into());
        keys.push(format!("rc:{{{route}}}:l:{hash}").into());
        keys.extend(tags.iter().map(|t| generation_key(route, t).into()));
        Self { keys, pattern }
    }

    pub fn pattern(&self) -> Option<&Arc<str>> {
        self.pattern.as_ref()
    }

    /// The entry's key (tests and `redis-cli` users look for it).
    pub fn entry(&self) -> String {
        self.entry_key().to_owned()
    }

    pub fn entry_key(&self) -> &str {
        self.keys.first().and_then(Key::as_str).unwrap_or_default()
    }

    /// Keys of its own for one store of this entry: same slot, one under each tracked prefix.
    pub fn markers(&self) -> Markers {
        let entry = self.entry_key();
        let id = ulid::Ulid::new();
        // `rc:{<route>}:e:<sha1>`: the hash has no `:`.
        let route = entry.rfind(":e:").map_or(entry, |end| &entry[..end]);
        Markers {
            entry: format!("{entry}~{id}"),
            generation: format!("{route}:g:~own:{id}"),
        }
    }

    /// The keys of the tag generations the entry is stored under.
    pub fn generation_keys(&self) -> impl Iterator<Item = &[u8]> {
        self.keys.iter().skip(2).map(Key::as_bytes)
    }
}

/// The marker keys one store sets and deletes at once: the tracking pushes naming them are the
/// ones of that store (see `local`).
#[derive(Debug, Clone)]
pub(crate) struct Markers {
    pub entry: String,
    pub generation: String,
}

/// The key of the entry `hash` of `route` (the local tier looks copies up by it).
pub(crate) fn entry_key(route: &str, hash: &str) -> String {
    // Built on every hit: pushes, not `format!` (whose machinery cost as much as the lookup).
    let mut key = String::with_capacity(route.len() + hash.len() + 8);
    for part in ["rc:{", route, "}:e:", hash] {
        key.push_str(part);
    }
    key
}

fn generation_key(route: &str, tag: &str) -> String {
    format!("rc:{{{route}}}:g:{tag}")
}

/// The keys of `route` whose changes must drop local copies (the local tier tracks them): its
/// entries (overwritten, expired, evicted) and its tag generations (invalidated). Not its locks.
pub(crate) fn tracked_prefixes(route: &str) -> [String; 2] {
    [format!("rc:{{{route}}}:e:"), format!("rc:{{{route}}}:g:")]
}

/// Whether `key` is a tag generation (else an entry).
pub(crate) fn is_generation_key(key: &[u8]) -> bool {
    // `rc:{<route>}:g:<tag>`: the route has no `}` (config validation).
    key.iter()
        .position(|&b| b == b'}')
        .is_some_and(|end| key.get(end + 1..end + 4) == Some(b":g:".as_slice()))
}

/// Whether `key` is one of [`Markers`] (never an entry's key or generation).
pub(crate) fn is_marker(key: &[u8]) -> bool {
    key.iter().position(|&b| b == b'}').is_some_and(|end| {
        let rest = key.get(end + 1..).unwrap_or_default();
        rest.starts_with(b":g:~own:") || (rest.starts_with(b":e:") && rest.contains(&b'~'))
    })
}

/// The generation keys `invalidate` sets for `tags` of `route` (dropped locally at once).
pub(crate) fn generation_keys(route: &str, tags: &[String]) -> Vec<String> {
    tags.iter().map(|t| generation_key(route, t)).collect()
}

/// What the cluster holds for a request.
pub(crate) struct Lookup {
    /// The entry (not yet checked against `Vary`) and its remaining life in ms.
    pub entry: Option<(Entry, i64)>,
    /// This request holds the refresh lock.
    pub locked: bool,
    /// Tag generations to store a refreshed entry with.
    pub generations: Bytes,
}

#[derive(Clone)]
pub(crate) struct Store {
    redis: RedisCluster,
    budget: Duration,
    /// How long a tag generation is kept (far longer than any entry lives).
    keep_generations: Duration,
}

impl Store {
    pub fn new(redis: RedisCluster, budget: Duration, keep_generations: Duration) -> Self {
        Self {
            redis,
            budget,
            keep_generations,
        }
    }

    pub async fn lookup(
        &self,
        keys: &EntryKeys,
        stale: Duration,
        refresh: bool,
        token: &str,
        lock: Duration,
    ) -> Result<Lookup, RedisError> {
        let args: Vec<Value> = vec![
            ms(stale).into(),
            if refresh { "1" } else { "0" }.into(),
            token.into(),
            ms(lock).max(1).into(),
            ulid::Ulid::new().to_string().into(),
            ms(self.keep_generations).into(),
        ];
        let reply = self.eval(&LOOKUP_SCRIPT, keys.keys.clone(), args).await?;
        let Value::Array(mut parts) = reply else {
            return Err(unexpected());
        };
        parts.truncate(4);
        let generations = match parts.pop() {
            Some(Value::Bytes(b)) => b,
            Some(Value::String(s)) => s.into_inner(),
            _ => return Err(unexpected()),
        };
        let locked = parts.pop().and_then(|v| v.as_i64()) == Some(1);
        let pttl = parts.pop().and_then(|v| v.as_i64()).unwrap_or(-2);
        let stored = match parts.pop() {
            Some(Value::Bytes(b)) => Some(b),
            Some(Value::String(s)) => Some(s.into_inner()),
            _ => None,
        };
        let entry = stored.and_then(|b| {
            let line = b.iter().position(|&c| c == b'\n')?;
            Entry::decode(b.slice(line + 1..))
        });
        Ok(Lookup {
            entry: entry.map(|e| (e, pttl)),
            locked,
            generations,
        })
    }

    /// Store `entry` for `lifetime` unless a tag changed since `generations`; releases `token`'s
    /// lock; touches `markers` (from [`EntryKeys::markers`]) when it stores. Returns whether it
    /// was stored.
    pub async fn store(
        &self,
        keys: &EntryKeys,
        generations: Bytes,
        entry: Vec<u8>,
        lifetime: Duration,
        token: &str,
        markers: Option<&Markers>,
    ) -> Result<bool, RedisError> {
        let args: Vec<Value> = vec![
            Value::Bytes(generations),
            Value::Bytes(entry.into()),
            ms(lifetime).max(1).into(),
            token.into(),
            if markers.is_some() { "1" } else { "0" }.into(),
        ];
        let mut all = keys.keys.clone();
        if let Some(m) = markers {
            all.push(m.entry.as_str().into());
            all.push(m.generation.as_str().into());
        }
        let reply = self.eval(&STORE_SCRIPT, all, args).await?;
        Ok(reply.as_i64() == Some(1))
    }

    /// Release `token`'s lock without storing: a generation that never matches stores nothing.
    pub async fn release(&self, keys: &EntryKeys, token: &str) -> Result<(), RedisError> {
        self.store(
            keys,
            Bytes::from_static(b"-"),
            Vec::new(),
            Duration::from_millis(1),
            token,
            None,
        )
        .await
        .map(drop)
    }

    /// How long one call may take.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Give `tags` of `route` a new generation.
    pub async fn invalidate(&self, route: &str, tags: &[String]) -> Result<(), RedisError> {
        let keys: Vec<Key> = tags
            .iter()
            .map(|t| generation_key(route, t).into())
            .collect();
        let args: Vec<Value> = vec![
            ulid::Ulid::new().to_string().into(),
            ms(self.keep_generations).into(),
        ];
        self.eval(&INVALIDATE_SCRIPT, keys, args).await?;
        Ok(())
    }

    /// One bounded EVALSHA (the Redis layer loads the script on NOSCRIPT).
    async fn eval(
        &self,
        script: &'static ClusterScript,
        keys: Vec<Key>,
        args: Vec<Value>,
    ) -> Result<Value, RedisError> {
        self.redis
            .eval_script(self.budget, script, keys, args)
            .await
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn unexpected() -> RedisError {
    RedisError::Redis(fred::error::Error::new(
        fred::error::ErrorKind::Parse,
        "unexpected reply from the cache script",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_kinds() {
        let keys = EntryKeys::new("/api/queues", "abc", &["queue:a".into()], None);
        assert_eq!(keys.entry_key(), "rc:{/api/queues}:e:abc");
        let gens: Vec<&[u8]> = keys.generation_keys().collect();
        assert_eq!(gens, vec![b"rc:{/api/queues}:g:queue:a".as_slice()]);
        assert!(is_generation_key(gens[0]));
        assert!(!is_generation_key(keys.entry_key().as_bytes()));
        let [e, g] = tracked_prefixes("/api/queues");
        assert!(keys.entry_key().starts_with(&e));
        assert!(gens[0].starts_with(g.as_bytes()));
        let m = keys.markers();
        assert!(m.entry.starts_with(&e) && m.generation.starts_with(&g));
        assert!(is_marker(m.entry.as_bytes()) && is_marker(m.generation.as_bytes()));
        assert!(!is_marker(keys.entry_key().as_bytes()) && !is_marker(gens[0]));
    }
}
