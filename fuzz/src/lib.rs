//! A small fuzzing driver on stable Rust: proptest generates inputs, most
//! of them mutations of a target's seeds (bit flips, byte changes,
//! insertions and deletions, dictionary tokens, splices of other seeds),
//! some plain random bytes; each input goes to the target's check, which
//! must neither panic nor break the target's stated property.
//!
//! Every target first replays its kept inputs, `fuzz/corpus/<target>/`
//! (seeds) and `fuzz/regressions/<target>/` (inputs that once failed),
//! then fuzzes for `SSHBRIDGE_FUZZ_SECONDS` seconds (default
//! [`DEFAULT_SECONDS`]). A failure is shrunk by proptest, written to
//! `target/fuzz/failures/<target>/` and reported with its bytes.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

/// Seconds each target fuzzes when `SSHBRIDGE_FUZZ_SECONDS` is unset.
pub const DEFAULT_SECONDS: u64 = 20;
/// Inputs per proptest run; runs repeat until the time is up.
const BATCH: u32 = 512;
/// Largest random input and largest mutated input.
const MAX_LEN: usize = 16 * 1024;

/// One target: its name (the corpus directory), seeds and dictionary.
pub struct Target {
    /// Directory name under `fuzz/corpus` and `fuzz/regressions`.
    pub name: &'static str,
    /// Inputs to mutate, besides the files in the corpus directory.
    pub seeds: Vec<Vec<u8>>,
    /// Tokens the mutator inserts (delimiters, keywords, edge numbers).
    pub dictionary: Vec<&'static [u8]>,
}

/// What a target run did.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Kept inputs replayed.
    pub replayed: usize,
    /// Generated inputs checked.
    pub inputs: u64,
    /// Wall time spent fuzzing.
    pub elapsed: Duration,
}

