//! RabbitMQ (AMQP 0-9-1) end to end: a queue → the sandbox's HTTP sink, the sandbox's HTTP
//! source → an exchange, record by record; unreadable messages; unroutable publishes; and the
//! reliability plan's T4 (source: SIGKILLs and connection cuts) and T5 (sink: connection cuts
//! and a queue unbound for a while) at CI size.
//!
//! Every test uses its own queue and exchange names and deletes them at the end. Connections are
//! cut with a TCP proxy the test owns (`ferry_testkit::proxy::Proxy`), never on the shared
//! broker; the tests that cut take one lock, so they run one after the other.
//!
//! Sizes: `FERRY_T4_MESSAGES` (default 10 000), `FERRY_T4_KILLS` (default 3), `FERRY_T4_CUTS`
//! (default 3), `FERRY_T5_RECORDS` (default 10 000), `FERRY_T5_CUTS` (default 3),
//! `FERRY_T5_UNBOUND_SECS` (default 3). The full-size runs (tests/RELIABILITY.md):
//! `FERRY_T4_MESSAGES=100000 FERRY_T4_KILLS=20 FERRY_T4_CUTS=10 FERRY_T5_RECORDS=100000
//! FERRY_T5_CUTS=10 FERRY_T5_UNBOUND_SECS=10 cargo test --release -p ferry-e2e --test amqp
//! -- --nocapture t4 t5`.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Guard, World, applied, expected_mapping, set_sink_faults, start_sandbox, world};
use ferry_e2e::ferry_bin;
use ferry_engine::{RunOptions, RunRequest};
use ferry_store::{RunStatus, Trigger};
use ferry_testkit::proxy::Proxy;
use futures::StreamExt as _;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{Value, json};

/// Tests that cut connections or kill processes run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A name no other test (or earlier run) uses.
fn unique(prefix: &str) -> String {
    format!("ferry-test-{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// The broker's `host:port`, for a proxy in front of it.
fn broker_addr(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let hp = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5672")
    };
    hp.to_socket_addrs().unwrap().next().unwrap()
}

/// The password in a broker URL (empty when it has none).
fn password_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, p)| p.to_string())
        .unwrap_or_default()
}

/// `url` with its host and port replaced by the proxy's.
fn through(url: &str, proxy: &Proxy) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let userinfo = authority.rsplit_once('@').map(|(u, _)| u);
    match userinfo {
        Some(u) => format!("{scheme}://{u}@{}/{path}", proxy.addr()),
        None => format!("{scheme}://{}/{path}", proxy.addr()),
    }
}

/// A test's own connection to the broker, to set up queues, publish and read back.
struct Rabbit {
    _conn: Connection,
    ch: Channel,
}

impl Rabbit {
    async fn connect(url: &str) -> Rabbit {
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("the test connects to RabbitMQ");
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Rabbit { _conn: conn, ch }
    }

    async fn queue(&self, name: &str) {
        self.ch
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
    }

