//! The governance rules of the flow lifecycle, at the engine (where the CLI, the API and the
//! dashboard all go through): protected environments and rollbacks, roles, approvers, groups
//! and four eyes, clone drafts, the promotion report, and cursors in a snapshot restore.

use std::sync::Arc;

use ferry_engine::governance::{Actor, Role};
use ferry_engine::lifecycle::{self, CursorOutcome, LifecycleError, Resolution};
use ferry_spec::{LoadedFlow, Project};
use ferry_store::{AuditFilter, PromotionState, StateStore, StoreError};
use serde_json::json;

type Store = Arc<dyn StateStore>;

async fn store() -> Store {
    ferry_store::open("sqlite::memory:").await.unwrap()
}

fn project(text: &str) -> Project {
    ferry_spec::load_project_str(text, None).unwrap()
}

/// A small flow; `note` adds a constant field (a content change), `labels` its labels.
fn flow(name: &str, note: &str, labels: &str) -> LoadedFlow {
    let extra = if note.is_empty() {
        String::new()
    } else {
        format!("    note: {{ const: {note} }}\n")
    };
    ferry_spec::load_str(
        &format!(
            r#"name: {name}
labels: {{ {labels} }}
source:
  http:
    url: "http://127.0.0.1:9/api/orders"
    records: "$.orders[*]"
map:
  key: "$.id"
  fields:
    order_ref: "$.number"
{extra}destination:
  http:
    method: PUT
    url: "http://127.0.0.1:9/api/sink/{{{{ record.order_ref }}}}"
"#
        ),
        None,
    )
    .unwrap()
}

fn alice() -> Actor {
    Actor::cli("alice")
}

