//! The OpenTelemetry environment variables ferry honours, and what they decide.
//!
//! Operators configure OpenTelemetry the same way for every program they run, through the
//! standard `OTEL_*` variables; ferry reads them here, once, before anything is exported:
//!
//! - `OTEL_SDK_DISABLED=true`: nothing is exported (no spans, no metrics, no `traceparent`),
//!   whatever else is set;
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` switches both signals on (`/v1/traces` and `/v1/metrics`
//!   are appended); `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` and
//!   `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` switch one on, with the full URL;
//! - `OTEL_TRACES_EXPORTER`: `otlp` (the default) or `none`;
//! - `OTEL_METRICS_EXPORTER`: `otlp` (the default), `none`, or `prometheus` (metrics only on
//!   `ferry serve`'s `/metrics`, nothing pushed over OTLP);
//! - `OTEL_EXPORTER_OTLP_PROTOCOL` and its per-signal forms
//!   (`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, `OTEL_EXPORTER_OTLP_METRICS_PROTOCOL`): only
//!   `http/protobuf`.
//!
//! A value ferry cannot honour — `grpc`, `http/json`, an exporter such as `zipkin` or `console`
//! — is an error at start-up naming the variable and what to set instead. The alternative, an
//! exporter that quietly sends protobuf over HTTP to a gRPC port and fails every batch, is
//! what an operator would find only when they needed the traces. Only signals that would be
//! exported are checked: a machine-wide `OTEL_EXPORTER_OTLP_PROTOCOL=grpc` does not stop a
//! ferry that exports nothing.
//!
//! [`plan`] takes a lookup function rather than reading the process environment, so the rules
//! are tested without changing it.

use crate::error::TelemetryError;

/// Switches every signal off.
pub const SDK_DISABLED_VAR: &str = "OTEL_SDK_DISABLED";
/// The collector's base URL, for both signals.
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The full URL spans go to.
pub const TRACES_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The full URL metrics go to.
pub const METRICS_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
/// Which exporter spans use.
pub const TRACES_EXPORTER_VAR: &str = "OTEL_TRACES_EXPORTER";
/// Which exporter metrics use.
pub const METRICS_EXPORTER_VAR: &str = "OTEL_METRICS_EXPORTER";
/// The OTLP transport, for both signals.
pub const PROTOCOL_VAR: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// The OTLP transport of spans.
pub const TRACES_PROTOCOL_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
/// The OTLP transport of metrics.
pub const METRICS_PROTOCOL_VAR: &str = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL";

/// The one OTLP transport ferry speaks.
pub const SUPPORTED_PROTOCOL: &str = "http/protobuf";

/// What the environment asks ferry to export, and where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportPlan {
    /// Spans go over OTLP to this endpoint (as configured; the exporter resolves the path).
    pub traces: Option<String>,
    /// Metrics go over OTLP to this endpoint.
    pub metrics: Option<String>,
}

/// One signal's variables.
struct Signal {
    name: &'static str,
    endpoint_var: &'static str,
    exporter_var: &'static str,
    protocol_var: &'static str,
    /// Exporter values accepted besides `otlp` and `none`, which mean "not over OTLP".
    other_exporters: &'static [&'static str],
}

const TRACES: Signal = Signal {
    name: "traces",
    endpoint_var: TRACES_ENDPOINT_VAR,
    exporter_var: TRACES_EXPORTER_VAR,
    protocol_var: TRACES_PROTOCOL_VAR,
    other_exporters: &[],
};

const METRICS: Signal = Signal {
    name: "metrics",
    endpoint_var: METRICS_ENDPOINT_VAR,
    exporter_var: METRICS_EXPORTER_VAR,
    protocol_var: METRICS_PROTOCOL_VAR,
    other_exporters: &["prometheus"],
};

/// Decides what to export from the variables `var` gives (the process environment in
/// [`crate::init`]); an error names a variable whose value ferry cannot honour.
pub fn plan(var: impl Fn(&str) -> Option<String>) -> Result<ExportPlan, TelemetryError> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if set(SDK_DISABLED_VAR).is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(ExportPlan::default());
    }
    Ok(ExportPlan {
        traces: signal(&TRACES, &set)?,
        metrics: signal(&METRICS, &set)?,
    })
}

