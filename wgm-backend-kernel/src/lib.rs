//! # wgm-backend-kernel
//!
//! The Linux host side of wgm. Today this crate provides **the network part only**:
//! [`KernelNetwork`], an rtnetlink implementation of the link/address/route half of
//! `wgm_core`'s network backend — it reads and applies a managed interface's
//! administrative state (up/down), MTU, IPv4 and IPv6 addresses, and the routes for
//! peers' delegated prefixes.
//!
//! **Not implemented yet:** the `WireGuard` generic-netlink device backend (keys, listen
//! port, fwmark, peers; chunked sets and merged dumps of the `wireguard` family) comes
//! in a later issue, and so does the nftables firewall. Until then, a `WireGuard` device
//! is driven by `wgm-backend-userspace` (wireguard-go over UAPI) and this crate
//! configures the link that device creates; the composition happens in `Host`.
//!
//! ## What is touched, and what never is
//! - Only the named link. Its index is resolved by name on every call, so a link that
//!   was deleted and recreated out of band is found again.
//! - Addresses: every address of the link is reported except those the kernel creates
//!   and owns (IPv6 link-local `fe80::/10` ones it generates, router-advertisement and
//!   loopback addresses). Adds and removes name the exact address and prefix length on that
//!   link. IPv6 addresses are added with `IFA_F_NODAD` so they are usable at once (see
//!   [`KernelNetwork`] for why). Added addresses carry `IFA_PROTO` = the route
//!   protocol number, so `ip address` shows which ones wgm put there.
//! - Routes: only main-table unicast routes whose output interface is the link **and**
//!   whose `proto` is this backend's number ([`DEFAULT_ROUTE_PROTOCOL`], 87, unless
//!   configured otherwise) are reported, added or removed. The kernel itself matches
//!   link, table and protocol on delete, so a route of another owner cannot be removed
//!   by accident.
//! - Idempotent: applying a delta that already holds sends nothing; adding what exists
//!   and removing what is absent both succeed (also when another process races us).
//!
//! ## Completeness of reads
//! Dumps are read to their `NLMSG_DONE` (a connection that breaks mid-dump is an error,
//! not a short answer), re-read when the kernel flags them `NLM_F_DUMP_INTR`, and asked
//! of the kernel with strict checking so a host with a full routing table returns only
//! this link's routes.
//!
//! ## Errors
//! A private, detailed error is mapped into [`wgm_core::Error`] in one place: `ENODEV`
//! → `NotFound { kind: "link" }`, `EPERM`/`EACCES` → `PermissionDenied`, a request that
//! breaks a rule checked before sending (MTU below 1280 on a link with IPv6, a route
//! with host bits) → `InvalidInput`, a desired route or address that collides with one
//! this backend does not own → `Conflict`, everything else → `Backend { backend:
//! "netlink" }` with the detailed error as source.
//!
//! ## Namespaces
//! [`KernelNetwork::new`] works in the network namespace of the calling thread;
//! [`KernelNetwork::in_netns`] opens its socket inside another one (as `ip -n NAME`
//! does), which is how the tests run in throw-away namespaces.

#![warn(clippy::unwrap_used)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod codec;
mod error;
mod genl;
mod network;
mod plan;
mod socket;
pub mod wire;
mod wireguard;

pub use network::{KernelNetwork, DEFAULT_ROUTE_PROTOCOL};
pub use wireguard::KernelWireGuard;
