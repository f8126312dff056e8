//! Exit codes: 0 ok, 1 a run or test failed, 2 bad input or a refused operation; and how an
//! error that ends a command is printed: `error: …` on stderr, or, with `--output json`, one
//! JSON object (`{"error": …, "code": …, "causes": […]}`) a pipeline can parse.

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
    causes(e).join(": ")
}

/// The messages [`error_text`] is made of, outermost first: each cause of the chain whose text
/// the ones before it do not already hold.
pub fn causes(e: &anyhow::Error) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut so_far = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || so_far.contains(text) {
            continue;
        }
        so_far.push_str(text);
        so_far.push('\n');
        out.push(text.to_string());
    }
    out
}

/// The error that ends a command, as `--output json` prints it on stderr.
#[derive(Debug, serde::Serialize)]
pub struct ErrorJson {
    /// What `error: …` says in text: the message and its causes.
    pub error: String,
    /// The exit code.
    pub code: u8,
    /// The parts of `error`, outermost first (see [`causes`]).
    pub causes: Vec<String>,
    /// For a command line clap refused: its usage and tips.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

/// `e` as `--output json` prints it, secrets redacted (an error may quote what a remote system
/// answered, and that may echo a secret).
pub fn error_json(e: &anyhow::Error) -> ErrorJson {
    let redact = |t: &str| ferry_telemetry::redact::redact(t).into_owned();
    ErrorJson {
        error: redact(&error_text(e)),
        code: code_of(e),
        causes: causes(e).iter().map(|c| redact(c)).collect(),
        help: None,
    }
}

/// Prints `e` on stderr as one line of JSON.
pub fn print_json(e: &ErrorJson) {
    match serde_json::to_string(e) {
        Ok(line) => eprintln!("{line}"),
        // Strings and a number always serialize; say the error in text rather than nothing.
        Err(_) => eprintln!("error: {}", e.error),
    }
}

/// Prints the error that ends a command on stderr — `error: …`, or with `json` one JSON
/// object — and returns its exit code.
pub fn report(e: &anyhow::Error, json: bool) -> u8 {
    if json {
        print_json(&error_json(e));
    } else {
        // Not through the log writer, so redacted here (see error_json).
        eprintln!("error: {}", ferry_telemetry::redact::redact(&error_text(e)));
    }
    code_of(e)
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
    fn json_errors_carry_the_message_the_code_and_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e = anyhow::Error::new(Naming(io)).context("opening the state store db:1");
        let v = serde_json::to_value(error_json(&e)).unwrap();
        assert_eq!(
            v["error"],
            "opening the state store db:1: cannot connect to the store at db:1: connection refused"
        );
        assert_eq!(v["code"], 1);
        assert_eq!(
            v["causes"],
            serde_json::json!([
                "opening the state store db:1",
                "cannot connect to the store at db:1: connection refused"
            ])
        );
        let v = serde_json::to_value(error_json(&anyhow::Error::new(CliError::input(
            "bad --var",
        ))))
        .unwrap();
        assert_eq!(v["code"], 2);
        assert!(v.get("help").is_none(), "{v}");
        assert_eq!(v["causes"], serde_json::json!(["bad --var"]));
    }

    #[test]
    fn causes_a_message_does_not_name_are_kept() {
        let e = anyhow::anyhow!("disk full").context("writing the fixture");
        assert_eq!(error_text(&e), "writing the fixture: disk full");
        let e = anyhow::Error::new(CliError::input("bad --var"));
        assert_eq!(error_text(&e), "bad --var");
    }
}
