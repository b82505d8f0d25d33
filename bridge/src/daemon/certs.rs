//! The SSH user certificate as the daemon shows it: its expiry as metrics
//! and a `/readyz` check, a warning when less than
//! `[ssh] certificate_warn_before` is left, and the file watch that makes
//! new sessions use a renewed certificate.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sshbridge_core::metrics::{EncodeLabelSet, Family, Gauge, Registry};
use tracing::warn;

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::admin::Check;
use crate::report::CertificateReport;
use crate::ssh::{certificate::rfc3339, CertificateInfo, SshContext};

/// How often the certificate file is read for changes.
pub(super) const CERTIFICATE_POLL: Duration = Duration::from_secs(5);

/// `{key_id, serial}` of a certificate (never its path).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CertL {
    key_id: String,
    serial: String,
}

/// `sshbridge_ssh_certificate_expiry_seconds` and
/// `sshbridge_ssh_certificate_expiring`.
#[derive(Clone, Default)]
pub(super) struct CertMetrics {
    expiry: Family<CertL, Gauge>,
    expiring: Family<CertL, Gauge>,
}

impl CertMetrics {
    pub(super) fn register(registry: &Registry) -> CertMetrics {
        let m = CertMetrics::default();
        registry.register(
            "sshbridge_ssh_certificate_expiry_seconds",
            "Unix time at which the SSH user certificate in use expires.",
            m.expiry.clone(),
        );
        registry.register(
            "sshbridge_ssh_certificate_expiring",
            "1 when less than [ssh] certificate_warn_before is left before the certificate expires.",
            m.expiring.clone(),
        );
        m
    }

    /// Shows `ctx`'s certificate (and only it).
    pub(super) fn set(&self, ctx: &SshContext) {
        self.expiry.clear();
        self.expiring.clear();
        let Some(cert) = ctx.certificate() else {
            return;
        };
        let l = CertL {
            key_id: cert.key_id.clone(),
            serial: cert.serial.to_string(),
        };
        let secs = i64::try_from(cert.expiry_unix()).unwrap_or(i64::MAX);
        self.expiry.get_or_create(&l).set(secs);
        let soon = expiring(
            cert,
            ctx.config().certificate_warn_before,
            SystemTime::now(),
        );
        self.expiring.get_or_create(&l).set(i64::from(soon));
    }
}

fn expiring(cert: &CertificateInfo, margin: Duration, now: SystemTime) -> bool {
    !margin.is_zero() && cert.expires_within(margin, now)
}

/// The warning, when less than the margin is left: names the certificate,
/// the expiry and the time left.
pub(super) fn warning(ctx: &SshContext) -> Option<String> {
    let cert = ctx.certificate()?;
    let now = SystemTime::now();
    let margin = ctx.config().certificate_warn_before;
    if !expiring(cert, margin, now) {
        return None;
    }
    let left = Duration::from_secs(cert.remaining(now).as_secs());
    Some(format!(
        "{} expires at {} ({} left, less than ssh.certificate_warn_before = {}); issue a new one",
        cert.describe(),
        rfc3339(cert.valid_before),
        humantime::format_duration(left),
        humantime::format_duration(margin)
    ))
}

/// The certificate as the report shows it.
pub(super) fn report(ctx: &SshContext) -> Option<CertificateReport> {
    let cert = ctx.certificate()?;
    let now = SystemTime::now();
    Some(CertificateReport {
        path: cert.path.display().to_string(),
        key_id: cert.key_id.clone(),
        serial: cert.serial,
        principals: cert.principals.clone(),
        valid_before: rfc3339(cert.valid_before),
        seconds_left: cert.remaining(now).as_secs(),
        expiring: expiring(cert, ctx.config().certificate_warn_before, now),
    })
}

/// Logs [`warning`], if any.
pub(super) fn warn_if_expiring(ctx: &SshContext) {
    if let Some(w) = warning(ctx) {
        warn!(warning = %w, "ssh certificate expires soon");
    }
}

/// The `ssh-certificate` check: fails once the certificate has expired
/// (no new session could authenticate); a warning detail before.
pub(super) fn check(ctx: &SshContext) -> Option<Check> {
    let cert = ctx.certificate()?;
    let now = SystemTime::now();
    let result = if cert.remaining(now).is_zero() {
        Err(format!(
            "{} expired at {}; new sessions cannot authenticate",
            cert.describe(),
            rfc3339(cert.valid_before)
        ))
    } else {
        Ok(())
    };
    let detail = warning(ctx).unwrap_or_else(|| {
        format!(
            "{} expires at {}",
            cert.describe(),
            rfc3339(cert.valid_before)
        )
    });
    Some(Check {
        name: format!("ssh-certificate ({detail})"),
        result,
    })
}

/// Whether the certificate file now holds another certificate than the
/// one `ctx` uses; then the new context (or why it cannot be used).
pub(super) fn changed(ctx: &SshContext) -> Option<Result<Arc<SshContext>, String>> {
    let cert = ctx.certificate()?;
    let text = std::fs::read_to_string(&cert.path).ok()?;
    if ctx.certificate_text_is(&text) {
        return None;
    }
    Some(SshContext::load(ctx.config()).map_err(|e| e.to_string()))
}

impl Shared {
    /// Makes `ctx` the context in use: metrics and warning follow it.
    pub(super) fn use_ssh_context(&self, ctx: Arc<SshContext>) {
        self.certs.set(&ctx);
        warn_if_expiring(&ctx);
        *sshbridge_core::lock(&self.ssh) = ctx;
    }

    pub(super) fn certificate_check(&self) -> Option<Check> {
        check(&sshbridge_core::lock(&self.ssh).clone())
    }

    pub(super) fn certificate_report(&self) -> Option<CertificateReport> {
        report(&sshbridge_core::lock(&self.ssh).clone())
    }

    pub(super) fn refresh_certificate_metrics(&self) {
        self.certs.set(&sshbridge_core::lock(&self.ssh).clone());
    }
}

/// Polls the certificate file every [`CERTIFICATE_POLL`]; a changed,
/// valid certificate becomes every tunnel's context (new sessions use it,
/// live ones roll over); an invalid one is logged and the old one kept.
pub(super) async fn watch(shared: Arc<Shared>, stop: CancellationToken) {
    let mut refused: Option<String> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CERTIFICATE_POLL) => {}
            _ = stop.cancelled() => return,
        }
        let ctx = sshbridge_core::lock(&shared.ssh).clone();
        match changed(&ctx) {
            None => refused = None,
            Some(Ok(new)) => {
                tracing::info!(credential = %new.credential(),
                    "the ssh certificate file changed; new sessions use the new certificate");
                for node in shared.snapshot().nodes.values() {
                    node.tunnel.set_context(new.clone());
                }
                shared.use_ssh_context(new);
                refused = None;
            }
            Some(Err(why)) => {
                if refused.as_deref() != Some(why.as_str()) {
                    warn!(error = %why, "the ssh certificate file changed but cannot be used; keeping the loaded one");
                    refused = Some(why);
                }
            }
        }
    }
}
