//! The HTTP source: an HTTP JSON API read page by page (`pager.rs`), with five pagination
//! styles, authentication (`crate::http::auth`), an incremental cursor parameter, and a byte
//! cap per page; page requests go through the one retry layer.

mod pager;

pub use pager::{
    HttpPager, Overselected, Page, RawPage, cursor_text, json_len, link_target, set_param,
    take_records,
};
