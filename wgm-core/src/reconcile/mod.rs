//! The pure half of converging a live WireGuard interface toward a server's desired
//! state: what the host should hold, what differs, and when an acknowledgement is proof.
//!
//! - [`desired_host`] derives a [`DesiredHost`] from a [`crate::model::ServerState`],
//!   opening the server's private key and the peers' PSKs.
//! - [`plan`] is a pure function from the desired state and what the backends read back
//!   ([`crate::backend::DeviceState`], [`crate::backend::LinkState`]) to a [`Plan`]: the
//!   exact device and link deltas, plus a human list of [`PlanItem`]s. It is
//!   **incremental**: a peer that is already right is not in the plan at all, so its
//!   tunnel, handshake and counters are untouched. `replace_peers` is used only for an
//!   explicit full resync ([`PlanOptions::full_resync`]).
//! - [`Verify`] says when the backends' acknowledgement of an executed plan stands for a
//!   read-back, and [`acknowledged_state`] what the host holds then.
//!
//! Drift: a peer on the device that the store never knew is *unmanaged*: reported, or
//! removed when the [`DriftPolicy`] says so — never adopted. A peer that wgm removed
//! (it appears in a revision since the last applied one) is always removed. A peer's
//! roaming endpoint is not drift unless the peer has a fixed endpoint.
//!
//! This module does no I/O and knows nothing of the manager, stores or hosts: the
//! orchestration — authorize, load, read the host, plan, execute, verify, record — is
//! `Manager::apply` in the `manager` module, which uses this one (never the other way
//! round; `wgm-core/tests/layering.rs` checks it).

mod desired;
mod plan;
mod verify;

pub use desired::{desired_firewall, desired_host, DesiredHost, DesiredPeer};
pub(crate) use desired::{desired_host_with, OpenedSecrets};
pub use plan::{plan, DriftPolicy, PeerChange, Plan, PlanItem, PlanOptions};
pub use verify::{acknowledged_state, Execution, PlannedFrom, Verify};
