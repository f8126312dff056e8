//! Black-box tests of the sink API over 127.0.0.1: idempotency semantics, fault rates and their
//! determinism, lost acks, down, permanent rejections, concurrency and the control endpoints.

mod common;

use std::sync::Arc;

use common::{client, get_json, histogram, put, sink_send};
use ferry_sandbox::{Sandbox, SandboxConfig, SinkFaults, SinkStats};
use reqwest::Method;
use serde_json::{Value, json};

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig {
        records: 10,
        ..SandboxConfig::default()
    })
    .await
    .expect("start sandbox")
}

/// Every request ends in exactly one counted outcome (lost acks are also applied).
fn assert_stats_add_up(stats: &SinkStats) {
    let outcomes = stats.applied
        + stats.duplicate_requests
        + stats.conflicts_422
        + stats.in_progress_409
        + stats.faults_5xx
        + stats.faults_429
        + stats.rejected
        + stats.bad_requests
        + stats.down_503;
    assert_eq!(stats.requests, outcomes, "{stats:?}");
}

#[tokio::test]
async fn same_key_same_body_is_replayed_not_reapplied() {
    let sandbox = sandbox().await;
    let base = sandbox.base_url();
    let client = client();
    let body = json!({"order_ref": "A-7", "total_cents": 1230, "customer": {"email": "a@x.io"}});
    let (status, headers, first) =
        put(&client, &base, "/api/sink/v2/orders/A-7", "k-7", &body).await;
    assert_eq!(status, 201);
    assert_eq!(first, json!({"ok": true, "key": "k-7"}));
    assert!(!headers.contains_key("idempotent-replayed"));

    // Same body with other key order and whitespace: the same canonical body.
    let reordered =
        r#"{ "customer": {"email": "a@x.io"}, "total_cents": 1230, "order_ref": "A-7" }"#;
    for _ in 0..3 {
        let (status, headers, again) = sink_send(
            &client,
            &base,
            Method::PUT,
            "/api/sink/v2/orders/A-7",
            Some("k-7"),
            reordered,
        )
        .await;
        assert_eq!(status, 201);
        assert_eq!(again, first);
        assert_eq!(headers["idempotent-replayed"], "true");
    }
    let stats = sandbox.sink().stats();
    assert_eq!(stats.applied, 1);
    assert_eq!(stats.duplicate_requests, 3);
    let applied = sandbox.sink().applied();
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].key, "k-7");
    assert_eq!(applied[0].method, "PUT");
    assert_eq!(applied[0].path, "/api/sink/v2/orders/A-7");
    assert_eq!(applied[0].body, body);
    assert_eq!(applied[0].times_applied, 1);
    assert_stats_add_up(&stats);
}

#[tokio::test]
async fn same_key_different_request_is_a_422_with_no_effect() {
    let sandbox = sandbox().await;
    let base = sandbox.base_url();
    let client = client();
    assert_eq!(
        put(
            &client,
            &base,
            "/api/sink/o/1",
            "key-1",
            &json!({"id": 1, "v": 1})
        )
        .await
        .0,
        201
    );
    let (status, _, body) = put(
        &client,
        &base,
        "/api/sink/o/1",
        "key-1",
        &json!({"id": 1, "v": 2}),
    )
    .await;
    assert_eq!(status, 422);
    let error = body["error"].as_str().expect("error");
    assert!(
        error.contains("key key-1 was used with a different body"),
        "{error}"
    );
    // Another path or method under the same key is a different request too.
    let (status, _, body) = put(
        &client,
        &base,
        "/api/sink/o/2",
        "key-1",
        &json!({"id": 1, "v": 1}),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("different method or path")
    );
    let (status, _, _) = sink_send(
        &client,
        &base,
        Method::POST,
        "/api/sink/o/1",
        Some("key-1"),
        r#"{"id":1,"v":1}"#,
    )
    .await;
    assert_eq!(status, 422);
    let stats = sandbox.sink().stats();
    assert_eq!((stats.applied, stats.conflicts_422), (1, 3));
    assert_eq!(sandbox.sink().applied()[0].body, json!({"id": 1, "v": 1}));
}

