//! AMQP (RabbitMQ) benchmark: ferry publishing with confirms and consuming with acknowledgements,
//! next to a minimal lapin loop doing the same.
//!
//! ```text
//! cargo run --release -p ferry-benches --bin amqp-bench -- [--records 100000] [--rounds 3]
//! ```
//! Needs RabbitMQ at `FERRY_TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! Per round, on fresh queues:
//! - **bare publish**: the mapped bodies of the example flow, published to a queue with
//!   publisher confirms, persistent, `mandatory`, with `message_id`, 128 unconfirmed at most (the
//!   sink's default `concurrency`);
//! - **ferry publish**: the example flow from the sandbox's HTTP source (in this process) to the
//!   same kind of queue (`destination.amqp`, defaults): source, map, ledger, confirms, settle;
//! - **bare consume**: that queue consumed with a prefetch of 256, each message acknowledged;
//! - **ferry consume**: the queue ferry filled, consumed (`source.amqp`, prefetch 256,
//!   acknowledged after commit) into the sandbox's HTTP sink (in this process). The run ends
//!   once the queue was idle for `idle` (1 s), which is taken off its time.
//!
//! The rates are records per second of wall time; ferry's include what a run does besides the
//! broker (its HTTP side, the map, the state store).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_engine::{RunOptions, RunRequest};
use ferry_env::{RunEnv, Secrets};
use ferry_sandbox::{Sandbox, SandboxConfig};
use ferry_store::Trigger;
use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

const TOKEN: &str = "bench-token";
const IN_FLIGHT: usize = 128;
const PREFETCH: u16 = 256;
const IDLE: Duration = Duration::from_secs(1);

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench(
        arg(&args, "--records", 100_000),
        arg(&args, "--rounds", 3),
    ));
}

async fn channel(url: &str) -> (Connection, Channel) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("RabbitMQ answers");
    let ch = conn.create_channel().await.expect("channel");
    (conn, ch)
}

async fn declare(ch: &Channel, queue: &str) {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("queue");
}

async fn delete(ch: &Channel, queue: &str) {
    let _ = ch
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
}

/// Publishes `bodies` to `queue` with confirms, `IN_FLIGHT` unconfirmed at most.
async fn bare_publish(url: &str, queue: &str, bodies: &[(String, Vec<u8>)]) -> f64 {
    let (_conn, ch) = channel(url).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::with_capacity(IN_FLIGHT);
    for (key, body) in bodies {
        if pending.len() >= IN_FLIGHT {
            let c: lapin::PublisherConfirm = pending.pop_front().expect("pending");
            assert!(c.await.expect("confirm").is_ack());
        }
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(key.as_str().into())
            .with_delivery_mode(2);
        let c = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body,
                props,
            )
            .await
            .expect("publish");
        pending.push_back(c);
    }
    for c in pending {
        assert!(c.await.expect("confirm").is_ack());
    }
    started.elapsed().as_secs_f64()
}

/// Consumes `n` messages from `queue`, acknowledging each.
async fn bare_consume(url: &str, queue: &str, n: u64) -> f64 {
    let (_conn, ch) = channel(url).await;
    ch.basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .expect("qos");
    let started = Instant::now();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut got = 0;
    while got < n {
        let d = consumer.next().await.expect("a message").expect("delivery");
        ch.basic_ack(d.delivery_tag, BasicAckOptions::default())
            .await
            .expect("ack");
        got += 1;
    }
    started.elapsed().as_secs_f64()
}

async fn ferry_run(text: &str, env: RunEnv) -> (ferry_store::RunRecord, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ferry_store::open(&format!("sqlite:{}", dir.path().join("state.db").display()))
        .await
        .expect("store");
    let flow = ferry_spec::load_str(text, None).expect("flow");
    let d = ferry_engine::deploy(&store, &flow, "bench", "bench", "bench")
        .await
        .expect("deploy");
    let req = RunRequest {
        flow: Arc::new(flow),
        revision: d.revision.number,
        env,
        trigger: Trigger::Manual,
    };
    let started = Instant::now();
    let run = ferry_engine::execute(store, req, RunOptions::default())
        .await
        .expect("run");
    (run, started.elapsed().as_secs_f64())
}

fn example() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../flows/orders-to-warehouse.yaml"
    ))
    .expect("example flow")
    .replace("page_size: 200", "page_size: 1000")
}

