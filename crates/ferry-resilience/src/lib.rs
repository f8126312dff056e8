//! ferry-resilience
