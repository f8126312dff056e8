//! Selecting nodes of a record with a compiled JSONPath.
//!
//! Every path is parsed once by [`ferry_spec::JsonPath`], which walks singular paths
//! (`$.buyer.email`) directly and hands the rest to jsonpath-rust. One more shape is common
//! enough in field maps to deserve its own route: a singular path ending in a wildcard
//! (`$.items[*]`, the usual `each`). jsonpath-rust builds a normalized path string for every node
//! it selects; here the prefix is walked and the elements are visited in place, which is the same
//! selection (RFC 9535: array elements in order, object member values in order) without an
//! allocation per element. The general evaluator is used for everything else.

use jsonpath_rust::parser::model::{Segment, Selector as JpSelector};
use jsonpath_rust::parser::parse_json_path;
use serde_json::Value;

use ferry_spec::JsonPath;
use ferry_spec::path::{Step, singular_steps, walk};

/// How a path is evaluated.
#[derive(Debug)]
enum Route {
    /// Only names and indexes: at most one node, walked here (the same walk as `JsonPath`'s
    /// fast path, without the call into another crate per field).
    Singular(Vec<Step>),
    /// Names and indexes, then `[*]`.
    Wildcard(Vec<Step>),
    /// Anything else: jsonpath-rust's evaluator.
    General,
}

/// A compiled path with its evaluation route.
#[derive(Debug)]
pub(crate) struct Selector {
    path: JsonPath,
    route: Route,
    /// True when evaluation can recurse as deep as the record is nested (a descendant segment
    /// `..`, or a filter comparing two queries).
    pub(crate) deep: bool,
    /// The path selects in what the source tells about the record (`$meta.…`), not in the
    /// record.
    meta: bool,
}

impl Selector {
    /// Parses a path; the error is the reason, to be placed at the setting's flow-file path.
    pub(crate) fn compile(text: &str) -> Result<Selector, String> {
        let inner = ferry_spec::path::meta_relative(text);
        let meta = inner.is_some();
        let text = inner.as_deref().unwrap_or(text);
        let path = JsonPath::parse(text).map_err(|e| e.to_string())?;
        let mut deep = false;
        let route = match parse_json_path(text) {
            Ok(query) => {
                deep = crate::filter::deep_segments(&query.segments);
                match singular_steps(&query.segments) {
                    Some(steps) if path.is_singular() => Route::Singular(steps),
                    _ => wildcard_route(&query.segments).unwrap_or(Route::General),
                }
            }
            Err(_) => Route::General,
        };
        Ok(Selector {
            path,
            route,
            deep,
            meta,
        })
    }

    /// The path as written.
    pub(crate) fn text(&self) -> &str {
        self.path.as_str()
    }

    /// What this path selects in: the record, or its metadata (`$meta`; `Null` when the source
    /// gave none).
    #[inline]
    pub(crate) fn input<'a>(&self, input: Input<'a>) -> &'a Value {
        if self.meta { input.meta } else { input.record }
    }

    /// The first node selected, if any.
    #[inline]
    pub(crate) fn first<'a>(&self, record: &'a Value) -> Option<&'a Value> {
        match &self.route {
            Route::Singular(steps) => walk(steps, record),
            Route::Wildcard(prefix) => match walk(prefix, record)? {
                Value::Array(a) => a.first(),
                Value::Object(m) => m.values().next(),
                _ => None,
            },
            Route::General => self.path.first(record),
        }
    }

    /// Every node selected, in document order.
    pub(crate) fn nodes<'a>(&self, record: &'a Value) -> Nodes<'a> {
        match &self.route {
            Route::Singular(steps) => Nodes::One(walk(steps, record)),
            Route::Wildcard(prefix) => match walk(prefix, record) {
                Some(Value::Array(a)) => Nodes::Elements(a.iter()),
                Some(Value::Object(m)) => Nodes::Members(m.values()),
                _ => Nodes::One(None),
            },
            Route::General => Nodes::Selected(self.path.select(record).into_iter()),
        }
    }
}

/// What a map reads: the record (or an `each` element), and what the source tells about the
/// record (`$meta`).
#[derive(Clone, Copy)]
pub(crate) struct Input<'a> {
    pub(crate) record: &'a Value,
    pub(crate) meta: &'a Value,
}

