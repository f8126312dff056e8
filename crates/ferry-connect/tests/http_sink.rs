//! The HTTP sink against the sandbox's sink, over 127.0.0.1: what a failed attempt's reason says.

use bytes::Bytes;
use ferry_connect::sink::http::HttpDelivery;
use ferry_env::{RunEnv, Secrets};
use ferry_resilience::Outcome;
use ferry_sandbox::{Sandbox, SandboxConfig, SinkFaults};

fn delivery() -> HttpDelivery {
    let text = "name: t\nsource:\n  http:\n    url: \"http://127.0.0.1:1/x\"\ndestination:\n  http:\n    method: PUT\n    url: \"http://127.0.0.1:1/{{ record.id }}\"\n";
    let loaded = ferry_spec::load_str(text, None).unwrap_or_else(|e| panic!("{e}"));
    let env = RunEnv::isolated("test", Secrets::from_map(Vec::<(String, String)>::new()));
    HttpDelivery::new(loaded.flow.destination.http().unwrap(), &env).expect("sink")
}

fn failure(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Fail { reason } => reason,
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_422_says_what_the_destination_said_and_speaks_of_key_reuse_only_when_it_does() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let sink = delivery();
    let url = |id: u64| format!("{}/api/sink/v2/orders/A-{id}", sb.base_url());

    // The same key with another body: the sandbox answers 422 and says why.
    let first = sink.send(&url(1), "k-1", Bytes::from(r#"{"id":1}"#)).await;
    assert_eq!(first.outcome, Outcome::Success);
    let reused = sink
        .send(&url(1), "k-1", Bytes::from(r#"{"id":1,"x":2}"#))
        .await;
    assert_eq!(reused.status, Some(422));
    let reason = failure(&reused.outcome);
    assert!(reason.starts_with("HTTP 422"), "{reason}");
    assert!(
        reason.contains("idempotency key `k-1` as used before"),
        "{reason}"
    );
    assert!(
        reason.contains("was used with a different body"),
        "{reason}"
    );

    // An ordinary "unprocessable" answer: the destination's words, nothing about keys.
    sb.sink().set_faults(SinkFaults {
        reject_every_nth: Some(3),
        reject_status: 422,
        ..SinkFaults::default()
    });
    let rejected = sink.send(&url(3), "k-3", Bytes::from(r#"{"id":3}"#)).await;
    assert_eq!(rejected.status, Some(422));
    let reason = failure(&rejected.outcome);
    assert!(reason.starts_with("HTTP 422: "), "{reason}");
    assert!(
        reason.contains("record with source id 3 is rejected permanently"),
        "{reason}"
    );
    assert!(!reason.contains("used before"), "{reason}");
    assert!(!reason.contains("k-3"), "{reason}");
    sb.shutdown().await;
}