#[tokio::test]
async fn malformed_requests_are_refused_with_clear_errors() {
    let sandbox = sandbox().await;
    let base = sandbox.base_url();
    let client = client();
    let path = "/api/sink/orders";
    // (method, key, body, expected status, expected error text)
    type Case = (Method, Option<&'static str>, Vec<u8>, u16, &'static str);
    let cases: Vec<Case> = vec![
        (
            Method::PUT,
            None,
            br#"{"id":1}"#.to_vec(),
            400,
            "Idempotency-Key header is required",
        ),
        (
            Method::PUT,
            Some(""),
            br#"{"id":1}"#.to_vec(),
            400,
            "1 to 255",
        ),
        (
            Method::PUT,
            Some("k"),
            b"not json".to_vec(),
            400,
            "must be JSON",
        ),
        (
            Method::PUT,
            Some("k"),
            b"{\"id\": 1".to_vec(),
            400,
            "must be JSON",
        ),
        (Method::PUT, Some("k"), b"42".to_vec(), 400, "object"),
        (
            Method::PUT,
            Some("k"),
            b"[]".to_vec(),
            400,
            "non-empty array",
        ),
        (
            Method::PUT,
            Some("k"),
            vec![0xff, 0xfe, 0x00],
            400,
            "must be JSON",
        ),
        (
            Method::PUT,
            Some("k"),
            "[".repeat(10_000).into_bytes(),
            400,
            "must be JSON",
        ),
        (
            Method::GET,
            Some("k"),
            Vec::new(),
            405,
            "use POST, PUT or PATCH",
        ),
        (
            Method::DELETE,
            Some("k"),
            Vec::new(),
            405,
            "use POST, PUT or PATCH",
        ),
    ];
    for (method, key, body, status, needle) in cases {
        let (got, _, answer) = sink_send(&client, &base, method.clone(), path, key, body).await;
        assert_eq!(got, status, "{method} {key:?}: {answer}");
        let error = answer["error"].as_str().expect("JSON error");
        assert!(error.contains(needle), "{error}");
    }
    let long_key = "k".repeat(256);
    assert_eq!(
        sink_send(&client, &base, Method::PUT, path, Some(&long_key), "{}")
            .await
            .0,
        400
    );

    // Over 32 MiB → 413.
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(33 * 1024 * 1024));
    let (status, _, answer) = sink_send(&client, &base, Method::POST, path, Some("big"), big).await;
    assert_eq!(status, 413);
    assert!(
        answer["error"]
            .as_str()
            .expect("error")
            .contains("larger than the limit")
    );
    // Just under the limit is fine.
    let fits = format!("{{\"pad\":\"{}\"}}", "x".repeat(31 * 1024 * 1024));
    assert_eq!(
        sink_send(&client, &base, Method::PATCH, path, Some("fits"), fits)
            .await
            .0,
        201
    );

    let stats = sandbox.sink().stats();
    assert_eq!(stats.bad_requests, 12);
    assert_eq!(stats.applied, 1);
    assert_stats_add_up(&stats);
    // A batch is applied as one unit.
    let batch = json!([{"id": 1}, {"id": 2}, {"id": 3}]);
    assert_eq!(
        put(&client, &base, "/api/sink/batch", "batch-1", &batch)
            .await
            .0,
        201
    );
    assert_eq!(sandbox.sink().applied_count(), 2);
    assert_eq!(sandbox.sink().applied()[1].body, batch);
}

