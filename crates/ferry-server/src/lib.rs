//! ferry's control server: the JSON control API, `/healthz`, `/metrics`, and the operator
//! dashboard, served by `ferry serve`.
//!
//! # Layout
//! - [`config`]: [`ServerConfig`] and its rules (loopback by default; no public bind without
//!   a chosen token);
//! - [`auth`]: bearer tokens and their roles (stored hashed, compared in constant time),
//!   dashboard sessions, the CSRF check;
//! - [`tokens`]: making and revoking named tokens (`ferry token`, `/api/v1/tokens`);
//! - [`routes`]: [`ROUTES`], the one table of routes (handler and access) the router and the
//!   OpenAPI document are built from;
//! - [`openapi`]: the OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//!   and the serde types they take and answer with; served at `/openapi.json`;
//! - [`api`]: the JSON handlers, one module per resource, and the types they answer with
//!   ([`api::views`]);
//! - [`dashboard`]: server-rendered HTML pages and their forms;
//! - [`extract`]: body and query extractors whose failures are JSON errors (413, 415, 400 with
//!   the field);
//! - [`launch`]: [`RunLauncher`] (how a scheduler plugs in), [`EngineLauncher`] (runs on
//!   request without one), [`EnvSource`] (the variables and secrets runs see);
//! - [`state`]: [`AppState`] and [`Services`];
//! - [`server`]: [`Server`] and [`serve`];
//! - [`error`]: [`ServerError`] (startup) and [`ApiError`] (one failed request).
//!
//! # Use
//! ```no_run
//! # async fn f(store: std::sync::Arc<dyn ferry_store::StateStore>) -> Result<(), ferry_server::ServerError> {
//! use std::sync::Arc;
//! let envs = Arc::new(ferry_server::ProjectEnv::new(
//!     ferry_env::Secrets::from_process_env(), None, Default::default()));
//! let services = ferry_server::Services::new(store, envs);   // EngineLauncher, no /metrics
//! let config = ferry_server::ServerConfig::new(".ferry", "default");
//! ferry_server::serve(config, services, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! # The key decision
//! The server adds no operations of its own: deploys, diffs, promotions, approvals, replays and
//! discards call the same `ferry_engine` functions as the CLI, so the API, the dashboard and
//! the command line cannot drift apart in what an operation does or what it writes to the
//! audit log. The cost is that long operations (a replay of many entries) answer only when
//! done; runs are the exception, started in the background with their id returned at once.

pub mod api;
pub mod auth;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod launch;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod state;
pub mod throttle;
pub mod tokens;

pub use auth::ApiToken;
pub use config::{DEFAULT_LISTEN, DEFAULT_MAX_BODY, ServerConfig, TOKEN_ENV, TokenSource};
pub use error::{ApiError, ServerError};
pub use launch::{
    EngineLauncher, EnvSource, LaunchError, NextRun, ProjectEnv, RunLauncher, StaticEnv,
};
pub use routes::{Access, ROUTES, Route, router};
pub use server::{Server, serve};
pub use state::{AppState, MetricsRenderer, Services};
