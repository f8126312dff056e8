//! The screen stage: what must not be sent now is sorted out before delivery — keys delivered
//! before (skipped, or refused when the body differs), keys another live run holds (the record
//! waits), keys of records in flight in this run. Every key is claimed for the run first, in
//! batches, so two runs of one flow never send one key at the same time; no record is sent
//! without its claim.

use std::sync::Arc;
use std::time::Duration;

use ferry_store::{Claim, ClaimMode, KeyClaims, Stage, StoreError};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::keys::rekeyed;
use crate::run::LOOKUP_CHUNK;
use crate::run::ctx::Ctx;
use crate::run::outage::StoreTrouble;
use crate::run::outcome::{Failure, Settled, Work};
use crate::run::stop::StopReason;

/// Sorts out records that must not be sent: already in the ledger (skipped, or refused when the
/// body differs) or sharing a key with a record in flight.
/// Keys of records in the delivery stage, with their body hashes.
pub(crate) type Inflight = Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>;

/// How long a record whose key another live run holds waits before it is screened again.
const CLAIM_RECHECK: Duration = Duration::from_millis(200);
/// After a record waited this long for another run's claim, dead runs are looked for (their
/// claims are released when they are marked failed).
const CLAIM_REAP_AFTER: Duration = Duration::from_secs(5);

/// Screens records against the ledger in batches, in its own task so that lookups overlap with
/// deliveries; while a lookup runs, the next batch gathers in the channel.
///
/// Screening claims each key for this run first ([`StateStore::claim_keys`]): a key another
/// run of the same flow and environment holds right now (another process, a replay) is not
/// sent; the record waits and is screened again until the other run has delivered it (then it
/// is skipped) or ended without it (then this run claims it). When the run stops, waiting
/// records are handed back.
pub(crate) async fn screen_stage(
    ctx: Arc<Ctx>,
    mut rx: mpsc::Receiver<Work>,
    ready_tx: mpsc::Sender<Work>,
    settle_tx: mpsc::Sender<Settled>,
    inflight: Inflight,
) {
    let mut waiting: Vec<Work> = Vec::new();
    let mut waiting_since: Option<Instant> = None;
    let mut rechecked = Instant::now();
    let mut open = true;
    loop {
        let mut chunk = Vec::new();
        // Waiting records are screened again every CLAIM_RECHECK, also while new records keep
        // arriving.
        if !waiting.is_empty() && rechecked.elapsed() >= CLAIM_RECHECK {
            chunk.append(&mut waiting);
            rechecked = Instant::now();
        }
        if open {
            let next = if waiting.is_empty() && chunk.is_empty() {
                rx.recv().await
            } else if !chunk.is_empty() {
                rx.try_recv().ok()
            } else {
                match tokio::time::timeout(CLAIM_RECHECK, rx.recv()).await {
                    Ok(w) => w,
                    Err(_) => {
                        chunk.append(&mut waiting);
                        rechecked = Instant::now();
                        None
                    }
                }
            };
            match next {
                Some(first) => chunk.push(first),
                None if chunk.is_empty() => open = false,
                None => {}
            }
            while open && chunk.len() < LOOKUP_CHUNK {
                match rx.try_recv() {
                    Ok(w) => chunk.push(w),
                    Err(_) => break,
                }
            }
        }
        if !open && chunk.is_empty() {
            if waiting.is_empty() {
                return;
            }
            tokio::time::sleep(CLAIM_RECHECK).await;
            chunk.append(&mut waiting);
            rechecked = Instant::now();
        }
        if ctx.stop.is_stopped() {
            // Stopping: records not sent yet (waiting for another run's claim, or not screened)
            // go back to the next run.
            for w in chunk.drain(..).chain(waiting.drain(..)) {
                if settle_tx.send(Settled::handed_back(w.pos)).await.is_err() {
                    return;
                }
            }
            if !open {
                return;
            }
            continue;
        }
        if waiting_since.is_some_and(|t| t.elapsed() > CLAIM_REAP_AFTER) {
            if let Err(e) = crate::liveness::reap(&ctx.store, &ctx.flow, &ctx.env).await {
                tracing::warn!(error = %e, "Looking for dead runs failed");
            }
            waiting_since = Some(Instant::now());
        }
        let (ready, done, held) = screen(&ctx, chunk, &inflight).await;
        if held.is_empty() {
            waiting_since = None;
        } else {
            waiting_since.get_or_insert_with(Instant::now);
            waiting.extend(held);
        }
        for s in done {
            if settle_tx.send(s).await.is_err() {
                return;
            }
        }
        for w in ready {
            if ready_tx.send(w).await.is_err() {
                return;
            }
        }
    }
}

/// Claims a batch of keys: per key for a replay; for a run, without claim rows while it is
/// the only run of its flow and environment, handing its unsettled keys over as claim rows
/// when another run starts.
async fn claim(
    ctx: &Ctx,
    keys: &[String],
) -> Result<std::collections::HashMap<String, Claim>, StoreError> {
    let (flow, env, run) = (ctx.flow.as_str(), ctx.env.as_str(), ctx.run_id);
    let Some(lone) = &ctx.lone else {
        return ctx.store.claim_keys(flow, env, run, keys).await;
    };
    let _one_at_a_time = ctx.claiming.lock().await;
    let mut got = ctx
        .store
        .claim_keys_as(flow, env, run, keys, ClaimMode::MayRunAlone)
        .await?;
    if got == KeyClaims::HandOver {
        let unsettled = lone.unsettled();
        tracing::debug!(
            keys = unsettled.len(),
            "Another run started: handing over the keys claimed alone"
        );
        got = ctx
            .store
            .claim_keys_as(flow, env, run, keys, ClaimMode::HandOver(&unsettled))
            .await?;
        // Claim rows hold them now (or they settled meanwhile).
        lone.clear();
    }
    match got {
        KeyClaims::Keys { claims, alone } => {
            if alone {
                lone.add_claimed(&claims);
            }
            Ok(claims)
        }
        KeyClaims::HandOver => Err(StoreError::InvalidInput {
            op: "claim_keys",
            detail: format!("run {run} was asked to hand over twice in a row"),
        }),
    }
}