/// The nodes a [`Selector`] selects, with their exact count known up front (so output arrays
/// are allocated once).
pub(crate) enum Nodes<'a> {
    One(Option<&'a Value>),
    Elements(std::slice::Iter<'a, Value>),
    Members(serde_json::map::Values<'a>),
    Selected(std::vec::IntoIter<&'a Value>),
}

impl<'a> Iterator for Nodes<'a> {
    type Item = &'a Value;

    fn next(&mut self) -> Option<&'a Value> {
        match self {
            Nodes::One(v) => v.take(),
            Nodes::Elements(it) => it.next(),
            Nodes::Members(it) => it.next(),
            Nodes::Selected(it) => it.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match self {
            Nodes::One(v) => usize::from(v.is_some()),
            Nodes::Elements(it) => it.len(),
            Nodes::Members(it) => it.len(),
            Nodes::Selected(it) => it.len(),
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for Nodes<'_> {}

/// `Some` when the segments are names and indexes followed by one wildcard.
fn wildcard_route(segments: &[Segment]) -> Option<Route> {
    let (last, prefix) = segments.split_last()?;
    let is_wildcard = match last {
        Segment::Selector(JpSelector::Wildcard) => true,
        Segment::Selectors(s) => matches!(s.as_slice(), [JpSelector::Wildcard]),
        _ => false,
    };
    if !is_wildcard {
        return None;
    }
    singular_steps(prefix).map(Route::Wildcard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn all<'a>(s: &Selector, v: &'a Value) -> Vec<&'a Value> {
        let nodes = s.nodes(v);
        let n = nodes.len();
        let all: Vec<&Value> = nodes.collect();
        assert_eq!(all.len(), n, "exact size");
        all
    }

    #[test]
    fn wildcard_route_matches_the_general_evaluator() {
        let docs = [
            json!({"items": [{"sku": 1}, {"sku": 2}], "o": {"x": 1, "y": [2]}}),
            json!({"items": {"b": 1, "a": 2}}),
            json!({"items": "text"}),
            json!({"a": [[1, 2], [3]]}),
            json!([]),
            json!(null),
        ];
        for text in [
            "$.items[*]",
            "$.items.*",
            "$['items'][*]",
            "$.a[0][*]",
            "$.a[-1].*",
            "$[*]",
            "$.*",
            "$.o.y[*]",
        ] {
            let s = Selector::compile(text).unwrap();
            assert!(matches!(s.route, Route::Wildcard(_)), "{text}");
            let general = JsonPath::parse(text).unwrap();
            for d in &docs {
                assert_eq!(all(&s, d), general.select(d), "{text} on {d}");
                assert_eq!(s.first(d), general.first(d), "{text} on {d}");
            }
        }
    }

    #[test]
    fn routes_are_chosen_by_shape() {
        assert!(matches!(
            Selector::compile("$.a.b").unwrap().route,
            Route::Singular(_)
        ));
        assert!(matches!(
            Selector::compile("$['a'][-1]").unwrap().route,
            Route::Singular(_)
        ));
        assert!(matches!(
            Selector::compile("$.a[*].b").unwrap().route,
            Route::General
        ));
        assert!(matches!(
            Selector::compile("$[*,*]").unwrap().route,
            Route::General
        ));
        assert!(matches!(
            Selector::compile("$.a[0:2]").unwrap().route,
            Route::General
        ));
        let d = Selector::compile("$..a").unwrap();
        assert!(d.deep && matches!(d.route, Route::General));
        assert!(!Selector::compile("$.a[*]").unwrap().deep);
        assert!(Selector::compile("$.a[?@.b == @.c]").unwrap().deep);
    }

    #[test]
    fn singular_route_matches_json_path() {
        let d = json!({"a": {"b": [1, {"c": 2}]}, "x": null});
        for text in [
            "$",
            "$.a",
            "$.a.b[1].c",
            "$.a.b[-1]",
            "$.a.b[-3]",
            "$.a.b[2]",
            "$.x",
            "$.x.y",
            "$['a']['b'][0]",
        ] {
            let s = Selector::compile(text).unwrap();
            assert!(matches!(s.route, Route::Singular(_)), "{text}");
            assert_eq!(
                s.first(&d),
                JsonPath::parse(text).unwrap().first(&d),
                "{text}"
            );
        }
    }

    #[test]
    fn general_paths_select_many() {
        let s = Selector::compile("$.items[?@.qty > 1].sku").unwrap();
        let d = json!({"items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}, {"sku": "c", "qty": 3}]});
        assert_eq!(all(&s, &d), [&json!("b"), &json!("c")]);
        assert_eq!(s.first(&d), Some(&json!("b")));
    }

    #[test]
    fn bad_paths_are_refused() {
        assert!(
            Selector::compile("items")
                .unwrap_err()
                .contains("starts with `$`")
        );
        assert!(Selector::compile("$.a[").is_err());
    }
}
