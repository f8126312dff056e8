//! Checks a typed flow for everything its types cannot say, collecting every problem.
//!
//! JSONPath expressions, templates, cron expressions, time zones, date patterns and decimal
//! factors are all parsed here, so a typo is a validation error with its field path and never a
//! surprise in the middle of a run.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::format::{Item, StrftimeItems};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::flow::*;
use crate::path::JsonPath;
use crate::template::{Root, Template};

/// One problem, by field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// Header and parameter names that carry credentials: their values must be secret references.
const SENSITIVE_NAMES: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "token",
    "access_token",
    "api_key",
    "apikey",
    "api-key",
    "x-api-key",
    "secret",
    "client_secret",
    "password",
    "passwd",
];

/// Most output fields in one map level.
pub const MAX_FIELDS: usize = 1000;

#[derive(Default)]
pub(crate) struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    pub(crate) fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(crate) fn path(&mut self, at: &str, text: &str) -> Option<JsonPath> {
        match JsonPath::parse(text) {
            Ok(p) => Some(p),
            Err(e) => {
                self.err(at, e.to_string());
                None
            }
        }
    }

    /// A path a field map selects with: into the record (`$.a`), or into what the source tells
    /// about it (`$meta.routing_key`).
    pub(crate) fn field_path(&mut self, at: &str, text: &str) {
        match crate::path::meta_relative(text) {
            Some(inner) => {
                self.path(at, &inner);
            }
            None => {
                self.path(at, text);
            }
        }
    }

    pub(crate) fn template(&mut self, at: &str, text: &str, roots: &[Root]) -> Option<Template> {
        match Template::parse(text).and_then(|t| t.check_roots(roots, at).map(|_| t)) {
            Ok(t) => Some(t),
            Err(e) => {
                self.err(at, format!("template `{}`: {e}", short(text)));
                None
            }
        }
    }

    /// A destination's `idempotency_key` template: record-level placeholders only, and not a
    /// constant (every record would look like the first).
    pub(crate) fn idempotency_key(&mut self, at: &str, text: &str) {
        let roots = [
            Root::Flow,
            Root::Key,
            Root::Hash,
            Root::Source,
            Root::Record,
        ];
        if let Some(t) = self.template(at, text, &roots)
            && t.is_literal()
        {
            self.err(
                at,
                "a constant key would make every record look like the first: use placeholders such as `{{ key }}` or `{{ source.id }}`",
            );
        }
    }

    pub(crate) fn params(&mut self, at: &str, params: &BTreeMap<String, Param>, roots: &[Root]) {
        for (name, value) in params {
            let here = format!("{at}.{name}");
            if name.trim().is_empty() {
                self.err(&here, "empty name");
                continue;
            }
            match value {
                Param::Template(t) => {
                    if is_sensitive(name) {
                        self.err(
                            &here,
                            format!(
                                "`{name}` carries a credential: reference a secret (`{{ secret: NAME }}`) or use `auth:`, never a value in the flow file"
                            ),
                        );
                    } else {
                        self.template(&here, t, roots);
                    }
                }
                Param::Secret(s) => self.secret(&format!("{here}.secret"), s),
            }
        }
    }

    pub(crate) fn secret(&mut self, at: &str, s: &SecretRef) {
        let ok = !s.secret.is_empty()
            && s.secret.len() <= 128
            && s.secret
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
            && !s.secret.starts_with(|c: char| c.is_ascii_digit());
        if !ok {
            self.err(
                at,
                "a secret name is letters, digits, `_`, `-` and `.`, not starting with a digit",
            );
        }
    }

    pub(crate) fn auth(&mut self, at: &str, auth: &Auth) {
        match auth {
            Auth::Bearer(s) => self.secret(&format!("{at}.bearer.secret"), s),
            Auth::Basic(b) => {
                self.template(&format!("{at}.basic.username"), &b.username, &[Root::Env]);
                self.secret(&format!("{at}.basic.password.secret"), &b.password);
            }
            Auth::ApiKey(k) => {
                if !valid_header_name(&k.header) {
                    self.err(format!("{at}.api_key.header"), "not a valid header name");
                }
                self.secret(&format!("{at}.api_key.key.secret"), &k.key);
            }
            Auth::Oauth2(o) => {
                self.url_template(
                    &format!("{at}.oauth2.token_url"),
                    &o.token_url,
                    &[Root::Env],
                );
                self.template(
                    &format!("{at}.oauth2.client_id"),
                    &o.client_id,
                    &[Root::Env],
                );
                self.secret(
                    &format!("{at}.oauth2.client_secret.secret"),
                    &o.client_secret,
                );
            }
        }
    }

    pub(crate) fn url_template(&mut self, at: &str, text: &str, roots: &[Root]) {
        for message in url_credentials(text) {
            self.err(at, message);
        }
        if let Some(t) = self.template(at, text, roots) {
            let starts_with_var = t.as_str().trim_start().starts_with("{{");
            if !(starts_with_var || text.starts_with("http://") || text.starts_with("https://")) {
                self.err(
                    at,
                    format!(
                        "`{}` is not an http:// or https:// URL (or a template starting with one, e.g. `{{{{ env.BASE_URL }}}}/path`)",
                        short(text)
                    ),
                );
            }
        }
    }

    pub(crate) fn headers(&mut self, at: &str, headers: &BTreeMap<String, Param>, roots: &[Root]) {
        for name in headers.keys() {
            if !valid_header_name(name) {
                self.err(format!("{at}.{name}"), "not a valid HTTP header name");
            }
        }
        self.params(at, headers, roots);
    }

    fn decimal(&mut self, at: &str, v: &Value) -> Option<Decimal> {
        let d = match v {
            Value::String(s) => Decimal::from_str(s.trim()).ok(),
            Value::Number(n) => Decimal::from_str(&n.to_string())
                .ok()
                .or_else(|| n.as_f64().and_then(|f| Decimal::try_from(f).ok())),
            _ => None,
        };
        if d.is_none() {
            self.err(at, "expected a decimal number such as 100 or \"0.01\"");
        }
        d
    }

    fn date(&mut self, at: &str, d: &DateSpec) {
        for (k, f) in [("from", &d.from), ("to", &d.to)] {
            if !matches!(f.as_str(), "unix" | "unix_ms" | "rfc3339") {
                if !f.contains('%') {
                    self.err(
                        format!("{at}.{k}"),
                        format!("`{f}` is not a date format: use unix, unix_ms, rfc3339 or a strftime pattern such as `%Y-%m-%d`"),
                    );
                } else if StrftimeItems::new(f).any(|i| matches!(i, Item::Error)) {
                    self.err(
                        format!("{at}.{k}"),
                        format!("`{f}` is not a valid strftime pattern"),
                    );
                }
            }
        }
        for (k, tz) in [
            ("input_timezone", &d.input_timezone),
            ("timezone", &d.timezone),
        ] {
            if tz.parse::<chrono_tz::Tz>().is_err() {
                self.err(
                    format!("{at}.{k}"),
                    format!("`{tz}` is not an IANA time zone (e.g. `Europe/Berlin`, `UTC`)"),
                );
            }
        }
    }

    fn steps(&mut self, at: &str, steps: &[Step]) {
        for (i, step) in steps.iter().enumerate() {
            let here = format!("{at}[{i}]");
            match step {
                Step::Multiply(v) | Step::Add(v) => {
                    self.decimal(&here, v);
                }
                Step::Divide(v) => {
                    if let Some(d) = self.decimal(&here, v)
                        && d.is_zero()
                    {
                        self.err(&here, "division by zero");
                    }
                }
                Step::Round(n) if *n > 20 => self.err(&here, "round to at most 20 decimal places"),
                Step::Date(d) => self.date(&format!("{here}.date"), d),
                Step::Split(s) | Step::Join(s)
                    if s.is_empty() && matches!(step, Step::Split(_)) =>
                {
                    self.err(&here, "split needs a non-empty separator")
                }
                _ => {}
            }
        }
    }

    fn fields(&mut self, at: &str, fields: &BTreeMap<String, FieldSpec>, depth: usize) {
        if depth > 8 {
            self.err(at, "`each` nests more than 8 levels");
            return;
        }
        if fields.len() > MAX_FIELDS {
            self.err(at, format!("more than {MAX_FIELDS} fields"));
        }
        // `a` and `a.b` cannot both be set: `a` would be a value and an object at once. Each
        // name is checked against its own dotted prefixes (a map lookup each), not against every
        // other name: a file with many fields must not cost quadratic time.
        let mut conflicts: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for other in fields.keys() {
            for (dot, _) in other.match_indices('.') {
                let prefix = &other[..dot];
                if fields.contains_key(prefix) {
                    conflicts.entry(prefix).or_default().push(other);
                }
            }
        }
        for name in fields.keys() {
            if name.is_empty() || name.split('.').any(str::is_empty) {
                self.err(
                    format!("{at}.{name}"),
                    "an output path is names separated by single dots (`customer.email`)",
                );
            }
            for other in conflicts.remove(name.as_str()).unwrap_or_default() {
                self.err(
                    format!("{at}.{other}"),
                    format!(
                        "conflicts with `{name}`: a field cannot be both a value and an object"
                    ),
                );
            }
        }
        for (name, spec) in fields {
            let here = format!("{at}.{name}");
            match spec {
                FieldSpec::Path(p) => {
                    if !p.starts_with('$') {
                        self.err(
                            &here,
                            format!(
                                "`{}` is not a JSONPath: a field given as text must start with `$` (e.g. `$.id`); for a constant write `{{ const: ... }}`, for text with placeholders `{{ template: ... }}`",
                                short(p)
                            ),
                        );
                    } else {
                        self.field_path(&here, p);
                    }
                }
                FieldSpec::Def(d) => self.field_def(&here, d, depth),
            }
        }
    }

    fn field_def(&mut self, at: &str, d: &FieldDef, depth: usize) {
        for problem in d.shape_problems() {
            self.err(format!("{at}{}", problem.at), problem.message);
        }
        // Every part given is checked too, also when the shape is wrong: all problems at once.
        if let Some(p) = &d.from {
            self.field_path(&format!("{at}.from"), p);
        }
        if let Some(t) = &d.template {
            self.template(&format!("{at}.template"), t, &[Root::Source]);
        }
        if let Some(p) = &d.each {
            self.field_path(&format!("{at}.each"), p);
        }
        if let (Some(_), Some(f)) = (&d.each, &d.fields) {
            self.fields(&format!("{at}.fields"), f, depth + 1);
        }
        self.steps(&format!("{at}.transform"), &d.transform);
        if let Some(v) = &d.decimal_to_int {
            self.decimal(&format!("{at}.decimal_to_int"), v);
        }
        if let Some(ds) = &d.date {
            self.date(&format!("{at}.date"), ds);
        }
    }
}

