//! Consuming a queue: the channel is opened (and reopened after a loss) through the retry
//! layer, batches are what the broker delivered, and a run ends once the queue stayed idle.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_env::RunEnv;
use ferry_resilience::{CallScope, Observer, Stack};
use futures::{FutureExt as _, StreamExt as _};
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Consumer, message::Delivery};
use serde_json::{Value, json};

use super::acker::{AmqpAcker, Current};
use super::receipt;
use crate::amqp::{Broker, BrokerError, bytes_json, message_meta};
use crate::error::ConnectError;
use crate::source::{Acker, Batch, Source, SourceOptions, Unreadable};

/// A queue being consumed by one run.
pub struct AmqpConsumer {
    broker: Broker,
    spec: ferry_spec::AmqpSource,
    stack: Stack,
    scope: CallScope,
    current: Arc<Mutex<Current>>,
    consumer: Option<Consumer>,
    batches: u64,
    /// The queue stayed idle: no more batches, the consumer is cancelled.
    drained: bool,
    /// Never judge the queue idle: wait for messages until the run ends the read.
    follow: bool,
}

impl AmqpConsumer {
    /// Resolves the broker URL; nothing is connected until the first batch is asked for.
    pub fn new(
        spec: &ferry_spec::AmqpSource,
        env: &RunEnv,
        opts: &SourceOptions,
    ) -> Result<AmqpConsumer, ConnectError> {
        let broker = Broker::resolve(&spec.url, env, "source.amqp.url")?;
        let policy = crate::retry_policy(&spec.retry())
            .map_err(|e| ConnectError::Client(format!("source.amqp.retry: {e}")))?;
        let mut scope = CallScope::new();
        if let Some(c) = &opts.cancel {
            scope = scope.with_cancel(c);
        }
        let mut stack = Stack::new(policy);
        if let Some(seed) = &opts.backoff_seed {
            stack = stack.with_seed(seed.clone());
        }
        Ok(AmqpConsumer {
            broker,
            spec: spec.clone(),
            stack,
            scope,
            current: Arc::new(Mutex::new(Current::default())),
            consumer: None,
            batches: 0,
            drained: false,
            follow: opts.follow,
        })
    }

    fn failed(&self, reason: impl Into<String>) -> ConnectError {
        ConnectError::Broker {
            broker: self.broker.shown().to_string(),
            reason: reason.into(),
        }
    }

