//! How the jobqueue's redis-rs connections are built from `cache_server.redis.jobqueue`: the
//! address, the ACL user and password, TLS (CA, client certificate for mutual TLS), and which
//! Redis errors mean "misconfigured" rather than "down".
//!
//! A misconfiguration (wrong password, missing ACL permission, a certificate the client does not
//! trust) does not heal by retrying fast: the api answers 503 naming the cause and the worker
//! says why once per minute instead of restarting in a storm. The secret is never part of a
//! message: redis-rs' errors carry the server's reply, and the reply never echoes the password.

use crate::error::JobQueueError;
use cacheserver_config::{ExposeSecret, SingleRedisSettings, TlsSettings};
use redis::{
    Client, ClientTlsConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo,
    TlsCertificates,
};

/// Check the settings at start-up (address, TLS files) without connecting; with Sentinel, start
/// following the master.
pub fn validate(redis: &SingleRedisSettings) -> Result<(), JobQueueError> {
    client_at(redis, &redis.addr)?;
    if redis.sentinel.is_enabled() {
        sentinel::tracker(redis)?;
    }
    Ok(())
}

/// A redis-rs client for the jobqueue Redis (not connected yet): `addr`, or with Sentinel the
/// master the sentinels name now (`Unavailable` until one is known). Reads the TLS files now,
/// so a missing or unreadable file fails at start-up, naming the file.
pub fn client(redis: &SingleRedisSettings) -> Result<Client, JobQueueError> {
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
) -> Result<T, JobQueueError> {
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
        Err(JobQueueError::NotConfirmed(format!(
            "the job was stored on the master but only {acked} of {want} replica(s) confirmed it within {wait_ms} ms; it may exist — retrying is safe"
        )))
    }
}

/// `result`, with an I/O error that is really plain text sent to a TLS port turned into the
/// misconfiguration it is ([`crate::tls_probe`]); anything else unchanged.
pub async fn explained<T>(
    redis: &SingleRedisSettings,
    result: Result<T, JobQueueError>,
) -> Result<T, JobQueueError> {
    match result {
        Err(JobQueueError::Unavailable(text))
            if !redis.tls.enabled && crate::tls_probe::looks_closed(&text) =>
        {
            Err(explain_closed(redis, text).await)
        }
        other => other,
    }
}

async fn explain_closed(redis: &SingleRedisSettings, text: String) -> JobQueueError {
    let Ok(addr) = current_addr(redis) else {
        return JobQueueError::Unavailable(text);
    };
    let Ok((host, port)) = split_addr(&addr) else {
        return JobQueueError::Unavailable(text);
    };
    if !crate::tls_probe::is_tls_port(&host, port).await {
        return JobQueueError::Unavailable(text);
    }
    let hint = crate::tls_probe::hint("cache_server.redis.jobqueue.tls.enabled");
    JobQueueError::Misconfigured(format!("jobqueue Redis at {addr}: {hint}"))
}

/// Where connections go now: `addr`, or with Sentinel the master it names.
fn current_addr(redis: &SingleRedisSettings) -> Result<String, JobQueueError> {
    if redis.sentinel.is_enabled() {
        return sentinel::tracker(redis)?.master();
    }
    Ok(redis.addr.clone())
}

fn client_at(redis: &SingleRedisSettings, addr: &str) -> Result<Client, JobQueueError> {
    let (host, port) = split_addr(addr)?;
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
        .map_err(|e| JobQueueError::Config(format!("jobqueue Redis address: {e}")))?
        .set_redis_settings(auth);
    let built = if redis.tls.enabled {
        Client::build_with_tls(info, certificates(&redis.tls)?)
    } else {
        Client::open(info)
    };
    built.map_err(|e| JobQueueError::Config(format!("jobqueue Redis client: {e}")))
}

/// Follows the master of `sentinel.master_name`: one poller per process and sentinel set asks
/// the sentinels (`SENTINEL GET-MASTER-ADDR-BY-NAME`) every [`sentinel::POLL`]; new connections
/// go to the master it knows. Connections to a dead or demoted master fail (`READONLY`, I/O) and
/// are rebuilt by their owner (`JobQueue`, the supervisor), which then lands on the new master.
mod sentinel {
    use super::{client_at, JobQueueError, SingleRedisSettings};
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
        pub fn master(&self) -> Result<String, JobQueueError> {
            self.master
                .read()
                .ok()
                .and_then(|m| m.clone())
                .ok_or_else(|| {
                    JobQueueError::Unavailable(
                        "no jobqueue master known from the sentinels yet".into(),
                    )
                })
        }
    }

    static TRACKERS: LazyLock<Mutex<HashMap<String, Arc<Tracker>>>> =
        LazyLock::new(Default::default);

    /// The tracker of this sentinel set, started on first use (needs a tokio runtime).
    pub fn tracker(redis: &SingleRedisSettings) -> Result<Arc<Tracker>, JobQueueError> {
        let s = &redis.sentinel;
        let key = format!("{}@{}", s.master_name, s.addrs.join(","));
        let mut all = TRACKERS
            .lock()
            .map_err(|_| JobQueueError::Internal("sentinel trackers poisoned".into()))?;
        if let Some(t) = all.get(&key) {
            return Ok(t.clone());
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| JobQueueError::Config("Sentinel needs a tokio runtime".into()))?;
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

/// The PEM files of `tls`; no `ca_file` means the system roots.
fn certificates(tls: &TlsSettings) -> Result<TlsCertificates, JobQueueError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            JobQueueError::Config(format!(
                "cache_server.redis.jobqueue.tls: cannot read {}: {e}",
                path.display()
            ))
        })
    };
    let root_cert = tls.ca_file.as_deref().map(read).transpose()?;
    let client_tls = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        _ => None,
    };
    Ok(TlsCertificates {
        client_tls,
        root_cert,
    })
}

