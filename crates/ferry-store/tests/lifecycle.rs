//! The flow lifecycle's conformance suite: deploys of several flows at once, the activation
//! history, the audit log, snapshots, promotions with approvals and runs by revision. Each case
//! runs against SQLite (a file in a temporary directory) and PostgreSQL (a fresh schema), through
//! the same harness as `tests/conformance/`; `FERRY_TEST_PG=skip` skips PostgreSQL, loudly.
//!
//! At the end, one SQLite-only test: a state file from before the lifecycle migration keeps its
//! active revisions as activations, so they can be promoted.

#[path = "conformance/harness.rs"]
mod harness;

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use ferry_store::{
    AuditFilter, DeployItem, DeployOutcome, NewAudit, NewPromotion, NewRun, NewToken,
    PromotionState, RevisionRef, Role, RunCounts, RunStatus, StateStore, StoreError, Trigger,
};
use serde_json::{Value, json};
use uuid::Uuid;

type Store = Arc<dyn StateStore>;

macro_rules! lifecycle_conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::harness::run_case(crate::harness::sqlite().await, crate::$case).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(backend) = crate::harness::postgres(stringify!($case)).await {
                        crate::harness::run_case(backend, crate::$case).await;
                    }
                }
            )*
        }
    };
}

lifecycle_conformance!(
    deploy_records_activation_and_audit,
    deploy_many_is_all_or_nothing,
    deploy_many_refuses_bad_names_before_writing,
    unchanged_items_write_nothing,
    revisions_stay_linear_and_a_revert_is_a_new_number,
    origins_read_back_everywhere,
    activate_and_deactivate,
    concurrent_deploy_many_of_overlapping_flows,
    audit_log_filters,
    snapshots_capture_revisions_and_cursors,
    promotion_of_identical_content_reuses_the_source_revision,
    promotion_of_different_content_creates_or_reuses_a_revision,
    pending_promotion_then_approve_activates,
    pending_promotion_then_reject_leaves_the_target_unchanged,
    promoting_what_never_ran_there_is_refused,
    promotions_list_newest_first_with_filters,
    last_run_of_revision_picks_the_newest_finished_run,
    flow_names_lists_every_flow_ever_deployed,
    a_second_pending_promotion_of_a_revision_is_refused,
    drafts_are_new_flows_active_nowhere,
    tokens_are_kept_as_hashes_listed_and_revoked,
);

// ---------------------------------------------------------------------------------------------
// Helpers

fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(secs)
}

fn spec(flow: &str, hash: &str) -> String {
    format!("{{\"name\":\"{flow}\",\"v\":\"{hash}\"}}")
}

fn item(flow: &str, hash: &str) -> DeployItem {
    DeployItem {
        flow: flow.into(),
        spec: spec(flow, hash),
        hash: hash.into(),
        message: format!("ship {hash}"),
        origin: None,
    }
}

fn from(flow: &str, revision: i64) -> Option<RevisionRef> {
    Some(RevisionRef {
        flow: flow.into(),
        revision,
    })
}

async fn deploy(store: &Store, flow: &str, env: &str, hash: &str) -> DeployOutcome {
    store
        .deploy(flow, env, &spec(flow, hash), hash, "msg", "ann")
        .await
        .expect("deploy")
}

async fn active(store: &Store, flow: &str, env: &str) -> Option<i64> {
    store
        .active_revision(flow, env)
        .await
        .unwrap()
        .map(|r| r.number)
}

async fn numbers(store: &Store, flow: &str) -> Vec<i64> {
    store
        .revisions(flow)
        .await
        .unwrap()
        .iter()
        .map(|r| r.number)
        .collect()
}

/// (number, previous, action) of the activations of (flow, env), oldest first.
async fn history(store: &Store, flow: &str, env: &str) -> Vec<(i64, Option<i64>, String)> {
    store
        .activations(flow, Some(env))
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.number, a.previous, a.action))
        .collect()
}

fn audit_of(action: &str) -> AuditFilter {
    AuditFilter {
        action: Some(action.into()),
        ..AuditFilter::default()
    }
}

fn promotion(flow: &str, from: &str, to: &str, source: i64, hash: &str) -> NewPromotion {
    NewPromotion {
        id: Uuid::now_v7(),
        flow: flow.into(),
        from_env: from.into(),
        to_env: to.into(),
        source_revision: source,
        spec: spec(flow, hash),
        hash: hash.into(),
        message: format!("promote {hash}"),
        author: "ann".into(),
        pending: false,
        detail: json!({"checks": ["lint"], "diff": {"changed": 0}}),
    }
}

// ---------------------------------------------------------------------------------------------
// Deploys

pub async fn deploy_records_activation_and_audit(store: Store) {
    deploy(&store, "orders", "dev", "h1").await;
    // Unchanged content: nothing written, neither activation nor audit.
    assert!(!deploy(&store, "orders", "dev", "h1").await.created);
    let two = deploy(&store, "orders", "dev", "h2").await;
    assert_eq!(
        (two.revision.number, two.revision.origin.clone()),
        (2, None)
    );

    assert_eq!(
        history(&store, "orders", "dev").await,
        vec![(1, None, "deploy".into()), (2, Some(1), "deploy".into())]
    );
    let acts = store.activations("orders", None).await.unwrap();
    assert!(acts.iter().all(|a| a.actor == "ann" && a.env == "dev"));
    assert!(acts[0].at <= acts[1].at);

    let audit = store.audit(&audit_of("deploy")).await.unwrap();
    assert_eq!(audit.len(), 2);
    // Newest first.
    assert!(audit[0].id > audit[1].id);
    assert_eq!(audit[0].revision, Some(2));
    assert_eq!(audit[0].flow.as_deref(), Some("orders"));
    assert_eq!(audit[0].env.as_deref(), Some("dev"));
    assert_eq!(audit[0].actor, "ann");
    assert_eq!(
        audit[0].detail,
        json!({"message": "msg", "hash": "h2", "previous": 1, "origin": null})
    );
    assert_eq!(audit[1].detail["previous"], Value::Null);
}

