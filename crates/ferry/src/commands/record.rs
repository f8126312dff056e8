//! `ferry record FLOW_FILE --pages N`: captures real source pages into a fixture file.
//!
//! The flow's own pager reads the pages (same URL, parameters, authentication, pagination and
//! page-size cap as a run), starting from the flow's configured cursor start
//! (`source.http.cursor.start`) or `--from-cursor`. Recording never opens the state store: it
//! neither reads nor moves a stored cursor and writes nothing but the fixture file, so it can be
//! pointed at production without touching a run's state. Nothing is delivered.
//!
//! The fixture is built in memory, secrets are taken out of it ([`crate::fixture::redact`]),
//! it is read back through the reader `ferry test` uses (so an oversized or too deeply nested
//! recording is refused here rather than later), and then written through a temporary file and
//! a rename. A failed page writes nothing. An existing fixture is kept unless `--force`.

use ferry_spec::words::count;
use std::path::Path;

use anyhow::{Context as _, Result};
use chrono::{SecondsFormat, Utc};
use ferry_connect::source::http::HttpPager;
use serde_json::{Value, json};

use crate::cli::Output;
use crate::context::Ctx;
use crate::exit::CliError;
use crate::fixture::{
    self, DEFAULT_FIXTURE_NAME, FIXTURE_VERSION, Fixture, MAX_FIXTURE_BYTES, RecordedPage,
    RecordedRequest, RecordedResponse, redact,
};

/// What to record: the arguments of `ferry record`.
#[derive(Debug)]
pub struct RecordArgs<'a> {
    pub flow_file: &'a Path,
    pub pages: u64,
    pub name: Option<&'a str>,
    pub from_cursor: Option<&'a str>,
    pub force: bool,
}

/// Records up to `pages` pages; exit 0 when the fixture was written, 2 on bad input, 1 when the
/// source failed.
pub async fn record(ctx: &Ctx, args: RecordArgs<'_>) -> Result<u8> {
    let name = args.name.unwrap_or(DEFAULT_FIXTURE_NAME);
    fixture::check_name(name).map_err(|e| CliError::input(e.to_string()))?;
    let loaded =
        ferry_spec::load_file(args.flow_file).map_err(|e| CliError::input(e.to_string()))?;
    let path = fixture::fixture_path(args.flow_file, name);
    if path.exists() && !args.force {
        return Err(CliError::input(format!(
            "{} exists; pass --force to record over it, or --name to record another session",
            path.display()
        ))
        .into());
    }
    let Some(src) = loaded.flow.source.http() else {
        return Err(CliError::input(format!(
            "ferry record records HTTP sessions, and flow {} reads from {}",
            loaded.flow.name,
            loaded.flow.source.path()
        ))
        .into());
    };
    let cursor = match (args.from_cursor, &src.cursor) {
        (Some(c), Some(_)) => Some(Value::String(c.to_string())),
        (Some(_), None) => {
            return Err(CliError::input(format!(
                "--from-cursor: flow {} has no source.http.cursor, so there is no cursor to start from",
                loaded.flow.name
            ))
            .into());
        }
        (None, spec) => spec.as_ref().and_then(|c| c.start.clone()),
    };
    let env = ctx.run_env()?;
    let mut pager = HttpPager::new(src, &env, cursor.as_ref())
        .map_err(|e| CliError::input(format!("{}: {e}", loaded.flow.name)))?;
    let headers: std::collections::BTreeMap<String, String> =
        pager.recorded_headers().into_iter().collect();

    let mut pages = Vec::new();
    while (pages.len() as u64) < args.pages {
        let page = pager.next_raw_page().await.map_err(|e| {
            CliError::failed(format!(
                "recording {} stopped, nothing was written: {e}",
                loaded.flow.name
            ))
        })?;
        let Some(page) = page else { break };
        pages.push(RecordedPage {
            request: RecordedRequest {
                method: "GET".into(),
                url: page.url,
                headers: headers.clone(),
            },
            response: RecordedResponse {
                status: page.status,
                body: page.body,
            },
        });
    }
    let fx = Fixture {
        version: FIXTURE_VERSION,
        flow: loaded.flow.name.clone(),
        flow_hash: loaded.hash.clone(),
        recorded_at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        cursor,
        pages,
    };

    // Secrets out, as JSON: every string and key of the finished fixture.
    let secret_values: Vec<String> = redact::secret_names(&loaded.flow)
        .into_iter()
        .filter_map(|n| {
            env.secrets
                .resolve(&ferry_spec::SecretRef { secret: n })
                .ok()
        })
        .map(|v| v.expose().to_string())
        .collect();
    let mut doc = serde_json::to_value(&fx).context("encoding the fixture")?;
    let redacted = redact::redact(
        &mut doc,
        &redact::needles(secret_values.iter().map(String::as_str)),
    );
    let mut text = serde_json::to_string_pretty(&doc).context("encoding the fixture")?;
    text.push('\n');
    if text.len() as u64 > MAX_FIXTURE_BYTES {
        return Err(CliError::input(format!(
            "the recording is {} bytes; fixture files are at most {MAX_FIXTURE_BYTES} bytes: record fewer pages (--pages)",
            text.len()
        ))
        .into());
    }
    let checked = fixture::parse_fixture(&path, text.as_bytes()).map_err(|e| {
        CliError::input(format!(
            "the recording cannot be read back, nothing was written: {e}"
        ))
    })?;

    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fixture::write_atomically(&path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;

    let page_count = checked.pages.len();
    let records: usize = match ferry_spec::JsonPath::parse(&src.records) {
        Ok(rp) => checked
            .pages
            .iter()
            .map(|p| rp.select(&p.response.body).len())
            .sum(),
        Err(_) => 0,
    };
    let ended = (page_count as u64) < args.pages;
    if ctx.output() == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "fixture": path,
                "flow": loaded.flow.name,
                "flow_hash": loaded.hash,
                "pages": page_count,
                "records": records,
                "source_ended": ended,
                "redacted_strings": redacted,
            }))?
        );
    } else {
        println!(
            "recorded {} ({}) of {} into {}",
            count(page_count, "page"),
            count(records, "record"),
            loaded.flow.name,
            path.display()
        );
        if ended {
            println!(
                "the source had no more pages after page {page_count} (asked for {})",
                args.pages
            );
        }
        if redacted > 0 {
            println!("{redacted} strings held a secret's value and were redacted");
        }
        println!(
            "next: `ferry test --update {}` writes its golden output",
            args.flow_file.display()
        );
    }
    Ok(0)
}
