//! The host field of a known_hosts line: hashed `|1|salt|hash` or a
//! comma list of patterns with `*` / `?` wildcards and `!` negation.

use base64::Engine as _;
use hmac::{Hmac, Mac};

/// Which hosts one line applies to.
#[derive(Debug, Clone)]
pub(super) enum Hosts {
    /// HMAC-SHA1 of the host string keyed by `salt` equals `hash`.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    /// `(negated, lower-cased pattern)` pairs.
    Patterns(Vec<(bool, String)>),
}

impl Hosts {
    /// Whether `host` (lower-cased, `[host]:port` form off port 22) is covered.
    pub(super) fn matches(&self, host: &str) -> bool {
        match self {
            Hosts::Hashed { salt, hash } => {
                let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                    return false;
                };
                mac.update(host.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
            Hosts::Patterns(pats) => {
                let mut positive = false;
                for (negated, pat) in pats {
                    if glob(pat.as_bytes(), host.as_bytes()) {
                        if *negated {
                            return false;
                        }
                        positive = true;
                    }
                }
                positive
            }
        }
    }
}

impl Hosts {
    /// The patterns, when every one is a plain name (no wildcard, no
    /// negation): then [`Hosts::matches`] is equality with one of them.
    pub(super) fn literals(&self) -> Option<Vec<&str>> {
        match self {
            Hosts::Hashed { .. } => None,
            Hosts::Patterns(pats) => pats
                .iter()
                .map(|(negated, p)| (!negated && !p.contains(['*', '?'])).then_some(p.as_str()))
                .collect(),
        }
    }
}

/// Parse the host field of a line.
pub(super) fn parse_hosts(field: &str) -> Result<Hosts, String> {
    if let Some(rest) = field.strip_prefix("|1|") {
        let (salt, hash) = rest
            .split_once('|')
            .ok_or_else(|| "hashed host without |salt|hash".to_string())?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = b64
            .decode(salt)
            .map_err(|e| format!("hashed host salt: {e}"))?;
        let hash = b64
            .decode(hash)
            .map_err(|e| format!("hashed host hash: {e}"))?;
        return Ok(Hosts::Hashed { salt, hash });
    }
    if field.starts_with('|') {
        return Err("unsupported hashed host format (only |1| is known)".into());
    }
    let pats = field
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.strip_prefix('!') {
            Some(p) => (true, p.to_ascii_lowercase()),
            None => (false, p.to_ascii_lowercase()),
        })
        .collect::<Vec<_>>();
    if pats.is_empty() {
        return Err("empty host pattern list".into());
    }
    Ok(Hosts::Patterns(pats))
}

/// `*` matches any run, `?` one byte; the host was lower-cased already.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}
