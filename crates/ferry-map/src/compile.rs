//! From a flow's `map:` section to an evaluation plan, once per revision.
//!
//! Everything that can be decided without a record is decided here: JSONPaths are parsed and
//! given an evaluation route, templates parsed, decimal factors read, date formats and time zones
//! resolved, transform steps turned into [`Op`]s in the order they run, and the dotted output
//! paths (`customer.email`, `customer.name`) arranged into a tree of output objects, so that
//! evaluation only walks prepared structures. Every problem is collected with the flow-file path
//! of its setting (`map.fields.total.from`); a map with any problem does not compile.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::Value;

use ferry_spec::template::Root;
use ferry_spec::validate::MAX_FIELDS;
use ferry_spec::{FieldDef, FieldSpec, MapSpec, Step, Template, ValueSource};

use crate::date::DateOp;
use crate::error::{CompileError, shorten};
use crate::filter::RecordFilter;
use crate::num::{number_to_decimal, parse_decimal};
use crate::ops::Op;
use crate::select::Selector;

/// Deepest `each` inside `each` (the same bound the flow validator uses).
pub const MAX_EACH_NESTING: usize = 8;
/// Most names in one dotted output path (`a.b.c` has 3).
pub const MAX_OUTPUT_DEPTH: usize = 32;
/// Most decimal places `round` takes.
pub const MAX_ROUND_PLACES: u32 = 20;

/// The whole compiled map.
pub(crate) struct Plan {
    pub(crate) key: Option<Selector>,
    pub(crate) filter: Option<RecordFilter>,
    /// `None`: no fields, the record is delivered as it is.
    pub(crate) fields: Option<Fields>,
    /// Some path or the filter may recurse as deep as the record is nested.
    pub(crate) deep: bool,
}

/// The fields of one output object: the top level, or one `each` element.
pub(crate) struct Fields {
    pub(crate) fields: Vec<Field>,
    /// Output objects in the order they are written; leaves point into `fields`.
    pub(crate) tree: Vec<OutNode>,
}

/// A node of the output tree.
pub(crate) enum OutNode {
    Leaf { key: String, field: usize },
    Branch { key: String, children: Vec<OutNode> },
}

/// One compiled output field.
pub(crate) struct Field {
    /// Dotted output path within its object, for error messages (`customer.email`).
    pub(crate) name: String,
    pub(crate) source: Source,
    /// Transform steps, then the shorthands, then `type`, in the order they run.
    pub(crate) ops: Vec<Op>,
    pub(crate) default: Option<Value>,
    pub(crate) required: bool,
    /// `from` a path and nothing else: copied straight into the output.
    pub(crate) plain: bool,
}

impl Field {
    fn new(
        name: &str,
        source: Source,
        ops: Vec<Op>,
        default: Option<Value>,
        required: bool,
    ) -> Field {
        let plain =
            matches!(source, Source::First(_)) && ops.is_empty() && default.is_none() && !required;
        Field {
            name: name.to_string(),
            source,
            ops,
            default,
            required,
            plain,
        }
    }
}

/// Where a field's value comes from.
pub(crate) enum Source {
    /// `from`: the first node selected.
    First(Selector),
    /// `from` with `all: true`: every node selected, as an array.
    All(Selector),
    /// `const`.
    Const(Value),
    /// `template`, over the source record (or the `each` element).
    Template(TemplatePlan),
    /// `each`: every node selected, mapped with `fields` (`None`: taken as they are).
    Each(Selector, Option<Box<Fields>>),
}

impl Source {
    /// Where the value was looked for, for the `required` message.
    pub(crate) fn describe(&self) -> String {
        match self {
            Source::First(s) | Source::All(s) => format!("from {}", s.text()),
            Source::Each(s, _) => format!("each {}", s.text()),
            Source::Const(_) => "const".to_string(),
            Source::Template(t) => format!("template `{}`", shorten(t.template.as_str(), 60)),
        }
    }
}

/// A parsed template and the distinct parents of its placeholders (`buyer` for
/// `{{ source.buyer.first }} {{ source.buyer.last }}`), so that placeholders under the same
/// parent look it up in the record once.
pub(crate) struct TemplatePlan {
    pub(crate) template: Template,
    pub(crate) parents: Vec<Vec<String>>,
}

impl TemplatePlan {
    fn new(template: Template) -> TemplatePlan {
        let mut parents: Vec<Vec<String>> = Vec::new();
        for var in template.vars() {
            if let Some((_, parent)) = var.path.split_last()
                && !parents.iter().any(|p| p.as_slice() == parent)
            {
                parents.push(parent.to_vec());
            }
        }
        TemplatePlan { template, parents }
    }
}

#[derive(Default)]
struct Compiler {
    errors: Vec<CompileError>,
    deep: bool,
}

