//! The store's connections: a small pool of lazily opened redis-rs connection managers (built
//! by the Redis layer, `cacheserver-redis`), every call bounded by a budget, reconnects counted,
//! and with Sentinel a connection that failed is dropped so the next one goes to the new master.

use super::Keys;
use crate::error::JobQueueError;
use cacheserver_config::SingleRedisSettings;
use redis::aio::ConnectionManager;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Budget for reads and admin calls (ping, status, stats, retry, delete).
const CALL_TIMEOUT_CAP: Duration = Duration::from_secs(2);

/// The connections, and the keys of the default queue and of any other; cheap to clone. The client, the inspector and the worker
/// all reach Redis through it.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    redis: SingleRedisSettings,
    /// The default queue's keys.
    keys: Keys,
    call_timeout: Duration,
    /// Multiplexed connections, created lazily; `None` after a chaos reset until next use.
    slots: Vec<Mutex<Option<ConnectionManager>>>,
    next: AtomicUsize,
    /// Whether the last call reached Redis.
    connected: AtomicBool,
    /// Whether any call ever reached Redis: the first connection is not a reconnection.
    ever_connected: AtomicBool,
    /// Times a call reached Redis again after calls that did not (or after a chaos reset).
    reconnects: AtomicU64,
}

impl Store {
    /// The store on the Redis of `redis`, `default_queue` being the queue whose keys keep the
    /// untagged prefix of earlier versions, each queue's `events` stream capped near
    /// `events_max_len` entries (0: no events; `jobqueue.events_max_len`). Never waits for
    /// Redis; checks the address (and starts following the Sentinel master) now, so a typo
    /// fails at start-up.
    pub fn new(
        redis: &SingleRedisSettings,
        default_queue: &str,
        events_max_len: u64,
    ) -> Result<Self, JobQueueError> {
        cacheserver_redis::single::validate(redis)?;
        let pool = redis.pool_size.clamp(1, 8) as usize;
        let mut keys = Keys::of(default_queue, default_queue);
        keys.events_max_len = events_max_len;
        Ok(Self {
            inner: Arc::new(Inner {
                redis: redis.clone(),
                keys,
                call_timeout: redis.read_timeout.min(CALL_TIMEOUT_CAP),
                slots: (0..pool).map(|_| Mutex::new(None)).collect(),
                next: AtomicUsize::new(0),
                connected: AtomicBool::new(false),
                ever_connected: AtomicBool::new(false),
                reconnects: AtomicU64::new(0),
            }),
        })
    }

    /// The default queue's keys.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The keys of `queue` (any queue; the name is not checked here).
    pub fn keys_of(&self, queue: &str) -> Keys {
        if queue == self.inner.keys.queue {
            self.inner.keys.clone()
        } else {
            let mut keys = Keys::of(queue, &self.inner.keys.queue);
            keys.events_max_len = self.inner.keys.events_max_len;
            keys
        }
    }

    /// The Redis settings this store connects with.
    pub fn redis(&self) -> &SingleRedisSettings {
        &self.inner.redis
    }

    /// The budget of reads and admin calls: `read_timeout`, at most 2 s.
    pub fn call_timeout(&self) -> Duration {
        self.inner.call_timeout
    }

    /// Connections in the pool.
    pub fn pool_size(&self) -> usize {
        self.inner.slots.len()
    }

    /// Open connections (for the chaos endpoint).
    pub fn connection_count(&self) -> usize {
        self.inner
            .slots
            .iter()
            .filter(|s| s.lock().is_ok_and(|g| g.is_some()))
            .count()
    }

    /// Whether the last call reached Redis.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// Times Redis was reached again after it was not (an outage or a chaos reset); the first
    /// connection does not count.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// Chaos: close every connection this handle holds (Redis sees them go: `CLIENT KILL` on the
    /// connection's own id) and forget them; the next call reconnects. Returns how many.
    pub async fn reset_connections(&self) -> usize {
        let taken: Vec<ConnectionManager> = self
            .inner
            .slots
            .iter()
            .filter_map(|s| s.lock().ok().and_then(|mut g| g.take()))
            .collect();
        let count = taken.len();
        for conn in taken {
            kill_own_connection(conn, self.inner.call_timeout).await;
        }
        self.inner.connected.store(false, Ordering::Relaxed);
        tracing::warn!(count, "chaos: jobqueue Redis connections closed");
        count
    }

    /// Run `f` on a pooled connection within `budget`; a timeout is `Unavailable`. The worker's
    /// result writer and housekeeping use it too.
    pub async fn with_connection<T, F, Fut>(
        &self,
        budget: Duration,
        f: F,
    ) -> Result<T, JobQueueError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, JobQueueError>>,
    {
        let (slot, conn) = self.connection()?;
        let result = match tokio::time::timeout(budget, f(conn)).await {
            Ok(result) => result,
            Err(_) => Err(JobQueueError::Unavailable(format!(
                "no answer from {} within {budget:?}",
                self.inner.redis.addr
            ))),
        };
        let reached = !matches!(result, Err(JobQueueError::Unavailable(_)));
        if !reached && self.inner.redis.sentinel.is_enabled() {
            // The master may have moved: the next call connects to the one Sentinel names.
            if let Ok(mut s) = self.inner.slots[slot].lock() {
                s.take();
            }
        }
        let was = self.inner.connected.swap(reached, Ordering::Relaxed);
        if reached && !was && self.inner.ever_connected.swap(true, Ordering::Relaxed) {
            self.inner.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        if was != reached {
            tracing::warn!(addr = %self.inner.redis.addr, connected = reached, "jobqueue Redis connection changed");
        }
        // An I/O error that is really plain text sent to a TLS port is the misconfiguration it
        // is (the Redis layer's TLS-port probe); any other result passes unchanged.
        match result {
            Err(JobQueueError::Unavailable(text))
                if !self.inner.redis.tls.enabled
                    && cacheserver_redis::tls_probe::looks_closed(&text) =>
            {
                Err(
                    cacheserver_redis::single::explain_closed(&self.inner.redis, text)
                        .await
                        .into(),
                )
            }
            other => other,
        }
    }

    /// Round-robin over the slots, creating a lazy connection where there is none.
    fn connection(&self) -> Result<(usize, ConnectionManager), JobQueueError> {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.slots.len();
        let mut slot = self.inner.slots[n]
            .lock()
            .map_err(|_| JobQueueError::Internal("connection slot poisoned".into()))?;
        if let Some(conn) = slot.as_ref() {
            return Ok((n, conn.clone()));
        }
        let conn = cacheserver_redis::single::lazy_connection(&self.inner.redis)?;
        *slot = Some(conn.clone());
        Ok((n, conn))
    }
}

/// `CLIENT ID` then `CLIENT KILL ID <id>` on the same connection, bounded; errors are expected
/// (the server closes the socket) and ignored. A least-privilege ACL user may not run
/// `CLIENT KILL` (admin): then `QUIT` closes it from the client side.
async fn kill_own_connection(mut conn: ConnectionManager, budget: Duration) {
    let kill = async {
        let id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await?;
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async::<()>(&mut conn)
            .await
    };
    if let Ok(Err(e)) = tokio::time::timeout(budget, kill).await {
        if cacheserver_redis::classify::misconfiguration_single(&e).is_some() {
            let quit = redis::cmd("QUIT");
            let _ = tokio::time::timeout(budget, quit.query_async::<()>(&mut conn)).await;
        }
    }
}
