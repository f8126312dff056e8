//! What can go wrong while setting telemetry up. None of it stops ferry: the caller reports it
//! and carries on without that part.

/// A telemetry setup failure, with what to change.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP span exporter could not be built.
    #[error(
        "cannot export traces to OTEL_EXPORTER_OTLP_ENDPOINT ({endpoint}): {reason}; traces are not exported (check the URL: http://host:4318 for OTLP over HTTP)"
    )]
    Otlp { endpoint: String, reason: String },
    /// The metrics recorder could not be installed.
    #[error("cannot install the Prometheus metrics recorder: {0}")]
    Metrics(String),
}
