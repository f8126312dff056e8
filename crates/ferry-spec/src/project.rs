//! The project file `ferry.yaml`: environments and the promotion topology between them.
//!
//! A flow file says *what* a flow does; the project file says *where* it runs. Each
//! environment (`dev`, `staging`, `prod-eu`, ...) holds the variables its flows' templates read
//! (`{{ env.SHOP_URL }}`) and the names of the secrets it provides. The promotion edges say
//! where a flow may go next, with the rules applied on the way:
//!
//! ```yaml
//! environments:
//!   dev:     { variables: { SHOP_URL: "http://127.0.0.1:8088" }, secrets: [SHOP_TOKEN] }
//!   staging: { variables: { SHOP_URL: "https://shop.staging.example" }, secrets: [SHOP_TOKEN] }
//!   prod-eu: { variables: { SHOP_URL: "https://shop.example" }, secrets: [SHOP_TOKEN] }
//!   prod-us: { variables: { SHOP_URL: "https://shop.example" }, secrets: [SHOP_TOKEN] }
//!   internal: { variables: { SHOP_URL: "https://shop.internal.example" } }
//! promotion:
//!   - from: dev
//!     to: staging
//!   - from: staging
//!     to: [prod-eu, prod-us]                  # fan-out: one edge per target
//!     rules:
//!       rewrite_host: { shop.staging.example: shop.example }
//!       set: { REGION: eu }
//!       approval: true
//!   - from: dev
//!     to: internal
//!     when: { labels: { internal: "true" } }  # only flows labelled so
//! groups:
//!   release-managers: [alice, bob]            # token names
//! ```
//!
//! Decisions:
//! - `to` is a name or a list of names; a list is the same edge fanned out (same rules, same
//!   condition). A pair of environments has at most **one** edge: two edges `staging → prod-us`
//!   with different rules would leave it to declaration order which one applies, so duplicates
//!   are refused by [`Project::validate`] and the operator writes one edge with all its rules.
//! - `rules` holds everything an edge does to a flow: `rewrite_host`, `set`, `approval`.
//!   `approval: true` asks for any token with the approver role, and never the requester (four
//!   eyes); `approval: { approvers: [alice, release-managers], four_eyes: true }` names who may
//!   approve: token names, or groups from `groups:`.
//! - **An environment that is the target of an edge is protected**: it takes new content only
//!   by promotion along its edges ([`Project::protected_by`]); deploys, clones and merges into it
//!   are refused by the engine, and only rollbacks to what ran there before are allowed.
//!   `deploy: direct` on the environment opts out.
//! - The topology must be acyclic: promotion moves a flow forward, and a cycle is reported with
//!   the environments on it.
//! - The file is read with the same located-error machinery as flow files
//!   ([`crate::load`]): every problem comes with file, line, column and field path.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::connector::Setting;
use crate::error::{SpecError, SpecErrors};
use crate::flow::Flow;
use crate::template::{Root, Template};
use crate::validate::Problem;

/// Largest project file accepted.
pub const MAX_PROJECT_FILE_BYTES: usize = 1 << 20;
/// Longest environment name.
pub const MAX_ENV_NAME_LEN: usize = 63;
/// Longest variable or secret name.
pub const MAX_VAR_NAME_LEN: usize = 128;

/// The project file `ferry.yaml`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// Environments by name: lower-case letters, digits, `-` and `_`, starting with a letter or
    /// digit, at most 63 characters (`dev`, `staging`, `prod-eu`).
    #[serde(default)]
    pub environments: BTreeMap<String, Environment>,
    /// Promotion edges: where a flow active in one environment may be promoted to, and what
    /// happens on the way. Without edges, flows are deployed to each environment directly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promotion: Vec<PromotionEdge>,
    /// Groups of approvers: a group name and the API token names (or CLI user names) in it
    /// (`release-managers: [alice, bob]`), for edges' `approval.approvers`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, Vec<String>>,
}

/// One environment.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// What the environment is, in a sentence.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Values of `{{ env.NAME }}` in flow templates (`SHOP_URL: "https://shop.example"`).
    /// Names are letters, digits and `_`, not starting with a digit. Numbers and booleans are
    /// taken as their text. Variables are shown in plain text: credentials go in `secrets`.
    #[serde(default, deserialize_with = "text_map")]
    pub variables: BTreeMap<String, String>,
    /// Names of the secrets this environment provides (`[SHOP_TOKEN]`); their values come from
    /// the secrets file or the process environment, never from this file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// How new content arrives here. Unset: by promotion only when the environment is the
    /// target of a promotion edge (it is *protected*), else by deploy. `direct`: deploys,
    /// clones and merges are accepted even though edges lead here. `promotion`: says that the
    /// environment is protected (an edge must lead here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeployMode>,
}

/// How an environment takes new content (its `deploy:` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeployMode {
    /// Deploys, clones and merges write here directly, edges or not.
    Direct,
    /// Only promotions along the edges that lead here bring new content.
    Promotion,
}

/// One promotion edge, as written: one source, one or more targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromotionEdge {
    /// The environment a flow is promoted from.
    pub from: String,
    /// The environment it goes to, or a list of them (fan-out: the same rules and condition
    /// for each).
    #[serde(deserialize_with = "one_or_many")]
    pub to: Vec<String>,
    /// What the promotion does on the way.
    #[serde(default)]
    pub rules: EdgeRules,
    /// Which flows may take this edge; without it, every flow may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Condition>,
}

/// What a promotion along an edge does.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeRules {
    /// Host replacements in the flow's literal URLs (`source.http.url`,
    /// `destination.http.url`, OAuth2 `token_url`) and in the target environment's URL
    /// variables: `{ shop.staging.example: shop.example }`. A key with a port
    /// (`127.0.0.1:8088`) matches that host and port and is replaced whole; a key without one
    /// matches the host on any port and keeps the port. Hosts compare case-insensitively.
    #[serde(default)]
    pub rewrite_host: BTreeMap<String, String>,
    /// Variables set for the promoted flow in the target environment, overriding the
    /// environment's own (`{ REGION: eu }`).
    #[serde(default, deserialize_with = "text_map")]
    pub set: BTreeMap<String, String>,
    /// Whether the promotion waits in `pending` until someone approves it, and who may:
    /// `true` (any token with the approver role, never the one who requested it), `false`
    /// (the default: live at once), or `{ approvers: [alice, release-managers], four_eyes:
    /// true }` (only these token names or groups; `four_eyes: false` lets the requester
    /// approve).
    #[serde(default, skip_serializing_if = "Approval::is_off")]
    pub approval: Approval,
}

