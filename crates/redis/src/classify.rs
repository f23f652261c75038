//! The one misconfiguration-vs-outage classifier, for fred's and redis-rs' errors alike.
//!
//! A misconfiguration (wrong password, missing ACL permission, a certificate the client does not
//! trust) does not heal by retrying fast: the api answers 503 naming the cause and the worker
//! says why once per minute instead of restarting in a storm. The secret is never part of a
//! message: the errors carry the server's reply, and the reply never echoes the password.

/// Which Redis an error came from, for the message.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// "Redis Cluster", "jobqueue Redis".
    pub name: &'static str,
    /// The ACL file whose rules the user needs.
    pub acl_file: &'static str,
}

/// The api's cluster (`cache_server.redis.default`).
pub const CLUSTER: Target = Target {
    name: "Redis Cluster",
    acl_file: "deploy/redis/cacheserver-api.acl",
};

/// The job queue's Redis (`cache_server.redis.jobqueue`).
pub const JOBQUEUE: Target = Target {
    name: "jobqueue Redis",
    acl_file: "deploy/redis/cacheserver-jobqueue.acl",
};

/// Why an error with this text is a misconfiguration (credentials, ACL permissions, TLS trust),
/// or `None` when it is an outage or a bug. `auth_failed`/`tls_failed`: the client library
/// already said so by the error's kind. `script` names a script by a SHA in the text (Redis 7.0
/// names the refused script only by its SHA).
pub fn misconfiguration_in(
    target: Target,
    text: &str,
    auth_failed: bool,
    tls_failed: bool,
    script: Option<&str>,
) -> Option<String> {
    let Target { name, acl_file } = target;
    if is_permission_error(text) {
        let script = script.map(|s| format!(" (in {s})")).unwrap_or_default();
        return Some(format!(
            "the {name} user lacks a permission{script}; apply {acl_file}: {text}"
        ));
    }
    if auth_failed || text.contains("WRONGPASS") || text.contains("NOAUTH") {
        return Some(format!(
            "{name} authentication failed (check username/password): {text}"
        ));
    }
    if tls_failed || is_tls_failure(text) {
        return Some(format!("{name} TLS handshake failed: {text}"));
    }
    None
}

/// fred's error (the cluster).
pub fn misconfiguration_cluster(error: &fred::error::Error) -> Option<String> {
    use fred::error::ErrorKind;
    misconfiguration_in(
        CLUSTER,
        &error.to_string(),
        *error.kind() == ErrorKind::Auth,
        *error.kind() == ErrorKind::Tls,
        None,
    )
}

/// redis-rs' error (the job queue's Redis).
pub fn misconfiguration_single(e: &redis::RedisError) -> Option<String> {
    let auth = e.kind() == redis::ErrorKind::AuthenticationFailed;
    misconfiguration_in(JOBQUEUE, &e.to_string(), auth, false, None)
}

/// `NOPERM` outside scripts; inside a script Redis 7.0 answers with a plain error naming the
/// script's SHA but not the key.
fn is_permission_error(text: &str) -> bool {
    text.contains("NOPERM")
        || text.contains("no permissions to")
        || text.contains("can't access at least one of the keys")
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

/// `READONLY`: the node we talk to was demoted to a replica (a failover is under way).
pub fn is_read_only(e: &redis::RedisError) -> bool {
    e.code() == Some("READONLY")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_the_reply() {
        let noperm = misconfiguration_in(
            JOBQUEUE,
            "NOPERM this user has no permissions to run the 'eval' command",
            false,
            false,
            Some("x.lua"),
        )
        .unwrap_or_default();
        assert!(
            noperm.contains("(in x.lua)") && noperm.contains(JOBQUEUE.acl_file),
            "{noperm}"
        );
        let auth = misconfiguration_in(CLUSTER, "WRONGPASS invalid", false, false, None);
        assert!(auth.is_some_and(|m| m.starts_with("Redis Cluster authentication failed")));
        assert!(misconfiguration_in(
            CLUSTER,
            "invalid peer certificate: UnknownIssuer",
            false,
            false,
            None
        )
        .is_some());
        assert!(misconfiguration_in(
            CLUSTER,
            "Connection refused (os error 111)",
            false,
            false,
            None
        )
        .is_none());
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