impl Compiler {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(CompileError::new(path, message));
    }

    fn selector(&mut self, at: &str, text: &str) -> Option<Selector> {
        match Selector::compile(text) {
            Ok(s) => {
                self.deep |= s.deep;
                Some(s)
            }
            Err(e) => {
                self.err(at, e);
                None
            }
        }
    }

    fn fields(
        &mut self,
        at: &str,
        specs: &BTreeMap<String, FieldSpec>,
        nesting: usize,
    ) -> Option<Fields> {
        if specs.len() > MAX_FIELDS {
            self.err(
                at,
                format!(
                    "{} fields; a map level holds at most {MAX_FIELDS}",
                    specs.len()
                ),
            );
            return None;
        }
        let before = self.errors.len();
        let mut fields = Vec::with_capacity(specs.len());
        let mut tree: Vec<OutNode> = Vec::new();
        for (name, spec) in specs {
            let here = format!("{at}.{name}");
            let names: Vec<&str> = name.split('.').collect();
            if names.iter().any(|n| n.is_empty()) {
                self.err(
                    &here,
                    "an output path is names separated by single dots (`customer.email`)",
                );
                continue;
            }
            if names.len() > MAX_OUTPUT_DEPTH {
                self.err(
                    &here,
                    format!("an output path has at most {MAX_OUTPUT_DEPTH} names"),
                );
                continue;
            }
            if let Err(conflict) = insert(&mut tree, &names, fields.len()) {
                self.err(
                    &here,
                    format!(
                        "conflicts with `{conflict}`: a field cannot be both a value and an object"
                    ),
                );
                continue;
            }
            let field = match spec {
                FieldSpec::Path(p) => self
                    .selector(&here, p)
                    .map(|s| Field::new(name, Source::First(s), Vec::new(), None, false)),
                FieldSpec::Def(def) => self.field_def(&here, name, def, nesting),
            };
            // A placeholder keeps leaf indexes right while errors are being collected; a map
            // with errors is never evaluated.
            fields.push(field.unwrap_or_else(|| {
                Field::new(name, Source::Const(Value::Null), Vec::new(), None, false)
            }));
        }
        (self.errors.len() == before).then_some(Fields { fields, tree })
    }

    /// Compiles where a field's value comes from (its shape already checked by the spec).
    fn value_source(
        &mut self,
        at: &str,
        source: ValueSource<'_>,
        nesting: usize,
    ) -> Option<Source> {
        match source {
            ValueSource::From { path, all } => {
                self.selector(&format!("{at}.from"), path).map(|s| {
                    if all {
                        Source::All(s)
                    } else {
                        Source::First(s)
                    }
                })
            }
            ValueSource::Const(c) => Some(Source::Const(c.clone())),
            ValueSource::Template(t) => {
                let here = format!("{at}.template");
                match Template::parse(t)
                    .and_then(|tpl| tpl.check_roots(&[Root::Source], &here).map(|_| tpl))
                {
                    Ok(tpl) => Some(Source::Template(TemplatePlan::new(tpl))),
                    Err(e) => {
                        self.err(here, format!("template `{}`: {e}", shorten(t, 60)));
                        None
                    }
                }
            }
            ValueSource::Each { path, fields } => {
                let selector = self.selector(&format!("{at}.each"), path);
                let body = if nesting >= MAX_EACH_NESTING {
                    self.err(
                        format!("{at}.fields"),
                        format!("`each` nests more than {MAX_EACH_NESTING} levels"),
                    );
                    None
                } else if fields.is_empty() {
                    Some(None)
                } else {
                    self.fields(&format!("{at}.fields"), fields, nesting + 1)
                        .map(|b| Some(Box::new(b)))
                };
                Some(Source::Each(selector?, body?))
            }
        }
    }

    fn field_def(&mut self, at: &str, name: &str, d: &FieldDef, nesting: usize) -> Option<Field> {
        let before = self.errors.len();
        let source = match d.value_source() {
            Ok(source) => self.value_source(at, source, nesting),
            Err(problems) => {
                for problem in problems {
                    self.err(format!("{at}{}", problem.at), problem.message);
                }
                None
            }
        };

        let mut ops = Vec::new();
        for (i, step) in d.transform.iter().enumerate() {
            if let Some(op) = self.step(&format!("{at}.transform[{i}]"), step) {
                ops.push(op);
            }
        }
        if let Some(f) = &d.decimal_to_int
            && let Some(f) = self.decimal(&format!("{at}.decimal_to_int"), f)
        {
            let int_factor = if f.is_integer() { f.to_i64() } else { None };
            ops.push(Op::DecimalToInt(f, int_factor));
        }
        if let Some(ds) = &d.date
            && let Some(op) = self.date(&format!("{at}.date"), ds)
        {
            ops.push(op);
        }
        if let Some(lookup) = &d.lookup {
            ops.push(Op::Lookup(lookup.clone()));
        }
        if let Some(ty) = d.ty {
            ops.push(Op::To(ty));
        }
        if self.errors.len() != before {
            return None;
        }
        Some(Field::new(
            name,
            source?,
            ops,
            d.default.clone(),
            d.required,
        ))
    }

    fn step(&mut self, at: &str, step: &Step) -> Option<Op> {
        Some(match step {
            Step::Trim => Op::Trim,
            Step::Lower => Op::Lower,
            Step::Upper => Op::Upper,
            Step::To(ty) => Op::To(*ty),
            Step::Multiply(v) => Op::Multiply(self.decimal(&format!("{at}.multiply"), v)?),
            Step::Add(v) => Op::Add(self.decimal(&format!("{at}.add"), v)?),
            Step::Divide(v) => {
                let here = format!("{at}.divide");
                let d = self.decimal(&here, v)?;
                if d.is_zero() {
                    self.err(here, "division by zero: give a divisor other than 0");
                    return None;
                }
                Op::Divide(d)
            }
            Step::Round(n) => {
                if *n > MAX_ROUND_PLACES {
                    self.err(
                        format!("{at}.round"),
                        format!("round to at most {MAX_ROUND_PLACES} decimal places"),
                    );
                    return None;
                }
                Op::Round(*n)
            }
            Step::Replace(r) => {
                if r.from.is_empty() {
                    self.err(
                        format!("{at}.replace.from"),
                        "`from` is the text to replace and cannot be empty",
                    );
                    return None;
                }
                Op::Replace {
                    from: r.from.clone(),
                    to: r.to.clone(),
                }
            }
            Step::Split(sep) => {
                if sep.is_empty() {
                    self.err(
                        format!("{at}.split"),
                        "split needs a non-empty separator, e.g. `split: \",\"`",
                    );
                    return None;
                }
                Op::Split(sep.clone())
            }
            Step::Join(sep) => Op::Join(sep.clone()),
            Step::Date(ds) => self.date(&format!("{at}.date"), ds)?,
            Step::Lookup(lookup) => Op::Lookup(lookup.clone()),
        })
    }

    fn decimal(&mut self, at: &str, v: &Value) -> Option<Decimal> {
        let d = match v {
            Value::String(s) => parse_decimal(s.trim()),
            Value::Number(n) => number_to_decimal(n),
            _ => None,
        };
        if d.is_none() {
            self.err(at, "expected a decimal number such as 100 or \"0.01\"");
        }
        d
    }

    fn date(&mut self, at: &str, spec: &ferry_spec::DateSpec) -> Option<Op> {
        match DateOp::compile(spec) {
            Ok(op) => Some(Op::Date(Box::new(op))),
            Err(errors) => {
                for (key, message) in errors {
                    self.err(format!("{at}.{key}"), message);
                }
                None
            }
        }
    }
}

