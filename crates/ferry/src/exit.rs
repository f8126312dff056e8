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
