//! Variables and secrets a flow runs with.
//!
//! Flow files hold references (`{{ env.SHOP_URL }}`, `{ secret: SHOP_TOKEN }`); this module
//! resolves them at run time. Variables come from the environment ferry runs the flow in (given on
//! the command line or by the project file) and fall back to the process environment. Secrets come
//! from a secrets file given to ferry, then from the process environment. A resolved secret is a
//! [`SecretValue`], whose `Debug` and `Display` never show the value, so it cannot leak through a
//! log line or an error message by accident; every value is also registered for redaction from
//! the logs and spans as a whole (`ferry_telemetry::redact`).
//!
//! Its own crate, below the connectors and the engine: the CLI, the server, the engine and every
//! connector need a run's environment, and none of them should reach through another for it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use ferry_spec::SecretRef;

/// A variable or secret that could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("secret `{0}` is not set: add it to the secrets file or export it in the environment")]
    MissingSecret(String),
    #[error("cannot read secrets file {path}: {reason}")]
    SecretsFile { path: String, reason: String },
}

/// A secret's value. Printing it prints `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Arc<str>);

impl SecretValue {
    /// Wraps a value, and registers it with `ferry_telemetry::redact` so that it is redacted
    /// from logs and exported spans even where it reaches them through text ferry does not
    /// control (an error body echoing a token, a URL logged by a library).
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        let value = value.into();
        ferry_telemetry::redact::register(&value);
        SecretValue(value)
    }
    /// The value, for the one place that sends it to its target.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where secrets come from.
#[derive(Clone, Default)]
pub struct Secrets {
    file: BTreeMap<String, SecretValue>,
    use_process_env: bool,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("names", &self.file.keys().collect::<Vec<_>>())
            .field("use_process_env", &self.use_process_env)
            .finish()
    }
}

/// Largest secrets file read.
const MAX_SECRETS_FILE: u64 = 1 << 20;

impl Secrets {
    /// Secrets from the process environment only.
    pub fn from_process_env() -> Self {
        Secrets {
            file: BTreeMap::new(),
            use_process_env: true,
        }
    }

    /// Secrets from a map (tests, embedding), falling back to nothing.
    pub fn from_map<I, K, V>(values: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<Arc<str>>,
    {
        Secrets {
            file: values
                .into_iter()
                .map(|(k, v)| (k.into(), SecretValue::new(v)))
                .collect(),
            use_process_env: false,
        }
    }

    /// Reads a secrets file: `NAME=value` lines (`#` comments and blank lines allowed), then
    /// falls back to the process environment for names it lacks.
    pub fn from_file(path: &Path) -> Result<Self, EnvError> {
        let err = |reason: String| EnvError::SecretsFile {
            path: path.display().to_string(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
        if meta.len() > MAX_SECRETS_FILE {
            return Err(err(format!("larger than {MAX_SECRETS_FILE} bytes")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut file = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                // The line may hold a secret: name only its number.
                return Err(err(format!("line {} is not NAME=value", i + 1)));
            };
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or(v);
            file.insert(k.trim().to_string(), SecretValue::new(v));
        }
        Ok(Secrets {
            file,
            use_process_env: true,
        })
    }

    /// Resolves a reference.
    pub fn resolve(&self, r: &SecretRef) -> Result<SecretValue, EnvError> {
        if let Some(v) = self.file.get(&r.secret) {
            return Ok(v.clone());
        }
        if self.use_process_env
            && let Ok(v) = std::env::var(&r.secret)
        {
            return Ok(SecretValue::new(v));
        }
        Err(EnvError::MissingSecret(r.secret.clone()))
    }

    /// Every value, so outputs can be checked for leaks.
    pub fn values(&self) -> impl Iterator<Item = &SecretValue> {
        self.file.values()
    }
}

/// The variables and secrets of the environment a flow runs in.
#[derive(Clone, Debug, Default)]
pub struct RunEnv {
    /// Name of the environment (`default`, `dev`, `prod-eu`).
    pub name: String,
    vars: BTreeMap<String, String>,
    use_process_env: bool,
    pub secrets: Secrets,
}

impl RunEnv {
    pub fn new(name: impl Into<String>, secrets: Secrets) -> Self {
        RunEnv {
            name: name.into(),
            vars: BTreeMap::new(),
            use_process_env: true,
            secrets,
        }
    }

    /// Variables from `vars` only, never the process environment (tests).
    pub fn isolated(name: impl Into<String>, secrets: Secrets) -> Self {
        RunEnv {
            use_process_env: false,
            ..RunEnv::new(name, secrets)
        }
    }

    pub fn with_var(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.vars.insert(k.into(), v.into());
        self
    }

    pub fn set_var(&mut self, k: impl Into<String>, v: impl Into<String>) {
        self.vars.insert(k.into(), v.into());
    }

    /// A variable's value.
    pub fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned().or_else(|| {
            if self.use_process_env {
                std::env::var(name).ok()
            } else {
                None
            }
        })
    }
}