async fn fault_run(sandbox: &Sandbox, faults: &SinkFaults, n: usize) -> Vec<(u16, Option<String>)> {
    sandbox.sink().reset();
    sandbox.sink().set_faults(faults.clone());
    let client = client();
    let base = sandbox.base_url();
    let mut outcomes = Vec::with_capacity(n);
    for i in 0..n {
        let body = json!({"id": i, "name": format!("record {i}")});
        let (status, headers, _) = put(
            &client,
            &base,
            &format!("/api/sink/r/{i}"),
            &format!("key-{i}"),
            &body,
        )
        .await;
        let retry_after = headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        outcomes.push((status, retry_after));
    }
    outcomes
}

#[tokio::test]
async fn fault_rates_match_the_config_and_repeat_exactly_for_a_seed() {
    let sandbox = sandbox().await;
    let faults = SinkFaults {
        seed: 2024,
        rate_5xx: 0.10,
        rate_5xx_retry_after: 0.5,
        rate_429: 0.05,
        retry_after_secs: 2,
        retry_after_http_date: true,
        rate_lost_ack: 0.02,
        ..SinkFaults::default()
    };
    let first = fault_run(&sandbox, &faults, 2000).await;
    let stats = sandbox.sink().stats();
    let statuses: Vec<u16> = first.iter().map(|o| o.0).collect();
    let counts = histogram(&statuses);
    let count = |s: u16| counts.get(&s).copied().unwrap_or(0);
    assert!((140..=260).contains(&count(503)), "503: {counts:?}");
    assert!((60..=140).contains(&count(429)), "429: {counts:?}");
    assert!((20..=65).contains(&count(500)), "500: {counts:?}");
    assert_eq!(count(201) + count(503) + count(429) + count(500), 2000);
    assert_eq!(stats.faults_5xx as usize, count(503));
    assert_eq!(stats.faults_429 as usize, count(429));
    assert_eq!(stats.lost_acks as usize, count(500));
    // Lost acks were applied; 5xx and 429 were not.
    assert_eq!(stats.applied as usize, count(201) + count(500));
    assert_stats_add_up(&stats);

    // Retry-After: on every 429 (both forms), on about half of the 503s.
    let with_ra = |status: u16| {
        first
            .iter()
            .filter(|o| o.0 == status && o.1.is_some())
            .count()
    };
    assert_eq!(with_ra(429), count(429));
    let share = with_ra(503) as f64 / count(503) as f64;
    assert!(
        (0.35..=0.65).contains(&share),
        "503 with Retry-After: {share}"
    );
    assert!(
        first
            .iter()
            .filter(|o| o.0 == 503)
            .filter_map(|o| o.1.as_deref())
            .all(|v| v == "2")
    );
    let dates = first
        .iter()
        .filter(|o| o.0 == 429)
        .filter_map(|o| o.1.as_deref())
        .filter(|v| v.ends_with("GMT"))
        .count();
    assert!(
        dates > count(429) / 4 && dates < count(429) * 3 / 4,
        "HTTP dates: {dates}"
    );

    // The same seed gives the same decisions; another seed does not.
    let second = fault_run(&sandbox, &faults, 2000).await;
    let strip = |run: &[(u16, Option<String>)]| run.iter().map(|o| o.0).collect::<Vec<_>>();
    assert_eq!(strip(&first), strip(&second));
    let other = fault_run(
        &sandbox,
        &SinkFaults {
            seed: 2025,
            ..faults
        },
        2000,
    )
    .await;
    assert_ne!(strip(&first), strip(&other));
}

#[tokio::test]
async fn retries_draw_again_and_eventually_apply_once() {
    let sandbox = sandbox().await;
    sandbox.sink().set_faults(SinkFaults {
        seed: 5,
        rate_5xx: 0.5,
        rate_429: 0.2,
        ..SinkFaults::default()
    });
    let base = sandbox.base_url();
    let client = client();
    for i in 0..20 {
        let body = json!({"id": i});
        let key = format!("retry-{i}");
        let mut attempts = 0;
        // Bounded: with 30 % success per attempt, 60 attempts fail with odds below 1e-9.
        let mut applied = false;
        for _ in 0..60 {
            attempts += 1;
            let (status, _, _) = put(&client, &base, "/api/sink/r", &key, &body).await;
            assert!([201, 503, 429].contains(&status), "{status}");
            if status == 201 {
                applied = true;
                break;
            }
        }
        assert!(applied, "key {key} never applied after {attempts} attempts");
    }
    let applied = sandbox.sink().applied();
    assert_eq!(applied.len(), 20);
    assert!(applied.iter().all(|r| r.times_applied == 1));
}

