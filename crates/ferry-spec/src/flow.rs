//! The flow file, as types.
//!
//! Every struct refuses unknown keys, so a misspelt setting is an error with its path instead of
//! a silently ignored line. Field docs here are the reference for flow authors. Values that need
//! parsing beyond their YAML type (JSONPath, templates, cron, time zones) are kept as text here
//! and checked by [`crate::validate`], which collects every problem instead of stopping at the
//! first; typed values (durations, sizes, enums) are checked while reading.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::connector::{Destination, Source};
use crate::units::{Dur, Limit};

/// Default number of delivery requests in flight.
pub const DEFAULT_CONCURRENCY: u32 = 8;
/// Most delivery requests in flight a flow may ask for.
pub const MAX_CONCURRENCY: u32 = 1024;
/// Largest batch a sink may send in one request.
pub const MAX_BATCH: u32 = 10_000;
/// The shortest retention a flow may set: pruning what was written within the hour would race
/// the runs that write it.
pub const MIN_RETENTION: Dur = Dur::from_secs(3_600);
/// Default header that carries the idempotency key.
pub const DEFAULT_IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// One flow file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// Unique name: lower-case letters, digits, `-` and `_`, at most 63 characters.
    pub name: String,
    /// What the flow is for, in a sentence.
    #[serde(default)]
    pub description: String,
    /// Free-form labels (`team: billing`, `internal: "true"`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When the flow runs by itself; without it, it runs on demand only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// Where records come from.
    pub source: Source,
    /// How a source record becomes the record that is delivered.
    #[serde(default)]
    pub map: MapSpec,
    /// Where records go.
    pub destination: Destination,
    /// Retries and other delivery policies.
    #[serde(default)]
    pub policy: Policy,
    /// How long the state a flow leaves behind is kept (default: for ever).
    #[serde(default, skip_serializing_if = "Retention::keeps_everything")]
    pub retention: Retention,
    /// Test cases: a source record and the mapped record expected from it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<TestCase>,
}

/// How long a flow's state is kept in each environment. Unset parts are kept for ever, which is
/// the default: the ledger's guarantee ("a key is never delivered twice") holds without end
/// unless an operator trades it for space. `ferry serve` and `ferry gc` prune what is older.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Ledger entries delivered longer ago than this are forgotten: a record with such a key
    /// is sent again (the destination's own duplicate window must cover that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<Dur>,
    /// Dead letters replayed or discarded longer ago than this are deleted with their
    /// history (pending ones are never pruned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letters: Option<Dur>,
    /// Run records that finished longer ago than this are deleted (the newest run of the flow
    /// is always kept: the scheduler reads its last tick from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<Dur>,
}

impl Retention {
    /// True when nothing is ever pruned (the default).
    pub fn keeps_everything(&self) -> bool {
        *self == Retention::default()
    }
}

/// When a flow runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// A cron expression: 5 fields, or 6 with seconds first (`0 * * * *` is hourly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// A fixed interval instead of cron (`15m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<Dur>,
    /// IANA time zone the cron expression is read in (default `UTC`).
    #[serde(default = "default_tz")]
    pub timezone: String,
    /// What a tick does when the previous run is still going.
    #[serde(default)]
    pub overlap: Overlap,
    /// What happens to ticks missed while ferry was down.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// A random delay up to this much added to each tick, to spread load. The delay of a tick
    /// is drawn from a generator seeded by flow, environment and tick time, so every process
    /// computes the same fire time; it is capped at half the gap to the following tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Dur>,
    /// With `catch_up: run_once`: how far back a missed tick may lie and still be caught up
    /// (default [`DEFAULT_CATCH_UP_WINDOW`]); a tick missed longer ago is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up_window: Option<Dur>,
    /// Stop firing after this many failed scheduled runs in a row; `ferry resume FLOW` starts
    /// the schedule again. Without it, the schedule never pauses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_after_failures: Option<u32>,
}

/// How far back a missed tick may lie for `catch_up: run_once` to catch it up.
pub const DEFAULT_CATCH_UP_WINDOW: Dur = Dur::from_secs(3600);

