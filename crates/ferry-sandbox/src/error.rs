//! The sandbox's error type: configuration and fault settings that cannot be honoured.
//!
//! Request-level problems (a bad query parameter, a missing idempotency key) are not Rust
//! errors here: they are HTTP answers with a JSON body, built in the `respond` module. This enum
//! covers what a *caller of the library* can get wrong, so each message names the setting and
//! says what to change.

use thiserror::Error;

/// A configuration or fault setting the sandbox refuses.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SandboxError {
    /// A [`crate::SandboxConfig`] field is out of range.
    #[error("invalid sandbox config: `{field}` {problem}")]
    InvalidConfig {
        /// The field name, e.g. `max_page_size`.
        field: &'static str,
        /// What is wrong and what is allowed.
        problem: String,
    },
    /// A [`crate::SinkFaults`] field is out of range.
    #[error("invalid sink faults: `{field}` {problem}")]
    InvalidSinkFaults {
        /// The field name, e.g. `rate_5xx`.
        field: &'static str,
        /// What is wrong and what is allowed.
        problem: String,
    },
    /// A [`crate::SourceFault`] cannot be served.
    #[error("invalid source fault: {0}")]
    InvalidSourceFault(String),
}

impl From<SandboxError> for std::io::Error {
    fn from(err: SandboxError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field_and_the_rule() {
        let err = SandboxError::InvalidConfig {
            field: "max_page_size",
            problem: "is 0; use a value from 1 to 100000".into(),
        };
        assert_eq!(
            err.to_string(),
            "invalid sandbox config: `max_page_size` is 0; use a value from 1 to 100000"
        );
        let io: std::io::Error = err.into();
        assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
        assert!(io.to_string().contains("max_page_size"));
    }
}