    /// Opens a connection and a channel, sets the prefetch, declares and binds the queue when
    /// asked to, and starts consuming — as one attempt of the retry layer.
    async fn open(&mut self) -> Result<(), ConnectError> {
        let spec = &self.spec;
        let broker = &self.broker;
        let mut watch = ReconnectWatch {
            broker: broker.shown(),
        };
        let opened = self
            .stack
            .call_in(&self.scope, &mut watch, |_| async {
                let conn = broker.connect().await?;
                let ch = conn
                    .create_channel()
                    .await
                    .map_err(|e| BrokerError::from_lapin("channel.open", &e))?;
                ch.basic_qos(spec.prefetch, BasicQosOptions::default())
                    .await
                    .map_err(|e| BrokerError::from_lapin("basic.qos", &e))?;
                if let Some(d) = &spec.declare {
                    ch.queue_declare(
                        spec.queue.as_str().into(),
                        QueueDeclareOptions::durable(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| {
                        BrokerError::from_lapin(&format!("declaring queue `{}`", spec.queue), &e)
                    })?;
                    for b in &d.bindings {
                        ch.queue_bind(
                            spec.queue.as_str().into(),
                            b.exchange.as_str().into(),
                            b.routing_key.as_str().into(),
                            QueueBindOptions::default(),
                            FieldTable::default(),
                        )
                        .await
                        .map_err(|e| {
                            BrokerError::from_lapin(
                                &format!(
                                    "binding queue `{}` to exchange `{}`",
                                    spec.queue, b.exchange
                                ),
                                &e,
                            )
                        })?;
                    }
                }
                let consumer = ch
                    .basic_consume(
                        spec.queue.as_str().into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| {
                        BrokerError::from_lapin(&format!("consuming queue `{}`", spec.queue), &e)
                    })?;
                Ok::<_, BrokerError>((conn, ch, consumer))
            })
            .await;
        match opened {
            Ok(done) => {
                let (conn, ch, consumer) = done.value;
                let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
                current.generation += 1;
                current.unacked.clear();
                current.channel = Some(ch);
                current.connection = Some(conn);
                drop(current);
                self.consumer = Some(consumer);
                Ok(())
            }
            Err(e) => Err(self.failed(e.to_string())),
        }
    }

    /// The channel was lost: its deliveries are the broker's again.
    fn lost(&mut self, why: &str) {
        tracing::warn!(broker = %self.broker.shown(), queue = %self.spec.queue, error = %why, "AMQP channel lost; reconnecting, unacknowledged messages are delivered again");
        self.consumer = None;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.channel = None;
        current.connection = None;
    }

    /// Stops the broker from delivering more (the channel stays open for acknowledgements).
    async fn drain(&mut self) {
        self.drained = true;
        if let Some(consumer) = self.consumer.take() {
            let channel = self
                .current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .channel
                .clone();
            if let Some(ch) = channel
                && let Err(e) = ch
                    .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                    .await
            {
                tracing::debug!(error = %e, "Could not cancel the consumer; the broker redelivers what it sent after the run ends");
            }
        }
    }

    /// One delivered message: a record with its metadata, or what could not be read.
    fn take(&self, d: Delivery, generation: u64, batch: &mut Batch) {
        let r = receipt(generation, d.delivery_tag);
        let meta = message_meta(
            d.exchange.as_str(),
            d.routing_key.as_str(),
            d.redelivered,
            &d.properties,
        );
        let limit = self.spec.max_message_bytes.0;
        let parsed = if d.data.len() as u64 > limit {
            Err(format!(
                "a message of {} bytes is larger than source.amqp.max_message_bytes ({limit} bytes)",
                d.data.len()
            ))
        } else {
            serde_json::from_slice::<Value>(&d.data).map_err(|e| format!("not JSON: {e}"))
        };
        match parsed {
            Ok(record) => {
                batch.records.push(record);
                batch.receipts.push(r);
                batch.meta.push(Arc::new(meta));
            }
            Err(reason) => batch.unreadable.push(Unreadable {
                receipt: Some(r),
                raw: json!({ "raw": bytes_json(&d.data), "meta": meta }),
                reason,
            }),
        }
    }
}

#[async_trait::async_trait]
impl Source for AmqpConsumer {
    async fn next_batch(&mut self) -> Result<Option<Batch>, ConnectError> {
        if self.drained {
            return Ok(None);
        }
        let idle: Duration = self.spec.idle.get();
        loop {
            if self.consumer.is_none() {
                self.open().await?;
            }
            let current = self.current.clone();
            let prefetch = usize::from(self.spec.prefetch);
            let Some(consumer) = self.consumer.as_mut() else {
                continue;
            };
            let first = match tokio::time::timeout(idle, consumer.next()).await {
                Err(_) if self.follow || window_full(&current, prefetch) => {
                    // Followed without end, or the broker waits for acknowledgements, not for
                    // messages: not idle.
                    continue;
                }
                Err(_) => {
                    self.drain().await;
                    return Ok(None);
                }
                Ok(None) => {
                    self.lost("the broker ended the consumer");
                    continue;
                }
                Ok(Some(Err(e))) => {
                    let why = BrokerError::from_lapin("consume", &e).reason;
                    self.lost(&why);
                    continue;
                }
                Ok(Some(Ok(d))) => d,
            };
            // Whatever else the broker already delivered joins the batch, up to the prefetch.
            let mut ready = vec![first];
            while ready.len() < usize::from(self.spec.prefetch) {
                match consumer.next().now_or_never() {
                    Some(Some(Ok(d))) => ready.push(d),
                    _ => break,
                }
            }
            let generation = {
                let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
                current.unacked.extend(ready.iter().map(|d| d.delivery_tag));
                current.generation
            };
            self.batches += 1;
            let mut batch = Batch {
                number: self.batches,
                origin: format!("amqp://{} queue `{}`", self.broker.shown(), self.spec.queue),
                records: Vec::with_capacity(ready.len()),
                receipts: Vec::with_capacity(ready.len()),
                meta: Vec::with_capacity(ready.len()),
                unreadable: Vec::new(),
            };
            for d in ready {
                self.take(d, generation, &mut batch);
            }
            return Ok(Some(batch));
        }
    }

    fn acker(&self) -> Option<Arc<dyn Acker>> {
        Some(Arc::new(AmqpAcker {
            current: self.current.clone(),
            broker: self.broker.shown().to_string(),
            prefetch: usize::from(self.spec.prefetch),
            sending: tokio::sync::Mutex::new(()),
        }))
    }
}

/// True while the broker holds back deliveries because the prefetch is used up by records not
/// yet acknowledged (still on their way through the run).
fn window_full(current: &Mutex<Current>, prefetch: usize) -> bool {
    current
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unacked
        .len()
        >= prefetch
}

/// Logs the reconnect attempts of the retry layer.
struct ReconnectWatch<'a> {
    broker: &'a str,
}

impl Observer for ReconnectWatch<'_> {
    fn retrying(&mut self, attempt: u32, wait: Duration, error: &dyn std::fmt::Display) {
        tracing::warn!(broker = %self.broker, attempt, wait_ms = wait.as_millis() as u64, error = %error, "Reconnecting to the AMQP broker");
    }
}