impl Schedule {
    /// The catch-up window in effect: the configured one, else [`DEFAULT_CATCH_UP_WINDOW`].
    pub fn catch_up_window(&self) -> Dur {
        self.catch_up_window.unwrap_or(DEFAULT_CATCH_UP_WINDOW)
    }
}

fn default_tz() -> String {
    "UTC".to_string()
}

/// Overlap policy of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The tick is recorded as skipped.
    #[default]
    Skip,
    /// At most one run waits for the current one.
    Queue,
}

/// Catch-up policy of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Missed ticks are dropped.
    #[default]
    Skip,
    /// One run fires at start when ticks were missed.
    RunOnce,
}

/// A header or parameter value: a template, or a reference to a secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Param {
    Template(String),
    Secret(SecretRef),
}

impl<'de> Deserialize<'de> for Param {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Param;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a text template or `{ secret: NAME }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Param, E> {
                Ok(Param::Template(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Param, E> {
                Ok(Param::Template(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Param, E> {
                Ok(Param::Template(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Param, E> {
                Ok(Param::Template(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Param, E> {
                Ok(Param::Template(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Param, A::Error> {
                SecretRef::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(Param::Secret)
            }
        }
        // `page_size: 200` and `version: 1.10` are the text as written.
        crate::yaml::as_written(d, V)
    }
}

/// A reference to a secret, resolved at run time from the secrets file or the process
/// environment. Flow files never hold credential values.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Name of the secret (`SHOP_TOKEN`).
    pub secret: String,
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Inner {
            secret: String,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SecretRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a secret reference `{ secret: NAME }`")
            }
            fn visit_str<E: de::Error>(self, _v: &str) -> Result<SecretRef, E> {
                // The value itself is never echoed: it may be a real credential.
                Err(E::custom(
                    "a literal credential is not allowed in a flow file; reference a secret instead: `{ secret: NAME }` (resolved from the secrets file or the environment)",
                ))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SecretRef, A::Error> {
                let inner = Inner::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(SecretRef {
                    secret: inner.secret,
                })
            }
        }
        // Any scalar comes as text, so a numeric credential is refused without being echoed.
        crate::yaml::as_written(d, V)
    }
}

/// Authentication of HTTP requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// `Authorization: Bearer <secret>`.
    Bearer(SecretRef),
    /// HTTP basic authentication.
    Basic(BasicAuth),
    /// A key sent in a header (default `X-API-Key`).
    ApiKey(ApiKeyAuth),
    /// OAuth2 client credentials: a token fetched, cached and refreshed on expiry or 401.
    Oauth2(OAuth2Auth),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name (a template, may use `env`).
    pub username: String,
    pub password: SecretRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyAuth {
    /// Header that carries the key.
    #[serde(default = "default_api_key_header")]
    pub header: String,
    pub key: SecretRef,
}

fn default_api_key_header() -> String {
    "X-API-Key".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Auth {
    /// Token endpoint (a template, may use `env`).
    pub token_url: String,
    /// Client id (a template, may use `env`).
    pub client_id: String,
    pub client_secret: SecretRef,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// Incremental sync settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CursorSpec {
    /// JSONPath, in the source record, of the value the cursor follows (`$.updated_at`). The
    /// largest settled value is stored after each run and offered to the next as `{{ cursor }}`.
    pub field: String,
    /// Value of `{{ cursor }}` before the first run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Value>,
}

/// The field map.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapSpec {
    /// JSONPath of the record key in the source record (`$.id`); part of the default
    /// idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Keep only records for which this RFC 9535 filter expression holds; `@` is the source
    /// record (`@.state != 'draft'`). Dropped records are counted as filtered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Output fields by dotted output path (`customer.email`). Without fields, the source record
    /// is delivered as it is.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldSpec>,
}

/// One output field: a JSONPath string as shorthand, or a full definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FieldSpec {
    Path(String),
    Def(Box<FieldDef>),
}

impl<'de> Deserialize<'de> for FieldSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FieldSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSONPath such as `$.id`, or a field definition `{ from: ..., ... }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldSpec, E> {
                Ok(FieldSpec::Path(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FieldSpec, A::Error> {
                FieldDef::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|d| FieldSpec::Def(Box::new(d)))
            }
        }
        crate::yaml::as_written(d, V)
    }
}

