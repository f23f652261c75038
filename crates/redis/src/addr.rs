//! `host:port` addresses as the settings write them (`[::1]:6379` for IPv6).

use crate::RedisError;

/// `(host, port)` of `addr`; the brackets of an IPv6 host are removed.
pub fn split(addr: &str) -> Result<(String, u16), RedisError> {
    let bad = |why: &str| RedisError::Config(format!("invalid Redis address `{addr}`: {why}"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("not host:port"))?;
    let port = port.parse().map_err(|_| bad("bad port"))?;
    Ok((host.trim_matches(['[', ']']).to_owned(), port))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn splits_host_and_port() {
        assert_eq!(split("localhost:6379").unwrap(), ("localhost".into(), 6379));
        assert_eq!(split("[::1]:7000").unwrap(), ("::1".into(), 7000));
        assert!(split("localhost").is_err());
        assert!(split("localhost:http").is_err());
    }
}