#[tokio::test]
async fn lost_ack_applies_then_answers_500_and_the_retry_is_replayed() {
    let sandbox = sandbox().await;
    sandbox.sink().set_faults(SinkFaults {
        rate_lost_ack: 1.0,
        ..SinkFaults::default()
    });
    let base = sandbox.base_url();
    let client = client();
    let body = json!({"id": 3, "total": 12});
    let (status, _, _) = put(&client, &base, "/api/sink/o/3", "lost-3", &body).await;
    assert_eq!(status, 500);
    assert_eq!(sandbox.sink().applied_count(), 1);
    let (status, headers, answer) = put(&client, &base, "/api/sink/o/3", "lost-3", &body).await;
    assert_eq!(status, 201);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(answer["key"], "lost-3");
    let stats = sandbox.sink().stats();
    assert_eq!(
        (stats.applied, stats.lost_acks, stats.duplicate_requests),
        (1, 1, 1)
    );
    assert_eq!(sandbox.sink().applied()[0].times_applied, 1);
}

#[tokio::test]
async fn a_down_sink_answers_503_without_effect() {
    let sandbox = sandbox().await;
    let base = sandbox.base_url();
    let client = client();
    sandbox.sink().set_down(true);
    for _ in 0..3 {
        assert_eq!(
            put(&client, &base, "/api/sink/o/1", "d-1", &json!({"id": 1}))
                .await
                .0,
            503
        );
    }
    // Even malformed requests get 503 while down.
    assert_eq!(
        sink_send(&client, &base, Method::PUT, "/api/sink/o/1", None, "x")
            .await
            .0,
        503
    );
    assert_eq!(sandbox.sink().applied_count(), 0);
    // Over HTTP.
    let response = client
        .post(format!("{base}/_sandbox/sink/down"))
        .body(r#"{"down": false}"#)
        .send()
        .await
        .expect("down");
    assert_eq!(response.status(), 200);
    assert_eq!(
        put(&client, &base, "/api/sink/o/1", "d-1", &json!({"id": 1}))
            .await
            .0,
        201
    );
    let stats = sandbox.sink().stats();
    assert_eq!((stats.down_503, stats.applied), (4, 1));
    assert_stats_add_up(&stats);
}

#[tokio::test]
async fn permanent_rejections_follow_the_source_id() {
    let sandbox = sandbox().await;
    sandbox.sink().set_faults(SinkFaults {
        reject_every_nth: Some(3),
        rate_5xx: 0.5,
        seed: 1,
        ..SinkFaults::default()
    });
    let base = sandbox.base_url();
    let client = client();
    // Rejected on the first attempt and on every retry, never applied.
    for attempt in 0..5 {
        let (status, _, body) = put(
            &client,
            &base,
            "/api/sink/v2/orders/A-6",
            "rej-6",
            &json!({"order_ref": "A-6"}),
        )
        .await;
        assert_eq!(status, 422, "attempt {attempt}");
        assert!(
            body["error"]
                .as_str()
                .expect("error")
                .contains("source id 6")
        );
    }
    // Found by path when the body has no id; by `id` first otherwise.
    assert_eq!(
        put(
            &client,
            &base,
            "/api/sink/v2/orders/A-9",
            "rej-9",
            &json!({"x": 1})
        )
        .await
        .0,
        422
    );
    let (status, _, _) = put(
        &client,
        &base,
        "/api/sink/v2/orders/A-9",
        "ok-9",
        &json!({"id": 10}),
    )
    .await;
    assert_ne!(status, 422);
    let stats = sandbox.sink().stats();
    assert_eq!(stats.rejected, 6);
    assert!(sandbox.sink().applied().iter().all(|r| r.key != "rej-6"));
    // A configurable status.
    sandbox.sink().set_faults(SinkFaults {
        reject_every_nth: Some(3),
        reject_status: 400,
        ..SinkFaults::default()
    });
    assert_eq!(
        put(
            &client,
            &base,
            "/api/sink/x",
            "rej-12",
            &json!({"source_id": 12})
        )
        .await
        .0,
        400
    );
}

#[tokio::test]
async fn concurrent_requests_with_one_key_apply_once() {
    let sandbox = sandbox().await;
    sandbox.sink().set_faults(SinkFaults {
        latency_ms: 300,
        ..SinkFaults::default()
    });
    let base = Arc::new(sandbox.base_url());
    let client = client();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let client = client.clone();
        let base = Arc::clone(&base);
        tasks.spawn(async move {
            let (status, headers, _) = put(
                &client,
                &base,
                "/api/sink/o/1",
                "same-key",
                &json!({"id": 1}),
            )
            .await;
            (status, headers.contains_key("idempotent-replayed"))
        });
    }
    let mut fresh = 0;
    let mut conflicts = 0;
    let mut replays = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("task") {
            (201, false) => fresh += 1,
            (201, true) => replays += 1,
            (409, _) => conflicts += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(fresh, 1);
    assert_eq!(fresh + replays + conflicts, 20);
    assert!(conflicts >= 1, "the in-progress window must produce 409s");
    let applied = sandbox.sink().applied();
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].times_applied, 1);
    let stats = sandbox.sink().stats();
    assert_eq!(stats.in_progress_409, conflicts);
    assert_stats_add_up(&stats);
}