/// Who must approve a promotion along an edge (see [`EdgeRules::approval`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// The promotion waits in `pending` until approved.
    pub required: bool,
    /// Who may approve: token names, CLI user names, or names of `groups:`. Empty: anyone
    /// with the approver role.
    pub approvers: Vec<String>,
    /// The one who requested the promotion cannot approve it.
    pub four_eyes: bool,
}

impl Default for Approval {
    fn default() -> Self {
        Approval {
            required: false,
            approvers: Vec::new(),
            four_eyes: true,
        }
    }
}

impl Approval {
    /// `approval: true`: any approver, four eyes.
    pub fn required() -> Approval {
        Approval {
            required: true,
            ..Approval::default()
        }
    }

    /// True when no approval is asked for.
    pub fn is_off(&self) -> bool {
        !self.required
    }
}

/// `approval: { approvers, four_eyes }` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalRule {
    /// Token names, CLI user names or group names.
    #[serde(default)]
    approvers: Vec<String>,
    /// Default true.
    #[serde(default = "yes")]
    four_eyes: bool,
}

fn yes() -> bool {
    true
}

impl<'de> Deserialize<'de> for Approval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Approval;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false, or `{ approvers: [NAME, ...], four_eyes: true|false }`")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Approval, E> {
                Ok(if v {
                    Approval::required()
                } else {
                    Approval::default()
                })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Approval, A::Error> {
                let rule = ApprovalRule::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Approval {
                    required: true,
                    approvers: rule.approvers,
                    four_eyes: rule.four_eyes,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Approval {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        if !self.required {
            return s.serialize_bool(false);
        }
        if self.approvers.is_empty() && self.four_eyes {
            return s.serialize_bool(true);
        }
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("approvers", &self.approvers)?;
        m.serialize_entry("four_eyes", &self.four_eyes)?;
        m.end()
    }
}

/// A condition on the flow being promoted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Labels the flow must carry, each with exactly this value (`{ internal: "true" }`); all
    /// must match.
    #[serde(default, deserialize_with = "text_map")]
    pub labels: BTreeMap<String, String>,
}

/// One edge with a single target: what [`PromotionEdge`] fans out into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    /// Source environment.
    pub from: String,
    /// Target environment.
    pub to: String,
    /// The edge's rules.
    pub rules: EdgeRules,
    /// Position of the edge in the file's `promotion` list, 0-based.
    pub index: usize,
}

/// A label condition a flow does not meet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnmetLabel {
    /// The label's name.
    pub label: String,
    /// The value the edge asks for.
    pub expected: String,
    /// The flow's value; `None` when the flow does not have the label.
    pub actual: Option<String>,
}

/// Why an edge does not take a flow: the labels it lacks or has with other values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// Source environment.
    pub from: String,
    /// Target environment.
    pub to: String,
    /// Every condition not met (never empty).
    pub unmet: Vec<UnmetLabel>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the edge {} → {} only takes flows ", self.from, self.to)?;
        for (i, u) in self.unmet.iter().enumerate() {
            if i > 0 {
                f.write_str("; and ")?;
            }
            write!(f, "labelled `{}: {:?}`", u.label, u.expected)?;
            match &u.actual {
                None => write!(f, ", and the flow has no label `{}`", u.label)?,
                Some(a) => write!(f, ", and the flow's label `{}` is {a:?}", u.label)?,
            }
        }
        f.write_str(": set the label in the flow file (`labels:`) and deploy it first")
    }
}

/// Variables and secrets a flow uses that an environment does not provide.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Unresolved {
    /// `{{ env.NAME }}` names with no value.
    pub variables: Vec<String>,
    /// Secret names the environment does not list.
    pub secrets: Vec<String>,
}

impl Unresolved {
    /// True when everything resolves.
    pub fn is_empty(&self) -> bool {
        self.variables.is_empty() && self.secrets.is_empty()
    }
}

/// Why a promotion cannot go ahead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromotionError {
    /// The project does not define the environment.
    #[error("unknown environment `{name}`: ferry.yaml defines {known}")]
    UnknownEnvironment {
        /// The name asked for.
        name: String,
        /// The defined names, for the message.
        known: String,
    },
    /// No edge leads from one environment to the other.
    #[error(
        "ferry.yaml has no promotion edge from `{from}` to `{to}`; from `{from}` a flow can go to {allowed}"
    )]
    NoEdge {
        /// Source environment.
        from: String,
        /// Target environment.
        to: String,
        /// Targets of the edges from `from`, for the message.
        allowed: String,
    },
    /// The edge exists but its condition refuses the flow.
    #[error("{0}")]
    Refused(Refusal),
    /// The flow uses variables or secrets the target environment does not provide.
    #[error(
        "environment `{env}` does not provide {}: define them in ferry.yaml (`variables:`, `secrets:`) or set them on the edge (`rules.set`)",
        describe_unresolved(.unresolved)
    )]
    Unresolved {
        /// The target environment.
        env: String,
        /// What is missing.
        unresolved: Unresolved,
    },
}

fn describe_unresolved(u: &Unresolved) -> String {
    let mut parts = Vec::new();
    if !u.variables.is_empty() {
        parts.push(format!("variables {}", u.variables.join(", ")));
    }
    if !u.secrets.is_empty() {
        parts.push(format!("secrets {}", u.secrets.join(", ")));
    }
    parts.join(" and ")
}