/// The example flow into `queue` through the default exchange.
fn publish_flow(queue: &str) -> String {
    let text = example();
    let start = text.find("destination:").expect("destination");
    let end = text.find("policy:").expect("policy");
    format!(
        "{}destination:\n  amqp:\n    url: \"{{{{ env.AMQP_URL }}}}\"\n    exchange: \"\"\n    routing_key: {queue}\n    idempotency_key: \"order-{{{{ source.id }}}}-{{{{ source.changed_at }}}}\"\n{}{}",
        &text[..start],
        std::env::var("AMQP_BENCH_SINK_EXTRA").unwrap_or_default(),
        &text[end..]
    )
}

/// `queue` (holding mapped records) into the sandbox's HTTP sink.
fn consume_flow(queue: &str) -> String {
    let extra = std::env::var("AMQP_BENCH_SOURCE_EXTRA").unwrap_or_default();
    format!(
        r#"name: amqp-bench-consume
source:
  amqp:
    url: "{{{{ env.AMQP_URL }}}}"
    queue: {queue}
    idle: 1s{extra}
map:
  key: "$.order_ref"
destination:
  http:
    method: PUT
    url: "{{{{ env.WMS_URL }}}}/v2/orders/{{{{ record.order_ref }}}}"
    concurrency: 32
"#
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn bench(records: u64, rounds: u64) {
    let url = std::env::var("FERRY_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let sandbox = Sandbox::start(SandboxConfig {
        records,
        source_token: Some(TOKEN.into()),
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox");
    let env = RunEnv::isolated("bench", Secrets::from_map([("SHOP_TOKEN", TOKEN)]))
        .with_var("SHOP_URL", sandbox.base_url())
        .with_var("WMS_URL", format!("{}/api/sink", sandbox.base_url()))
        .with_var("AMQP_URL", &url);
    // The bodies ferry publishes, prepared before the bare loop's clock starts.
    let mapper = ferry_engine::Mapper::new(
        &ferry_spec::load_str(&example(), None).expect("flow"),
        Some(1),
    )
    .expect("mapper");
    let mut bodies = Vec::new();
    for id in 1..=records {
        let src = sandbox.source().record(id).expect("record");
        if let ferry_engine::MapOutcome::Record(m) = mapper.map(&src) {
            bodies.push((m.idem.expect("key"), m.body.to_vec()));
        }
    }
    let n = bodies.len() as u64;
    println!("{records} source records, {n} mapped messages each way, {rounds} rounds");
    let (_conn, admin) = channel(&url).await;
    let (mut bp, mut fp, mut bc, mut fc) = (vec![], vec![], vec![], vec![]);
    for round in 1..=rounds {
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        let (q_bare, q_ferry) = (
            format!("bench-bare-{suffix}"),
            format!("bench-ferry-{suffix}"),
        );
        declare(&admin, &q_bare).await;
        declare(&admin, &q_ferry).await;

        let secs = bare_publish(&url, &q_bare, &bodies).await;
        bp.push(n as f64 / secs);
        let (run, secs) = ferry_run(&publish_flow(&q_ferry), env.clone()).await;
        assert_eq!(run.counts.delivered, n, "{:?} {:?}", run.counts, run.error);
        fp.push(n as f64 / secs);

        let secs = bare_consume(&url, &q_bare, n).await;
        bc.push(n as f64 / secs);
        sandbox.sink().reset();
        let (run, secs) = ferry_run(&consume_flow(&q_ferry), env.clone()).await;
        assert_eq!(run.counts.delivered, n, "{:?} {:?}", run.counts, run.error);
        fc.push(n as f64 / (secs - IDLE.as_secs_f64()));
        println!(
            "round {round}: publish bare {:.0}/s ferry {:.0}/s ({:.0} %); consume bare {:.0}/s ferry {:.0}/s ({:.0} %)",
            bp[bp.len() - 1],
            fp[fp.len() - 1],
            100.0 * fp[fp.len() - 1] / bp[bp.len() - 1],
            bc[bc.len() - 1],
            fc[fc.len() - 1],
            100.0 * fc[fc.len() - 1] / bc[bc.len() - 1]
        );
        delete(&admin, &q_bare).await;
        delete(&admin, &q_ferry).await;
    }
    let (bp, fp, bc, fc) = (median(bp), median(fp), median(bc), median(fc));
    println!(
        "median: publish bare {bp:.0}/s ferry {fp:.0}/s = {:.0} %; consume bare {bc:.0}/s ferry {fc:.0}/s = {:.0} %",
        100.0 * fp / bp,
        100.0 * fc / bc
    );
}
