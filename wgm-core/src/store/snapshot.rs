//! [`Snapshot`]: everything a store holds, in one engine-neutral, versioned value, so that
//! a whole installation can move between stores ([`SnapshotStore`], [`copy`]).
//!
//! A snapshot is what the store holds *as stored*: revision bodies with their MACs,
//! audit records with their links, the stored audit head and the sealed audit key are
//! copied untouched, and sealed secrets are never opened. Importing one into an empty
//! store of any engine therefore yields a store whose audit verification ends at the same
//! head, whose revisions check under the same key, and which the same master key opens.

use std::collections::BTreeSet;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::Store;
use crate::error::ConflictKind;
use crate::integrity::{AuditHead, StoredAuditKey};
use crate::ipam::HeldRuns;
use crate::model::{
    ApiTokenRecord, AppliedState, AuditRecord, HostReport, Lease, RevisionNo, RevisionRecord,
    ServerId, ServerState, User,
};
use crate::rbac::Role;
use crate::{Error, Result};

/// The version of the [`Snapshot`] layout this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Everything a store holds: every server that ever existed with its history and host
/// state, the identities, and the audit log with its stored head and sealed key.
///
/// ```
/// use wgm_core::store::{Snapshot, SNAPSHOT_VERSION};
/// let empty = Snapshot::empty();
/// assert_eq!(empty.version, SNAPSHOT_VERSION);
/// assert!(empty.is_empty());
/// empty.check()?;
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The layout version ([`SNAPSHOT_VERSION`]).
    pub version: u32,
    /// Every server the store knows of, by id: existing and deleted ones, and those only
    /// host state names.
    pub servers: Vec<ServerSnapshot>,
    /// Users, by id.
    pub users: Vec<User>,
    /// Custom roles, by name key.
    pub roles: Vec<Role>,
    /// API tokens (their secrets are stored hashed), by creation time.
    pub tokens: Vec<ApiTokenRecord>,
    /// The audit log, oldest first, exactly as stored.
    pub audit: Vec<AuditRecord>,
    /// The stored head of the audit log, kept apart from the records.
    pub audit_head: AuditHead,
    /// The sealed audit key, if the store has one (never opened here).
    pub audit_key: Option<StoredAuditKey>,
}

/// One server of a [`Snapshot`]: its head, its state at the head (`None` once deleted),
/// its full revision history, and the state its hosts keep.
///
/// ```
/// use wgm_core::model::ServerId;
/// use wgm_core::store::ServerSnapshot;
/// let s = ServerSnapshot::new(ServerId::new_random());
/// assert!(s.head.is_none() && s.state.is_none() && s.revisions.is_empty());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerSnapshot {
    /// The server's id.
    pub id: ServerId,
    /// Its head revision (`None` when the store holds only host state of it).
    pub head: Option<RevisionNo>,
    /// The server at its head with its peers (and their statistics); `None` once deleted.
    pub state: Option<ServerState>,
    /// Its revisions, oldest first, bodies and MACs as stored.
    pub revisions: Vec<RevisionRecord>,
    /// Its durable allocator state and the revision it is of.
    pub allocator: Option<(RevisionNo, HeldRuns)>,
    /// What each host applied, by host name.
    pub applied: Vec<AppliedSnapshot>,
    /// The agents' leases, by host name.
    pub leases: Vec<Lease>,
    /// The hosts' latest reports, by host name.
    pub reports: Vec<HostReport>,
}

impl ServerSnapshot {
    /// A server with nothing stored yet (engines fill it in while exporting).
    pub fn new(id: ServerId) -> Self {
        ServerSnapshot {
            id,
            head: None,
            state: None,
            revisions: Vec::new(),
            allocator: None,
            applied: Vec::new(),
            leases: Vec::new(),
            reports: Vec::new(),
        }
    }
}

