//! String templates: `{{ env.SHOP_URL }}/api/orders/{{ record.id }}`.
//!
//! A template is parsed when the flow is validated, so a typo in a placeholder is a validation
//! error with its field path, not a failed run. Placeholders are dotted paths under a known root;
//! which roots a template may use depends on where it stands (a source URL has no `record`), and
//! [`Template::check_roots`] enforces that.

use std::borrow::Cow;
use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// The roots a placeholder may start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Root {
    /// `env.NAME`: a variable of the environment the flow runs in.
    Env,
    /// `cursor`: the incremental cursor value stored by the last run.
    Cursor,
    /// `record.a.b`: the mapped record.
    Record,
    /// `source.a.b`: the source record before mapping.
    Source,
    /// `flow.name`, `flow.revision`: facts about the flow.
    Flow,
    /// `key`: the record key (from `map.key`).
    Key,
    /// `hash`: the content hash of the mapped record.
    Hash,
}

impl Root {
    fn parse(s: &str) -> Option<Root> {
        Some(match s {
            "env" => Root::Env,
            "cursor" => Root::Cursor,
            "record" => Root::Record,
            "source" => Root::Source,
            "flow" => Root::Flow,
            "key" => Root::Key,
            "hash" => Root::Hash,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Root::Env => "env",
            Root::Cursor => "cursor",
            Root::Record => "record",
            Root::Source => "source",
            Root::Flow => "flow",
            Root::Key => "key",
            Root::Hash => "hash",
        }
    }
    /// Roots that take a path after them (`env.X`); the others stand alone.
    fn takes_path(self) -> bool {
        matches!(self, Root::Env | Root::Record | Root::Source | Root::Flow)
    }
}

/// One placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    pub root: Root,
    pub path: Vec<String>,
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.root.name())?;
        for p in &self.path {
            write!(f, ".{p}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Var(Var),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    pieces: Vec<Piece>,
}

/// How substituted values are written into the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// As they are.
    Raw,
    /// Percent-encoded, except `env.*` values (which hold base URLs). Used for URLs, so a record
    /// id with a `/` or `?` in it cannot change the request's path or query.
    Url,
}

/// Why a template could not be parsed or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed `{{{{` at byte {0}; close it with `}}}}`")]
    Unclosed(usize),
    #[error("empty placeholder `{{{{ }}}}` at byte {0}")]
    Empty(usize),
    #[error(
        "unknown placeholder root `{0}`: use env.NAME, cursor, record.FIELD, source.FIELD, flow.name, key or hash"
    )]
    UnknownRoot(String),
    #[error("placeholder `{0}` is not a dotted name (letters, digits, `_` and `-` between dots)")]
    BadName(String),
    #[error("`{0}` needs a field after it, e.g. `{0}.id`")]
    NeedsPath(String),
    #[error("`{0}` takes no field after it")]
    NoPath(String),
    #[error("`{{{{ {0} }}}}` is not available here{1}")]
    RootNotAllowed(String, String),
    #[error("`{{{{ {0} }}}}` has no value{1}")]
    Missing(String, String),
    #[error("template longer than {0} bytes")]
    TooLong(usize),
}

/// Longest template accepted.
pub const MAX_TEMPLATE_LEN: usize = 8192;

/// Characters escaped in URL substitutions: everything but RFC 3986's unreserved ones. Other
/// crates encode URL parts with this set too (the dashboard's links, the redaction of secrets
/// from logs), so what they write or look for is byte for byte what a flow sends.
pub const URL_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

