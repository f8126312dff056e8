//! The engine's two users of the one retry layer — sink deliveries and state-store writes
//! during an outage — take their attempts and waits from the stack: a run given
//! `RunOptions::backoff_seed` waits exactly what `JitteredBackoff::…with_seed(seed + k)` draws
//! for call `k` of the seed, with the flow's `policy.retry` (deliveries) or
//! `RetryPolicy::store_outage` (store writes). Real components: the sandbox over 127.0.0.1 and
//! a SQLite state store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ferry_engine::{RunOptions, RunRequest};
use ferry_env::{RunEnv, Secrets};
use ferry_resilience::{
    BackoffSeed, Jitter, JitteredBackoff, Retried, STORE_OUTAGE_INITIAL, STORE_OUTAGE_MAX,
};
use ferry_sandbox::{Sandbox, SandboxConfig, SinkFaults};
use ferry_store::{RunRecord, StateStore, StoreError, Trigger};

/// Deliveries retry after 1 to 40 ms: quick, and still a growing full-jitter backoff.
const FLOW: &str = r#"name: seeded
source:
  http:
    url: "{{ env.BASE }}/api/orders"
    records: "$.orders[*]"
    paginate:
      next_url: "$.links.next"
map:
  key: "$.id"
  fields:
    order_ref: "$.number"
destination:
  http:
    method: PUT
    url: "{{ env.BASE }}/api/sink/v2/orders/{{ record.order_ref }}"
    idempotency_key: "order-{{ source.id }}"
    concurrency: 1
policy:
  retry: { attempts: 4, initial: 5ms, max: 40ms, jitter: full }
  circuit_breaker: { enabled: false }
"#;

struct World {
    sandbox: Sandbox,
    store: Arc<dyn StateStore>,
    flow: ferry_spec::LoadedFlow,
    revision: i64,
    env: RunEnv,
    _dir: tempfile::TempDir,
}

