//! A one-shot run's metrics, handed on when it ends: pushed to a Prometheus Pushgateway or an
//! OpenTelemetry collector, or written for node_exporter's textfile collector.
//!
//! `ferry serve` is scraped; a `ferry run` started by cron or a CI job ends before any scrape
//! would see it. The conventions for such batch jobs are the Pushgateway (`PUT` of the text
//! format to `/metrics/job/<job>/<label>/<value>…`, replacing that group's series) and the
//! textfile collector (a `*.prom` file in a folder node_exporter reads, replaced atomically);
//! operators without Prometheus push OTLP instead. [`PushTarget::parse`] tells which a URL
//! means: a path ending in `/v1/metrics` is an OTLP/HTTP metrics endpoint, anything else a
//! Pushgateway.
//!
//! What is pushed is everything the process recorded: for `ferry run`, that one run — its
//! `ferry_runs_total`, `ferry_records_total`, durations, `ferry_last_success_timestamp_seconds`
//! (what a staleness alert reads) and `ferry_build_info`. Counters start at zero in every
//! process, so a Pushgateway group holds the last run's counts, not a running total: alert on
//! the timestamp and the last run's status, as for any batch job.
//!
//! Credentials in a push URL (`https://user:pw@push.example`) are sent as basic auth by the
//! HTTP client and never shown: messages name the URL without them.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use opentelemetry::metrics::MeterProvider as _;
use reqwest::Url;

use crate::error::TelemetryError;
use crate::metrics::{self, MetricsHandle};
use crate::otlp::{self, MeterExport, MetricsEndpoint};

/// The job name of a Pushgateway group unless the URL names one (`/metrics/job/<name>`).
pub const DEFAULT_JOB: &str = "ferry";
/// How long a push may take.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// The Prometheus text format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The path of an OTLP/HTTP metrics endpoint.
const OTLP_METRICS_PATH: &str = "/v1/metrics";
/// A push never exports on its own timer: only once, when it finishes.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Where a run's metrics go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushTarget {
    /// A Pushgateway: its base URL, or a URL up to `/metrics/job/<name>`.
    Pushgateway(Url),
    /// An OTLP/HTTP metrics endpoint (`…/v1/metrics`).
    Otlp(Url),
}