/// Adds a dotted output path to the tree; `Err` names the path it collides with.
fn insert(nodes: &mut Vec<OutNode>, names: &[&str], field: usize) -> Result<(), String> {
    let Some((first, rest)) = names.split_first() else {
        return Ok(());
    };
    let pos = nodes.iter().position(|n| match n {
        OutNode::Leaf { key, .. } | OutNode::Branch { key, .. } => key == first,
    });
    match (pos, rest.is_empty()) {
        (None, true) => {
            nodes.push(OutNode::Leaf {
                key: (*first).to_string(),
                field,
            });
            Ok(())
        }
        (None, false) => {
            let mut children = Vec::new();
            insert(&mut children, rest, field)?;
            nodes.push(OutNode::Branch {
                key: (*first).to_string(),
                children,
            });
            Ok(())
        }
        (Some(i), _) => match &mut nodes[i] {
            OutNode::Leaf { key, .. } => Err(key.clone()),
            OutNode::Branch { key, .. } if rest.is_empty() => Err(format!("{key}.…")),
            OutNode::Branch { key, children } => {
                insert(children, rest, field).map_err(|c| format!("{key}.{c}"))
            }
        },
    }
}

/// Compiles a map spec, collecting every problem.
pub(crate) fn compile(spec: &MapSpec) -> Result<Plan, Vec<CompileError>> {
    let mut c = Compiler::default();
    let key = spec.key.as_deref().and_then(|k| c.selector("map.key", k));
    let filter = match spec.filter.as_deref().map(RecordFilter::compile) {
        Some(Ok(f)) => {
            c.deep |= f.deep;
            Some(f)
        }
        Some(Err(e)) => {
            c.errors.push(e);
            None
        }
        None => None,
    };
    let fields = if spec.fields.is_empty() {
        None
    } else {
        c.fields("map.fields", &spec.fields, 0)
    };
    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    Ok(Plan {
        key,
        filter,
        fields,
        deep: c.deep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> MapSpec {
        serde_json::from_value(v).unwrap()
    }

    fn errors(v: Value) -> Vec<(String, String)> {
        match compile(&spec(v)) {
            Ok(_) => panic!("compiled"),
            Err(e) => e.into_iter().map(|e| (e.path, e.message)).collect(),
        }
    }

    fn paths(v: Value) -> Vec<String> {
        errors(v).into_iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let p = paths(json!({
            "key": "id",
            "filter": "@.a ==",
            "fields": {
                "total": { "from": "$.total[", "decimal_to_int": "x" },
                "name": { "template": "{{ env.X }}" },
                "when": { "from": "$.t", "date": { "from": "yyyy", "timezone": "Nowhere/City" } },
                "both": { "from": "$.a", "const": 1 },
                "none": { "required": true },
                "steps": { "from": "$.a", "transform": [{ "divide": 0 }, { "round": 21 }, { "split": "" }, { "replace": { "from": "", "to": "x" } }, { "multiply": [1] }] },
                "lonely": { "const": 1, "fields": {}, "all": true },
                "items": { "each": "$.items[*]" },
                "bad..name": "$.x",
                "plain": "no-dollar"
            }
        }));
        let want = [
            "map.key",
            "map.filter",
            "map.fields.bad..name",
            "map.fields.both",
            "map.fields.items.fields",
            "map.fields.lonely.all",
            "map.fields.lonely.fields",
            "map.fields.name.template",
            "map.fields.none",
            "map.fields.plain",
            "map.fields.steps.transform[0].divide",
            "map.fields.steps.transform[1].round",
            "map.fields.steps.transform[2].split",
            "map.fields.steps.transform[3].replace.from",
            "map.fields.steps.transform[4].multiply",
            "map.fields.total.from",
            "map.fields.total.decimal_to_int",
            "map.fields.when.date.from",
            "map.fields.when.date.timezone",
        ];
        let mut got = p.clone();
        got.sort();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = errors(json!({"fields": {"n": {"template": "{{ record.x }}"}}}));
        assert!(e[0].1.contains("not available here"), "{e:?}");
        let e = errors(json!({"fields": {"n": {"from": "$.a", "transform": [{"divide": "0"}]}}}));
        assert!(e[0].1.contains("division by zero"), "{e:?}");
        let e = errors(json!({"fields": {"n": "abc"}}));
        assert!(e[0].1.contains("starts with `$`"), "{e:?}");
    }

    #[test]
    fn output_paths_build_a_tree() {
        let plan = compile(&spec(json!({"fields": {
            "customer.email": "$.e",
            "customer.name": "$.n",
            "customer.address.city": "$.c",
            "id": "$.id"
        }})))
        .unwrap();
        let fields = plan.fields.unwrap();
        let keys: Vec<&str> = fields
            .tree
            .iter()
            .map(|n| match n {
                OutNode::Leaf { key, .. } | OutNode::Branch { key, .. } => key.as_str(),
            })
            .collect();
        assert_eq!(keys, ["customer", "id"]);
        assert_eq!(fields.fields.len(), 4);
    }

    #[test]
    fn conflicting_output_paths_are_refused() {
        let e = errors(json!({"fields": {"a": "$.x", "a.b": "$.y"}}));
        assert_eq!(e[0].0, "map.fields.a.b");
        assert!(e[0].1.contains("conflicts with `a`"), "{e:?}");
        let e = errors(json!({"fields": {"a.b.c": "$.x", "a.b": "$.y"}}));
        assert_eq!(e[0].0, "map.fields.a.b.c");
        let deep = vec!["x"; MAX_OUTPUT_DEPTH + 1].join(".");
        let e = errors(json!({"fields": {deep.clone(): "$.x"}}));
        assert_eq!(e[0].0, format!("map.fields.{deep}"));
    }

    #[test]
    fn each_nesting_is_bounded() {
        let mut fields = json!({"v": "$.v"});
        for _ in 0..=MAX_EACH_NESTING {
            fields = json!({"e": {"each": "$.e[*]", "fields": fields}});
        }
        let e = errors(json!({ "fields": fields }));
        assert!(e[0].1.contains("nests more than"), "{e:?}");
    }

    #[test]
    fn no_fields_means_pass_through() {
        let plan = compile(&spec(json!({"key": "$.id"}))).unwrap();
        assert!(plan.fields.is_none());
        assert!(plan.key.is_some());
        assert!(!plan.deep);
        assert!(
            compile(&spec(json!({"fields": {"a": "$..a"}})))
                .unwrap()
                .deep
        );
    }
}
