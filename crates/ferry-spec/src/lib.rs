//! Flow files: their types, how they are read, checked, and identified.
//!
//! # Layout
//! - [`flow`]: the flow file as types (the reference for flow authors);
//! - [`load`]: YAML text to a checked flow, with line, column and field path on every error;
//! - `yaml`: the YAML 1.2 core schema, positions, and typed reading with every type error;
//! - [`validate`]: the checks types cannot express, all problems at once;
//! - [`canonical`]: canonical JSON and the content hash that identifies a revision;
//! - [`export`]: a stored revision written back as a flow file (YAML with the same hash);
//! - [`diff`]: structural diff of two flows by field path, and the field path spelling;
//! - [`merge`]: three-way merge of flows by field path, with conflicts and their resolution;
//! - [`project`]: the project file `ferry.yaml`: environments and the promotion topology;
//! - [`path`]: JSONPath (RFC 9535), parsed once, evaluated many times;
//! - [`template`]: `{{ env.X }}` templates;
//! - [`units`]: durations and sizes as written in files;
//! - [`words`]: counts as people read them (`1 entry`, `2 entries`).
//!
//! The key decision: parse everything at validation time. A flow that validates has no syntax
//! left to fail at run time; what can still fail is data.

pub mod canonical;
pub mod connector;
pub mod diff;
pub mod error;
pub mod export;
pub mod flow;
pub mod load;
pub mod merge;
pub mod path;
pub mod project;
pub mod template;
pub mod units;
pub mod validate;
pub mod words;
mod yaml;

pub use connector::amqp::{AmqpSink, AmqpSource, ServeCut};
pub use connector::http::*;
pub use connector::{Destination, Source};
pub use diff::{Change, ChangeKind};
pub use error::{Location, SpecError, SpecErrors};
pub use flow::*;
pub use load::{LoadedFlow, from_canonical, load_file, load_str};
pub use merge::{Conflict, MergeResult, Take};
pub use path::JsonPath;
pub use project::{
    Approval, DeployMode, EdgeRules, Environment, Project, load_project_file, load_project_str,
};
pub use template::Template;
pub use units::{ByteSize, Dur, Limit};
