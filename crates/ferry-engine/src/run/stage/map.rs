//! The map stage: each source record becomes the body and idempotency key of a request, or is
//! filtered, or fails into the dead-letter queue.
//!
//! [`Mapper`] is the part without I/O — the flow's compiled map, cursor path and key template,
//! compiled once per revision — shared by runs, replays and `ferry test`'s offline replay of
//! recorded sessions, so what a test shows is what a run sends.

use std::sync::Arc;

use bytes::Bytes;
use ferry_connect::{Batch, Sink};
use ferry_map::{CompiledMap, MapError, Mapped};
use ferry_spec::template::Root;
use ferry_spec::{JsonPath, LoadedFlow, Template};
use ferry_store::Stage;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::keys::{RecordVars, idempotency_key, record_key, sha256_hex};
use crate::run::ctx::Ctx;
use crate::run::outcome::{Failure, Pos, Settled, Work};

/// A flow's map, cursor path and idempotency key template, compiled once per revision.
pub struct Mapper {
    map: CompiledMap,
    cursor_path: Option<JsonPath>,
    key_template: Option<Template>,
    flow: String,
    /// The revision whose keys are made; `None` offline (`ferry test`), where a key template
    /// that uses what only a run knows is not evaluated.
    revision: Option<i64>,
    /// Where the key template is in the flow file (`destination.http.idempotency_key`).
    key_setting: String,
}

/// What one source record maps to.
pub enum MapOutcome {
    /// A record to deliver.
    Record(MappedRecord),
    /// The flow's filter dropped it (or a backfill's window ended before it).
    Filtered,
    /// An output field failed (`customer.email: required`).
    Failed(MapError),
    /// The mapped record is not JSON (a number out of range).
    Unencodable { record: Value, reason: String },
}

/// A mapped record with its request body and keys.
pub struct MappedRecord {
    pub record: Value,
    pub body: Bytes,
    /// sha256 of `body`, hex.
    pub body_hash: String,
    /// The record key (`map.key`'s value, else a hash of the source record).
    pub key: String,
    /// The idempotency key; an error when the key template cannot be rendered for this record
    /// (or, offline, uses something only a run knows).
    pub idem: Result<String, String>,
}

impl Mapper {
    /// Compiles a revision's map; `revision` is `None` offline.
    pub fn new(flow: &LoadedFlow, revision: Option<i64>) -> Result<Mapper, String> {
        let f = &flow.flow;
        let map = CompiledMap::compile(&f.map).map_err(|errs| {
            errs.iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        let cursor_path = match f.source.cursor() {
            Some(c) => Some(JsonPath::parse(&c.field).map_err(|e| e.to_string())?),
            None => None,
        };
        let key_setting = format!("{}.idempotency_key", f.destination.path());
        let key_template = match f.destination.idempotency_key() {
            Some(t) => Some(Template::parse(t).map_err(|e| format!("{key_setting}: {e}"))?),
            None => None,
        };
        Ok(Mapper {
            map,
            cursor_path,
            key_template,
            flow: f.name.clone(),
            revision,
            key_setting,
        })
    }

    /// The value of the cursor field in a source record, if it has one.
    pub fn cursor(&self, source: &Value) -> Option<Value> {
        self.cursor_path
            .as_ref()
            .and_then(|p| p.first(source))
            .filter(|v| !v.is_null())
            .cloned()
    }

    /// Where the key template is in the flow file (`destination.http.idempotency_key`).
    pub fn key_setting(&self) -> &str {
        &self.key_setting
    }

    /// The record key `map.key` gives a source record, if any.
    pub fn record_key(&self, source: &Value) -> Option<String> {
        self.map.key(source)
    }

    /// Offline (no revision): why idempotency keys cannot be computed — the key template uses
    /// what only a run knows (`flow.revision`, `env.*`, `cursor`) — or `None` when they can.
    pub fn offline_key_problem(&self) -> Option<String> {
        let t = self.key_template.as_ref()?;
        let v = t.vars().find(|v| match v.root {
            Root::Env | Root::Cursor => true,
            Root::Flow => v.path.first().map(String::as_str) != Some("name"),
            _ => false,
        })?;
        let mut name = v.root.name().to_string();
        for p in &v.path {
            name.push('.');
            name.push_str(p);
        }
        Some(format!(
            "{} uses `{name}`, which only a run knows",
            self.key_setting
        ))
    }

    /// Maps one source record.
    pub fn map(&self, source: &Value) -> MapOutcome {
        let record = match self.map.apply(source) {
            Ok(Mapped::Record(v)) => v,
            Ok(Mapped::Filtered) => return MapOutcome::Filtered,
            Err(e) => return MapOutcome::Failed(e),
        };
        // The body is the record's compact JSON, its fields in alphabetical order.
        let body = match serde_json::to_vec(&record) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                return MapOutcome::Unencodable {
                    record,
                    reason: format!("the mapped record cannot be encoded as JSON: {e}"),
                };
            }
        };
        let body_hash = sha256_hex(&body);
        let key = record_key(self.map.key(source), source);
        let idem = match (self.revision, self.offline_key_problem()) {
            (None, Some(why)) => Err(why),
            (revision, _) => idempotency_key(
                self.key_template.as_ref(),
                &RecordVars {
                    flow: &self.flow,
                    revision: revision.unwrap_or(0),
                    source,
                    record: &record,
                    key: &key,
                    hash: &body_hash,
                },
            )
            .map_err(|e| format!("{}: {e}", self.key_setting)),
        };
        MapOutcome::Record(MappedRecord {
            record,
            body,
            body_hash,
            key,
            idem,
        })
    }
}

