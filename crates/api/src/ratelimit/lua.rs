//! The Redis backend: one EVALSHA decides both windows atomically.
//!
//! Keys share the client's hash tag so both live on one slot: `rl:{<ip>}:m:<minute>` and
//! `rl:{<ip>}:h:<hour>`. Refused requests are not counted. `units` lets one call decide a batch of
//! concurrent requests of the same client (see `coalesce`).

use super::coalesce::Coalescer;
use super::deny_cache::DenyCache;
use super::lease::Leases;
use super::{Backend, Counts, Decision, Limits, Windows};
use crate::redis_cluster::{RedisCluster, RedisError};
use fred::bytes::Bytes;
use fred::interfaces::LuaInterface;
use fred::types::Key;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// KEYS: minute counter, hour counter. ARGV: minute limit, hour limit, minute ttl (s), hour ttl (s),
/// units wanted. Returns {units allowed, minute count, hour count}.
pub(crate) const SCRIPT: &str = r"
local m = tonumber(redis.call('GET', KEYS[1]) or '0')
local h = tonumber(redis.call('GET', KEYS[2]) or '0')
local allowed = math.min(tonumber(ARGV[5]), tonumber(ARGV[1]) - m, tonumber(ARGV[2]) - h)
if allowed > 0 then
  m = redis.call('INCRBY', KEYS[1], allowed)
  if m == allowed then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
  h = redis.call('INCRBY', KEYS[2], allowed)
  if h == allowed then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
else
  allowed = 0
end
return {allowed, m, h}
";

static SCRIPT_SHA: LazyLock<String> = LazyLock::new(|| fred::util::sha1_hash(SCRIPT));

/// What one Lua call decided.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallOutcome {
    /// Units allowed (≤ units asked for).
    pub allowed: u64,
    /// Counts in Redis after the call.
    pub counts: Counts,
    /// The windows the call counted in.
    pub windows: Windows,
}

pub(crate) type CallResult = Result<CallOutcome, Arc<RedisError>>;

/// `rl:{<ip>}:m:<minute>` and `rl:{<ip>}:h:<hour>`, both slices of one buffer.
fn keys(client: IpAddr, windows: Windows) -> (Key, Key) {
    use std::fmt::Write as _;
    let mut buf = String::with_capacity(112);
    let _ = write!(buf, "rl:{{{client}}}:m:{}", windows.minute);
    let split = buf.len();
    let _ = write!(buf, "rl:{{{client}}}:h:{}", windows.hour);
    let bytes = Bytes::from(buf);
    (
        Key::from(bytes.slice(..split)),
        Key::from(bytes.slice(split..)),
    )
}

#[derive(Clone)]
pub(crate) struct RedisLimiter {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    cluster: RedisCluster,
    limits: Limits,
    budget: Duration,
    denied: DenyCache,
    coalescer: Coalescer,
    leases: Leases,
}

impl RedisLimiter {
    pub fn new(cluster: RedisCluster, limits: Limits, budget: Duration) -> Self {
        let inner = Inner {
            cluster,
            limits,
            budget,
            denied: DenyCache::default(),
            coalescer: Coalescer::default(),
            leases: Leases::default(),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    pub fn is_usable(&self) -> bool {
        self.inner.cluster.is_connected()
    }

    /// A decision without Redis: a spare unit of a hot client, or a known exhausted window.
    pub fn check_local(&self, client: IpAddr, windows: Windows) -> Option<Decision> {
        let inner = &self.inner;
        if let Some(taken) = inner.leases.take(client, windows) {
            if let Some(units) = taken.refill {
                self.refill(client, units);
            }
            return Some(
                inner
                    .limits
                    .decision(true, taken.counts, windows, Backend::Redis),
            );
        }
        inner.denied.lookup(client, windows, inner.limits)
    }

    /// Take the next spare units of a hot client in the background, before it runs out.
    fn refill(&self, client: IpAddr, units: u64) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            match inner.call(client, units).await {
                Ok(o) => inner.leases.store(client, o.windows, o.allowed, o.counts),
                Err(_) => inner.leases.refill_failed(client),
            }
        });
    }

    /// A decision by Redis (fails fast when no connection is up).
    pub async fn check_remote(
        &self,
        client: IpAddr,
        windows: Windows,
    ) -> Result<Decision, Arc<RedisError>> {
        let inner = &self.inner;
        if !inner.cluster.is_connected() {
            return Err(Arc::new(RedisError::NotConnected));
        }
        let (allowed, counts) = Coalescer::decide(self.inner.clone(), client).await?;
        let decision = inner
            .limits
            .decision(allowed, counts, windows, Backend::Redis);
        inner.denied.remember(client, windows, counts, inner.limits);
        Ok(decision)
    }
}

impl Inner {
    pub(crate) fn coalescer(&self) -> &Coalescer {
        &self.coalescer
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    pub(crate) fn leases(&self) -> &Leases {
        &self.leases
    }

    /// One bounded EVALSHA for `units` requests of `client`; reloads the script once on NOSCRIPT.
    pub(crate) async fn call(&self, client: IpAddr, units: u64) -> CallResult {
        let windows = Windows::now();
        // Keys are refcounted byte slices of one buffer and args plain integers, so the retry
        // after NOSCRIPT clones pointers, not strings (one key allocation per call, was 2 + clones).
        let keys = keys(client, windows);
        let limits = self.limits;
        let args: [i64; 5] = [
            limits.per_minute,
            limits.per_hour,
            windows.minute_reset + 1,
            windows.hour_reset + 1,
            units,
        ]
        .map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        let reply: Vec<i64> = self
            .cluster
            .call(self.budget, |c| async move {
                match c
                    .evalsha(SCRIPT_SHA.as_str(), keys.clone(), args.to_vec())
                    .await
                {
                    Err(e) if e.details().starts_with("NOSCRIPT") => {
                        tracing::info!(
                            "rate limit script not loaded (restart or failover); loading it"
                        );
                        c.script_load_cluster::<(), _>(SCRIPT).await?;
                        c.evalsha(SCRIPT_SHA.as_str(), keys, args.to_vec()).await
                    }
                    other => other,
                }
            })
            .await
            .map_err(Arc::new)?;
        match reply.as_slice() {
            &[allowed, minute, hour] => {
                let to_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
                let counts = Counts {
                    minute: to_u64(minute),
                    hour: to_u64(hour),
                };
                Ok(CallOutcome {
                    allowed: to_u64(allowed),
                    counts,
                    windows,
                })
            }
            _ => Err(Arc::new(RedisError::Config(format!(
                "unexpected rate limit reply {reply:?}"
            )))),
        }
    }
}
