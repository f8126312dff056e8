//! ferry-connect
