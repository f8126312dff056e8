//! The AMQP source against a real RabbitMQ on 127.0.0.1, through a TCP proxy the test owns
//! (`ferry_testkit::proxy::Proxy`): the shared broker is never disturbed.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use ferry_connect::SourceOptions;
use ferry_env::{RunEnv, Secrets};
use ferry_resilience::{BackoffSeed, Jitter, JitteredBackoff};
use ferry_testkit::proxy::Proxy;
use lapin::options::QueueDeleteOptions;
use lapin::{Connection, ConnectionProperties};

/// The broker's `host:port` in an AMQP URL.
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

/// `url` with its host and port replaced by the proxy's.
fn through(url: &str, proxy: &Proxy) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => format!("{scheme}://{userinfo}@{}/{path}", proxy.addr()),
        None => format!("{scheme}://{}/{path}", proxy.addr()),
    }
}

/// Reconnects take their attempts and waits from the one retry layer: the proxy refuses the
/// consumer's first three connections, and with a seed in `SourceOptions` the opening call
/// (call 0 of the seed) makes exactly four attempts, waiting between them exactly the first
/// three waits `JitteredBackoff::…with_seed(seed)` draws for `source.amqp.retry`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_take_their_attempts_and_waits_from_the_seeded_stack() {
    let test = "reconnects_take_their_attempts_and_waits_from_the_seeded_stack";
    let Some(url) = ferry_testkit::rabbitmq_url(test) else {
        return;
    };
    let queue = format!(
        "ferry-test-seeded-reconnect-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let proxy = Proxy::start(broker_addr(&url)).await.unwrap();
    let flow = format!(
        "name: t\nsource:\n  amqp:\n    url: \"{{{{ env.AMQP_URL }}}}\"\n    queue: {queue}\n    declare: {{}}\n    idle: 200ms\n    retry: {{ attempts: 6, initial: 5ms, max: 40ms, jitter: full }}\ndestination:\n  http:\n    url: \"http://127.0.0.1:1/x\"\n"
    );
    let spec = ferry_spec::load_str(&flow, None)
        .unwrap_or_else(|e| panic!("{e}"))
        .flow
        .source;
    let env =
        RunEnv::isolated("test", Secrets::default()).with_var("AMQP_URL", through(&url, &proxy));
    let seed = BackoffSeed::new(21);
    let opts = SourceOptions {
        backoff_seed: Some(seed.clone()),
        ..SourceOptions::default()
    };
    let mut source = ferry_connect::source::from_spec(&spec, &env, &opts)
        .await
        .unwrap();

    proxy.refuse_next(3);
    let first = tokio::time::timeout(Duration::from_secs(30), source.next_batch())
        .await
        .expect("the consumer opens within 30 s");
    // The queue was declared by the consumer and is empty: the read ends once it stays idle.
    let first = first.expect("the consumer opens after three refused connections");
    if let Some(batch) = &first {
        assert!(batch.records.is_empty(), "{:?}", batch.records);
    }
    assert_eq!(proxy.accepted(), 4, "three refused connections, then one");
    assert_eq!(seed.calls(), 1);
    let want: Vec<(u64, u32, Duration)> = JitteredBackoff::new(
        Duration::from_millis(5),
        Duration::from_millis(40),
        Jitter::Full,
    )
    .with_seed(BackoffSeed::call_seed(21, 0))
    .take(3)
    .zip(1..)
    .map(|(wait, attempt)| (0, attempt, wait))
    .collect();
    let got: Vec<(u64, u32, Duration)> = seed
        .retries()
        .iter()
        .map(|r| (r.call, r.attempt, r.wait))
        .collect();
    assert_eq!(got, want);

    drop(source);
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("the test connects to RabbitMQ");
    let ch = conn.create_channel().await.unwrap();
    let _ = ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
}
