//! Publishing one record and classifying the broker's answer.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ferry_env::RunEnv;
use ferry_resilience::{ErrorClass, Outcome};
use ferry_spec::Template;
use ferry_spec::template::{Encoding, Root};
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection};

use crate::amqp::{Broker, BrokerError};
use crate::error::ConnectError;
use crate::sink::{Attempt, Lookup, RunTag, Sink};

/// A channel in confirm mode, and the connection it lives on.
struct Open {
    generation: u64,
    channel: Channel,
    _connection: Connection,
}

/// A prepared AMQP destination.
pub struct AmqpPublisher {
    broker: Broker,
    exchange: ShortString,
    routing_key: Template,
    env: RunEnv,
    mandatory: bool,
    persistent: bool,
    timeout: Duration,
    tag: RunTag,
    /// The channel publishes go on; `None` until the first publish, and after a loss.
    open: tokio::sync::Mutex<Option<Arc<Open>>>,
    generations: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for AmqpPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpPublisher")
            .field("broker", &self.broker)
            .field("exchange", &self.exchange.as_str())
            .field("routing_key", &self.routing_key.as_str())
            .finish()
    }
}

impl AmqpPublisher {
    /// Resolves the broker URL and parses the routing key template; nothing is connected until
    /// the first publish.
    pub fn new(
        spec: &ferry_spec::AmqpSink,
        env: &RunEnv,
        tag: &RunTag,
    ) -> Result<AmqpPublisher, ConnectError> {
        let broker = Broker::resolve(&spec.url, env, "destination.amqp.url")?;
        let routing_key =
            Template::parse(&spec.routing_key).map_err(|source| ConnectError::Template {
                field: "destination.amqp.routing_key",
                source,
            })?;
        let exchange = ShortString::try_new(spec.exchange.as_str()).map_err(|_| {
            ConnectError::Client("destination.amqp.exchange: longer than 255 bytes".into())
        })?;
        Ok(AmqpPublisher {
            broker,
            exchange,
            routing_key,
            env: env.clone(),
            mandatory: spec.mandatory,
            persistent: spec.persistent,
            timeout: spec.timeout.get(),
            tag: tag.clone(),
            open: tokio::sync::Mutex::new(None),
            generations: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The channel to publish on, opened now when there is none.
    async fn channel(&self) -> Result<Arc<Open>, BrokerError> {
        let mut open = self.open.lock().await;
        if let Some(o) = open.as_ref()
            && o.channel.status().connected()
        {
            return Ok(o.clone());
        }
        *open = None;
        let connection = self.broker.connect().await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| BrokerError::from_lapin("channel.open", &e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| BrokerError::from_lapin("confirm.select", &e))?;
        let generation = self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let o = Arc::new(Open {
            generation,
            channel,
            _connection: connection,
        });
        *open = Some(o.clone());
        Ok(o)
    }

    /// Forgets the channel of `generation` (lost, or closed by the broker): the next attempt
    /// opens a new one.
    async fn forget(&self, generation: u64) {
        let mut open = self.open.lock().await;
        if open.as_ref().is_some_and(|o| o.generation == generation) {
            *open = None;
        }
    }

    fn properties(&self, key: &str) -> Result<BasicProperties, Outcome> {
        let message_id = ShortString::try_new(key).map_err(|_| Outcome::Fail {
            reason: format!(
                "the idempotency key is {} bytes; an AMQP message_id holds at most 255",
                key.len()
            ),
        })?;
        let mut headers = FieldTable::default();
        headers.insert(
            "ferry-flow".into(),
            AMQPValue::LongString(LongString::from(self.tag.flow.as_str())),
        );
        headers.insert(
            "ferry-revision".into(),
            AMQPValue::LongLongInt(self.tag.revision),
        );
        headers.insert(
            "ferry-run-id".into(),
            AMQPValue::LongString(LongString::from(self.tag.run_id.as_str())),
        );
        for (k, v) in ferry_telemetry::trace::trace_context_headers() {
            if let Ok(k) = ShortString::try_new(k) {
                headers.insert(k, AMQPValue::LongString(LongString::from(v)));
            }
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut p = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(message_id)
            .with_timestamp(now)
            .with_headers(headers);
        if self.persistent {
            p = p.with_delivery_mode(2);
        }
        Ok(p)
    }

    /// One publish and its confirm.
    async fn publish(&self, routing_key: &str, key: &str, body: &[u8]) -> Outcome {
        let routing_key = match ShortString::try_new(routing_key) {
            Ok(r) => r,
            Err(_) => {
                return Outcome::Fail {
                    reason: format!(
                        "the routing key is {} bytes; AMQP allows at most 255",
                        routing_key.len()
                    ),
                };
            }
        };
        let props = match self.properties(key) {
            Ok(p) => p,
            Err(o) => return o,
        };
        let open = match self.channel().await {
            Ok(o) => o,
            Err(e) => return outcome(&self.broker, e),
        };
        let options = BasicPublishOptions {
            mandatory: self.mandatory,
            immediate: false,
        };
        let confirm = match open
            .channel
            .basic_publish(self.exchange.clone(), routing_key, options, body, props)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                self.forget(open.generation).await;
                return outcome(&self.broker, BrokerError::from_lapin("basic.publish", &e));
            }
        };
        match tokio::time::timeout(self.timeout, confirm).await {
            Err(_) => {
                // The channel may be stuck: the next attempt takes a fresh one.
                self.forget(open.generation).await;
                Outcome::Retry {
                    reason: format!(
                        "AMQP broker {}: no publisher confirm within {:?} (destination.amqp.timeout)",
                        self.broker.shown(),
                        self.timeout
                    ),
                    retry_after: None,
                }
            }
            Ok(Err(e)) => {
                self.forget(open.generation).await;
                outcome(
                    &self.broker,
                    BrokerError::from_lapin("publisher confirm", &e),
                )
            }
            Ok(Ok(Confirmation::Ack(None))) => Outcome::Success,
            Ok(Ok(Confirmation::Ack(Some(returned)))) => Outcome::Retry {
                reason: format!(
                    "AMQP broker {}: returned as unroutable ({} {}): no queue is bound to exchange `{}` for routing key `{}`",
                    self.broker.shown(),
                    returned.reply_code,
                    returned.reply_text,
                    self.exchange,
                    returned.delivery.routing_key
                ),
                retry_after: None,
            },
            Ok(Ok(Confirmation::Nack(_))) => Outcome::Retry {
                reason: format!(
                    "AMQP broker {}: the publish was nacked (the broker could not take it)",
                    self.broker.shown()
                ),
                retry_after: None,
            },
            Ok(Ok(Confirmation::NotRequested)) => Outcome::Retry {
                reason: format!(
                    "AMQP broker {}: the channel is not in confirm mode",
                    self.broker.shown()
                ),
                retry_after: None,
            },
        }
    }
}

/// A broker error as the outcome of an attempt.
fn outcome(broker: &Broker, e: BrokerError) -> Outcome {
    let reason = format!("AMQP broker {}: {}", broker.shown(), e.reason);
    match e.class {
        ErrorClass::Transient => Outcome::Retry {
            reason,
            retry_after: None,
        },
        ErrorClass::Permanent => Outcome::Fail { reason },
    }
}

#[async_trait::async_trait]
impl Sink for AmqpPublisher {
    fn target(&self, lookup: Lookup<'_>) -> Result<String, ConnectError> {
        self.routing_key
            .render(Encoding::Raw, |v| match v.root {
                Root::Env => self.env.var(&v.path.join(".")).map(Cow::Owned),
                _ => lookup(v),
            })
            .map_err(|source| ConnectError::Template {
                field: "destination.amqp.routing_key",
                source,
            })
    }

    fn origin<'a>(&self, target: &'a str) -> &'a str {
        // Every record goes to the same broker and exchange, whatever its routing key.
        &target[..0]
    }

    fn destination(&self, _origin: &str) -> String {
        format!(
            "amqp://{} exchange `{}`",
            self.broker.shown(),
            self.exchange
        )
    }

    async fn send(&self, target: &str, key: &str, body: Bytes) -> Attempt {
        let started = Instant::now();
        let outcome = Box::pin(self.publish(target, key, &body)).await;
        Attempt {
            status: None,
            outcome,
            took: started.elapsed(),
        }
    }
}
