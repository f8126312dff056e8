//! The flow lifecycle's rules that do not depend on the database: what input is accepted and
//! what the audit log says about each action. Both backends (`sqlite/lifecycle.rs`,
//! `postgres/lifecycle.rs`) call these, so a deploy, a snapshot or a promotion is refused for
//! the same reasons and leaves the same audit detail on either.
//!
//! Names that identify things (flows, environments, snapshots) are refused when they contain
//! NUL rather than changed (see `codec`): a silently renamed flow would be a different flow.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::codec::{MAX_REASON_BYTES, clean_text};
use crate::error::{Result, StoreError};
use crate::model::{
    DeployItem, MAX_SNAPSHOT_NAME_CHARS, NewPromotion, PromotionState, RevisionRef,
};

/// Refuses an empty identity or one with NUL (`what` is "flow name", "environment", …).
pub(crate) fn check_name(op: &'static str, what: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(StoreError::InvalidInput {
            op,
            detail: format!("the {what} is empty; give a name"),
        });
    }
    if value.contains('\0') {
        return Err(StoreError::InvalidInput {
            op,
            detail: format!(
                "the {what} {:?} contains a NUL character; use printable characters",
                clean_text(value)
            ),
        });
    }
    Ok(())
}

/// Refuses an empty action name (the audit log and the activation history are searched by it).
pub(crate) fn check_action(op: &'static str, action: &str) -> Result<()> {
    if action.trim().is_empty() {
        return Err(StoreError::InvalidInput {
            op,
            detail: "the action is empty; name what is being done (\"deploy\", \"revert\", …)"
                .into(),
        });
    }
    Ok(())
}

/// Checks the whole batch of a deploy before anything is written.
pub(crate) fn check_deploy(
    op: &'static str,
    env: &str,
    items: &[DeployItem],
    action: &str,
) -> Result<()> {
    check_action(op, action)?;
    check_name(op, "environment", env)?;
    for item in items {
        check_name(op, "flow name", &item.flow)?;
        if item.hash.contains('\0') {
            return Err(StoreError::InvalidInput {
                op,
                detail: format!(
                    "the content hash of flow {} contains a NUL character",
                    item.flow
                ),
            });
        }
        if let Some(origin) = &item.origin {
            check_name(op, "origin flow name", &origin.flow)?;
        }
    }
    Ok(())
}

/// Refuses a snapshot name that is empty, too long or has control characters.
pub(crate) fn check_snapshot_name(op: &'static str, env: &str, name: &str) -> Result<()> {
    check_name(op, "environment", env)?;
    if name.trim().is_empty() {
        return Err(StoreError::InvalidInput {
            op,
            detail: "the snapshot name is empty; give it a name such as \"before-upgrade\"".into(),
        });
    }
    let chars = name.chars().count();
    if chars > MAX_SNAPSHOT_NAME_CHARS {
        return Err(StoreError::InvalidInput {
            op,
            detail: format!(
                "the snapshot name is {chars} characters long; keep it to {MAX_SNAPSHOT_NAME_CHARS}"
            ),
        });
    }
    if name.chars().any(char::is_control) {
        return Err(StoreError::InvalidInput {
            op,
            detail: format!(
                "the snapshot name {:?} contains control characters; use printable characters",
                clean_text(name)
            ),
        });
    }
    Ok(())
}

/// The reason of a decision as stored: trimmed, NUL replaced; a rejection needs one, and an
/// oversized one is refused. `None` for an approval without a reason.
pub(crate) fn check_decision_reason(
    op: &'static str,
    approve: bool,
    reason: &str,
) -> Result<Option<String>> {
    let reason = reason.trim();
    if reason.is_empty() {
        if approve {
            return Ok(None);
        }
        return Err(StoreError::InvalidInput {
            op,
            detail: "a rejection needs a reason (say why the promotion must not go live)".into(),
        });
    }
    if reason.len() > MAX_REASON_BYTES {
        return Err(StoreError::InvalidInput {
            op,
            detail: format!(
                "the reason is {} bytes long; keep it under {MAX_REASON_BYTES}",
                reason.len()
            ),
        });
    }
    Ok(Some(clean_text(reason).into_owned()))
}

/// Checks a promotion request before anything is written: names, and two different
/// environments.
pub(crate) fn check_promotion(op: &'static str, p: &NewPromotion) -> Result<()> {
    check_name(op, "flow name", &p.flow)?;
    check_name(op, "source environment", &p.from_env)?;
    check_name(op, "target environment", &p.to_env)?;
    if p.hash.contains('\0') {
        return Err(StoreError::InvalidInput {
            op,
            detail: format!(
                "the content hash promoted for flow {} contains a NUL character",
                p.flow
            ),
        });
    }
    let (from, to) = (&p.from_env, &p.to_env);
    if from == to {
        return Err(StoreError::InvalidInput {
            op,
            detail: format!(
                "a promotion goes from one environment to another, but both are {from:?}; to run another revision in {from:?}, activate it there"
            ),
        });
    }
    Ok(())
}

