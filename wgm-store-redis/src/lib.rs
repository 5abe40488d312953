//! # wgm-store-redis
//!
//! **Not implemented yet.** This crate will hold wgm's Redis pieces: a
//! [`Store`](wgm_core::store::Store) implementation (compare-and-swap in Lua scripts, see
//! `docs/design.md`, "Choices made for the next pieces") that runs the core's commit rules
//! (`wgm_core::store::rules`) through their `Transaction` primitives instead of writing
//! rules of its own and passes the store conformance suite (`wgm_core::conformance::store`);
//! an event bus and change feed on a Redis Stream; distributed locks and rate limits. Until
//! then it exports nothing, and the `wgm` CLI answers `redis://` store URLs with a "not
//! available yet" error.
//!
//! Use `wgm_store_sql::SqlStore` (SQLite or PostgreSQL) today.
