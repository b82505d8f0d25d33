//! The Kubernetes versions the manifests are written for: the declared
//! support range and the fields that differ inside it.
//!
//! The range is 1.20 (the oldest clusters still running SSH tunnels)
//! through 1.37 (the newest release whose published schemas the test
//! validator ships). Every manifest is checked against each minor version
//! of the range by schema validation, and against a real kube-apiserver
//! 1.20 by a server-side dry run (`tests/tests/e2e/manifests.rs`).

use std::fmt;
use std::str::FromStr;

/// A Kubernetes minor release (`1.MINOR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    /// The minor number (20 for 1.20).
    pub minor: u32,
}

impl KubeVersion {
    /// The oldest release of the support range.
    pub const OLDEST: KubeVersion = KubeVersion { minor: 20 };
    /// The newest release of the support range (and the default).
    pub const NEWEST: KubeVersion = KubeVersion { minor: 37 };

    /// Every minor release of the support range, oldest first.
    pub fn range() -> impl Iterator<Item = KubeVersion> {
        (Self::OLDEST.minor..=Self::NEWEST.minor).map(|minor| KubeVersion { minor })
    }

    /// Whether the support range holds this release.
    pub fn supported(self) -> bool {
        (Self::OLDEST..=Self::NEWEST).contains(&self)
    }

    /// Whether a DaemonSet's `rollingUpdate.maxSurge` takes effect: the
    /// field is in the API from 1.21, but behind the `DaemonSetUpdateSurge`
    /// feature gate, off by default in 1.21 (the apiserver then drops the
    /// field), on by default from 1.22 (beta; GA in 1.25). 1.20 rejects it.
    pub fn daemonset_max_surge(self) -> bool {
        self.minor >= 22
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1.{}", self.minor)
    }
}

/// Why a version string is not a release of the support range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Not `MAJOR.MINOR` (a `v` prefix and a `.PATCH` or `-suffix` are
    /// accepted, as `kubectl version` and `/version` print them).
    #[error("{given:?} is not a Kubernetes version: write MAJOR.MINOR, e.g. {newest}", newest = KubeVersion::NEWEST)]
    Malformed {
        /// What was given.
        given: String,
    },
    /// A release outside the range.
    #[error(
        "Kubernetes {given} is outside the range sshbridge's manifests support, {} to {}; \
         pass --kubernetes-version with a release in that range",
        KubeVersion::OLDEST,
        KubeVersion::NEWEST
    )]
    Unsupported {
        /// What was given, as written.
        given: String,
    },
}

impl FromStr for KubeVersion {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || VersionError::Malformed { given: s.into() };
        let t = s.trim();
        let t = t.strip_prefix('v').unwrap_or(t);
        // /version's gitVersion may carry a suffix: v1.20.2-eks-1, v1.28.3+k3s1.
        let t = t.split(['-', '+']).next().unwrap_or(t);
        let mut parts = t.split('.');
        let major: u32 = parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(malformed)?;
        let minor: u32 = parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(malformed)?;
        match parts.next() {
            None => {}
            Some(patch) if patch.parse::<u32>().is_ok() && parts.next().is_none() => {}
            Some(_) => return Err(malformed()),
        }
        let v = KubeVersion { minor };
        if major != 1 || !v.supported() {
            return Err(VersionError::Unsupported {
                given: format!("{major}.{minor}"),
            });
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_operators_and_apiservers_write() {
        for s in ["1.20", "v1.20", "1.20.2", "v1.20.2-eks-1", "v1.20.2+k3s1"] {
            assert_eq!(s.parse(), Ok(KubeVersion { minor: 20 }), "{s}");
        }
        assert_eq!("1.37".parse(), Ok(KubeVersion::NEWEST));
        for s in ["", "1", "x.y", "1.20.x", "1.20.2.1"] {
            assert!(
                matches!(
                    s.parse::<KubeVersion>(),
                    Err(VersionError::Malformed { .. })
                ),
                "{s}"
            );
        }
        let err = "1.19".parse::<KubeVersion>().unwrap_err().to_string();
        assert!(
            err.contains("1.19 is outside") && err.contains("1.20 to 1.37"),
            "{err}"
        );
        assert!("1.38".parse::<KubeVersion>().is_err());
        assert!("2.20".parse::<KubeVersion>().is_err());
        assert_eq!(KubeVersion::range().count(), 18);
    }
}
