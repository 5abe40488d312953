//! # wgm-server
//!
//! wgm's REST API: every operation of the `wgm` CLI over HTTP, JSON in and out, under
//! `/api/v1`, with its OpenAPI 3 document at `/api/v1/openapi.json`. Each handler is
//! authorize-and-call through the library's [`wgm_core::manager::Manager`]: it
//! authenticates the caller, parses the input with the library's parsers (errors name
//! the field) and calls the Manager, which authorizes, filters what the caller may see,
//! validates and commits. The server keeps no state of its own beyond caches, rate
//! limits and the list of logged-out tokens (shared through Redis when configured), so
//! any number of copies can run on one PostgreSQL store. See `docs/rest.md`.
//!
//! - [`config`]: the configuration file and environment;
//! - [`app`]: the state, the middleware, serving (TLS with reload on SIGHUP, SIGTERM);
//! - [`routes`]: the handlers and the OpenAPI document;
//! - [`auth`]: bearer credentials (JWT of a login or API token) and the principal;
//! - [`error`]: the one error shape `{code, kind, field?, reason}` and HTTP statuses;
//! - [`metrics`]: the metrics served at `/metrics`.

#![warn(clippy::unwrap_used)]

pub mod app;
pub mod auth;
pub mod config;
pub mod dto;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod routes;
pub mod state;
