//! Errors of reading and checking a flow file.
//!
//! Every error names the file, the line and column, the field path (`destination.http.url`) and
//! what was expected, because the person reading it is fixing a YAML file in an editor.

use std::fmt;
use std::path::PathBuf;

/// A position in a flow file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub line: u64,
    pub column: u64,
}

/// One problem in a flow file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub file: Option<PathBuf>,
    pub location: Option<Location>,
    /// Field path, `.` for the whole document.
    pub path: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self
            .file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<flow>".to_string());
        match self.location {
            Some(l) => write!(f, "{file}:{}:{}: ", l.line, l.column)?,
            None => write!(f, "{file}: ")?,
        }
        if self.path.is_empty() || self.path == "." {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one flow file (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

impl SpecErrors {
    pub fn single(file: Option<PathBuf>, path: &str, message: impl Into<String>) -> Self {
        SpecErrors(vec![SpecError {
            file,
            location: None,
            path: path.to_string(),
            message: message.into(),
        }])
    }
}

/// Orders problems as they appear in the file (those without a position last), keeping the
/// order of problems at the same position: someone fixing a file goes from top to bottom.
pub(crate) fn sort_by_position(problems: &mut [SpecError]) {
    problems.sort_by_key(|p| {
        p.location
            .map_or((u64::MAX, u64::MAX), |l| (l.line, l.column))
    });
}