fn split_addr(addr: &str) -> Result<(String, u16), JobQueueError> {
    let bad = || JobQueueError::Config(format!("invalid jobqueue Redis address `{addr}`"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse().map_err(|_| bad())?;
    Ok((host.trim_matches(['[', ']']).to_owned(), port))
}

/// Why `e` is a misconfiguration (credentials, ACL permissions, TLS trust), or `None` when it
/// is an outage or a bug. The text names the refused command or script, never a secret.
pub fn misconfiguration(e: &redis::RedisError) -> Option<String> {
    let auth = e.kind() == redis::ErrorKind::AuthenticationFailed;
    misconfiguration_in(&e.to_string(), auth)
}

/// The same for an error that reached us as text only (apalis wraps Redis errors in its own).
fn misconfiguration_in(text: &str, auth_failed: bool) -> Option<String> {
    if is_permission_error(text) {
        let script = script_name(text)
            .map(|name| format!(" (in apalis-redis' {name})"))
            .unwrap_or_default();
        return Some(format!(
            "the jobqueue Redis user lacks a permission{script}; apply deploy/redis/cacheserver-jobqueue.acl: {text}"
        ));
    }
    if auth_failed || text.contains("WRONGPASS") || text.contains("NOAUTH") {
        return Some(format!(
            "jobqueue Redis authentication failed (check username/password): {text}"
        ));
    }
    if is_tls_failure(text) {
        return Some(format!("jobqueue Redis TLS handshake failed: {text}"));
    }
    None
}

/// `NOPERM` outside scripts; inside a script Redis 7.0 answers with a plain error naming the
/// script's SHA but not the key.
fn is_permission_error(text: &str) -> bool {
    text.contains("NOPERM")
        || text.contains("no permissions to")
        || text.contains("can't access at least one of the keys")
}

/// SHA1 of apalis-redis 1.0.0's scripts (`sha1sum lua/*.lua`), to name a script Redis refused.
const APALIS_SCRIPTS: [(&str, &str); 10] = [
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

fn script_name(text: &str) -> Option<&'static str> {
    APALIS_SCRIPTS
        .iter()
        .find(|(sha, _)| text.contains(sha))
        .map(|(_, name)| *name)
}

/// An error that ended the apalis worker: a misconfiguration, else an outage.
pub fn worker_error(e: &impl std::fmt::Display) -> JobQueueError {
    let text = e.to_string();
    match misconfiguration_in(&text, false) {
        Some(why) => JobQueueError::Misconfigured(why),
        None => JobQueueError::Unavailable(text),
    }
}

/// rustls' messages for an untrusted or mismatched certificate, or a server that does not
/// speak TLS on this port.
fn is_tls_failure(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    [
        "certificate",
        "tls handshake",
        "handshake",
        "corrupt message",
        "unknownissuer",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

/// Lets a message through at most once per `every` (the caller passes the clock).
#[derive(Debug)]
pub struct Throttle {
    every: std::time::Duration,
    last: Option<std::time::Instant>,
}

impl Throttle {
    pub fn new(every: std::time::Duration) -> Self {
        Self { every, last: None }
    }

    /// Whether to speak now; if so, the next time is `every` later.
    pub fn ready(&mut self, now: std::time::Instant) -> bool {
        let due = self
            .last
            .is_none_or(|t| now.duration_since(t) >= self.every);
        if due {
            self.last = Some(now);
        }
        due
    }
}

/// `READONLY`: the node we talk to was demoted to a replica (a failover is under way).
pub fn is_read_only(e: &redis::RedisError) -> bool {
    e.code() == Some("READONLY")
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

    #[test]
    fn throttle_speaks_once_per_period() {
        let start = std::time::Instant::now();
        let minute = std::time::Duration::from_secs(60);
        let mut t = Throttle::new(minute);
        assert!(t.ready(start));
        assert!(!t.ready(start + minute / 2));
        assert!(t.ready(start + minute));
        assert!(!t.ready(start + minute + minute / 2));
    }
}
