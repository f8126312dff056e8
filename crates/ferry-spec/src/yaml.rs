//! YAML as ferry reads it: the YAML 1.2 core schema, every node with its position, and typed
//! documents read with every type error reported, not just the first.
//!
//! Why this module exists: serde-saphyr parses the syntax well (anchors under an alias budget,
//! duplicate keys, positions), but it resolves plain scalars the YAML 1.1 way: `no` is false,
//! `NO` as a mapping key becomes `false`, `01234` a float and `1.10` loses its spelling. In a
//! field map that silently changes what is delivered (the "Norway problem"). So ferry lets
//! serde-saphyr parse, keeps every scalar's span in the source text, and resolves each plain
//! (unquoted, untagged) scalar itself from the text as written, by the YAML 1.2 core schema:
//!
//! | written | value |
//! |---|---|
//! | `null`, `Null`, `NULL`, `~`, nothing | null |
//! | `true`, `True`, `TRUE`, `false`, `False`, `FALSE` | a boolean |
//! | `[-+]?[0-9]+`, `0o[0-7]+`, `0x[0-9a-fA-F]+` | an integer (64 bits; `01234` is 1234) |
//! | `[-+]?(\.[0-9]+\|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` | a number (`1.10` is 1.1) |
//! | `.inf`, `.nan` and their spellings | an error: JSON has neither |
//! | anything else (`no`, `yes`, `on`, `y`, `0b1`, `1_000`) | text |
//!
//! Where a document's type is text (a `String` field, a mapping key, a template, a parameter) a
//! plain scalar is the text the operator wrote, whatever it resolves to: `1.10` is "1.10", `no`
//! is "no". Quoted and block scalars are always text; explicit tags (`!!str`, `!!int`) are
//! honoured; tags ferry does not know are refused.
//!
//! Typed documents are deserialized from this tree by [`NodeDe`], a serde `Deserializer` that
//! answers `deserialize_str` and mapping keys with the text as written, `deserialize_any` with
//! the core-schema value, and the [`as_written`] hint (for types that take "text or a map")
//! with text for any scalar. It tracks the field path of the node where an error starts. To
//! report every type error of a file, [`deserialize`] reads the document again after each
//! error with the node that caused it hidden; an error that only follows from a hidden node
//! (the `missing field` of a field whose value was wrong) is not reported again.
//!
//! Cost: a file with N type errors is read N+1 times (each read is a walk of an in-memory tree;
//! the count is capped by [`MAX_PROBLEMS`]).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use serde_saphyr::{Spanned, Tagged};

use crate::error::{Location, SpecError, SpecErrors};

/// Deepest nesting accepted in a flow or project file.
pub const MAX_DEPTH: usize = 64;
/// Most type errors reported for one file; a file with more is reported with these first.
pub const MAX_PROBLEMS: usize = 50;

/// Name of the newtype struct a type asks for through [`as_written`].
const AS_WRITTEN: &str = "$ferry::as_written";

/// A parsed document: its tree and the position of every node and key by field path.
pub(crate) struct Doc {
    pub(crate) root: Node,
    pub(crate) index: Index,
}

/// A YAML node with its core-schema resolution.
pub(crate) struct Node {
    /// Position in pre-order, unique in the document: how a read hides a node.
    id: usize,
    kind: Kind,
}

enum Kind {
    Scalar(Scalar),
    Seq(Vec<Node>),
    /// Keys as text, in file order.
    Map(Vec<(String, Node)>),
}

/// A scalar: the text as written (a plain scalar's source text; a quoted or block scalar's
/// content) and its value.
struct Scalar {
    text: String,
    value: Resolved,
}

/// What a scalar means where a document takes any value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Resolved {
    Null,
    Bool(bool),
    /// A negative integer.
    Int(i64),
    /// A non-negative integer.
    UInt(u64),
    Float(f64),
    /// The scalar is its text.
    Text,
    /// It cannot be a value (an integer beyond 64 bits); the message says why. It can still be
    /// read as text.
    Invalid(String),
}

impl Node {
    /// True for a null scalar (an empty document is one).
    pub(crate) fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar(s) if s.value == Resolved::Null)
    }
}

// ---------------------------------------------------------------------------------------------
// The core schema

/// Resolves a plain scalar's text by the YAML 1.2 core schema. `Err` is for the non-finite
/// floats, which JSON cannot hold.
pub(crate) fn resolve_plain(text: &str) -> Result<Resolved, String> {
    Ok(match text {
        "" | "~" | "null" | "Null" | "NULL" => Resolved::Null,
        "true" | "True" | "TRUE" => Resolved::Bool(true),
        "false" | "False" | "FALSE" => Resolved::Bool(false),
        _ if is_non_finite(text) => return Err(non_finite_message(text)),
        _ => {
            if let Some(digits) = text.strip_prefix("0o") {
                radix_int(text, digits, 8)
            } else if let Some(digits) = text.strip_prefix("0x") {
                radix_int(text, digits, 16)
            } else if is_decimal_int(text) {
                decimal_int(text)
            } else if is_float(text) {
                match text.parse::<f64>() {
                    Ok(f) if f.is_finite() => Resolved::Float(f),
                    _ => return Err(non_finite_message(text)),
                }
            } else {
                Resolved::Text
            }
        }
    })
}