/// A full field definition. Exactly one of `from`, `const`, `template`, `each` gives the value;
/// then `transform` steps run in order (skipped when the value is missing or null), then the
/// `decimal_to_int`, `date` and `lookup` shorthands, then `type`; a value still missing or null
/// takes `default`, and a `required` field without a value fails the record.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    /// JSONPath in the source record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// With `from`: collect every selected node into an array instead of taking the first.
    #[serde(default, skip_serializing_if = "is_false")]
    pub all: bool,
    /// A constant value.
    #[serde(default, rename = "const", skip_serializing_if = "Option::is_none")]
    pub constant: Option<Value>,
    /// A text template over the source record (`{{ source.first }} {{ source.last }}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// JSONPath of a sub-array in the source record; each element is mapped with `fields`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub each: Option<String>,
    /// The field map applied to each element selected by `each` (`$` is the element).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, FieldSpec>>,
    /// Steps applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transform: Vec<Step>,
    /// Shorthand: multiply a decimal (string or number) by this factor and round to an integer,
    /// exactly (`"12.30"` × 100 = 1230).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decimal_to_int: Option<Value>,
    /// Shorthand: a date step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<DateSpec>,
    /// Shorthand: a lookup step (see [`Lookup`]); by default a value not in the table becomes
    /// null (and takes `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup: Option<Lookup>,
    /// Final type coercion.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub ty: Option<ValueType>,
    /// Value used when the result is missing or null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Fail the record (dead-letter it) when the result is missing or null.
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,
}

/// Where a field's value comes from: exactly one of `from`, `const`, `template` and `each` —
/// the form of a [`FieldDef`] that passed [`FieldDef::value_source`]'s rules, so the map
/// compiler only compiles and the validator and the compiler cannot disagree on them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueSource<'a> {
    /// `from` (with `all`: every selected node, as an array).
    From { path: &'a str, all: bool },
    /// `const`.
    Const(&'a Value),
    /// `template`.
    Template(&'a str),
    /// `each` with its `fields`.
    Each {
        path: &'a str,
        fields: &'a BTreeMap<String, FieldSpec>,
    },
}

/// A rule of a field definition's shape that it breaks: the key it is about, relative to the
/// field (`""` for the field itself, `.all`, `.fields`), and what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeProblem {
    pub at: &'static str,
    pub message: &'static str,
}

impl FieldDef {
    /// Every rule of the definition's shape it breaks (empty when it has none): one value
    /// source, `all` only with `from`, `each` and `fields` together.
    pub fn shape_problems(&self) -> Vec<ShapeProblem> {
        let mut out = Vec::new();
        let given = [
            self.from.is_some(),
            self.constant.is_some(),
            self.template.is_some(),
            self.each.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given == 0 {
            out.push(ShapeProblem {
                at: "",
                message: "give the value with one of `from`, `const`, `template` or `each`",
            });
        } else if given > 1 {
            out.push(ShapeProblem {
                at: "",
                message: "use only one of `from`, `const`, `template` and `each`",
            });
        }
        if self.all && self.from.is_none() {
            out.push(ShapeProblem {
                at: ".all",
                message: "`all` goes with `from`",
            });
        }
        match (&self.each, &self.fields) {
            (Some(_), None) => out.push(ShapeProblem {
                at: ".fields",
                message: "`each` needs `fields`: the map applied to each element",
            }),
            (None, Some(_)) => out.push(ShapeProblem {
                at: ".fields",
                message: "`fields` goes with `each`",
            }),
            _ => {}
        }
        out
    }

    /// Where the value comes from, or every shape rule the definition breaks.
    pub fn value_source(&self) -> Result<ValueSource<'_>, Vec<ShapeProblem>> {
        let problems = self.shape_problems();
        if !problems.is_empty() {
            return Err(problems);
        }
        match (
            &self.from,
            &self.constant,
            &self.template,
            &self.each,
            &self.fields,
        ) {
            (Some(path), None, None, None, _) => Ok(ValueSource::From {
                path,
                all: self.all,
            }),
            (None, Some(c), None, None, _) => Ok(ValueSource::Const(c)),
            (None, None, Some(t), None, _) => Ok(ValueSource::Template(t)),
            (None, None, None, Some(path), Some(fields)) => Ok(ValueSource::Each { path, fields }),
            _ => Err(problems),
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Target types of coercion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    String,
    Number,
    Integer,
    Boolean,
}

/// One transform step: a bare name (`trim`) or a name with an argument (`{ multiply: 100 }`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    Trim,
    Lower,
    Upper,
    /// Coerce to a type (same as `type:` but at this point of the chain).
    To(ValueType),
    /// Exact decimal multiplication (a decimal string stays exact).
    Multiply(Value),
    /// Exact decimal division.
    Divide(Value),
    /// Exact decimal addition.
    Add(Value),
    /// Round half away from zero to this many decimal places.
    Round(u32),
    /// Replace every occurrence of a text.
    Replace(ReplaceSpec),
    /// Split a string into an array.
    Split(String),
    /// Join an array of scalars into a string.
    Join(String),
    /// Parse and format a date or time.
    Date(DateSpec),
    /// Look the value up in a table (see [`Lookup`]).
    Lookup(Lookup),
}

/// A lookup table: the value's text form (`express`, `1`, `2.5`, `true`) is looked up and
/// replaced by what the table gives.
///
/// Written as the table itself (`lookup: { express: high }`: a value not in it becomes null), or
/// in the long form `lookup: { table: { GB: UK }, otherwise: keep }`, which says what happens to
/// a value not in the table ([`Otherwise`]). A mapping whose key `table` holds a mapping is the
/// long form; the short form of a table with such a `table` entry has to be written long
/// (`{ table: { table: {...} } }`). Both forms of the same lookup have the same canonical form
/// (the short one, unless the table itself looks long), so spelling out `otherwise: null` never
/// makes a new revision.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Lookup {
    /// Text form of a value → what it becomes.
    pub table: BTreeMap<String, Value>,
    /// What happens to a value not in the table.
    pub otherwise: Otherwise,
}

/// What a lookup does with a value not in its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Otherwise {
    /// It becomes null, and takes the field's `default` (the short form's behaviour).
    #[default]
    Null,
    /// It stays as it is (`GB → UK`, every other code unchanged).
    Keep,
    /// The record fails at this field and goes to the dead-letter queue with the field path and
    /// the value.
    Fail,
}

