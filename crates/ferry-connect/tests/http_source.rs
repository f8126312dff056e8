//! The HTTP source against the sandbox and a small echo server, over 127.0.0.1.

use std::collections::HashSet;

use ferry_connect::ConnectError;
use ferry_connect::source::http::HttpPager;
use ferry_env::{RunEnv, Secrets};
use ferry_sandbox::{Sandbox, SandboxConfig, SourceFault};
use ferry_spec::HttpSource;
use serde_json::{Value, json};

fn source(yaml: &str) -> HttpSource {
    let text = format!(
        "name: t\nsource:\n  http:\n{}\ndestination:\n  http:\n    url: \"http://127.0.0.1:1/x\"\n",
        yaml.lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    ferry_spec::load_str(&text, None)
        .unwrap_or_else(|e| panic!("{e}"))
        .flow
        .source
        .http()
        .unwrap()
        .clone()
}

fn env(sb: &Sandbox, secrets: &[(&str, &str)]) -> RunEnv {
    RunEnv::isolated(
        "test",
        Secrets::from_map(secrets.iter().map(|(k, v)| (k.to_string(), v.to_string()))),
    )
    .with_var("BASE", sb.base_url())
}

async fn drain(pager: &mut HttpPager) -> Result<Vec<Value>, ConnectError> {
    let mut all = Vec::new();
    while let Some(page) = pager.next_page().await? {
        all.extend(page.records);
        assert!(pager.pages_read() < 10_000, "pagination does not end");
    }
    Ok(all)
}

fn ids(records: &[Value]) -> Vec<u64> {
    records.iter().map(|r| r["id"].as_u64().unwrap()).collect()
}

async fn sandbox(records: u64) -> Sandbox {
    Sandbox::start(SandboxConfig {
        records,
        ..SandboxConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn every_pagination_style_reads_every_record_once() {
    let sb = sandbox(537).await;
    let styles = [
        "paginate: { next_url: \"$.links.next\" }",
        "paginate: { cursor_token: { from: \"$.next_page_token\", param: page_token } }",
        "paginate: { page_number: { param: page } }",
        "paginate: { offset: { param: offset, limit_param: limit, limit: 50 } }",
        "paginate: { link_header: {} }",
    ];
    for style in styles {
        let spec = source(&format!(
            "url: \"{{{{ env.BASE }}}}/api/orders\"\nparams: {{ page_size: 50 }}\nrecords: \"$.orders[*]\"\n{style}"
        ));
        let mut pager = HttpPager::new(&spec, &env(&sb, &[]), None).unwrap();
        let all = drain(&mut pager)
            .await
            .unwrap_or_else(|e| panic!("{style}: {e}"));
        let got = ids(&all);
        let unique: HashSet<u64> = got.iter().copied().collect();
        assert_eq!(got.len(), 537, "{style}");
        assert_eq!(unique.len(), 537, "{style}: duplicates");
    }
}

#[tokio::test]
async fn the_cursor_goes_into_the_request() {
    let sb = sandbox(100).await;
    let spec = source(
        "url: \"{{ env.BASE }}/api/orders\"\nparams: { since: \"{{ cursor }}\", page_size: 30 }\nrecords: \"$.orders[*]\"\npaginate: { next_url: \"$.links.next\" }",
    );
    let cursor = sb.source().record(60).unwrap()["changed_at"].clone();
    let mut pager = HttpPager::new(&spec, &env(&sb, &[]), Some(&cursor)).unwrap();
    let got = ids(&drain(&mut pager).await.unwrap());
    assert_eq!(got, (60..=100).collect::<Vec<_>>());
    // no cursor yet: the parameter is left out and everything comes
    let mut pager = HttpPager::new(&spec, &env(&sb, &[]), None).unwrap();
    assert_eq!(drain(&mut pager).await.unwrap().len(), 100);
}

#[tokio::test]
async fn bearer_auth_is_sent_and_required() {
    let sb = Sandbox::start(SandboxConfig {
        records: 10,
        source_token: Some("tok-123".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let spec = source(
        "url: \"{{ env.BASE }}/api/orders\"\nrecords: \"$.orders[*]\"\nauth: { bearer: { secret: TOK } }",
    );
    let mut pager = HttpPager::new(&spec, &env(&sb, &[("TOK", "tok-123")]), None).unwrap();
    assert_eq!(drain(&mut pager).await.unwrap().len(), 10);
    let mut pager =
        HttpPager::new(&spec, &env(&sb, &[("TOK", "wrong-secret-value")]), None).unwrap();
    let e = drain(&mut pager).await.unwrap_err().to_string();
    assert!(e.contains("HTTP 401"), "{e}");
    assert!(!e.contains("wrong-secret-value"), "{e}");
    let e = HttpPager::new(&spec, &env(&sb, &[]), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("secret `TOK` is not set"), "{e}");
}

#[tokio::test]
async fn oauth2_tokens_are_fetched_cached_and_refreshed_on_401() {
    let sb = Sandbox::start(SandboxConfig {
        records: 40,
        oauth_client: Some(("ferry".into(), "client-secret-xyz".into())),
        source_token: Some("unused-static-token".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let spec = source(
        "url: \"{{ env.BASE }}/api/orders\"\nparams: { page_size: 10 }\nrecords: \"$.orders[*]\"\npaginate: { next_url: \"$.links.next\" }\nauth: { oauth2: { token_url: \"{{ env.BASE }}/oauth/token\", client_id: ferry, client_secret: { secret: CS } } }",
    );
    let e = env(&sb, &[("CS", "client-secret-xyz")]);
    let mut pager = HttpPager::new(&spec, &e, None).unwrap();
    let first = pager.next_page().await.unwrap().unwrap();
    assert_eq!(first.records.len(), 10);
    assert_eq!(sb.source().tokens_issued(), 1);
    pager.next_page().await.unwrap().unwrap();
    assert_eq!(sb.source().tokens_issued(), 1, "the token is cached");
    sb.source().expire_tokens();
    let rest = drain(&mut pager).await.unwrap();
    assert_eq!(rest.len(), 20);
    assert_eq!(sb.source().tokens_issued(), 2, "a 401 fetched a new token");

    let bad = env(&sb, &[("CS", "nope")]);
    let mut pager = HttpPager::new(&spec, &bad, None).unwrap();
    let err = drain(&mut pager).await.unwrap_err().to_string();
    assert!(err.contains("OAuth2 token request"), "{err}");
    assert!(!err.contains("nope"), "{err}");
}

#[tokio::test]
async fn basic_and_api_key_auth_reach_the_server() {
    use axum::http::HeaderMap;
    let app = axum::Router::new().route(
        "/echo",
        axum::routing::get(|h: HeaderMap| async move {
            let auth = h
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let key = h
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            axum::Json(json!([{ "auth": auth, "key": key }]))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{addr}");
    let e = RunEnv::isolated("t", Secrets::from_map([("PW", "pa:ss"), ("K", "k-1")]))
        .with_var("BASE", base);

    let spec = source(
        "url: \"{{ env.BASE }}/echo\"\nauth: { basic: { username: ann, password: { secret: PW } } }",
    );
    let mut p = HttpPager::new(&spec, &e, None).unwrap();
    let recs = drain(&mut p).await.unwrap();
    assert_eq!(recs[0]["auth"], "Basic YW5uOnBhOnNz");

    let spec = source("url: \"{{ env.BASE }}/echo\"\nauth: { api_key: { key: { secret: K } } }");
    let mut p = HttpPager::new(&spec, &e, None).unwrap();
    assert_eq!(drain(&mut p).await.unwrap()[0]["key"], "k-1");
    server.abort();
}

#[tokio::test]
async fn broken_pages_fail_with_the_page_and_url() {
    let sb = sandbox(300).await;
    let spec = source(
        "url: \"{{ env.BASE }}/api/orders\"\nparams: { page_size: 100 }\nrecords: \"$.orders[*]\"\npaginate: { next_url: \"$.links.next\" }\nmax_page_bytes: 1MiB",
    );
    let cases = [
        (SourceFault::Malformed { page: 2 }, "not valid JSON"),
        (
            SourceFault::NonJson { page: 1 },
            "not valid JSON: expected value at line 1 column 1; the source sent content type `text/html; charset=utf-8` and a body of 124 bytes starting `<html><head><title>502 Bad Gateway</title>",
        ),
        (
            SourceFault::Status {
                page: 3,
                status: 404,
            },
            "HTTP 404",
        ),
        (
            SourceFault::Oversized {
                page: 1,
                bytes: 3 << 20,
            },
            "larger than 1048576 bytes",
        ),
    ];
    for (fault, want) in cases {
        sb.source().clear_faults();
        sb.source().set_fault(fault.clone());
        let mut pager = HttpPager::new(&spec, &env(&sb, &[]), None).unwrap();
        let err = drain(&mut pager).await.unwrap_err().to_string();
        assert!(err.contains(want), "{fault:?}: {err}");
        assert!(err.contains("/api/orders"), "{err}");
    }
}

#[tokio::test]
async fn transient_source_errors_are_retried() {
    let sb = sandbox(20).await;
    sb.source().set_fault(SourceFault::Status {
        page: 1,
        status: 503,
    });
    let spec = source("url: \"{{ env.BASE }}/api/orders\"\nrecords: \"$.orders[*]\"");
    let mut pager = HttpPager::new(&spec, &env(&sb, &[]), None).unwrap();
    let before = sb.source().requests();
    let err = drain(&mut pager).await.unwrap_err().to_string();
    assert!(err.contains("HTTP 503"), "{err}");
    // The attempts come from the one retry layer, with the source's default policy.
    assert_eq!(pager.attempts(), 4);
    assert_eq!(sb.source().requests() - before, u64::from(pager.attempts()));
}

#[tokio::test]
async fn an_unreachable_source_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let spec = source(&format!(
        "url: \"http://127.0.0.1:{port}/x\"\ntimeout: 2s\nconnect_timeout: 1s"
    ));
    let e = RunEnv::isolated("t", Secrets::default());
    let mut pager = HttpPager::new(&spec, &e, None).unwrap();
    let err = drain(&mut pager).await.unwrap_err().to_string();
    assert!(
        err.contains("connection failed") || err.contains("request failed"),
        "{err}"
    );
}

#[tokio::test]
async fn raw_pages_keep_the_body_and_paginate_like_record_pages() {
    let sb = sandbox(120).await;
    let spec = source(
        "url: \"{{ env.BASE }}/api/orders\"\nparams: { page_size: 50, key: { secret: KEY } }\nheaders: { X-Team: ops, X-Key: { secret: KEY } }\nrecords: \"$.orders[*]\"\npaginate: { next_url: \"$.links.next\" }",
    );
    let e = env(&sb, &[("KEY", "key-value-42")]);
    let mut raw = HttpPager::new(&spec, &e, None).unwrap();
    let mut pages = Vec::new();
    while let Some(p) = raw.next_raw_page().await.unwrap() {
        pages.push(p);
    }
    assert_eq!(pages.len(), 3);
    assert_eq!(
        pages.iter().map(|p| p.number).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(pages.iter().all(|p| p.status == 200));
    // the body is whole: records and pagination fields are still in it
    assert_eq!(pages[0].body["orders"].as_array().unwrap().len(), 50);
    assert!(pages[0].body["links"]["next"].is_string());
    // secret parameters are redacted in the URL; secret headers in the recorded headers
    assert!(
        pages[0].url.contains("key=%5Bredacted%5D"),
        "{}",
        pages[0].url
    );
    assert!(pages.iter().all(|p| !p.url.contains("key-value-42")));
    let headers = raw.recorded_headers();
    assert!(
        headers.contains(&("x-team".into(), "ops".into())),
        "{headers:?}"
    );
    assert!(
        headers.contains(&("x-key".into(), "[redacted]".into())),
        "{headers:?}"
    );

    // the records of the raw bodies are the records the live pager yields
    let records = ferry_spec::JsonPath::parse(&spec.records).unwrap();
    let replayed: Vec<Value> = pages
        .into_iter()
        .flat_map(|mut p| {
            let budget = spec.page_expansion_budget(ferry_connect::source::http::json_len(&p.body));
            ferry_connect::source::http::take_records(&records, &mut p.body, budget).unwrap()
        })
        .collect();
    let mut live = HttpPager::new(&spec, &e, None).unwrap();
    assert_eq!(replayed, drain(&mut live).await.unwrap());
}

/// `$..*` selects every nested value again with each of its parents: on a nested page that is
/// several times the page. Over `source.http.max_page_expansion` the page fails, naming it.
#[tokio::test]
async fn a_selection_that_multiplies_the_page_fails_naming_the_setting() {
    let orders: Vec<Value> = (0..2500)
        .map(|i| {
            json!({"id": i, "buyer": {"email": format!("u{i}@x.io"), "address": {"city": "Berlin",
                "geo": {"lat": 52.5, "lon": 13.4, "fix": {"by": "gps", "at": "2024-01-01T00:00:00Z"}}}},
                "items": [{"sku": "S-1", "price": {"amount": "1.00", "currency": "EUR"}}]})
        })
        .collect();
    let page = serde_json::to_vec(&json!({ "orders": orders })).unwrap();
    let page_len = page.len();
    assert!(page_len > 500_000 && page_len < 1 << 20, "{page_len}");
    let app = axum::Router::new().route(
        "/page",
        axum::routing::get(move || {
            let page = page.clone();
            async move { ([("content-type", "application/json")], page) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let e = RunEnv::isolated("t", Secrets::from_map(Vec::<(String, String)>::new()))
        .with_var("BASE", format!("http://{addr}"));

    let spec = source("url: \"{{ env.BASE }}/page\"\nrecords: \"$..*\"");
    let mut p = HttpPager::new(&spec, &e, None).unwrap();
    let err = drain(&mut p).await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("page 1 from http://{addr}/page: `$..*` selects ")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "more than {} bytes of JSON, over source.http.max_page_expansion (2 times the page's {page_len} bytes",
            2u64 << 20
        )),
        "{err}"
    );
    assert!(
        err.contains("or raise source.http.max_page_expansion"),
        "{err}"
    );

    // Raised, the same page is read; the records themselves are never measured.
    let spec = source("url: \"{{ env.BASE }}/page\"\nrecords: \"$..*\"\nmax_page_expansion: 10");
    let mut p = HttpPager::new(&spec, &e, None).unwrap();
    assert!(drain(&mut p).await.unwrap().len() > 40_000);
    let spec =
        source("url: \"{{ env.BASE }}/page\"\nrecords: \"$.orders[*]\"\nmax_page_expansion: 1");
    let mut p = HttpPager::new(&spec, &e, None).unwrap();
    assert_eq!(drain(&mut p).await.unwrap().len(), 2500);
    server.abort();
}

/// Page fetches take their attempts and waits from the one retry layer: with a seed in
/// `SourceOptions`, fetch `k` waits exactly what `JitteredBackoff::…with_seed(seed + k)` draws
/// for `source.http.retry`, and makes the policy's attempts.
#[tokio::test]
async fn page_fetches_take_their_attempts_and_waits_from_the_seeded_stack() {
    use ferry_connect::SourceOptions;
    use ferry_resilience::{BackoffSeed, Jitter, JitteredBackoff};
    use std::time::Duration;

    let sb = sandbox(20).await;
    sb.source().set_fault(SourceFault::Status {
        page: 2,
        status: 503,
    });
    let spec = source(
        "url: \"{{ env.BASE }}/api/orders\"\nparams:\n  page_size: 10\nrecords: \"$.orders[*]\"\npaginate:\n  next_url: \"$.links.next\"\nretry: { attempts: 4, initial: 5ms, max: 40ms, jitter: full }",
    );
    let seed = BackoffSeed::new(11);
    let opts = SourceOptions {
        backoff_seed: Some(seed.clone()),
        ..SourceOptions::default()
    };
    let mut pages =
        ferry_connect::source::from_spec(&ferry_spec::Source::Http(spec), &env(&sb, &[]), &opts)
            .await
            .unwrap();
    let before = sb.source().requests();
    let first = pages.next_batch().await.unwrap().expect("page 1");
    assert_eq!(first.records.len(), 10);
    let err = pages.next_batch().await.unwrap_err().to_string();
    assert!(err.contains("HTTP 503"), "{err}");
    // Fetch 0 (page 1) needed no retry; fetch 1 (page 2) made 4 attempts and waited, between
    // them, exactly the first three waits of seed 11 + 1.
    assert_eq!(seed.calls(), 2);
    let want: Vec<(u64, u32, Duration)> = JitteredBackoff::new(
        Duration::from_millis(5),
        Duration::from_millis(40),
        Jitter::Full,
    )
    .with_seed(BackoffSeed::call_seed(11, 1))
    .take(3)
    .zip(1..)
    .map(|(wait, attempt)| (1, attempt, wait))
    .collect();
    let got: Vec<(u64, u32, Duration)> = seed
        .retries()
        .iter()
        .map(|r| (r.call, r.attempt, r.wait))
        .collect();
    assert_eq!(got, want);
    assert_eq!(sb.source().requests() - before, 1 + 4);
}