fn list_or(names: impl IntoIterator<Item = impl AsRef<str>>, none: &str) -> String {
    let names: Vec<String> = names
        .into_iter()
        .map(|n| format!("`{}`", n.as_ref()))
        .collect();
    if names.is_empty() {
        none.to_string()
    } else {
        names.join(", ")
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

/// Reads and checks a project file.
pub fn load_project_file(path: &Path) -> Result<Project, SpecErrors> {
    let text = crate::load::read_text_file(path, MAX_PROJECT_FILE_BYTES, "a project file is")?;
    load_project_str(&text, Some(path.to_path_buf()))
}

/// Reads and checks a project from YAML text; `file` is used in error messages.
pub fn load_project_str(text: &str, file: Option<PathBuf>) -> Result<Project, SpecErrors> {
    let doc = crate::yaml::parse(text, &file, MAX_PROJECT_FILE_BYTES, "project files")?;
    if doc.root.is_null() {
        return Err(SpecErrors::single(
            file,
            ".",
            "the project file is empty: declare `environments:` (and `promotion:` edges between them)",
        ));
    }
    let read = crate::yaml::read::<Project>(&doc, &file);
    // Names, edges and cycles are checked on the project as far as it could be read, so every
    // problem of the file is listed at once.
    let checked: Vec<SpecError> = read
        .value
        .as_ref()
        .map(Project::validate)
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
    let (project, mut problems) = (read.value, read.problems);
    problems.extend(checked);
    match project {
        Some(project) if problems.is_empty() => Ok(project),
        _ => Err(SpecErrors(problems)),
    }
}

/// Deserializes a map whose values are scalars, each taken as text.
fn text_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let m: BTreeMap<String, crate::yaml::Text> = BTreeMap::deserialize(d)?;
    Ok(m.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// Deserializes `to: staging` or `to: [prod-eu, prod-us]`.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an environment name or a list of names (`to: [prod-eu, prod-us]`)")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(name) = seq.next_element::<String>()? {
                out.push(name);
            }
            Ok(out)
        }
    }
    crate::yaml::as_written(d, V)
}

// ---------------------------------------------------------------------------------------------
// Checking

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ENV_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn valid_var_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_VAR_NAME_LEN
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Same rule as secret references in flow files.
fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_VAR_NAME_LEN
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// Longest name of an API token, a CLI user named in `approvers`, or a group.
pub const MAX_IDENTITY_NAME_LEN: usize = 64;

/// Whether `name` is usable as an API token name, an approver or a group name: lower-case
/// letters, digits, `-`, `_` and `.`, starting with a letter or digit, at most
/// [`MAX_IDENTITY_NAME_LEN`] characters. No `:`, so `api:<name>` in the audit log is never
/// ambiguous.
pub fn valid_identity_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IDENTITY_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.'
        })
}

/// Variable names that look like credentials, which belong in `secrets`.
fn looks_like_credential(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["TOKEN", "SECRET", "PASSWORD", "PASSWD", "API_KEY", "APIKEY"]
        .iter()
        .any(|w| n == *w || n.ends_with(&format!("_{w}")))
}

/// A host (`shop.example`, `127.0.0.1`, `[::1]`), optionally with `:port`.
fn valid_host(text: &str) -> bool {
    let (host, port) = split_host_port(text);
    let port_ok = port.is_empty()
        || (port.len() > 1 && port.len() <= 6 && port[1..].bytes().all(|b| b.is_ascii_digit()));
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner.strip_suffix(']').is_some_and(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        })
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    };
    host_ok && port_ok
}

/// Splits `host:port` into `host` and `:port` (empty when there is no port); IPv6 hosts are in
/// brackets.
fn split_host_port(text: &str) -> (&str, &str) {
    if text.starts_with('[') {
        match text.find(']') {
            Some(i) => text.split_at(i + 1),
            None => (text, ""),
        }
    } else {
        match text.rfind(':') {
            Some(i) => text.split_at(i),
            None => (text, ""),
        }
    }
}

impl Project {
    /// Checks what types cannot: names, references between environments and edges, duplicate
    /// edges and cycles. Every problem is reported, each with its field path; an empty list
    /// means the project is valid.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut err = |path: String, message: String| problems.push(Problem { path, message });

        if self.environments.is_empty() {
            err(
                "environments".into(),
                "declare at least one environment (`environments: { dev: {} }`)".into(),
            );
        }
        for (name, env) in &self.environments {
            let at = format!("environments.{name}");
            if name.is_empty() {
                err(at.clone(), "empty environment name".into());
            } else if !valid_env_name(name) {
                err(
                    at.clone(),
                    format!(
                        "`{name}` is not an environment name: lower-case letters, digits, `-` and `_`, starting with a letter or digit, at most {MAX_ENV_NAME_LEN} characters"
                    ),
                );
            }
            for (var, value) in &env.variables {
                let here = format!("{at}.variables.{var}");
                check_variable(&mut err, &here, var);
                check_url_value(&mut err, &here, value);
            }
            let mut seen = BTreeSet::new();
            for (i, s) in env.secrets.iter().enumerate() {
                let here = format!("{at}.secrets[{i}]");
                if !valid_secret_name(s) {
                    err(
                        here,
                        format!(
                            "`{s}` is not a secret name: letters, digits, `_`, `-` and `.`, not starting with a digit"
                        ),
                    );
                } else if !seen.insert(s.as_str()) {
                    err(here, format!("`{s}` is listed twice"));
                }
            }
        }