async fn world(records: u64) -> World {
    let sandbox = Sandbox::start(SandboxConfig {
        records,
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("state.db").display());
    let store = ferry_store::open(&url).await.expect("store opens");
    let flow = ferry_spec::load_str(FLOW, None).expect("flow loads");
    let d = ferry_engine::deploy(&store, &flow, "test", "retry-layer", "tests")
        .await
        .expect("deploy");
    let env = RunEnv::isolated("test", Secrets::default()).with_var("BASE", sandbox.base_url());
    World {
        sandbox,
        store,
        flow,
        revision: d.revision.number,
        env,
        _dir: dir,
    }
}

/// Runs the flow once against `store` with a seeded retry layer.
async fn run(w: &World, store: Arc<dyn StateStore>, seed: &BackoffSeed) -> RunRecord {
    let req = RunRequest {
        flow: Arc::new(w.flow.clone()),
        revision: w.revision,
        env: w.env.clone(),
        trigger: Trigger::Manual,
    };
    let opts = RunOptions {
        backoff_seed: Some(seed.clone()),
        ..RunOptions::default()
    };
    tokio::time::timeout(
        Duration::from_secs(60),
        ferry_engine::execute(store, req, opts),
    )
    .await
    .expect("the run ends within a minute")
    .expect("the run is recorded")
}

/// The retries the seed recorded, by call: `(attempt, wait)` in order.
fn by_call(retries: &[Retried]) -> BTreeMap<u64, Vec<(u32, Duration)>> {
    let mut calls: BTreeMap<u64, Vec<(u32, Duration)>> = BTreeMap::new();
    for r in retries {
        calls.entry(r.call).or_default().push((r.attempt, r.wait));
    }
    calls
}

/// What call `call` of `seed` waits before its first `retries` retries, computed without the
/// engine: `(attempt, wait)` for attempts 1..=retries.
fn expected(
    seed: u64,
    call: u64,
    initial: Duration,
    max: Duration,
    retries: u32,
) -> Vec<(u32, Duration)> {
    let waits = JitteredBackoff::new(initial, max, Jitter::Full)
        .with_seed(BackoffSeed::call_seed(seed, call));
    (1..=retries).zip(waits).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_deliveries_take_their_attempts_and_waits_from_the_seeded_stack() {
    // Three records, three retries each: within the retry budget's floor of 10 retries.
    let w = world(3).await;
    w.sandbox.sink().set_faults(SinkFaults {
        rate_5xx: 1.0,
        ..SinkFaults::default()
    });
    let seed = BackoffSeed::new(0x5eed);
    let record = run(&w, w.store.clone(), &seed).await;
    let c = record.counts;
    assert!(c.dead_lettered > 0, "{c:?}");
    assert_eq!(c.dead_lettered, c.fetched - c.filtered, "{c:?}");
    // Every delivery made the policy's 4 attempts: 3 retries, each waiting what the seed drew
    // for that call — and nothing else in the run retried.
    let calls = by_call(&seed.retries());
    assert_eq!(calls.len() as u64, c.dead_lettered, "{calls:?}");
    for (call, got) in &calls {
        assert!(*call < seed.calls());
        assert_eq!(
            got,
            &expected(
                0x5eed,
                *call,
                Duration::from_millis(5),
                Duration::from_millis(40),
                3
            ),
            "delivery call {call}"
        );
    }
    assert_eq!(w.sandbox.sink().stats().requests, 4 * c.dead_lettered);
    let dlq = w
        .store
        .dead_letters(&ferry_store::DlqFilter::default())
        .await
        .unwrap();
    assert_eq!(dlq.len() as u64, c.dead_lettered);
    for d in &dlq {
        assert_eq!(d.attempts.len(), 4, "{:?}", d.error);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_store_writes_wait_out_an_outage_with_the_seeded_stack() {
    let w = world(4).await;
    let flaky = Arc::new(Flaky {
        inner: w.store.clone(),
        settle_failures: AtomicU32::new(3),
    });
    let seed = BackoffSeed::new(77);
    let record = run(&w, flaky.clone(), &seed).await;
    assert_eq!(
        record.status,
        ferry_store::RunStatus::Succeeded,
        "{:?}",
        record.error
    );
    assert_eq!(flaky.settle_failures.load(Ordering::SeqCst), 0);
    // One settle call met the outage: it failed 3 times, waited what the seed drew for it
    // under the store-outage policy, and its 4th attempt was written.
    let calls = by_call(&seed.retries());
    assert_eq!(calls.len(), 1, "{calls:?}");
    let (call, got) = calls.iter().next().unwrap();
    assert_eq!(
        got,
        &expected(77, *call, STORE_OUTAGE_INITIAL, STORE_OUTAGE_MAX, 3)
    );
    let delivered = w.sandbox.sink().stats().applied;
    assert_eq!(record.counts.delivered, delivered);
    let runs = w.store.runs(Some("seeded"), 10).await.unwrap();
    assert_eq!(
        runs[0].counts.delivered, delivered,
        "the settle was written"
    );
}

/// The SQLite store, except that its first `settle_failures` settles get no answer — a store
/// outage of an exact length, counted in calls rather than seconds.
#[derive(Debug)]
struct Flaky {
    inner: Arc<dyn StateStore>,
    settle_failures: AtomicU32,
}

impl Flaky {
    fn take_failure(&self) -> bool {
        self.settle_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Everything but `settle` goes straight to the real store.
mod delegate {
    use super::*;
    use ferry_store::*;
    use serde_json::Value;
    use std::collections::HashMap;
    use uuid::Uuid;

    #[async_trait::async_trait]
    impl StateStore for Flaky {
        fn backend(&self) -> &'static str {
            self.inner.backend()
        }

        async fn deploy(
            &self,
            flow: &str,
            env: &str,
            spec: &str,
            hash: &str,
            message: &str,
            author: &str,
        ) -> Result<DeployOutcome> {
            self.inner
                .deploy(flow, env, spec, hash, message, author)
                .await
        }

        async fn revision(&self, flow: &str, number: i64) -> Result<Option<RevisionInfo>> {
            self.inner.revision(flow, number).await
        }

        async fn active_revision(&self, flow: &str, env: &str) -> Result<Option<RevisionInfo>> {
            self.inner.active_revision(flow, env).await
        }

        async fn revisions(&self, flow: &str) -> Result<Vec<RevisionInfo>> {
            self.inner.revisions(flow).await
        }

        async fn flows(&self, env: &str) -> Result<Vec<FlowSummary>> {
            self.inner.flows(env).await
        }

        async fn cursor(&self, flow: &str, env: &str) -> Result<Option<Value>> {
            self.inner.cursor(flow, env).await
        }

        async fn set_cursor(&self, flow: &str, env: &str, cursor: Option<&Value>) -> Result<()> {
            self.inner.set_cursor(flow, env, cursor).await
        }

        async fn create_run(&self, run: &NewRun) -> Result<()> {
            self.inner.create_run(run).await
        }

        async fn settle(&self, batch: &Settle) -> Result<()> {
            if self.take_failure() {
                return Err(StoreError::NoAnswer {
                    op: "settle",
                    after: Duration::ZERO,
                });
            }
            self.inner.settle(batch).await
        }

        async fn finish_run(
            &self,
            id: Uuid,
            status: RunStatus,
            counts: &RunCounts,
            cursor_after: Option<&Value>,
            error: Option<&str>,
        ) -> Result<()> {
            self.inner
                .finish_run(id, status, counts, cursor_after, error)
                .await
        }

        async fn run(&self, id: Uuid) -> Result<Option<RunRecord>> {
            self.inner.run(id).await
        }

        async fn runs(&self, flow: Option<&str>, limit: u32) -> Result<Vec<RunRecord>> {
            self.inner.runs(flow, limit).await
        }

        async fn fail_stale_runs(&self, flow: &str, env: &str, error: &str) -> Result<u64> {
            self.inner.fail_stale_runs(flow, env, error).await
        }

        async fn ledger_lookup(
            &self,
            flow: &str,
            env: &str,
            keys: &[String],
        ) -> Result<HashMap<String, LedgerHit>> {
            self.inner.ledger_lookup(flow, env, keys).await
        }

        async fn claim_keys(
            &self,
            flow: &str,
            env: &str,
            run_id: Uuid,
            keys: &[String],
        ) -> Result<HashMap<String, Claim>> {
            self.inner.claim_keys(flow, env, run_id, keys).await
        }

        async fn claim_keys_as(
            &self,
            flow: &str,
            env: &str,
            run_id: Uuid,
            keys: &[String],
            mode: ClaimMode<'_>,
        ) -> Result<KeyClaims> {
            self.inner
                .claim_keys_as(flow, env, run_id, keys, mode)
                .await
        }

        async fn heartbeat(&self, run_id: Uuid, owner: &str) -> Result<()> {
            self.inner.heartbeat(run_id, owner).await
        }

        async fn running_runs(&self, flow: &str, env: &str) -> Result<Vec<RunningRun>> {
            self.inner.running_runs(flow, env).await
        }

        async fn fail_runs(&self, ids: &[Uuid], error: &str) -> Result<u64> {
            self.inner.fail_runs(ids, error).await
        }

        async fn dead_letters(&self, filter: &DlqFilter) -> Result<Vec<DeadLetter>> {
            self.inner.dead_letters(filter).await
        }

        async fn dead_letter(&self, id: Uuid) -> Result<Option<DeadLetter>> {
            self.inner.dead_letter(id).await
        }

        async fn set_dead_letter_state(
            &self,
            id: Uuid,
            state: DlqState,
            note: &str,
            run_id: Option<Uuid>,
        ) -> Result<()> {
            self.inner
                .set_dead_letter_state(id, state, note, run_id)
                .await
        }

        async fn dead_letter_history(&self, id: Uuid) -> Result<Vec<DeadLetterEvent>> {
            self.inner.dead_letter_history(id).await
        }

        async fn set_dead_letter_edit(
            &self,
            id: Uuid,
            edited_source: &Value,
            note: &str,
            actor: &str,
        ) -> Result<()> {
            self.inner
                .set_dead_letter_edit(id, edited_source, note, actor)
                .await
        }

        async fn discard_dead_letter(&self, id: Uuid, reason: &str, actor: &str) -> Result<()> {
            self.inner.discard_dead_letter(id, reason, actor).await
        }

        async fn settle_replay(&self, batch: &ReplaySettle) -> Result<()> {
            self.inner.settle_replay(batch).await
        }

        async fn deploy_many(
            &self,
            env: &str,
            items: &[DeployItem],
            author: &str,
            action: &str,
        ) -> Result<Vec<DeployOutcome>> {
            self.inner.deploy_many(env, items, author, action).await
        }

        async fn activations(&self, flow: &str, env: Option<&str>) -> Result<Vec<Activation>> {
            self.inner.activations(flow, env).await
        }

        async fn activate(
            &self,
            flow: &str,
            env: &str,
            number: i64,
            actor: &str,
            action: &str,
        ) -> Result<bool> {
            self.inner.activate(flow, env, number, actor, action).await
        }

        async fn deactivate(&self, flow: &str, env: &str, actor: &str) -> Result<bool> {
            self.inner.deactivate(flow, env, actor).await
        }

        async fn record_audit(&self, entry: &NewAudit) -> Result<i64> {
            self.inner.record_audit(entry).await
        }

        async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
            self.inner.audit(filter).await
        }

        async fn create_snapshot(
            &self,
            env: &str,
            name: &str,
            actor: &str,
            note: &str,
        ) -> Result<Snapshot> {
            self.inner.create_snapshot(env, name, actor, note).await
        }

        async fn snapshots(&self, env: &str) -> Result<Vec<Snapshot>> {
            self.inner.snapshots(env).await
        }

        async fn snapshot(&self, env: &str, name: &str) -> Result<Option<Snapshot>> {
            self.inner.snapshot(env, name).await
        }

        async fn create_promotion(&self, p: &NewPromotion) -> Result<Promotion> {
            self.inner.create_promotion(p).await
        }

        async fn decide_promotion(
            &self,
            id: Uuid,
            approve: bool,
            actor: &str,
            reason: &str,
        ) -> Result<Promotion> {
            self.inner
                .decide_promotion(id, approve, actor, reason)
                .await
        }

        async fn promotion(&self, id: Uuid) -> Result<Option<Promotion>> {
            self.inner.promotion(id).await
        }

        async fn promotions(
            &self,
            flow: Option<&str>,
            state: Option<PromotionState>,
        ) -> Result<Vec<Promotion>> {
            self.inner.promotions(flow, state).await
        }

        async fn last_run_of_revision(
            &self,
            flow: &str,
            env: &str,
            revision: i64,
        ) -> Result<Option<RunRecord>> {
            self.inner.last_run_of_revision(flow, env, revision).await
        }

        async fn flow_names(&self) -> Result<Vec<String>> {
            self.inner.flow_names().await
        }

        async fn check(&self) -> Result<StoreCheck> {
            self.inner.check().await
        }

        async fn backup(&self, path: &std::path::Path) -> Result<()> {
            self.inner.backup(path).await
        }

        async fn create_draft(
            &self,
            env: &str,
            item: &DeployItem,
            author: &str,
            action: &str,
        ) -> Result<RevisionInfo> {
            self.inner.create_draft(env, item, author, action).await
        }

        async fn create_token(&self, t: &NewToken) -> Result<TokenInfo> {
            self.inner.create_token(t).await
        }

        async fn tokens(&self) -> Result<Vec<TokenInfo>> {
            self.inner.tokens().await
        }

        async fn revoke_token(&self, name: &str, actor: &str) -> Result<bool> {
            self.inner.revoke_token(name, actor).await
        }

        async fn mark_token_used(&self, name: &str) -> Result<()> {
            self.inner.mark_token_used(name).await
        }

        async fn start_session(&self, s: &NewSession) -> Result<()> {
            self.inner.start_session(s).await
        }

        async fn session(&self, hash: &str) -> Result<Option<SessionInfo>> {
            self.inner.session(hash).await
        }

        async fn end_session(&self, hash: &str) -> Result<bool> {
            self.inner.end_session(hash).await
        }

        async fn worker_beat(&self, w: &ferry_store::WorkerBeat) -> Result<()> {
            self.inner.worker_beat(w).await
        }

        async fn worker_stopped(&self, id: &str) -> Result<()> {
            self.inner.worker_stopped(id).await
        }

        async fn workers(&self) -> Result<Vec<ferry_store::WorkerInfo>> {
            self.inner.workers().await
        }

        async fn claim_tick(
            &self,
            flow: &str,
            env: &str,
            tick: chrono::DateTime<chrono::Utc>,
            owner: &str,
        ) -> Result<bool> {
            self.inner.claim_tick(flow, env, tick, owner).await
        }

        async fn prune(&self, p: &ferry_store::Prune) -> Result<ferry_store::Pruned> {
            self.inner.prune(p).await
        }

        async fn active_environments(&self) -> Result<Vec<EnvFlows>> {
            self.inner.active_environments().await
        }

        async fn ids_with_prefix(
            &self,
            kind: IdKind,
            prefix: &IdPrefix,
            limit: u32,
        ) -> Result<Vec<Uuid>> {
            self.inner.ids_with_prefix(kind, prefix, limit).await
        }
    }
}
