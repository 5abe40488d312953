//! The store's semantics, written once over [`Tx`], the primitive operations each backend
//! implements inside its write transaction.
//!
//! The rules are those of `wgm_core::store::MemoryStore`, which is the reference: the
//! same situations give the same errors. A commit never reads all peers of a server: in
//! one query it reads the stored peers its changes name (to know which exist) and the
//! stored peers sharing a name, key, address or prefix with any peer or server key the
//! changes carry; then it checks uniqueness on that subset plus the changed peers with
//! `check_server_uniqueness`. Any clash in the whole resulting state involves a changed
//! peer (the stored state was unique), so the subset holds every clash the whole state
//! would, and the same first one.

use std::collections::{BTreeMap, HashSet};

use wgm_core::model::{
    ApiTokenRecord, AuditEntry, AuditRecord, Change, Commit, IdentityChange, Peer, PeerId,
    RevisionNo, RevisionRecord, Server, ServerId, ServerState, TokenId, User, UserId,
};
use wgm_core::names::RoleName;
use wgm_core::rbac::Role;
use wgm_core::store::check_server_uniqueness;
use wgm_core::Error;

use crate::error::SqlError;

/// Values whose stored holders a commit must see to check uniqueness.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    /// Name keys (`PeerName::key`).
    pub names: Vec<String>,
    /// Public keys (base64), the server's own included.
    pub keys: Vec<String>,
    /// IPv6 addresses (canonical text).
    pub v6: Vec<String>,
    /// IPv4 addresses (dotted quad).
    pub v4: Vec<String>,
    /// Delegated prefixes (`addr/len`).
    pub prefixes: Vec<String>,
}

impl Probe {
    fn is_empty(&self) -> bool {
        self.names.is_empty()
            && self.keys.is_empty()
            && self.v6.is_empty()
            && self.v4.is_empty()
            && self.prefixes.is_empty()
    }

    fn add_peer(&mut self, p: &Peer) {
        self.names.push(p.name.key());
        self.keys.push(p.public_key.to_base64());
        if let Some(a) = p.address_v6 {
            self.v6.push(a.to_string());
        }
        if let Some(a) = p.address_v4 {
            self.v4.push(a.to_string());
        }
        if let Some(n) = p.delegated_prefix {
            self.prefixes.push(n.to_string());
        }
    }
}

/// The user fields another user may clash with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserClash {
    /// The name key is taken.
    Name,
    /// The e-mail address is taken.
    Email,
}

/// Primitive operations inside one write transaction of a backend. PostgreSQL takes row
/// locks where noted; SQLite's `BEGIN IMMEDIATE` already serializes all writers.
pub(crate) trait Tx: Send {
    /// `sqlite` or `postgres`.
    const STORE: &'static str;

    /// The head revision of a server, locking its head row (`None`: never existed), and
    /// the stored server (`None`: absent or deleted).
    async fn lock_server(
        &mut self,
        id: ServerId,
    ) -> Result<(Option<RevisionNo>, Option<Server>), SqlError>;
    /// Whether a stored server other than `except` has this name key.
    async fn server_name_taken(
        &mut self,
        name_key: &str,
        except: Option<ServerId>,
    ) -> Result<bool, SqlError>;
    /// Stored peers of the server, keyed by row id, whose id is one of `ids` or that hold
    /// any of the probed values.
    async fn peers_for_commit(
        &mut self,
        server: ServerId,
        ids: &[PeerId],
        probe: &Probe,
    ) -> Result<Vec<(PeerId, Peer)>, SqlError>;
    /// Create the head row of a new server at `rev` (before its server row).
    async fn insert_head(&mut self, id: ServerId, rev: RevisionNo) -> Result<(), SqlError>;
    /// Replace the server row (`exists`) or insert it (fails if it is there).
    async fn write_server(&mut self, s: &Server, exists: bool) -> Result<(), SqlError>;
    /// Delete a server row and all its peers.
    async fn delete_server(&mut self, id: ServerId) -> Result<(), SqlError>;
    /// Delete these peers of the server (absent ids are ignored).
    async fn delete_peers(&mut self, server: ServerId, ids: &[PeerId]) -> Result<(), SqlError>;
    /// Insert peers (row id, peer), batched.
    async fn insert_peers(
        &mut self,
        server: ServerId,
        peers: &[(PeerId, &Peer)],
    ) -> Result<(), SqlError>;
    /// Finish a commit: move the head to the record's revision, append the record and
    /// the audit entry, announce the revision (PostgreSQL `NOTIFY`, delivered only on
    /// commit).
    async fn finish(
        &mut self,
        record: &RevisionRecord,
        audit: AuditEntry,
    ) -> Result<AuditRecord, SqlError>;
    /// Number, chain and insert an audit entry (locks the audit head on PostgreSQL).
    async fn append_audit(&mut self, entry: AuditEntry) -> Result<AuditRecord, SqlError>;