async fn refusals(store: &Store) -> Vec<ferry_store::AuditEntry> {
    store
        .audit(&AuditFilter {
            action: Some("refused".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap()
}

fn forbidden(r: Result<impl std::fmt::Debug, LifecycleError>) -> String {
    match r {
        Err(LifecycleError::Forbidden(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

const TOPOLOGY: &str = r#"
environments:
  dev: {}
  staging: {}
  prod: {}
  lab: { deploy: direct }
promotion:
  - { from: dev, to: [staging, lab] }
  - { from: staging, to: prod, rules: { approval: true } }
"#;

#[tokio::test]
async fn protected_environments_take_new_content_only_by_promotion() {
    let s = store().await;
    let p = project(TOPOLOGY);
    let v1 = flow("orders", "", "");
    lifecycle::deploy_all(
        &s,
        Some(&p),
        "dev",
        std::slice::from_ref(&v1),
        "m",
        &alice(),
    )
    .await
    .unwrap();
    // staging is where dev → staging leads: a deploy is refused, naming the edge.
    let msg = forbidden(
        lifecycle::deploy_all(
            &s,
            Some(&p),
            "staging",
            std::slice::from_ref(&v1),
            "m",
            &alice(),
        )
        .await,
    );
    assert!(msg.contains("dev → staging"), "{msg}");
    assert!(
        msg.contains("ferry promote orders --from dev --to staging"),
        "{msg}"
    );
    assert!(
        s.active_revision("orders", "staging")
            .await
            .unwrap()
            .is_none()
    );
    let r = refusals(&s).await;
    assert_eq!(r.len(), 1);
    assert_eq!(
        (
            r[0].actor.as_str(),
            r[0].env.as_deref(),
            &r[0].detail["operation"]
        ),
        ("alice", Some("staging"), &json!("deploy"))
    );
    // `deploy: direct` opts out; an environment no edge leads to, or no project, is open.
    for (env, proj) in [("lab", Some(&p)), ("dev", Some(&p)), ("staging", None)] {
        let out = lifecycle::deploy_all(&s, proj, env, std::slice::from_ref(&v1), "m", &alice())
            .await
            .unwrap_or_else(|e| panic!("{env}: {e}"));
        assert!(out[0].created || env == "dev", "{env}");
    }
    // Promoted content may be "deployed" again unchanged (ferry run FILE): nothing written.
    let fresh = store().await;
    lifecycle::deploy_all(
        &fresh,
        Some(&p),
        "dev",
        std::slice::from_ref(&v1),
        "m",
        &alice(),
    )
    .await
    .unwrap();
    lifecycle::promote(&fresh, &p, "orders", "dev", Some("staging"), None, &alice())
        .await
        .unwrap();
    let same = lifecycle::deploy_all(
        &fresh,
        Some(&p),
        "staging",
        std::slice::from_ref(&v1),
        "m",
        &alice(),
    )
    .await
    .unwrap();
    assert!(!same[0].created);
    assert_eq!(fresh.revisions("orders").await.unwrap().len(), 1);
    let changed = flow("orders", "x", "");
    forbidden(lifecycle::deploy_all(&fresh, Some(&p), "staging", &[changed], "m", &alice()).await);
    // Clone and merge into it are refused too.
    let msg = forbidden(
        lifecycle::clone_flow(
            &fresh,
            Some(&p),
            "orders",
            "orders-exp",
            "staging",
            &alice(),
        )
        .await,
    );
    assert!(msg.contains("dev → staging"), "{msg}");
    assert!(fresh.revisions("orders-exp").await.unwrap().is_empty());
    lifecycle::clone_flow(&fresh, Some(&p), "orders", "orders-exp", "dev", &alice())
        .await
        .unwrap();
    let msg = forbidden(
        lifecycle::merge(
            &fresh,
            Some(&p),
            "orders-exp",
            "orders",
            "staging",
            &Resolution::default(),
            &alice(),
        )
        .await,
    );
    assert!(msg.contains("merge"), "{msg}");
    let ops: Vec<String> = refusals(&fresh)
        .await
        .iter()
        .map(|e| e.detail["operation"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ops, ["merge", "clone", "deploy"]);
}

#[tokio::test]
async fn in_a_protected_environment_only_rollbacks_are_allowed() {
    let s = store().await;
    let p = project(TOPOLOGY);
    for note in ["", "two"] {
        lifecycle::deploy_all(
            &s,
            Some(&p),
            "dev",
            &[flow("orders", note, "")],
            "m",
            &alice(),
        )
        .await
        .unwrap();
        lifecycle::promote(&s, &p, "orders", "dev", Some("staging"), None, &alice())
            .await
            .unwrap();
    }
    assert_eq!(
        s.active_revision("orders", "staging")
            .await
            .unwrap()
            .unwrap()
            .number,
        2
    );
    // Revision 3 runs in dev only.
    lifecycle::deploy_all(
        &s,
        Some(&p),
        "dev",
        &[flow("orders", "three", "")],
        "m",
        &alice(),
    )
    .await
    .unwrap();
    // Back to revision 1, which ran in staging: allowed, a new revision, audited as a revert.
    let r = lifecycle::revert(&s, Some(&p), "orders", "staging", 1, false, "", &alice())
        .await
        .unwrap();
    assert_eq!(r.outcome.revision.number, 4);
    let reverts = s
        .audit(&AuditFilter {
            action: Some("revert".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (
            reverts.len(),
            reverts[0].env.as_deref(),
            reverts[0].actor.as_str()
        ),
        (1, Some("staging"), "alice")
    );
    // Revision 3 never ran there: no rollback, refused with the reason.
    let msg = forbidden(
        lifecycle::revert(&s, Some(&p), "orders", "staging", 3, false, "", &alice()).await,
    );
    assert!(msg.contains("never active there"), "{msg}");
    let msg =
        forbidden(lifecycle::activate(&s, Some(&p), "orders", "staging", Some(3), &alice()).await);
    assert!(msg.contains("never active there"), "{msg}");
    // Activating revision 2 again is a rollback; so is a snapshot restore.
    let a = lifecycle::activate(&s, Some(&p), "orders", "staging", Some(2), &alice())
        .await
        .unwrap();
    assert!(a.changed);
    let snap = s.snapshots("staging").await.unwrap()[0].name.clone();
    lifecycle::restore(&s, Some(&p), "staging", &snap, false, &alice())
        .await
        .unwrap();
    // In dev anything goes.
    lifecycle::revert(&s, Some(&p), "orders", "dev", 1, false, "", &alice())
        .await
        .unwrap();
    assert_eq!(refusals(&s).await.len(), 2);
}

#[tokio::test]
async fn operations_need_their_role() {
    let s = store().await;
    let p = project(TOPOLOGY);
    let vera = Actor::api("vera", Role::Viewer);
    let otto = Actor::api("otto", Role::Operator);
    let msg = forbidden(
        lifecycle::deploy_all(&s, Some(&p), "dev", &[flow("orders", "", "")], "m", &otto).await,
    );
    assert!(msg.contains("needs the admin role"), "{msg}");
    assert!(
        msg.contains("api:otto") && msg.contains("operator"),
        "{msg}"
    );
    lifecycle::deploy_all(
        &s,
        Some(&p),
        "dev",
        &[flow("orders", "", "")],
        "m",
        &alice(),
    )
    .await
    .unwrap();
    forbidden(lifecycle::promote(&s, &p, "orders", "dev", None, None, &vera).await);
    forbidden(lifecycle::clone_flow(&s, Some(&p), "orders", "copy", "dev", &otto).await);
    let r = refusals(&s).await;
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].detail["role"], "operator");
    assert_eq!(r[2].actor, "api:otto");
}

const APPROVALS: &str = r#"
environments:
  dev: {}
  staging: {}
  prod: {}
  sandbox: {}
groups:
  release: [bob]
promotion:
  - { from: dev, to: staging, rules: { approval: true } }
  - { from: staging, to: prod, rules: { approval: { approvers: [carol, release] } } }
  - { from: dev, to: sandbox, rules: { approval: { approvers: [alice], four_eyes: false } } }
"#;

#[tokio::test]
async fn approvals_follow_approvers_groups_and_four_eyes() {
    let s = store().await;
    let p = project(APPROVALS);
    lifecycle::deploy_all(
        &s,
        Some(&p),
        "dev",
        &[flow("orders", "", "")],
        "m",
        &alice(),
    )
    .await
    .unwrap();
    let promote = |to: &'static str, from: &'static str| {
        let (s, p) = (s.clone(), p.clone());
        async move {
            lifecycle::promote(&s, &p, "orders", from, Some(to), None, &alice())
                .await
                .unwrap()
                .promotions()[0]
                .id
        }
    };
    let decide = |id, who: Actor, approve: bool| {
        let (s, p) = (s.clone(), p.clone());
        async move {
            lifecycle::decide(
                &s,
                Some(&p),
                id,
                approve,
                &who,
                if approve { "" } else { "no" },
            )
            .await
        }
    };

    // `approval: true`: any approver, never the requester (alice, on the CLI or a token).
    let id = promote("staging", "dev").await;
    let msg = forbidden(decide(id, Actor::cli("alice"), true).await);
    assert!(msg.contains("four eyes"), "{msg}");
    forbidden(decide(id, Actor::api("alice", Role::Admin), true).await);
    let msg = forbidden(decide(id, Actor::api("otto", Role::Operator), true).await);
    assert!(msg.contains("needs the approver role"), "{msg}");
    let ok = decide(id, Actor::api("dave", Role::Approver), true)
        .await
        .unwrap();
    assert_eq!(
        (ok.state, ok.decided_by.as_deref()),
        (PromotionState::Approved, Some("api:dave"))
    );

    // Named approvers: carol, or a member of `release` (bob); dave is neither.
    let id = promote("prod", "staging").await;
    let msg = forbidden(decide(id, Actor::api("dave", Role::Approver), true).await);
    assert!(
        msg.contains("`carol`, `release`") && msg.contains("`dave`"),
        "{msg}"
    );
    forbidden(decide(id, Actor::api("dave", Role::Approver), false).await);
    let ok = decide(id, Actor::dashboard("bob", Role::Approver), true)
        .await
        .unwrap();
    assert_eq!(ok.decided_by.as_deref(), Some("dashboard:bob"));

    // `four_eyes: false`: alice, the only approver, approves her own.
    let id = promote("sandbox", "dev").await;
    assert_eq!(
        decide(id, Actor::cli("alice"), true).await.unwrap().state,
        PromotionState::Approved
    );

    // The requester may withdraw her own request, even without the approver role.
    let again = lifecycle::promote(&s, &p, "orders", "staging", Some("prod"), None, &alice())
        .await
        .unwrap()
        .promotions()[0]
        .id;
    let r = decide(again, Actor::api("alice", Role::Operator), false)
        .await
        .unwrap();
    assert_eq!(r.state, PromotionState::Rejected);
    // A decided promotion stays decided.
    assert!(matches!(
        decide(again, Actor::api("carol", Role::Approver), true).await,
        Err(LifecycleError::Store(
            StoreError::PromotionNotPending { .. }
        ))
    ));

    // Every refusal is in the audit log, with who tried what.
    let r = refusals(&s).await;
    let seen: Vec<(String, String)> = r
        .iter()
        .rev()
        .map(|e| {
            (
                e.actor.clone(),
                e.detail["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("alice".to_string(), "approve".to_string()),
            ("api:alice".into(), "approve".into()),
            ("api:otto".into(), "approve".into()),
            ("api:dave".into(), "approve".into()),
            ("api:dave".into(), "reject".into()),
        ]
    );
}

#[tokio::test]
async fn without_the_project_the_recorded_rule_decides() {
    let s = store().await;
    let p = project(APPROVALS);
    lifecycle::deploy_all(
        &s,
        Some(&p),
        "dev",
        &[flow("orders", "", "")],
        "m",
        &alice(),
    )
    .await
    .unwrap();
    lifecycle::promote(&s, &p, "orders", "dev", Some("staging"), None, &alice())
        .await
        .unwrap();
    lifecycle::decide(
        &s,
        Some(&p),
        s.promotions(None, None).await.unwrap()[0].id,
        true,
        &Actor::cli("bob"),
        "",
    )
    .await
    .unwrap();
    let id = lifecycle::promote(&s, &p, "orders", "staging", Some("prod"), None, &alice())
        .await
        .unwrap()
        .promotions()[0]
        .id;
    // A server without ferry.yaml still knows who may approve: the rule recorded with the
    // request (groups are unknown there, so only the names listed count).
    forbidden(lifecycle::decide(&s, None, id, true, &Actor::api("bob", Role::Approver), "").await);
    lifecycle::decide(&s, None, id, true, &Actor::api("carol", Role::Approver), "")
        .await
        .unwrap();
}

#[tokio::test]
async fn clones_are_drafts_until_activated_and_merge_takes_their_newest_revision() {
    let s = store().await;
    lifecycle::deploy_all(&s, None, "dev", &[flow("orders", "", "")], "m", &alice())
        .await
        .unwrap();
    let draft = lifecycle::clone_flow(&s, None, "orders", "orders-exp", "dev", &alice())
        .await
        .unwrap();
    assert_eq!(draft.number, 1);
    assert_eq!(draft.origin.as_ref().unwrap().flow, "orders");
    // Active nowhere: not listed, so not scheduled or run by name.
    let names: Vec<String> = s
        .flows("dev")
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, ["orders"]);
    assert!(
        s.active_revision("orders-exp", "dev")
            .await
            .unwrap()
            .is_none()
    );
    let clones = s
        .audit(&AuditFilter {
            action: Some("clone".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(clones.len(), 1);
    // The clone changes in another environment where it runs; in dev it is still a draft,
    // and the merge takes that newest revision.
    lifecycle::deploy_all(
        &s,
        None,
        "lab",
        &[flow("orders-exp", "web", "")],
        "m",
        &alice(),
    )
    .await
    .unwrap();
    let m = lifecycle::merge(
        &s,
        None,
        "orders-exp",
        "orders",
        "dev",
        &Resolution::default(),
        &alice(),
    )
    .await
    .unwrap();
    assert_eq!(m.source_revision, 2);
    assert_eq!(m.changes[0].path, "map.fields.note");
    assert!(
        s.active_revision("orders-exp", "dev")
            .await
            .unwrap()
            .is_none()
    );
    // Activating the draft makes it run in dev.
    let a = lifecycle::activate(&s, None, "orders-exp", "dev", None, &alice())
        .await
        .unwrap();
    assert_eq!((a.revision.number, a.previous, a.changed), (2, None, true));
    let names: Vec<String> = s
        .flows("dev")
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, ["orders", "orders-exp"]);
}

const FAN_OUT: &str = r#"
environments:
  dev: {}
  staging: {}
  internal: {}
  qa: {}
promotion:
  - { from: dev, to: staging }
  - { from: dev, to: internal, when: { labels: { internal: "true" } } }
  - { from: dev, to: qa, rules: { approval: true } }
"#;

#[tokio::test]
async fn a_promotion_reports_every_edge_and_a_waiting_revision_is_not_requested_twice() {
    let s = store().await;
    let p = project(FAN_OUT);
    lifecycle::deploy_all(
        &s,
        Some(&p),
        "dev",
        &[flow("orders", "", "team: ops")],
        "m",
        &alice(),
    )
    .await
    .unwrap();
    let r = lifecycle::promote(&s, &p, "orders", "dev", None, None, &alice())
        .await
        .unwrap();
    let edges: Vec<(&str, bool)> = r.edges.iter().map(|e| (e.to.as_str(), e.taken)).collect();
    assert_eq!(
        edges,
        [("staging", true), ("internal", false), ("qa", true)]
    );
    let internal = &r.edges[1];
    assert!(
        internal
            .reason
            .as_deref()
            .unwrap()
            .contains("no label `internal`"),
        "{internal:?}"
    );
    assert_eq!(internal.unmet[0].label, "internal");
    assert_eq!(
        r.edges[2].promotion.as_ref().unwrap().state,
        PromotionState::Pending
    );
    let waiting = r.edges[2].promotion.as_ref().unwrap().id;

    // The same revision again: qa still waits, so the request is refused naming it, and
    // nothing is written (staging is not promoted twice either).
    let before = s.promotions(None, None).await.unwrap().len();
    let err = lifecycle::promote(&s, &p, "orders", "dev", None, None, &alice())
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&waiting.to_string()), "{err}");
    assert!(matches!(
        err,
        LifecycleError::Store(StoreError::PromotionPending { .. })
    ));
    assert_eq!(s.promotions(None, None).await.unwrap().len(), before);

    // With --to, the other edges are listed as not asked for.
    let r = lifecycle::promote(&s, &p, "orders", "dev", Some("staging"), None, &alice())
        .await
        .unwrap();
    let skipped: Vec<(&str, &str)> = r
        .edges
        .iter()
        .filter(|e| !e.taken)
        .map(|e| (e.to.as_str(), e.reason.as_deref().unwrap()))
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped
            .iter()
            .any(|(to, why)| *to == "qa" && why.contains("--to staging"))
    );
}

#[tokio::test]
async fn a_restore_says_what_became_of_each_cursor() {
    let s = store().await;
    lifecycle::deploy_all(&s, None, "dev", &[flow("orders", "", "")], "m", &alice())
        .await
        .unwrap();
    s.set_cursor("orders", "dev", Some(&json!("2024-01-01")))
        .await
        .unwrap();
    s.create_snapshot("dev", "before", "alice", "")
        .await
        .unwrap();
    s.set_cursor("orders", "dev", Some(&json!("2024-06-01")))
        .await
        .unwrap();

    let r = lifecycle::restore(&s, None, "dev", "before", false, &alice())
        .await
        .unwrap();
    let c = &r.cursors[0];
    assert_eq!(
        (c.outcome, &c.before, &c.snapshot),
        (
            CursorOutcome::Kept,
            &Some(json!("2024-06-01")),
            &Some(json!("2024-01-01"))
        )
    );
    assert_eq!(
        s.cursor("orders", "dev").await.unwrap(),
        Some(json!("2024-06-01"))
    );

    let r = lifecycle::restore(&s, None, "dev", "before", true, &alice())
        .await
        .unwrap();
    assert_eq!(r.cursors[0].outcome, CursorOutcome::Restored);
    assert_eq!(
        s.cursor("orders", "dev").await.unwrap(),
        Some(json!("2024-01-01"))
    );
    let moves = s
        .audit(&AuditFilter {
            action: Some("cursor".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(moves.len(), 1);
    assert_eq!(moves[0].detail["before"], "2024-06-01");

    let r = lifecycle::restore(&s, None, "dev", "before", true, &alice())
        .await
        .unwrap();
    assert_eq!(r.cursors[0].outcome, CursorOutcome::Unchanged);
}