fn is_non_finite(text: &str) -> bool {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    matches!(unsigned, ".inf" | ".Inf" | ".INF") || matches!(text, ".nan" | ".NaN" | ".NAN")
}

fn non_finite_message(text: &str) -> String {
    format!(
        "`{text}` is not a number JSON can hold (no infinity, NaN or numbers beyond 64-bit floats): quote it (\"{text}\") to keep it as text"
    )
}

fn radix_int(text: &str, digits: &str, radix: u32) -> Resolved {
    let valid = !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix));
    if !valid {
        return Resolved::Text;
    }
    match u64::from_str_radix(digits, radix) {
        Ok(n) => Resolved::UInt(n),
        Err(_) => too_big(text),
    }
}

fn is_decimal_int(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn decimal_int(text: &str) -> Resolved {
    let unsigned = text.strip_prefix('+').unwrap_or(text);
    if unsigned.starts_with('-') {
        match unsigned.parse::<i64>() {
            Ok(0) => Resolved::UInt(0),
            Ok(n) => Resolved::Int(n),
            Err(_) => too_big(text),
        }
    } else {
        match unsigned.parse::<u64>() {
            Ok(n) => Resolved::UInt(n),
            Err(_) => too_big(text),
        }
    }
}

fn too_big(text: &str) -> Resolved {
    Resolved::Invalid(format!(
        "`{text}` does not fit in a 64-bit integer: quote it (\"{text}\") to keep it as text"
    ))
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_float(text: &str) -> bool {
    let b = text.strip_prefix(['-', '+']).unwrap_or(text).as_bytes();
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut i = digits(0);
    if i == 0 {
        // `.5`
        if b.first() != Some(&b'.') || digits(1) == 0 {
            return false;
        }
        i = 1 + digits(1);
    } else if b.get(i) == Some(&b'.') {
        i += 1 + digits(i + 1);
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let n = digits(i);
        if n == 0 {
            return false;
        }
        i += n;
    }
    i == b.len()
}

/// YAML 1.1 spellings of booleans that are text in YAML 1.2, for a hint when a boolean setting
/// gets one.
fn yaml11_bool(text: &str) -> bool {
    matches!(
        text.to_ascii_lowercase().as_str(),
        "yes" | "no" | "on" | "off" | "y" | "n"
    )
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// Parses a YAML document (flow or project file) into a resolved tree with positions: size and
/// nesting caps first, then serde-saphyr, then the core schema. `kind` names the files in
/// messages ("flow files").
pub(crate) fn parse(
    text: &str,
    file: &Option<PathBuf>,
    max: usize,
    kind: &str,
) -> Result<Doc, SpecErrors> {
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
    if depth > MAX_DEPTH {
        return Err(SpecErrors::single(
            file.clone(),
            ".",
            format!("nested {depth} levels deep; {kind} nest at most {MAX_DEPTH} levels"),
        ));
    }
    let options = serde_saphyr::options! { reject_unsupported_tags: true };
    let raw: Raw = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let location = e.location().and_then(|l| {
            (l.line() > 0).then(|| Location {
                line: l.line(),
                column: l.column(),
            })
        });
        let message = match e.without_snippet() {
            serde_saphyr::Error::NonFiniteFloat { value, .. } => non_finite_message(value),
            _ => format!("invalid YAML: {}", first_line(&e.to_string())),
        };
        SpecErrors(vec![SpecError {
            file: file.clone(),
            location,
            path: ".".into(),
            message,
        }])
    })?;
    let mut builder = Builder {
        text,
        index: Index::default(),
        next_id: 0,
    };
    let root = builder
        .node(raw, String::new(), 0)
        .map_err(|(location, message)| {
            SpecErrors(vec![SpecError {
                file: file.clone(),
                location,
                path: ".".into(),
                message,
            }])
        })?;
    Ok(Doc {
        root,
        index: builder.index,
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

/// A node as serde-saphyr hands it over: its value (resolved the YAML 1.1 way), tag and spans.
struct Raw {
    /// Where the node is used (an alias: the alias).
    at: Location,
    /// Byte range of the scalar's text where it is defined (an alias: the anchored node).
    span: Option<(usize, usize)>,
    tagged: bool,
    kind: RawKind,
}

enum RawKind {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(String),
    Seq(Vec<Raw>),
    Map(Vec<(Raw, Raw)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: Spanned<Tagged<RawKind>> = Spanned::deserialize(d)?;
        let span = s.defined.span();
        Ok(Raw {
            at: Location {
                line: s.referenced.line(),
                column: s.referenced.column(),
            },
            span: span
                .byte_offset()
                .zip(span.byte_len())
                .and_then(|(o, l)| Some((usize::try_from(o).ok()?, usize::try_from(l).ok()?))),
            tagged: s.value.1.is_some(),
            kind: s.value.0,
        })
    }
}

impl<'de> Deserialize<'de> for RawKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawKind;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawKind, E> {
        Ok(RawKind::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawKind, E> {
        Ok(RawKind::I64(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawKind, E> {
        Ok(RawKind::U64(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawKind, E> {
        // Beyond 64 bits: resolved from the text like every untagged non-text scalar.
        Ok(RawKind::F64(v as f64))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawKind, E> {
        Ok(RawKind::F64(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawKind, E> {
        Ok(RawKind::F64(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawKind, E> {
        Ok(RawKind::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<RawKind, E> {
        Ok(RawKind::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawKind, E> {
        Ok(RawKind::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<RawKind, E> {
        Ok(RawKind::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawKind, D::Error> {
        d.deserialize_any(RawVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawKind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Raw>()? {
            items.push(item);
        }
        Ok(RawKind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawKind, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Raw>()? {
            let value: Raw = map.next_value()?;
            entries.push((key, value));
        }
        Ok(RawKind::Map(entries))
    }
}

/// Turns serde-saphyr's nodes into resolved ones, recording positions.
struct Builder<'t> {
    text: &'t str,
    index: Index,
    next_id: usize,
}

type BuildError = (Option<Location>, String);

fn known(at: Location) -> Option<Location> {
    (at.line > 0).then_some(at)
}

impl Builder<'_> {
    fn node(&mut self, raw: Raw, path: String, depth: usize) -> Result<Node, BuildError> {
        if depth > MAX_DEPTH {
            return Err((
                known(raw.at),
                format!("nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        let id = self.next_id;
        self.next_id += 1;
        if raw.at.line > 0 {
            self.index.nodes.entry(path.clone()).or_insert(raw.at);
        }
        let kind = match raw.kind {
            RawKind::Seq(items) => Kind::Seq(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, n)| self.node(n, format!("{path}[{i}]"), depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            RawKind::Map(entries) => {
                let mut out = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    let key_at = k.at;
                    let key = self.key_text(k)?;
                    let child = join(&path, &key);
                    if key_at.line > 0 {
                        self.index.keys.insert(child.clone(), key_at);
                    }
                    let value = self.node(v, child, depth + 1)?;
                    out.push((key, value));
                }
                Kind::Map(out)
            }
            _ => Kind::Scalar(self.scalar(raw)?),
        };
        Ok(Node { id, kind })
    }

    /// The text of a scalar as written in the file: the source slice of a plain scalar.
    fn written(&self, raw: &Raw) -> Option<String> {
        let (start, len) = raw.span?;
        self.text
            .get(start..start.checked_add(len)?)
            .map(str::to_string)
    }

    fn scalar(&self, raw: Raw) -> Result<Scalar, BuildError> {
        // serde-saphyr hands quoted, block and `!!str` scalars over as text, and resolves a
        // superset of the core schema's non-text forms; so a scalar it hands over as text is
        // text here too, and only the others are resolved again, from their source text.
        if let RawKind::Str(s) = raw.kind {
            return Ok(Scalar {
                text: s,
                value: Resolved::Text,
            });
        }
        let written = self.written(&raw);
        let value = match (&raw.kind, raw.tagged) {
            // An explicit tag (`!!int 12`, `!!bool true`) is the operator's word.
            (RawKind::Null, true) => Resolved::Null,
            (RawKind::Bool(b), true) => Resolved::Bool(*b),
            (RawKind::I64(n), true) if *n < 0 => Resolved::Int(*n),
            (RawKind::I64(n), true) => Resolved::UInt(n.unsigned_abs()),
            (RawKind::U64(n), true) => Resolved::UInt(*n),
            (RawKind::F64(f), true) if f.is_finite() => Resolved::Float(*f),
            _ => match &written {
                Some(w) => resolve_plain(w).map_err(|m| (known(raw.at), m))?,
                None => {
                    return Err((
                        known(raw.at),
                        "cannot find this value's text in the file".to_string(),
                    ));
                }
            },
        };
        Ok(Scalar {
            text: written.unwrap_or_default(),
            value,
        })
    }

    /// A mapping key is text: as written when plain (`NO` is "NO", `1.10` is "1.10").
    fn key_text(&self, raw: Raw) -> Result<String, BuildError> {
        match raw.kind {
            RawKind::Str(s) => Ok(s),
            RawKind::Seq(_) | RawKind::Map(_) => Err((
                known(raw.at),
                "a mapping key must be a scalar (text, a number or true/false)".to_string(),
            )),
            _ => self.written(&raw).ok_or_else(|| {
                (
                    known(raw.at),
                    "cannot find this key's text in the file".to_string(),
                )
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Positions

/// Positions of every node and key, by field path (`source.http.url`, `tests[0].input`).
#[derive(Default)]
pub(crate) struct Index {
    nodes: HashMap<String, Location>,
    keys: HashMap<String, Location>,
}

impl Index {
    /// The position of `path`: its key when it has one, else its node, else its nearest
    /// ancestor's.
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
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() || path == "." {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

// ---------------------------------------------------------------------------------------------
// Typed documents

/// Deserializes a typed document from the tree, reporting every type error (unknown key, wrong
/// type, missing field) with its field path and position, in file order.
#[cfg(test)]
pub(crate) fn deserialize<T: de::DeserializeOwned>(
    doc: &Doc,
    file: &Option<PathBuf>,
) -> Result<T, SpecErrors> {
    let read = read::<T>(doc, file);
    match read.value {
        Some(v) if read.problems.is_empty() => Ok(v),
        _ => Err(SpecErrors(read.problems)),
    }
}

/// What [`read`] found.
pub(crate) struct Read<T> {
    /// The document without the nodes that had type errors, when it could be read that way
    /// (every wrong value was optional): further checks can still run on it.
    pub(crate) value: Option<T>,
    /// Every type error, in file order; empty when `value` is the whole document.
    pub(crate) problems: Vec<SpecError>,
}

impl<T> Read<T> {
    /// True when `path` is where a type error was, or inside or around it: a later check of
    /// the partly read document says nothing useful there.
    pub(crate) fn touches_problem(&self, path: &str) -> bool {
        let within = |outer: &str, inner: &str| {
            inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        };
        self.problems
            .iter()
            .any(|p| p.path == "." || within(&p.path, path) || within(path, &p.path))
    }
}

/// Reads a typed document from the tree, collecting every type error (unknown key, wrong type,
/// missing field) with its field path and position, in file order.
pub(crate) fn read<T: de::DeserializeOwned>(doc: &Doc, file: &Option<PathBuf>) -> Read<T> {
    let mut hidden = HashSet::new();
    let mut problems: Vec<SpecError> = Vec::new();
    let mut value = None;
    // Each round hides at least one more node, so the loop ends; the cap bounds the time a
    // hostile file can take.
    for _ in 0..MAX_PROBLEMS * 4 {
        let ctx = Ctx {
            hidden: &hidden,
            failure: RefCell::new(None),
        };
        let root = Seg::Root;
        let error = match T::deserialize(NodeDe {
            node: &doc.root,
            path: &root,
            ctx: &ctx,
        }) {
            Ok(v) => {
                value = Some(v);
                break;
            }
            Err(e) => e,
        };
        let failure = ctx.failure.into_inner().unwrap_or(Failure {
            node: doc.root.id,
            path: ".".into(),
            follows: false,
        });
        if !failure.follows {
            problems.push(SpecError {
                file: file.clone(),
                location: doc.index.locate(&failure.path),
                path: failure.path,
                message: error.0,
            });
        }
        if failure.node == doc.root.id || problems.len() >= MAX_PROBLEMS {
            break;
        }
        hidden.insert(failure.node);
    }
    if problems.is_empty() && value.is_none() {
        problems.push(SpecError {
            file: file.clone(),
            location: None,
            path: ".".into(),
            message: "the document does not have the expected shape".into(),
        });
    }
    crate::error::sort_by_position(&mut problems);
    Read { value, problems }
}

/// Asks for a value that is text or a structure: with ferry's reader a non-null scalar comes to
/// `visitor` as its text as written (`visit_str`), a mapping or sequence as itself. Other
/// deserializers (the canonical JSON of a stored revision) give their values as they are.
pub(crate) fn as_written<'de, D: Deserializer<'de>, V: Visitor<'de>>(
    d: D,
    visitor: V,
) -> Result<V::Value, D::Error> {
    d.deserialize_newtype_struct(AS_WRITTEN, AsWritten(visitor))
}

/// A scalar as text (`eu`, `8080`, `true`, `1.10` as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Text(pub(crate) String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a text, a number or true/false")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        as_written(d, V)
    }
}

/// Forwards to the inner visitor; unwraps the [`AS_WRITTEN`] newtype other deserializers hand
/// back.
struct AsWritten<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for AsWritten<V> {
    type Value = V::Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        d.deserialize_any(self.0)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<V::Value, E> {
        self.0.visit_bool(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<V::Value, E> {
        self.0.visit_i64(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<V::Value, E> {
        self.0.visit_u64(v)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<V::Value, E> {
        self.0.visit_f64(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        self.0.visit_str(v)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        self.0.visit_borrowed_str(v)
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
        self.0.visit_string(v)
    }
    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_unit()
    }
    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_none()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_some(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.0.visit_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(map)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.0.visit_enum(data)
    }
}

/// An error while reading a typed document; where it happened is in [`Ctx::failure`].
#[derive(Debug)]
pub(crate) struct DeError(String);

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError(msg.to_string())
    }
}

/// One read of a document: the nodes hidden by earlier reads, and where this read failed.
struct Ctx<'h> {
    hidden: &'h HashSet<usize>,
    failure: RefCell<Option<Failure>>,
}

/// The innermost node an error started at.
struct Failure {
    /// The node to hide in the next read.
    node: usize,
    path: String,
    /// The error only follows from a node hidden earlier: not reported.
    follows: bool,
}

/// A field path, built on the stack as the reader descends and written out only on failure.
#[derive(Clone, Copy)]
enum Seg<'a> {
    Root,
    Key(&'a Seg<'a>, &'a str),
    Index(&'a Seg<'a>, usize),
}

impl Seg<'_> {
    /// serde_path_to_error's spelling: `a.b[0].c`, `.` for the document.
    fn render(&self) -> String {
        let mut parts = Vec::new();
        let mut at = self;
        loop {
            match at {
                Seg::Root => break,
                Seg::Key(parent, key) => {
                    parts.push(Err(*key));
                    at = parent;
                }
                Seg::Index(parent, i) => {
                    parts.push(Ok(*i));
                    at = parent;
                }
            }
        }
        if parts.is_empty() {
            return ".".into();
        }
        let mut out = String::new();
        for part in parts.into_iter().rev() {
            match part {
                Ok(i) => out.push_str(&format!("[{i}]")),
                Err(key) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                }
            }
        }
        out
    }
}

/// Deserializes one node.
struct NodeDe<'a> {
    node: &'a Node,
    path: &'a Seg<'a>,
    ctx: &'a Ctx<'a>,
}

impl NodeDe<'_> {
    /// Records this node as where `r` failed, unless a node inside it already was.
    fn track<T>(&self, r: Result<T, DeError>) -> Result<T, DeError> {
        if let Err(e) = &r {
            let follows = self.follows_from_hidden(&e.0);
            self.fail(follows);
        }
        r
    }

    fn fail(&self, follows: bool) {
        let mut f = self.ctx.failure.borrow_mut();
        if f.is_none() {
            *f = Some(Failure {
                node: self.node.id,
                path: self.path.render(),
                follows,
            });
        }
    }

    /// `missing field `x`` of a mapping whose `x` an earlier read hid.
    fn follows_from_hidden(&self, message: &str) -> bool {
        let Kind::Map(entries) = &self.node.kind else {
            return false;
        };
        let Some(name) = message
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        else {
            return false;
        };
        entries
            .iter()
            .any(|(k, v)| k == name && self.ctx.hidden.contains(&v.id))
    }

    fn scalar_text(&self) -> Option<&str> {
        match &self.node.kind {
            Kind::Scalar(s) if s.value != Resolved::Null => Some(&s.text),
            _ => None,
        }
    }

    fn any<'de, V: Visitor<'de>>(&self, v: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Scalar(s) => match &s.value {
                Resolved::Null => v.visit_unit(),
                Resolved::Bool(b) => v.visit_bool(*b),
                Resolved::Int(n) => v.visit_i64(*n),
                Resolved::UInt(n) => v.visit_u64(*n),
                Resolved::Float(f) => v.visit_f64(*f),
                Resolved::Text => v.visit_str(&s.text),
                Resolved::Invalid(m) => Err(DeError(m.clone())),
            },
            Kind::Seq(items) => {
                let mut access = SeqAcc {
                    items,
                    pos: 0,
                    path: self.path,
                    ctx: self.ctx,
                };
                let out = v.visit_seq(&mut access)?;
                match access.remaining() {
                    0 => Ok(out),
                    n => Err(de::Error::invalid_length(
                        access.pos + n,
                        &"fewer elements in the sequence",
                    )),
                }
            }
            Kind::Map(entries) => {
                let mut access = MapAcc {
                    entries,
                    pos: 0,
                    path: self.path,
                    ctx: self.ctx,
                };
                let out = v.visit_map(&mut access)?;
                match access.remaining() {
                    0 => Ok(out),
                    n => Err(de::Error::invalid_length(
                        n,
                        &"fewer entries in the mapping",
                    )),
                }
            }
        }
    }

    /// The entries of a mapping not hidden.
    fn visible_entries(&self, entries: &'_ [(String, Node)]) -> usize {
        entries
            .iter()
            .filter(|(_, v)| !self.ctx.hidden.contains(&v.id))
            .count()
    }
}

macro_rules! forward_to_any {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
                self.deserialize_any(v)
            }
        )*
    };
}

impl<'de> Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = self.any(v);
        self.track(r)
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = match self.scalar_text() {
            Some(t) => v.visit_str(t),
            None => self.any(v),
        };
        self.track(r)
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            Kind::Scalar(s) if s.value == Resolved::Text && yaml11_bool(&s.text) => {
                Err(DeError(format!(
                    "`{}` is text, not a boolean (flow files follow YAML 1.2): write true or false",
                    s.text
                )))
            }
            _ => self.any(v),
        };
        self.track(r)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = if self.node.is_null() {
            v.visit_none()
        } else {
            v.visit_some(NodeDe {
                node: self.node,
                path: self.path,
                ctx: self.ctx,
            })
        };
        self.track(r)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        let r = if name == AS_WRITTEN {
            match self.scalar_text() {
                Some(t) => v.visit_str(t),
                None => self.any(v),
            }
        } else {
            v.visit_newtype_struct(NodeDe {
                node: self.node,
                path: self.path,
                ctx: self.ctx,
            })
        };
        self.track(r)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            Kind::Scalar(s) if s.value != Resolved::Null => v.visit_enum(UnitOnly(&s.text)),
            Kind::Map(entries) => match self.visible_entries(entries) {
                1 => {
                    let (key, value) = entries
                        .iter()
                        .find(|(_, v)| !self.ctx.hidden.contains(&v.id))
                        .map(|(k, v)| (k.as_str(), v))
                        .ok_or_else(|| DeError("no visible entry".into()))?;
                    v.visit_enum(MapEnum {
                        key,
                        value,
                        path: self.path,
                        ctx: self.ctx,
                    })
                }
                0 if !entries.is_empty() => {
                    // Its only entry was hidden after an error of its own.
                    self.fail(true);
                    Err(DeError("its only entry is wrong".into()))
                }
                n => Err(DeError(format!(
                    "expected one key, one of {}; found {n}",
                    one_of(variants)
                ))),
            },
            _ => self.any(v),
        };
        self.track(r)
    }

    forward_to_any! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64 deserialize_bytes deserialize_byte_buf
        deserialize_unit deserialize_seq deserialize_map deserialize_ignored_any
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(v)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, DeError> {
        self.deserialize_any(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(v)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(v)
    }
}

fn one_of(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The elements of a sequence not hidden, with their indices in the file.
struct SeqAcc<'a> {
    items: &'a [Node],
    pos: usize,
    path: &'a Seg<'a>,
    ctx: &'a Ctx<'a>,
}

impl SeqAcc<'_> {
    fn skip_hidden(&mut self) {
        while self
            .items
            .get(self.pos)
            .is_some_and(|n| self.ctx.hidden.contains(&n.id))
        {
            self.pos += 1;
        }
    }

    fn remaining(&self) -> usize {
        self.items[self.pos.min(self.items.len())..]
            .iter()
            .filter(|n| !self.ctx.hidden.contains(&n.id))
            .count()
    }
}

impl<'de> SeqAccess<'de> for &mut SeqAcc<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        self.skip_hidden();
        let Some(node) = self.items.get(self.pos) else {
            return Ok(None);
        };
        let i = self.pos;
        self.pos += 1;
        let seg = Seg::Index(self.path, i);
        seed.deserialize(NodeDe {
            node,
            path: &seg,
            ctx: self.ctx,
        })
        .map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.remaining())
    }
}

/// The entries of a mapping not hidden. Keys are text.
struct MapAcc<'a> {
    entries: &'a [(String, Node)],
    pos: usize,
    path: &'a Seg<'a>,
    ctx: &'a Ctx<'a>,
}

impl MapAcc<'_> {
    fn remaining(&self) -> usize {
        self.entries[self.pos.min(self.entries.len())..]
            .iter()
            .filter(|(_, v)| !self.ctx.hidden.contains(&v.id))
            .count()
    }
}

impl<'de> MapAccess<'de> for &mut MapAcc<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        while self
            .entries
            .get(self.pos)
            .is_some_and(|(_, v)| self.ctx.hidden.contains(&v.id))
        {
            self.pos += 1;
        }
        let Some((key, value)) = self.entries.get(self.pos) else {
            return Ok(None);
        };
        let key_de: de::value::StrDeserializer<'_, DeError> = key.as_str().into_deserializer();
        seed.deserialize(key_de).map(Some).inspect_err(|_| {
            // An unknown key: the entry is what a later read hides.
            let seg = Seg::Key(self.path, key);
            let mut f = self.ctx.failure.borrow_mut();
            if f.is_none() {
                *f = Some(Failure {
                    node: value.id,
                    path: seg.render(),
                    follows: false,
                });
            }
        })
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (key, value) = self
            .entries
            .get(self.pos)
            .ok_or_else(|| DeError("a value was asked for before its key".into()))?;
        self.pos += 1;
        let seg = Seg::Key(self.path, key);
        seed.deserialize(NodeDe {
            node: value,
            path: &seg,
            ctx: self.ctx,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.remaining())
    }
}

/// An enum written as its variant's name (`trim`, `PUT`).
struct UnitOnly<'a>(&'a str);

impl<'de> de::EnumAccess<'de> for UnitOnly<'_> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), DeError> {
        let name: de::value::StrDeserializer<'_, DeError> = self.0.into_deserializer();
        Ok((seed.deserialize(name)?, self))
    }
}

impl<'de> de::VariantAccess<'de> for UnitOnly<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value, DeError> {
        Err(self.needs_value())
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _v: V) -> Result<V::Value, DeError> {
        Err(self.needs_value())
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _v: V,
    ) -> Result<V::Value, DeError> {
        Err(self.needs_value())
    }
}

impl UnitOnly<'_> {
    fn needs_value(&self) -> DeError {
        DeError(format!(
            "`{0}` needs a value: write `{{ {0}: ... }}`",
            self.0
        ))
    }
}

/// An enum written as a mapping with one key, the variant (`{ multiply: 100 }`).
struct MapEnum<'a> {
    key: &'a str,
    value: &'a Node,
    path: &'a Seg<'a>,
    ctx: &'a Ctx<'a>,
}

impl<'de> de::EnumAccess<'de> for MapEnum<'_> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), DeError> {
        let name: de::value::StrDeserializer<'_, DeError> = self.key.into_deserializer();
        match seed.deserialize(name) {
            Ok(v) => Ok((v, self)),
            Err(e) => {
                // An unknown variant: reported at its key, and its entry is what a later read
                // hides.
                let seg = Seg::Key(self.path, self.key);
                let mut f = self.ctx.failure.borrow_mut();
                if f.is_none() {
                    *f = Some(Failure {
                        node: self.value.id,
                        path: seg.render(),
                        follows: false,
                    });
                }
                Err(e)
            }
        }
    }
}

impl<'de> de::VariantAccess<'de> for MapEnum<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        if self.value.is_null() {
            Ok(())
        } else {
            let seg = Seg::Key(self.path, self.key);
            let de = NodeDe {
                node: self.value,
                path: &seg,
                ctx: self.ctx,
            };
            de.track(Err(DeError(format!(
                "`{0}` takes no value: write `{0}` alone",
                self.key
            ))))
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        let seg = Seg::Key(self.path, self.key);
        seed.deserialize(NodeDe {
            node: self.value,
            path: &seg,
            ctx: self.ctx,
        })
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, DeError> {
        let seg = Seg::Key(self.path, self.key);
        NodeDe {
            node: self.value,
            path: &seg,
            ctx: self.ctx,
        }
        .deserialize_any(v)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        let seg = Seg::Key(self.path, self.key);
        NodeDe {
            node: self.value,
            path: &seg,
            ctx: self.ctx,
        }
        .deserialize_any(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row per line of the core schema table in the module docs.
    #[test]
    fn plain_scalars_resolve_by_the_core_schema() {
        use Resolved::*;
        let rows: &[(&str, Resolved)] = &[
            ("", Null),
            ("~", Null),
            ("null", Null),
            ("Null", Null),
            ("NULL", Null),
            ("true", Bool(true)),
            ("True", Bool(true)),
            ("TRUE", Bool(true)),
            ("false", Bool(false)),
            ("FALSE", Bool(false)),
            ("01234", UInt(1234)),
            ("-17", Int(-17)),
            ("+17", UInt(17)),
            ("-0", UInt(0)),
            ("0o17", UInt(15)),
            ("0x1F", UInt(31)),
            ("0xff", UInt(255)),
            ("1.10", Float(1.1)),
            ("-.5", Float(-0.5)),
            (".5", Float(0.5)),
            ("1.", Float(1.0)),
            ("1e3", Float(1000.0)),
            ("1E-2", Float(0.01)),
            ("+2.5e+1", Float(25.0)),
            // text in YAML 1.2 that YAML 1.1 read otherwise
            ("no", Text),
            ("NO", Text),
            ("yes", Text),
            ("on", Text),
            ("off", Text),
            ("y", Text),
            ("n", Text),
            ("nO", Text),
            ("0b101", Text),
            ("1_000", Text),
            ("+0x1F", Text),
            ("-0o7", Text),
            ("0o8", Text),
            ("0x", Text),
            ("1e", Text),
            ("1.2.3", Text),
            (".", Text),
            ("+", Text),
            (".infinity", Text),
            ("12:30:00", Text),
            ("2024-01-01", Text),
        ];
        for (text, want) in rows {
            assert_eq!(&resolve_plain(text).unwrap(), want, "{text:?}");
        }
        for text in [
            ".inf", "-.inf", "+.INF", ".Inf", ".nan", ".NaN", ".NAN", "1e999",
        ] {
            let e = resolve_plain(text).unwrap_err();
            assert!(e.contains("quote it"), "{text}: {e}");
        }
        for text in [
            "99999999999999999999",
            "-9223372036854775809",
            "0x1FFFFFFFFFFFFFFFF",
        ] {
            assert!(
                matches!(resolve_plain(text).unwrap(), Invalid(ref m) if m.contains("64-bit")),
                "{text}"
            );
        }
        assert_eq!(
            resolve_plain("18446744073709551615").unwrap(),
            UInt(u64::MAX)
        );
        assert_eq!(
            resolve_plain("-9223372036854775808").unwrap(),
            Int(i64::MIN)
        );
    }

    fn doc(text: &str) -> Doc {
        parse(text, &None, 1 << 20, "test files").unwrap()
    }

    fn value(text: &str) -> serde_json::Value {
        deserialize(&doc(text), &None).unwrap()
    }

    #[test]
    fn values_keys_and_text_follow_the_core_schema() {
        let v = value(
            "a: no\nb: 01234\nc: 1.10\nd: ~\ne:\nf: \"no\"\ng: !!str 12\nh: !!bool true\nNO: x\n1.10: y\n~: z\n",
        );
        assert_eq!(
            v,
            serde_json::json!({
                "a": "no", "b": 1234, "c": 1.1, "d": null, "e": null, "f": "no", "g": "12",
                "h": true, "NO": "x", "1.10": "y", "~": "z"
            })
        );
        #[derive(Deserialize, Debug, PartialEq)]
        struct T {
            a: String,
            b: String,
            c: Text,
            d: Option<String>,
        }
        let t: T = deserialize(&doc("a: no\nb: 1.10\nc: 0x1F\nd: ~\n"), &None).unwrap();
        assert_eq!(
            t,
            T {
                a: "no".into(),
                b: "1.10".into(),
                c: Text("0x1F".into()),
                d: None
            }
        );
    }

    #[test]
    fn aliases_are_resolved_from_the_anchored_text() {
        let v = value("a: &x 01\nb: *x\nc: &y no\nd: *y\n");
        assert_eq!(v, serde_json::json!({"a": 1, "b": 1, "c": "no", "d": "no"}));
    }

    #[test]
    fn non_finite_numbers_and_unknown_tags_are_refused_with_their_line() {
        for (text, line, want) in [
            ("a: 1\nb: .inf\n", 2, "`.inf` is not a number JSON can hold"),
            (
                "a: 1\n\nc: [1, .NaN]\n",
                3,
                "`.NaN` is not a number JSON can hold",
            ),
            ("a: !secret x\n", 1, "unsupported tag"),
        ] {
            let e = parse(text, &None, 1 << 20, "test files").err().unwrap();
            assert_eq!(e.0[0].location.map(|l| l.line), Some(line), "{e}");
            assert!(e.0[0].message.contains(want), "{e}");
        }
        let e = deserialize::<serde_json::Value>(&doc("a:\n  b: 99999999999999999999\n"), &None)
            .unwrap_err();
        assert_eq!(e.0[0].path, "a.b");
        assert_eq!(e.0[0].location.map(|l| l.line), Some(2), "{e}");
    }

    #[test]
    fn a_yaml_1_1_boolean_in_a_boolean_setting_says_what_to_write() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            on: bool,
        }
        let e = deserialize::<T>(&doc("on: yes\n"), &None).unwrap_err();
        assert!(e.0[0].message.contains("write true or false"), "{e}");
        assert_eq!(e.0[0].path, "on");
    }

    #[test]
    fn every_type_error_is_reported_once_in_file_order() {
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Inner {
            n: u32,
            s: Option<u32>,
        }
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            a: Inner,
            b: Vec<Inner>,
            c: Option<u32>,
        }
        let text =
            "a: { n: x, extra: 1 }\nb:\n  - { n: 1, s: [] }\n  - { n: 2, typo: 3 }\nc: 7\nd: 1\n";
        let e = deserialize::<T>(&doc(text), &None).unwrap_err();
        let got: Vec<(&str, u64)> =
            e.0.iter()
                .map(|p| (p.path.as_str(), p.location.unwrap().line))
                .collect();
        assert_eq!(
            got,
            [
                ("a.n", 1),
                ("a.extra", 1),
                ("b[0].s", 3),
                ("b[1].typo", 4),
                ("d", 6)
            ],
            "{e}"
        );
        // `a.n` was wrong: `a` missing `n` afterwards is not a second problem
        assert!(!e.to_string().contains("missing field"), "{e}");
    }
}
