//! `map.filter`: which source records are mapped at all.
//!
//! The contract (see `ferry_spec::validate::filter_query`) is that a filter expression `E` keeps
//! a record when the RFC 9535 query `$[?E]` selects it from a one-element array holding the
//! record. Building that array per record would clone the record, so the filter is instead
//! compiled once to jsonpath-rust's filter model and evaluated on the record as the current node
//! `@` directly, which is exactly what the filter selector does to each array element. The one
//! place the two differ is `$`: inside `$[?E]` it means the wrapping array. A filter that uses
//! `$` therefore takes the literal route (wrap a clone, run the query); its cost is a full clone
//! of the record, so it is kept for the rare filter that needs it.
//!
//! The common atoms — a singular `@` query compared with a literal or another singular `@`
//! query, and existence tests such as `@.paid` — are evaluated here, with jsonpath-rust's own
//! comparison rules (numbers compared as doubles, strings by code point, anything else only by
//! `==`), because the library builds a normalized path string for every node it visits, which
//! was a tenth of the whole map's time in the benchmark. Any other atom (functions, wildcards,
//! nested filters) is handed to jsonpath-rust. Unit tests check both routes agree.

use jsonpath_rust::parser::model::{
    Comparable, Comparison, Filter, FilterAtom, FnArg, JpQuery, Literal, Segment, Selector,
    SingularQuery, SingularQuerySegment, Test, TestFunction,
};
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::Query;
use jsonpath_rust::query::state::{Data, State};
use serde_json::Value;

use ferry_spec::JsonPath;
use ferry_spec::path::{Step, singular_steps, walk};
use ferry_spec::validate::filter_query;

use crate::error::{CompileError, shorten};

/// A compiled `map.filter` expression.
pub(crate) struct RecordFilter {
    cond: Cond,
    /// `Some` when the expression refers to `$`: then the record is wrapped, as the contract
    /// says, and the whole query is run.
    wrapped: Option<JsonPath>,
    /// True when evaluating it may recurse as deep as the record is nested (descendant
    /// segments, query-to-query comparisons).
    pub(crate) deep: bool,
}

impl RecordFilter {
    /// Compiles a filter expression; errors are reported at `map.filter`.
    pub(crate) fn compile(expr: &str) -> Result<RecordFilter, CompileError> {
        let at = "map.filter";
        let query_text = filter_query(expr);
        let hint =
            "an RFC 9535 filter expression where `@` is the record, e.g. `@.state != 'draft'`";
        let checked = JsonPath::parse(&query_text).map_err(|e| {
            CompileError::new(
                at,
                format!("`{}` is not {hint}: {}", shorten(expr, 80), e.reason),
            )
        })?;
        let query = parse_json_path(&query_text).map_err(|e| {
            CompileError::new(at, format!("`{}` is not {hint}: {e}", shorten(expr, 80)))
        })?;
        let filter = single_filter(query).ok_or_else(|| {
            CompileError::new(
                at,
                format!(
                    "`{}` is not a single filter expression: write one condition (combine with `&&`, `||`), not selectors",
                    shorten(expr, 80)
                ),
            )
        })?;
        let mut facts = Facts::default();
        facts.filter(&filter);
        Ok(RecordFilter {
            cond: Cond::compile(&filter),
            wrapped: facts.uses_root.then_some(checked),
            deep: facts.deep,
        })
    }

    /// True when the record is kept.
    pub(crate) fn keeps(&self, record: &Value) -> bool {
        if let Some(query) = &self.wrapped {
            let wrapper = Value::Array(vec![record.clone()]);
            return !query.select(&wrapper).is_empty();
        }
        self.cond.holds(record)
    }
}

/// A filter expression, compiled for evaluation on one record as `@`.
enum Cond {
    Any(Vec<Cond>),
    All(Vec<Cond>),
    Not(Box<Cond>),
    /// `@.a.b`: true when the node exists (whatever its value, null included).
    Exists(Vec<Step>),
    Compare(Operand, CmpOp, Operand),
    /// Anything else, evaluated by jsonpath-rust.
    Library(FilterAtom),
}

#[derive(Clone, Copy)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

enum Operand {
    Literal(Value),
    Current(Vec<Step>),
}

impl Cond {
    fn compile(filter: &Filter) -> Cond {
        match filter {
            Filter::Or(fs) => Cond::Any(fs.iter().map(Cond::compile).collect()),
            Filter::And(fs) => Cond::All(fs.iter().map(Cond::compile).collect()),
            Filter::Atom(atom) => Cond::atom(atom),
        }
    }

