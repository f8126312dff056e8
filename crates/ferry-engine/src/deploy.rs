//! Deploying a flow file: its content becomes a revision and the active one of an environment.
//!
//! This is the store-level deploy, without a project file or an actor's role: for the demo,
//! tests and benchmarks, which run without `ferry.yaml`. Operators' deploys (`ferry deploy`,
//! `ferry run FILE`, `POST /api/v1/deploy`) go through [`crate::lifecycle::deploy_all`], which
//! applies the project's rules (protected environments) and the actor's role.

use std::sync::Arc;

use ferry_spec::LoadedFlow;
use ferry_store::{RevisionInfo, StateStore};

use crate::error::EngineError;

/// What a deploy did.
#[derive(Debug, Clone)]
pub struct DeployResult {
    pub revision: RevisionInfo,
    /// False when the content was already the active revision (nothing written).
    pub created: bool,
}

/// Makes `flow` the active revision in `env`, creating a revision only when its content changed.
pub async fn deploy(
    store: &Arc<dyn StateStore>,
    flow: &LoadedFlow,
    env: &str,
    message: &str,
    author: &str,
) -> Result<DeployResult, EngineError> {
    let out = store
        .deploy(
            &flow.flow.name,
            env,
            &flow.canonical,
            &flow.hash,
            message,
            author,
        )
        .await?;
    Ok(DeployResult {
        revision: out.revision,
        created: out.created,
    })
}
