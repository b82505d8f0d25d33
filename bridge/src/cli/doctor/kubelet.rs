//! The doctor's kubelet check: a TLS handshake over the test forward,
//! verified against `health.kubelet_ca` with the node address as the name
//! (as the health probe does), naming the certificate's subject and issuer
//! and which check failed.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sshbridge::path::BoxStream;
use sshbridge_config::{Config, Node};
use tokio_rustls::TlsConnector;

use super::Check;

/// The kubelet check of `node` over `stream` (the test forward, if any).
pub async fn check(cfg: &Config, node: &Node, stream: Option<BoxStream>) -> Check {
    let done = |result, message| Check {
        check: "kubelet tls",
        result,
        message,
    };
    let Some(ca) = &cfg.health.kubelet_ca else {
        return done(
            "skip",
            "health.kubelet_ca is not set, so the kubelet's certificate is never verified; set it to the CA of the kubelets' serving certificates".into(),
        );
    };
    let Some(stream) = stream else {
        return done("skip", "needs a working forward to the kubelet port".into());
    };
    let roots = match sshbridge::tls::load_roots(ca) {
        Ok(r) => Arc::new(r),
        Err(e) => return done("fail", format!("health.kubelet_ca: {e}")),
    };
    let provider = sshbridge::tls::provider();
    let inner = match WebPkiServerVerifier::builder_with_provider(roots, provider.clone()).build() {
        Ok(v) => v,
        Err(e) => return done("fail", format!("health.kubelet_ca {}: {e}", ca.display())),
    };
    let seen = Arc::new(Mutex::new(None));
    let verifier = Arc::new(Recording {
        inner,
        seen: seen.clone(),
    });
    let config = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
        Err(e) => return done("fail", format!("TLS setup: {e}")),
    };
    let name = ServerName::IpAddress(node.address.into());
    let target = std::net::SocketAddr::new(node.address, cfg.health.kubelet_port);
    let handshake = TlsConnector::from(Arc::new(config)).connect(name, stream);
    let limit = cfg.ssh.connect_timeout;
    let result = tokio::time::timeout(limit, handshake).await;
    let cert = sshbridge_core::lock(&seen).take();
    let about = cert.as_deref().map(describe).unwrap_or_default();
    match result {
        Ok(Ok(_)) => done(
            "ok",
            format!("{target}: {about}, verified against {}", ca.display()),
        ),
        Ok(Err(e)) => {
            let what = match e
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
            {
                Some(rustls::Error::InvalidCertificate(c)) => hint(c),
                _ => format!("TLS handshake failed: {e}; check that health.kubelet_port is the kubelet's HTTPS port"),
            };
            done(
                "fail",
                format!(
                    "{target}: {about}: {what} (health.kubelet_ca = {})",
                    ca.display()
                ),
            )
        }
        Err(_) => done(
            "fail",
            format!(
                "{target}: no TLS handshake within {limit:?}; is the kubelet's HTTPS port {}?",
                cfg.health.kubelet_port
            ),
        ),
    }
}

/// Which check failed, and what to do.
fn hint(c: &CertificateError) -> String {
    use CertificateError as C;
    match c {
        C::UnknownIssuer => "its issuer is not health.kubelet_ca (unknown issuer): point health.kubelet_ca at the CA that signs the kubelets' serving certificates, or re-issue this one from it".into(),
        C::BadSignature => "its signature does not verify against health.kubelet_ca".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => "it does not carry the node address as an IP SAN; re-issue it with that SAN".into(),
        C::Expired | C::ExpiredContext { .. } => "it has expired; renew the kubelet's serving certificate, or check the clocks".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "it is not valid yet; check the clocks".into(),
        other => format!("it was refused ({other:?}); check it against health.kubelet_ca"),
    }
}

/// `certificate subject "CN=..." issued by "CN=..." valid until ...`.
fn describe(der: &[u8]) -> String {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => format!(
            "certificate subject \"{}\" issued by \"{}\" valid until {}",
            cert.subject(),
            cert.issuer(),
            cert.validity()
                .not_after
                .to_rfc2822()
                .unwrap_or_else(|_| cert.validity().not_after.to_string())
        ),
        Err(_) => "an unparsable certificate".into(),
    }
}

/// Delegates to webpki, keeping the end-entity certificate it was shown.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    seen: Arc<Mutex<Option<Vec<u8>>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *sshbridge_core::lock(&self.seen) = Some(end_entity.to_vec());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
