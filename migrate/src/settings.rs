//! What a rollout is tuned by: the `[migration]` section plus the pacing of
//! probes, and the per-`apply` overrides the operator gives on the CLI.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sshbridge_config::{BatchSize, Migration};

/// Nodes per batch, as the operator wrote it: a count or a percentage.
/// In JSON it is written `{"count": 2}` or `{"percent": 10.0}`, and read
/// from that, a bare count (`2`) or the CLI's text (`"2"`, `"10%"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "BatchSpecWire")]
pub enum BatchSpec {
    /// This many nodes per batch (at least 1).
    Count(usize),
    /// This percentage of all nodes the bridge knows, rounded up, at least 1.
    Percent(f64),
}

impl BatchSpec {
    /// Nodes per batch for a fleet of `total` nodes (never 0).
    pub fn per_batch(self, total: usize) -> usize {
        let n = match self {
            BatchSpec::Count(n) => n,
            BatchSpec::Percent(p) => (total as f64 * p / 100.0).ceil() as usize,
        };
        n.max(1)
    }
}

impl From<BatchSize> for BatchSpec {
    fn from(b: BatchSize) -> Self {
        match b {
            BatchSize::Count(n) => BatchSpec::Count(n),
            BatchSize::Percent(p) => BatchSpec::Percent(p),
        }
    }
}

impl fmt::Display for BatchSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchSpec::Count(n) => write!(f, "{n}"),
            BatchSpec::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// The forms a batch size is accepted in.
#[derive(Deserialize)]
#[serde(untagged)]
enum BatchSpecWire {
    Text(String),
    Count(usize),
    Tagged(TaggedBatchSpec),
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum TaggedBatchSpec {
    Count(usize),
    Percent(f64),
}

impl TryFrom<BatchSpecWire> for BatchSpec {
    type Error = BatchSpecError;

    fn try_from(w: BatchSpecWire) -> Result<Self, Self::Error> {
        match w {
            BatchSpecWire::Text(t) => t.parse(),
            BatchSpecWire::Count(n) | BatchSpecWire::Tagged(TaggedBatchSpec::Count(n)) => {
                n.to_string().parse()
            }
            BatchSpecWire::Tagged(TaggedBatchSpec::Percent(p)) => format!("{p}%").parse(),
        }
    }
}

/// A `--batch-size` value that is neither a count nor a percentage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid batch size {0:?}: write a node count such as 2, or a percentage such as 10%")]
pub struct BatchSpecError(pub String);

impl FromStr for BatchSpec {
    type Err = BatchSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let bad = || BatchSpecError(s.to_owned());
        if let Some(p) = t.strip_suffix('%') {
            match p.trim().parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Ok(BatchSpec::Percent(p)),
                _ => Err(bad()),
            }
        } else {
            match t.parse::<usize>() {
                Ok(n) if n > 0 => Ok(BatchSpec::Count(n)),
                _ => Err(bad()),
            }
        }
    }
}

/// Everything the controller needs to know about pacing and thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Nodes per batch.
    pub batch_size: BatchSpec,
    /// Probes per path while a node is in shadow.
    pub shadow_probes: u32,
    /// Largest tolerated failure ratio of the konnectivity path, in shadow
    /// and during soak.
    pub max_failure_ratio: f64,
    /// Largest tolerated konnectivity p99 / ssh p99 during shadow.
    pub max_latency_ratio: f64,
    /// How long a cut-over node is watched before it is `done`.
    #[serde(with = "duration_str")]
    pub soak: Duration,
    /// Pause between two shadow probes, and between two checks during soak.
    /// Not in the config file; [`Settings::PROBE_INTERVAL`] by default.
    #[serde(with = "duration_str")]
    pub probe_interval: Duration,
    /// A probe with no answer within this counts as failed.
    /// Not in the config file; [`Settings::PROBE_TIMEOUT`] by default.
    #[serde(with = "duration_str")]
    pub probe_timeout: Duration,
    /// How long a node's step waits for the node to be ready (SSH up, an
    /// agent connected and healthy) before it starts counting probes,
    /// e.g. while agents reconnect after a daemon restart. Not in the
    /// config file; [`Settings::READY_TIMEOUT`] by default.
    #[serde(with = "duration_str", default = "Settings::default_ready_timeout")]
    pub ready_timeout: Duration,
}

impl Settings {
    /// Default pause between probes.
    pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
    /// Default deadline of one probe.
    pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default wait for a node to be ready before its step counts probes.
    pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

    fn default_ready_timeout() -> Duration {
        Self::READY_TIMEOUT
    }

    /// The settings of a `[migration]` section, with default probe pacing.
    pub fn from_config(m: &Migration) -> Self {
        Settings {
            batch_size: m.batch_size.into(),
            shadow_probes: m.shadow_probes,
            max_failure_ratio: m.max_failure_ratio,
            max_latency_ratio: m.max_latency_ratio,
            soak: m.soak,
            probe_interval: Self::PROBE_INTERVAL,
            probe_timeout: Self::PROBE_TIMEOUT,
            ready_timeout: Self::READY_TIMEOUT,
        }
    }