        let known = list_or(self.environments.keys(), "no environments");
        let mut pairs: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (i, edge) in self.promotion.iter().enumerate() {
            let at = format!("promotion[{i}]");
            let from_ok = self.check_env_ref(&mut err, &format!("{at}.from"), &edge.from, &known);
            if edge.to.is_empty() {
                err(
                    format!("{at}.to"),
                    "give at least one target environment".into(),
                );
            }
            let mut targets = BTreeSet::new();
            for (j, to) in edge.to.iter().enumerate() {
                let here = if edge.to.len() == 1 {
                    format!("{at}.to")
                } else {
                    format!("{at}.to[{j}]")
                };
                let to_ok = self.check_env_ref(&mut err, &here, to, &known);
                if !targets.insert(to.as_str()) {
                    err(here, format!("`{to}` is listed twice"));
                    continue;
                }
                if from_ok && to_ok && *to == edge.from {
                    err(
                        here,
                        format!(
                            "an edge from `{to}` to itself: promotion moves a flow to another environment"
                        ),
                    );
                    continue;
                }
                if let Some(first) = pairs.get(&(edge.from.as_str(), to.as_str())) {
                    err(
                        here,
                        format!(
                            "a second edge {} → {to} (the first is promotion[{first}]): give each pair of environments one edge, with all its rules and its condition",
                            edge.from
                        ),
                    );
                } else {
                    pairs.insert((edge.from.as_str(), to.as_str()), i);
                }
            }
            for (from, to) in &edge.rules.rewrite_host {
                let here = format!("{at}.rules.rewrite_host.{from}");
                for h in [from, to] {
                    if !valid_host(h) {
                        err(
                            here.clone(),
                            format!(
                                "`{h}` is not a host: write the host alone (`shop.example`) or with its port (`127.0.0.1:8088`), without scheme, path or placeholders"
                            ),
                        );
                    }
                }
            }
            for (var, value) in &edge.rules.set {
                let here = format!("{at}.rules.set.{var}");
                check_variable(&mut err, &here, var);
                check_url_value(&mut err, &here, value);
            }
            if let Some(cond) = &edge.when {
                for label in cond.labels.keys() {
                    if label.trim().is_empty() {
                        err(
                            format!("{at}.when.labels.{label}"),
                            "empty label name".into(),
                        );
                    }
                }
            }
        }

        for (i, edge) in self.promotion.iter().enumerate() {
            let a = &edge.rules.approval;
            if !a.required {
                continue;
            }
            let at = format!("promotion[{i}].rules.approval");
            if !a.four_eyes && a.approvers.is_empty() {
                err(
                    format!("{at}.four_eyes"),
                    "`four_eyes: false` lets the requester approve alone; name the approvers who may (`approvers: [alice]`), or keep four eyes".into(),
                );
            }
            let mut seen = BTreeSet::new();
            for (j, name) in a.approvers.iter().enumerate() {
                let here = format!("{at}.approvers[{j}]");
                if !valid_identity_name(name) {
                    err(
                        here,
                        format!(
                            "`{name}` is not a token or group name: lower-case letters, digits, `-`, `_` and `.`, at most {MAX_IDENTITY_NAME_LEN} characters"
                        ),
                    );
                } else if !seen.insert(name.as_str()) {
                    err(here, format!("`{name}` is listed twice"));
                }
            }
        }
        let targets: BTreeSet<&str> = self
            .promotion
            .iter()
            .flat_map(|e| e.to.iter().map(String::as_str))
            .collect();
        for (name, env) in &self.environments {
            if env.deploy == Some(DeployMode::Promotion) && !targets.contains(name.as_str()) {
                err(
                    format!("environments.{name}.deploy"),
                    format!(
                        "`deploy: promotion`, but no promotion edge leads to `{name}`, so nothing could ever arrive there: add an edge `to: {name}`, or remove the setting"
                    ),
                );
            }
        }
        for (group, members) in &self.groups {
            let at = format!("groups.{group}");
            if !valid_identity_name(group) {
                err(
                    at.clone(),
                    format!(
                        "`{group}` is not a group name: lower-case letters, digits, `-`, `_` and `.`, at most {MAX_IDENTITY_NAME_LEN} characters"
                    ),
                );
            }
            if members.is_empty() {
                err(
                    at.clone(),
                    "an empty group approves nothing: list its members' token names".into(),
                );
            }
            for (j, m) in members.iter().enumerate() {
                if !valid_identity_name(m) {
                    err(
                        format!("{at}[{j}]"),
                        format!(
                            "`{m}` is not a token name: lower-case letters, digits, `-`, `_` and `.`"
                        ),
                    );
                } else if self.groups.contains_key(m) {
                    err(
                        format!("{at}[{j}]"),
                        format!("`{m}` is a group: groups hold token names, not other groups"),
                    );
                }
            }
        }