/// Credentials written into a URL (or URL template): a user name or password before the host
/// (`https://admin:pw@host`), or a query parameter whose name carries a credential
/// (`?api_key=...`, the same names refused in `params:` and `headers:`). One message per
/// problem, never echoing the value: a URL is logged, stored with every revision and shown.
pub fn url_credentials(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (before_fragment, _) = url.split_once('#').unwrap_or((url, ""));
    let (base, query) = before_fragment
        .split_once('?')
        .unwrap_or((before_fragment, ""));
    if let Some((_, rest)) = base.split_once("://") {
        let authority = rest.split('/').next().unwrap_or(rest);
        if authority.contains('@') {
            out.push(
                "the URL carries a user name or password (`user:password@host`): remove it and use `auth: { basic: { username: ..., password: { secret: NAME } } }`, so the credential stays a secret and never appears in logs or revisions".to_string(),
            );
        }
    }
    for pair in query.split(['&', ';']) {
        let raw_name = pair.split('=').next().unwrap_or(pair).trim();
        if raw_name.is_empty() || raw_name.contains("{{") {
            continue;
        }
        let name = percent_encoding::percent_decode_str(raw_name).decode_utf8_lossy();
        if is_sensitive(&name) {
            out.push(format!(
                "the URL's query parameter `{}` carries a credential: take it out of the URL and send it as a secret reference (`params: {{ {0}: {{ secret: NAME }} }}` on a source, `headers:` otherwise) or use `auth:`; a URL is logged and stored with every revision",
                short(&name)
            ));
        }
    }
    out
}

