//! Validation of the raw file into the resolved [`Config`]: defaults
//! applied, values parsed, cross-field rules and referenced files checked.
//! Every problem is collected; nothing stops at the first.

mod admin;
mod konnectivity;
mod kubernetes;
mod leader;
mod nodes;
mod sections;
mod ssh_limits;
mod tokenreview;

use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::diag::{ConfigError, Diags};
use crate::model::Config;
use crate::raw::{RawConfig, Str, StrOrInt};
use crate::units::{self, Problem};

/// Validates `raw`, read from `text` of the file `source`.
pub(crate) fn validate(raw: &RawConfig, text: &str, source: &Path) -> Result<Config, ConfigError> {
    let mut cx = Ctx::new(text, source);
    let bridge = sections::bridge(&mut cx, &raw.bridge);
    let egress = sections::egress(&mut cx, &raw.egress);
    let ssh = sections::ssh(&mut cx, &raw.ssh);
    let health = sections::health(&mut cx, &raw.health);
    let admin = admin::admin(&mut cx, &raw.admin);
    let konnectivity = raw
        .konnectivity
        .as_ref()
        .map(|k| konnectivity::konnectivity(&mut cx, k));
    let kubernetes = raw
        .kubernetes
        .as_ref()
        .map(|k| kubernetes::kubernetes(&mut cx, k));
    let migration = sections::migration(&mut cx, &raw.migration, kubernetes.is_some());
    let inventory = kubernetes::inventory(&mut cx, &raw.inventory, kubernetes.is_some());
    if let (Some(raw_k), Some(k)) = (&raw.konnectivity, &konnectivity) {
        tokenreview::needs_kubernetes(&mut cx, raw_k, k, kubernetes.is_some());
    }
    let ha = kubernetes::ha(&mut cx, &raw.ha, kubernetes.is_some());
    let nodes = nodes::nodes(&mut cx, &raw.node, ssh.port, konnectivity.is_some());
    if !cx.d.is_empty() {
        return Err(cx.d.into_error());
    }
    Ok(Config {
        source: source.to_path_buf(),
        bridge,
        egress,
        ssh,
        health,
        admin,
        konnectivity,
        migration,
        kubernetes,
        inventory,
        ha,
        nodes,
    })
}

/// Validation state: the diagnostics so far and where relative paths start.
pub(crate) struct Ctx<'a> {
    pub(crate) d: Diags<'a>,
    dir: PathBuf,
}

impl<'a> Ctx<'a> {
    fn new(text: &'a str, source: &Path) -> Self {
        let dir = source.parent().map(Path::to_path_buf).unwrap_or_default();
        Ctx {
            d: Diags::new(text, source),
            dir,
        }
    }

    /// Where to report a key: at its value, else at its section header.
    pub(crate) fn at<T>(&self, section: &str, v: Option<&Spanned<T>>) -> Range<usize> {
        v.map_or_else(|| self.d.section_span(section), Spanned::span)
    }

    /// Records `p` for `key` at `span`.
    pub(crate) fn report(&mut self, span: &Range<usize>, key: &str, p: Problem) {
        let message = format!("{key}: {}", p.message);
        match p.hint {
            Some(h) => self.d.hint(span, message, h),
            None => self.d.error(span, message),
        }
    }

    /// A string value or its default.
    pub(crate) fn string(v: Option<&Str>, default: &str) -> String {
        v.map_or_else(|| default.to_owned(), |v| v.get_ref().clone())
    }

    /// A duration value or its (valid) default; zero is refused unless
    /// `zero_ok`, and so is anything above the key's maximum
    /// ([`units::max_duration`]).
    pub(crate) fn duration(
        &mut self,
        key: &str,
        v: Option<&Str>,
        default: &str,
        zero_ok: bool,
    ) -> Duration {
        let fallback = units::duration(default).expect("built-in default duration is valid");
        let Some(v) = v else { return fallback };
        match units::bounded_duration(key, v.get_ref()) {
            Ok(d) if d.is_zero() && !zero_ok => {
                let p = Problem {
                    message: "must be longer than zero".into(),
                    hint: Some(format!("the default is \"{default}\"")),
                };
                self.report(&v.span(), key, p);
                fallback
            }
            Ok(d) => d,
            Err(p) => {
                self.report(&v.span(), key, p);
                fallback
            }
        }
    }