    fn atom(atom: &FilterAtom) -> Cond {
        let negate = |c: Cond, not: bool| if not { Cond::Not(Box::new(c)) } else { c };
        let fast = match atom {
            FilterAtom::Filter { expr, not } => Some(negate(Cond::compile(expr), *not)),
            FilterAtom::Test { expr, not } => match expr.as_ref() {
                Test::RelQuery(segments) => {
                    singular_steps(segments).map(|steps| negate(Cond::Exists(steps), *not))
                }
                _ => None,
            },
            FilterAtom::Comparison(c) => {
                let (l, r) = c.vals();
                let op = match c.as_ref() {
                    Comparison::Eq(..) => CmpOp::Eq,
                    Comparison::Ne(..) => CmpOp::Ne,
                    Comparison::Lt(..) => CmpOp::Lt,
                    Comparison::Lte(..) => CmpOp::Le,
                    Comparison::Gt(..) => CmpOp::Gt,
                    Comparison::Gte(..) => CmpOp::Ge,
                };
                match (Operand::compile(l), Operand::compile(r)) {
                    (Some(l), Some(r)) => Some(Cond::Compare(l, op, r)),
                    _ => None,
                }
            }
        };
        fast.unwrap_or_else(|| Cond::Library(atom.clone()))
    }

    fn holds(&self, record: &Value) -> bool {
        match self {
            Cond::Any(cs) => cs.iter().any(|c| c.holds(record)),
            Cond::All(cs) => cs.iter().all(|c| c.holds(record)),
            Cond::Not(c) => !c.holds(record),
            Cond::Exists(steps) => walk(steps, record).is_some(),
            Cond::Compare(l, op, r) => {
                let (l, r) = (l.eval(record), r.eval(record));
                match op {
                    CmpOp::Eq => equal(l, r),
                    CmpOp::Ne => !equal(l, r),
                    CmpOp::Lt => less(l, r),
                    CmpOp::Le => less(l, r) || equal(l, r),
                    CmpOp::Gt => less(r, l),
                    CmpOp::Ge => less(r, l) || equal(l, r),
                }
            }
            // jsonpath-rust evaluates atoms relative to the state's node: `State::root` makes
            // the record that node.
            Cond::Library(atom) => matches!(
                atom.process(State::root(record)).data,
                Data::Value(Value::Bool(true))
            ),
        }
    }
}

impl Operand {
    fn compile(c: &Comparable) -> Option<Operand> {
        match c {
            Comparable::Literal(lit) => Some(Operand::Literal(match lit {
                Literal::Int(i) => Value::from(*i),
                Literal::Float(f) => Value::from(*f),
                Literal::String(s) => Value::String(s.clone()),
                Literal::Bool(b) => Value::Bool(*b),
                Literal::Null => Value::Null,
            })),
            Comparable::SingularQuery(SingularQuery::Current(segments)) => Some(Operand::Current(
                segments
                    .iter()
                    .map(|s| match s {
                        SingularQuerySegment::Name(n) => Step::Name(n.clone()),
                        SingularQuerySegment::Index(i) => Step::Index(*i),
                    })
                    .collect(),
            )),
            _ => None,
        }
    }

    fn eval<'a>(&'a self, record: &'a Value) -> Option<&'a Value> {
        match self {
            Operand::Literal(v) => Some(v),
            Operand::Current(steps) => walk(steps, record),
        }
    }
}

/// jsonpath-rust's equality: both absent; numbers equal as doubles; otherwise JSON equality.
fn equal(l: Option<&Value>, r: Option<&Value>) -> bool {
    match (l, r) {
        (None, None) => true,
        (Some(Value::Number(a)), Some(Value::Number(b))) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() < f64::EPSILON,
            _ => a == b,
        },
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// jsonpath-rust's ordering: numbers as doubles, strings by code point, nothing else.
fn less(l: Option<&Value>, r: Option<&Value>) -> bool {
    match (l, r) {
        (Some(Value::Number(a)), Some(Value::Number(b))) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => a < b,
            _ => false,
        },
        (Some(Value::String(a)), Some(Value::String(b))) => a < b,
        _ => false,
    }
}

