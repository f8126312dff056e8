//! Who may change what: the [`Actor`] behind an operation and its [`Role`], protected
//! environments, and who may decide a promotion.
//!
//! These rules live in the engine because every operator surface — the CLI, the control API,
//! the dashboard — changes environments through [`crate::lifecycle`]; a rule checked here
//! cannot be bypassed by choosing another surface.
//!
//! Decisions:
//! - **An actor is a label, a name and a role.** The label is what the audit log says
//!   (`alice` for the CLI, `api:alice` for a token, `dashboard:alice` for a session opened with
//!   it); the name is the identity approvals compare (`alice` in all three); the role gates
//!   operations. The CLI, run on the state store's own machine, is the operator's shell: an
//!   admin, named after `FERRY_USER` (else the OS user).
//! - **A protected environment** (the target of a promotion edge, unless `deploy: direct`;
//!   see [`ferry_spec::Project::protected_by`]) takes new content only by promotion. Anything
//!   else that would make new content active there is refused ([`forbidden`]), and a revert,
//!   restore or activation there must bring back a revision whose content was active there
//!   before: a rollback.
//! - **Every refusal is audited** (action `refused`, with the operation and the reason), so
//!   the log shows attempts as well as changes.

use std::collections::BTreeSet;
use std::sync::Arc;

use ferry_spec::Project;
use ferry_spec::project::Edge;
use ferry_store::{NewAudit, RevisionInfo, StateStore};
use serde_json::json;

use crate::lifecycle::LifecycleError;

pub use ferry_store::Role;

/// The audit action of a refused operation.
pub const REFUSED: &str = "refused";

/// Who does an operation, and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Who, as the audit log says it: `alice` (the CLI), `api:alice`, `dashboard:alice`.
    pub label: String,
    /// The identity approvals compare: a token name, or the CLI's user.
    pub name: String,
    /// What they may do.
    pub role: Role,
}

impl Actor {
    /// The CLI on the state store's machine: an admin named after its user.
    pub fn cli(user: &str) -> Actor {
        Actor {
            label: user.to_string(),
            name: user.to_string(),
            role: Role::Admin,
        }
    }

    /// A request to the control API with the token `name`.
    pub fn api(name: &str, role: Role) -> Actor {
        Actor {
            label: format!("api:{name}"),
            name: name.to_string(),
            role,
        }
    }

    /// A dashboard session opened with the token `name`.
    pub fn dashboard(name: &str, role: Role) -> Actor {
        Actor {
            label: format!("dashboard:{name}"),
            name: name.to_string(),
            role,
        }
    }
}

/// The identity behind an audit label: `api:alice` and `dashboard:alice` are `alice`, a CLI
/// user is itself. Token names cannot contain `:`, so the prefix is never ambiguous.
pub fn identity(label: &str) -> &str {
    label
        .strip_prefix("api:")
        .or_else(|| label.strip_prefix("dashboard:"))
        .unwrap_or(label)
}

/// What the audit log records about a refusal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refusal<'a> {
    /// What was refused: `deploy`, `clone`, `approve`, …
    pub operation: &'a str,
    pub flow: Option<&'a str>,
    pub env: Option<&'a str>,
    pub revision: Option<i64>,
}

/// Records a refusal in the audit log and returns it as [`LifecycleError::Forbidden`]. A store
/// failure while auditing is returned instead: a refusal that cannot be recorded is not
/// silently let through either way.
pub(crate) async fn forbidden(
    store: &Arc<dyn StateStore>,
    actor: &Actor,
    at: Refusal<'_>,
    message: String,
) -> LifecycleError {
    let entry = NewAudit {
        actor: actor.label.clone(),
        action: REFUSED.into(),
        flow: at.flow.map(str::to_string),
        env: at.env.map(str::to_string),
        revision: at.revision,
        detail: json!({"operation": at.operation, "role": actor.role, "reason": message}),
    };
    match store.record_audit(&entry).await {
        Ok(_) => LifecycleError::Forbidden(message),
        Err(e) => LifecycleError::Store(e),
    }
}

