//! Conformance suites run by every implementation of the core traits.

pub mod backend;
pub mod feed;
pub mod firewall;
pub mod store;