/// While the run holds its flow alone with records in flight, looks every [`CLAIM_RECHECK`]
/// whether another run has started, and hands over at once if so: without this, a run or
/// replay that starts near the end of a lone run (no more claim batches) would wait for its
/// end.
pub(crate) async fn hand_over_when_asked(ctx: Arc<Ctx>) {
    let Some(lone) = &ctx.lone else {
        return;
    };
    let mut tick = tokio::time::interval(CLAIM_RECHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !lone.is_empty()
            && let Err(e) = claim(&ctx, &[]).await
        {
            tracing::warn!(error = %e, "Looking for a run waiting on this one failed");
        }
    }
}

/// Sorts out records that must not be sent now: already in the ledger (skipped, or refused
/// when the body differs), sharing a key with a record in flight in this run, or claimed by
/// another live run (returned third, to wait).
async fn screen(
    ctx: &Ctx,
    chunk: Vec<Work>,
    inflight: &Inflight,
) -> (Vec<Work>, Vec<Settled>, Vec<Work>) {
    if !ctx.keeps_ledger {
        // A destination without a ledger (a file, stdout) has nothing to claim or look up:
        // records with one key in flight at once are still sent one after the other.
        return screen_in_flight(ctx, chunk, inflight, Default::default());
    }
    let keys: Vec<String> = chunk.iter().map(|w| w.idem.clone()).collect();
    // No record is sent without its claim: while the store does not answer, screening (and so
    // delivery) waits; when it gives up, nothing of the chunk is sent.
    let claims = match ctx
        .store_watch
        .patiently("claim_keys", || claim(ctx, &keys))
        .await
    {
        Ok(c) => c,
        Err(trouble) => {
            ctx.stop.stop(stop_reason(trouble));
            let back = chunk
                .into_iter()
                .map(|w| Settled::handed_back(w.pos))
                .collect();
            return (Vec::new(), back, Vec::new());
        }
    };
    screen_in_flight(ctx, chunk, inflight, claims)
}

/// Sorts a claimed chunk: delivered before (skipped or refused, or rekeyed), held by another
/// run (returned third, to wait), sharing a key with a record in flight, or ready.
fn screen_in_flight(
    ctx: &Ctx,
    chunk: Vec<Work>,
    inflight: &Inflight,
    claims: std::collections::HashMap<String, Claim>,
) -> (Vec<Work>, Vec<Settled>, Vec<Work>) {
    let mut held = Vec::new();
    let mut ready = Vec::with_capacity(chunk.len());
    let mut done = Vec::new();
    let mut inflight = match inflight.lock() {
        Ok(m) => m,
        Err(poisoned) => poisoned.into_inner(),
    };
    for mut w in chunk {
        let hit = match claims.get(&w.idem) {
            Some(Claim::Delivered(hit)) => Some(hit),
            Some(Claim::HeldBy(_)) => {
                held.push(w);
                continue;
            }
            Some(Claim::Claimed) | None => None,
        };
        if let Some(hit) = hit {
            if hit.body_hash == w.body_hash {
                done.push(Settled::Skipped { pos: w.pos });
            } else if ctx.rekey && !w.rekeyed {
                // Delivered before with another body: sent under a new key made with this
                // revision, claimed and screened like any key at the next recheck.
                w.idem = rekeyed(&w.idem, ctx.revision);
                w.rekeyed = true;
                held.push(w);
            } else {
                let err = format!(
                    "idempotency key `{}` was delivered before with a different body (run {}, revision {}); refused locally and not sent. To deliver the changed record, replay this entry with `ferry dlq replay <id> --rekey` (or backfill with `--rekey`): it is then sent under a new key made with the revision; or put the content into the key template (`{{{{ hash }}}}`)",
                    w.idem, hit.run_id, hit.revision
                );
                let mapped = w.mapped_value();
                let source = w.source;
                let entry = ctx.dead(
                    Some(w.idem),
                    source,
                    Some(mapped),
                    Failure::new(Stage::Deliver, "key_conflict", err, Vec::new()),
                );
                done.push(Settled::Dead { pos: w.pos, entry });
            }
            continue;
        }
        match inflight.get(&w.idem) {
            Some(h) if *h == w.body_hash => done.push(Settled::Skipped { pos: w.pos }),
            Some(_) => {
                let err = format!(
                    "two records of this run have idempotency key `{}` with different bodies; the second was not sent",
                    w.idem
                );
                let mapped = w.mapped_value();
                let source = w.source;
                let entry = ctx.dead(
                    Some(w.idem),
                    source,
                    Some(mapped),
                    Failure::new(Stage::Deliver, "key_conflict", err, Vec::new()),
                );
                done.push(Settled::Dead { pos: w.pos, entry });
            }
            None => {
                inflight.insert(w.idem.clone(), w.body_hash.clone());
                ready.push(w);
            }
        }
    }
    (ready, done, held)
}
/// How a run stops when the state store gave up on it.
pub(crate) fn stop_reason(trouble: StoreTrouble) -> StopReason {
    match trouble {
        StoreTrouble::Unreachable { for_, error } => StopReason::StoreUnreachable {
            for_,
            error: error.to_string(),
        },
        StoreTrouble::Failed(e) => StopReason::StoreFailed {
            error: e.to_string(),
        },
    }
}