impl PushTarget {
    /// Reads `--metrics-push URL`.
    pub fn parse(url: &str) -> Result<PushTarget, TelemetryError> {
        let hint = "give a Pushgateway's URL (http://pushgateway:9091) or an OTLP/HTTP metrics endpoint (http://collector:4318/v1/metrics)";
        let parsed = Url::parse(url.trim()).map_err(|e| {
            TelemetryError::Push(format!(
                "--metrics-push `{}` is not a URL ({e}): {hint}",
                shown(url)
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(TelemetryError::Push(format!(
                "--metrics-push `{}` is not an http(s) URL with a host: {hint}",
                shown(url)
            )));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(TelemetryError::Push(format!(
                "--metrics-push `{}` has a query or fragment, which neither a Pushgateway nor an OTLP endpoint takes: {hint}",
                shown(url)
            )));
        }
        Ok(if parsed.path().ends_with(OTLP_METRICS_PATH) {
            PushTarget::Otlp(parsed)
        } else {
            PushTarget::Pushgateway(parsed)
        })
    }

    /// The URL without credentials, for messages.
    pub fn shown(&self) -> String {
        match self {
            PushTarget::Pushgateway(u) | PushTarget::Otlp(u) => shown(u.as_str()),
        }
    }
}

/// The Pushgateway URL of the group `grouping` (label name, value pairs) under `base`.
///
/// Values that are not plain (`[A-Za-z0-9_.-]`, not empty) are sent in the Pushgateway's
/// base64 form (`/name@base64/…`), so a value with `/` cannot change the path.
pub fn pushgateway_url(base: &Url, grouping: &[(&str, &str)]) -> Url {
    let mut path = base.path().trim_end_matches('/').to_string();
    if !path.contains("/metrics/job/") {
        path.push_str("/metrics/job/");
        path.push_str(DEFAULT_JOB);
    }
    for (name, value) in grouping {
        let plain = !value.is_empty()
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if plain && *value != "." && *value != ".." {
            path.push_str(&format!("/{name}/{value}"));
        } else if value.is_empty() {
            path.push_str(&format!("/{name}@base64/="));
        } else {
            let b64 = base64::engine::general_purpose::URL_SAFE.encode(value);
            path.push_str(&format!("/{name}@base64/{b64}"));
        }
    }
    let mut url = base.clone();
    url.set_path(&path);
    url
}

/// A push set up before a run: the recorder is installed (so the run records), and for OTLP
/// a meter provider exporting to the URL is attached.
#[derive(Debug)]
pub struct MetricsPush {
    target: PushTarget,
    handle: MetricsHandle,
    otlp: Option<MeterExport>,
}

impl MetricsPush {
    /// Installs what the run needs to be recorded for `target`.
    pub fn start(target: PushTarget, service_name: &str) -> Result<MetricsPush, TelemetryError> {
        let handle = metrics::prometheus()?;
        let otlp = match &target {
            PushTarget::Otlp(url) => {
                let export = otlp::meter_provider(
                    service_name,
                    MetricsEndpoint::Url(url.as_str()),
                    Some(NEVER),
                )?;
                metrics::export_to_meter(export.provider.meter("ferry"))?;
                Some(export)
            }
            PushTarget::Pushgateway(_) => None,
        };
        Ok(MetricsPush {
            target,
            handle,
            otlp,
        })
    }

    /// Sends what was recorded: a Pushgateway gets the text format `PUT` under the group
    /// `grouping` (replacing that group's series); an OTLP endpoint gets one export.
    pub async fn finish(self, grouping: &[(&str, &str)]) -> Result<(), TelemetryError> {
        let shown = self.target.shown();
        match (&self.target, self.otlp) {
            (PushTarget::Pushgateway(base), _) => {
                let url = pushgateway_url(base, grouping);
                put_text(&url, self.handle.render()).await.map_err(|why| {
                    TelemetryError::Push(format!(
                        "pushing the run's metrics to the Pushgateway at {} failed: {why}",
                        self::shown(url.as_str())
                    ))
                })
            }
            (PushTarget::Otlp(_), Some(export)) => {
                // The reader's thread exports with a blocking client; wait for it off the
                // runtime's worker threads.
                let result = tokio_blocking(move || {
                    let r = export.provider.shutdown();
                    (r, export.last_error())
                })
                .await;
                match result {
                    Ok((Ok(()), _)) => Ok(()),
                    Ok((Err(e), why)) => Err(TelemetryError::Push(format!(
                        "pushing the run's metrics over OTLP to {shown} failed: {}",
                        why.unwrap_or_else(|| e.to_string())
                    ))),
                    Err(e) => Err(TelemetryError::Push(format!(
                        "pushing the run's metrics over OTLP to {shown} failed: {e}"
                    ))),
                }
            }
            (PushTarget::Otlp(_), None) => Err(TelemetryError::Push(format!(
                "pushing the run's metrics over OTLP to {shown} failed: it was not set up before the run"
            ))),
        }
    }
}

/// Runs `f` on a thread of its own and waits for it without blocking an async runtime.
async fn tokio_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("ferry-metrics-push".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    rx.await.map_err(|_| "the push thread panicked".to_string())
}

async fn put_text(url: &Url, body: String) -> Result<(), String> {
    // reqwest is built without a TLS provider of its own (see the workspace manifest).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(PUSH_TIMEOUT)
        .build()
        .map_err(|e| e.without_url().to_string())?;
    let response = client
        .put(url.clone())
        .header(reqwest::header::CONTENT_TYPE, TEXT_FORMAT)
        .body(body)
        .send()
        .await
        .map_err(|e| error_chain(&e.without_url()))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    let text: String = text.trim().chars().take(300).collect();
    Err(crate::redact::redact(&format!("HTTP {status}: {text}")).into_owned())
}

/// An error and its causes, each once (reqwest's own message says only "error sending
/// request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// A URL without its user name and password.
fn shown(url: &str) -> String {
    match Url::parse(url.trim()) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => match url.split_once("://") {
            Some((scheme, rest)) => match rest.split_once('@') {
                Some((_, host)) => format!("{scheme}://{host}"),
                None => url.to_string(),
            },
            None => url.to_string(),
        },
    }
}

/// Checks `--metrics-file PATH` before the run: a `*.prom` file (the only files the textfile
/// collector reads) in a folder that exists.
pub fn check_textfile(path: &Path) -> Result<(), TelemetryError> {
    if path.extension().and_then(|e| e.to_str()) != Some("prom") {
        return Err(TelemetryError::Push(format!(
            "--metrics-file {}: node_exporter's textfile collector reads only *.prom files; name it like ferry-orders.prom",
            path.display()
        )));
    }
    let dir = folder_of(path);
    if !dir.is_dir() {
        return Err(TelemetryError::Push(format!(
            "--metrics-file {}: the folder {} does not exist (it should be the one node_exporter's --collector.textfile.directory names)",
            path.display(),
            dir.display()
        )));
    }
    Ok(())
}

fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `text` to `path` for the textfile collector: to a hidden temporary file in the same
/// folder (which the collector ignores: it does not end in `.prom`), flushed to disk, then
/// renamed over `path`, so a scrape never reads half a file.
pub fn write_textfile(path: &Path, text: &str) -> Result<(), TelemetryError> {
    check_textfile(path)?;
    let fail = |what: &str, e: std::io::Error| {
        TelemetryError::Push(format!(
            "writing the run's metrics to {} failed: {what}: {e}",
            path.display()
        ))
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("metrics.prom");
    let tmp = folder_of(path).join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(&format!("cannot write {}", tmp.display()), e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail("cannot move the new file into place", e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v1_metrics_path_is_otlp_anything_else_a_pushgateway() {
        assert!(matches!(
            PushTarget::parse("http://collector:4318/v1/metrics").unwrap(),
            PushTarget::Otlp(_)
        ));
        assert!(matches!(
            PushTarget::parse("http://pushgateway:9091").unwrap(),
            PushTarget::Pushgateway(_)
        ));
        assert!(matches!(
            PushTarget::parse("https://push.example/prefix/").unwrap(),
            PushTarget::Pushgateway(_)
        ));
    }

    #[test]
    fn bad_urls_are_refused_with_what_to_give() {
        for bad in [
            "pushgateway:9091",
            "ftp://pushgateway:9091",
            "not a url",
            "http://pg:9091/?x=1",
        ] {
            let e = PushTarget::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--metrics-push"), "{e}");
            assert!(e.contains("http://pushgateway:9091"), "{e}");
        }
    }

    #[test]
    fn credentials_are_never_shown() {
        let t = PushTarget::parse("https://bob:s3cr3t-pw@push.example:9091").unwrap();
        assert_eq!(t.shown(), "https://push.example:9091/");
        let e = PushTarget::parse("ftp://bob:s3cr3t-pw@push.example")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn groups_go_under_job_ferry_with_odd_values_in_base64() {
        let base = Url::parse("http://pg:9091").unwrap();
        assert_eq!(
            pushgateway_url(&base, &[("flow", "orders"), ("env", "prod-eu")]).as_str(),
            "http://pg:9091/metrics/job/ferry/flow/orders/env/prod-eu"
        );
        let with_prefix = Url::parse("http://pg:9091/gateway/").unwrap();
        assert_eq!(
            pushgateway_url(&with_prefix, &[("flow", "a/b"), ("env", "")]).as_str(),
            "http://pg:9091/gateway/metrics/job/ferry/flow@base64/YS9i/env@base64/="
        );
        let own_job = Url::parse("http://pg:9091/metrics/job/nightly").unwrap();
        assert_eq!(
            pushgateway_url(&own_job, &[("flow", "f")]).as_str(),
            "http://pg:9091/metrics/job/nightly/flow/f"
        );
    }

    #[test]
    fn textfiles_must_be_prom_files_in_a_folder_that_exists() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let e = check_textfile(&dir.join("ferry.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("*.prom"), "{e}");
        let e = check_textfile(&dir.join("missing/ferry.prom"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        let file = dir.join("ferry.prom");
        write_textfile(&file, "a 1\n").unwrap();
        write_textfile(&file, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "a 2\n");
        // nothing else left behind
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ferry.prom")]);
    }
}