/// Both origin columns, or neither, read back as one reference.
pub(crate) fn origin_from_columns(
    op: &'static str,
    flow: Option<String>,
    revision: Option<i64>,
) -> Result<Option<RevisionRef>> {
    match (flow, revision) {
        (Some(flow), Some(revision)) => Ok(Some(RevisionRef { flow, revision })),
        (None, None) => Ok(None),
        (flow, revision) => Err(StoreError::BadData {
            op,
            column: "revisions.origin_flow",
            detail: format!(
                "origin_flow {flow:?} and origin_revision {revision:?} must both be set or both be empty"
            ),
        }),
    }
}

/// The error for an origin that names no revision.
pub(crate) fn missing_origin(op: &'static str, flow: &str, origin: &RevisionRef) -> StoreError {
    StoreError::NotFound {
        op,
        what: format!(
            "revision {} of flow {}, named as the origin of the new revision of {flow},",
            origin.revision, origin.flow
        ),
    }
}

/// The error for a revision that is not there.
pub(crate) fn missing_revision(op: &'static str, flow: &str, number: i64) -> StoreError {
    StoreError::NotFound {
        op,
        what: format!("revision {number} of flow {flow}"),
    }
}

/// Audit detail of a deploy of one item.
pub(crate) fn deploy_detail(item: &DeployItem, previous: Option<i64>) -> Value {
    json!({
        "message": item.message,
        "hash": item.hash,
        "previous": previous,
        "origin": item.origin,
    })
}

/// Audit detail of an activation.
pub(crate) fn activate_detail(previous: Option<i64>) -> Value {
    json!({ "previous": previous })
}

/// Audit detail of a snapshot.
pub(crate) fn snapshot_detail(name: &str, flows: usize) -> Value {
    json!({ "name": name, "flows": flows })
}

/// What the audit log says about a promotion as it is requested.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PromoteAudit<'a> {
    pub id: Uuid,
    pub from: &'a str,
    pub to: &'a str,
    pub source_revision: i64,
    pub revision: i64,
    pub state: PromotionState,
    /// True when the promotion made a new revision for the promoted content.
    pub created_revision: bool,
    /// The revision that was active in `to` before, when the promotion went live.
    pub previous: Option<i64>,
}

/// Audit detail of a promotion request.
pub(crate) fn promote_detail(a: PromoteAudit<'_>) -> Value {
    json!({
        "id": a.id,
        "from": a.from,
        "to": a.to,
        "source_revision": a.source_revision,
        "revision": a.revision,
        "state": a.state,
        "created_revision": a.created_revision,
        "previous": a.previous,
    })
}

/// Audit detail of an approval or a rejection.
pub(crate) fn decide_detail(
    id: Uuid,
    from: &str,
    to: &str,
    reason: Option<&str>,
    previous: Option<i64>,
) -> Value {
    json!({
        "id": id,
        "from": from,
        "to": to,
        "reason": reason,
        "previous": previous,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(flow: &str) -> DeployItem {
        DeployItem {
            flow: flow.into(),
            spec: "{}".into(),
            hash: "h".into(),
            message: "m".into(),
            origin: None,
        }
    }

    #[test]
    fn deploys_need_names_and_an_action() {
        assert!(check_deploy("d", "dev", &[item("orders")], "deploy").is_ok());
        assert!(check_deploy("d", "dev", &[item("orders")], " ").is_err());
        assert!(check_deploy("d", "", &[item("orders")], "deploy").is_err());
        let err = check_deploy("d", "dev", &[item("ok"), item("a\0b")], "deploy").unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
        let mut bad_origin = item("x");
        bad_origin.origin = Some(RevisionRef {
            flow: String::new(),
            revision: 1,
        });
        assert!(check_deploy("d", "dev", &[bad_origin], "deploy").is_err());
    }

    #[test]
    fn snapshot_names() {
        assert!(check_snapshot_name("s", "prod", "before-upgrade").is_ok());
        assert!(check_snapshot_name("s", "prod", &"é".repeat(100)).is_ok());
        assert!(check_snapshot_name("s", "prod", &"é".repeat(101)).is_err());
        assert!(check_snapshot_name("s", "prod", "  ").is_err());
        assert!(check_snapshot_name("s", "prod", "a\nb").is_err());
    }

    #[test]
    fn decisions_and_origins() {
        assert_eq!(check_decision_reason("d", true, " ").unwrap(), None);
        assert!(check_decision_reason("d", false, " ").is_err());
        assert_eq!(
            check_decision_reason("d", false, " broken \0").unwrap(),
            Some("broken \u{FFFD}".into())
        );
        let mut p = NewPromotion {
            id: Uuid::nil(),
            flow: "orders".into(),
            from_env: "staging".into(),
            to_env: "staging".into(),
            source_revision: 1,
            spec: "{}".into(),
            hash: "h".into(),
            message: "m".into(),
            author: "ann".into(),
            pending: false,
            detail: Value::Null,
        };
        assert!(check_promotion("p", &p).is_err());
        p.to_env = "prod".into();
        assert!(check_promotion("p", &p).is_ok());
        assert!(origin_from_columns("r", Some("a".into()), None).is_err());
        assert_eq!(origin_from_columns("r", None, None).unwrap(), None);
        let d = deploy_detail(&item("x"), Some(2));
        assert_eq!(d["previous"], 2);
        assert_eq!(d["origin"], Value::Null);
    }
}
