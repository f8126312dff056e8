//! Reading a flow file: YAML text to a checked [`Flow`].
//!
//! Reading goes in three steps, each for one reason:
//! 1. the YAML is parsed (serde-saphyr, with its resource budget against alias bombs) into a
//!    tree that remembers the line and column of every node and key;
//! 2. the tree becomes JSON and is deserialized into the typed [`Flow`], with the field path of
//!    the first type error (unknown key, wrong type) looked up in the tree's positions;
//! 3. [`crate::validate`] checks what types cannot (JSONPath, templates, cron, secrets) and
//!    reports every problem, each with its position.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;

use crate::canonical::{canonical_json, content_hash};
use crate::error::{Location, SpecError, SpecErrors};
use crate::flow::Flow;

/// Largest flow file accepted.
pub const MAX_FLOW_FILE_BYTES: usize = 1 << 20;
/// Deepest nesting accepted in a flow file.
pub const MAX_FLOW_DEPTH: usize = 64;

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
    let (value, index) = read_yaml(text, &file, MAX_FLOW_FILE_BYTES, "flow files")?;
    let flow: Flow = deserialize_located(&value, &index, &file)?;
    let problems = crate::validate::validate(&flow);
    if !problems.is_empty() {
        return Err(SpecErrors(
            problems
                .into_iter()
                .map(|p| SpecError {
                    file: file.clone(),
                    location: index.locate(&p.path),
                    path: p.path,
                    message: p.message,
                })
                .collect(),
        ));
    }
    let canonical = canonical_json(&flow);
    let hash = content_hash(&canonical);
    Ok(LoadedFlow {
        flow,
        canonical,
        hash,
        file,
    })
}

/// The shared first steps of reading a YAML document (flow or project file): size and nesting
/// caps, parsing, and conversion to JSON with every node's position. `kind` names the files in
/// messages ("flow files").
pub(crate) fn read_yaml(
    text: &str,
    file: &Option<PathBuf>,
    max: usize,
    kind: &str,
) -> Result<(Value, Index), SpecErrors> {
    if text.len() > max {
        return Err(SpecErrors::single(
            file.clone(),
            ".",
            format!(
                "the text is {} bytes; {kind} are at most {max} bytes",
                text.len()
            ),
        ));
    }
    let depth = rough_depth(text);
    if depth > MAX_FLOW_DEPTH {
        return Err(SpecErrors::single(
            file.clone(),
            ".",
            format!("nested {depth} levels deep; {kind} nest at most {MAX_FLOW_DEPTH} levels"),
        ));
    }
    let tree: Located = serde_saphyr::from_str(text).map_err(|e| {
        let location = e.location().and_then(|l| {
            (l.line() > 0).then(|| Location {
                line: l.line(),
                column: l.column(),
            })
        });
        SpecErrors(vec![SpecError {
            file: file.clone(),
            location,
            path: ".".into(),
            message: format!("invalid YAML: {}", first_line(&e.to_string())),
        }])
    })?;
    let mut index = Index::default();
    let value = tree
        .into_json(String::new(), &mut index, 0)
        .map_err(|m| SpecErrors::single(file.clone(), ".", m))?;
    Ok((value, index))
}

/// Deserializes a typed document, placing a type error (unknown key, wrong type) at its line
/// and column.
pub(crate) fn deserialize_located<T: serde::de::DeserializeOwned>(
    value: &Value,
    index: &Index,
    file: &Option<PathBuf>,
) -> Result<T, SpecErrors> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let location = index.locate_error(&path, &message);
        SpecErrors(vec![SpecError {
            file: file.clone(),
            location,
            path,
            message,
        }])
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

pub(crate) fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_string()
}