        for (path, cycle) in self.cycles(&pairs) {
            err(
                path,
                format!(
                    "promotion edges form a cycle: {}; promotion moves flows one way, remove one of these edges",
                    cycle.join(" → ")
                ),
            );
        }
        problems
    }

    /// Reports an edge end that names no environment; true when it is fine.
    fn check_env_ref(
        &self,
        err: &mut impl FnMut(String, String),
        at: &str,
        name: &str,
        known: &str,
    ) -> bool {
        if name.is_empty() {
            err(at.to_string(), "empty environment name".into());
            false
        } else if !self.environments.contains_key(name) {
            err(
                at.to_string(),
                format!(
                    "unknown environment `{name}`: declare it under `environments:` (defined: {known})"
                ),
            );
            false
        } else {
            true
        }
    }

    /// Cycles among the distinct edges `pairs` (self-loops excluded), each as the path of the
    /// edge that closes it and the environments along it (first repeated at the end).
    /// Iterative depth-first search, so a long hostile chain cannot exhaust the stack.
    fn cycles(&self, pairs: &BTreeMap<(&str, &str), usize>) -> Vec<(String, Vec<String>)> {
        let mut next: BTreeMap<&str, Vec<(&str, usize)>> = BTreeMap::new();
        for (&(from, to), &i) in pairs {
            if from != to
                && self.environments.contains_key(from)
                && self.environments.contains_key(to)
            {
                next.entry(from).or_default().push((to, i));
            }
        }
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnStack,
            Done,
        }
        let mut mark: BTreeMap<&str, Mark> = self
            .environments
            .keys()
            .map(|k| (k.as_str(), Mark::New))
            .collect();
        let mut found = Vec::new();
        for start in self.environments.keys() {
            if mark.get(start.as_str()) != Some(&Mark::New) {
                continue;
            }
            // (node, position of the next successor to look at)
            let mut stack: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
            mark.insert(start.as_str(), Mark::OnStack);
            while let Some(top) = stack.last_mut() {
                let (node, pos) = *top;
                let succ = next.get(node).and_then(|v| v.get(pos)).copied();
                top.1 += 1;
                match succ {
                    None => {
                        mark.insert(node, Mark::Done);
                        stack.pop();
                    }
                    Some((to, edge)) => match mark.get(to).copied() {
                        Some(Mark::New) => {
                            mark.insert(to, Mark::OnStack);
                            stack.push((to, 0));
                        }
                        Some(Mark::OnStack) => {
                            let from_pos = stack.iter().position(|(n, _)| *n == to).unwrap_or(0);
                            let mut cycle: Vec<String> = stack[from_pos..]
                                .iter()
                                .map(|(n, _)| n.to_string())
                                .collect();
                            cycle.push(to.to_string());
                            found.push((format!("promotion[{edge}]"), cycle));
                        }
                        _ => {}
                    },
                }
            }
        }
        found
    }

    /// The environment called `name`.
    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.get(name)
    }

    /// Every edge (fan-out expanded, whatever its condition) that leads to `env`, in file
    /// order.
    pub fn edges_to(&self, env: &str) -> Vec<Edge> {
        self.promotion
            .iter()
            .enumerate()
            .filter(|(_, e)| e.to.iter().any(|t| t == env))
            .map(|(i, e)| edge_for(e, i, env))
            .collect()
    }

    /// The edges `env` takes new content through: every edge that leads to it, unless the
    /// environment says `deploy: direct`. Empty: deploys write there directly. Non-empty: the
    /// environment is *protected* — new content arrives only by promotion along these edges.
    pub fn protected_by(&self, env: &str) -> Vec<Edge> {
        match self.environment(env).and_then(|e| e.deploy) {
            Some(DeployMode::Direct) => Vec::new(),
            _ => self.edges_to(env),
        }
    }

    /// The edge from `from` to `to`, whatever its condition (an approval is decided by the
    /// edge's rules as the file says them now).
    pub fn edge_between(&self, from: &str, to: &str) -> Option<Edge> {
        self.expanded(from)
            .find(|(e, _)| e.to.iter().any(|t| t == to))
            .map(|(e, i)| edge_for(e, i, to))
    }

    /// Whether `name` (a token name or a CLI user) is one of `approval.approvers`, directly or
    /// as a member of a group; true for anyone when the list is empty.
    pub fn may_approve(&self, approval: &Approval, name: &str) -> bool {
        approval.approvers.is_empty()
            || approval.approvers.iter().any(|a| {
                a == name
                    || self
                        .groups
                        .get(a)
                        .is_some_and(|members| members.iter().any(|m| m == name))
            })
    }

    /// Edges from `env` whose condition a flow with `labels` meets, one per target (fan-out
    /// expanded), in file order.
    pub fn edges_from(&self, env: &str, labels: &BTreeMap<String, String>) -> Vec<Edge> {
        self.expanded(env)
            .filter(|(e, _)| unmet(e.when.as_ref(), labels).is_empty())
            .flat_map(|(e, i)| e.to.iter().map(move |to| edge_for(e, i, to)))
            .collect()
    }

    /// Edges from `env` whose condition a flow with `labels` does not meet, one per target,
    /// each with the labels that are missing or different, so the caller can refuse "with a
    /// message naming the missing label".
    pub fn refused_edges(
        &self,
        env: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<(String, Refusal)> {
        let mut out = Vec::new();
        for (e, _) in self.expanded(env) {
            let missing = unmet(e.when.as_ref(), labels);
            if missing.is_empty() {
                continue;
            }
            for to in &e.to {
                out.push((
                    to.clone(),
                    Refusal {
                        from: e.from.clone(),
                        to: to.clone(),
                        unmet: missing.clone(),
                    },
                ));
            }
        }
        out
    }

    /// The edge a promotion from `from` to `to` of a flow with `labels` takes, or why there is
    /// none: an unknown environment, no such edge (naming where the flow can go), or a
    /// condition the flow does not meet (naming the label).
    pub fn edge(
        &self,
        from: &str,
        to: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Edge, PromotionError> {
        for name in [from, to] {
            if !self.environments.contains_key(name) {
                return Err(PromotionError::UnknownEnvironment {
                    name: name.to_string(),
                    known: list_or(self.environments.keys(), "no environments"),
                });
            }
        }
        let mut refusal = None;
        for (e, i) in self.expanded(from) {
            if !e.to.iter().any(|t| t == to) {
                continue;
            }
            let missing = unmet(e.when.as_ref(), labels);
            if missing.is_empty() {
                return Ok(edge_for(e, i, to));
            }
            refusal.get_or_insert(Refusal {
                from: from.to_string(),
                to: to.to_string(),
                unmet: missing,
            });
        }
        match refusal {
            Some(r) => Err(PromotionError::Refused(r)),
            None => {
                let targets: BTreeSet<&str> = self
                    .expanded(from)
                    .flat_map(|(e, _)| e.to.iter().map(String::as_str))
                    .collect();
                Err(PromotionError::NoEdge {
                    from: from.to_string(),
                    to: to.to_string(),
                    allowed: list_or(targets, "nowhere (it has no outgoing edges)"),
                })
            }
        }
    }

    /// Checks that every variable and secret `flow` uses resolves in environment `env`, with
    /// the edge's `rules` applied (its `set` variables count).
    pub fn check_references(
        &self,
        env: &str,
        flow: &Flow,
        rules: &EdgeRules,
    ) -> Result<(), PromotionError> {
        let e = self
            .environments
            .get(env)
            .ok_or_else(|| PromotionError::UnknownEnvironment {
                name: env.to_string(),
                known: list_or(self.environments.keys(), "no environments"),
            })?;
        let unresolved = e.unresolved(flow, rules);
        if unresolved.is_empty() {
            Ok(())
        } else {
            Err(PromotionError::Unresolved {
                env: env.to_string(),
                unresolved,
            })
        }
    }

    fn expanded<'a>(&'a self, env: &'a str) -> impl Iterator<Item = (&'a PromotionEdge, usize)> {
        self.promotion
            .iter()
            .enumerate()
            .filter(move |(_, e)| e.from == env)
            .map(|(i, e)| (e, i))
    }
}

