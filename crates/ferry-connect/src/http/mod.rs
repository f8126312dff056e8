//! HTTP connectors: the source (`source.rs`), the sink (`sink.rs`), authentication
//! (`auth.rs`) and the shared client with its body limits (`client.rs`).

pub mod auth;
pub mod client;
pub mod destination;
pub mod sink;
pub mod source;

pub use sink::{AttemptResult, HttpDelivery};
pub use source::{HttpPager, Overselected, Page, RawPage, json_len, take_records};