/// An upper bound on nesting from brackets and indentation, checked before parsing so a hostile
/// file cannot exhaust the stack of a recursive reader.
pub(crate) fn rough_depth(text: &str) -> usize {
    let mut flow_depth = 0usize;
    let mut max_flow = 0usize;
    let mut max_indent = 0usize;
    for line in text.lines() {
        let indent = line.len() - line.trim_start_matches([' ', '-']).len();
        max_indent = max_indent.max(indent / 2);
        for b in line.bytes() {
            match b {
                b'[' | b'{' => {
                    flow_depth += 1;
                    max_flow = max_flow.max(flow_depth);
                }
                b']' | b'}' => flow_depth = flow_depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    // Braces inside quoted strings count too; templates use two per placeholder, so halve the
    // bracket count's weight on a line basis only when it is clearly not nesting.
    max_indent.max(max_flow / 2)
}

/// Positions of every node and key, by field path in serde_path_to_error's spelling.
#[derive(Default)]
pub(crate) struct Index {
    nodes: HashMap<String, Location>,
    keys: HashMap<String, Location>,
}

impl Index {
    pub(crate) fn locate(&self, path: &str) -> Option<Location> {
        let mut p = path.to_string();
        loop {
            if let Some(l) = self.keys.get(&p).or_else(|| self.nodes.get(&p)) {
                return Some(*l);
            }
            match p.rfind(['.', '[']) {
                Some(i) => p.truncate(i),
                None => return self.nodes.get("").copied(),
            }
        }
    }

    /// For "unknown field `x`" the error's path is the map; the key itself is more useful.
    pub(crate) fn locate_error(&self, path: &str, message: &str) -> Option<Location> {
        if let Some(rest) = message.strip_prefix("unknown field `")
            && let Some(end) = rest.find('`')
        {
            let key = &rest[..end];
            let full = join(path, key);
            if let Some(l) = self.keys.get(&full) {
                return Some(*l);
            }
        }
        if let Some(rest) = message.strip_prefix("unknown variant `")
            && let Some(end) = rest.find('`')
        {
            let full = join(path, &rest[..end]);
            if let Some(l) = self.keys.get(&full) {
                return Some(*l);
            }
        }
        self.locate(path)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() || path == "." {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn loc(l: &serde_saphyr::Location) -> Location {
    Location {
        line: l.line(),
        column: l.column(),
    }
}

/// A YAML node with its position.
pub(crate) struct Located {
    at: Location,
    node: Node,
}

enum Node {
    Scalar(Value),
    Seq(Vec<Located>),
    Map(Vec<(Location, String, Located)>),
}

impl Located {
    pub(crate) fn into_json(
        self,
        path: String,
        index: &mut Index,
        depth: usize,
    ) -> Result<Value, String> {
        if depth > MAX_FLOW_DEPTH {
            return Err(format!("nested more than {MAX_FLOW_DEPTH} levels deep"));
        }
        if self.at.line > 0 {
            index.nodes.entry(path.clone()).or_insert(self.at);
        }
        Ok(match self.node {
            Node::Scalar(v) => v,
            Node::Seq(items) => Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, n)| n.into_json(format!("{path}[{i}]"), index, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            Node::Map(entries) => {
                let mut m = Map::with_capacity(entries.len());
                for (kloc, k, v) in entries {
                    let child = join(&path, &k);
                    if kloc.line > 0 {
                        index.keys.insert(child.clone(), kloc);
                    }
                    let v = v.into_json(child, index, depth + 1)?;
                    m.insert(k, v);
                }
                Value::Object(m)
            }
        })
    }
}

impl<'de> Deserialize<'de> for Located {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: Spanned<Node> = Spanned::deserialize(d)?;
        Ok(Located {
            at: loc(&s.referenced),
            node: s.value,
        })
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Scalar(Value::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Scalar(Value::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Number::from_f64(v)
            .map(|n| Node::Scalar(Value::Number(n)))
            .ok_or_else(|| E::custom("a number must be finite (no .nan or .inf)"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Scalar(Value::String(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Scalar(Value::String(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Located>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            let value: Located = map.next_value()?;
            entries.push((loc(&key.referenced), key.value.0, value));
        }
        Ok(Node::Map(entries))
    }
}

/// A mapping key as text (YAML allows numbers and booleans as keys).
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
                Ok(KeyText("null".into()))
            }
        }
        d.deserialize_any(V)
    }
}
