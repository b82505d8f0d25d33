//! A throwaway certificate authority for the demo and the tests: one CA,
//! server certificates for kubelets and egress listeners, client
//! certificates for mTLS, and the rustls configurations built from them.
//!
//! Every rustls config here is built with the `ring` provider passed
//! explicitly, so nothing depends on a process-wide default provider.
//! Not for production: keys live in memory and certificates never expire in
//! practice (rcgen's default validity).

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why building or writing test PKI material failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused to generate a key or certificate.
    #[error("generating a certificate failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// The PEM text held no usable certificate or key.
    #[error("bad PEM material: {0}; regenerate it with Pki::issue_*")]
    Pem(String),
    /// rustls rejected the material.
    #[error("building a TLS config failed: {0}")]
    Tls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("building the client-certificate verifier failed: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// Writing a file failed.
    #[error("writing {path}: {source}; check the directory exists and is writable")]
    Io {
        /// The file that could not be written.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertPair {
    /// The leaf certificate (PEM).
    pub cert_pem: String,
    /// Its PKCS#8 private key (PEM). Printed as `MASKED` by `Debug`.
    pub key_pem: String,
}

impl std::fmt::Debug for CertPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertPair")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"MASKED")
            .finish()
    }
}

impl CertPair {
    /// Writes `STEM.crt` (mode 0644) and `STEM.key` (mode 0600) into `dir`
    /// and returns their paths `(cert, key)`.
    pub fn write_to(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), PkiError> {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        write_file(&cert, self.cert_pem.as_bytes(), 0o644)?;
        write_file(&key, self.key_pem.as_bytes(), 0o600)?;
        Ok((cert, key))
    }
}

/// A certificate authority that lives in memory.
pub struct Pki {
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("ca_pem", &self.ca_pem())
            .finish()
    }
}

impl Pki {
    /// A new CA whose subject common name is `name`.
    pub fn new(name: &str) -> Result<Self, PkiError> {
        let ca_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = params.self_signed(&ca_key)?;
        Ok(Self { ca_cert, ca_key })
    }

    /// The CA certificate (PEM), what clients and servers trust.
    pub fn ca_pem(&self) -> String {
        self.ca_cert.pem()
    }

    /// Writes the CA certificate to `dir/ca.crt` and returns the path.
    pub fn write_ca(&self, dir: &Path) -> Result<PathBuf, PkiError> {
        let path = dir.join("ca.crt");
        write_file(&path, self.ca_pem().as_bytes(), 0o644)?;
        Ok(path)
    }

    /// A server certificate valid for the given IP and DNS subject
    /// alternative names (the first of them is also its common name).
    pub fn issue_server(&self, ips: &[IpAddr], dns: &[&str]) -> Result<CertPair, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut sans: Vec<SanType> = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
        for name in dns {
            sans.push(SanType::DnsName((*name).try_into()?));
        }
        let cn = dns
            .first()
            .map(|d| d.to_string())
            .or_else(|| ips.first().map(|ip| ip.to_string()))
            .unwrap_or_else(|| "server".to_string());
        params.subject_alt_names = sans;
        params.distinguished_name = dn(&cn);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate with common name `cn`, for mTLS.
    pub fn issue_client(&self, cn: &str) -> Result<CertPair, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    /// A client certificate `cn`, organization (Kubernetes group) `group`.
    pub fn issue_client_in_group(&self, cn: &str, group: &str) -> Result<CertPair, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = dn(cn);
        dn.push(DnType::OrganizationName, group);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    /// A node's client certificate in the kubelet's form: common name
    /// `system:node:NAME`, organization `system:nodes`. The bridge takes it
    /// as proof that a Konnectivity agent serves node `name`.
    pub fn issue_node_client(&self, name: &str) -> Result<CertPair, PkiError> {
        self.issue_client_in_group(&format!("system:node:{name}"), "system:nodes")
    }