/// How long to fuzz each target.
pub fn budget() -> Duration {
    let secs = std::env::var("SSHBRIDGE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SECONDS);
    Duration::from_secs(secs)
}

/// Replays the kept inputs of `target`, then fuzzes it for [`budget`].
/// `check` returns `Err` when a property breaks; a panic counts as a
/// failure too. Panics (failing the test) with the first failing input.
pub fn fuzz(target: Target, check: impl Fn(&[u8]) -> Result<(), String>) -> Summary {
    let check = |input: &[u8]| -> Result<(), String> {
        match catch_unwind(AssertUnwindSafe(|| check(input))) {
            Ok(r) => r,
            Err(panic) => Err(format!("panicked: {}", panic_text(&panic))),
        }
    };
    let mut seeds = target.seeds.clone();
    let mut replayed = 0;
    for dir in ["corpus", "regressions"] {
        for (path, bytes) in kept(target.name, dir) {
            if let Err(e) = check(&bytes) {
                panic!("{}: kept input {} fails: {e}", target.name, path.display());
            }
            replayed += 1;
            seeds.push(bytes);
        }
    }
    if seeds.is_empty() {
        seeds.push(Vec::new());
    }
    let strategy = inputs(seeds, target.dictionary.clone());
    let started = Instant::now();
    let deadline = started + budget();
    let mut inputs_run = 0u64;
    while Instant::now() < deadline {
        let mut runner = TestRunner::new(Config {
            cases: BATCH,
            failure_persistence: None,
            max_shrink_iters: 2048,
            ..Config::default()
        });
        let counter = std::cell::Cell::new(0u64);
        let result = runner.run(&strategy, |input| {
            // Slow targets: the rest of a batch past the deadline is skipped.
            if Instant::now() >= deadline {
                return Ok(());
            }
            counter.set(counter.get() + 1);
            check(&input).map_err(TestCaseError::fail)
        });
        inputs_run += counter.get();
        if let Err(e) = result {
            let (why, input) = match e {
                TestError::Fail(why, input) => (why.to_string(), input),
                TestError::Abort(why) => (why.to_string(), Vec::new()),
            };
            let saved = save_failure(target.name, &input);
            panic!(
                "{}: input fails: {why}\n  bytes ({} long): {:?}\n  saved as {}",
                target.name,
                input.len(),
                String::from_utf8_lossy(&input),
                saved.display()
            );
        }
    }
    let summary = Summary {
        replayed,
        inputs: inputs_run,
        elapsed: started.elapsed(),
    };
    eprintln!(
        "fuzz {}: {} kept inputs replayed, {} generated inputs in {:.1}s, 0 failures",
        target.name,
        summary.replayed,
        summary.inputs,
        summary.elapsed.as_secs_f64()
    );
    summary
}

/// One edit of a mutation.
#[derive(Debug, Clone)]
enum Edit {
    FlipBit(usize, u8),
    SetByte(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Token(usize, usize),
    Splice(usize, usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let pos = any::<usize>();
    prop_oneof![
        (pos, 0u8..8).prop_map(|(p, b)| Edit::FlipBit(p, b)),
        (pos, any::<u8>()).prop_map(|(p, v)| Edit::SetByte(p, v)),
        (pos, any::<u8>()).prop_map(|(p, v)| Edit::Insert(p, v)),
        (pos, 1usize..64).prop_map(|(p, n)| Edit::Delete(p, n)),
        (pos, 1usize..64).prop_map(|(p, n)| Edit::Duplicate(p, n)),
        (pos, any::<usize>()).prop_map(|(p, t)| Edit::Token(p, t)),
        (pos, any::<usize>(), any::<usize>()).prop_map(|(p, s, o)| Edit::Splice(p, s, o)),
    ]
}

/// Three in four inputs: a seed with 1 to 8 edits; else random bytes.
fn inputs(seeds: Vec<Vec<u8>>, dictionary: Vec<&'static [u8]>) -> BoxedStrategy<Vec<u8>> {
    let pool = seeds.clone();
    let mutated =
        (0..seeds.len(), proptest::collection::vec(edit(), 1..8)).prop_map(move |(i, edits)| {
            let mut data = pool[i].clone();
            for e in edits {
                apply(&mut data, e, &pool, &dictionary);
            }
            data.truncate(MAX_LEN);
            data
        });
    prop_oneof![
        3 => mutated,
        1 => proptest::collection::vec(any::<u8>(), 0..512),
    ]
    .boxed()
}

fn apply(data: &mut Vec<u8>, e: Edit, seeds: &[Vec<u8>], dictionary: &[&'static [u8]]) {
    let at = |p: usize, len: usize| if len == 0 { 0 } else { p % (len + 1) };
    match e {
        Edit::FlipBit(p, b) if !data.is_empty() => {
            let i = p % data.len();
            data[i] ^= 1 << b;
        }
        Edit::SetByte(p, v) if !data.is_empty() => {
            let i = p % data.len();
            data[i] = v;
        }
        Edit::Insert(p, v) => {
            let i = at(p, data.len());
            data.insert(i, v);
        }
        Edit::Delete(p, n) if !data.is_empty() => {
            let i = p % data.len();
            let end = (i + n).min(data.len());
            data.drain(i..end);
        }
        Edit::Duplicate(p, n) if !data.is_empty() => {
            let i = p % data.len();
            let end = (i + n).min(data.len());
            let copy = data[i..end].to_vec();
            data.splice(end..end, copy);
        }
        Edit::Token(p, t) if !dictionary.is_empty() => {
            let i = at(p, data.len());
            let token = dictionary[t % dictionary.len()];
            data.splice(i..i, token.iter().copied());
        }
        Edit::Splice(p, s, o) => {
            let other = &seeds[s % seeds.len()];
            if !other.is_empty() {
                let from = o % other.len();
                let end = (from + 64).min(other.len());
                let i = at(p, data.len());
                data.splice(i..i, other[from..end].iter().copied());
            }
        }
        _ => {}
    }
}

/// The repository's `fuzz/` directory.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Files of `fuzz/<dir>/<target>/`, sorted by name.
fn kept(target: &str, dir: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let path = fuzz_dir().join(dir).join(target);
    let Ok(entries) = std::fs::read_dir(&path) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect()
}

/// Writes a failing input under `target/fuzz/failures/<target>/`.
fn save_failure(target: &str, input: &[u8]) -> PathBuf {
    let dir = fuzz_dir().join("../target/fuzz/failures").join(target);
    let _ = std::fs::create_dir_all(&dir);
    let name = format!("failure-{:016x}", fnv(input));
    let path = dir.join(name);
    let _ = std::fs::write(&path, input);
    path
}

/// FNV-1a, to name a failure file after its content.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-text panic".into()
    }
}