    /// These settings with an `apply`'s overrides on top.
    pub fn with(&self, opts: &ApplyOptions) -> Self {
        let mut s = self.clone();
        if let Some(b) = opts.batch_size {
            s.batch_size = b;
        }
        if let Some(d) = opts.soak {
            s.soak = d;
        }
        s
    }
}

/// What `sshbridge migrate apply` asks for; the body of the admin API call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyOptions {
    /// `--batch-size N|P%`: overrides `[migration] batch_size`.
    #[serde(default)]
    pub batch_size: Option<BatchSpec>,
    /// `--soak D`: overrides `[migration] soak`; at most
    /// [`sshbridge_config::MAX_SOAK`] (seven days).
    #[serde(
        default,
        deserialize_with = "soak_str",
        serialize_with = "opt_duration_str::serialize"
    )]
    pub soak: Option<Duration>,
    /// `--abort-on-failure`: a breach aborts the rollout (every node not yet
    /// `done` goes back to ssh) instead of pausing it.
    #[serde(default)]
    pub abort_on_failure: bool,
    /// `--nodes a,b`: only these nodes; all ready nodes when absent.
    #[serde(default)]
    pub nodes: Option<Vec<String>>,
}

/// The `soak` of an `apply`: a humantime string no longer than
/// [`sshbridge_config::MAX_SOAK`]. The error names the key, so the admin
/// API's 400 says which field to fix.
fn soak_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    use serde::de::Error;
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    let soak = humantime::parse_duration(text.trim())
        .map_err(|e| D::Error::custom(format!("soak: invalid duration {text:?}: {e}")))?;
    let max = sshbridge_config::MAX_SOAK;
    if soak > max {
        return Err(D::Error::custom(format!(
            "soak: {text} is longer than the maximum of {}",
            humantime::format_duration(max)
        )));
    }
    Ok(Some(soak))
}

/// Durations as humantime strings ("2m", "500ms") in JSON.
pub(crate) mod duration_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// `Option<Duration>` as an optional humantime string.
pub(crate) mod opt_duration_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes_round_up_and_never_reach_zero() {
        assert_eq!(BatchSpec::Percent(10.0).per_batch(5), 1);
        assert_eq!(BatchSpec::Percent(40.0).per_batch(5), 2);
        assert_eq!(BatchSpec::Percent(100.0).per_batch(0), 1);
        assert_eq!(BatchSpec::Count(3).per_batch(2), 3);
        assert_eq!("25%".parse(), Ok(BatchSpec::Percent(25.0)));
        assert_eq!("2".parse(), Ok(BatchSpec::Count(2)));
        for bad in ["0", "0%", "101%", "two", "-1"] {
            assert!(bad.parse::<BatchSpec>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn batch_size_reads_the_cli_text_a_count_or_the_tagged_form() {
        let read = |j: &str| serde_json::from_str::<BatchSpec>(j);
        assert_eq!(read("\"2\"").unwrap(), BatchSpec::Count(2));
        assert_eq!(read("\"10%\"").unwrap(), BatchSpec::Percent(10.0));
        assert_eq!(read("3").unwrap(), BatchSpec::Count(3));
        assert_eq!(read("{\"count\": 4}").unwrap(), BatchSpec::Count(4));
        assert_eq!(
            read("{\"percent\": 25.0}").unwrap(),
            BatchSpec::Percent(25.0)
        );
        assert!(read("\"0\"").is_err() && read("\"150%\"").is_err() && read("\"x\"").is_err());
        let written = serde_json::to_string(&BatchSpec::Count(2)).unwrap();
        assert_eq!(written, "{\"count\":2}");
    }

    #[test]
    fn apply_options_round_trip_as_the_admin_api_body() {
        let body = r#"{"batch_size":{"percent":20.0},"soak":"30s","abort_on_failure":true}"#;
        let o: ApplyOptions = serde_json::from_str(body).unwrap();
        assert_eq!(o.soak, Some(Duration::from_secs(30)));
        assert_eq!(o.batch_size, Some(BatchSpec::Percent(20.0)));
        let again: ApplyOptions =
            serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
        assert_eq!(again, o);
        assert!(serde_json::from_str::<ApplyOptions>(r#"{"sok":"1s"}"#).is_err());
    }

    #[test]
    fn a_soak_above_seven_days_is_refused_naming_the_key() {
        let read = |j: &str| serde_json::from_str::<ApplyOptions>(j);
        for body in [
            r#"{"soak":"10000000000000000000s"}"#,
            r#"{"soak":"8days"}"#,
            r#"{"soak":"forever"}"#,
        ] {
            let e = read(body).unwrap_err().to_string();
            assert!(e.starts_with("soak: "), "{body}: {e}");
        }
        assert_eq!(
            read(r#"{"soak":"7days"}"#).unwrap().soak,
            Some(sshbridge_config::MAX_SOAK)
        );
        assert_eq!(read(r#"{"soak":null}"#).unwrap().soak, None);
    }
}