/// What one host recorded as applied for a server
/// ([`HostStateStore::applied`](super::HostStateStore::applied)), with the device part
/// when the last record had one.
///
/// ```
/// use wgm_core::model::RevisionNo;
/// use wgm_core::store::AppliedSnapshot;
/// let a = AppliedSnapshot { host: "gw-1".into(), revision: RevisionNo(3), state: None };
/// assert_eq!(a.revision, RevisionNo(3));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppliedSnapshot {
    /// The host's name.
    pub host: String,
    /// The revision it applied.
    pub revision: RevisionNo,
    /// The device part ([`HostStateStore::set_applied_state`](super::HostStateStore::set_applied_state)).
    pub state: Option<AppliedState>,
}

fn bad(field: &'static str, reason: &'static str) -> Error {
    Error::invalid(field, reason)
}

impl Snapshot {
    /// The snapshot of an empty store.
    pub fn empty() -> Self {
        Snapshot {
            version: SNAPSHOT_VERSION,
            servers: Vec::new(),
            users: Vec::new(),
            roles: Vec::new(),
            tokens: Vec::new(),
            audit: Vec::new(),
            audit_head: AuditHead::genesis(),
            audit_key: None,
        }
    }

    /// Whether it holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
            && self.users.is_empty()
            && self.roles.is_empty()
            && self.tokens.is_empty()
            && self.audit.is_empty()
            && self.audit_head == AuditHead::genesis()
            && self.audit_key.is_none()
    }

    /// Check that the snapshot is one a store could hold: this layout version, each
    /// server once, everything of a server naming it, heads agreeing with the state and
    /// the history, numbers in order, each user and token once, tokens of known users.
    /// It checks the shape, not the cryptography: the MACs and links are checked by the
    /// manager's verification after an import, as on any store.
    ///
    /// ```
    /// use wgm_core::store::Snapshot;
    /// let mut s = Snapshot::empty();
    /// s.version = 99;
    /// assert!(s.check().is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the field (`snapshot.…`) and the rule broken.
    pub fn check(&self) -> Result<()> {
        if self.version != SNAPSHOT_VERSION {
            return Err(bad(
                "snapshot.version",
                "must be the snapshot version this build reads",
            ));
        }
        let mut ids = BTreeSet::new();
        for s in &self.servers {
            if !ids.insert(s.id) {
                return Err(bad("snapshot.servers", "must name each server once"));
            }
            s.check()?;
        }
        let mut users = BTreeSet::new();
        for u in &self.users {
            if !users.insert(u.id) {
                return Err(bad("snapshot.users", "must name each user once"));
            }
        }
        let mut tokens = BTreeSet::new();
        for t in &self.tokens {
            if !tokens.insert(t.id) {
                return Err(bad("snapshot.tokens", "must name each token once"));
            }
            if !users.contains(&t.user_id) {
                return Err(bad(
                    "snapshot.tokens",
                    "must belong to a user of the snapshot",
                ));
            }
        }
        let mut roles = BTreeSet::new();
        for r in &self.roles {
            if !roles.insert(r.name.key()) {
                return Err(bad("snapshot.roles", "must name each role once"));
            }
        }
        let mut last = 0;
        for a in &self.audit {
            if a.seq <= last {
                return Err(bad(
                    "snapshot.audit",
                    "sequence numbers must start at 1 and increase",
                ));
            }
            last = a.seq;
        }
        Ok(())
    }
}

