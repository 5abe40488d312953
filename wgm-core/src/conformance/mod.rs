//! Conformance suites run by every implementation of the core traits.