    /// A byte size above zero, or its default.
    pub(crate) fn size(
        &mut self,
        key: &str,
        v: Option<&Spanned<StrOrInt>>,
        default: usize,
    ) -> usize {
        let Some(v) = v else { return default };
        match units::size(v.get_ref()).map(usize::try_from) {
            Ok(Ok(0)) => {
                let p = Problem {
                    message: "must be larger than zero".into(),
                    hint: None,
                };
                self.report(&v.span(), key, p);
                default
            }
            Ok(Ok(n)) => n,
            Ok(Err(_)) => {
                let p = Problem {
                    message: "is too large".into(),
                    hint: None,
                };
                self.report(&v.span(), key, p);
                default
            }
            Err(p) => {
                self.report(&v.span(), key, p);
                default
            }
        }
    }

    /// An integer at least `min`, or its default.
    pub(crate) fn count(
        &mut self,
        key: &str,
        v: Option<&Spanned<i64>>,
        default: u32,
        min: u32,
    ) -> u32 {
        let Some(v) = v else { return default };
        match u32::try_from(*v.get_ref()) {
            Ok(n) if n >= min => n,
            _ => {
                let p = Problem {
                    message: format!("{} is out of range; it must be at least {min}", v.get_ref()),
                    hint: None,
                };
                self.report(&v.span(), key, p);
                default
            }
        }
    }

    /// A port number, or its default.
    pub(crate) fn port(&mut self, key: &str, v: Option<&Spanned<i64>>, default: u16) -> u16 {
        let Some(v) = v else { return default };
        units::port(*v.get_ref()).unwrap_or_else(|p| {
            self.report(&v.span(), key, p);
            default
        })
    }

    /// A number that must satisfy `ok` (described by `expected`), or its
    /// default.
    pub(crate) fn number(
        &mut self,
        key: &str,
        v: Option<&Spanned<f64>>,
        default: f64,
        ok: impl Fn(f64) -> bool,
        expected: &str,
    ) -> f64 {
        let Some(v) = v else { return default };
        let n = *v.get_ref();
        if ok(n) {
            return n;
        }
        let p = Problem {
            message: format!("{n} is out of range; it must be {expected}"),
            hint: Some(format!("the default is {default:?}")),
        };
        self.report(&v.span(), key, p);
        default
    }

    /// A path, relative ones taken from the config file's directory.
    pub(crate) fn path(&self, s: &str) -> PathBuf {
        let p = Path::new(s);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    /// A file the bridge will read: it must exist, be a regular file and,
    /// when `private`, be unreadable by group and others.
    pub(crate) fn file(
        &mut self,
        section: &str,
        key: &str,
        v: Option<&Str>,
        default: &str,
        private: bool,
    ) -> PathBuf {
        let span = self.at(section, v);
        let raw = v.map_or(default, |v| v.get_ref().as_str());
        let path = self.path(raw);
        let shown = path.display().to_string();
        let p = match std::fs::metadata(&path) {
            _ if raw.trim().is_empty() => Some(Problem {
                message: "is empty".into(),
                hint: Some("give the path of the file".into()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Problem {
                message: format!("file {shown} does not exist"),
                hint: Some(format!("create it or point {key} at an existing file")),
            }),
            Err(e) => Some(Problem {
                message: format!("cannot read {shown}: {e}"),
                hint: Some("check the path and its permissions".into()),
            }),
            Ok(m) if !m.is_file() => Some(Problem {
                message: format!("{shown} is not a regular file"),
                hint: None,
            }),
            Ok(m) if private && m.permissions().mode() & 0o077 != 0 => Some(Problem {
                message: format!(
                    "private key {shown} is readable by group or others (mode {:03o})",
                    m.permissions().mode() & 0o777
                ),
                hint: Some(format!("chmod 600 {shown}")),
            }),
            Ok(_) => None,
        };
        if let Some(p) = p {
            self.report(&span, key, p);
        }
        path
    }
}