impl Template {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        if text.len() > MAX_TEMPLATE_LEN {
            return Err(TemplateError::TooLong(MAX_TEMPLATE_LEN));
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Lit(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or(TemplateError::Unclosed(offset + open))?;
            let inner = after[..close].trim();
            if inner.is_empty() {
                return Err(TemplateError::Empty(offset + open));
            }
            pieces.push(Piece::Var(parse_var(inner)?));
            let consumed = open + 2 + close + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Lit(rest.to_string()));
        }
        Ok(Template {
            text: text.to_string(),
            pieces,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The placeholders, in order.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(v) => Some(v),
            Piece::Lit(_) => None,
        })
    }

    /// True when the template has no placeholders.
    pub fn is_literal(&self) -> bool {
        self.vars().next().is_none()
    }

    /// Refuses placeholders whose root is not in `allowed`; `where_` names the place.
    pub fn check_roots(&self, allowed: &[Root], where_: &str) -> Result<(), TemplateError> {
        for v in self.vars() {
            if !allowed.contains(&v.root) {
                let names: Vec<&str> = allowed.iter().map(|r| r.name()).collect();
                return Err(TemplateError::RootNotAllowed(
                    v.to_string(),
                    format!(" in {where_}; usable here: {}", names.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// Renders the template; `lookup` gives the text of a placeholder, or `None` when unset.
    pub fn render<'a, F>(&self, encoding: Encoding, lookup: F) -> Result<String, TemplateError>
    where
        F: Fn(&Var) -> Option<Cow<'a, str>>,
    {
        let mut out = String::with_capacity(self.text.len() + 16);
        for piece in &self.pieces {
            match piece {
                Piece::Lit(s) => out.push_str(s),
                Piece::Var(v) => {
                    let value = lookup(v).ok_or_else(|| {
                        let hint = match v.root {
                            Root::Env => {
                                let name = v.path.join(".");
                                format!(
                                    ": set the variable `{name}` with `--var {name}=VALUE`, in the process environment (`export {name}=...`), or under `variables:` of the environment in ferry.yaml"
                                )
                            }
                            _ => String::new(),
                        };
                        TemplateError::Missing(v.to_string(), hint)
                    })?;
                    match (encoding, v.root) {
                        (Encoding::Url, r) if r != Root::Env => {
                            out.extend(utf8_percent_encode(&value, URL_ESCAPE));
                        }
                        _ => out.push_str(&value),
                    }
                }
            }
        }
        Ok(out)
    }
}

fn parse_var(inner: &str) -> Result<Var, TemplateError> {
    let mut parts = inner.split('.');
    let root_s = parts.next().unwrap_or_default();
    let root = Root::parse(root_s).ok_or_else(|| TemplateError::UnknownRoot(root_s.to_string()))?;
    let path: Vec<String> = parts.map(str::to_string).collect();
    for p in &path {
        let ok = !p.is_empty()
            && p.chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(TemplateError::BadName(inner.to_string()));
        }
    }
    if root.takes_path() && path.is_empty() {
        return Err(TemplateError::NeedsPath(root.name().to_string()));
    }
    if !root.takes_path() && !path.is_empty() {
        return Err(TemplateError::NoPath(root.name().to_string()));
    }
    Ok(Var { root, path })
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders() {
        let t = Template::parse("{{ env.BASE }}/orders/{{record.id}}?x=1").unwrap();
        assert_eq!(t.vars().count(), 2);
        let out = t
            .render(Encoding::Url, |v| match v.root {
                Root::Env => Some("http://h:1/api".into()),
                Root::Record => Some("a/b c".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(out, "http://h:1/api/orders/a%2Fb%20c?x=1");
    }

    #[test]
    fn a_missing_variable_is_named_with_where_to_set_it() {
        let t = Template::parse("{{ env.SHOP_URL }}/api").unwrap();
        let err = t.render(Encoding::Url, |_| None).unwrap_err().to_string();
        assert_eq!(
            err,
            "`{{ env.SHOP_URL }}` has no value: set the variable `SHOP_URL` with `--var SHOP_URL=VALUE`, in the process environment (`export SHOP_URL=...`), or under `variables:` of the environment in ferry.yaml"
        );
        let t = Template::parse("{{ record.id }}").unwrap();
        let err = t.render(Encoding::Url, |_| None).unwrap_err().to_string();
        assert_eq!(err, "`{{ record.id }}` has no value");
    }

    #[test]
    fn errors_are_specific() {
        assert!(matches!(
            Template::parse("{{ env.X"),
            Err(TemplateError::Unclosed(0))
        ));
        assert!(matches!(
            Template::parse("a {{ }}"),
            Err(TemplateError::Empty(2))
        ));
        assert!(matches!(
            Template::parse("{{ nope.x }}"),
            Err(TemplateError::UnknownRoot(_))
        ));
        assert!(matches!(
            Template::parse("{{ env }}"),
            Err(TemplateError::NeedsPath(_))
        ));
        assert!(matches!(
            Template::parse("{{ cursor.x }}"),
            Err(TemplateError::NoPath(_))
        ));
        assert!(matches!(
            Template::parse("{{ env.a b }}"),
            Err(TemplateError::BadName(_))
        ));
        let t = Template::parse("{{ record.id }}").unwrap();
        assert!(t.check_roots(&[Root::Env], "source.http.url").is_err());
        let e = t.render(Encoding::Raw, |_| None).unwrap_err();
        assert!(e.to_string().contains("record.id"));
    }
}