fn signal(
    s: &Signal,
    set: &impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, TelemetryError> {
    let mut over_otlp = true;
    if let Some(value) = set(s.exporter_var) {
        over_otlp = false;
        for exporter in value.split(',').map(|e| e.trim().to_ascii_lowercase()) {
            match exporter.as_str() {
                "otlp" => over_otlp = true,
                "none" | "" => {}
                e if s.other_exporters.contains(&e) => {}
                _ => {
                    let mut accepted = vec!["otlp", "none"];
                    accepted.extend(s.other_exporters);
                    return Err(TelemetryError::Unsupported {
                        var: s.exporter_var,
                        value: value.trim().to_string(),
                        help: format!(
                            "ferry exports {} over OTLP or not at all: set it to {} (or unset it)",
                            s.name,
                            accepted.join(" or ")
                        ),
                    });
                }
            }
        }
    }
    if !over_otlp {
        return Ok(None);
    }
    let Some(endpoint) = set(s.endpoint_var).or_else(|| set(ENDPOINT_VAR)) else {
        return Ok(None);
    };
    for protocol_var in [s.protocol_var, PROTOCOL_VAR] {
        if let Some(protocol) = set(protocol_var) {
            if protocol.trim() != SUPPORTED_PROTOCOL {
                return Err(TelemetryError::Unsupported {
                    var: protocol_var,
                    value: protocol.trim().to_string(),
                    help: format!(
                        "ferry speaks OTLP over HTTP only: set it to {SUPPORTED_PROTOCOL} (or unset it) and point {ENDPOINT_VAR} at the collector's OTLP/HTTP port (4318), not its gRPC port (4317)"
                    ),
                });
            }
            // The per-signal variable wins over the general one.
            break;
        }
    }
    Ok(Some(endpoint.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn plan_of(vars: &[(&str, &str)]) -> Result<ExportPlan, TelemetryError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        plan(|k| vars.get(k).cloned())
    }

    const EP: (&str, &str) = (ENDPOINT_VAR, "http://collector:4318");

    #[test]
    fn an_endpoint_switches_both_signals_on() {
        let p = plan_of(&[EP]).unwrap();
        assert_eq!(p.traces.as_deref(), Some("http://collector:4318"));
        assert_eq!(p.metrics.as_deref(), Some("http://collector:4318"));
        assert_eq!(plan_of(&[]).unwrap(), ExportPlan::default());
    }

    #[test]
    fn per_signal_endpoints_switch_one_on() {
        let p = plan_of(&[(METRICS_ENDPOINT_VAR, "http://m:4318/v1/metrics")]).unwrap();
        assert_eq!(p.traces, None);
        assert_eq!(p.metrics.as_deref(), Some("http://m:4318/v1/metrics"));
        let p = plan_of(&[EP, (TRACES_ENDPOINT_VAR, "http://t:4318/v1/traces")]).unwrap();
        assert_eq!(p.traces.as_deref(), Some("http://t:4318/v1/traces"));
        assert_eq!(p.metrics.as_deref(), Some("http://collector:4318"));
    }

    #[test]
    fn sdk_disabled_switches_everything_off_and_checks_nothing() {
        for v in ["true", "TRUE", " True "] {
            let p = plan_of(&[EP, (SDK_DISABLED_VAR, v), (PROTOCOL_VAR, "grpc")]).unwrap();
            assert_eq!(p, ExportPlan::default(), "{v}");
        }
        // anything but true leaves the SDK on, as the specification says
        let p = plan_of(&[EP, (SDK_DISABLED_VAR, "false")]).unwrap();
        assert!(p.traces.is_some() && p.metrics.is_some());
    }

    #[test]
    fn exporter_none_switches_one_signal_off() {
        let p = plan_of(&[EP, (TRACES_EXPORTER_VAR, "none")]).unwrap();
        assert_eq!(p.traces, None);
        assert!(p.metrics.is_some());
        let p = plan_of(&[EP, (METRICS_EXPORTER_VAR, "prometheus")]).unwrap();
        assert!(p.traces.is_some());
        assert_eq!(p.metrics, None);
        let p = plan_of(&[
            EP,
            (TRACES_EXPORTER_VAR, "otlp"),
            (METRICS_EXPORTER_VAR, "otlp"),
        ])
        .unwrap();
        assert!(p.traces.is_some() && p.metrics.is_some());
    }

    #[test]
    fn an_exporter_ferry_lacks_is_an_error_naming_the_variable() {
        let e = plan_of(&[(TRACES_EXPORTER_VAR, "zipkin")]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("OTEL_TRACES_EXPORTER=zipkin"), "{msg}");
        assert!(msg.contains("otlp or none"), "{msg}");
        let e = plan_of(&[(METRICS_EXPORTER_VAR, "console")]).unwrap_err();
        assert!(e.to_string().contains("otlp or none or prometheus"), "{e}");
    }

    #[test]
    fn grpc_is_an_error_naming_http_protobuf() {
        let e = plan_of(&[EP, (PROTOCOL_VAR, "grpc")]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"), "{msg}");
        assert!(msg.contains("http/protobuf"), "{msg}");
        assert!(msg.contains("4318"), "{msg}");
        let e = plan_of(&[EP, (TRACES_PROTOCOL_VAR, "grpc")]).unwrap_err();
        assert!(
            e.to_string()
                .contains("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc")
        );
        let e = plan_of(&[EP, (METRICS_PROTOCOL_VAR, "http/json")]).unwrap_err();
        assert!(
            e.to_string()
                .contains("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL=http/json")
        );
    }

    #[test]
    fn the_protocol_is_checked_only_for_signals_that_export() {
        // nothing exported: a machine-wide grpc setting does not matter
        plan_of(&[(PROTOCOL_VAR, "grpc")]).unwrap();
        // traces off, metrics on with grpc: an error for metrics
        let e = plan_of(&[EP, (TRACES_EXPORTER_VAR, "none"), (PROTOCOL_VAR, "grpc")]);
        assert!(e.is_err());
        // the per-signal variable wins over the general one
        let p = plan_of(&[
            EP,
            (PROTOCOL_VAR, "grpc"),
            (TRACES_PROTOCOL_VAR, "http/protobuf"),
            (METRICS_EXPORTER_VAR, "none"),
        ])
        .unwrap();
        assert!(p.traces.is_some());
        plan_of(&[EP, (PROTOCOL_VAR, "http/protobuf")]).unwrap();
    }
}
