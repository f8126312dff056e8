//! ferry CLI