/// The long form's keys.
const LOOKUP_TABLE: &str = "table";
const LOOKUP_OTHERWISE: &str = "otherwise";

impl Lookup {
    /// A table that would read back as the long form if written short.
    fn looks_long(table: &BTreeMap<String, Value>) -> bool {
        table.get(LOOKUP_TABLE).is_some_and(Value::is_object)
    }
}

impl Serialize for Lookup {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if self.otherwise == Otherwise::Null && !Lookup::looks_long(&self.table) {
            return self.table.serialize(s);
        }
        let long = self.otherwise != Otherwise::Null;
        let mut m = s.serialize_map(Some(1 + usize::from(long)))?;
        if long {
            m.serialize_entry(LOOKUP_OTHERWISE, &self.otherwise)?;
        }
        m.serialize_entry(LOOKUP_TABLE, &self.table)?;
        m.end()
    }
}

impl<'de> Deserialize<'de> for Lookup {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map: BTreeMap<String, Value> = BTreeMap::deserialize(d)?;
        if !Lookup::looks_long(&map) {
            return Ok(Lookup {
                table: map,
                otherwise: Otherwise::Null,
            });
        }
        if let Some(extra) = map
            .keys()
            .find(|k| *k != LOOKUP_TABLE && *k != LOOKUP_OTHERWISE)
        {
            return Err(de::Error::custom(format!(
                "unknown field `{extra}` in the long form `{{ table: {{...}}, otherwise: keep | null | fail }}` (a lookup whose `table` entry is a mapping is the long form; to look up the text `table` itself, write the long form around it)"
            )));
        }
        let otherwise = match map.remove(LOOKUP_OTHERWISE) {
            None | Some(Value::Null) => Otherwise::Null,
            Some(v) => Otherwise::deserialize(v).map_err(|_| {
                de::Error::custom(
                    "`otherwise` is `keep` (the value stays), `null` (it becomes null and takes `default`) or `fail` (the record is dead-lettered)",
                )
            })?,
        };
        let table = match map.remove(LOOKUP_TABLE) {
            Some(Value::Object(t)) => t.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        Ok(Lookup { table, otherwise })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceSpec {
    pub from: String,
    pub to: String,
}

/// A date conversion. Formats: `unix` (seconds), `unix_ms`, `rfc3339`, or a strftime pattern
/// (`%d.%m.%Y %H:%M`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateSpec {
    /// Input format (default `rfc3339`).
    #[serde(default = "default_date_format")]
    pub from: String,
    /// Output format (default `rfc3339`).
    #[serde(default = "default_date_format")]
    pub to: String,
    /// Time zone of inputs that carry none (default `UTC`).
    #[serde(default = "default_tz")]
    pub input_timezone: String,
    /// Time zone the output is written in (default `UTC`).
    #[serde(default = "default_tz")]
    pub timezone: String,
}

fn default_date_format() -> String {
    "rfc3339".to_string()
}

/// Delivery policies. The layers apply in this order around each request: rate limit →
/// circuit breaker → retry (within the retry budget) → timeout → request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub retry: RetrySpec,
    /// Circuit breaker of the destination, shared by every run in the process that delivers to
    /// the same host and port (the first configuration seen for a destination is used).
    #[serde(default)]
    pub circuit_breaker: BreakerSpec,
    /// Most requests per second to the destination, shared by every run delivering there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// Retries to the destination may be at most this share of recent requests (plus a few
    /// per second), so a struggling API is not buried under retries.
    #[serde(default = "default_retry_budget")]
    pub retry_budget: f64,
    /// A run still going after this long stops cleanly as `incomplete`; records not yet
    /// delivered are handed back to the next run (the cursor does not move past them).
    /// Without it, a scheduled run stops after min(55 minutes, 0.9 × the time to the next
    /// tick) so that it never swallows the next tick, and a manual run or backfill has no
    /// deadline; `none` switches the scheduled default off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Limit>,
    /// How long a run pauses while the state store is unreachable (claims, deliveries and
    /// settles wait for it) before it stops as `incomplete`, handing its records back
    /// (default [`DEFAULT_STORE_OUTAGE_MAX`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_outage_max: Option<Dur>,
}

