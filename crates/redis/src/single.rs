//! redis-rs clients for the job queue's single Redis (`cache_server.redis.jobqueue`): the
//! address, the ACL user and password, TLS ([`crate::tls`]), Sentinel (the master is followed),
//! connection managers with explicit timeouts, and `WAIT`-confirmed script calls.

use crate::RedisError;
use cacheserver_config::{ExposeSecret, SingleRedisSettings};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use std::time::Duration;

/// Check the settings at start-up (address, TLS files) without connecting; with Sentinel, start
/// following the master.
pub fn validate(redis: &SingleRedisSettings) -> Result<(), RedisError> {
    client_at(redis, &redis.addr)?;
    if redis.sentinel.is_enabled() {
        sentinel::tracker(redis)?;
    }
    Ok(())
}

/// A redis-rs client for the jobqueue Redis (not connected yet): `addr`, or with Sentinel the
/// master the sentinels name now (`Unavailable` until one is known). Reads the TLS files now,
/// so a missing or unreadable file fails at start-up, naming the file.
pub fn client(redis: &SingleRedisSettings) -> Result<Client, RedisError> {
    if redis.sentinel.is_enabled() {
        let master = sentinel::tracker(redis)?.master()?;
        return client_at(redis, &master);
    }
    client_at(redis, &redis.addr)
}

/// Run `call` (an invocation of `script`) and, when `min_replicas_acked` > 0, `WAIT <n> <ms>`
/// right behind it in one pipeline: both leave in one write on one socket, so WAIT counts the
/// replicas that took this write. A WAIT sent on its own could go out on a socket the manager
/// reopened in between and confirm nothing. `NotConfirmed` when fewer replicas answer within
/// three quarters of `budget`.
pub async fn invoke_confirmed<T: redis::FromRedisValue>(
    conn: &mut impl redis::aio::ConnectionLike,
    script: &redis::Script,
    call: &redis::ScriptInvocation<'_>,
    redis: &SingleRedisSettings,
    budget: std::time::Duration,
) -> Result<T, RedisError> {
    let want = redis.min_replicas_acked;
    if want <= 0 {
        return Ok(call.invoke_async(conn).await?);
    }
    // Leave a quarter of the budget for the reply itself.
    let wait_ms = u64::try_from((budget * 3 / 4).as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    // SCRIPT LOAD leads the pipeline, so NOSCRIPT (a new master, a restarted Redis) cannot
    // happen: a NOSCRIPT would still run the WAIT, which blocks for all of `wait_ms` when
    // replicas are missing, before a retry could even start.
    let (out, acked): (T, i64) = redis::pipe()
        .load_script(script)
        .ignore()
        .invoke_script(call)
        .cmd("WAIT")
        .arg(want)
        .arg(wait_ms)
        .query_async(conn)
        .await?;
    if acked >= want {
        Ok(out)
    } else {
        Err(RedisError::NotConfirmed(format!(
            "the job was stored on the master but only {acked} of {want} replica(s) confirmed it within {wait_ms} ms; it may exist — retrying is safe"
        )))
    }
}

/// `result`, with an I/O error that is really plain text sent to a TLS port turned into the
/// misconfiguration it is ([`crate::tls_probe`]); anything else unchanged.
pub async fn explained<T>(
    redis: &SingleRedisSettings,
    result: Result<T, RedisError>,
) -> Result<T, RedisError> {
    match result {
        Err(RedisError::Unavailable(text))
            if !redis.tls.enabled && crate::tls_probe::looks_closed(&text) =>
        {
            Err(explain_closed(redis, text).await)
        }
        other => other,
    }
}

pub async fn explain_closed(redis: &SingleRedisSettings, text: String) -> RedisError {
    let Ok(addr) = current_addr(redis) else {
        return RedisError::Unavailable(text);
    };
    let Ok((host, port)) = crate::addr::split(&addr) else {
        return RedisError::Unavailable(text);
    };
    if !crate::tls_probe::is_tls_port(&host, port).await {
        return RedisError::Unavailable(text);
    }
    let hint = crate::tls_probe::hint("cache_server.redis.jobqueue.tls.enabled");
    RedisError::Misconfigured(format!("jobqueue Redis at {addr}: {hint}"))
}

/// Where connections go now: `addr`, or with Sentinel the master it names.
fn current_addr(redis: &SingleRedisSettings) -> Result<String, RedisError> {
    if redis.sentinel.is_enabled() {
        return sentinel::tracker(redis)?.master();
    }
    Ok(redis.addr.clone())
}

fn client_at(redis: &SingleRedisSettings, addr: &str) -> Result<Client, RedisError> {
    let (host, port) = crate::addr::split(addr)?;
    let addr = if redis.tls.enabled {
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host, port)
    };
    let mut auth = RedisConnectionInfo::default();
    if let Some(user) = &redis.username {
        auth = auth.set_username(user);
    }
    if let Some(password) = &redis.password {
        auth = auth.set_password(password.expose_secret());
    }
    let info = addr
        .into_connection_info()
        .map_err(|e| RedisError::Config(format!("jobqueue Redis address: {e}")))?
        .set_redis_settings(auth);
    let built = if redis.tls.enabled {
        Client::build_with_tls(
            info,
            crate::tls::TlsFiles::read(&redis.tls, "cache_server.redis.jobqueue.tls")?.into_redis(),
        )
    } else {
        Client::open(info)
    };
    built.map_err(|e| RedisError::Config(format!("jobqueue Redis client: {e}")))
}

