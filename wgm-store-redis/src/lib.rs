//! # wgm-store-redis
//!
//! **Not implemented yet.** This crate will hold wgm's Redis pieces: a `Store`
//! implementation (compare-and-swap with `WATCH`/`MULTI` or Lua), the event bus on
//! pub/sub, distributed locks and rate limits. Until then it exports nothing, and the
//! `wgm` CLI answers `redis://` store URLs with a "not available yet" error.
//!
//! Use `wgm_store_sql::SqlStore` (SQLite or PostgreSQL) today.
