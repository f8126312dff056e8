//! Black-box tests of the source API over 127.0.0.1: pagination in every style, `since`,
//! stability under touches, validation, authentication, OAuth2 and page faults.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{client, get_json};
use ferry_sandbox::{Sandbox, SandboxConfig, SourceFault};
use serde_json::Value;

async fn sandbox(records: u64) -> Sandbox {
    Sandbox::start(SandboxConfig {
        records,
        ..SandboxConfig::default()
    })
    .await
    .expect("start sandbox")
}

fn ids(page: &Value) -> Vec<u64> {
    page["orders"]
        .as_array()
        .expect("orders array")
        .iter()
        .map(|o| o["id"].as_u64().expect("id"))
        .collect()
}

/// Walks every page with one pagination style; returns the ids in order and the page count.
async fn walk(base: &str, style: &str, extra: &str, page_size: u64) -> (Vec<u64>, u64) {
    let client = client();
    let mut seen = Vec::new();
    let mut pages = 0u64;
    let mut url = format!("{base}/api/orders?page_size={page_size}{extra}");
    match style {
        "page" => url.push_str("&page=1"),
        "offset" => url.push_str("&offset=0"),
        _ => {}
    }
    // Bounded: never more pages than records + 2.
    for _ in 0..10_000 {
        let (status, headers, body) = get_json(&client, &url).await;
        assert_eq!(status, 200, "{url}: {body}");
        pages += 1;
        seen.extend(ids(&body));
        let next_link = body["links"]["next"].as_str().map(str::to_string);
        let header = headers
            .get("link")
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        assert_eq!(
            header,
            next_link.as_ref().map(|l| format!("<{l}>; rel=\"next\"")),
            "Link header mirrors links.next"
        );
        let Some(next) = next_link else {
            assert!(body["next_page_token"].is_null());
            break;
        };
        url = match style {
            "token" => {
                let token = body["next_page_token"].as_str().expect("token");
                format!("{base}/api/orders?page_size={page_size}{extra}&page_token={token}")
            }
            // page / offset / link: follow links.next, which keeps the style.
            _ => next,
        };
        match style {
            "page" => assert!(url.contains(&format!("page={}", pages + 1)), "{url}"),
            "offset" => assert!(
                url.contains(&format!("offset={}", pages * page_size)),
                "{url}"
            ),
            _ => {}
        }
    }
    (seen, pages)
}

#[tokio::test]
async fn every_pagination_style_returns_every_record_exactly_once() {
    let sandbox = sandbox(1003).await;
    let base = sandbox.base_url();
    for style in ["token", "link", "page", "offset"] {
        let (seen, pages) = walk(&base, style, "", 100).await;
        assert_eq!(seen, (1..=1003).collect::<Vec<_>>(), "style {style}");
        assert_eq!(pages, 11, "style {style}");
    }
    // `limit` is an alias of page_size.
    let client = client();
    let (status, _, body) =
        get_json(&client, &format!("{base}/api/orders?limit=7&offset=14")).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body), (15..=21).collect::<Vec<_>>());
    assert!(
        body["links"]["next"]
            .as_str()
            .expect("next")
            .contains("offset=21")
    );
    assert!(sandbox.source().requests() >= 44);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn records_have_the_documented_shape() {
    let sandbox = sandbox(50).await;
    let client = client();
    let (_, headers, body) = get_json(
        &client,
        &format!("{}/api/orders?page_size=50", sandbox.base_url()),
    )
    .await;
    assert_eq!(
        headers.get("content-type").and_then(|h| h.to_str().ok()),
        Some("application/json")
    );
    assert_eq!(body["total"], 50);
    assert!(body["next_page_token"].is_null() && body["links"]["next"].is_null());
    let orders = body["orders"].as_array().expect("orders");
    let mut previous = String::new();
    for (i, order) in orders.iter().enumerate() {
        let id = i as u64 + 1;
        assert_eq!(order["id"], id);
        assert_eq!(order["number"], format!("A-{id}"));
        let changed = order["changed_at"]
            .as_str()
            .expect("changed_at")
            .to_string();
        assert!(changed > previous, "changed_at strictly increasing");
        previous = changed;
        assert!(order["created"].is_i64());
        assert!(
            order["buyer"]["email"]
                .as_str()
                .expect("email")
                .contains("@Example.com")
        );
        assert!(order["total"].as_str().expect("total").contains('.'));
        assert_eq!(Some(order), sandbox.source().record(id).as_ref());
    }
    assert_eq!(orders[0]["changed_at"], "2024-01-01T00:00:01Z");
    // Same seed, same data; another seed, other data.
    let again = Sandbox::start(SandboxConfig {
        records: 50,
        ..SandboxConfig::default()
    })
    .await
    .expect("start");
    assert_eq!(again.source().record(17), sandbox.source().record(17));
    let other = Sandbox::start(SandboxConfig {
        records: 50,
        seed: 7,
        ..SandboxConfig::default()
    })
    .await
    .expect("start");
    assert!((1..=50).any(|id| other.source().record(id) != sandbox.source().record(id)));
}

