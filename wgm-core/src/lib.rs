//! # wgm-core
//!
//! The core of wgm, an IPv6-first WireGuard manager: the domain model (servers, peers,
//! users, roles), dual-stack address allocation, the wg-quick file format, WireGuard keys,
//! RBAC and authentication, sealed secrets, versioned configuration with rollback, the
//! audit log, the `Manager` every caller goes through, and the traits that storage and
//! WireGuard backends implement — each with an in-memory implementation.
//!
//! **This crate does no I/O.** It opens no socket, file, process or database; it is pure
//! domain logic plus traits. Storage (`wgm-store-sql`, `wgm-store-redis`) and WireGuard
//! backends (`wgm-backend-kernel`, `wgm-backend-userspace`) live in their own crates and
//! plug in behind `Arc<dyn Trait>`.
//!
//! ## Feature flags
//! - `auth` (default): password hashing (argon2id), JWT access and refresh tokens, TOTP
//!   codes ([`auth::password`] hashing, [`auth::jwt`], [`auth::totp`]) and the
//!   [`Manager`](manager::Manager) methods built on them: `login`, `authenticate_jwt`,
//!   `refresh`, `set_password`, `enroll_totp`, `confirm_totp`. Without it, users, roles,
//!   principals, `LocalAdmin`, API tokens (SHA-256) and password *rules* remain; creating
//!   a user with a password is refused as invalid input.
//! - `qr` (default): QR codes of client configurations (`wgquick::qr_terminal`,
//!   `qr_svg`, `qr_png`).
//! - `conformance`: public async conformance suites that every `Store`, `WireGuardBackend`
//!   and `NetworkBackend` implementation runs in its own tests.
//!
//! ## Why this shape
//! Desired state lives in a store and is changed only through revisions; live state lives
//! on the host; a reconciler converges the second toward the first with incremental,
//! verified applies. Keeping all decisions (validation, allocation, authorization,
//! planning) in one I/O-free crate makes them testable exhaustively and identical for the
//! CLI, the REST server, the agent and Python.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(clippy::unwrap_used)]

pub mod error;

pub mod keys;
pub mod names;
pub mod net;
pub mod policy;

pub mod ipam;
pub mod wgquick;

pub mod auth;
pub mod seal;

pub mod audit;
pub mod integrity;
pub mod model;
pub mod ratelimit;
pub mod rbac;
pub mod store;

pub mod backend;
pub mod manager;
pub mod reconcile;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use error::{BoxError, Error, Result};