    /// A user's stored version, locking the row (`None`: no such user).
    async fn user_version(&mut self, id: UserId) -> Result<Option<u64>, SqlError>;
    /// Whether another user holds this user's name key or e-mail address.
    async fn user_clash(&mut self, user: &User) -> Result<Option<UserClash>, SqlError>;
    /// Insert a user.
    async fn insert_user(&mut self, user: &User) -> Result<(), SqlError>;
    /// Replace a user.
    async fn update_user(&mut self, user: &User) -> Result<(), SqlError>;
    /// Delete a user and their tokens; `false` if there was no such user.
    async fn delete_user(&mut self, id: UserId) -> Result<bool, SqlError>;
    /// Create or replace a role.
    async fn put_role(&mut self, role: &Role) -> Result<(), SqlError>;
    /// Delete a role; `false` if there was none.
    async fn delete_role(&mut self, name: &RoleName) -> Result<bool, SqlError>;
    /// A stored token, locking the row.
    async fn token(&mut self, id: TokenId) -> Result<Option<ApiTokenRecord>, SqlError>;
    /// Insert a token.
    async fn insert_token(&mut self, t: &ApiTokenRecord) -> Result<(), SqlError>;
    /// Replace a token.
    async fn update_token(&mut self, t: &ApiTokenRecord) -> Result<(), SqlError>;
}

/// The state a commit builds up: the server as it will be and the peers it touched.
struct Draft {
    server: Option<Server>,
    /// The server row must be rewritten.
    server_dirty: bool,
    /// Every stored peer is gone (the server was deleted, maybe re-created).
    cleared: bool,
    /// Touched peers by row id: `Some` = their final value, `None` = removed.
    touched: BTreeMap<PeerId, Option<Peer>>,
    /// Stored ids among those the changes name.
    stored: HashSet<PeerId>,
    /// Stored peers that may clash with the changes (see [`commit`]).
    candidates: BTreeMap<PeerId, Peer>,
}

impl Draft {
    fn peer_exists(&self, id: PeerId) -> bool {
        match self.touched.get(&id) {
            Some(p) => p.is_some(),
            None => !self.cleared && self.stored.contains(&id),
        }
    }

    fn clear_peers(&mut self) {
        self.cleared = true;
        self.touched.clear();
    }
}

