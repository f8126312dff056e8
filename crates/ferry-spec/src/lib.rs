//! Flow files: their types, how they are read, checked, and identified.
//!
//! # Layout
//! - [`flow`]: the flow file as types (the reference for flow authors);
//! - [`load`]: YAML text to a checked flow, with line, column and field path on every error;
//! - [`validate`]: the checks types cannot express, all problems at once;
//! - [`canonical`]: canonical JSON and the content hash that identifies a revision;
//! - [`path`]: JSONPath (RFC 9535), parsed once, evaluated many times;
//! - [`template`]: `{{ env.X }}` templates;
//! - [`units`]: durations and sizes as written in files.
//!
//! The key decision: parse everything at validation time. A flow that validates has no syntax
//! left to fail at run time; what can still fail is data.

pub mod canonical;
pub mod error;
pub mod flow;
pub mod load;
pub mod path;
pub mod template;
pub mod units;
pub mod validate;

pub use error::{Location, SpecError, SpecErrors};
pub use flow::*;
pub use load::{LoadedFlow, from_canonical, load_file, load_str};
pub use path::JsonPath;
pub use template::Template;
pub use units::{ByteSize, Dur};