/// Follows the master of `sentinel.master_name`: one poller per process and sentinel set asks
/// the sentinels (`SENTINEL GET-MASTER-ADDR-BY-NAME`) every [`sentinel::POLL`]; new connections
/// go to the master it knows. Connections to a dead or demoted master fail (`READONLY`, I/O) and
/// are rebuilt by their owner (`JobQueue`, the supervisor), which then lands on the new master.
mod sentinel {
    use super::{client_at, RedisError, SingleRedisSettings};
    use std::collections::HashMap;
    use std::sync::{Arc, LazyLock, Mutex, RwLock};
    use std::time::Duration;

    pub const POLL: Duration = Duration::from_millis(200);
    /// Budget of one question to one sentinel.
    const ASK_TIMEOUT: Duration = Duration::from_millis(500);

    pub struct Tracker {
        master: RwLock<Option<String>>,
    }

    impl Tracker {
        pub fn master(&self) -> Result<String, RedisError> {
            self.master
                .read()
                .ok()
                .and_then(|m| m.clone())
                .ok_or_else(|| {
                    RedisError::Unavailable(
                        "no jobqueue master known from the sentinels yet".into(),
                    )
                })
        }
    }

    static TRACKERS: LazyLock<Mutex<HashMap<String, Arc<Tracker>>>> =
        LazyLock::new(Default::default);

    /// The tracker of this sentinel set, started on first use (needs a tokio runtime).
    pub fn tracker(redis: &SingleRedisSettings) -> Result<Arc<Tracker>, RedisError> {
        let s = &redis.sentinel;
        let key = format!("{}@{}", s.master_name, s.addrs.join(","));
        let mut all = TRACKERS
            .lock()
            .map_err(|_| RedisError::Internal("sentinel trackers poisoned".into()))?;
        if let Some(t) = all.get(&key) {
            return Ok(t.clone());
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| RedisError::Config("Sentinel needs a tokio runtime".into()))?;
        let tracker = Arc::new(Tracker {
            master: RwLock::new(None),
        });
        runtime.spawn(follow(redis.clone(), tracker.clone()));
        all.insert(key, tracker.clone());
        Ok(tracker)
    }

