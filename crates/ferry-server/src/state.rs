//! [`AppState`]: what every handler shares — the store, the launcher, the token, the
//! sessions — and [`Services`], what the caller plugs in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferry_spec::Project;
use ferry_store::StateStore;

use crate::auth::ApiToken;
use crate::config::ServerConfig;
use crate::launch::{EnvSource, RunLauncher};
use crate::throttle::Throttle;

/// Renders the Prometheus text exposition for `GET /metrics`.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// What the caller of [`crate::serve`] provides.
#[derive(Clone)]
pub struct Services {
    /// The state store.
    pub store: Arc<dyn StateStore>,
    /// Starts runs on request and knows the schedule ([`crate::EngineLauncher`] when nothing
    /// schedules).
    pub launcher: Arc<dyn RunLauncher>,
    /// The environment runs and replays see.
    pub envs: Arc<dyn EnvSource>,
    /// `GET /metrics`; without one, `/metrics` answers 404.
    pub metrics: Option<MetricsRenderer>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("store", &self.store.backend())
            .field("metrics", &self.metrics.is_some())
            .finish_non_exhaustive()
    }
}

impl Services {
    /// Services with [`crate::EngineLauncher`] as the launcher and no metrics.
    pub fn new(store: Arc<dyn StateStore>, envs: Arc<dyn EnvSource>) -> Services {
        let launcher = Arc::new(crate::launch::EngineLauncher::new(
            store.clone(),
            envs.clone(),
        ));
        Services {
            store,
            launcher,
            envs,
            metrics: None,
        }
    }
}

struct Inner {
    services: Services,
    token: ApiToken,
    throttle: Throttle,
    /// The public address is HTTPS (`--public-url`): session cookies are `Secure`.
    public_https: bool,
    env: String,
    project: Option<Project>,
    max_body: usize,
    /// When each stored token's last use was last written.
    last_used: Mutex<HashMap<String, Instant>>,
}

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("env", &self.inner.env)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// The state of a server with this config, services and token.
    pub fn new(config: &ServerConfig, services: Services, token: ApiToken) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                services,
                token,
                throttle: Throttle::default(),
                public_https: config
                    .public_url
                    .as_ref()
                    .is_some_and(|u| u.scheme() == "https"),
                env: config.env.clone(),
                project: config.project.clone(),
                max_body: config.max_body,
                last_used: Mutex::default(),
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.inner.services.store
    }

    pub fn launcher(&self) -> &Arc<dyn RunLauncher> {
        &self.inner.services.launcher
    }

    pub fn envs(&self) -> &Arc<dyn EnvSource> {
        &self.inner.services.envs
    }

    pub fn metrics(&self) -> Option<&MetricsRenderer> {
        self.inner.services.metrics.as_ref()
    }

    pub fn token(&self) -> &ApiToken {
        &self.inner.token
    }

    /// Failed sign-ins per client address.
    pub fn throttle(&self) -> &Throttle {
        &self.inner.throttle
    }

    /// Whether the server's public address (`--public-url`) is HTTPS.
    pub fn public_https(&self) -> bool {
        self.inner.public_https
    }

    /// The environment requests act on when they name none.
    pub fn default_env(&self) -> &str {
        &self.inner.env
    }

    pub fn project(&self) -> Option<&Project> {
        self.inner.project.as_ref()
    }

    pub fn max_body(&self) -> usize {
        self.inner.max_body
    }

    /// True (and noted) when token `name`'s last use has not been written for
    /// [`crate::auth::LAST_USED_EVERY`].
    pub fn due_for_last_used(&self, name: &str) -> bool {
        let Ok(mut seen) = self.inner.last_used.lock() else {
            return false;
        };
        let now = Instant::now();
        match seen.get(name) {
            Some(at) if now.duration_since(*at) < crate::auth::LAST_USED_EVERY => false,
            _ => {
                seen.insert(name.to_string(), now);
                true
            }
        }
    }

    /// The environments the dashboard shows: the project's, else the default one.
    pub fn environments(&self) -> Vec<String> {
        let mut envs: Vec<String> = self
            .project()
            .map(|p| p.environments.keys().cloned().collect())
            .unwrap_or_default();
        if !envs.iter().any(|e| e == self.default_env()) {
            envs.insert(0, self.default_env().to_string());
        }
        envs
    }

    /// `env`, or the default environment when `None`; an environment the project does not
    /// define is refused.
    pub fn pick_env(&self, env: Option<&str>) -> Result<String, crate::error::ApiError> {
        let env = match env.map(str::trim) {
            Some(e) if !e.is_empty() => e.to_string(),
            _ => return Ok(self.default_env().to_string()),
        };
        if let Some(p) = self.project()
            && !p.environments.is_empty()
            && p.environment(&env).is_none()
        {
            return Err(crate::error::ApiError::field(
                "env",
                format!(
                    "environment `{env}` is not defined in the project file; it defines {}",
                    p.environments
                        .keys()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(env)
    }
}