#[tokio::test]
async fn since_filters_inclusively_and_total_counts_matches() {
    let sandbox = sandbox(100).await;
    let base = sandbox.base_url();
    let client = client();
    let (status, _, body) = get_json(
        &client,
        &format!("{base}/api/orders?since=2024-01-01T00:00:50Z&page_size=10"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["total"], 51);
    assert_eq!(ids(&body), (50..=59).collect::<Vec<_>>());
    let next = body["links"]["next"].as_str().expect("next");
    assert!(next.contains("since=2024-01-01T00%3A00%3A50Z"), "{next}");
    // The whole sequence keeps the filter.
    let (seen, _) = walk(&base, "link", "&since=2024-01-01T00:00:50Z", 10).await;
    assert_eq!(seen, (50..=100).collect::<Vec<_>>());
    // Offsets in the time zone and fractional seconds.
    let (_, _, body) = get_json(
        &client,
        &format!("{base}/api/orders?since=2024-01-01T01:01:30%2B01:00"),
    )
    .await;
    assert_eq!(body["total"], 11);
    let (_, _, body) = get_json(
        &client,
        &format!("{base}/api/orders?since=2024-01-01T00:01:29.2Z"),
    )
    .await;
    assert_eq!(ids(&body).first(), Some(&90));
    // After everything: empty page, nulls.
    let (status, _, body) = get_json(
        &client,
        &format!("{base}/api/orders?since=2030-01-01T00:00:00Z"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["total"], 0);
    assert!(ids(&body).is_empty() && body["next_page_token"].is_null());
    // A bad time is a 400 naming the parameter.
    let (status, _, body) = get_json(&client, &format!("{base}/api/orders?since=yesterday")).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().expect("error").contains("since"));
}

#[tokio::test]
async fn touches_mid_sequence_neither_skip_nor_duplicate() {
    let sandbox = sandbox(100).await;
    let base = sandbox.base_url();
    let client = client();
    let mut seen: Vec<(u64, u64, String)> = Vec::new();
    let mut url = format!("{base}/api/orders?page_size=10");
    for page in 1..=30 {
        let (status, _, body) = get_json(&client, &url).await;
        assert_eq!(status, 200);
        for order in body["orders"].as_array().expect("orders") {
            seen.push((
                order["id"].as_u64().expect("id"),
                order["version"].as_u64().expect("version"),
                order["changed_at"]
                    .as_str()
                    .expect("changed_at")
                    .to_string(),
            ));
        }
        if page == 3 {
            // 5 and 25 were served already; 50 and 99 were not.
            assert_eq!(sandbox.source().touch(&[5, 25, 50, 99]), 4);
        }
        if page == 6 {
            // Touch one again and a third batch: the order keeps moving them last.
            sandbox.source().touch(&[50]);
        }
        match body["links"]["next"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    // Every record at least once; no (id, version) twice.
    let ids: HashSet<u64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(ids, (1..=100).collect::<HashSet<_>>());
    let versions: HashSet<(u64, u64)> = seen.iter().map(|s| (s.0, s.1)).collect();
    assert_eq!(
        versions.len(),
        seen.len(),
        "an (id, version) was served twice"
    );
    let mut per_id: HashMap<u64, Vec<u64>> = HashMap::new();
    for (id, version, _) in &seen {
        per_id.entry(*id).or_default().push(*version);
    }
    // Untouched records exactly once; served-then-touched ones again as the new version;
    // touched-before-served ones once, as the new version.
    for id in 1..=100u64 {
        let expected: Vec<u64> = match id {
            5 | 25 => vec![1, 2],
            99 => vec![2],
            50 => vec![3],
            _ => vec![1],
        };
        assert_eq!(per_id[&id], expected, "record {id}");
    }
    // changed_at never goes backwards within the sequence (a cursor can follow it).
    assert!(seen.windows(2).all(|w| w[0].2 <= w[1].2));
    assert_eq!(seen.len(), 102);
}

#[tokio::test]
async fn page_size_and_pagination_parameters_are_validated() {
    let sandbox = Sandbox::start(SandboxConfig {
        records: 10,
        max_page_size: 50,
        ..SandboxConfig::default()
    })
    .await
    .expect("start");
    let base = sandbox.base_url();
    let client = client();
    for (query, needle) in [
        ("page_size=51", "maximum of 50"),
        ("page_size=0", "at least 1"),
        ("page_size=ten", "page_size"),
        ("page_size=-5", "page_size"),
        ("limit=2.5", "limit"),
        ("page=0", "1-based"),
        ("page=x", "page"),
        ("offset=-1", "offset"),
        ("page=2&offset=5", "only one"),
        ("page_token=nonsense", "page_token"),
        ("page_size=5&limit=6", "alias"),
    ] {
        let (status, headers, body) =
            get_json(&client, &format!("{base}/api/orders?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(
            headers.get("content-type").and_then(|h| h.to_str().ok()),
            Some("application/json")
        );
        let error = body["error"].as_str().expect("error message");
        assert!(error.contains(needle), "{query}: {error}");
    }
    let (status, _, body) = get_json(&client, &format!("{base}/api/orders?page_size=50")).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body).len(), 10);
    // Past the end.
    let (status, _, body) =
        get_json(&client, &format!("{base}/api/orders?page=9&page_size=5")).await;
    assert_eq!(status, 200);
    assert_eq!(body["orders"], Value::Array(vec![]));
    assert!(body["links"]["next"].is_null() && body["next_page_token"].is_null());
    assert_eq!(body["total"], 10);
}

#[tokio::test]
async fn bearer_token_is_required_when_configured() {
    let sandbox = Sandbox::start(SandboxConfig {
        records: 5,
        source_token: Some("s3cret-token".into()),
        ..SandboxConfig::default()
    })
    .await
    .expect("start");
    let url = format!("{}/api/orders", sandbox.base_url());
    let client = client();
    let response = client.get(&url).send().await.expect("GET");
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    let response = client
        .get(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.expect("json");
    assert!(body["error"].as_str().expect("error").contains("expired"));
    let response = client
        .get(&url)
        .bearer_auth("s3cret-token")
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);
    // The control plane does not leak the token.
    let (_, _, stats) = get_json(
        &client,
        &format!("{}/_sandbox/source/stats", sandbox.base_url()),
    )
    .await;
    assert!(!stats.to_string().contains("s3cret"));
}

#[tokio::test]
async fn oauth_client_credentials_flow_and_expiry() {
    let sandbox = Sandbox::start(SandboxConfig {
        records: 5,
        oauth_client: Some(("ferry".into(), "client-secret".into())),
        oauth_token_ttl: Duration::from_secs(600),
        ..SandboxConfig::default()
    })
    .await
    .expect("start");
    let base = sandbox.base_url();
    let client = client();
    let token_url = format!("{base}/oauth/token");
    let orders = format!("{base}/api/orders");
    assert_eq!(client.get(&orders).send().await.expect("GET").status(), 401);

    let form = |id: &str, secret: &str| {
        format!("grant_type=client_credentials&client_id={id}&client_secret={secret}")
    };
    let response = client
        .post(&token_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form("ferry", "client-secret"))
        .send()
        .await
        .expect("token");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    let token = body["access_token"].as_str().expect("token").to_string();
    let response = client
        .get(&orders)
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);

    // Wrong client → 401 invalid_client; wrong grant → 400.
    for body in [
        form("ferry", "nope"),
        form("other", "client-secret"),
        "grant_type=client_credentials".into(),
    ] {
        let response = client
            .post(&token_url)
            .body(body)
            .send()
            .await
            .expect("token");
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"], "invalid_client");
    }
    let response = client
        .post(&token_url)
        .body("grant_type=password")
        .send()
        .await
        .expect("token");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "unsupported_grant_type");

    // HTTP basic client authentication works too.
    let response = client
        .post(&token_url)
        .basic_auth("ferry", Some("client-secret"))
        .body("grant_type=client_credentials")
        .send()
        .await
        .expect("token");
    assert_eq!(response.status(), 200);
    let basic_token = response.json::<Value>().await.expect("json")["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    assert_ne!(basic_token, token);
    assert_eq!(sandbox.source().tokens_issued(), 2);

    // expire_tokens → 401 for every issued token; a new token works again.
    sandbox.source().expire_tokens();
    for old in [&token, &basic_token] {
        let response = client
            .get(&orders)
            .bearer_auth(old)
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 401);
    }
    let response = client
        .post(&token_url)
        .body(form("ferry", "client-secret"))
        .send()
        .await
        .expect("token");
    let fresh = response.json::<Value>().await.expect("json")["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    assert_eq!(
        client
            .get(&orders)
            .bearer_auth(&fresh)
            .send()
            .await
            .expect("GET")
            .status(),
        200
    );
    // Over HTTP as well.
    let response = client
        .post(format!("{base}/_sandbox/source/expire_tokens"))
        .send()
        .await
        .expect("expire");
    assert_eq!(response.status(), 200);
    assert_eq!(
        client
            .get(&orders)
            .bearer_auth(&fresh)
            .send()
            .await
            .expect("GET")
            .status(),
        401
    );
    assert_eq!(sandbox.source().tokens_issued(), 3);
}