impl ServerSnapshot {
    fn check(&self) -> Result<()> {
        if let Some(st) = &self.state {
            if st.server.id != self.id || self.head != Some(st.revision) {
                return Err(bad(
                    "snapshot.servers.state",
                    "must be the server's own state at its head revision",
                ));
            }
            if st
                .peers
                .iter()
                .any(|(id, p)| p.id != *id || p.server_id != self.id)
            {
                return Err(bad(
                    "snapshot.servers.state.peers",
                    "must be the server's own peers under their ids",
                ));
            }
        }
        let mut last = RevisionNo::NONE;
        for r in &self.revisions {
            if r.server_id != self.id || r.revision <= last {
                return Err(bad(
                    "snapshot.servers.revisions",
                    "must be the server's own revisions in increasing order",
                ));
            }
            last = r.revision;
        }
        if self.head.is_some_and(|h| h == RevisionNo::NONE) || self.head.unwrap_or_default() < last
        {
            return Err(bad(
                "snapshot.servers.head",
                "must be a revision, at least the last revision of the history",
            ));
        }
        if self.head.is_none() && self.state.is_some() {
            return Err(bad(
                "snapshot.servers.head",
                "must be set for a stored server",
            ));
        }
        let mut hosts = BTreeSet::new();
        for a in &self.applied {
            if !hosts.insert(a.host.as_str()) || a.state.is_some_and(|s| s.revision != a.revision) {
                return Err(bad(
                    "snapshot.servers.applied",
                    "must name each host once, its device part at its revision",
                ));
            }
        }
        let mut hosts = BTreeSet::new();
        if self
            .leases
            .iter()
            .any(|l| l.server_id != self.id || !hosts.insert(l.host.as_str()))
        {
            return Err(bad(
                "snapshot.servers.leases",
                "must be the server's own, one per host",
            ));
        }
        let mut hosts = BTreeSet::new();
        if self
            .reports
            .iter()
            .any(|r| r.server_id != self.id || !hosts.insert(r.host.as_str()))
        {
            return Err(bad(
                "snapshot.servers.reports",
                "must be the server's own, one per host",
            ));
        }
        Ok(())
    }
}

/// The error of an import into a store that already holds something (nothing is written).
///
/// ```
/// let e = wgm_core::store::not_empty("redis");
/// assert!(e.to_string().contains("not empty"));
/// ```
pub fn not_empty(store: &'static str) -> Error {
    Error::conflict_of(ConflictKind::Other {
        reason: format!("the target {store} store is not empty; a snapshot is imported only into an empty store").into(),
    })
}

/// Export and import of a whole store (a part of [`Store`]).
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// Read everything the store holds as one consistent [`Snapshot`], while other
    /// writers may keep committing: the snapshot is the store as it was at one instant
    /// (one read transaction on SQL; on Redis, reads verified against the audit head and
    /// the server heads, repeated when they moved; under the lock in memory).
    async fn export_snapshot(&self) -> Result<Snapshot>;

    /// Write `snapshot` into this store, which must be empty, atomically: afterwards the
    /// store holds exactly the snapshot, or, on any error, nothing was written.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a snapshot that fails [`Snapshot::check`];
    /// [`Error::Conflict`] ([`not_empty`]) when the store holds anything already;
    /// [`Error::Store`] when the store fails.
    async fn import_snapshot(&self, snapshot: &Snapshot) -> Result<()>;

    /// Replace everything this store holds with `snapshot`, atomically: afterwards the
    /// store holds exactly the snapshot, or, on any error, what it held before (a
    /// restore that is forced over a store in use). Writers that commit meanwhile either
    /// land before (and are replaced) or after; processes that cache a server notice its
    /// head changed.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a snapshot that fails [`Snapshot::check`];
    /// [`Error::Store`] when the store fails.
    async fn replace_with_snapshot(&self, snapshot: &Snapshot) -> Result<()>;
}

/// Copy everything `from` holds into `to`, an empty store of any engine: one consistent
/// export, one atomic import. Secrets stay sealed; the audit log and the revisions keep
/// their links and MACs, so `to` verifies to the same head under the same master key.
///
/// ```
/// use wgm_core::store::{copy, MemoryStore, SnapshotStore};
/// # futures::executor::block_on(async {
/// let (a, b) = (MemoryStore::new(), MemoryStore::new());
/// copy(&a, &b).await?;
/// assert!(b.export_snapshot().await?.is_empty());
/// # Ok::<(), wgm_core::Error>(()) }).unwrap();
/// ```
pub async fn copy(from: &dyn Store, to: &dyn Store) -> Result<Snapshot> {
    let snapshot = from.export_snapshot().await?;
    to.import_snapshot(&snapshot).await?;
    Ok(snapshot)
}
