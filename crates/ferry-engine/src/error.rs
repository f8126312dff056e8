//! Errors that keep a run from starting or from being recorded.
//!
//! A run that starts and then fails (a source page answers 500, say) is not an error here: it is
//! a run record with status `failed` and the reason, because that is what an operator looks at.

use ferry_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error("flow `{flow}`: {reason}")]
    Flow { flow: String, reason: String },
    #[error(
        "flow `{0}` has no active revision in environment `{1}`: deploy it first (`ferry deploy` or `ferry run FILE`)"
    )]
    NotDeployed(String, String),
}