/// Commit a server mutation: compare-and-swap on the head, apply, check uniqueness, write
/// the revision and the audit record. Nothing is written unless everything passes (the
/// caller rolls the transaction back on any error).
pub(crate) async fn commit<T: Tx>(tx: &mut T, c: &Commit) -> Result<RevisionRecord, SqlError> {
    let sid = c.server_id;
    let (head, original) = tx.lock_server(sid).await?;
    let head_no = head.unwrap_or(RevisionNo::NONE);
    if head_no != c.expected {
        return Err(Error::conflict(format!(
            "server {sid} is at revision {head_no}, not {}",
            c.expected
        ))
        .into());
    }
    let new_rev = head_no.next();

    // What the changes need to know of the stored peers, fetched in one query: which of
    // the peers they name exist, and which stored peers share a unique value with any
    // peer or server key they carry (a superset of the final values).
    let mut ids = Vec::new();
    let mut probe = Probe::default();
    for change in &c.changes {
        match change {
            Change::PeerAdded { peer } => {
                ids.push(peer.id);
                probe.add_peer(peer);
            }
            Change::PeerUpdated { before, after } => {
                ids.push(before.id);
                probe.add_peer(after);
            }
            Change::PeerRemoved { peer } => ids.push(peer.id),
            Change::ServerCreated { server } | Change::ServerUpdated { after: server, .. } => {
                probe.keys.push(server.public_key.to_base64());
            }
            _ => {}
        }
    }
    let mut candidates = BTreeMap::new();
    if original.is_some() && !(ids.is_empty() && probe.is_empty()) {
        candidates.extend(tx.peers_for_commit(sid, &ids, &probe).await?);
    }
    let stored = ids
        .iter()
        .copied()
        .filter(|id| candidates.contains_key(id))
        .collect();
    let mut d = Draft {
        server: original.clone(),
        server_dirty: false,
        cleared: false,
        touched: BTreeMap::new(),
        stored,
        candidates,
    };

    for change in &c.changes {
        match change {
            Change::ServerCreated { server } => {
                if d.server.is_some() {
                    return Err(Error::already_exists("server", server.id).into());
                }
                if server.id != sid {
                    return Err(Error::conflict("server id does not match the commit").into());
                }
                if tx.server_name_taken(&server.name.key(), None).await? {
                    return Err(Error::already_exists("server", server.name.as_str()).into());
                }
                d.server = Some((**server).clone());
                d.server_dirty = true;
                d.clear_peers();
            }
            Change::ServerDeleted { .. } => {
                if d.server.is_none() {
                    return Err(Error::not_found("server", sid).into());
                }
                d.server = None;
                d.server_dirty = true;
                d.clear_peers();
            }
            Change::ServerUpdated { after, .. } => {
                let Some(cur_id) = d.server.as_ref().map(|s| s.id) else {
                    return Err(Error::not_found("server", sid).into());
                };
                if tx
                    .server_name_taken(&after.name.key(), Some(after.id))
                    .await?
                {
                    return Err(Error::already_exists("server", after.name.as_str()).into());
                }
                if after.id != cur_id {
                    return Err(Error::conflict("change targets another server").into());
                }
                d.server = Some((**after).clone());
                d.server_dirty = true;
            }
            Change::PeerAdded { peer } => {
                if d.server.is_none() {
                    return Err(Error::not_found("server", sid).into());
                }
                if d.peer_exists(peer.id) {
                    return Err(Error::already_exists("peer", peer.id).into());
                }
                d.touched.insert(peer.id, Some((**peer).clone()));
            }
            Change::PeerUpdated { before, after } => {
                if d.server.is_none() {
                    return Err(Error::not_found("server", sid).into());
                }
                if !d.peer_exists(before.id) {
                    return Err(Error::not_found("peer", before.id).into());
                }
                d.touched.insert(before.id, Some((**after).clone()));
            }
            Change::PeerRemoved { peer } => {
                if d.server.is_none() {
                    return Err(Error::not_found("server", sid).into());
                }
                if !d.peer_exists(peer.id) {
                    return Err(Error::not_found("peer", peer.id).into());
                }
                d.touched.insert(peer.id, None);
            }
            other => {
                return Err(Error::unsupported(format!(
                    "change kind {} in the {} store",
                    other.kind(),
                    T::STORE
                ))
                .into());
            }
        }
    }

    if let Some(server) = &d.server {
        check_uniqueness(server, &d, new_rev)?;
    }

    // Write: a new head first (servers reference it), then the server row, the peers, and
    // last the head, revision and audit record.
    if head.is_none() {
        tx.insert_head(sid, new_rev).await?;
    }
    match (&original, &d.server) {
        (Some(_), None) => tx.delete_server(sid).await?,
        (None, Some(s)) => tx.write_server(s, false).await?,
        (Some(_), Some(s)) if d.cleared => {
            tx.delete_server(sid).await?;
            tx.write_server(s, false).await?;
        }
        (Some(_), Some(s)) if d.server_dirty => tx.write_server(s, true).await?,
        _ => {}
    }
    if d.server.is_some() && !d.touched.is_empty() {
        if !d.cleared {
            let gone: Vec<PeerId> = d
                .touched
                .keys()
                .copied()
                .filter(|id| d.stored.contains(id))
                .collect();
            if !gone.is_empty() {
                tx.delete_peers(sid, &gone).await?;
            }
        }
        let finals: Vec<(PeerId, &Peer)> = d
            .touched
            .iter()
            .filter_map(|(id, p)| p.as_ref().map(|p| (*id, p)))
            .collect();
        if !finals.is_empty() {
            tx.insert_peers(sid, &finals).await?;
        }
    }

    let record = RevisionRecord {
        server_id: sid,
        revision: new_rev,
        author: c.author.clone(),
        at: c.at,
        summary: c.summary.clone(),
        changes: c.changes.clone(),
    };
    let mut audit = c.audit.clone();
    audit.revision = Some(new_rev);
    audit.server_id = Some(sid);
    tx.finish(&record, audit).await?;
    Ok(record)
}