/// How long a run waits for an unreachable state store by default.
pub const DEFAULT_STORE_OUTAGE_MAX: Dur = Dur::from_secs(300);
/// How long a destination may stay unavailable (its breaker open) before a run stops, by
/// default.
pub const DEFAULT_BREAKER_MAX_OPEN: Dur = Dur::from_secs(300);
/// The longest default deadline of a scheduled run.
pub const MAX_SCHEDULED_DEADLINE: Dur = Dur::from_secs(55 * 60);

impl Policy {
    /// The deadline of a run: the configured one; else, for a scheduled run whose next tick
    /// is `period` after its own, min(55 minutes, 0.9 × period); else none.
    pub fn deadline_for(&self, period: Option<std::time::Duration>) -> Option<std::time::Duration> {
        match self.deadline {
            Some(limit) => limit.get(),
            None => period.map(|p| p.mul_f64(0.9).min(MAX_SCHEDULED_DEADLINE.get())),
        }
    }

    /// How long a run waits for an unreachable state store.
    pub fn store_outage_max(&self) -> std::time::Duration {
        self.store_outage_max
            .unwrap_or(DEFAULT_STORE_OUTAGE_MAX)
            .get()
    }
}

fn default_retry_budget() -> f64 {
    0.2
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            retry: RetrySpec::default(),
            circuit_breaker: BreakerSpec::default(),
            rate_limit: None,
            retry_budget: default_retry_budget(),
            deadline: None,
            store_outage_max: None,
        }
    }
}

/// Rate limit: a steady rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Requests per second.
    pub per_second: u32,
    /// Requests allowed at once above the steady rate (default: one second's worth, at most 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl RateLimitSpec {
    /// The burst in effect.
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or_else(|| self.per_second.clamp(1, 10))
    }
}