/// Refuses (audited) unless `actor` has `needed`.
pub(crate) async fn require_role(
    store: &Arc<dyn StateStore>,
    actor: &Actor,
    needed: Role,
    at: Refusal<'_>,
) -> Result<(), LifecycleError> {
    if actor.role.allows(needed) {
        return Ok(());
    }
    Err(forbidden(
        store,
        actor,
        at,
        format!(
            "{} needs the {needed} role; `{}` has the {} role",
            at.operation, actor.label, actor.role
        ),
    )
    .await)
}

/// `staging → prod-us` (or several, joined with "or").
pub fn describe_edges(edges: &[Edge]) -> String {
    edges
        .iter()
        .map(|e| format!("{} → {}", e.from, e.to))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The edges protecting `env`, empty when it takes deploys directly (or there is no project).
pub fn protecting_edges(project: Option<&Project>, env: &str) -> Vec<Edge> {
    project.map(|p| p.protected_by(env)).unwrap_or_default()
}

/// Refuses (audited) writing new content of `flow` into `env` when the project protects it;
/// `doing` says what was tried ("deploy", "clone", "merge", …).
pub(crate) async fn refuse_new_content(
    store: &Arc<dyn StateStore>,
    project: Option<&Project>,
    env: &str,
    flow: &str,
    doing: &str,
    actor: &Actor,
) -> Result<(), LifecycleError> {
    let edges = protecting_edges(project, env);
    let Some(first) = edges.first() else {
        return Ok(());
    };
    let message = format!(
        "environment `{env}` takes new content only by promotion along {}: promote `{flow}` there instead (`ferry promote {flow} --from {} --to {env}`); refused: {doing}, nothing was written. (`deploy: direct` on `{env}` in ferry.yaml allows direct changes.)",
        describe_edges(&edges),
        first.from,
    );
    Err(forbidden(
        store,
        actor,
        Refusal {
            operation: doing,
            flow: Some(flow),
            env: Some(env),
            revision: None,
        },
        message,
    )
    .await)
}

/// In a protected `env`, refuses (audited) making `rev` active unless its content was active
/// there before (a rollback). Elsewhere anything goes.
pub(crate) async fn require_rollback(
    store: &Arc<dyn StateStore>,
    project: Option<&Project>,
    env: &str,
    rev: &RevisionInfo,
    doing: &str,
    actor: &Actor,
) -> Result<(), LifecycleError> {
    let edges = protecting_edges(project, env);
    let Some(first) = edges.first() else {
        return Ok(());
    };
    let ran: BTreeSet<i64> = store
        .activations(&rev.flow, Some(env))
        .await?
        .into_iter()
        .map(|a| a.number)
        .collect();
    if ran.contains(&rev.number) {
        return Ok(());
    }
    let same_content_ran = store
        .revisions(&rev.flow)
        .await?
        .iter()
        .any(|r| r.hash == rev.hash && ran.contains(&r.number));
    if same_content_ran {
        return Ok(());
    }
    let message = format!(
        "environment `{env}` takes new content only by promotion along {}, and revision {} of `{}` was never active there, so {doing} would not be a rollback; promote it instead (`ferry promote {} --from {} --to {env}`), or go back to a revision that ran in `{env}` (`ferry history {}`)",
        describe_edges(&edges),
        rev.number,
        rev.flow,
        rev.flow,
        first.from,
        rev.flow,
    );
    Err(forbidden(
        store,
        actor,
        Refusal {
            operation: doing,
            flow: Some(&rev.flow),
            env: Some(env),
            revision: Some(rev.number),
        },
        message,
    )
    .await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_identities() {
        let a = Actor::api("alice", Role::Approver);
        assert_eq!((a.label.as_str(), a.name.as_str()), ("api:alice", "alice"));
        assert_eq!(identity(&a.label), "alice");
        assert_eq!(
            identity(&Actor::dashboard("bob", Role::Viewer).label),
            "bob"
        );
        assert_eq!(identity("carol"), "carol");
        let cli = Actor::cli("dave");
        assert_eq!((cli.label.as_str(), cli.role), ("dave", Role::Admin));
    }

    #[test]
    fn roles_are_a_ladder() {
        assert!(Role::Admin.allows(Role::Approver));
        assert!(Role::Approver.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Operator));
        assert!(!Role::Operator.allows(Role::Approver));
        assert!(!Role::Approver.allows(Role::Admin));
    }
}
