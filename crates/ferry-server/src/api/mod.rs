//! The JSON control API, one module per resource; every handler does its work through the
//! engine (`ferry_engine::lifecycle`, `ferry_engine::replay`) or the store and only shapes the
//! answer, exactly as the CLI does.
//!
//! - [`system`]: `/healthz`, `/metrics`, `/openapi.json`;
//! - [`flows`]: flows, revisions, diffs, deploys, triggering a run;
//! - [`runs`]: runs and their details;
//! - [`dlq`]: the dead-letter queue: list, show, replay, discard;
//! - [`promotions`]: promotions and their approval;
//! - [`tokens`]: named tokens (admin only);
//! - [`workers`]: the `ferry serve` processes sharing the state store;
//! - [`views`]: the types every answer is, copied from the store's and engine's records.
//!
//! Each handler carries a `#[utoipa::path]` (its summary is the doc comment's first line):
//! with the types it reads and answers with, that is its entry in the generated OpenAPI
//! document ([`crate::openapi`]).
//!
//! Who acts is the caller's token: the access layer ([`crate::auth::require_token`]) puts its
//! [`ferry_engine::governance::Actor`] (`api:<name>`) on the request, and handlers take it as
//! `Extension<Actor>`.

pub mod dlq;
pub mod flows;
pub mod promotions;
pub mod runs;
pub mod system;
pub mod tokens;
pub mod views;
pub mod workers;