    /// A client certificate with common name `cn` and SAN DNS names `dns`.
    pub fn issue_client_dns(&self, cn: &str, dns: &[&str]) -> Result<CertPair, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(cn);
        for name in dns {
            params
                .subject_alt_names
                .push(SanType::DnsName((*name).try_into()?));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    /// A server config presenting `pair`, without client authentication.
    pub fn server_config(&self, pair: &CertPair) -> Result<Arc<ServerConfig>, PkiError> {
        server_config(pair, None)
    }

    /// A server config presenting `pair` that requires a client
    /// certificate issued by this CA.
    pub fn server_config_mtls(&self, pair: &CertPair) -> Result<Arc<ServerConfig>, PkiError> {
        server_config(pair, Some(&self.ca_pem()))
    }

    /// A client config that trusts this CA, presenting `identity` when given.
    pub fn client_config(
        &self,
        identity: Option<&CertPair>,
    ) -> Result<Arc<ClientConfig>, PkiError> {
        client_config(&self.ca_pem(), identity)
    }

    fn sign(&self, params: CertificateParams) -> Result<CertPair, PkiError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key)?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A server config presenting `pair`; when `client_ca_pem` is given,
/// clients must present a certificate chaining to it.
pub fn server_config(
    pair: &CertPair,
    client_ca_pem: Option<&str>,
) -> Result<Arc<ServerConfig>, PkiError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca_pem {
        Some(ca) => {
            let roots = Arc::new(root_store(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider).build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(certs(&pair.cert_pem)?, key(&pair.key_pem)?)?;
    Ok(Arc::new(config))
}

/// A client config trusting the CA(s) in `ca_pem`, presenting `identity`
/// (client certificate and key) when given.
pub fn client_config(
    ca_pem: &str,
    identity: Option<&CertPair>,
) -> Result<Arc<ClientConfig>, PkiError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(ca_pem)?);
    let config = match identity {
        Some(pair) => builder.with_client_auth_cert(certs(&pair.cert_pem)?, key(&pair.key_pem)?)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The `ring` crypto provider, passed to every builder explicitly.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn root_store(ca_pem: &str) -> Result<RootCertStore, PkiError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca_pem)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(PkiError::Pem("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| PkiError::Pem(e.to_string()))?
        .ok_or_else(|| PkiError::Pem("no PRIVATE KEY block".into()))
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io_err = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io_err)?;
    // The mode given to open() only applies to new files; enforce it.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io_err)?;
    file.write_all(bytes).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    async fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        name: &str,
    ) -> Result<Vec<u8>, io::Error> {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let srv = tokio::spawn(async move {
            let mut tls = TlsAcceptor::from(server).accept(a).await?;
            tls.write_all(b"hello").await?;
            tls.shutdown().await?;
            Ok::<_, io::Error>(())
        });
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut tls = TlsConnector::from(client).connect(name, b).await?;
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await?;
        let _ = srv.await;
        Ok(got)
    }

    fn ip() -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))
    }

    #[tokio::test]
    async fn server_cert_verifies_for_its_ip_and_not_for_another_name() {
        let pki = Pki::new("test-ca").unwrap();
        let pair = pki.issue_server(&[ip()], &["node-a"]).unwrap();
        let server = pki.server_config(&pair).unwrap();
        let client = pki.client_config(None).unwrap();
        let run = |name: &'static str| handshake(server.clone(), client.clone(), name);
        let got = tokio::time::timeout(Duration::from_secs(10), run("127.0.0.1")).await;
        assert_eq!(got.unwrap().unwrap(), b"hello");
        let got = tokio::time::timeout(Duration::from_secs(10), run("node-a")).await;
        assert_eq!(got.unwrap().unwrap(), b"hello");
        let got = tokio::time::timeout(Duration::from_secs(10), run("node-b")).await;
        assert!(
            got.unwrap().is_err(),
            "a name not in the SANs must be refused"
        );
    }

    #[tokio::test]
    async fn mtls_server_refuses_client_without_certificate() {
        let pki = Pki::new("test-ca").unwrap();
        let pair = pki.issue_server(&[ip()], &[]).unwrap();
        let server = pki.server_config_mtls(&pair).unwrap();
        let with = pki
            .client_config(Some(&pki.issue_client("apiserver").unwrap()))
            .unwrap();
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            handshake(server.clone(), with, "127.0.0.1"),
        )
        .await;
        assert_eq!(got.unwrap().unwrap(), b"hello");
        let without = pki.client_config(None).unwrap();
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            handshake(server, without, "127.0.0.1"),
        )
        .await;
        assert!(
            got.unwrap().is_err(),
            "a client without a cert must be refused"
        );
    }

    #[test]
    fn written_key_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new("test-ca").unwrap();
        let (cert, key) = pki
            .issue_client("c")
            .unwrap()
            .write_to(dir.path(), "c")
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&cert), 0o644);
        assert!(std::fs::read_to_string(cert)
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
    }

    use std::time::Duration;
}
