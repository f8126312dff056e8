//! The stages of a run, one file each, in the order records pass them.

pub(crate) mod deliver;
pub(crate) mod map;
pub(crate) mod screen;
pub(crate) mod settle;
pub(crate) mod source;
