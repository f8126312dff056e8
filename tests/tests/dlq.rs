//! The dead-letter queue end to end: a real flow against the sandbox over 127.0.0.1 with real
//! SQLite state; entries inspected, edited, replayed and discarded through the library and the
//! `ferry dlq` commands of the real binary.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ferry_engine::{
    EntryOutcome, ReplayError, ReplayOptions, ReplayReport, ReplayRequest, Selection, SetField,
};
use ferry_sandbox::SinkFaults;
use ferry_store::{DeadLetter, DlqAction, DlqFilter, DlqState, RunStatus, Stage, Trigger};
use serde_json::{Value, json};
use uuid::Uuid;

use common::{World, expected_mapping, ferry, json_of, world};

const LIMIT: Duration = Duration::from_secs(120);

/// The example flow without its test cases (they describe the example's own mapping).
fn example_without_tests() -> String {
    let text = ferry_e2e::example_flow();
    match text.find("\ntests:") {
        Some(i) => text[..i + 1].to_string(),
        None => text,
    }
}

/// A flow whose map fails for drafts: the filter no longer drops them, and `status` is required
/// but has no value for `draft`. `fixed` adds a default, so drafts map too.
fn status_flow(fixed: bool) -> String {
    let text = example_without_tests().replace("  filter: \"@.state != 'draft'\"\n", "");
    let field = if fixed {
        "    status: { from: \"$.state\", lookup: { paid: paid, shipped: shipped }, default: open, required: true }\n"
    } else {
        "    status: { from: \"$.state\", lookup: { paid: paid, shipped: shipped }, required: true }\n"
    };
    let out = text.replace(
        "    channel: { const: \"webshop\" }\n",
        &format!("    channel: {{ const: \"webshop\" }}\n{field}"),
    );
    assert_ne!(out, text, "the example flow changed shape");
    out
}

fn pending_filter(w: &World) -> DlqFilter {
    DlqFilter {
        flow: Some(w.flow.flow.name.clone()),
        env: Some("test".into()),
        state: Some(DlqState::Pending),
        limit: 100_000,
        ..DlqFilter::default()
    }
}

async fn entries(w: &World, state: Option<DlqState>) -> Vec<DeadLetter> {
    w.store
        .dead_letters(&DlqFilter {
            state,
            ..pending_filter(w)
        })
        .await
        .expect("dead letters")
}

async fn replay(w: &World, selection: Selection, revision: Option<i64>) -> ReplayReport {
    let req = ReplayRequest {
        flow: w.flow.flow.name.clone(),
        env: w.env.clone(),
        selection,
        revision,
        actor: "e2e-operator".into(),
    };
    tokio::time::timeout(
        LIMIT,
        ferry_engine::replay(w.store.clone(), req, ReplayOptions::default()),
    )
    .await
    .expect("replay finishes within 2 minutes")
    .expect("replay runs")
}

/// What the sink applied, by source id: (body, key, times applied).
fn applied_by_id(w: &World) -> HashMap<u64, (Value, String, u32)> {
    w.sandbox
        .sink()
        .applied()
        .into_iter()
        .map(|a| {
            let r = a.body["order_ref"].as_str().expect("order_ref in body");
            let id: u64 = r.trim_start_matches("A-").parse().expect("numeric ref");
            (id, (a.body, a.key, a.times_applied))
        })
        .collect()
}

fn source_id(e: &DeadLetter) -> u64 {
    e.source_record["id"].as_u64().expect("source id")
}

