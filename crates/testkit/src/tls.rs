//! Test certificates made with `rcgen`: a CA, a server certificate for `localhost` and
//! `127.0.0.1`, a client certificate for mutual TLS, and a second CA the servers do not know.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// PEM files in a temp dir, removed on drop.
pub struct TestCerts {
    dir: tempfile::TempDir,
}

impl TestCerts {
    pub fn generate() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cacheserver-certs-")
            .tempdir()
            .expect("temp dir");
        let (ca, ca_key) = authority("cacheserver test CA");
        let server = leaf("localhost", &ca, &ca_key);
        let client = leaf("cacheserver-client", &ca, &ca_key);
        let (other_ca, _) = authority("some other CA");
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();
        write("ca.pem", ca.pem());
        write("other-ca.pem", other_ca.pem());
        write("server.pem", server.0);
        write("server.key", server.1);
        write("client.pem", client.0);
        write("client.key", client.1);
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// A CA that signed nothing the servers use ("unknown CA").
    pub fn other_ca(&self) -> PathBuf {
        self.path("other-ca.pem")
    }

    pub fn client_cert(&self) -> PathBuf {
        self.path("client.pem")
    }

    pub fn client_key(&self) -> PathBuf {
        self.path("client.key")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// redis-server arguments: TLS on `tls_port`, plain text off, client certs optional
    /// (`require_client_cert` makes them mandatory: mutual TLS).
    pub fn server_args(&self, tls_port: u16, require_client_cert: bool) -> Vec<String> {
        let s = |p: PathBuf| p.display().to_string();
        vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            s(self.path("server.pem")),
            "--tls-key-file".into(),
            s(self.path("server.key")),
            "--tls-ca-cert-file".into(),
            s(self.ca()),
            "--tls-auth-clients".into(),
            if require_client_cert {
                "yes"
            } else {
                "optional"
            }
            .into(),
        ]
    }

    /// redis-cli arguments to reach such a server (always with the client cert).
    pub fn cli_args(&self) -> Vec<String> {
        let s = |p: PathBuf| p.display().to_string();
        vec![
            "--tls".into(),
            "--cacert".into(),
            s(self.ca()),
            "--cert".into(),
            s(self.client_cert()),
            "--key".into(),
            s(self.client_key()),
        ]
    }
}

fn authority(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert, key)
}

/// (certificate PEM, key PEM) signed by the CA, valid for `localhost` and 127.0.0.1.
fn leaf(name: &str, ca: &rcgen::Certificate, ca_key: &KeyPair) -> (String, String) {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca, ca_key).unwrap();
    (cert.pem(), key.serialize_pem())
}
