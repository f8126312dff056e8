//! ferry-map
