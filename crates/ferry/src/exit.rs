//! Exit codes: 0 ok, 1 a run or test failed, 2 bad input or a refused operation.

use std::fmt;

/// An error that ends the command with a given exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    /// Bad input or a refused operation (exit 2).
    pub fn input(message: impl Into<String>) -> Self {
        CliError {
            code: 2,
            message: message.into(),
        }
    }
    /// A run or test that failed (exit 1).
    pub fn failed(message: impl Into<String>) -> Self {
        CliError {
            code: 1,
            message: message.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Exit code of an error: a [`CliError`]'s own, otherwise 1.
pub fn code_of(e: &anyhow::Error) -> u8 {
    e.downcast_ref::<CliError>().map_or(1, |c| c.code)
}

/// The message of an error and its causes, each cause once: `what was done: what failed: why`.
///
/// Library errors name their cause in their own message *and* hand it on as their `source()`
/// (so a log line or an API answer, which show one message, still say why). Printing the whole
/// chain would then repeat each cause (`… (os error 111): … (os error 111)`), so a cause whose
/// text the message so far already holds is left out.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || out.contains(text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that names its cause in its message and hands it on as its source, as the
    /// `thiserror` enums of the libraries do.
    #[derive(Debug)]
    struct Naming(std::io::Error);

    impl fmt::Display for Naming {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "cannot connect to the store at db:1: {}", self.0)
        }
    }

    impl std::error::Error for Naming {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e = anyhow::Error::new(Naming(io)).context("opening the state store db:1");
        assert_eq!(
            error_text(&e),
            "opening the state store db:1: cannot connect to the store at db:1: connection refused"
        );
        assert_eq!(format!("{e:#}").matches("connection refused").count(), 2);
    }

    #[test]
    fn causes_a_message_does_not_name_are_kept() {
        let e = anyhow::anyhow!("disk full").context("writing the fixture");
        assert_eq!(error_text(&e), "writing the fixture: disk full");
        let e = anyhow::Error::new(CliError::input("bad --var"));
        assert_eq!(error_text(&e), "bad --var");
    }
}