/// What the map stage needs, compiled once per run.
pub(crate) struct MapStage {
    pub(crate) mapper: Mapper,
    pub(crate) sink: Arc<dyn Sink>,
    /// Records go in batches: their target is the sink's, not the record's.
    pub(crate) batched: bool,
    /// A backfill's upper bound: records with a later cursor value are filtered.
    pub(crate) until: Option<Value>,
}

pub(crate) async fn map_stage(
    ctx: Arc<Ctx>,
    stage: MapStage,
    mut rx: mpsc::Receiver<Batch>,
    work_tx: mpsc::Sender<Work>,
    settle_tx: mpsc::Sender<Settled>,
) {
    while let Some(batch) = rx.recv().await {
        // Records the source could not parse go to the dead-letter queue with their raw text
        // (as a JSON string): fixed with `ferry dlq edit`, they can be replayed.
        for u in batch.unreadable {
            let settled = if ctx.stop.is_stopped() {
                Settled::handed_back(Pos::default())
            } else {
                Settled::Dead {
                    pos: Pos::default(),
                    entry: ctx.dead(
                        None,
                        Value::String(u.raw),
                        None,
                        Failure::new(Stage::Map, "unreadable", u.error, Vec::new()),
                    ),
                }
            };
            if settle_tx.send(settled).await.is_err() {
                return;
            }
        }
        let mut receipts = batch.receipts.into_iter();
        for source in batch.records {
            let receipt = receipts.next();
            let sent = if ctx.stop.is_stopped() {
                // Read but not yet mapped: handed back to the next run.
                let pos = Pos {
                    cursor: None,
                    receipt,
                };
                settle_tx.send(Settled::handed_back(pos)).await.is_ok()
            } else {
                map_one(&ctx, &stage, source, receipt, &work_tx, &settle_tx).await
            };
            if !sent {
                return;
            }
        }
    }
}

/// Maps one record and hands it on; false when the next stage has stopped.
async fn map_one(
    ctx: &Ctx,
    stage: &MapStage,
    source: Value,
    receipt: Option<u64>,
    work_tx: &mpsc::Sender<Work>,
    settle_tx: &mpsc::Sender<Settled>,
) -> bool {
    let cursor = stage.mapper.cursor(&source);
    let past_window = match (&stage.until, &cursor) {
        (Some(until), Some(c)) => crate::cursor::cmp(c, until).is_gt(),
        _ => false,
    };
    let pos = Pos { cursor, receipt };
    if past_window {
        return settle_tx.send(Settled::Filtered { pos }).await.is_ok();
    }
    match prepare(ctx, stage, source, pos) {
        Ok(work) => work_tx.send(work).await.is_ok(),
        Err(settled) => settle_tx.send(*settled).await.is_ok(),
    }
}

/// Maps one record and prepares its request, or says how it settled instead.
pub(crate) fn prepare(
    ctx: &Ctx,
    stage: &MapStage,
    source: Value,
    pos: Pos,
) -> Result<Work, Box<Settled>> {
    let dead = |key, source, mapped, failure| {
        Box::new(Settled::Dead {
            pos: pos.clone(),
            entry: ctx.dead(key, source, mapped, failure),
        })
    };
    let m = match stage.mapper.map(&source) {
        MapOutcome::Record(m) => m,
        MapOutcome::Filtered => return Err(Box::new(Settled::Filtered { pos })),
        MapOutcome::Failed(e) => {
            let key = stage.mapper.record_key(&source);
            return Err(dead(
                key,
                source,
                None,
                Failure::new(Stage::Map, "mapping", e.to_string(), Vec::new()),
            ));
        }
        MapOutcome::Unencodable { record, reason } => {
            return Err(dead(
                None,
                source,
                Some(record),
                Failure::new(Stage::Validate, "encoding", reason, Vec::new()),
            ));
        }
    };
    let idem = match m.idem {
        Ok(k) => k,
        Err(e) => {
            return Err(dead(
                Some(m.key),
                source,
                Some(m.record),
                Failure::new(Stage::Validate, "template", e, Vec::new()),
            ));
        }
    };
    let target = if stage.batched {
        stage.sink.target(&|_| None)
    } else {
        let vars = RecordVars {
            flow: &ctx.flow,
            revision: ctx.revision,
            source: &source,
            record: &m.record,
            key: &m.key,
            hash: &m.body_hash,
        };
        stage.sink.target(&|v| vars.lookup(v))
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => {
            return Err(dead(
                Some(idem),
                source,
                Some(m.record),
                Failure::new(Stage::Validate, "template", e.to_string(), Vec::new()),
            ));
        }
    };
    drop(m.record);
    Ok(Work {
        source,
        idem,
        target,
        body: m.body,
        body_hash: m.body_hash,
        pos,
        rekeyed: false,
    })
}