#[tokio::test]
async fn a_dropped_request_frees_its_key() {
    let sandbox = sandbox().await;
    sandbox.sink().set_faults(SinkFaults {
        latency_ms: 2000,
        ..SinkFaults::default()
    });
    let base = sandbox.base_url();
    let impatient = common::client_builder()
        .timeout(std::time::Duration::from_millis(200))
        .build()
        .expect("client");
    let result = impatient
        .put(format!("{base}/api/sink/o/1"))
        .header("Idempotency-Key", "dropped")
        .body(r#"{"id":1}"#)
        .send()
        .await;
    assert!(result.is_err(), "the client gave up");
    sandbox.sink().set_faults(SinkFaults::default());
    let client = client();
    // Bounded wait until the server notices the closed connection and releases the key.
    let mut answer = (0, false);
    for _ in 0..300 {
        let (status, headers, _) = put(
            &client,
            &base,
            "/api/sink/o/1",
            "dropped",
            &json!({"id": 1}),
        )
        .await;
        answer = (status, headers.contains_key("idempotent-replayed"));
        if status != 409 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A fresh apply, not a replay: the abandoned request applied nothing.
    assert_eq!(answer, (201, false));
    assert_eq!(sandbox.sink().applied_count(), 1);
}

#[tokio::test]
async fn sink_control_endpoints() {
    let sandbox = sandbox().await;
    let base = sandbox.base_url();
    let client = client();
    for i in 0..5 {
        put(
            &client,
            &base,
            &format!("/api/sink/o/{i}"),
            &format!("c-{i}"),
            &json!({"id": i}),
        )
        .await;
    }
    let (status, _, stats) = get_json(&client, &format!("{base}/_sandbox/sink/stats")).await;
    assert_eq!(status, 200);
    assert_eq!(stats["applied"], 5);
    assert_eq!(stats["requests"], 5);
    let (status, _, listing) = get_json(
        &client,
        &format!("{base}/_sandbox/sink/records?limit=2&offset=1"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(listing["total"], 5);
    let records = listing["records"].as_array().expect("records");
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["key"], "c-1");
    assert_eq!(records[0]["times_applied"], 1);
    assert_eq!(
        get_json(&client, &format!("{base}/_sandbox/sink/records?limit=abc"))
            .await
            .0,
        400
    );

    // Faults over HTTP: strict JSON, validated values.
    let response = client
        .post(format!("{base}/_sandbox/sink/faults"))
        .body(r#"{"seed": 3, "rate_5xx": 1.0}"#)
        .send()
        .await
        .expect("faults");
    assert_eq!(response.status(), 200);
    assert_eq!(sandbox.sink().faults().rate_5xx, 1.0);
    assert_eq!(
        put(&client, &base, "/api/sink/o/9", "c-9", &json!({"id": 9}))
            .await
            .0,
        503
    );
    for (body, needle) in [
        (r#"{"rate_5xxx": 1.0}"#, "unknown field"),
        (r#"{"rate_5xx": 2.0}"#, "rate_5xx"),
        (r#"{"rate_5xx": 0.7, "rate_429": 0.7}"#, "add up"),
        (r#"{"reject_every_nth": 0}"#, "reject_every_nth"),
        ("{", "invalid JSON"),
    ] {
        let response = client
            .post(format!("{base}/_sandbox/sink/faults"))
            .body(body)
            .send()
            .await
            .expect("faults");
        assert_eq!(response.status(), 400, "{body}");
        let error = response.json::<Value>().await.expect("json")["error"].to_string();
        assert!(error.contains(needle), "{body}: {error}");
    }
    let (_, _, faults) = get_json(&client, &format!("{base}/_sandbox/sink/faults")).await;
    assert_eq!(faults["seed"], 3);
    // Control bodies are capped at 1 MiB.
    let huge = format!(
        "{{\"seed\": 1, \"x\": \"{}\"}}",
        "y".repeat(1024 * 1024 + 10)
    );
    let response = client
        .post(format!("{base}/_sandbox/sink/faults"))
        .body(huge)
        .send()
        .await
        .expect("faults");
    assert_eq!(response.status(), 413);

    let response = client
        .post(format!("{base}/_sandbox/sink/reset"))
        .send()
        .await
        .expect("reset");
    assert_eq!(response.status(), 200);
    assert_eq!(sandbox.sink().stats(), SinkStats::default());
    assert!(sandbox.sink().applied().is_empty());
    // Reset keeps the faults.
    assert_eq!(sandbox.sink().faults().rate_5xx, 1.0);
    for body in [r#"{"down": "yes"}"#, r#"{}"#, r#"{"down": true, "x": 1}"#] {
        let response = client
            .post(format!("{base}/_sandbox/sink/down"))
            .body(body)
            .send()
            .await
            .expect("down");
        assert_eq!(response.status(), 400, "{body}");
    }
}

#[tokio::test]
async fn many_concurrent_clients_keep_the_books_straight() {
    let sandbox = sandbox().await;
    sandbox.sink().set_faults(SinkFaults {
        seed: 11,
        rate_5xx: 0.05,
        rate_429: 0.02,
        rate_lost_ack: 0.01,
        ..SinkFaults::default()
    });
    let base = Arc::new(sandbox.base_url());
    let client = client();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16u64 {
        let client = client.clone();
        let base = Arc::clone(&base);
        tasks.spawn(async move {
            for i in 0..150u64 {
                // Overlapping keys across workers: every key is sent by two workers.
                let id = (worker / 2) * 1000 + i;
                let body = json!({"id": id});
                for _ in 0..20 {
                    let (status, _, _) =
                        put(&client, &base, "/api/sink/r", &format!("k-{id}"), &body).await;
                    if status == 201 {
                        break;
                    }
                    assert!([409, 429, 500, 503].contains(&status), "{status}");
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("worker");
    }
    let applied = sandbox.sink().applied();
    assert_eq!(applied.len(), 8 * 150);
    assert!(applied.iter().all(|r| r.times_applied == 1));
    let stats = sandbox.sink().stats();
    assert_eq!(stats.applied, 1200);
    assert_stats_add_up(&stats);
}