fn check_variable(err: &mut impl FnMut(String, String), at: &str, var: &str) {
    if !valid_var_name(var) {
        err(
            at.to_string(),
            format!(
                "`{var}` is not a variable name: letters, digits and `_`, not starting with a digit, at most {MAX_VAR_NAME_LEN} characters"
            ),
        );
    } else if looks_like_credential(var) {
        err(
            at.to_string(),
            format!(
                "`{var}` looks like a credential, and variables are stored and shown in plain text: list it under the environment's `secrets:` and reference it as `{{ secret: {var} }}`"
            ),
        );
    }
}

/// A variable holding a URL with credentials in it (`https://user:pw@host`, `?api_key=...`):
/// variables are shown in plain text, so the same rule as URLs in flow files applies.
fn check_url_value(err: &mut impl FnMut(String, String), at: &str, value: &str) {
    if !value.contains("://") {
        return;
    }
    for message in crate::validate::url_credentials(value) {
        err(
            at.to_string(),
            format!(
                "{message}; variables are shown in plain text, so list the credential under the environment's `secrets:`"
            ),
        );
    }
}

fn edge_for(e: &PromotionEdge, index: usize, to: &str) -> Edge {
    Edge {
        from: e.from.clone(),
        to: to.to_string(),
        rules: e.rules.clone(),
        index,
    }
}

/// The label conditions `labels` does not meet, in label order.
fn unmet(when: Option<&Condition>, labels: &BTreeMap<String, String>) -> Vec<UnmetLabel> {
    let Some(cond) = when else {
        return Vec::new();
    };
    cond.labels
        .iter()
        .filter(|(k, v)| labels.get(*k) != Some(*v))
        .map(|(k, v)| UnmetLabel {
            label: k.clone(),
            expected: v.clone(),
            actual: labels.get(k).cloned(),
        })
        .collect()
}

