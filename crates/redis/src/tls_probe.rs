//! Tells "a plain-text client on a TLS port" from an outage. redis-server's TLS port answers plain
//! text by closing the connection, which redis-rs and fred report as an I/O error, just like a
//! Redis that went down. A restart can look the same for a moment, so a closed connection proves
//! nothing by itself: the probe asks the port, on fresh connections, whether it speaks TLS.
//! Used by both clients (the jobqueue's here, the api's cluster client in `redis_cluster.rs`).

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Budget of each of the probe's two connections.
pub const PROBE_BUDGET: Duration = Duration::from_millis(500);

/// The misconfiguration to report; `setting` is the client's `tls.enabled` key.
pub fn hint(setting: &str) -> String {
    format!("the server closed the connection before replying: is it a TLS port ({setting}=false)?")
}

/// Whether an error text is what a TLS port gives a plain-text client (closed or reset; not
/// refused, not a timeout): only then is [`is_tls_port`] worth asking.
pub fn looks_closed(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    [
        "reset by peer",
        "broken pipe",
        "end of file",
        "unexpected eof",
        "connection closed",
        "connection dropped",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// `true` only when `host:port` accepts a plain-text connection and closes it before any reply
/// to `PING`, and a TLS handshake on a second connection gets as far as the server's certificate.
/// A Redis that is down refuses; one that is up answers `PING` (even with `-NOAUTH`).
pub async fn is_tls_port(host: &str, port: u16) -> bool {
    closes_plain_text(host, port).await && speaks_tls(host, port).await
}

async fn closes_plain_text(host: &str, port: u16) -> bool {
    let probe = async {
        let mut tcp = TcpStream::connect((host, port)).await.ok()?;
        if tcp.write_all(b"PING\r\n").await.is_err() {
            return Some(true);
        }
        let mut first = [0u8; 1];
        Some(match tcp.read(&mut first).await {
            Ok(n) => n == 0,
            Err(e) => matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
            ),
        })
    };
    matches!(
        tokio::time::timeout(PROBE_BUDGET, probe).await,
        Ok(Some(true))
    )
}

/// Trusting no root at all, a handshake with a TLS server stops at its certificate (or an
/// alert): either proves the port speaks TLS. Nothing is sent over it.
async fn speaks_tls(host: &str, port: u16) -> bool {
    let Ok(name) = rustls::pki_types::ServerName::try_from(host.to_owned()) else {
        return false;
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Ok(builder) =
        rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()
    else {
        return false;
    };
    let config = builder
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let probe = async {
        let tcp = TcpStream::connect((host, port)).await.ok()?;
        Some(match connector.connect(name, tcp).await {
            Ok(_) => true,
            Err(e) => matches!(
                e.get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
                Some(rustls::Error::InvalidCertificate(_) | rustls::Error::AlertReceived(_))
            ),
        })
    };
    matches!(
        tokio::time::timeout(PROBE_BUDGET, probe).await,
        Ok(Some(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_closed_connections_are_probed() {
        assert!(looks_closed("Connection reset by peer (os error 104)"));
        assert!(looks_closed("IO Error: broken pipe"));
        assert!(!looks_closed("Connection refused (os error 111)"));
        assert!(!looks_closed("no answer from 127.0.0.1:6379 within 2s"));
    }

    #[tokio::test]
    async fn a_closed_port_is_not_a_tls_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").ok();
        let port = listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or(1, |a| a.port());
        drop(listener);
        assert!(!is_tls_port("127.0.0.1", port).await);
    }
}