fn key_of(src: &Value) -> String {
    format!(
        "order-{}-{}",
        src["id"],
        src["changed_at"].as_str().expect("changed_at")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_records_are_complete_in_the_dlq_and_replay_delivers_each_once() {
    let w = world(3000, None).await;
    w.sandbox.sink().set_faults(SinkFaults {
        reject_every_nth: Some(97),
        reject_status: 422,
        ..SinkFaults::default()
    });
    let run = w.run().await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);

    let expected: HashSet<u64> = (1..=3000u64)
        .filter(|id| id % 97 == 0)
        .filter(|id| w.sandbox.source().record(*id).unwrap()["state"] != "draft")
        .collect();
    assert!(expected.len() > 20, "{}", expected.len());
    assert_eq!(run.counts.dead_lettered, expected.len() as u64);
    assert_eq!(
        run.counts.fetched,
        run.counts.delivered + run.counts.filtered + run.counts.dead_lettered
    );
    let applied = applied_by_id(&w);
    assert!(expected.iter().all(|id| !applied.contains_key(id)));
    assert_eq!(applied.len() as u64, run.counts.delivered);

    // The DLQ holds exactly the rejected records, each complete.
    let dlq = entries(&w, None).await;
    let ids: HashSet<u64> = dlq.iter().map(source_id).collect();
    assert_eq!(ids, expected);
    assert_eq!(dlq.len(), expected.len(), "one entry per record");
    for e in &dlq {
        let src = w.sandbox.source().record(source_id(e)).unwrap();
        let key = key_of(&src);
        assert_eq!(e.source_record, src);
        assert_eq!(e.mapped_record, expected_mapping(&src));
        assert_eq!(e.edited_record, None);
        assert_eq!((e.run_id, e.revision), (run.id, w.revision));
        assert_eq!(e.env, "test");
        assert_eq!(e.key.as_deref(), Some(key.as_str()));
        assert_eq!(e.stage, Stage::Deliver);
        assert_eq!(e.error_class, "rejected");
        assert!(e.error.contains("HTTP 422"), "{}", e.error);
        assert!(
            e.error.contains("rejected permanently"),
            "the error says what the destination said: {}",
            e.error
        );
        assert!(
            !e.error.contains("idempotency key"),
            "a rejection of the record is not blamed on its key: {}",
            e.error
        );
        assert_eq!(e.attempts.len(), 1, "a permanent rejection is not retried");
        assert_eq!(e.attempts[0].status, Some(422));
        assert!(e.attempts[0].at >= run.started_at);
        assert_eq!(e.state, DlqState::Pending);
    }

    // The destination is fixed; replay everything of the flow.
    w.sandbox.sink().set_faults(SinkFaults::default());
    let report = replay(&w, Selection::AllPending, None).await;
    let rr = report.run.clone().expect("a replay run");
    assert_eq!(rr.trigger, Trigger::Replay);
    assert_eq!(rr.revision, w.revision);
    assert_eq!(rr.hash, w.flow.hash);
    assert_eq!(rr.status, RunStatus::Succeeded, "{:?}", rr.error);
    assert_eq!(rr.counts.fetched, expected.len() as u64);
    assert_eq!(rr.counts.delivered, expected.len() as u64);
    assert_eq!(rr.counts.fetched, rr.counts.settled());
    assert_eq!(report.still_pending(), 0);
    assert!(
        report
            .entries
            .iter()
            .all(|e| e.outcome == EntryOutcome::Delivered)
    );

    // Every record applied exactly once, with the original key.
    let applied = applied_by_id(&w);
    assert_eq!(
        applied.len() as u64,
        run.counts.delivered + expected.len() as u64
    );
    assert!(
        applied.values().all(|(_, _, n)| *n == 1),
        "a duplicate effect"
    );
    for id in &expected {
        let src = w.sandbox.source().record(*id).unwrap();
        let (body, key, _) = &applied[id];
        assert_eq!(Some(body), expected_mapping(&src).as_ref());
        assert_eq!(*key, key_of(&src));
    }
    let hits = w
        .store
        .ledger_lookup(
            &w.flow.flow.name,
            "test",
            &expected
                .iter()
                .map(|id| key_of(&w.sandbox.source().record(*id).unwrap()))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    assert_eq!(hits.len(), expected.len());
    assert!(hits.values().all(|h| h.run_id == rr.id));

    // Entries are replayed, with who and which run, and nothing was removed.
    assert!(entries(&w, Some(DlqState::Pending)).await.is_empty());
    let done = entries(&w, Some(DlqState::Replayed)).await;
    assert_eq!(done.len(), expected.len());
    for e in &done {
        assert!(
            e.state_note
                .as_deref()
                .is_some_and(|n| n.contains(&rr.id.to_string())),
            "{:?}",
            e.state_note
        );
        let h = w.store.dead_letter_history(e.id).await.unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].action, DlqAction::Replay);
        assert_eq!(
            (h[0].from, h[0].to),
            (DlqState::Pending, DlqState::Replayed)
        );
        assert_eq!(h[0].run_id, Some(rr.id));
        assert_eq!(h[0].actor.as_deref(), Some("e2e-operator"));
    }

    // A second replay finds nothing and records no run.
    let runs_before = w.store.runs(None, 100).await.unwrap().len();
    let again = replay(&w, Selection::AllPending, None).await;
    assert!(again.run.is_none());
    assert!(again.entries.is_empty());
    assert_eq!(w.store.runs(None, 100).await.unwrap().len(), runs_before);
    assert_eq!(
        w.sandbox.sink().stats().applied,
        run.counts.delivered + expected.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_failures_wait_for_a_fixed_revision() {
    let w = world(1000, Some(&status_flow(false))).await;
    let run = w.run().await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    let drafts: HashSet<u64> = (1..=1000u64)
        .filter(|id| w.sandbox.source().record(*id).unwrap()["state"] == "draft")
        .collect();
    assert!(!drafts.is_empty());
    assert_eq!(run.counts.dead_lettered, drafts.len() as u64);
    let dlq = entries(&w, None).await;
    assert_eq!(dlq.iter().map(source_id).collect::<HashSet<_>>(), drafts);
    for e in &dlq {
        assert_eq!(e.stage, Stage::Map);
        assert_eq!(e.mapped_record, None);
        assert!(e.error.contains("status"), "{}", e.error);
        assert!(e.attempts.is_empty());
    }

    // Revision 2 gives drafts a status.
    let fixed = ferry_spec::load_str(&status_flow(true), None).expect("fixed flow");
    let d = ferry_engine::deploy(&w.store, &fixed, "test", "default status", "e2e")
        .await
        .unwrap();
    assert_eq!(d.revision.number, 2);

    // Replaying with revision 1 fails the same way: still pending, no second entry.
    let old = replay(&w, Selection::AllPending, Some(1)).await;
    let old_run = old.run.clone().unwrap();
    assert_eq!(old_run.revision, 1);
    assert_eq!(old_run.counts.dead_lettered, drafts.len() as u64);
    assert_eq!(old_run.counts.delivered, 0);
    assert_eq!(old.still_pending(), drafts.len());
    assert!(old.entries.iter().all(|e| matches!(
        &e.outcome,
        EntryOutcome::Failed { stage: Stage::Map, error } if error.contains("status")
    )));
    let still = entries(&w, None).await;
    assert_eq!(still.len(), drafts.len(), "no second DLQ entry");
    for e in &still {
        assert_eq!(e.state, DlqState::Pending);
        let h = w.store.dead_letter_history(e.id).await.unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].action, DlqAction::ReplayFailed);
        assert_eq!(h[0].run_id, Some(old_run.id));
        assert!(h[0].note.contains("revision 1"), "{}", h[0].note);
    }
    assert!(applied_by_id(&w).keys().all(|id| !drafts.contains(id)));

    // The active revision (2) delivers them, with the key a normal run computes.
    let new = replay(&w, Selection::AllPending, None).await;
    let new_run = new.run.clone().unwrap();
    assert_eq!(new_run.revision, 2);
    assert_eq!(new_run.counts.delivered, drafts.len() as u64);
    assert_eq!(new.still_pending(), 0);
    let applied = applied_by_id(&w);
    for id in &drafts {
        let src = w.sandbox.source().record(*id).unwrap();
        let (body, key, times) = &applied[id];
        assert_eq!(body["status"], "open");
        assert_eq!(body["order_ref"], src["number"]);
        assert_eq!(*key, key_of(&src));
        assert_eq!(*times, 1);
    }
    assert!(entries(&w, Some(DlqState::Pending)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_record_is_replayed_alone_and_the_original_is_kept() {
    let w = world(600, Some(&status_flow(false))).await;
    let run = w.run().await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    let dlq = entries(&w, None).await;
    assert!(dlq.len() >= 2, "{}", dlq.len());
    let target = &dlq[0];
    let original = target.source_record.clone();

    let sets: Vec<SetField> = ["state=paid", "buyer.email=Fixed@Example.com"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let edited = ferry_engine::edit(&w.store, target.id, &sets, "e2e-operator")
        .await
        .unwrap();
    assert_eq!(edited.source_record, original, "the original is kept");
    let copy = edited.edited_record.clone().unwrap();
    assert_eq!(copy["state"], "paid");
    assert_eq!(copy["buyer"]["email"], "Fixed@Example.com");
    assert_eq!(copy["id"], original["id"]);

    // A bad --set changes nothing.
    let bad: Vec<SetField> = vec!["id.x=1".parse().unwrap()];
    let err = ferry_engine::edit(&w.store, target.id, &bad, "e2e-operator")
        .await
        .unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    assert_eq!(
        w.store
            .dead_letter(target.id)
            .await
            .unwrap()
            .unwrap()
            .edited_record,
        Some(copy.clone())
    );

    let report = replay(&w, Selection::Ids(vec![target.id]), None).await;
    assert_eq!(report.entries.len(), 1);
    assert_eq!(report.entries[0].outcome, EntryOutcome::Delivered);
    assert_eq!(report.run.as_ref().unwrap().counts.fetched, 1);

    let id = source_id(target);
    let applied = applied_by_id(&w);
    let (body, key, _) = &applied[&id];
    assert_eq!(body["status"], "paid", "delivered with the edited value");
    assert_eq!(body["customer"]["email"], "fixed@example.com");
    assert_eq!(*key, key_of(&original));

    let after = w.store.dead_letter(target.id).await.unwrap().unwrap();
    assert_eq!(after.state, DlqState::Replayed);
    assert_eq!(after.source_record, original);
    assert_eq!(after.edited_record, Some(copy));
    let h = w.store.dead_letter_history(target.id).await.unwrap();
    assert_eq!(
        h.iter().map(|e| e.action).collect::<Vec<_>>(),
        vec![DlqAction::Edit, DlqAction::Replay]
    );
    assert!(h[0].note.contains("state = \"paid\""), "{}", h[0].note);
    assert_eq!(h[0].actor.as_deref(), Some("e2e-operator"));
    // The others were not touched.
    assert_eq!(
        entries(&w, Some(DlqState::Pending)).await.len(),
        dlq.len() - 1
    );
    // A replayed entry cannot be edited any more.
    let err = ferry_engine::edit(&w.store, target.id, &sets, "e2e-operator")
        .await
        .unwrap_err();
    assert!(matches!(err, ReplayError::NotPending { .. }), "{err}");
    // The edit and the replay are in the audit log, with who did them.
    let audit = w
        .store
        .audit(&ferry_store::AuditFilter {
            flow: Some(w.flow.flow.name.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let edit = audit
        .iter()
        .find(|e| e.action == "dlq_edit")
        .expect("dlq_edit audited");
    assert_eq!(edit.actor, "e2e-operator");
    assert_eq!(edit.detail["entry"], target.id.to_string());
    assert!(audit.iter().any(|e| e.action == "dlq_replay"), "{audit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discarded_entry_is_kept_with_its_reason_and_cannot_be_replayed() {
    let w = world(600, Some(&status_flow(false))).await;
    w.run().await;
    let dlq = entries(&w, None).await;
    let victim = dlq[0].id;

    let err = ferry_engine::discard(&w.store, &[victim], "  ", "ann")
        .await
        .unwrap_err();
    assert!(matches!(err, ReplayError::NoReason), "{err}");
    // One unknown id refuses the whole discard.
    let err = ferry_engine::discard(&w.store, &[victim, Uuid::now_v7()], "test order", "ann")
        .await
        .unwrap_err();
    assert!(matches!(err, ReplayError::UnknownEntry(_)), "{err}");
    assert_eq!(
        w.store.dead_letter(victim).await.unwrap().unwrap().state,
        DlqState::Pending
    );

    ferry_engine::discard(&w.store, &[victim], "test order placed by QA", "ann")
        .await
        .unwrap();
    let discarded = entries(&w, Some(DlqState::Discarded)).await;
    assert_eq!(
        discarded.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![victim]
    );
    assert_eq!(
        discarded[0].state_note.as_deref(),
        Some("test order placed by QA")
    );
    let h = w.store.dead_letter_history(victim).await.unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].action, DlqAction::Discard);
    assert_eq!(h[0].note, "test order placed by QA");
    assert_eq!(h[0].actor.as_deref(), Some("ann"));
    let audit = w
        .store
        .audit(&ferry_store::AuditFilter {
            action: Some("dlq_discard".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].actor, "ann");
    assert_eq!(audit[0].detail["reason"], "test order placed by QA");

    let req = ReplayRequest {
        flow: w.flow.flow.name.clone(),
        env: w.env.clone(),
        selection: Selection::Ids(vec![victim]),
        revision: None,
        actor: "ann".into(),
    };
    let err = ferry_engine::replay(w.store.clone(), req, ReplayOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ReplayError::NotPending {
                state: DlqState::Discarded,
                ..
            }
        ),
        "{err}"
    );
    // --all leaves it alone too.
    let report = replay(&w, Selection::AllPending, None).await;
    assert!(report.entries.iter().all(|e| e.id != victim));
    assert_eq!(
        w.store.dead_letter(victim).await.unwrap().unwrap().state,
        DlqState::Discarded
    );

    // Through the binary: exit 2, and the reason for it.
    let dir = w._dir.path().to_path_buf();
    let id = victim.to_string();
    let out = tokio::task::spawn_blocking(move || {
        let state = dir.display().to_string();
        ferry_e2e::run_ferry(
            &["--state", &state, "--env", "test", "dlq", "replay", &id],
            &[],
            &dir,
            LIMIT,
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", ferry_e2e::text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("discarded, not pending"),
        "{}",
        ferry_e2e::text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_records_the_destination_already_applied_makes_no_duplicate_effect() {
    let flow = example_without_tests().replace(
        "  retry: { attempts: 6, initial: 100ms, max: 5s, jitter: full }",
        "  retry: { attempts: 1, initial: 100ms, max: 5s, jitter: full }\n  circuit_breaker: { enabled: false }",
    );
    let w = world(1000, Some(&flow)).await;
    w.sandbox.sink().set_faults(SinkFaults {
        seed: 7,
        rate_lost_ack: 0.4,
        ..SinkFaults::default()
    });
    let run = w.run().await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    let lost = w.sandbox.sink().stats().lost_acks;
    assert!(lost > 100, "lost acks: {lost}");
    assert_eq!(
        run.counts.dead_lettered, lost,
        "each lost ack dead-lettered"
    );
    let dlq = entries(&w, None).await;
    assert_eq!(dlq.len() as u64, lost);
    assert!(dlq.iter().all(|e| e.error_class == "retries_exhausted"
        && e.attempts.len() == 1
        && e.attempts[0].status == Some(500)));
    // Half-applied: the sink has every one of them already.
    let applied_before = w.sandbox.sink().stats().applied;
    let applied = applied_by_id(&w);
    assert!(dlq.iter().all(|e| applied.contains_key(&source_id(e))));

    // Revision 2 names keys differently: a replay must still send each entry's original key,
    // the one the destination applied it under.
    let v2 = ferry_spec::load_str(
        &flow.replace(
            "idempotency_key: \"order-{{ source.id }}-{{ source.changed_at }}\"",
            "idempotency_key: \"v2-{{ source.id }}\"",
        ),
        None,
    )
    .unwrap();
    assert_ne!(v2.hash, w.flow.hash);
    ferry_engine::deploy(&w.store, &v2, "test", "new keys", "e2e")
        .await
        .unwrap();

    w.sandbox.sink().set_faults(SinkFaults::default());
    let before = w.sandbox.sink().stats();
    let report = replay(&w, Selection::AllPending, None).await;
    let rr = report.run.clone().unwrap();
    assert_eq!(rr.revision, 2);
    assert_eq!(rr.counts.delivered, lost, "{:?}", rr.counts);
    let keys: Vec<String> = dlq.iter().map(|e| e.key.clone().unwrap()).collect();
    let hits = w
        .store
        .ledger_lookup(&w.flow.flow.name, "test", &keys)
        .await
        .unwrap();
    assert_eq!(
        hits.len(),
        keys.len(),
        "ledger rows under the original keys"
    );
    assert_eq!(report.still_pending(), 0);
    let after = w.sandbox.sink().stats();
    assert_eq!(after.applied, applied_before, "0 new effects");
    assert_eq!(
        after.duplicate_requests - before.duplicate_requests,
        lost,
        "each replay answered from the stored response"
    );
    assert!(applied_by_id(&w).values().all(|(_, _, n)| *n == 1));
    assert!(entries(&w, Some(DlqState::Pending)).await.is_empty());

    // Every non-draft record is applied exactly once; drafts never.
    let applied = applied_by_id(&w);
    for id in 1..=1000u64 {
        let src = w.sandbox.source().record(id).unwrap();
        assert_eq!(
            applied.get(&id).map(|a| a.2),
            expected_mapping(&src).map(|_| 1),
            "record {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dlq_commands_of_the_binary() {
    let w = world(500, None).await;
    w.sandbox.sink().set_faults(SinkFaults {
        reject_every_nth: Some(50),
        ..SinkFaults::default()
    });
    let run = w.run().await;
    let n = run.counts.dead_lettered as usize;
    assert!(n >= 5, "{n}");
    let ok = |out: &std::process::Output, code: i32| {
        assert_eq!(out.status.code(), Some(code), "{}", ferry_e2e::text(out));
    };

    // list
    let out = ferry(&w, &["dlq", "list", "--output", "json"], &[]).await;
    ok(&out, 0);
    let list = json_of(&out);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), n);
    assert!(
        list.iter()
            .all(|e| e["state"] == "pending" && e["stage"] == "deliver")
    );
    let ids: Vec<String> = list
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    // An entry to edit (standard shipping, so an edit to express changes its priority) and
    // another to replay with it.
    let edit_id = list[1..]
        .iter()
        .find(|e| e["source_record"]["shipping"] == "standard")
        .map(|e| e["id"].as_str().unwrap().to_string())
        .expect("an entry with standard shipping");
    let other_id = ids[1..].iter().find(|i| **i != edit_id).cloned().unwrap();
    let out = ferry(&w, &["dlq", "list"], &[]).await;
    ok(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("ID "), "{text}");
    assert!(ids.iter().all(|id| text.contains(id.as_str())), "{text}");
    assert!(text.contains("rejected"), "{text}");
    for (args, want) in [
        (vec!["--since", "1h"], n),
        (vec!["--since", "2999-01-01T00:00:00Z"], 0),
        (vec!["--status", "discarded"], 0),
        (vec!["--error-class", "rejected", "--limit", "2"], 2),
        (vec!["--flow", "no-such-flow"], 0),
    ] {
        let mut a = vec!["dlq", "list", "--output", "json"];
        a.extend(args.iter().copied());
        let out = ferry(&w, &a, &[]).await;
        ok(&out, 0);
        assert_eq!(json_of(&out).as_array().unwrap().len(), want, "{args:?}");
    }
    for bad in [
        vec!["dlq", "list", "--status", "bogus"],
        vec!["dlq", "list", "--state", "discarded"],
        vec!["dlq", "list", "--since", "yesterday"],
        vec!["dlq", "list", "--limit", "0"],
        vec!["dlq", "show", "not-a-uuid"],
        vec!["dlq", "show", "0190a000-0000-7000-8000-000000000001"],
        vec!["dlq", "discard", ids[0].as_str()],
        vec!["dlq", "discard", ids[0].as_str(), "--reason", "  "],
        vec!["dlq", "edit", ids[0].as_str(), "--set", "a..b=1"],
        vec!["dlq", "edit", ids[0].as_str(), "--set", "number.x=1"],
        vec!["dlq", "replay"],
        vec!["dlq", "replay", "--all"],
    ] {
        let out = ferry(&w, &bad, &[]).await;
        ok(&out, 2);
    }
    assert_eq!(
        entries(&w, None)
            .await
            .iter()
            .filter(|e| e.edited_record.is_some() || e.state != DlqState::Pending)
            .count(),
        0,
        "refused commands changed nothing"
    );

    // show
    let out = ferry(&w, &["dlq", "show", &ids[0], "--output", "json"], &[]).await;
    ok(&out, 0);
    let shown = json_of(&out);
    assert_eq!(shown["entry"]["id"], ids[0].as_str());
    // by the start of its id (the first 20 hex digits: a UUIDv7 starts with the time, so
    // entries of one run share their first 12)
    let out = ferry(&w, &["dlq", "show", &ids[0][..23], "--output", "json"], &[]).await;
    ok(&out, 0);
    assert_eq!(json_of(&out)["entry"]["id"], ids[0].as_str());
    assert_eq!(shown["entry"]["attempts"][0]["status"], 422);
    assert_eq!(shown["entry"]["revision"], 1);
    assert!(shown["entry"]["source_record"]["id"].is_u64());
    assert_eq!(shown["history"], json!([]));
    let out = ferry(&w, &["dlq", "show", &ids[0]], &[]).await;
    ok(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "attempts (1):",
        "HTTP 422",
        "source record:",
        "mapped record:",
        "history (0):",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }

    // discard, by FERRY_USER
    let out = ferry(
        &w,
        &["dlq", "discard", &ids[0], "--reason", "customer cancelled"],
        &[("FERRY_USER", "ops-ann")],
    )
    .await;
    ok(&out, 0);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "discarded 1 dead letter: customer cancelled"
    );
    let out = ferry(&w, &["dlq", "show", &ids[0], "--output", "json"], &[]).await;
    let shown = json_of(&out);
    assert_eq!(shown["entry"]["state"], "discarded");
    assert_eq!(shown["history"][0]["action"], "discard");
    assert_eq!(shown["history"][0]["actor"], "ops-ann");
    assert_eq!(shown["history"][0]["note"], "customer cancelled");
    let out = ferry(
        &w,
        &["dlq", "list", "--status", "discarded", "--output", "json"],
        &[],
    )
    .await;
    assert_eq!(json_of(&out).as_array().unwrap().len(), 1);
    let out = ferry(&w, &["dlq", "discard", &ids[0], "--reason", "again"], &[]).await;
    ok(&out, 2);

    // edit
    let out = ferry(
        &w,
        &[
            "dlq",
            "edit",
            &edit_id,
            "--set",
            "shipping=express",
            "--output",
            "json",
        ],
        &[("FERRY_USER", "ops-bob")],
    )
    .await;
    ok(&out, 0);
    let edited = json_of(&out);
    assert_eq!(edited["edited_record"]["shipping"], "express");
    assert_ne!(edited["source_record"], edited["edited_record"]);

    // A dry run writes and sends nothing; it shows the edit's effect as a diff.
    let sink = format!("{}/api/sink", w.sandbox.base_url());
    let env = [("WMS_URL", sink.as_str())];
    let requests = w.sandbox.sink().stats().requests;
    let flow = w.flow.flow.name.clone();
    let out = ferry(
        &w,
        &["dlq", "replay", "--flow", &flow, "--all", "--dry-run"],
        &env,
    )
    .await;
    ok(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("would deliver"), "{text}");
    assert!(text.contains("~ priority: \"normal\" → \"high\""), "{text}");
    assert_eq!(w.sandbox.sink().stats().requests, requests, "nothing sent");
    // One entry is one entry, not "1 entries".
    let out = ferry(&w, &["dlq", "replay", &edit_id, "--dry-run"], &env).await;
    ok(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "dry run: flow `{flow}` with revision 1 (1 entry);"
        )),
        "{text}"
    );
    assert_eq!(entries(&w, Some(DlqState::Pending)).await.len(), n - 1);

    // Still rejected: exit 1, entries stay pending.
    let out = ferry(&w, &["dlq", "replay", "--flow", &flow, "--all"], &env).await;
    ok(&out, 1);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("failed again"),
        "{}",
        ferry_e2e::text(&out)
    );
    assert_eq!(entries(&w, Some(DlqState::Pending)).await.len(), n - 1);

    // Fixed: exit 0, JSON report with the replay run.
    w.sandbox.sink().set_faults(SinkFaults::default());
    let out = ferry(
        &w,
        &["dlq", "replay", &edit_id, &other_id, "--output", "json"],
        &env,
    )
    .await;
    ok(&out, 0);
    let reports = json_of(&out);
    assert_eq!(reports[0]["run"]["trigger"], "replay");
    assert_eq!(reports[0]["entries"][0]["outcome"], "delivered");
    assert_eq!(reports[0]["entries"].as_array().unwrap().len(), 2);
    let applied = applied_by_id(&w);
    let edited_id = edited["source_record"]["id"].as_u64().unwrap();
    assert_eq!(applied[&edited_id].0["priority"], "high");
    let out = ferry(&w, &["dlq", "replay", "--flow", &flow, "--all"], &env).await;
    ok(&out, 0);
    assert!(entries(&w, Some(DlqState::Pending)).await.is_empty());
    assert!(applied_by_id(&w).values().all(|(_, _, n)| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twins_are_sent_once_and_records_delivered_meanwhile_are_not_sent_again() {
    let w = world(1000, None).await;
    let name = w.flow.flow.name.clone();
    w.sandbox.sink().set_faults(SinkFaults {
        reject_every_nth: Some(40),
        ..SinkFaults::default()
    });
    // The same records fail in two runs (the second reads the source from the start again):
    // two pending entries per record, with the same key.
    let first = w.run().await;
    w.store.set_cursor(&name, "test", None).await.unwrap();
    let second = w.run().await;
    let n = first.counts.dead_lettered as usize;
    assert!(n >= 10, "{n}");
    assert_eq!(second.counts.dead_lettered as usize, n);
    let mut by_key: HashMap<String, Vec<Uuid>> = HashMap::new();
    for e in entries(&w, None).await {
        by_key.entry(e.key.clone().unwrap()).or_default().push(e.id);
    }
    assert_eq!(by_key.len(), n);
    assert!(by_key.values().all(|v| v.len() == 2));

    // Replaying both entries of k records sends k requests.
    w.sandbox.sink().set_faults(SinkFaults::default());
    let mut keys: Vec<&String> = by_key.keys().collect();
    keys.sort();
    let (now, later) = keys.split_at(n / 2);
    let ids: Vec<Uuid> = now.iter().flat_map(|k| by_key[*k].clone()).collect();
    let requests = w.sandbox.sink().stats().requests;
    let report = replay(&w, Selection::Ids(ids.clone()), None).await;
    let rr = report.run.clone().unwrap();
    assert_eq!(rr.counts.fetched, ids.len() as u64);
    assert_eq!(rr.counts.delivered, now.len() as u64);
    assert_eq!(rr.counts.skipped, now.len() as u64);
    assert_eq!(
        w.sandbox.sink().stats().requests - requests,
        now.len() as u64,
        "one request per key"
    );
    for k in now {
        let outcomes: HashSet<String> = by_key[*k]
            .iter()
            .map(|id| {
                let e = report.entries.iter().find(|e| e.id == *id).unwrap();
                format!("{:?}", e.outcome)
            })
            .collect();
        assert_eq!(
            outcomes,
            HashSet::from(["Delivered".to_string(), "AlreadyDelivered".to_string()])
        );
    }

    // A run delivers the other records; replaying their entries then sends nothing.
    w.store.set_cursor(&name, "test", None).await.unwrap();
    let third = w.run().await;
    assert_eq!(third.counts.delivered as usize, later.len());
    let requests = w.sandbox.sink().stats().requests;
    let report = replay(&w, Selection::AllPending, None).await;
    assert_eq!(report.entries.len(), later.len() * 2);
    assert!(
        report
            .entries
            .iter()
            .all(|e| e.outcome == EntryOutcome::AlreadyDelivered)
    );
    let rr = report.run.unwrap();
    assert_eq!(rr.counts.skipped, later.len() as u64 * 2);
    assert_eq!(w.sandbox.sink().stats().requests, requests, "nothing sent");
    for k in later {
        for id in &by_key[*k] {
            let e = w.store.dead_letter(*id).await.unwrap().unwrap();
            assert_eq!(e.state, DlqState::Replayed);
            assert_eq!(e.state_note.as_deref(), Some("already delivered"));
        }
    }
    assert!(applied_by_id(&w).values().all(|(_, _, n)| *n == 1));
}
