//! JSONPath (RFC 9535) expressions, parsed once and evaluated many times.
//!
//! Parsing goes through jsonpath-rust's parser, which implements the RFC grammar; evaluation of
//! the general case goes through its evaluator on the parsed query. Most paths in field maps are
//! *singular* (`$.buyer.email`, `$.items[0].sku`): those are compiled to a list of name/index
//! steps and walked directly, which is several times faster than the general evaluator and
//! allocates nothing. Both routes are checked against the RFC 9535 compliance suite.

use std::fmt;
use std::sync::Arc;

use jsonpath_rust::parser::model::{
    Comparable, Filter, FilterAtom, FnArg, JpQuery, Segment, Selector, Test, TestFunction,
};
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;

/// Longest expression accepted, in bytes. Real paths are tens of bytes; the cap keeps hostile
/// input from spending the parser's time and stack.
pub const MAX_PATH_LEN: usize = 4096;
/// Deepest bracket/parenthesis nesting accepted before the parser is even called.
pub const MAX_PATH_NESTING: usize = 64;

/// The root that names what a source tells about a record besides the record itself (an AMQP
/// message's properties and headers): `$meta.routing_key`, `$meta.headers.x`.
pub const META_ROOT: &str = "$meta";

/// For a path into the record's metadata (`$meta`, `$meta.x`, `$meta['x']`), the same path with
/// `$` as the metadata's root; `None` for any other path (`$.meta` is a path into the record).
pub fn meta_relative(text: &str) -> Option<String> {
    let rest = text.strip_prefix(META_ROOT)?;
    if rest.is_empty() || rest.starts_with('.') || rest.starts_with('[') {
        Some(format!("${rest}"))
    } else {
        None
    }
}

/// A parsed JSONPath expression.
#[derive(Clone)]
pub struct JsonPath {
    text: Arc<str>,
    query: Arc<JpQuery>,
    fast: Option<Arc<[Step]>>,
    /// For `<singular path>[*]`: the singular part, so the selected elements can be moved out.
    wildcard_of: Option<Arc<[Step]>>,
}

/// One name or index step of a singular path (`$.a[0].b`): what the fast routes of the
/// validator's sample evaluation, the map's selectors and its filters walk.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Name(String),
    Index(i64),
}

/// Why a JSONPath expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSONPath `{text}`: {reason}")]
pub struct PathError {
    pub text: String,
    pub reason: String,
}

