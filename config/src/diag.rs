//! Problems found in a config file, each pinned to `file:line:col`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What to do about it, when there is something specific to say.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config file {}: {source} (check the path given to --config)", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but has problems; all of them are listed, in file
    /// order.
    #[error("{}", DiagList(diagnostics))]
    Invalid {
        /// Every problem found, sorted by position.
        diagnostics: Vec<Diagnostic>,
    },
}

impl ConfigError {
    /// The problems found, empty for [`ConfigError::Read`].
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { diagnostics } => diagnostics,
        }
    }
}

struct DiagList<'a>(&'a [Diagnostic]);

impl fmt::Display for DiagList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Turns byte offsets of the source text into line and column, and collects
/// diagnostics.
pub(crate) struct Diags<'a> {
    text: &'a str,
    file: PathBuf,
    /// Byte offset at which each line starts.
    line_starts: Vec<usize>,
    found: Vec<Diagnostic>,
}

impl<'a> Diags<'a> {
    pub(crate) fn new(text: &'a str, file: &Path) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Diags {
            text,
            file: file.to_path_buf(),
            line_starts,
            found: Vec::new(),
        }
    }

    /// Line and column (both 1-based) of a byte offset.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        (line, column)
    }

    /// The 1-based line of a byte offset.
    pub(crate) fn line_of(&self, span: &Range<usize>) -> usize {
        self.position(span.start).0
    }

    /// Span of a table header such as `[ssh]` (first occurrence), or 0..0
    /// when the section is not written as a header.
    pub(crate) fn section_span(&self, name: &str) -> Range<usize> {
        let header = format!("[{name}]");
        for (i, &start) in self.line_starts.iter().enumerate() {
            let end = self
                .line_starts
                .get(i + 1)
                .copied()
                .unwrap_or(self.text.len());
            let line = &self.text[start..end];
            let trimmed = line.trim_start();
            let compact: String = trimmed.chars().filter(|c| !c.is_whitespace()).collect();
            if compact.starts_with(&header) {
                let at = start + (line.len() - trimmed.len());
                return at..at + 1;
            }
        }
        0..0
    }

    /// Records a problem at `span`.
    pub(crate) fn error(&mut self, span: &Range<usize>, message: impl Into<String>) {
        self.push(span, message.into(), None);
    }

    /// Records a problem at `span` with a hint on what to do.
    pub(crate) fn hint(
        &mut self,
        span: &Range<usize>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(span, message.into(), Some(hint.into()));
    }

    fn push(&mut self, span: &Range<usize>, message: String, hint: Option<String>) {
        let (line, column) = self.position(span.start);
        self.found.push(Diagnostic {
            file: self.file.clone(),
            line,
            column,
            message,
            hint,
        });
    }

    /// Whether any problem was recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// All problems, sorted by position.
    pub(crate) fn into_error(mut self) -> ConfigError {
        self.found.sort_by_key(|d| (d.line, d.column));
        ConfigError::Invalid {
            diagnostics: self.found,
        }
    }
}