#[tokio::test]
async fn page_faults_hit_their_page_in_every_style() {
    let sandbox = sandbox(100).await;
    let base = sandbox.base_url();
    let client = client();
    sandbox.source().set_fault(SourceFault::Status {
        page: 2,
        status: 503,
    });
    // page 2 by number, by offset, and by the token of page 1.
    for url in [
        format!("{base}/api/orders?page_size=10&page=2"),
        format!("{base}/api/orders?page_size=10&offset=15"),
    ] {
        let (status, _, body) = get_json(&client, &url).await;
        assert_eq!(status, 503, "{url}");
        assert!(body["error"].as_str().expect("error").contains("page 2"));
    }
    let (status, _, first) = get_json(&client, &format!("{base}/api/orders?page_size=10")).await;
    assert_eq!(status, 200);
    let next = first["links"]["next"].as_str().expect("next");
    assert_eq!(get_json(&client, next).await.0, 503);
    assert_eq!(
        get_json(&client, &format!("{base}/api/orders?page_size=10&page=3"))
            .await
            .0,
        200
    );

    // Malformed: 200 with a body no JSON parser accepts.
    sandbox
        .source()
        .set_fault(SourceFault::Malformed { page: 2 });
    let response = client.get(next).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.expect("body");
    assert!(!bytes.is_empty());
    assert!(serde_json::from_slice::<Value>(&bytes).is_err());

    // Not JSON: HTML.
    sandbox.source().set_fault(SourceFault::NonJson { page: 3 });
    let response = client
        .get(format!("{base}/api/orders?page_size=10&page=3"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/html")
    );
    assert!(response.text().await.expect("text").contains("<html>"));

    // Oversized: exactly the requested size.
    sandbox.source().set_fault(SourceFault::Oversized {
        page: 4,
        bytes: 3 * 1024 * 1024,
    });
    let response = client
        .get(format!("{base}/api/orders?page_size=10&page=4"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.bytes().await.expect("body").len(), 3 * 1024 * 1024);

    // Delay: every page waits.
    sandbox
        .source()
        .set_fault(SourceFault::Delay { millis: 150 });
    let started = Instant::now();
    assert_eq!(
        get_json(&client, &format!("{base}/api/orders?page=5&page_size=10"))
            .await
            .0,
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(150));

    assert_eq!(sandbox.source().faults().len(), 4);
    sandbox.source().clear_faults();
    assert_eq!(get_json(&client, next).await.0, 200);
    let started = Instant::now();
    get_json(&client, &format!("{base}/api/orders")).await;
    assert!(started.elapsed() < Duration::from_millis(150));
}

#[tokio::test]
async fn source_control_endpoints_touch_and_set_faults() {
    let sandbox = sandbox(20).await;
    let base = sandbox.base_url();
    let client = client();
    let response = client
        .post(format!("{base}/_sandbox/source/touch"))
        .body(r#"{"ids": [3, 4]}"#)
        .send()
        .await
        .expect("touch");
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.expect("json")["touched"], 2);
    assert_eq!(sandbox.source().record(3).expect("3")["version"], 2);
    let (_, _, page) = get_json(&client, &format!("{base}/api/orders?page_size=50")).await;
    assert_eq!(&ids(&page)[18..], &[3, 4]);

    for (body, needle) in [
        (r#"{"ids": [0]}"#, "unknown record ids"),
        (r#"{"ids": [21]}"#, "unknown record ids"),
        (r#"{"ids": "x"}"#, "invalid JSON body"),
        (r#"{"idz": []}"#, "unknown field"),
        ("not json", "invalid JSON body"),
    ] {
        let response = client
            .post(format!("{base}/_sandbox/source/touch"))
            .body(body)
            .send()
            .await
            .expect("touch");
        assert_eq!(response.status(), 400, "{body}");
        let error = response.json::<Value>().await.expect("json")["error"].to_string();
        assert!(error.contains(needle), "{body}: {error}");
    }

    let response = client
        .post(format!("{base}/_sandbox/source/faults"))
        .body(r#"{"status": {"page": 1, "status": 502}}"#)
        .send()
        .await
        .expect("fault");
    assert_eq!(response.status(), 200);
    assert_eq!(
        get_json(&client, &format!("{base}/api/orders")).await.0,
        502
    );
    for body in [
        r#"{"status": {"page": 0, "status": 502}}"#,
        r#"{"status": {"page": 1, "status": 42}}"#,
        r#"{"status": {"page": 1, "status": 502, "extra": 1}}"#,
        r#"{"explode": {"page": 1}}"#,
    ] {
        let response = client
            .post(format!("{base}/_sandbox/source/faults"))
            .body(body)
            .send()
            .await
            .expect("fault");
        assert_eq!(response.status(), 400, "{body}");
    }
    let response = client
        .delete(format!("{base}/_sandbox/source/faults"))
        .send()
        .await
        .expect("clear");
    assert_eq!(response.status(), 200);
    assert_eq!(
        get_json(&client, &format!("{base}/api/orders")).await.0,
        200
    );
    let (status, _, health) = get_json(&client, &format!("{base}/_sandbox/health")).await;
    assert_eq!(status, 200);
    assert_eq!(health["ok"], true);
    let (status, _, body) = get_json(&client, &format!("{base}/nope")).await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn dropping_or_shutting_down_stops_the_server() {
    let client = client();
    let sandbox = sandbox(5).await;
    let url = format!("{}/_sandbox/health", sandbox.base_url());
    assert_eq!(get_json(&client, &url).await.0, 200);
    sandbox.shutdown().await;
    assert!(
        common::client_builder()
            .build()
            .expect("client")
            .get(&url)
            .send()
            .await
            .is_err()
    );

    let dropped = self::sandbox(5).await;
    let url = format!("{}/_sandbox/health", dropped.base_url());
    drop(dropped);
    let fresh = common::client_builder().build().expect("client");
    // The shutdown is asynchronous after a drop; bounded polling until the port refuses.
    let mut refused = false;
    for _ in 0..100 {
        if fresh.get(&url).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "server still answering after drop");
}