fn short(s: &str) -> String {
    if s.len() <= 60 {
        s.to_string()
    } else {
        let mut end = 57;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}

fn is_sensitive(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    SENSITIVE_NAMES.contains(&n.as_str())
        || n.ends_with("_token")
        || n.ends_with("-token")
        || n.ends_with("secret")
        || n.ends_with("password")
}

pub(crate) fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn valid_flow_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// What is wrong with a flow name, or `None` for a good one: the name rule, for a flow file's
/// `name` and for names given on the command line or the API (`ferry clone A NEW`).
pub fn flow_name_problem(name: &str) -> Option<String> {
    (!valid_flow_name(name)).then(|| {
        format!(
            "`{}` is not a flow name: lower-case letters, digits, `-` and `_`, starting with a letter or digit, at most 63 characters",
            short(name)
        )
    })
}

/// Checks a flow; an empty list means it is valid.
pub fn validate(flow: &Flow) -> Vec<Problem> {
    let mut c = Checker::default();
    if let Some(problem) = flow_name_problem(&flow.name) {
        c.err("name", problem);
    }
    if let Some(s) = &flow.schedule {
        match (&s.cron, &s.every) {
            (Some(expr), None) => {
                if let Err(e) = croner::parser::CronParser::builder()
                    .seconds(croner::parser::Seconds::Optional)
                    .build()
                    .parse(expr)
                {
                    c.err(
                        "schedule.cron",
                        format!("`{}` is not a cron expression: {e}", short(expr)),
                    );
                }
            }
            (None, Some(every)) => {
                if every.get() < std::time::Duration::from_secs(1) {
                    c.err("schedule.every", "the interval must be at least 1s");
                }
                if let Some(j) = s.jitter
                    && j.get() >= every.get()
                {
                    c.err(
                        "schedule.jitter",
                        "the jitter must be shorter than the interval (`every`)",
                    );
                }
            }
            _ => c.err("schedule", "give exactly one of `cron` and `every`"),
        }
        if let Some(w) = s.catch_up_window {
            if s.catch_up != CatchUp::RunOnce {
                c.err(
                    "schedule.catch_up_window",
                    "a catch-up window only applies to `catch_up: run_once`; remove it or set `catch_up: run_once`",
                );
            } else if w.get() < std::time::Duration::from_secs(1) {
                c.err(
                    "schedule.catch_up_window",
                    "the catch-up window must be at least 1s",
                );
            }
        }
        if s.pause_after_failures == Some(0) {
            c.err(
                "schedule.pause_after_failures",
                "must be at least 1 (or left out to never pause)",
            );
        }
        if s.timezone.parse::<chrono_tz::Tz>().is_err() {
            c.err(
                "schedule.timezone",
                format!(
                    "`{}` is not an IANA time zone (e.g. `Europe/Berlin`)",
                    short(&s.timezone)
                ),
            );
        }
    }

    flow.source.validate(&mut c);

    if let Some(k) = &flow.map.key {
        c.field_path("map.key", k);
    }
    if let Some(f) = &flow.map.filter
        && let Err(e) = JsonPath::parse(&filter_query(f))
    {
        c.err("map.filter", format!("`{}` is not a filter expression (RFC 9535, `@` is the record, e.g. `@.state != 'draft'`): {}", short(f), e.reason));
    }
    c.fields("map.fields", &flow.map.fields, 0);

    flow.destination.validate(&mut c);

    for (what, d) in [
        ("ledger", flow.retention.ledger),
        ("dead_letters", flow.retention.dead_letters),
        ("runs", flow.retention.runs),
    ] {
        if d.is_some_and(|d| d.get() < MIN_RETENTION.get()) {
            c.err(
                format!("retention.{what}"),
                format!("at least {MIN_RETENTION} (leave it out to keep everything)"),
            );
        }
    }
    check_retry(&mut c, "policy.retry", &flow.policy.retry);
    let b = &flow.policy.circuit_breaker;
    for (k, v) in [
        ("failure_rate", b.failure_rate),
        ("slow_call_rate", b.slow_call_rate),
    ] {
        if !(v > 0.0 && v <= 1.0) {
            c.err(
                format!("policy.circuit_breaker.{k}"),
                "a share between 0 (exclusive) and 1, e.g. 0.5",
            );
        }
    }
    if b.window == 0 || b.window > 10_000 {
        c.err("policy.circuit_breaker.window", "from 1 to 10000 calls");
    }
    if b.min_calls == 0 || b.min_calls > b.window {
        c.err(
            "policy.circuit_breaker.min_calls",
            format!("from 1 to `window` ({})", b.window),
        );
    }
    if b.half_open_calls == 0 || b.half_open_calls > b.window {
        c.err(
            "policy.circuit_breaker.half_open_calls",
            format!("from 1 to `window` ({})", b.window),
        );
    }
    if b.open_for.get().is_zero() || b.open_for.get() > std::time::Duration::from_secs(86_400) {
        c.err(
            "policy.circuit_breaker.open_for",
            "more than 0s and at most 24h",
        );
    }
    if b.slow_call_duration.get().is_zero() {
        c.err(
            "policy.circuit_breaker.slow_call_duration",
            "must be more than 0s",
        );
    }
    if !(flow.policy.retry_budget > 0.0 && flow.policy.retry_budget <= 10.0) {
        c.err(
            "policy.retry_budget",
            "a ratio of retries to requests, more than 0 and at most 10 (e.g. 0.2)",
        );
    }
    if flow
        .policy
        .deadline
        .is_some_and(|d| d.get().is_some_and(|d| d.is_zero()))
    {
        c.err("policy.deadline", "must be more than 0s (or `none`)");
    }
    if flow
        .policy
        .store_outage_max
        .is_some_and(|d| d.get().is_zero())
    {
        c.err("policy.store_outage_max", "must be more than 0s");
    }
    if flow
        .policy
        .circuit_breaker
        .max_open
        .is_some_and(|d| d.get().is_some_and(|d| d.is_zero()))
    {
        c.err(
            "policy.circuit_breaker.max_open",
            "must be more than 0s (or `none`)",
        );
    }
    if let Some(rl) = flow.policy.rate_limit {
        check_rate_limit(&mut c, "policy.rate_limit", rl);
    }

    for (i, t) in flow.tests.iter().enumerate() {
        let n = [
            t.expect.is_some(),
            t.expect_error.is_some(),
            t.expect_filtered,
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if n != 1 {
            c.err(
                format!("tests[{i}]"),
                "give exactly one of `expect`, `expect_error` and `expect_filtered: true`",
            );
        }
    }
    c.problems
}

/// The rules of a rate limit (`policy.rate_limit`, `source.http.rate_limit`).
pub(crate) fn check_rate_limit(c: &mut Checker, at: &str, rl: RateLimitSpec) {
    if rl.per_second == 0 || rl.per_second > 1_000_000 {
        c.err(
            format!("{at}.per_second"),
            "from 1 to 1000000 requests per second",
        );
    }
    if rl.burst == Some(0) {
        c.err(format!("{at}.burst"), "at least 1");
    }
}

/// The rules of a retry setting (`policy.retry`, `source.http.retry`).
pub(crate) fn check_retry(c: &mut Checker, at: &str, r: &RetrySpec) {
    if r.attempts == 0 || r.attempts > 100 {
        c.err(
            format!("{at}.attempts"),
            "from 1 (no retry) to 100 attempts",
        );
    }
    if r.initial > r.max {
        c.err(
            format!("{at}.initial"),
            format!("longer than `max` ({})", r.max),
        );
    }
    if r.max_elapsed.get().is_zero() {
        c.err(format!("{at}.max_elapsed"), "must be more than 0s");
    }
}

/// The JSONPath query a `map.filter` expression is evaluated as: the record is wrapped in a
/// one-element array and kept when the filter selects it.
pub fn filter_query(expr: &str) -> String {
    format!("$[?{expr}]")
}