/// The filter of `$[?E]`, or `None` when the text made something else (`E` = `@.a][?@.b`).
fn single_filter(query: JpQuery) -> Option<Filter> {
    let mut segments = query.segments.into_iter();
    let first = segments.next()?;
    if segments.next().is_some() {
        return None;
    }
    match first {
        Segment::Selector(Selector::Filter(f)) => Some(f),
        Segment::Selectors(mut s) if s.len() == 1 => match s.pop() {
            Some(Selector::Filter(f)) => Some(f),
            _ => None,
        },
        _ => None,
    }
}

/// True when evaluating these segments can recurse as deep as the record is nested.
pub(crate) fn deep_segments(segments: &[Segment]) -> bool {
    let mut facts = Facts::default();
    facts.segments(segments);
    facts.deep
}

/// What a filter expression does that changes how it must be evaluated.
#[derive(Default)]
struct Facts {
    uses_root: bool,
    deep: bool,
}

impl Facts {
    fn filter(&mut self, f: &Filter) {
        match f {
            Filter::Or(fs) | Filter::And(fs) => fs.iter().for_each(|f| self.filter(f)),
            Filter::Atom(atom) => match atom {
                FilterAtom::Filter { expr, .. } => self.filter(expr),
                FilterAtom::Test { expr, .. } => self.test(expr),
                FilterAtom::Comparison(c) => {
                    let (l, r) = c.vals();
                    let is_query = |c: &Comparable| !matches!(c, Comparable::Literal(_));
                    // Two queries compared with each other compare whole subtrees.
                    if is_query(l) && is_query(r) {
                        self.deep = true;
                    }
                    self.comparable(l);
                    self.comparable(r);
                }
            },
        }
    }

    fn comparable(&mut self, c: &Comparable) {
        match c {
            Comparable::Literal(_) => {}
            Comparable::Function(f) => self.function(f),
            Comparable::SingularQuery(SingularQuery::Root(_)) => self.uses_root = true,
            Comparable::SingularQuery(SingularQuery::Current(_)) => {}
        }
    }

    fn test(&mut self, t: &Test) {
        match t {
            Test::RelQuery(segments) => self.segments(segments),
            Test::AbsQuery(q) => {
                self.uses_root = true;
                self.segments(&q.segments);
            }
            Test::Function(f) => self.function(f),
        }
    }

    fn function(&mut self, f: &TestFunction) {
        match f {
            TestFunction::Custom(_, args) => args.iter().for_each(|a| self.arg(a)),
            TestFunction::Length(a) => self.arg(a),
            TestFunction::Value(a) | TestFunction::Count(a) => self.arg(a),
            TestFunction::Search(a, b) | TestFunction::Match(a, b) => {
                self.arg(a);
                self.arg(b);
            }
        }
    }

    fn arg(&mut self, a: &FnArg) {
        match a {
            FnArg::Literal(_) => {}
            FnArg::Test(t) => self.test(t),
            FnArg::Filter(f) => self.filter(f),
        }
    }

    fn segments(&mut self, segments: &[Segment]) {
        for s in segments {
            self.segment(s);
        }
    }

    fn segment(&mut self, s: &Segment) {
        match s {
            Segment::Descendant(inner) => {
                self.deep = true;
                self.segment(inner);
            }
            Segment::Selector(sel) => self.selector(sel),
            Segment::Selectors(sels) => sels.iter().for_each(|s| self.selector(s)),
        }
    }

