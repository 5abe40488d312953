//! # wgm-backend-kernel
//!
//! The Linux host side of wgm:
//!
//! - [`KernelWireGuard`], a `wgm_core` WireGuard backend on the kernel's WireGuard over
//!   generic netlink (the `wireguard` family: keys, listen port, fwmark, peers) and
//!   rtnetlink (creating, finding and deleting the device's link). Set requests are
//!   split into messages that fit, a peer's allowed IPs continuing over several;
//!   multi-part dumps are merged back into one device ([`wire`], sans-I/O and public
//!   for tests, benchmarks and fuzzing).
//! - [`KernelNetwork`], an rtnetlink implementation of the link/address/route half of
//!   `wgm_core`'s network backend: it reads and applies a managed interface's
//!   administrative state (up/down), MTU, IPv4 and IPv6 addresses, and the routes for
//!   peers' delegated prefixes. It works on any link: a kernel WireGuard device, or the
//!   TUN device wireguard-go creates (`wgm-backend-userspace`).
//!
//! - [`NftFirewall`], `wgm_core`'s `FirewallBackend` on nftables: one `inet wgm` table
//!   (both families) that wgm owns; per interface static chains, sets and maps, and per
//!   peer only set and map elements and named quota and limit objects, so that one
//!   peer's change never resets another's counters or quota. Each delta is one atomic
//!   `nft -j -f -` batch (an argv, never a shell); listings are read leniently, only
//!   from wgm's table. Not wired into the manager's apply yet.
//!
//! ## Key material
//! Private and preshared keys travel in `WG_CMD_SET_DEVICE` requests and come back in
//! dumps. The messages that carry them print no key in `Debug` and wipe their keys when
//! dropped, and the connection's codec logs nothing (netlink-proto's standard codec
//! logs every message at `trace` level). Not wiped: the bytes inside netlink-proto's
//! reused send and receive buffers.
//!
//! ## What is touched, and what never is
//! - [`KernelWireGuard`] creates and deletes only links of kind `wireguard`; a link of
//!   another kind under the device's name is a conflict, never touched.
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
//! A device dump is merged whole: a peer split over parts becomes one peer, and a peer
//! that comes back later, an attribute of the wrong size or one that overruns its parent
//! is an error, never a silent partial answer (the attribute tree is checked before the
//! packet crate parses it, which panics on some malformed inputs).
//!
//! ## Errors
//! A private, detailed error (the operation and the interface, and the kernel's errno
//! when it gave one) is mapped into [`wgm_core::Error`] in one place: `ENODEV` →
//! `NotFound { kind: "link" }` (`kind: "device"` from [`KernelWireGuard`]),
//! `EPERM`/`EACCES` → `PermissionDenied`, `EADDRINUSE` (a listen port another socket
//! holds) → `Conflict`, no WireGuard in the kernel → `Unsupported`, a request that
//! breaks a rule checked before sending (MTU below 1280 on a link with IPv6, a route
//! with host bits, a message budget out of range) → `InvalidInput`, a desired route or
//! address that collides with one this backend does not own, or a link of another kind
//! under the device's name → `Conflict`, everything else (`EINVAL`, `EMSGSIZE`,
//! `ENOBUFS`, a malformed reply, a broken connection) → `Backend { backend: "netlink" }`
//! with the detailed error as source.
//!
//! ## Namespaces
//! [`KernelNetwork::new`] and [`KernelWireGuard::new`] work in the network namespace of
//! the calling thread; their `in_netns` constructors open their sockets inside another
//! one (as `ip -n NAME` does), which is how the tests run in throw-away namespaces.

#![warn(clippy::unwrap_used)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod codec;
mod error;
mod genl;
mod network;
mod nft;
mod plan;
mod socket;
pub mod wire;
mod wireguard;

pub use network::{KernelNetwork, DEFAULT_ROUTE_PROTOCOL};
pub use nft::NftFirewall;
pub use wireguard::KernelWireGuard;