/// Check the uniqueness rules on the changed peers plus the stored peers that may clash
/// with them or with the server's key (unless the commit dropped every stored peer).
fn check_uniqueness(server: &Server, d: &Draft, new_rev: RevisionNo) -> Result<(), SqlError> {
    let mut peers: BTreeMap<PeerId, Peer> = BTreeMap::new();
    if !d.cleared {
        for (id, p) in &d.candidates {
            if !d.touched.contains_key(id) {
                peers.insert(*id, p.clone());
            }
        }
    }
    for (id, p) in &d.touched {
        if let Some(p) = p {
            peers.insert(*id, p.clone());
        }
    }
    if peers.is_empty() {
        return Ok(());
    }
    let state = ServerState {
        server: server.clone(),
        peers,
        revision: new_rev,
    };
    check_server_uniqueness(&state)?;
    Ok(())
}

/// Apply identity changes in order and append their audit record.
pub(crate) async fn commit_identity<T: Tx>(
    tx: &mut T,
    changes: &[IdentityChange],
    audit: &AuditEntry,
) -> Result<(), SqlError> {
    for change in changes {
        match change {
            IdentityChange::UserCreated { user } => {
                if tx.user_version(user.id).await?.is_some() {
                    return Err(Error::already_exists("user", user.id).into());
                }
                check_user_unique(tx, user).await?;
                tx.insert_user(user).await?;
            }
            IdentityChange::UserUpdated { user } => {
                let cur = tx
                    .user_version(user.id)
                    .await?
                    .ok_or_else(|| Error::not_found("user", user.id))?;
                if user.version != cur.saturating_add(1) {
                    return Err(Error::conflict(format!(
                        "user {} was changed concurrently",
                        user.name
                    ))
                    .into());
                }
                check_user_unique(tx, user).await?;
                tx.update_user(user).await?;
            }
            IdentityChange::UserDeleted { id } => {
                if !tx.delete_user(*id).await? {
                    return Err(Error::not_found("user", id).into());
                }
            }
            IdentityChange::RolePut { role } => tx.put_role(role).await?,
            IdentityChange::RoleDeleted { name } => {
                if !tx.delete_role(name).await? {
                    return Err(Error::not_found("role", name).into());
                }
            }
            IdentityChange::TokenCreated { token } => {
                if tx.user_version(token.user_id).await?.is_none() {
                    return Err(Error::not_found("user", token.user_id).into());
                }
                if tx.token(token.id).await?.is_some() {
                    return Err(Error::already_exists("token", token.id).into());
                }
                tx.insert_token(token).await?;
            }
            IdentityChange::TokenRevoked { id } => {
                let mut t = tx
                    .token(*id)
                    .await?
                    .ok_or_else(|| Error::not_found("token", id))?;
                t.revoked = true;
                tx.update_token(&t).await?;
            }
            _ => {
                return Err(Error::unsupported(format!(
                    "an identity change of a kind the {} store does not know",
                    T::STORE
                ))
                .into());
            }
        }
    }
    tx.append_audit(audit.clone()).await?;
    Ok(())
}

async fn check_user_unique<T: Tx>(tx: &mut T, user: &User) -> Result<(), SqlError> {
    match tx.user_clash(user).await? {
        Some(UserClash::Name) => Err(Error::already_exists("user", user.name.as_str()).into()),
        Some(UserClash::Email) => {
            Err(Error::already_exists("user", "with this e-mail address").into())
        }
        None => Ok(()),
    }
}
