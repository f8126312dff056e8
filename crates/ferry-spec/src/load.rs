//! Reading a flow file: YAML text to a checked [`Flow`].
//!
//! Reading goes in three steps, each for one reason:
//! 1. the YAML is parsed ([`crate::yaml`]: serde-saphyr with its budget against alias bombs,
//!    scalars resolved by the YAML 1.2 core schema) into a tree that remembers the line and
//!    column of every node and key;
//! 2. the tree is deserialized into the typed [`Flow`], with every type error (unknown key,
//!    wrong type, missing field) reported with its field path and position;
//! 3. [`crate::validate`] checks what types cannot (JSONPath, templates, cron, secrets) and
//!    reports every problem, each with its position.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::canonical::{canonical_json, content_hash};
use crate::error::{SpecError, SpecErrors};
use crate::flow::Flow;

/// Largest flow file accepted.
pub const MAX_FLOW_FILE_BYTES: usize = 1 << 20;
/// Deepest nesting accepted in a flow file.
pub const MAX_FLOW_DEPTH: usize = crate::yaml::MAX_DEPTH;

/// A flow read from a file, with its canonical form and content hash.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedFlow {
    pub flow: Flow,
    /// Canonical JSON: keys sorted, defaults written out, no whitespace.
    pub canonical: String,
    /// sha256 of `canonical`, hex.
    pub hash: String,
    /// Where it was read from.
    pub file: Option<PathBuf>,
}

/// Reads and checks a flow file.
pub fn load_file(path: &Path) -> Result<LoadedFlow, SpecErrors> {
    let text = read_text_file(path, MAX_FLOW_FILE_BYTES, "flow files are")?;
    load_str(&text, Some(path.to_path_buf()))
}

/// Reads a UTF-8 text file of at most `max` bytes (checked before reading); `limit_subject`
/// completes the message "…; <limit_subject> at most N bytes".
pub(crate) fn read_text_file(
    path: &Path,
    max: usize,
    limit_subject: &str,
) -> Result<String, SpecErrors> {
    let file = Some(path.to_path_buf());
    let meta = std::fs::metadata(path)
        .map_err(|e| SpecErrors::single(file.clone(), ".", format!("cannot read the file: {e}")))?;
    if meta.len() > max as u64 {
        return Err(SpecErrors::single(
            file,
            ".",
            format!(
                "the file is {} bytes; {limit_subject} at most {max} bytes",
                meta.len()
            ),
        ));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| SpecErrors::single(file.clone(), ".", format!("cannot read the file: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        SpecErrors::single(
            file,
            ".",
            format!(
                "the file is not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Reads and checks a flow from YAML text; `file` is used in error messages.
pub fn load_str(text: &str, file: Option<PathBuf>) -> Result<LoadedFlow, SpecErrors> {
    let doc = crate::yaml::parse(text, &file, MAX_FLOW_FILE_BYTES, "flow files")?;
    let read = crate::yaml::read::<Flow>(&doc, &file);
    // The checks types cannot express run on the flow as far as it could be read, so one pass
    // of `ferry validate` lists type errors and these problems together.
    let checked: Vec<SpecError> = read
        .value
        .as_ref()
        .map(crate::validate::validate)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !read.touches_problem(&p.path))
        .map(|p| SpecError {
            file: file.clone(),
            location: doc.index.locate(&p.path),
            path: p.path,
            message: p.message,
        })
        .collect();
    let (flow, mut problems) = (read.value, read.problems);
    problems.extend(checked);
    let flow = match flow {
        Some(flow) if problems.is_empty() => flow,
        _ => return Err(SpecErrors(problems)),
    };
    let canonical = canonical_json(&flow);
    let hash = content_hash(&canonical);
    Ok(LoadedFlow {
        flow,
        canonical,
        hash,
        file,
    })
}

/// Reads a flow back from its canonical JSON (as stored in a revision).
pub fn from_canonical(json: &str) -> Result<LoadedFlow, SpecErrors> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| SpecErrors::single(None, ".", format!("stored revision is not JSON: {e}")))?;
    let flow: Flow = serde_path_to_error::deserialize(&value)
        .map_err(|e| SpecErrors::single(None, &e.path().to_string(), e.inner().to_string()))?;
    let problems = crate::validate::validate(&flow);
    if let Some(p) = problems.into_iter().next() {
        return Err(SpecErrors::single(None, &p.path, p.message));
    }
    let canonical = canonical_json(&flow);
    let hash = content_hash(&canonical);
    Ok(LoadedFlow {
        flow,
        canonical,
        hash,
        file: None,
    })
}