    fn selector(&mut self, s: &Selector) {
        if let Selector::Filter(f) = s {
            self.filter(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keeps(expr: &str, record: Value) -> bool {
        RecordFilter::compile(expr).unwrap().keeps(&record)
    }

    #[test]
    fn keeps_what_the_expression_selects() {
        assert!(keeps("@.state != 'draft'", json!({"state": "paid"})));
        assert!(!keeps("@.state != 'draft'", json!({"state": "draft"})));
        // A missing member is not equal to 'draft'.
        assert!(keeps("@.state != 'draft'", json!({})));
        assert!(keeps(
            "@.total > 10 && @.paid",
            json!({"total": 11, "paid": false})
        ));
        assert!(!keeps(
            "@.total > 10 && @.paid",
            json!({"total": 9, "paid": true})
        ));
        assert!(keeps("@.tags[?@ == 'x']", json!({"tags": ["a", "x"]})));
        assert!(!keeps("@.tags[?@ == 'x']", json!({"tags": ["a"]})));
        assert!(keeps("match(@.sku, 'S-[0-9]+')", json!({"sku": "S-12"})));
        assert!(keeps("length(@.items) >= 2", json!({"items": [1, 2]})));
    }

    #[test]
    fn non_object_records_are_filtered_by_the_same_rule() {
        // `$[?@ > 1]` over `[2]` selects the 2.
        assert!(keeps("@ > 1", json!(2)));
        assert!(!keeps("@ > 1", json!(1)));
        assert!(keeps("@[0] == 1", json!([1])));
        assert!(!keeps("@.a", json!("text")));
    }

    #[test]
    fn dollar_means_the_wrapping_array() {
        let f = RecordFilter::compile("$[0].a == 1").unwrap();
        assert!(f.wrapped.is_some());
        assert!(f.keeps(&json!({"a": 1})));
        assert!(!f.keeps(&json!({"a": 2})));
        assert!(
            RecordFilter::compile("length($) == 1")
                .unwrap()
                .keeps(&json!({}))
        );
    }

    #[test]
    fn direct_route_agrees_with_the_wrapped_query() {
        let exprs = [
            "@.a == 1",
            "@.a == 1.0",
            "@.a != 'x'",
            "@.a",
            "!@.a",
            "!(@.a && @.c)",
            "@.a.b > 'x' || @.c <= 2",
            "@.a.b >= 'y' && @.c < 3",
            "@.a == @.c",
            "@.a != @.zz",
            "@.zz == @.yy",
            "@[0] == 1",
            "@[-1] > 1",
            "@.a == null",
            "@.a == true",
            "@.a > null",
            "@.*",
            "@..c",
            "@.d[0]",
            "@.d[?@.c == 9]",
            "count(@.*) == 2",
            "value(@.a) == null",
        ];
        let records = [
            json!({"a": 1}),
            json!({"a": 1.0, "c": 1}),
            json!({"a": "x", "c": "x"}),
            json!({"a": true, "c": 2.5}),
            json!({"a": {"b": "z"}, "c": 3}),
            json!({"a": [1, 2], "c": [1, 2]}),
            json!({"a": {"b": "y"}}),
            json!({"c": 2, "d": [{"c": 9}]}),
            json!([1, 2]),
            json!(null),
            json!("a"),
            json!({"a": null}),
        ];
        for e in exprs {
            let f = RecordFilter::compile(e).unwrap();
            assert!(f.wrapped.is_none(), "{e}");
            let q = JsonPath::parse(&filter_query(e)).unwrap();
            for r in &records {
                let wrapped = Value::Array(vec![r.clone()]);
                assert_eq!(f.keeps(r), !q.select(&wrapped).is_empty(), "{e} on {r}");
            }
        }
    }

    fn small_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..4).prop_map(Value::from),
            (-3i64..4).prop_map(|i| json!(i as f64 / 2.0)),
            prop::sample::select(vec!["x", "y", "", "draft", "1"]).prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(
                    (prop::sample::select(vec!["a", "b", "c", "d"]), inner),
                    0..4
                )
                .prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn fast_route_agrees_with_jsonpath_rust(record in small_value()) {
            for e in [
                "@.a == @.b", "@.a < @.b", "@.a >= 1", "@.a <= 'x'", "@.a != null",
                "@.b[0] == @.c[-1]", "!@.d", "@.a && !(@.b > 0.5 || @.c == true)",
                "@.a.b == 'y'", "@[1] > @[0]",
            ] {
                let f = RecordFilter::compile(e).unwrap();
                let q = JsonPath::parse(&filter_query(e)).unwrap();
                let wrapped = Value::Array(vec![record.clone()]);
                proptest::prop_assert_eq!(f.keeps(&record), !q.select(&wrapped).is_empty(), "{} on {}", e, record);
            }
        }
    }

    #[test]
    fn bad_filters_are_compile_errors() {
        for bad in [
            "",
            "@.a ==",
            "@.a][?@.b",
            "@.a, ?@.b",
            "state == 'x'",
            "@.a]",
        ] {
            let e = RecordFilter::compile(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad}"));
            assert_eq!(e.path, "map.filter");
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn depth_facts() {
        assert!(RecordFilter::compile("@..a").unwrap().deep);
        assert!(RecordFilter::compile("@.a == @.b").unwrap().deep);
        assert!(!RecordFilter::compile("@.a == 'x'").unwrap().deep);
    }
}