/// Circuit breaker settings (resilience4j semantics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSpec {
    /// Set false to deliver without a breaker.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Open when this share of the recent calls failed (0 to 1).
    #[serde(default = "half")]
    pub failure_rate: f64,
    /// Open when this share of the recent calls were slow (0 to 1).
    #[serde(default = "all")]
    pub slow_call_rate: f64,
    /// A call slower than this is slow.
    #[serde(default = "default_slow_call")]
    pub slow_call_duration: Dur,
    /// Rates are judged once this many calls are in the window.
    #[serde(default = "default_min_calls")]
    pub min_calls: u32,
    /// Number of recent calls judged.
    #[serde(default = "default_window")]
    pub window: u32,
    /// How long the breaker stays open before trial calls.
    #[serde(default = "default_open_for")]
    pub open_for: Dur,
    /// Trial calls let through when half-open.
    #[serde(default = "default_half_open")]
    pub half_open_calls: u32,
    /// A run whose destination stays unavailable this long (its breaker open, no call
    /// answered since) stops as `incomplete`, handing its records back, instead of waiting
    /// for ever (default [`DEFAULT_BREAKER_MAX_OPEN`]; `none`: wait until the deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open: Option<Limit>,
}

impl BreakerSpec {
    /// How long records may wait on an open breaker before the run stops; `None`: no bound.
    pub fn max_open(&self) -> Option<std::time::Duration> {
        match self.max_open {
            Some(limit) => limit.get(),
            None => Some(DEFAULT_BREAKER_MAX_OPEN.get()),
        }
    }
}

impl Default for BreakerSpec {
    fn default() -> Self {
        BreakerSpec {
            enabled: true,
            failure_rate: half(),
            slow_call_rate: all(),
            slow_call_duration: default_slow_call(),
            min_calls: default_min_calls(),
            window: default_window(),
            open_for: default_open_for(),
            half_open_calls: default_half_open(),
            max_open: None,
        }
    }
}

fn yes() -> bool {
    true
}
fn half() -> f64 {
    0.5
}
fn all() -> f64 {
    1.0
}
fn default_slow_call() -> Dur {
    Dur::from_secs(60)
}
fn default_min_calls() -> u32 {
    20
}
fn default_window() -> u32 {
    100
}
fn default_open_for() -> Dur {
    Dur::from_secs(30)
}
fn default_half_open() -> u32 {
    3
}

/// Retries of a failed delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all, the first included (1 = no retry).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Backoff before the first retry.
    #[serde(default = "default_initial")]
    pub initial: Dur,
    /// Longest backoff (and longest `Retry-After` honoured).
    #[serde(default = "default_max_backoff")]
    pub max: Dur,
    /// Jitter applied to backoff.
    #[serde(default)]
    pub jitter: Jitter,
    /// Give up on a record after this long, counting from its first attempt.
    #[serde(default = "default_max_elapsed")]
    pub max_elapsed: Dur,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            attempts: default_attempts(),
            initial: default_initial(),
            max: default_max_backoff(),
            jitter: Jitter::default(),
            max_elapsed: default_max_elapsed(),
        }
    }
}

fn default_attempts() -> u32 {
    5
}
fn default_initial() -> Dur {
    Dur::from_millis(200)
}
fn default_max_backoff() -> Dur {
    Dur::from_secs(30)
}
fn default_max_elapsed() -> Dur {
    Dur::from_secs(300)
}

/// Jitter applied to exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// `sleep = U(0, min(max, initial·2^n))`: the best spread under contention.
    #[default]
    Full,
    /// `sleep = d/2 + U(0, d/2)`.
    Equal,
    /// No randomness.
    None,
}

/// A flow test case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The source record.
    pub input: Value,
    /// The mapped record expected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Value>,
    /// The mapping is expected to fail at this output field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_error: Option<ExpectError>,
    /// The record is expected to be filtered out.
    #[serde(default, skip_serializing_if = "is_false")]
    pub expect_filtered: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectError {
    /// Output field path the failure names.
    pub field: String,
    /// Text the reason must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
}
