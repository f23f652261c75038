//! The one TLS/mTLS builder: a [`TlsSettings`] section (CA file, else the system roots; a client
//! certificate and key for mutual TLS) read once into [`TlsFiles`], then handed to fred as a
//! rustls `ClientConfig` or to redis-rs as its `TlsCertificates`. A missing or invalid file is a
//! start-up error naming the setting and the file.

use crate::RedisError;
use cacheserver_config::TlsSettings;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;

/// The PEM files of one `tls` section, read.
pub struct TlsFiles {
    /// `ca_file`; `None`: the system roots.
    pub root_pem: Option<Vec<u8>>,
    /// `cert_file` and `key_file` (mutual TLS), when both are set.
    pub client_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    /// Read the files of `tls`; `setting` names the section in errors
    /// (`cache_server.redis.default.tls`).
    pub fn read(tls: &TlsSettings, setting: &str) -> Result<Self, RedisError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| {
                RedisError::Config(format!("{setting}: cannot read {}: {e}", path.display()))
            })
        };
        let root_pem = tls.ca_file.as_deref().map(read).transpose()?;
        let client_pem = match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            _ => None,
        };
        Ok(Self {
            root_pem,
            client_pem,
        })
    }

    /// For redis-rs (which builds its rustls config from PEM bytes).
    pub fn into_redis(self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client_pem
                .map(|(client_cert, client_key)| redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                }),
            root_cert: self.root_pem,
        }
    }

    /// A rustls client config (for fred). `tls` names the files in errors.
    pub fn into_rustls(
        self,
        tls: &TlsSettings,
        setting: &str,
    ) -> Result<rustls::ClientConfig, RedisError> {
        let bad = |path: Option<&Path>, e: &dyn std::fmt::Display| {
            let path = path.map(|p| p.display().to_string()).unwrap_or_default();
            RedisError::Config(format!("{setting}: {path}: {e}"))
        };
        let mut roots = rustls::RootCertStore::empty();
        match &self.root_pem {
            Some(pem) => {
                let ca = tls.ca_file.as_deref();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| bad(ca, &e))?;
                    roots.add(cert).map_err(|e| bad(ca, &e))?;
                }
            }
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        Ok(match &self.client_pem {
            Some((cert_pem, key_pem)) => {
                let (cert, key) = (tls.cert_file.as_deref(), tls.key_file.as_deref());
                let chain = CertificateDer::pem_slice_iter(cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(cert, &e))?;
                let key_der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad(key, &e))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| bad(cert, &e))?
            }
            None => builder.with_no_client_auth(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_missing_file_is_named_with_its_setting() {
        let tls = TlsSettings {
            enabled: true,
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsSettings::default()
        };
        let Err(err) = TlsFiles::read(&tls, "cache_server.redis.default.tls") else {
            panic!("read a missing file")
        };
        let err = err.to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        assert!(err.contains("cache_server.redis.default.tls"), "{err}");
    }
}