impl JsonPath {
    /// Parses an RFC 9535 query. The text must start with `$`.
    pub fn parse(text: &str) -> Result<Self, PathError> {
        let err = |reason: String| PathError {
            text: crate::words::shorten(text, 80),
            reason,
        };
        if text.len() > MAX_PATH_LEN {
            return Err(err(format!(
                "longer than {MAX_PATH_LEN} bytes; split the selection into smaller steps"
            )));
        }
        let mut depth = 0usize;
        let mut max_depth = 0usize;
        for b in text.bytes() {
            match b {
                b'[' | b'(' => {
                    depth += 1;
                    max_depth = max_depth.max(depth);
                }
                b']' | b')' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        if max_depth > MAX_PATH_NESTING {
            return Err(err(format!(
                "nested deeper than {MAX_PATH_NESTING} brackets"
            )));
        }
        if !text.starts_with('$') {
            return Err(err(
                "a JSONPath starts with `$` (the record root), e.g. `$.id`".into(),
            ));
        }
        let query = parse_json_path(text).map_err(|e| err(clean_parse_error(&e.to_string())))?;
        check_function_types(&query.segments).map_err(err)?;
        let fast = singular_steps(&query.segments).map(Arc::from);
        let wildcard_of = wildcard_steps(&query).map(Arc::from);
        Ok(JsonPath {
            text: Arc::from(text),
            query: Arc::new(query),
            fast,
            wildcard_of,
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the query selects at most one node (only name and index selectors).
    pub fn is_singular(&self) -> bool {
        self.fast.is_some()
    }

    /// Every node the query selects, in document order.
    pub fn select<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        if let Some(steps) = &self.fast {
            return walk(steps, value).into_iter().collect();
        }
        match js_path_process(&self.query, value) {
            Ok(nodes) => nodes.into_iter().map(|n| n.val).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The first node the query selects, if any.
    /// Moves the selected nodes out of `value` when the query is a singular path followed by
    /// `[*]` (`$.orders[*]`), leaving an empty array or object behind; `None` for other queries
    /// (use [`JsonPath::select`] then). Saves copying every record of a page.
    pub fn take_all(&self, value: &mut Value) -> Option<Vec<Value>> {
        let steps = self.wildcard_of.as_ref()?;
        let mut v = value;
        for step in steps.iter() {
            v = match (step, v) {
                (Step::Name(n), Value::Object(m)) => match m.get_mut(n.as_str()) {
                    Some(x) => x,
                    None => return Some(Vec::new()),
                },
                (Step::Index(i), Value::Array(a)) => {
                    let len = a.len();
                    let idx = if *i < 0 {
                        match len.checked_sub(usize::try_from(i.unsigned_abs()).ok()?) {
                            Some(x) => x,
                            None => return Some(Vec::new()),
                        }
                    } else {
                        usize::try_from(*i).ok()?
                    };
                    match a.get_mut(idx) {
                        Some(x) => x,
                        None => return Some(Vec::new()),
                    }
                }
                _ => return Some(Vec::new()),
            };
        }
        Some(match v {
            Value::Array(a) => std::mem::take(a),
            Value::Object(m) => std::mem::take(m).into_iter().map(|(_, x)| x).collect(),
            _ => Vec::new(),
        })
    }

    pub fn first<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        match &self.fast {
            Some(steps) => walk(steps, value),
            None => self.select(value).into_iter().next(),
        }
    }
}

impl fmt::Debug for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonPath({})", self.text)
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for JsonPath {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// The node a singular path selects (a negative index counts from the end), if any.
#[inline]
pub fn walk<'a>(steps: &[Step], mut v: &'a Value) -> Option<&'a Value> {
    for step in steps {
        v = match (step, v) {
            (Step::Name(n), Value::Object(m)) => m.get(n.as_str())?,
            (Step::Index(i), Value::Array(a)) => {
                let idx = if *i < 0 {
                    let back = usize::try_from(i.unsigned_abs()).ok()?;
                    a.len().checked_sub(back)?
                } else {
                    usize::try_from(*i).ok()?
                };
                a.get(idx)?
            }
            _ => return None,
        };
    }
    Some(v)
}

/// The steps of a path made only of name and index selectors; `None` for any other path.
pub fn singular_steps(segments: &[Segment]) -> Option<Vec<Step>> {
    segments
        .iter()
        .map(|seg| {
            let sel = match seg {
                Segment::Selector(s) => s,
                Segment::Selectors(s) if s.len() == 1 => &s[0],
                _ => return None,
            };
            match sel {
                Selector::Name(n) => Some(Step::Name(n.clone())),
                Selector::Index(i) => Some(Step::Index(*i)),
                _ => None,
            }
        })
        .collect()
}

/// RFC 9535 section 2.4.3 (well-typedness of function expressions), which the parser does not
/// enforce: `length()`, `count()` and `value()` give a value, so they must be compared rather
/// than used as a test (`$[?length(@.a)]`); parameters of value type (`length()`, `match()`,
/// `search()`) take a literal, a singular query or a value-giving function, not a query that may
/// select several nodes (`length(@.*)`); parameters of nodes type (`count()`, `value()`) take a
/// query.
fn check_function_types(segments: &[Segment]) -> Result<(), String> {
    segments.iter().try_for_each(check_segment)
}

fn check_segment(segment: &Segment) -> Result<(), String> {
    match segment {
        Segment::Descendant(inner) => check_segment(inner),
        Segment::Selector(sel) => check_selector(sel),
        Segment::Selectors(sels) => sels.iter().try_for_each(check_selector),
    }
}

fn check_selector(selector: &Selector) -> Result<(), String> {
    match selector {
        Selector::Filter(f) => check_filter(f),
        _ => Ok(()),
    }
}

fn check_filter(filter: &Filter) -> Result<(), String> {
    match filter {
        Filter::Or(fs) | Filter::And(fs) => fs.iter().try_for_each(check_filter),
        Filter::Atom(FilterAtom::Filter { expr, .. }) => check_filter(expr),
        Filter::Atom(FilterAtom::Test { expr, .. }) => match expr.as_ref() {
            Test::Function(f) => {
                if gives_value(f) {
                    return Err(format!(
                        "`{}()` gives a value, not a test: compare it, e.g. `{}(...) > 0`",
                        function_name(f),
                        function_name(f)
                    ));
                }
                check_function(f)
            }
            Test::RelQuery(segments) => check_function_types(segments),
            Test::AbsQuery(q) => check_function_types(&q.segments),
        },
        Filter::Atom(FilterAtom::Comparison(c)) => {
            let (l, r) = c.vals();
            [l, r].into_iter().try_for_each(|side| match side {
                Comparable::Function(f) => check_function(f),
                _ => Ok(()),
            })
        }
    }
}

fn gives_value(f: &TestFunction) -> bool {
    matches!(
        f,
        TestFunction::Length(_) | TestFunction::Count(_) | TestFunction::Value(_)
    )
}

fn function_name(f: &TestFunction) -> &str {
    match f {
        TestFunction::Custom(name, _) => name,
        TestFunction::Length(_) => "length",
        TestFunction::Value(_) => "value",
        TestFunction::Count(_) => "count",
        TestFunction::Search(..) => "search",
        TestFunction::Match(..) => "match",
    }
}

fn check_function(f: &TestFunction) -> Result<(), String> {
    let name = function_name(f);
    match f {
        TestFunction::Length(a) => value_arg(name, a),
        TestFunction::Search(a, b) | TestFunction::Match(a, b) => {
            value_arg(name, a)?;
            value_arg(name, b)
        }
        TestFunction::Count(a) | TestFunction::Value(a) => nodes_arg(name, a),
        TestFunction::Custom(_, args) => args.iter().try_for_each(|a| match a {
            FnArg::Literal(_) => Ok(()),
            FnArg::Test(t) => check_test(t),
            FnArg::Filter(f) => check_filter(f),
        }),
    }
}

fn check_test(t: &Test) -> Result<(), String> {
    match t {
        Test::RelQuery(segments) => check_function_types(segments),
        Test::AbsQuery(q) => check_function_types(&q.segments),
        Test::Function(f) => check_function(f),
    }
}

/// An argument of value type: a literal, a singular query or a function giving a value.
fn value_arg(name: &str, arg: &FnArg) -> Result<(), String> {
    match arg {
        FnArg::Literal(_) => Ok(()),
        FnArg::Test(t) => match t.as_ref() {
            Test::RelQuery(segments) | Test::AbsQuery(JpQuery { segments }) => {
                if !segments.iter().all(is_singular_segment) {
                    return Err(format!(
                        "`{name}()` takes a single value: use a query that selects at most one node (names and indexes only), or `count()` for many"
                    ));
                }
                check_function_types(segments)
            }
            Test::Function(f) if gives_value(f) => check_function(f),
            Test::Function(f) => Err(format!(
                "`{name}()` takes a value, and `{}()` gives a test result",
                function_name(f)
            )),
        },
        FnArg::Filter(_) => Err(format!(
            "`{name}()` takes a value, not a logical expression"
        )),
    }
}

/// An argument of nodes type: a query.
fn nodes_arg(name: &str, arg: &FnArg) -> Result<(), String> {
    match arg {
        FnArg::Test(t) => match t.as_ref() {
            Test::RelQuery(segments) | Test::AbsQuery(JpQuery { segments }) => {
                check_function_types(segments)
            }
            Test::Function(_) => Err(format!("`{name}()` takes a query such as `@.items[*]`")),
        },
        FnArg::Literal(_) | FnArg::Filter(_) => {
            Err(format!("`{name}()` takes a query such as `@.items[*]`"))
        }
    }
}

fn is_singular_segment(segment: &Segment) -> bool {
    match segment {
        Segment::Selector(Selector::Name(_) | Selector::Index(_)) => true,
        Segment::Selectors(s) => matches!(s.as_slice(), [Selector::Name(_) | Selector::Index(_)]),
        _ => false,
    }
}

fn wildcard_steps(q: &JpQuery) -> Option<Vec<Step>> {
    let (last, rest) = q.segments.split_last()?;
    let is_wildcard = match last {
        Segment::Selector(Selector::Wildcard) => true,
        Segment::Selectors(s) => s.len() == 1 && matches!(s[0], Selector::Wildcard),
        _ => false,
    };
    if !is_wildcard {
        return None;
    }
    singular_steps(rest)
}

/// pest's messages are multi-line with a caret diagram; keep the first useful line.
fn clean_parse_error(msg: &str) -> String {
    let msg = msg.trim_start_matches("Failed to parse rule: ");
    let mut lines = msg.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("syntax error").to_string();
    let tail: Vec<&str> = lines.filter(|l| l.starts_with('=')).collect();
    if tail.is_empty() {
        first
    } else {
        format!("{first} {}", tail.join(" "))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn meta_paths_are_told_from_record_paths() {
        assert_eq!(super::meta_relative("$meta").as_deref(), Some("$"));
        assert_eq!(
            super::meta_relative("$meta.headers.x").as_deref(),
            Some("$.headers.x")
        );
        assert_eq!(
            super::meta_relative("$meta['routing_key']").as_deref(),
            Some("$['routing_key']")
        );
        assert_eq!(super::meta_relative("$metadata.x"), None);
        assert_eq!(super::meta_relative("$.meta"), None);
        assert_eq!(super::meta_relative("meta.x"), None);
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn singular_paths_take_the_fast_route() {
        let p = JsonPath::parse("$.a.b[1]").unwrap();
        assert!(p.is_singular());
        let doc = json!({"a": {"b": [1, 2, 3]}});
        assert_eq!(p.first(&doc), Some(&json!(2)));
        let p = JsonPath::parse("$['a'].b[-1]").unwrap();
        assert!(p.is_singular());
        assert_eq!(p.first(&doc), Some(&json!(3)));
        assert_eq!(JsonPath::parse("$.a.b[-9]").unwrap().first(&doc), None);
        assert_eq!(JsonPath::parse("$.a.b.c").unwrap().first(&doc), None);
    }

    #[test]
    fn wildcards_over_a_singular_path_move_their_elements_out() {
        let p = JsonPath::parse("$.page.orders[*]").unwrap();
        let mut doc = json!({"page": {"orders": [{"id": 1}, {"id": 2}]}, "next": "x"});
        let want: Vec<Value> = p.select(&doc).into_iter().cloned().collect();
        assert_eq!(p.take_all(&mut doc), Some(want));
        assert_eq!(doc, json!({"page": {"orders": []}, "next": "x"}));
        let mut doc = json!({"a": {"x": 1, "y": 2}});
        assert_eq!(
            JsonPath::parse("$.a[*]").unwrap().take_all(&mut doc),
            Some(vec![json!(1), json!(2)])
        );
        assert_eq!(
            JsonPath::parse("$.missing[*]").unwrap().take_all(&mut doc),
            Some(vec![])
        );
        assert_eq!(JsonPath::parse("$..a[*]").unwrap().take_all(&mut doc), None);
        assert_eq!(
            JsonPath::parse("$[*]").unwrap().take_all(&mut json!([3])),
            Some(vec![json!(3)])
        );
    }

    #[test]
    fn general_paths_select_many() {
        let p = JsonPath::parse("$.items[?@.qty > 1].sku").unwrap();
        assert!(!p.is_singular());
        let doc = json!({"items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]});
        assert_eq!(p.select(&doc), vec![&json!("b")]);
    }

    #[test]
    fn bad_paths_are_refused_with_a_reason() {
        for bad in ["", "a.b", "$.", "$[", "$.a[?@.b ==]", "$.."] {
            let e = JsonPath::parse(bad).unwrap_err();
            assert!(!e.reason.is_empty(), "{bad}");
        }
    }

    #[test]
    fn function_expressions_must_be_well_typed() {
        for bad in [
            "$[?length(@.a)]",
            "$[?count(@..*)]",
            "$[?value(@.a)]",
            "$[?length(@.*)<3]",
            "$[?length(@[1, 2])<3]",
            "$[?length(@['a', 'b'])<3]",
            "$[?match(@.*, 'a')]",
            "$[?search(@.a, @..b)]",
            "$[?length(match(@.a, 'x')) > 1]",
            "$[?value('x') == 1]",
            "$[?@.b[?length(@.*) > 1]]",
        ] {
            let e = JsonPath::parse(bad).unwrap_err();
            assert!(!e.reason.is_empty(), "{bad}");
        }
        for good in [
            "$[?length(@.a) > 1]",
            "$[?length(@) == 2]",
            "$[?length('abc') == 3]",
            "$[?count(@.*) == 1]",
            "$[?count(@..x) > 0]",
            "$[?value(@..x) == 1]",
            "$[?match(@.a, 'x.*')]",
            "$[?search(@.a, $.pattern)]",
            "$[?length(value(@.*)) == 1]",
            "$[?@.b[?length(@.c) > 1]]",
            "$[?!match(@['a'][0], 'x')]",
        ] {
            assert!(JsonPath::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn hostile_paths_do_not_overflow() {
        let deep = format!("$.{}", "[".repeat(10_000));
        assert!(JsonPath::parse(&deep).is_err());
        let deep = format!("$[?{}@.a{}]", "(".repeat(10_000), ")".repeat(10_000));
        assert!(JsonPath::parse(&deep).is_err());
        let long = format!("$.{}", "a".repeat(100_000));
        assert!(JsonPath::parse(&long).is_err());
    }
}