    /// Poll the sentinels for the life of the process; log every change of master.
    async fn follow(redis: SingleRedisSettings, tracker: Arc<Tracker>) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(found) = ask_sentinels(&redis).await else {
                continue;
            };
            let Ok(mut master) = tracker.master.write() else {
                return;
            };
            if master.as_deref() != Some(found.as_str()) {
                tracing::info!(master = %found, previous = ?*master, name = %redis.sentinel.master_name, "jobqueue master (per Sentinel)");
                *master = Some(found);
            }
        }
    }

    /// The first answer of the sentinels, in order, each bounded by [`ASK_TIMEOUT`].
    async fn ask_sentinels(redis: &SingleRedisSettings) -> Option<String> {
        let s = &redis.sentinel;
        // Sentinels take their own credentials; TLS like the data nodes.
        let mut as_sentinel = redis.clone();
        as_sentinel.username = s.username.clone();
        as_sentinel.password = s.password.clone();
        for addr in &s.addrs {
            let Ok(client) = client_at(&as_sentinel, addr) else {
                continue;
            };
            let ask = async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(&s.master_name)
                    .query_async::<Option<(String, u16)>>(&mut conn)
                    .await
            };
            match tokio::time::timeout(ASK_TIMEOUT, ask).await {
                Ok(Ok(Some((host, port)))) => return Some(format!("{host}:{port}")),
                Ok(Ok(None)) => {
                    tracing::debug!(sentinel = %addr, "sentinel does not know the master")
                }
                Ok(Err(e)) => tracing::debug!(sentinel = %addr, error = %e, "sentinel error"),
                Err(_) => tracing::debug!(sentinel = %addr, "sentinel timed out"),
            }
        }
        None
    }
}

/// Connection settings from `cache_server.redis.jobqueue`. Explicit response timeouts keep a
/// stalled Redis from hanging calls (apalis-redis#76 ends a worker on the first hang);
/// `max_retries` bounds reconnect attempts per call.
pub fn connection_config(redis: &SingleRedisSettings) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(redis.dial_timeout))
        .set_response_timeout(Some(redis.read_timeout.max(redis.write_timeout)))
        .set_number_of_retries(redis.max_retries.max(0) as usize)
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(Duration::from_millis(500))
}

/// A connection manager that connects on first use (never blocks startup).
pub fn lazy_connection(redis: &SingleRedisSettings) -> Result<ConnectionManager, RedisError> {
    let client = client(redis)?;
    ConnectionManager::new_lazy_with_config(client, connection_config(redis))
        .map_err(|e| RedisError::Config(format!("cannot create Redis client: {e}")))
}

/// A connected manager, or an error after `dial_timeout` (the worker's supervisor uses it).
pub async fn connect(redis: &SingleRedisSettings) -> Result<ConnectionManager, RedisError> {
    let mut conn = lazy_connection(redis)?;
    let cmd = redis::cmd("PING");
    let ping = cmd.query_async::<String>(&mut conn);
    tokio::time::timeout(redis.dial_timeout, ping)
        .await
        .map_err(|_| RedisError::Unavailable("connect timed out".into()))??;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn settings(addr: &str) -> SingleRedisSettings {
        SingleRedisSettings {
            addr: addr.into(),
            ..SingleRedisSettings::default()
        }
    }

    #[test]
    fn builds_plain_and_tls_clients() {
        let plain = client(&settings("127.0.0.1:6390")).unwrap();
        assert!(matches!(
            plain.get_connection_info().addr(),
            ConnectionAddr::Tcp(h, 6390) if h == "127.0.0.1"
        ));
        let mut s = settings("localhost:6391");
        s.tls.enabled = true;
        let tls = client(&s).unwrap();
        assert!(matches!(
            tls.get_connection_info().addr(),
            ConnectionAddr::TcpTls {
                port: 6391,
                insecure: false,
                ..
            }
        ));
    }

    #[test]
    fn a_missing_tls_file_is_named() {
        let mut s = settings("127.0.0.1:6390");
        s.tls.enabled = true;
        s.tls.ca_file = Some("/nonexistent/ca.pem".into());
        let err = client(&s).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn credentials_are_set_without_a_url() {
        let mut s = settings("127.0.0.1:6390");
        s.username = Some("app".into());
        s.password = Some("p@ss:/word".to_owned().into());
        let c = client(&s).unwrap();
        let r = c.get_connection_info().redis_settings();
        assert_eq!(r.username(), Some("app"));
        assert_eq!(r.password(), Some("p@ss:/word"));
    }
}
