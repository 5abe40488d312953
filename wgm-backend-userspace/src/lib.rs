//! # wgm-backend-userspace
//!
//! Userspace WireGuard for wgm: a [`WireGuardBackend`](wgm_core::backend::WireGuardBackend)
//! that drives `wireguard-go` (or another daemon speaking the same protocol, such as
//! boringtun) over its UAPI unix socket, and supervises the daemon.
//!
//! ```no_run
//! use std::sync::Arc;
//! use wgm_backend_userspace::{DaemonCommand, UserspaceBackend, UserspaceConfig};
//! use wgm_core::backend::{DeviceDelta, PeerDelta, WireGuardBackend};
//! use wgm_core::keys::PrivateKey;
//! use wgm_core::names::InterfaceName;
//!
//! # async fn f() -> wgm_core::Result<()> {
//! let config = UserspaceConfig {
//!     daemon: DaemonCommand::wireguard_go().in_netns("blue"),
//!     ..UserspaceConfig::default()
//! };
//! let wg: Arc<dyn WireGuardBackend> = Arc::new(UserspaceBackend::new(config));
//! let name = InterfaceName::new("wg0")?;
//! wg.create_device(&name).await?;
//! let delta = DeviceDelta {
//!     private_key: Some(PrivateKey::generate()),
//!     listen_port: Some(51820),
//!     peers: vec![PeerDelta {
//!         allowed_ips: vec!["fd00::2/128".parse().unwrap()],
//!         ..PeerDelta::new(PrivateKey::generate().public_key())
//!     }],
//!     ..DeviceDelta::default()
//! };
//! wg.apply_device(&name, &delta).await?;
//! let live = wg.read_device(&name).await?.expect("running");
//! assert_eq!(live.peers.len(), 1);
//! # Ok(()) }
//! ```
//!
//! ## Layers
//! - [`uapi`]: the sans-I/O codec (`encode_set`, `encode_get`, `decode_get`,
//!   `decode_errno`), unit-tested with byte fixtures and fuzzed.
//! - [`client`]: one unix-socket connection per operation, with timeouts and typed
//!   errors ([`Error`]), reading replies of any size completely.
//! - [`UserspaceBackend`]: the trait implementation and the daemon's supervision
//!   ([`DaemonCommand`]).
//!
//! ## Why this shape
//! The daemon applies a `set` line by line and stops at the first line it refuses,
//! keeping what came before; so deltas are validated whole before anything is sent, and
//! callers re-read after applying. Each operation opens its own connection, so a daemon
//! restart needs no reconnect logic: the next call reaches the new daemon, and the
//! reconciler's full resync restores its configuration.

#![warn(clippy::unwrap_used)]

pub mod client;
pub mod uapi;

mod backend;
mod daemon;
mod error;

pub use backend::{UserspaceBackend, UserspaceConfig};
pub use client::{ClientConfig, UapiClient, DEFAULT_SOCKET_DIR};
pub use daemon::DaemonCommand;
pub use error::{Errno, Error, Gone};