pub async fn deploy_many_is_all_or_nothing(store: Store) {
    deploy(&store, "orders", "dev", "h1").await;

    // The second item names an origin that does not exist: the first item, already written in
    // the same transaction, is rolled back with it.
    let mut billing = item("billing", "b1");
    billing.origin = from("nope", 7);
    let err = store
        .deploy_many("dev", &[item("orders", "h2"), billing], "ann", "deploy")
        .await
        .expect_err("missing origin");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("revision 7 of flow nope"), "{err}");
    assert_eq!(numbers(&store, "orders").await, vec![1]);
    assert!(store.revisions("billing").await.unwrap().is_empty());
    assert_eq!(active(&store, "orders", "dev").await, Some(1));
    assert_eq!(active(&store, "billing", "dev").await, None);
    assert_eq!(store.flow_names().await.unwrap(), vec!["orders"]);
    assert_eq!(history(&store, "orders", "dev").await.len(), 1);
    assert_eq!(
        store.audit(&AuditFilter::default()).await.unwrap().len(),
        1,
        "only the first deploy is in the audit log"
    );

    // The same batch with a real origin goes through, in order.
    let mut billing = item("billing", "b1");
    billing.origin = from("orders", 1);
    let out = store
        .deploy_many("dev", &[item("orders", "h2"), billing], "bob", "merge")
        .await
        .unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(
        (out[0].revision.flow.as_str(), out[0].revision.number),
        ("orders", 2)
    );
    assert_eq!(
        (out[1].revision.flow.as_str(), out[1].revision.number),
        ("billing", 1)
    );
    assert!(out.iter().all(|o| o.created));
    assert_eq!(out[1].revision.origin, from("orders", 1));
    assert_eq!(out[1].revision.author, "bob");
    assert_eq!(out[1].revision.message, "ship b1");
    assert_eq!(active(&store, "billing", "dev").await, Some(1));

    let merges = store.audit(&audit_of("merge")).await.unwrap();
    assert_eq!(merges.len(), 2);
    assert_eq!(merges[0].flow.as_deref(), Some("billing"));
    assert_eq!(
        merges[0].detail,
        json!({
            "message": "ship b1",
            "hash": "b1",
            "previous": null,
            "origin": {"flow": "orders", "revision": 1},
        })
    );
    assert_eq!(merges[1].detail["previous"], 1);
    assert_eq!(
        history(&store, "billing", "dev").await,
        vec![(1, None, "merge".into())]
    );

    // An empty batch is a no-op.
    assert!(
        store
            .deploy_many("dev", &[], "ann", "deploy")
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn deploy_many_refuses_bad_names_before_writing(store: Store) {
    for (items, action) in [
        (vec![item("orders", "h1"), item("", "h1")], "deploy"),
        (vec![item("orders", "h1"), item("a\0b", "h1")], "deploy"),
        (vec![item("orders", "h1")], " "),
    ] {
        let err = store
            .deploy_many("dev", &items, "ann", action)
            .await
            .expect_err("bad input");
        assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
    }
    let err = store
        .deploy_many("", &[item("orders", "h1")], "ann", "deploy")
        .await
        .expect_err("empty env");
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
    assert!(store.flow_names().await.unwrap().is_empty());
    assert!(
        store
            .audit(&AuditFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn unchanged_items_write_nothing(store: Store) {
    store
        .deploy_many("dev", &[item("a", "h1"), item("b", "h1")], "ann", "deploy")
        .await
        .unwrap();
    let out = store
        .deploy_many("dev", &[item("a", "h1"), item("b", "h2")], "ann", "deploy")
        .await
        .unwrap();
    assert!(!out[0].created);
    assert_eq!(out[0].revision.number, 1);
    assert_eq!(out[0].revision.hash, "h1");
    assert!(out[1].created);
    assert_eq!(out[1].revision.number, 2);
    assert_eq!(numbers(&store, "a").await, vec![1]);
    assert_eq!(history(&store, "a", "dev").await.len(), 1);
    let a_audit = store
        .audit(&AuditFilter {
            flow: Some("a".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(a_audit.len(), 1);

    // Content that is active in another environment only is new here.
    let out = store
        .deploy_many("prod", &[item("a", "h1")], "ann", "deploy")
        .await
        .unwrap();
    assert!(out[0].created);
    assert_eq!(out[0].revision.number, 2);
}

pub async fn revisions_stay_linear_and_a_revert_is_a_new_number(store: Store) {
    for h in ["h1", "h2", "h3"] {
        deploy(&store, "orders", "dev", h).await;
    }
    let old = store.revision("orders", 1).await.unwrap().unwrap();
    let revert = DeployItem {
        flow: "orders".into(),
        spec: old.spec.clone(),
        hash: old.hash.clone(),
        message: "revert to 1".into(),
        origin: from("orders", 1),
    };
    let out = store
        .deploy_many("dev", &[revert], "bob", "revert")
        .await
        .unwrap();
    assert!(out[0].created);
    assert_eq!(out[0].revision.number, 4);
    assert_eq!(out[0].revision.hash, "h1");
    assert_eq!(out[0].revision.spec, old.spec);
    assert_eq!(numbers(&store, "orders").await, vec![1, 2, 3, 4]);
    assert_eq!(active(&store, "orders", "dev").await, Some(4));

    assert_eq!(
        history(&store, "orders", "dev").await,
        vec![
            (1, None, "deploy".into()),
            (2, Some(1), "deploy".into()),
            (3, Some(2), "deploy".into()),
            (4, Some(3), "revert".into()),
        ]
    );
    let last = store.activations("orders", Some("dev")).await.unwrap();
    assert_eq!(last[3].actor, "bob");

    // Another environment has its own history; `None` lists both.
    deploy(&store, "orders", "prod", "h3").await;
    assert_eq!(
        history(&store, "orders", "prod").await,
        vec![(5, None, "deploy".into())]
    );
    assert_eq!(store.activations("orders", None).await.unwrap().len(), 5);
    assert!(store.activations("nope", None).await.unwrap().is_empty());
}

pub async fn origins_read_back_everywhere(store: Store) {
    deploy(&store, "orders", "dev", "h1").await;
    let mut clone = item("orders-eu", "h1");
    clone.origin = from("orders", 1);
    store
        .deploy_many("dev", &[clone], "ann", "clone")
        .await
        .unwrap();
    let expect = from("orders", 1);
    assert_eq!(
        store
            .revision("orders-eu", 1)
            .await
            .unwrap()
            .unwrap()
            .origin,
        expect
    );
    assert_eq!(
        store
            .active_revision("orders-eu", "dev")
            .await
            .unwrap()
            .unwrap()
            .origin,
        expect
    );
    assert_eq!(
        store.revisions("orders-eu").await.unwrap()[0].origin,
        expect
    );
    let flows = store.flows("dev").await.unwrap();
    let eu = flows.iter().find(|f| f.name == "orders-eu").unwrap();
    assert_eq!(eu.active.origin, expect);
    assert_eq!(
        store.revision("orders", 1).await.unwrap().unwrap().origin,
        None
    );
    // The origin serialises for `--output json`.
    let v = serde_json::to_value(store.revision("orders-eu", 1).await.unwrap().unwrap()).unwrap();
    assert_eq!(v["origin"], json!({"flow": "orders", "revision": 1}));
}

pub async fn activate_and_deactivate(store: Store) {
    deploy(&store, "orders", "dev", "h1").await;
    deploy(&store, "orders", "dev", "h2").await;

    assert!(
        store
            .activate("orders", "dev", 1, "bob", "rollback")
            .await
            .unwrap()
    );
    assert_eq!(active(&store, "orders", "dev").await, Some(1));
    // Already active: nothing written.
    assert!(
        !store
            .activate("orders", "dev", 1, "bob", "rollback")
            .await
            .unwrap()
    );
    for (flow, number) in [("orders", 9), ("nope", 1)] {
        let err = store
            .activate(flow, "dev", number, "bob", "rollback")
            .await
            .expect_err("missing revision");
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&format!("revision {number} of flow {flow}")),
            "{err}"
        );
    }
    assert_eq!(
        history(&store, "orders", "dev").await,
        vec![
            (1, None, "deploy".into()),
            (2, Some(1), "deploy".into()),
            (1, Some(2), "rollback".into()),
        ]
    );
    let rollbacks = store.audit(&audit_of("rollback")).await.unwrap();
    assert_eq!(rollbacks.len(), 1);
    assert_eq!(rollbacks[0].actor, "bob");
    assert_eq!(rollbacks[0].revision, Some(1));
    assert_eq!(rollbacks[0].detail, json!({"previous": 2}));

    // A revision can be activated in an environment it never ran in.
    assert!(
        store
            .activate("orders", "prod", 2, "bob", "activate")
            .await
            .unwrap()
    );
    assert_eq!(
        history(&store, "orders", "prod").await,
        vec![(2, None, "activate".into())]
    );

    assert!(store.deactivate("orders", "dev", "carol").await.unwrap());
    assert_eq!(active(&store, "orders", "dev").await, None);
    assert!(store.flows("dev").await.unwrap().is_empty());
    assert!(!store.deactivate("orders", "dev", "carol").await.unwrap());
    assert!(!store.deactivate("nope", "dev", "carol").await.unwrap());
    let undeploys = store.audit(&audit_of("undeploy")).await.unwrap();
    assert_eq!(undeploys.len(), 1);
    assert_eq!(undeploys[0].revision, Some(1));
    assert_eq!(undeploys[0].actor, "carol");
    assert_eq!(undeploys[0].env.as_deref(), Some("dev"));
    // The removal is not an activation; the next activation has no previous revision.
    assert_eq!(history(&store, "orders", "dev").await.len(), 3);
    assert!(
        store
            .activate("orders", "dev", 2, "bob", "activate")
            .await
            .unwrap()
    );
    assert_eq!(
        history(&store, "orders", "dev").await.last().cloned(),
        Some((2, None, "activate".into()))
    );
    // Revisions are kept.
    assert_eq!(numbers(&store, "orders").await, vec![1, 2]);
}

pub async fn concurrent_deploy_many_of_overlapping_flows(store: Store) {
    // Batches that name the same flows in opposite orders: none deadlocks, every number is
    // used once, and each activation's `previous` is the activation before it.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let (x, y) = if i % 2 == 0 { ("a", "b") } else { ("b", "a") };
            let h = format!("h{i}");
            store
                .deploy_many("dev", &[item(x, &h), item(y, &h)], "ann", "deploy")
                .await
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("concurrent deploy_many");
    }
    for flow in ["a", "b"] {
        assert_eq!(numbers(&store, flow).await, (1..=8).collect::<Vec<_>>());
        let h = history(&store, flow, "dev").await;
        assert_eq!(h.len(), 8);
        for pair in h.windows(2) {
            assert_eq!(pair[1].1, Some(pair[0].0), "{flow}: {h:?}");
        }
        assert_eq!(active(&store, flow, "dev").await, Some(h[7].0));
    }
}

// ---------------------------------------------------------------------------------------------
// Audit log

pub async fn audit_log_filters(store: Store) {
    let entry = |action: &str, flow: Option<&str>, env: Option<&str>| NewAudit {
        actor: "ann".into(),
        action: action.into(),
        flow: flow.map(Into::into),
        env: env.map(Into::into),
        revision: flow.map(|_| 3),
        detail: json!({"why": action, "nested": {"list": [1, 2]}}),
    };
    let mut ids = Vec::new();
    for e in [
        entry("login", None, None),
        entry("deploy", Some("orders"), Some("dev")),
        entry("deploy", Some("billing"), Some("prod")),
        entry("note", Some("orders"), Some("prod")),
    ] {
        ids.push(store.record_audit(&e).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    let all = store.audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids.iter().rev().copied().collect::<Vec<_>>()
    );
    assert_eq!(all[3].action, "login");
    assert_eq!((all[3].flow.clone(), all[3].env.clone()), (None, None));
    assert_eq!(all[3].revision, None);
    assert_eq!(all[0].revision, Some(3));
    assert_eq!(
        all[0].detail,
        json!({"why": "note", "nested": {"list": [1, 2]}})
    );

    let by = |f: AuditFilter| {
        let store = store.clone();
        async move {
            store
                .audit(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.action)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        by(AuditFilter {
            flow: Some("orders".into()),
            ..AuditFilter::default()
        })
        .await,
        vec!["note", "deploy"]
    );
    assert_eq!(
        by(AuditFilter {
            env: Some("prod".into()),
            ..AuditFilter::default()
        })
        .await,
        vec!["note", "deploy"]
    );
    assert_eq!(by(audit_of("deploy")).await, vec!["deploy", "deploy"]);
    assert_eq!(
        by(AuditFilter {
            flow: Some("orders".into()),
            env: Some("prod".into()),
            action: Some("note".into()),
            ..AuditFilter::default()
        })
        .await,
        vec!["note"]
    );
    assert_eq!(
        by(AuditFilter {
            limit: 2,
            ..AuditFilter::default()
        })
        .await,
        vec!["note", "deploy"]
    );

    // `since` keeps exactly the entries recorded at or after it.
    let since = all[1].at;
    let expected: Vec<i64> = all.iter().filter(|e| e.at >= since).map(|e| e.id).collect();
    let got: Vec<i64> = store
        .audit(&AuditFilter {
            since: Some(since),
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(got, expected);
    assert!(got.len() >= 2);
    assert!(
        store
            .audit(&AuditFilter {
                since: Some(Utc::now() + Duration::days(1)),
                ..AuditFilter::default()
            })
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .audit(&AuditFilter {
                since: Some(t(0)),
                ..AuditFilter::default()
            })
            .await
            .unwrap()
            .len(),
        4
    );

    let err = store
        .record_audit(&entry("", None, None))
        .await
        .expect_err("empty action");
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
    // NUL in free text is replaced, not refused.
    let mut odd = entry("note", None, None);
    odd.actor = "a\0b".into();
    odd.detail = json!({"x": "y\0z"});
    store.record_audit(&odd).await.unwrap();
    let back = &store.audit(&AuditFilter::default()).await.unwrap()[0];
    assert_eq!(back.actor, "a\u{FFFD}b");
    assert_eq!(back.detail, json!({"x": "y\u{FFFD}z"}));
}

// ---------------------------------------------------------------------------------------------
// Snapshots

pub async fn snapshots_capture_revisions_and_cursors(store: Store) {
    deploy(&store, "orders", "prod", "h1").await;
    deploy(&store, "billing", "prod", "b1").await;
    deploy(&store, "orders", "staging", "h9").await;
    let cursor = json!({"changed_since": "2024-05-01T00:00:00Z", "page": 3});
    store
        .set_cursor("orders", "prod", Some(&cursor))
        .await
        .unwrap();

    let before = store
        .create_snapshot("prod", "before-upgrade", "ann", "friday release")
        .await
        .unwrap();
    assert_eq!(before.env, "prod");
    assert_eq!(before.name, "before-upgrade");
    assert_eq!(
        (before.actor.as_str(), before.note.as_str()),
        ("ann", "friday release")
    );
    let flows: Vec<(&str, i64, &str, Option<&Value>)> = before
        .flows
        .iter()
        .map(|f| {
            (
                f.flow.as_str(),
                f.revision,
                f.hash.as_str(),
                f.cursor.as_ref(),
            )
        })
        .collect();
    assert_eq!(
        flows,
        vec![
            ("billing", 1, "b1", None),
            ("orders", 1, "h1", Some(&cursor))
        ]
    );

    // Duplicate name in the same environment: refused, nothing written.
    let err = store
        .create_snapshot("prod", "before-upgrade", "bob", "again")
        .await
        .expect_err("duplicate");
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("before-upgrade") && msg.contains("prod"),
        "{msg}"
    );
    assert!(msg.contains("pick another name"), "{msg}");
    // Another environment may use the name.
    let staging = store
        .create_snapshot("staging", "before-upgrade", "bob", "")
        .await
        .unwrap();
    assert_eq!(staging.flows.len(), 1);
    // Bad names.
    let too_long = "x".repeat(101);
    for name in ["", "   ", "tab\there", too_long.as_str()] {
        let err = store
            .create_snapshot("prod", name, "ann", "")
            .await
            .expect_err("bad name");
        assert!(
            matches!(err, StoreError::InvalidInput { .. }),
            "{name:?}: {err:?}"
        );
    }
    let longest = "é".repeat(100);
    store
        .create_snapshot("prod", &longest, "ann", "")
        .await
        .expect("100 characters are allowed");

    // Later changes do not touch the snapshot.
    deploy(&store, "orders", "prod", "h2").await;
    store.set_cursor("orders", "prod", None).await.unwrap();
    let after = store
        .create_snapshot("prod", "after", "ann", "")
        .await
        .unwrap();
    // orders: 1 in prod, 2 in staging, 3 in prod.
    assert_eq!(after.flows[1].revision, 3);
    assert_eq!(after.flows[1].cursor, None);

    let list = store.snapshots("prod").await.unwrap();
    assert_eq!(
        list.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        vec!["after", longest.as_str(), "before-upgrade"]
    );
    assert_eq!(list[2], before);
    assert_eq!(
        store
            .snapshot("prod", "before-upgrade")
            .await
            .unwrap()
            .as_ref(),
        Some(&before)
    );
    assert!(store.snapshot("prod", "nope").await.unwrap().is_none());
    assert!(store.snapshots("nowhere").await.unwrap().is_empty());

    // An environment without flows gives an empty snapshot.
    let empty = store
        .create_snapshot("nowhere", "empty", "ann", "")
        .await
        .unwrap();
    assert!(empty.flows.is_empty());

    let audit = store.audit(&audit_of("snapshot")).await.unwrap();
    assert_eq!(audit.len(), 5);
    let first = audit.last().unwrap();
    assert_eq!(first.env.as_deref(), Some("prod"));
    assert_eq!(first.actor, "ann");
    assert_eq!(first.detail, json!({"name": "before-upgrade", "flows": 2}));
}

// ---------------------------------------------------------------------------------------------
// Promotions

pub async fn promotion_of_identical_content_reuses_the_source_revision(store: Store) {
    deploy(&store, "orders", "staging", "h1").await;
    deploy(&store, "orders", "staging", "h2").await;
    let req = promotion("orders", "staging", "prod", 2, "h2");
    let p = store.create_promotion(&req).await.unwrap();
    assert_eq!(p.id, req.id);
    assert_eq!(
        (p.source_revision, p.revision, p.state),
        (2, 2, PromotionState::Active)
    );
    assert_eq!(p.requested_by, "ann");
    assert_eq!(p.decided_by.as_deref(), Some("ann"));
    assert_eq!(p.decided_at, Some(p.created_at));
    assert_eq!(p.reason, None);
    assert_eq!(p.detail, req.detail);
    assert_eq!(numbers(&store, "orders").await, vec![1, 2]);
    assert_eq!(active(&store, "orders", "prod").await, Some(2));
    assert_eq!(
        history(&store, "orders", "prod").await,
        vec![(2, None, "promote".into())]
    );
    assert_eq!(store.promotion(p.id).await.unwrap(), Some(p.clone()));

    let audit = store.audit(&audit_of("promote")).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].env.as_deref(), Some("prod"));
    assert_eq!(audit[0].revision, Some(2));
    let d = &audit[0].detail;
    assert_eq!(d["id"], json!(p.id));
    assert_eq!(
        (d["from"].clone(), d["to"].clone()),
        (json!("staging"), json!("prod"))
    );
    assert_eq!(
        (d["source_revision"].clone(), d["revision"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(d["state"], "active");

    // Promoting what already runs there: recorded, but no new activation.
    let again = store
        .create_promotion(&promotion("orders", "staging", "prod", 2, "h2"))
        .await
        .unwrap();
    assert_eq!((again.revision, again.state), (2, PromotionState::Active));
    assert_eq!(history(&store, "orders", "prod").await.len(), 1);
    assert_eq!(store.audit(&audit_of("promote")).await.unwrap().len(), 2);
}

pub async fn promotion_of_different_content_creates_or_reuses_a_revision(store: Store) {
    deploy(&store, "orders", "staging", "h1").await;
    let mut req = promotion("orders", "staging", "prod", 1, "h1-prod");
    req.author = "bob".into();
    let p = store.create_promotion(&req).await.unwrap();
    assert_eq!((p.source_revision, p.revision), (1, 2));
    let made = store.revision("orders", 2).await.unwrap().unwrap();
    assert_eq!(made.hash, "h1-prod");
    assert_eq!(made.spec, spec("orders", "h1-prod"));
    assert_eq!(made.message, "promote h1-prod");
    assert_eq!(made.author, "bob");
    assert_eq!(made.origin, None);
    assert_eq!(active(&store, "orders", "prod").await, Some(2));
    assert_eq!(active(&store, "orders", "staging").await, Some(1));
    assert_eq!(
        store.audit(&audit_of("promote")).await.unwrap()[0].detail["created_revision"],
        true
    );

    // The same promoted content again, into another environment: the existing revision is
    // reused (the newest one with that hash).
    let p2 = store
        .create_promotion(&promotion("orders", "staging", "eu-prod", 1, "h1-prod"))
        .await
        .unwrap();
    assert_eq!(p2.revision, 2);
    assert_eq!(numbers(&store, "orders").await, vec![1, 2]);
    assert_eq!(active(&store, "orders", "eu-prod").await, Some(2));
}

pub async fn pending_promotion_then_approve_activates(store: Store) {
    deploy(&store, "orders", "staging", "h1").await;
    deploy(&store, "orders", "prod", "h0").await; // revision 2 in prod
    let mut req = promotion("orders", "staging", "prod", 1, "h1");
    req.pending = true;
    let p = store.create_promotion(&req).await.unwrap();
    assert_eq!(p.state, PromotionState::Pending);
    assert_eq!((p.decided_by.clone(), p.decided_at), (None, None));
    assert_eq!(active(&store, "orders", "prod").await, Some(2));
    assert_eq!(history(&store, "orders", "prod").await.len(), 1);
    assert_eq!(
        store.audit(&audit_of("promote")).await.unwrap()[0].detail["state"],
        "pending"
    );

    let approved = store
        .decide_promotion(p.id, true, "carol", "")
        .await
        .unwrap();
    assert_eq!(approved.state, PromotionState::Approved);
    assert_eq!(approved.decided_by.as_deref(), Some("carol"));
    assert!(approved.decided_at.is_some());
    assert_eq!(approved.reason, None);
    assert_eq!(store.promotion(p.id).await.unwrap(), Some(approved.clone()));
    assert_eq!(active(&store, "orders", "prod").await, Some(1));
    let acts = store.activations("orders", Some("prod")).await.unwrap();
    let last = acts.last().unwrap();
    assert_eq!(
        (
            last.number,
            last.previous,
            last.action.as_str(),
            last.actor.as_str()
        ),
        (1, Some(2), "approve", "carol")
    );
    let audit = store.audit(&audit_of("approve")).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].actor, "carol");
    assert_eq!(audit[0].revision, Some(1));
    assert_eq!(audit[0].detail["id"], json!(p.id));

    // Deciding twice is refused, nothing written.
    for approve in [true, false] {
        let err = store
            .decide_promotion(p.id, approve, "dave", "changed my mind")
            .await
            .expect_err("decided twice");
        assert!(
            matches!(
                err,
                StoreError::PromotionNotPending {
                    state: PromotionState::Approved,
                    ..
                }
            ),
            "{err:?}"
        );
    }
    assert_eq!(store.promotion(p.id).await.unwrap(), Some(approved));
    assert_eq!(history(&store, "orders", "prod").await.len(), 2);
}

pub async fn pending_promotion_then_reject_leaves_the_target_unchanged(store: Store) {
    deploy(&store, "orders", "prod", "h1").await;
    deploy(&store, "orders", "staging", "h2").await;
    let mut req = promotion("orders", "staging", "prod", 2, "h2");
    req.pending = true;
    let p = store.create_promotion(&req).await.unwrap();

    let err = store
        .decide_promotion(p.id, false, "carol", "  ")
        .await
        .expect_err("no reason");
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
    assert_eq!(
        store.promotion(p.id).await.unwrap().unwrap().state,
        PromotionState::Pending
    );

    let rejected = store
        .decide_promotion(p.id, false, "carol", "breaks the EU tax rule")
        .await
        .unwrap();
    assert_eq!(rejected.state, PromotionState::Rejected);
    assert_eq!(rejected.reason.as_deref(), Some("breaks the EU tax rule"));
    assert_eq!(rejected.decided_by.as_deref(), Some("carol"));
    assert_eq!(store.promotion(p.id).await.unwrap(), Some(rejected.clone()));
    assert_eq!(active(&store, "orders", "prod").await, Some(1));
    assert_eq!(
        history(&store, "orders", "prod").await,
        vec![(1, None, "deploy".into())]
    );
    let audit = store.audit(&audit_of("reject")).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].detail["reason"], "breaks the EU tax rule");

    let err = store
        .decide_promotion(p.id, true, "dave", "")
        .await
        .expect_err("decided twice");
    assert!(
        matches!(
            err,
            StoreError::PromotionNotPending {
                state: PromotionState::Rejected,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("not pending"), "{err}");
    assert_eq!(active(&store, "orders", "prod").await, Some(1));

    let unknown = Uuid::now_v7();
    let err = store
        .decide_promotion(unknown, true, "dave", "")
        .await
        .expect_err("unknown");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert!(store.promotion(unknown).await.unwrap().is_none());
}

pub async fn promoting_what_never_ran_there_is_refused(store: Store) {
    deploy(&store, "orders", "dev", "h1").await;
    deploy(&store, "orders", "staging", "h2").await;

    // Revision 1 ran in dev, never in staging.
    let err = store
        .create_promotion(&promotion("orders", "staging", "prod", 1, "h1"))
        .await
        .expect_err("never active in staging");
    match &err {
        StoreError::NeverActive {
            flow,
            revision,
            env,
        } => {
            assert_eq!(
                (flow.as_str(), *revision, env.as_str()),
                ("orders", 1, "staging")
            );
        }
        other => panic!("expected NeverActive, got {other:?}"),
    }
    assert!(err.to_string().contains("cannot be promoted"), "{err}");

    // A revision that was active once (and no longer is) may be promoted.
    deploy(&store, "orders", "dev", "h3").await;
    store
        .create_promotion(&promotion("orders", "dev", "qa", 1, "h1"))
        .await
        .expect("revision 1 ran in dev");

    // A revision that does not exist; a flow that does not exist; one environment.
    for (flow, source) in [("orders", 9), ("nope", 1)] {
        let err = store
            .create_promotion(&promotion(flow, "dev", "prod", source, "h1"))
            .await
            .expect_err("missing revision");
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    }
    let err = store
        .create_promotion(&promotion("orders", "dev", "dev", 1, "h1"))
        .await
        .expect_err("same env");
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");

    // Refusals wrote nothing.
    assert_eq!(store.promotions(None, None).await.unwrap().len(), 1);
    assert_eq!(active(&store, "orders", "prod").await, None);
    assert_eq!(numbers(&store, "orders").await, vec![1, 2, 3]);
    assert_eq!(store.audit(&audit_of("promote")).await.unwrap().len(), 1);
}

pub async fn promotions_list_newest_first_with_filters(store: Store) {
    deploy(&store, "orders", "staging", "h1").await;
    deploy(&store, "billing", "staging", "b1").await;
    let mut ids = Vec::new();
    for (flow, pending) in [("orders", true), ("billing", false), ("orders", false)] {
        let mut req = promotion(
            flow,
            "staging",
            "prod",
            1,
            if flow == "orders" { "h1" } else { "b1" },
        );
        req.pending = pending;
        ids.push(store.create_promotion(&req).await.unwrap().id);
    }
    let all: Vec<Uuid> = store
        .promotions(None, None)
        .await
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(all, vec![ids[2], ids[1], ids[0]]);
    let orders: Vec<Uuid> = store
        .promotions(Some("orders"), None)
        .await
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(orders, vec![ids[2], ids[0]]);
    let pending = store
        .promotions(None, Some(PromotionState::Pending))
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, ids[0]);
    assert!(
        store
            .promotions(Some("billing"), Some(PromotionState::Pending))
            .await
            .unwrap()
            .is_empty()
    );
    // `--output json` shape.
    let v = serde_json::to_value(&pending[0]).unwrap();
    assert_eq!(v["state"], "pending");
    assert_eq!(v["from_env"], "staging");
}

// ---------------------------------------------------------------------------------------------
// Runs by revision, flow names

pub async fn last_run_of_revision_picks_the_newest_finished_run(store: Store) {
    let run = |env: &str, revision: i64, secs: i64, cursor: i64| NewRun {
        id: Uuid::now_v7(),
        flow: "orders".into(),
        env: env.into(),
        revision,
        hash: format!("h{revision}"),
        trigger: Trigger::Schedule,
        cursor_before: Some(json!({"n": cursor})),
        started_at: t(secs),
    };
    let finish = |id: Uuid, status: RunStatus, cursor: i64| {
        let store = store.clone();
        async move {
            store
                .finish_run(
                    id,
                    status,
                    &RunCounts::default(),
                    Some(&json!({"n": cursor})),
                    None,
                )
                .await
                .unwrap();
        }
    };
    // Revision 1 in dev: succeeded at 0, failed at 10 (the newest finished), still running at 20.
    let r0 = run("dev", 1, 0, 0);
    let r10 = run("dev", 1, 10, 1);
    let r20 = run("dev", 1, 20, 2);
    // Newer runs of another revision and of another environment do not count.
    let r30 = run("dev", 2, 30, 3);
    let r40 = run("prod", 1, 40, 4);
    // Created out of start order: the start time decides, not the insertion.
    for r in [&r10, &r0, &r20, &r30, &r40] {
        store.create_run(r).await.unwrap();
    }
    finish(r0.id, RunStatus::Succeeded, 1).await;
    finish(r10.id, RunStatus::Failed, 2).await;
    finish(r30.id, RunStatus::Succeeded, 4).await;
    finish(r40.id, RunStatus::Incomplete, 5).await;

    let last = store
        .last_run_of_revision("orders", "dev", 1)
        .await
        .unwrap()
        .expect("a finished run");
    assert_eq!(last.id, r10.id);
    assert_eq!(last.status, RunStatus::Failed);
    assert_eq!(last.cursor_after, Some(json!({"n": 2})));
    assert_eq!(
        store
            .last_run_of_revision("orders", "prod", 1)
            .await
            .unwrap()
            .map(|r| r.id),
        Some(r40.id)
    );
    assert!(
        store
            .last_run_of_revision("orders", "dev", 3)
            .await
            .unwrap()
            .is_none()
    );
    // Only running runs: none.
    let lone = run("qa", 1, 50, 6);
    store.create_run(&lone).await.unwrap();
    assert!(
        store
            .last_run_of_revision("orders", "qa", 1)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn flow_names_lists_every_flow_ever_deployed(store: Store) {
    assert!(store.flow_names().await.unwrap().is_empty());
    deploy(&store, "billing", "dev", "h1").await;
    deploy(&store, "Zeta", "prod", "h1").await;
    deploy(&store, "apple", "dev", "h1").await;
    deploy(&store, "billing", "prod", "h2").await;
    store.deactivate("apple", "dev", "ann").await.unwrap();
    // Byte order on every backend: upper case before lower case.
    assert_eq!(
        store.flow_names().await.unwrap(),
        vec!["Zeta", "apple", "billing"]
    );
}

// ---------------------------------------------------------------------------------------------
// Governance: one pending promotion per revision and target, drafts, named tokens

pub async fn a_second_pending_promotion_of_a_revision_is_refused(store: Store) {
    deploy(&store, "orders", "staging", "h1").await;
    let mut req = promotion("orders", "staging", "prod", 1, "h1");
    req.pending = true;
    let first = store.create_promotion(&req).await.unwrap();
    let audits = store.audit(&audit_of("promote")).await.unwrap().len();
    let mut again = promotion("orders", "staging", "prod", 1, "h1");
    again.pending = true;
    let err = store.create_promotion(&again).await.unwrap_err();
    match &err {
        StoreError::PromotionPending {
            pending,
            to_env,
            source_revision,
            ..
        } => assert_eq!(
            (*pending, to_env.as_str(), *source_revision),
            (first.id, "prod", 1)
        ),
        other => panic!("expected PromotionPending, got {other:?}"),
    }
    assert!(err.to_string().contains(&first.id.to_string()), "{err}");
    assert!(!err.is_transient());
    assert_eq!(newest(&store).await, first.id);
    assert_eq!(
        store.promotions(Some("orders"), None).await.unwrap().len(),
        1
    );
    assert_eq!(
        store.audit(&audit_of("promote")).await.unwrap().len(),
        audits
    );
    // One that goes live at once (an edge without approval) does not wait, so it is no
    // duplicate.
    let live = store
        .create_promotion(&promotion("orders", "staging", "prod", 1, "h1"))
        .await
        .unwrap();
    assert_eq!(live.state, PromotionState::Active);
    // Another target, or the same target once the first is decided, is fine.
    let mut elsewhere = promotion("orders", "staging", "prod-us", 1, "h1");
    elsewhere.pending = true;
    store.create_promotion(&elsewhere).await.unwrap();
    store
        .decide_promotion(first.id, false, "carol", "not now")
        .await
        .unwrap();
    let mut later = promotion("orders", "staging", "prod", 1, "h1");
    later.pending = true;
    assert_eq!(
        store.create_promotion(&later).await.unwrap().state,
        PromotionState::Pending
    );
}

/// The id of the newest promotion.
async fn newest(store: &Store) -> Uuid {
    store.promotions(None, None).await.unwrap()[0].id
}

pub async fn drafts_are_new_flows_active_nowhere(store: Store) {
    deploy(&store, "orders", "dev", "h1").await;
    let mut it = item("orders-exp", "h1-renamed");
    it.origin = from("orders", 1);
    let draft = store
        .create_draft("dev", &it, "ann", "clone")
        .await
        .unwrap();
    assert_eq!(
        (draft.number, draft.origin.clone(), draft.author.as_str()),
        (1, from("orders", 1), "ann")
    );
    assert_eq!(numbers(&store, "orders-exp").await, vec![1]);
    assert_eq!(store.revision("orders-exp", 1).await.unwrap(), Some(draft));
    // Active nowhere: not listed, no activation.
    assert_eq!(active(&store, "orders-exp", "dev").await, None);
    let names: Vec<String> = store
        .flows("dev")
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, vec!["orders"]);
    assert!(
        store
            .activations("orders-exp", None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .flow_names()
            .await
            .unwrap()
            .contains(&"orders-exp".to_string())
    );
    let audit = store.audit(&audit_of("clone")).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (
            audit[0].flow.as_deref(),
            audit[0].env.as_deref(),
            audit[0].revision
        ),
        (Some("orders-exp"), Some("dev"), Some(1))
    );
    assert_eq!(audit[0].detail["origin"]["flow"], "orders");
    assert_eq!(audit[0].detail["previous"], Value::Null);

    // A name in use (a draft or a deployed flow) is refused; nothing is written.
    for name in ["orders-exp", "orders"] {
        let err = store
            .create_draft("dev", &item(name, "h9"), "ann", "clone")
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    }
    assert_eq!(numbers(&store, "orders").await, vec![1]);
    // A missing origin, or a bad name, writes nothing either.
    let mut orphan = item("orphan", "h1");
    orphan.origin = from("orders", 9);
    let err = store
        .create_draft("dev", &orphan, "ann", "clone")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    let err = store
        .create_draft("dev", &item("a\0b", "h1"), "ann", "clone")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
    assert!(store.revisions("orphan").await.unwrap().is_empty());
    assert_eq!(store.audit(&audit_of("clone")).await.unwrap().len(), 1);
    // Deploying a draft makes it active: revision 2.
    let d = deploy(&store, "orders-exp", "dev", "h2").await;
    assert_eq!(d.revision.number, 2);
}

fn token(name: &str, role: Role, hash: &str) -> NewToken {
    NewToken {
        name: name.into(),
        role,
        hash: hash.into(),
        actor: "alice".into(),
    }
}

pub async fn tokens_are_kept_as_hashes_listed_and_revoked(store: Store) {
    let h = |c: char| c.to_string().repeat(64);
    let ci = store
        .create_token(&token("ci-bot", Role::Operator, &h('a')))
        .await
        .unwrap();
    assert_eq!(
        (ci.role, ci.created_by.as_str(), ci.last_used_at),
        (Role::Operator, "alice", None)
    );
    store
        .create_token(&token("bob", Role::Approver, &h('b')))
        .await
        .unwrap();
    let list = store.tokens().await.unwrap();
    let names: Vec<(&str, Role, &str)> = list
        .iter()
        .map(|t| (t.name.as_str(), t.role, t.hash.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("bob", Role::Approver, h('b').as_str()),
            ("ci-bot", Role::Operator, h('a').as_str())
        ]
    );
    assert!(list[1].created_at <= Utc::now());
    // Listings never print the hash.
    let v = serde_json::to_value(&list[0]).unwrap();
    assert!(v.get("hash").is_none(), "{v}");
    assert_eq!(v["role"], "approver");

    // A name or a hash in use, a bad name, a token in clear: refused, nothing written.
    for (t, what) in [
        (token("bob", Role::Viewer, &h('c')), "name"),
        (token("carol", Role::Viewer, &h('b')), "hash"),
    ] {
        let err = store.create_token(&t).await.unwrap_err();
        assert!(
            matches!(err, StoreError::AlreadyExists { .. }),
            "{what}: {err:?}"
        );
    }
    for t in [
        token("Carol", Role::Viewer, &h('c')),
        token("carol", Role::Viewer, "my-secret-token"),
    ] {
        let err = store.create_token(&t).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
    }
    assert_eq!(store.tokens().await.unwrap().len(), 2);
    let created = store.audit(&audit_of("token_create")).await.unwrap();
    assert_eq!(created.len(), 2);
    assert_eq!(created[0].actor, "alice");
    assert_eq!(
        created[0].detail,
        json!({"name": "bob", "role": "approver"})
    );

    // Last use.
    store.mark_token_used("bob").await.unwrap();
    store.mark_token_used("nobody").await.unwrap();
    let bob = store.tokens().await.unwrap().remove(0);
    assert!(bob.last_used_at.is_some());

    // Revoke: gone, audited; twice is false.
    assert!(store.revoke_token("bob", "dave").await.unwrap());
    assert!(!store.revoke_token("bob", "dave").await.unwrap());
    let left: Vec<String> = store
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(left, vec!["ci-bot"]);
    let revoked = store.audit(&audit_of("token_revoke")).await.unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(
        (revoked[0].actor.as_str(), &revoked[0].detail),
        ("dave", &json!({"name": "bob", "role": "approver"}))
    );
    // The name can be used again after a revocation.
    store
        .create_token(&token("bob", Role::Viewer, &h('d')))
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Upgrade (SQLite)

/// A state file migrated to schema 2 with a flow running in two environments: after the
/// lifecycle migration, the running revisions count as activations and can be promoted.
#[tokio::test]
async fn an_upgraded_sqlite_file_can_promote_what_was_running() {
    use sqlx::{Connection, SqliteConnection};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.db");
    std::fs::File::create(&path).unwrap();
    let migrations = [
        (
            1,
            "initial",
            include_str!("../src/sqlite/migrations/0001_initial.sql"),
        ),
        (
            2,
            "dead_letter_edits",
            include_str!("../src/sqlite/migrations/0002_dead_letter_edits.sql"),
        ),
    ];
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE ferry_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
             checksum TEXT NOT NULL, applied_at TEXT NOT NULL);",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    for (version, name, sql) in migrations {
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
        sqlx::query("INSERT INTO ferry_migrations VALUES (?, ?, ?, '2024-01-01T00:00:00.000Z')")
            .bind(version)
            .bind(name)
            .bind(ferry_spec::canonical::content_hash(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    sqlx::raw_sql(
        "INSERT INTO flows VALUES ('orders', '2024-01-01T00:00:00.000Z');
         INSERT INTO revisions VALUES ('orders', 1, 'h1', '{}', 'm', 'ann', '2024-01-01T00:00:00.000Z');
         INSERT INTO revisions VALUES ('orders', 2, 'h2', '{}', 'm', 'ann', '2024-01-02T00:00:00.000Z');
         INSERT INTO active_revisions VALUES ('orders', 'prod', 1, '2024-01-01T00:00:00.000Z');
         INSERT INTO active_revisions VALUES ('orders', 'staging', 2, '2024-01-02T00:00:00.000Z');",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let store = ferry_store::open(path.to_str().unwrap()).await.unwrap();
    let revision = store.revision("orders", 2).await.unwrap().unwrap();
    assert_eq!(revision.origin, None);
    let acts = store.activations("orders", None).await.unwrap();
    assert_eq!(
        acts.iter()
            .map(|a| (a.env.as_str(), a.number, a.previous, a.action.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("prod", 1, None, "migrate"),
            ("staging", 2, None, "migrate")
        ]
    );
    assert_eq!(acts[1].at, t(86_400));
    let p = store
        .create_promotion(&promotion("orders", "staging", "prod", 2, "h2"))
        .await
        .unwrap();
    assert_eq!((p.revision, p.state), (2, PromotionState::Active));
    assert_eq!(
        history(&store, "orders", "prod").await,
        vec![(1, None, "migrate".into()), (2, Some(1), "promote".into())]
    );
    // The store works as a fresh one from here: linear numbers continue.
    assert_eq!(
        deploy(&store, "orders", "prod", "h3").await.revision.number,
        3
    );
}