impl Environment {
    /// The variables a flow promoted along an edge sees here: this environment's variables,
    /// with `rules.rewrite_host` applied to those holding http(s) URLs, then `rules.set` on
    /// top (set values are taken as written).
    pub fn variables_with(&self, rules: &EdgeRules) -> BTreeMap<String, String> {
        let mut vars: BTreeMap<String, String> = self
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), rewrite_url(v, &rules.rewrite_host).into_owned()))
            .collect();
        for (k, v) in &rules.set {
            vars.insert(k.clone(), v.clone());
        }
        vars
    }

    /// The variables and secrets `flow` uses that this environment does not provide, with an
    /// edge's `rules` applied.
    pub fn unresolved(&self, flow: &Flow, rules: &EdgeRules) -> Unresolved {
        let (vars, secrets) = references(flow);
        let have = self.variables_with(rules);
        Unresolved {
            variables: vars.into_iter().filter(|v| !have.contains_key(v)).collect(),
            secrets: secrets
                .into_iter()
                .filter(|s| !self.secrets.contains(s))
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rules and references

/// A copy of `flow` with the edge's host rewrites applied to its literal URLs:
/// `source.http.url`, `destination.http.url` and the OAuth2 `token_url` of either side.
///
/// Only the authority part of a URL that starts with a literal `http://` or `https://` is
/// touched, and only when the authority has no placeholder in it: `{{ env.SHOP_URL }}/api`
/// takes its host from a variable, which the edge's `set` can override and which
/// [`Environment::variables_with`] rewrites. Paths and queries are never changed.
pub fn apply_rules(flow: &Flow, rules: &EdgeRules) -> Flow {
    let mut out = flow.clone();
    if rules.rewrite_host.is_empty() {
        return out;
    }
    let hosts = &rules.rewrite_host;
    let rewrite = |s: &mut String| {
        if let Cow::Owned(new) = rewrite_url(s, hosts) {
            *s = new;
        }
    };
    for url in out.source.urls_mut() {
        rewrite(url);
    }
    for url in out.destination.urls_mut() {
        rewrite(url);
    }
    out
}

/// `url` with its host replaced per `hosts` (see [`EdgeRules::rewrite_host`]), or unchanged
/// (borrowed) when it is not a literal http(s) URL, its authority holds a placeholder, or no
/// host matches.
pub fn rewrite_url<'a>(url: &'a str, hosts: &BTreeMap<String, String>) -> Cow<'a, str> {
    if hosts.is_empty() {
        return Cow::Borrowed(url);
    }
    let scheme_len = if starts_with_ignore_case(url, "http://") {
        7
    } else if starts_with_ignore_case(url, "https://") {
        8
    } else {
        return Cow::Borrowed(url);
    };
    let rest = &url[scheme_len..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains('{') || authority.contains('}') {
        return Cow::Borrowed(url);
    }
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => authority.split_at(i + 1),
        None => ("", authority),
    };
    let (host, port) = split_host_port(hostport);
    let find = |h: &str| {
        hosts
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(h))
            .map(|(_, v)| v.as_str())
    };
    let new_hostport = match find(hostport) {
        Some(whole) => whole.to_string(),
        None => match find(host) {
            Some(h) => format!("{h}{port}"),
            None => return Cow::Borrowed(url),
        },
    };
    Cow::Owned(format!(
        "{}{userinfo}{new_hostport}{}",
        &url[..scheme_len],
        &rest[end..]
    ))
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The environment variables (`{{ env.NAME }}`) and secret names a flow uses, so a promotion
/// can check they all resolve in the target environment. Templates that do not parse are
/// skipped: a validated flow has none.
pub fn references(flow: &Flow) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut vars = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    for s in flow
        .source
        .settings()
        .into_iter()
        .chain(flow.destination.settings())
    {
        match s {
            Setting::Template(text) => {
                if let Ok(t) = Template::parse(text) {
                    for v in t.vars().filter(|v| v.root == Root::Env) {
                        vars.insert(v.path.join("."));
                    }
                }
            }
            Setting::Secret(r) => {
                secrets.insert(r.secret.clone());
            }
        }
    }
    (vars, secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn project(text: &str) -> Result<Project, SpecErrors> {
        load_project_str(text, Some("ferry.yaml".into()))
    }

    #[test]
    fn rewrite_url_touches_only_literal_authorities() {
        let h = hosts(&[
            ("shop.staging.example", "shop.example"),
            ("127.0.0.1:8088", "wms.example"),
        ]);
        let cases = [
            (
                "https://shop.staging.example/api/shop.staging.example?h=shop.staging.example",
                "https://shop.example/api/shop.staging.example?h=shop.staging.example",
            ),
            (
                "http://SHOP.staging.example:8443/x",
                "http://shop.example:8443/x",
            ),
            (
                "http://user:pw@shop.staging.example",
                "http://user:pw@shop.example",
            ),
            ("http://127.0.0.1:8088/in", "http://wms.example/in"),
            // same host on another port: the port-qualified key does not match
            ("http://127.0.0.1:9999/in", "http://127.0.0.1:9999/in"),
            ("{{ env.SHOP_URL }}/api", "{{ env.SHOP_URL }}/api"),
            (
                "http://{{ env.HOST }}/shop.staging.example",
                "http://{{ env.HOST }}/shop.staging.example",
            ),
            (
                "https://shop.staging.example{{ env.PORT }}/x",
                "https://shop.staging.example{{ env.PORT }}/x",
            ),
            ("ftp://shop.staging.example/", "ftp://shop.staging.example/"),
            ("https://other.example/", "https://other.example/"),
            ("", ""),
            ("http://", "http://"),
            ("httpé", "httpé"),
        ];
        for (input, want) in cases {
            assert_eq!(rewrite_url(input, &h), want, "{input}");
        }
        assert!(matches!(
            rewrite_url("https://other.example/", &h),
            Cow::Borrowed(_)
        ));
        let v6 = hosts(&[("[::1]", "[::2]")]);
        assert_eq!(rewrite_url("http://[::1]:80/a", &v6), "http://[::2]:80/a");
    }

    #[test]
    fn hosts_are_checked() {
        for ok in [
            "shop.example",
            "127.0.0.1:8088",
            "[::1]",
            "[::1]:443",
            "a_b-c",
        ] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "",
            "https://shop.example",
            "shop.example/x",
            "a b",
            "{{ env.X }}",
            "h:",
            "h:port",
            "[::1",
            "u@h",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_env_name("prod-eu"));
        assert!(!valid_env_name("Prod"));
        assert!(!valid_env_name("-x"));
        assert!(!valid_env_name(&"a".repeat(64)));
        assert!(valid_var_name("SHOP_URL"));
        assert!(!valid_var_name("1X"));
        assert!(!valid_var_name("A-B"));
        assert!(looks_like_credential("SHOP_TOKEN"));
        assert!(looks_like_credential("api_key"));
        assert!(!looks_like_credential("TOKEN_URL"));
    }

    #[test]
    fn scalar_variables_are_text_and_to_takes_one_or_many() {
        let p = project(
            "environments:\n  a: { variables: { PORT: 8080, DEBUG: true, RATIO: 0.5, VERSION: 1.10, VERBOSE: no, ZIP: 01234 } }\n  b: {}\n  c: {}\npromotion:\n  - { from: a, to: b }\n  - { from: b, to: [c] }\n",
        )
        .unwrap();
        let vars = &p.environments["a"].variables;
        assert_eq!(vars["PORT"], "8080");
        assert_eq!(vars["DEBUG"], "true");
        assert_eq!(vars["RATIO"], "0.5");
        // the text as written (YAML 1.2 core schema; no YAML 1.1 booleans or lost zeros)
        assert_eq!(vars["VERSION"], "1.10");
        assert_eq!(vars["VERBOSE"], "no");
        assert_eq!(vars["ZIP"], "01234");
        assert_eq!(p.promotion[0].to, vec!["b"]);
        assert_eq!(p.promotion[1].to, vec!["c"]);
        let e = project("environments:\n  a: { variables: { X: [1] } }\n").unwrap_err();
        assert_eq!(e.0[0].path, "environments.a.variables.X", "{e}");
        let e = project("environments:\n  a: {}\npromotion:\n  - { from: a, to: { b: 1 } }\n")
            .unwrap_err();
        assert!(e.to_string().contains("environment name or a list"), "{e}");
    }

    #[test]
    fn variables_holding_urls_with_credentials_are_refused() {
        let e = project(
            "environments:\n  dev:\n    variables:\n      SHOP_URL: \"https://ops:hunter2pass@shop.example\"\n      WMS_URL: \"https://wms.example/in?api_key=hunter2pass\"\n      PLAIN: \"user@example.com\"\n  prod: {}\npromotion:\n  - { from: dev, to: prod, rules: { set: { HOOK: \"https://x:y@hook.example\" } } }\n",
        )
        .unwrap_err();
        let paths: Vec<&str> = e.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "environments.dev.variables.SHOP_URL",
                "environments.dev.variables.WMS_URL",
                "promotion[0].rules.set.HOOK"
            ],
            "{e}"
        );
        assert!(!e.to_string().contains("hunter2pass"), "{e}");
        assert!(e.0.iter().all(|p| p.message.contains("secrets:")), "{e}");
    }

    #[test]
    fn cycles_are_found_without_recursion() {
        // A long chain closed into one big cycle.
        let n = 3000;
        let mut text = String::from("environments:\n");
        for i in 0..n {
            text.push_str(&format!("  e{i}: {{}}\n"));
        }
        text.push_str("promotion:\n");
        for i in 0..n {
            text.push_str(&format!("  - {{ from: e{i}, to: e{} }}\n", (i + 1) % n));
        }
        let e = project(&text).unwrap_err();
        let cycles: Vec<_> = e.0.iter().filter(|p| p.message.contains("cycle")).collect();
        assert_eq!(cycles.len(), 1, "{e}");
        assert!(cycles[0].location.is_some());
    }

    #[test]
    fn refusals_name_the_label() {
        let r = Refusal {
            from: "dev".into(),
            to: "internal".into(),
            unmet: vec![
                UnmetLabel {
                    label: "internal".into(),
                    expected: "true".into(),
                    actual: None,
                },
                UnmetLabel {
                    label: "team".into(),
                    expected: "ops".into(),
                    actual: Some("billing".into()),
                },
            ],
        };
        let s = r.to_string();
        assert!(s.contains("no label `internal`"), "{s}");
        assert!(s.contains("label `team` is \"billing\""), "{s}");
    }

    #[test]
    fn approval_is_a_flag_or_a_rule_with_approvers() {
        let p = project(
            "environments:\n  a: {}\n  b: {}\n  c: {}\n  d: {}\ngroups:\n  release-managers: [alice, bob]\npromotion:\n  - { from: a, to: b, rules: { approval: true } }\n  - { from: b, to: c, rules: { approval: { approvers: [carol, release-managers] } } }\n  - { from: c, to: d, rules: { approval: { approvers: [dave], four_eyes: false } } }\n",
        )
        .unwrap();
        let ab = &p.promotion[0].rules.approval;
        assert_eq!(ab, &Approval::required());
        assert!(ab.four_eyes && ab.approvers.is_empty());
        let bc = &p.promotion[1].rules.approval;
        assert!(bc.required && bc.four_eyes);
        assert_eq!(bc.approvers, ["carol", "release-managers"]);
        let cd = &p.promotion[2].rules.approval;
        assert!(cd.required && !cd.four_eyes);
        // Who may approve: the names, and the members of named groups.
        assert!(p.may_approve(bc, "carol"));
        assert!(p.may_approve(bc, "bob"));
        assert!(!p.may_approve(bc, "dave"));
        assert!(p.may_approve(ab, "anyone"));
        // Written back as it was read: `true`, or the rule.
        let v = serde_json::to_value(&p.promotion[0].rules).unwrap();
        assert_eq!(v["approval"], true);
        let v = serde_json::to_value(&p.promotion[2].rules).unwrap();
        assert_eq!(
            v["approval"],
            serde_json::json!({"approvers": ["dave"], "four_eyes": false})
        );
        let v = serde_json::to_value(EdgeRules::default()).unwrap();
        assert!(v.get("approval").is_none(), "{v}");
        let back: EdgeRules =
            serde_json::from_value(serde_json::to_value(&p.promotion[1].rules).unwrap()).unwrap();
        assert_eq!(back, p.promotion[1].rules);
    }

    #[test]
    fn approval_rules_and_groups_are_checked() {
        let e = project(
            "environments:\n  a: {}\n  b: {}\npromotion:\n  - { from: a, to: b, rules: { approval: { approverz: [x] } } }\n",
        )
        .unwrap_err();
        assert_eq!(e.0[0].path, "promotion[0].rules.approval.approverz", "{e}");
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = project(
            "environments:\n  a: {}\n  b: {}\npromotion:\n  - { from: a, to: b, rules: { approval: { four_eyes: false } } }\n",
        )
        .unwrap_err();
        assert_eq!(e.0[0].path, "promotion[0].rules.approval.four_eyes", "{e}");
        let e = project(
            "environments:\n  a: {}\n  b: {}\npromotion:\n  - { from: a, to: b, rules: { approval: { approvers: [Alice, bob, bob] } } }\n",
        )
        .unwrap_err();
        let paths: Vec<&str> = e.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "promotion[0].rules.approval.approvers[0]",
                "promotion[0].rules.approval.approvers[2]"
            ],
            "{e}"
        );
        let e = project("environments:\n  a: {}\ngroups:\n  ops: []\n  leads: [ops, \"x y\"]\n")
            .unwrap_err();
        let paths: Vec<&str> = e.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["groups.leads[0]", "groups.leads[1]", "groups.ops"],
            "{e}"
        );
        let e = project("environments:\n  a: { deploy: promotion }\n").unwrap_err();
        assert_eq!(e.0[0].path, "environments.a.deploy", "{e}");
        assert!(e.to_string().contains("no promotion edge leads"), "{e}");
    }

    #[test]
    fn targets_of_edges_are_protected_unless_direct() {
        let p = project(
            "environments:\n  dev: {}\n  staging: {}\n  prod: {}\n  sandbox: { deploy: direct }\n  lab: {}\npromotion:\n  - { from: dev, to: [staging, sandbox] }\n  - { from: staging, to: prod, when: { labels: { tier: gold } } }\n",
        )
        .unwrap();
        assert!(p.protected_by("dev").is_empty());
        assert!(p.protected_by("lab").is_empty());
        assert!(p.protected_by("sandbox").is_empty(), "deploy: direct");
        assert_eq!(p.edges_to("sandbox").len(), 1);
        let s = p.protected_by("staging");
        assert_eq!((s[0].from.as_str(), s[0].to.as_str()), ("dev", "staging"));
        // A conditional edge protects its target as well.
        assert_eq!(p.protected_by("prod")[0].from, "staging");
        assert!(p.protected_by("nowhere").is_empty());
        assert_eq!(p.edge_between("staging", "prod").unwrap().index, 1);
        assert!(p.edge_between("prod", "staging").is_none());
    }

    #[test]
    fn identity_names() {
        for ok in ["alice", "ci-bot", "release.managers", "r2_d2", "7up"] {
            assert!(valid_identity_name(ok), "{ok}");
        }
        for bad in ["", "Alice", "api:alice", "-x", "a b", &"a".repeat(65)] {
            assert!(!valid_identity_name(bad), "{bad}");
        }
    }

    #[test]
    fn empty_and_broken_files_are_errors() {
        for text in [
            "",
            "# only a comment\n",
            "[]",
            "42",
            "environments: 3",
            "\u{0}",
        ] {
            assert!(project(text).is_err(), "{text:?}");
        }
        let e = project("").unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let e = project("environments: {}\n").unwrap_err();
        assert!(e.to_string().contains("at least one environment"), "{e}");
    }
}
