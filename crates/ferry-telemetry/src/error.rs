//! What can go wrong setting telemetry up or sending it out.
//!
//! Two kinds: a setting ferry cannot honour ([`TelemetryError::Unsupported`], from the `OTEL_*`
//! variables, and [`TelemetryError::Push`] for a `--metrics-push` or `--metrics-file` that
//! cannot work) stops the command at start-up with what to change, because the operator asked
//! for something ferry would otherwise silently not do; an exporter that cannot be built or a
//! collector that does not answer is reported and skipped, because telemetry never stops a run.

/// A telemetry failure, with what to change.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// An OTLP exporter could not be built.
    #[error(
        "cannot export {signal} to {endpoint}: {reason}; {signal} are not exported (check the URL: http://host:4318 for OTLP over HTTP)"
    )]
    Otlp {
        signal: &'static str,
        endpoint: String,
        reason: String,
    },
    /// An `OTEL_*` variable asks for something ferry does not do.
    #[error("{var}={value} is not supported: {help}")]
    Unsupported {
        var: &'static str,
        value: String,
        help: String,
    },
    /// The metrics recorder could not be installed.
    #[error("cannot install the metrics recorder: {0}")]
    Metrics(String),
    /// A run's metrics could not be pushed or written.
    #[error("{0}")]
    Push(String),
}