    async fn exchange(&self, name: &str) {
        self.ch
            .exchange_declare(
                name.into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
    }

    async fn bind(&self, queue: &str, exchange: &str, key: &str) {
        self.ch
            .queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }

    async fn unbind(&self, queue: &str, exchange: &str, key: &str) {
        self.ch
            .queue_unbind(
                queue.into(),
                exchange.into(),
                key.into(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }

    /// Publishes `bodies` to `queue` through the default exchange, with a `tenant` header, and
    /// waits for every confirm.
    async fn publish(&self, queue: &str, bodies: impl IntoIterator<Item = Vec<u8>>) {
        let mut pending = Vec::new();
        for (i, body) in bodies.into_iter().enumerate() {
            let mut h = FieldTable::default();
            h.insert(
                "tenant".into(),
                AMQPValue::LongString(LongString::from("acme")),
            );
            let props = BasicProperties::default()
                .with_message_id(format!("m-{i}").into())
                .with_headers(h);
            pending.push(
                self.ch
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions::default(),
                        &body,
                        props,
                    )
                    .await
                    .unwrap(),
            );
            if pending.len() >= 1000 {
                for c in pending.drain(..) {
                    assert!(c.await.unwrap().is_ack());
                }
            }
        }
        for c in pending {
            assert!(c.await.unwrap().is_ack());
        }
    }

    /// Messages ready in `queue`.
    async fn count(&self, queue: &str) -> u32 {
        self.ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count()
    }

    /// Every message in `queue`, consumed and acknowledged.
    /// Takes every message the queue holds (as many as the broker counts in it, each waited
    /// for up to 10 s, so a loaded broker's pause does not end the drain early).
    async fn drain(&self, queue: &str) -> Vec<lapin::message::Delivery> {
        let expected = self.count(queue).await as usize;
        let mut out = Vec::new();
        let mut consumer = self
            .ch
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        while out.len() < expected
            && let Ok(Some(Ok(d))) =
                tokio::time::timeout(Duration::from_secs(10), consumer.next()).await
        {
            out.push(d);
        }
        let _ = self
            .ch
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await;
        out
    }

    async fn delete(&self, queues: &[&str], exchanges: &[&str]) {
        for q in queues {
            let _ = self
                .ch
                .queue_delete((*q).into(), QueueDeleteOptions::default())
                .await;
        }
        for e in exchanges {
            let _ = self
                .ch
                .exchange_delete((*e).into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
}

/// A simple order message.
fn order(i: u64) -> Value {
    json!({"id": i, "number": format!("A-{i}"), "total": i * 3})
}

/// A flow from `queue` to the sandbox's HTTP sink, reading `$meta`.
fn queue_to_http(name: &str, queue: &str) -> String {
    format!(
        r#"
name: {name}
source:
  amqp:
    url: "{{{{ env.AMQP_URL }}}}"
    queue: {queue}
    idle: 1s
map:
  key: "$.id"
  fields:
    order_ref: "$.number"
    total: "$.total"
    tenant: "$meta.headers.tenant"
    via: "$meta.routing_key"
destination:
  http:
    method: PUT
    url: "{{{{ env.WMS_URL }}}}/v2/orders/{{{{ record.order_ref }}}}"
    idempotency_key: "order-{{{{ source.id }}}}"
    concurrency: 16
policy:
  retry: {{ attempts: 6, initial: 50ms, max: 1s, jitter: full }}
"#
    )
}

/// The example flow, delivering to `exchange` instead of HTTP.
fn http_to_exchange(exchange: &str, retry: &str, extra_policy: &str) -> String {
    let text = ferry_e2e::example_flow();
    let start = text.find("destination:").unwrap();
    let mut out = text[..start].to_string();
    out.push_str(&format!(
        r#"destination:
  amqp:
    url: "{{{{ env.AMQP_URL }}}}"
    exchange: {exchange}
    routing_key: "orders.{{{{ record.priority }}}}"
    idempotency_key: "order-{{{{ source.id }}}}-{{{{ source.changed_at }}}}"
    concurrency: 64
policy:
  retry: {retry}
{extra_policy}"#
    ));
    let tests = text.find("tests:").unwrap();
    out.push_str(&text[tests..]);
    out.replace("schedule:\n  cron: \"0 * * * *\"\n  overlap: skip\n", "")
}

/// `w`'s environment with the broker URL.
fn with_amqp(w: &mut World, url: &str) {
    w.env.set_var("AMQP_URL", url);
}

async fn dead_letters(w: &World) -> Vec<ferry_store::DeadLetter> {
    w.store
        .dead_letters(&ferry_store::DlqFilter {
            flow: Some(w.flow.flow.name.clone()),
            limit: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_to_http_record_by_record() {
    let Some(url) = ferry_testkit::rabbitmq_url("amqp_to_http_record_by_record") else {
        return;
    };
    let rabbit = Rabbit::connect(&url).await;
    let queue = unique("in");
    rabbit.queue(&queue).await;
    const N: u64 = 500;
    rabbit
        .publish(&queue, (1..=N).map(|i| order(i).to_string().into_bytes()))
        .await;
    let mut w = world(0, Some(&queue_to_http("queue-to-http", &queue))).await;
    with_amqp(&mut w, &url);
    let run = w.run().await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(run.counts.fetched, N);
    assert_eq!(run.counts.delivered, N);
    let applied = w.sandbox.sink().applied();
    assert_eq!(applied.len() as u64, N);
    let by_ref: HashMap<String, &ferry_sandbox::sink::AppliedRecord> = applied
        .iter()
        .map(|a| (a.body["order_ref"].as_str().unwrap().to_string(), a))
        .collect();
    for i in 1..=N {
        let a = by_ref[&format!("A-{i}")];
        assert_eq!(a.times_applied, 1);
        assert_eq!(a.key, format!("order-{i}"));
        assert_eq!(
            a.body,
            json!({"order_ref": format!("A-{i}"), "total": i * 3, "tenant": "acme", "via": queue})
        );
    }
    // Acknowledged once committed: the queue is empty.
    assert_eq!(rabbit.count(&queue).await, 0);

    // The same messages again (a redelivery looks the same): the ledger skips them.
    rabbit
        .publish(&queue, (1..=10).map(|i| order(i).to_string().into_bytes()))
        .await;
    let again = w.run().await;
    assert_eq!(again.status, RunStatus::Succeeded, "{:?}", again.error);
    assert_eq!((again.counts.fetched, again.counts.skipped), (10, 10));
    assert_eq!(w.sandbox.sink().applied().len() as u64, N);
    assert_eq!(rabbit.count(&queue).await, 0);
    rabbit.delete(&[&queue], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_not_json_or_too_large_is_dead_lettered_and_acknowledged() {
    let test = "a_message_that_is_not_json_or_too_large_is_dead_lettered_and_acknowledged";
    let Some(url) = ferry_testkit::rabbitmq_url(test) else {
        return;
    };
    let rabbit = Rabbit::connect(&url).await;
    let queue = unique("bad");
    rabbit.queue(&queue).await;
    let big = json!({"id": 3, "number": "A-3", "pad": "x".repeat(2048)});
    rabbit
        .publish(
            &queue,
            [
                order(1).to_string().into_bytes(),
                b"<html>not json</html>".to_vec(),
                vec![0xff, 0xfe, b'{'],
                big.to_string().into_bytes(),
                order(2).to_string().into_bytes(),
                // Nested deeper than the JSON parser goes: refused, not a stack overflow.
                "[".repeat(900).into_bytes(),
            ],
        )
        .await;
    let flow = queue_to_http("unreadable", &queue).replace(
        "    idle: 1s\n",
        "    idle: 1s\n    max_message_bytes: 1KiB\n",
    );
    let mut w = world(0, Some(&flow)).await;
    with_amqp(&mut w, &url);
    let run = w.run().await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(
        (
            run.counts.fetched,
            run.counts.delivered,
            run.counts.dead_lettered
        ),
        (6, 2, 4)
    );
    let mut dead = dead_letters(&w).await;
    dead.sort_by_key(|d| d.error.clone());
    let raws: Vec<&Value> = dead.iter().map(|d| &d.source_record["raw"]).collect();
    assert!(raws.contains(&&json!("<html>not json</html>")), "{raws:?}");
    assert!(raws.contains(&&json!({"base64": "//57"})), "{raws:?}");
    assert!(raws.contains(&&json!(big.to_string())), "{raws:?}");
    for d in &dead {
        assert_eq!(d.error_class, "unreadable");
        assert_eq!(d.source_record["meta"]["routing_key"], json!(queue));
        assert!(
            d.error.starts_with("not JSON") || d.error.contains("max_message_bytes"),
            "{}",
            d.error
        );
    }
    // Dead-lettered, then acknowledged: nothing is left in the queue.
    assert_eq!(rabbit.count(&queue).await, 0);
    rabbit.delete(&[&queue], &[]).await;
}

/// With the sink stalled, the broker holds exactly the prefetch unacknowledged (the records in
/// flight) and nothing leaves the queue; stopped, the run gives them back; the next run
/// delivers everything once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_is_acknowledged_before_its_outcome_is_committed() {
    let test = "no_message_is_acknowledged_before_its_outcome_is_committed";
    let Some(url) = ferry_testkit::rabbitmq_url(test) else {
        return;
    };
    let rabbit = Rabbit::connect(&url).await;
    let queue = unique("stall");
    rabbit.queue(&queue).await;
    const N: u32 = 1000;
    const PREFETCH: u32 = 100;
    rabbit
        .publish(
            &queue,
            (1..=u64::from(N)).map(|i| order(i).to_string().into_bytes()),
        )
        .await;
    let flow = queue_to_http("stall", &queue)
        .replace(
            "    idle: 1s\n",
            &format!("    idle: 1s\n    prefetch: {PREFETCH}\n"),
        )
        .replace(
            "retry: { attempts: 6, initial: 50ms, max: 1s, jitter: full }",
            "retry: { attempts: 100, initial: 100ms, max: 1s, jitter: full, max_elapsed: 10m }\n  circuit_breaker: { enabled: false }",
        );
    let mut w = world(0, Some(&flow)).await;
    with_amqp(&mut w, &url);
    w.sandbox.sink().set_down(true);
    let (stop, cancel) = tokio::sync::watch::channel(false);
    let req = RunRequest {
        flow: Arc::new(w.flow.clone()),
        revision: w.revision,
        env: w.env.clone(),
        trigger: Trigger::Manual,
    };
    let run = tokio::spawn(ferry_engine::execute(
        w.store.clone(),
        req,
        RunOptions {
            cancel: Some(cancel),
            ..RunOptions::default()
        },
    ));
    // The broker hands over the prefetch and then waits for acknowledgements that do not come.
    let started = Instant::now();
    let mut ready = rabbit.count(&queue).await;
    while ready != N - PREFETCH && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        ready = rabbit.count(&queue).await;
    }
    assert_eq!(ready, N - PREFETCH, "unacknowledged = records in flight");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rabbit.count(&queue).await,
        N - PREFETCH,
        "nothing acknowledged"
    );
    stop.send(true).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run stops")
        .unwrap()
        .unwrap();
    assert_eq!(stopped.status, RunStatus::Incomplete, "{:?}", stopped.error);
    assert_eq!(stopped.counts.delivered, 0);
    assert_eq!(stopped.counts.handed_back, u64::from(PREFETCH));
    // Given back: every message is ready again.
    let started = Instant::now();
    while rabbit.count(&queue).await != N && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rabbit.count(&queue).await, N);
    w.sandbox.sink().set_down(false);
    let run = w.run().await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(run.counts.delivered, u64::from(N));
    assert_eq!(w.sandbox.sink().applied().len(), N as usize);
    assert_eq!(rabbit.count(&queue).await, 0);
    rabbit.delete(&[&queue], &[]).await;
}

/// `max_records` (`ferry run --max-records`) stops reading a queue after the batch that reaches
/// it; the rest stays in the queue for the next run, and the run succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_limited_to_some_records_leaves_the_rest_in_the_queue() {
    let test = "a_run_limited_to_some_records_leaves_the_rest_in_the_queue";
    let Some(url) = ferry_testkit::rabbitmq_url(test) else {
        return;
    };
    let rabbit = Rabbit::connect(&url).await;
    let queue = unique("limit");
    rabbit.queue(&queue).await;
    const N: u64 = 300;
    rabbit
        .publish(&queue, (1..=N).map(|i| order(i).to_string().into_bytes()))
        .await;
    let flow = queue_to_http("limited", &queue)
        .replace("    idle: 1s\n", "    idle: 1s\n    prefetch: 50\n");
    let mut w = world(0, Some(&flow)).await;
    with_amqp(&mut w, &url);
    let first = w
        .run_with(RunOptions {
            max_records: Some(100),
            ..RunOptions::default()
        })
        .await;
    assert_eq!(first.status, RunStatus::Succeeded, "{:?}", first.error);
    let read = first.counts.fetched;
    assert!((100..150).contains(&read), "read {read}");
    assert_eq!(first.counts.delivered, read);
    // What the run did not read (some of it delivered to the consumer and never taken) is
    // ready again once its channel is gone.
    let started = Instant::now();
    while u64::from(rabbit.count(&queue).await) != N - read
        && started.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(u64::from(rabbit.count(&queue).await), N - read);
    let rest = w.run().await;
    assert_eq!(rest.status, RunStatus::Succeeded, "{:?}", rest.error);
    assert_eq!(rest.counts.delivered, N - read);
    assert_eq!(w.sandbox.sink().applied().len() as u64, N);
    assert_eq!(rabbit.count(&queue).await, 0);
    rabbit.delete(&[&queue], &[]).await;
}

/// Sets up `exchange` → `queue` (bound for `orders.normal` and `orders.high`).
async fn exchange_to_queue(rabbit: &Rabbit, exchange: &str, queue: &str) {
    rabbit.exchange(exchange).await;
    rabbit.queue(queue).await;
    for k in ["orders.normal", "orders.high"] {
        rabbit.bind(queue, exchange, k).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_amqp_record_by_record() {
    let Some(url) = ferry_testkit::rabbitmq_url("http_to_amqp_record_by_record") else {
        return;
    };
    let rabbit = Rabbit::connect(&url).await;
    let (exchange, queue) = (unique("ex"), unique("out"));
    exchange_to_queue(&rabbit, &exchange, &queue).await;
    const N: u64 = 600;
    let flow = http_to_exchange(&exchange, "{ attempts: 4, initial: 50ms, max: 1s }", "");
    let mut w = world(N, Some(&flow)).await;
    with_amqp(&mut w, &url);
    let run = w.run().await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    let messages = rabbit.drain(&queue).await;
    assert_eq!(messages.len() as u64, run.counts.delivered);
    let mut seen = HashSet::new();
    for m in &messages {
        let body: Value = serde_json::from_slice(&m.data).unwrap();
        let id: u64 = body["order_ref"]
            .as_str()
            .unwrap()
            .trim_start_matches("A-")
            .parse()
            .unwrap();
        assert!(seen.insert(id), "order {id} published twice");
        let src = w.sandbox.source().record(id).unwrap();
        assert_eq!(Some(&body), expected_mapping(&src).as_ref(), "order {id}");
        assert_eq!(
            m.routing_key.as_str(),
            format!("orders.{}", body["priority"].as_str().unwrap())
        );
        let p = &m.properties;
        assert_eq!(
            p.message_id().as_ref().map(|s| s.as_str().to_string()),
            Some(format!(
                "order-{id}-{}",
                src["changed_at"].as_str().unwrap()
            ))
        );
        assert_eq!(*p.delivery_mode(), Some(2), "persistent");
        let h = p.headers().as_ref().unwrap().inner();
        assert_eq!(
            h.get("ferry-flow"),
            Some(&AMQPValue::LongString("orders-to-warehouse".into()))
        );
        assert_eq!(
            h.get("ferry-revision"),
            Some(&AMQPValue::LongLongInt(w.revision))
        );
        assert_eq!(
            h.get("ferry-run-id"),
            Some(&AMQPValue::LongString(run.id.to_string().into()))
        );
    }
    // Every record that is not a draft was published once.
    let expected: HashSet<u64> = (1..=N)
        .filter(|i| expected_mapping(&w.sandbox.source().record(*i).unwrap()).is_some())
        .collect();
    assert_eq!(seen, expected);
    rabbit.delete(&[&queue], &[&exchange]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_publish_is_never_delivered_and_ends_in_the_dlq() {
    let test = "an_unroutable_publish_is_never_delivered_and_ends_in_the_dlq";
    let Some(url) = ferry_testkit::rabbitmq_url(test) else {
        return;
    };
    let rabbit = Rabbit::connect(&url).await;
    let exchange = unique("nowhere");
    rabbit.exchange(&exchange).await; // no queue bound
    const N: u64 = 40;
    let flow = http_to_exchange(
        &exchange,
        "{ attempts: 3, initial: 10ms, max: 50ms, max_elapsed: 10s }",
        // The broker answers every publish: the destination is not down, the route is missing.
        // With the breaker on, failed publishes would open it and records would wait for it.
        "  circuit_breaker: { enabled: false }\n",
    );
    let mut w = world(N, Some(&flow)).await;
    with_amqp(&mut w, &url);
    let run = w.run().await;
    assert_eq!(run.counts.delivered, 0, "{:?}", run.error);
    assert_eq!(run.counts.dead_lettered + run.counts.filtered, N);
    let dead = dead_letters(&w).await;
    assert_eq!(dead.len() as u64, run.counts.dead_lettered);
    for d in &dead {
        assert_eq!(d.error_class, "retries_exhausted");
        assert!(d.error.contains("unroutable"), "{}", d.error);
        assert_eq!(d.attempts.len(), 3);
    }
    let keys: Vec<String> = dead.iter().filter_map(|d| d.key.clone()).collect();
    let hits = w
        .store
        .ledger_lookup(&w.flow.flow.name, &w.env.name, &keys)
        .await
        .unwrap();
    assert!(hits.is_empty(), "an unroutable record is in the ledger");
    rabbit.delete(&[], &[&exchange]).await;
}

/// T4 at CI size: messages in a queue go to the HTTP sink while `ferry run` is SIGKILLed and
/// its connections to the broker are cut; at the end the sink applied every message exactly
/// once, by its own count, and the queue is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4_amqp_source_survives_kills_and_cuts() {
    let Some(url) = ferry_testkit::rabbitmq_url("t4_amqp_source_survives_kills_and_cuts") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let messages = env_or("FERRY_T4_MESSAGES", 10_000);
    let kills = env_or("FERRY_T4_KILLS", 3);
    let cuts = env_or("FERRY_T4_CUTS", 3);
    eprintln!("T4: {messages} messages, {kills} kills, {cuts} cuts");
    let rabbit = Rabbit::connect(&url).await;
    let queue = unique("t4");
    rabbit.queue(&queue).await;
    rabbit
        .publish(
            &queue,
            (1..=messages).map(|i| order(i).to_string().into_bytes()),
        )
        .await;
    let proxy = Proxy::start(broker_addr(&url)).await.unwrap();
    let via_proxy = through(&url, &proxy);
    let (_sandbox, base, client) = start_sandbox(1).await;
    // A little latency so that kills and cuts land mid-delivery.
    set_sink_faults(&client, &base, json!({"latency_ms": 1, "seed": 1})).await;
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("t4.yaml");
    std::fs::write(
        &flow,
        queue_to_http("t4", &queue).replace("idle: 1s", "idle: 3s"),
    )
    .unwrap();
    let state = dir.path().display().to_string();
    // Output goes to a file: a pipe nobody reads while the run goes on could fill up.
    let log = dir.path().join("run.log");
    let spawn = || {
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        Command::new(ferry_bin())
            .args([
                "--state",
                state.as_str(),
                "run",
                flow.to_str().unwrap(),
                "--no-progress",
            ])
            .env("AMQP_URL", &via_proxy)
            .env("WMS_URL", format!("{base}/api/sink"))
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap()
    };
    let mut seed: u64 = 0x7e57_4a11;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut killed, mut cut) = (0, 0);
    let applied_count = || async {
        let stats: Value = client
            .get(format!("{base}/_sandbox/sink/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stats["applied"].as_u64().unwrap()
    };
    for round in 0..kills + 20 {
        let mut child = Guard(spawn());
        if killed < kills {
            let at = Duration::from_millis(400 + next() % 1500);
            tokio::time::sleep(at).await;
            if child.0.try_wait().unwrap().is_none() {
                child.0.kill().unwrap(); // SIGKILL
                let _ = child.0.wait();
                killed += 1;
                let n = applied_count().await;
                eprintln!("round {round}: killed after {at:?}, {n} applied so far");
                assert!(n < messages, "killed after the work was done");
                continue;
            }
        }
        // Cut the connections while the run goes on.
        let limit = Instant::now() + Duration::from_secs(300);
        let status = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < limit, "ferry run hung");
            if cut < cuts {
                tokio::time::sleep(Duration::from_millis(300 + next() % 700)).await;
                if child.0.try_wait().unwrap().is_none() {
                    proxy.reset_connections();
                    cut += 1;
                    eprintln!("round {round}: connections cut ({cut})");
                }
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(status.code(), Some(0), "{output}");
        // The broker's URL carries its password; no line of the run shows it.
        let password = password_of(&url);
        assert!(
            password.is_empty() || !output.contains(&format!(":{password}@")),
            "the broker URL with its password is in the run's output"
        );
        if cut > 0 {
            // The run went on through the cuts: it reconnected instead of failing.
            assert!(output.contains("AMQP channel lost"), "{output}");
        }
        if rabbit.count(&queue).await == 0 && cut >= cuts {
            eprintln!("round {round}: queue drained");
            break;
        }
    }
    assert_eq!(killed, kills, "the runs were too quick to be killed");
    let _ = applied_count;
    assert_eq!(cut, cuts, "the runs were too quick to be cut");
    // The sink's own count: every message applied, none twice.
    let (per_order, twice) = applied(&client, &base).await;
    assert_eq!(twice, 0, "a key was applied twice");
    let dup: Vec<_> = per_order.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "duplicate effects: {dup:?}");
    assert_eq!(per_order.len() as u64, messages, "lost messages");
    assert_eq!(
        rabbit.count(&queue).await,
        0,
        "messages left unacknowledged"
    );
    rabbit.delete(&[&queue], &[]).await;
}

/// T5 at CI size: records go from the sandbox's HTTP source to an exchange while the
/// connections are cut and the target queue is unbound for a while; every record marked
/// delivered is in the queue, an unroutable one is never marked delivered, and what ran out of
/// retries is in the DLQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5_amqp_sink_marks_delivered_only_what_is_in_the_queue() {
    let test = "t5_amqp_sink_marks_delivered_only_what_is_in_the_queue";
    let Some(url) = ferry_testkit::rabbitmq_url(test) else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let records = env_or("FERRY_T5_RECORDS", 10_000);
    let cuts = env_or("FERRY_T5_CUTS", 3);
    let unbound = Duration::from_secs(env_or("FERRY_T5_UNBOUND_SECS", 3));
    eprintln!("T5: {records} records, {cuts} cuts, unbound for {unbound:?}");
    let rabbit = Rabbit::connect(&url).await;
    let (exchange, queue) = (unique("t5ex"), unique("t5"));
    exchange_to_queue(&rabbit, &exchange, &queue).await;
    let proxy = Proxy::start(broker_addr(&url)).await.unwrap();
    // Retries outlast a cut but not the unbound window: some records run out of retries. A
    // rate limit makes the run last long enough for the trouble.
    let rate = env_or("FERRY_T5_RATE", 1500);
    let flow = http_to_exchange(
        &exchange,
        "{ attempts: 4, initial: 100ms, max: 400ms, max_elapsed: 30s }",
        &format!(
            "  rate_limit: {{ per_second: {rate} }}\n  circuit_breaker: {{ enabled: false }}\n"
        ),
    );
    let mut w = world(records, Some(&flow)).await;
    with_amqp(&mut w, &through(&url, &proxy));
    let req = RunRequest {
        flow: Arc::new(w.flow.clone()),
        revision: w.revision,
        env: w.env.clone(),
        trigger: Trigger::Manual,
    };
    let store = w.store.clone();
    let run = tokio::spawn(ferry_engine::execute(store, req, RunOptions::default()));
    let trouble = async {
        for i in 0..cuts {
            tokio::time::sleep(Duration::from_millis(700)).await;
            proxy.reset_connections();
            eprintln!("cut {}", i + 1);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        for k in ["orders.normal", "orders.high"] {
            rabbit.unbind(&queue, &exchange, k).await;
        }
        eprintln!("queue unbound");
        tokio::time::sleep(unbound).await;
        for k in ["orders.normal", "orders.high"] {
            rabbit.bind(&queue, &exchange, k).await;
        }
        eprintln!("queue bound again");
    };
    trouble.await;
    let run = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("the run finishes")
        .unwrap()
        .unwrap();
    eprintln!("run: {:?} {:?}", run.counts, run.error);
    let c = run.counts;
    assert_eq!(c.fetched, records);
    assert_eq!(
        c.delivered + c.dead_lettered + c.filtered + c.skipped + c.handed_back,
        records
    );
    assert!(
        c.dead_lettered > 0,
        "the unbound window dead-lettered nothing: {c:?}"
    );
    assert!(c.delivered > 0);

    // What the ledger says was delivered, by key.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", w.state_file().display()))
        .await
        .unwrap();
    let delivered: Vec<(String,)> = sqlx::query_as(
        "SELECT l.key FROM ledger l JOIN scopes s ON s.id = l.scope WHERE s.flow = ?",
    )
    .bind(&w.flow.flow.name)
    .fetch_all(&pool)
    .await
    .unwrap();
    let delivered: HashSet<String> = delivered.into_iter().map(|(k,)| k).collect();
    assert_eq!(delivered.len() as u64, c.delivered);
    // What is in the queue, by message_id.
    let in_queue: HashSet<String> = rabbit
        .drain(&queue)
        .await
        .iter()
        .filter_map(|m| {
            m.properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str().to_string())
        })
        .collect();
    let missing: Vec<_> = delivered.difference(&in_queue).collect();
    assert!(
        missing.is_empty(),
        "{} records marked delivered are not in the queue: {:?}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    // What ran out of retries is in the DLQ, never in the ledger.
    let dead = dead_letters(&w).await;
    assert_eq!(dead.len() as u64, c.dead_lettered);
    for d in &dead {
        let key = d.key.clone().unwrap();
        assert!(!delivered.contains(&key), "{key} both delivered and dead");
        assert_eq!(d.error_class, "retries_exhausted", "{}", d.error);
    }
    assert!(
        dead.iter().any(|d| d.error.contains("unroutable")),
        "no dead letter says unroutable"
    );
    rabbit.delete(&[&queue], &[&exchange]).await;
}

/// The example flows load, with the kinds they show; their revision hashes are pinned, so a
/// new setting's default that leaked into the canonical form would show here.
#[test]
fn the_example_amqp_flows_load() {
    let root = ferry_e2e::workspace().join("flows");
    let from_queue = ferry_spec::load_file(&root.join("amqp-to-http.yaml")).unwrap();
    let src = from_queue.flow.source.amqp().expect("an AMQP source");
    assert_eq!(src.queue, "shop.orders");
    assert!(from_queue.flow.destination.http().is_some());
    let to_exchange = ferry_spec::load_file(&root.join("http-to-amqp.yaml")).unwrap();
    let dst = to_exchange
        .flow
        .destination
        .amqp()
        .expect("an AMQP destination");
    assert_eq!(dst.exchange, "orders");
    assert!(dst.mandatory && dst.persistent);
    assert_eq!(&from_queue.hash[..12], "d5049052bb98");
    assert_eq!(&to_exchange.hash[..12], "3f15a7978866");
}

/// Starts `ferry serve` in `dir` with `envs`, its output in `<name>.log` there.
fn spawn_serve(
    dir: &std::path::Path,
    envs: &[(&str, &str)],
    name: &str,
) -> (Guard, std::path::PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(ferry_bin());
    cmd.args(["serve", "--drain-timeout", "10s", "--no-api"])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .env_remove("FERRY_STATE")
        .env_remove("FERRY_DATABASE")
        .env_remove("FERRY_ENV");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    (Guard(cmd.spawn().unwrap()), log)
}

/// Sends SIGTERM to `serve` and waits (bounded) for it to exit; returns whether it exited 0.
async fn terminate(serve: &mut Guard, limit: Duration) -> bool {
    let ok = Command::new("kill")
        .args(["-TERM", &serve.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let started = Instant::now();
    loop {
        if let Some(s) = serve.0.try_wait().unwrap() {
            return s.success();
        }
        assert!(started.elapsed() < limit, "ferry serve did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sink's applied records: order reference → (body, times applied).
async fn sink_bodies(client: &reqwest::Client, base: &str) -> HashMap<String, (Value, u64)> {
    let page: Value = client
        .get(format!("{base}/_sandbox/sink/records?limit=10000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["body"]["order_ref"].as_str().unwrap().to_string(),
                (r["body"].clone(), r["times_applied"].as_u64().unwrap()),
            )
        })
        .collect()
}

/// Polls `ready` every 100 ms until it holds or `limit` passes (then fails with `what`).
async fn eventually<F, Fut>(limit: Duration, what: &str, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !ready().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Under `ferry serve`, a flow that consumes a queue and has no schedule runs continuously:
/// runs of trigger `stream`, each ending after `serve.records` records or `serve.period` after
/// its first record, and at a change of the active revision, whose runs then carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_flow_runs_continuously_under_serve_cut_into_runs() {
    let test = "a_queue_flow_runs_continuously_under_serve_cut_into_runs";
    let Some(url) = ferry_testkit::rabbitmq_url(test) else {
        return;
    };
    let limit = Duration::from_secs(60);
    let rabbit = Rabbit::connect(&url).await;
    let queue = unique("serve");
    rabbit.queue(&queue).await;
    let (_sandbox, base, client) = start_sandbox(1).await;
    let dir = tempfile::tempdir().unwrap();
    let envs = [
        ("AMQP_URL", url.as_str()),
        ("WMS_URL", &format!("{base}/api/sink")),
        ("FERRY_USER", "alice"),
    ];
    let ferry = |args: &[&str]| {
        let out = ferry_e2e::run_ferry(args, &envs, dir.path(), limit);
        assert_eq!(
            out.status.code(),
            Some(0),
            "ferry {args:?}: {}",
            ferry_e2e::text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let v1 = queue_to_http("streamed", &queue).replace(
        "    idle: 1s\n",
        "    idle: 1s\n    prefetch: 10\n    serve: { records: 40, period: 1s }\n",
    );
    std::fs::write(dir.path().join("streamed.yaml"), &v1).unwrap();
    ferry(&["deploy", "streamed.yaml", "-m", "v1"]);

    let (mut serve, log) = spawn_serve(dir.path(), &envs, "serve");
    let runs = || {
        let text = ferry(&[
            "runs", "--flow", "streamed", "--limit", "1000", "--output", "json",
        ]);
        let mut runs: Vec<Value> = serde_json::from_str::<Value>(&text)
            .unwrap()
            .as_array()
            .unwrap()
            .clone();
        runs.sort_by_key(|r| r["started_at"].as_str().unwrap().to_string());
        runs
    };

    // 100 messages at once: runs of at most 40 records (and the batch that reached 40).
    rabbit
        .publish(&queue, (1..=100).map(|i| order(i).to_string().into_bytes()))
        .await;
    eventually(limit, "100 records at the sink", || async {
        sink_bodies(&client, &base).await.len() == 100
    })
    .await;
    // Once a fresh run waits, 5 more, then quiet: their run ends a period after its first
    // record, with 5.
    eventually(
        limit,
        "the 100 in finished runs, and a fresh run waiting",
        || async {
            let runs = runs();
            let finished: u64 = runs
                .iter()
                .filter(|r| r["status"] == "succeeded")
                .map(|r| r["counts"]["fetched"].as_u64().unwrap())
                .sum();
            finished == 100 && runs.last().is_some_and(|r| r["status"] == "running")
        },
    )
    .await;
    rabbit
        .publish(
            &queue,
            (101..=105).map(|i| order(i).to_string().into_bytes()),
        )
        .await;
    eventually(
        limit,
        "a run of the 5 records ended by its period",
        || async {
            runs()
                .iter()
                .any(|r| r["status"] == "succeeded" && r["counts"]["fetched"] == 5)
        },
    )
    .await;

    // A new revision: the running run ends its read, the next runs carry revision 2.
    std::fs::write(
        dir.path().join("streamed.yaml"),
        v1.replace(
            "    via: \"$meta.routing_key\"\n",
            "    via: \"$meta.routing_key\"\n    version: { const: 2 }\n",
        ),
    )
    .unwrap();
    ferry(&["deploy", "streamed.yaml", "-m", "v2"]);
    eventually(limit, "a stream run of revision 2", || async {
        runs()
            .iter()
            .any(|r| r["revision"] == 2 && r["status"] == "running")
    })
    .await;
    rabbit
        .publish(
            &queue,
            (106..=150).map(|i| order(i).to_string().into_bytes()),
        )
        .await;
    eventually(limit, "150 records at the sink", || async {
        sink_bodies(&client, &base).await.len() == 150
    })
    .await;

    let stopped = terminate(&mut serve, limit).await;
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(stopped, "{output}");

    // Every record once; those read after revision 2 was active carry its field.
    let bodies = sink_bodies(&client, &base).await;
    assert_eq!(bodies.len(), 150);
    for i in 1..=150u64 {
        let (body, times) = &bodies[&format!("A-{i}")];
        assert_eq!(*times, 1, "A-{i} applied {times} times");
        assert_eq!(body["total"], i * 3);
        if i > 105 {
            assert_eq!(body["version"], 2, "A-{i}: {body}");
        } else {
            assert!(body.get("version").is_none(), "A-{i}: {body}");
        }
    }
    assert_eq!(rabbit.count(&queue).await, 0);

    let runs = runs();
    assert!(runs.iter().all(|r| r["trigger"] == "stream"), "{runs:#?}");
    let fetched: u64 = runs
        .iter()
        .map(|r| r["counts"]["fetched"].as_u64().unwrap())
        .sum();
    assert_eq!(fetched, 150, "{runs:#?}");
    // Cut at 40 records (the batch that reaches 40 is read whole, at most 10).
    assert!(
        runs.iter()
            .all(|r| r["counts"]["fetched"].as_u64().unwrap() < 50),
        "{runs:#?}"
    );
    assert!(runs.len() >= 4, "{runs:#?}");
    // Every run but the last (stopped by SIGTERM) ended by a cut, and succeeded.
    let (last, cut) = runs.split_last().unwrap();
    for r in cut {
        assert_eq!(r["status"], "succeeded", "{r:#?}");
    }
    assert_eq!(last["revision"], 2);
    assert_ne!(last["status"], "running", "{last:#?}");
    // The revision 1 runs are all before the revision 2 runs.
    let first_v2 = runs.iter().position(|r| r["revision"] == 2).unwrap();
    assert!(runs[first_v2..].iter().all(|r| r["revision"] == 2));
    rabbit.delete(&[&queue], &[]).await;
}

/// Two `ferry serve` workers on one state store consume one queue as competing consumers:
/// every record is delivered once, and both workers ran stream runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_consume_one_queue_and_deliver_each_record_once() {
    let test = "two_workers_consume_one_queue_and_deliver_each_record_once";
    let Some(url) = ferry_testkit::rabbitmq_url(test) else {
        return;
    };
    let limit = Duration::from_secs(90);
    let rabbit = Rabbit::connect(&url).await;
    let queue = unique("workers");
    rabbit.queue(&queue).await;
    let (_sandbox, base, client) = start_sandbox(1).await;
    // A little latency: both workers get their share while the other is busy.
    set_sink_faults(&client, &base, json!({"latency_ms": 2, "seed": 3})).await;
    let dir = tempfile::tempdir().unwrap();
    let wms = format!("{base}/api/sink");
    let envs = [
        ("AMQP_URL", url.as_str()),
        ("WMS_URL", wms.as_str()),
        ("FERRY_USER", "alice"),
    ];
    std::fs::write(
        dir.path().join("shared.yaml"),
        queue_to_http("shared", &queue).replace(
            "    idle: 1s\n",
            "    idle: 1s\n    prefetch: 20\n    serve: { records: 200, period: 2s }\n",
        ),
    )
    .unwrap();
    let out = ferry_e2e::run_ferry(
        &["deploy", "shared.yaml", "-m", "v1"],
        &envs,
        dir.path(),
        limit,
    );
    assert_eq!(out.status.code(), Some(0), "{}", ferry_e2e::text(&out));
    let (mut one, log1) = spawn_serve(dir.path(), &envs, "one");
    let (mut two, log2) = spawn_serve(dir.path(), &envs, "two");
    const N: u64 = 2_000;
    rabbit
        .publish(&queue, (1..=N).map(|i| order(i).to_string().into_bytes()))
        .await;
    eventually(limit, "every record at the sink", || async {
        applied(&client, &base).await.0.len() as u64 == N
    })
    .await;
    assert!(
        terminate(&mut one, limit).await,
        "{}",
        std::fs::read_to_string(&log1).unwrap()
    );
    assert!(
        terminate(&mut two, limit).await,
        "{}",
        std::fs::read_to_string(&log2).unwrap()
    );
    let (per_order, twice) = applied(&client, &base).await;
    assert_eq!(per_order.len() as u64, N);
    assert_eq!(twice, 0, "no record applied twice");
    assert!(per_order.values().all(|n| *n == 1));
    assert_eq!(rabbit.count(&queue).await, 0);
    let out = ferry_e2e::run_ferry(
        &[
            "runs", "--flow", "shared", "--limit", "1000", "--output", "json",
        ],
        &envs,
        dir.path(),
        limit,
    );
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let workers: HashSet<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["counts"]["fetched"].as_u64().unwrap_or(0) > 0)
        .filter_map(|r| r["owner"].as_str())
        .collect();
    assert_eq!(workers.len(), 2, "both workers consumed: {runs:#}");
    let fetched: u64 = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["counts"]["fetched"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(fetched, N, "each message read once: {runs:#}");
    rabbit.delete(&[&queue], &[]).await;
}

/// A queue whose broker does not answer: the stream's runs fail, and `/healthz` of the worker
/// says degraded (without the broker's address) until they succeed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_that_cannot_be_consumed_makes_the_worker_degraded() {
    let limit = Duration::from_secs(60);
    let dead = format!("amqp://guest:guest@127.0.0.1:{}/%2f", common::free_port());
    let dir = tempfile::tempdir().unwrap();
    let envs = [
        ("AMQP_URL", dead.as_str()),
        ("WMS_URL", "http://127.0.0.1:9/api/sink"),
        ("FERRY_USER", "alice"),
    ];
    std::fs::write(
        dir.path().join("stuck.yaml"),
        queue_to_http("stuck", "nowhere").replace(
            "    idle: 1s\n",
            "    idle: 1s\n    retry: { attempts: 1, initial: 10ms, max: 10ms, jitter: none }\n",
        ),
    )
    .unwrap();
    let out = ferry_e2e::run_ferry(
        &["deploy", "stuck.yaml", "-m", "v1"],
        &envs,
        dir.path(),
        limit,
    );
    assert_eq!(out.status.code(), Some(0), "{}", ferry_e2e::text(&out));
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = dir.path().join("serve.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(ferry_bin());
    cmd.args(["serve", "--drain-timeout", "5s", "--listen", &addr])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .env_remove("FERRY_STATE")
        .env_remove("FERRY_DATABASE")
        .env_remove("FERRY_ENV");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut serve = Guard(cmd.spawn().unwrap());
    let client = ferry_connect::http::client::build_client(
        Duration::from_secs(2),
        Duration::from_secs(5),
        2,
    )
    .unwrap();
    let health = || {
        let client = client.clone();
        let addr = addr.clone();
        async move {
            let res = client
                .get(format!("http://{addr}/healthz"))
                .send()
                .await
                .ok()?;
            let status = res.status().as_u16();
            Some((status, res.text().await.unwrap_or_default()))
        }
    };
    eventually(limit, "a degraded /healthz", || async {
        health().await.is_some_and(|(s, _)| s == 503)
    })
    .await;
    let (_, body) = health().await.unwrap();
    assert!(body.contains("a queue cannot be consumed"), "{body}");
    assert!(!body.contains("127.0.0.1"), "{body}");
    assert!(
        terminate(&mut serve, limit).await,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
}
