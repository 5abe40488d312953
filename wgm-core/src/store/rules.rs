//! The commit rules of every store, written once: compare-and-swap on the head
//! revision, the uniqueness of server names and, per server, of peer names, public keys,
//! addresses and prefixes, the version check of user records, the keyed chaining of the
//! audit log and the MACs of revisions (module [`crate::integrity`]), and the creation and
//! re-sealing of the store's audit key. An engine implements [`Transaction`] — the storage
//! primitives inside one of its write transactions — and calls [`commit_with_rules`],
//! [`commit_identity_with_rules`], [`append_audit_with_rules`],
//! [`init_audit_key_with_rules`] and [`reseal_audit_key_with_rules`]; the rules decide,
//! the engine stores. [`super::MemoryStore`] and `wgm_store_sql`'s SQLite and PostgreSQL
//! stores do exactly that.
//!
//! A commit never reads all peers of a server: in one call
//! ([`Transaction::peers_for_commit`]) it reads the stored peers its changes name (to
//! know which exist) and the stored peers sharing a name, key, address or prefix with any
//! peer or server key the changes carry; then it checks uniqueness on that subset plus
//! the changed peers with [`check_server_uniqueness`]. Any clash in the whole resulting
//! state involves a changed peer (the stored state was unique), so the subset holds every
//! clash the whole state would, and the same first one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;

use crate::error::{ConflictKind, Taken};
use crate::integrity::{revision_mac, AuditKey, LegacyBound, StoredAuditKey};
use crate::model::{
    ApiTokenRecord, AuditEntry, AuditRecord, Change, Commit, Committed, IdentityChange, Peer,
    PeerId, RevisionNo, RevisionRecord, Server, ServerId, ServerState, TokenId, User, UserId,
};
use crate::names::RoleName;
use crate::rbac::Role;
use crate::seal::SealedSecret;
use crate::store::SealAuditKey;
use crate::Error;

/// Values whose stored holders a commit must see to check uniqueness, as text (the form
/// the SQL stores index): see [`Transaction::peers_for_commit`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Probe {
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

/// Which unique value a probed text is ([`Probe`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeField {
    /// A peer's name key.
    Name,
    /// A public key (a peer's or the server's).
    Key,
    /// An IPv6 address.
    V6,
    /// An IPv4 address.
    V4,
    /// A delegated prefix.
    Prefix,
}

impl Probe {
    /// Whether nothing is probed.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
            && self.keys.is_empty()
            && self.v6.is_empty()
            && self.v4.is_empty()
            && self.prefixes.is_empty()
    }

    /// A peer's unique values in the probe's text forms: what an engine indexes so that
    /// it can answer [`Transaction::peers_for_commit`] by lookups (the memory engine does;
    /// the SQL engines index the same text in their tables).
    ///
    /// ```
    /// # use wgm_core::store::rules::{Probe, ProbeField};
    /// # fn demo(p: &wgm_core::model::Peer) {
    /// let names = Probe::values_of(p).into_iter().filter(|(f, _)| *f == ProbeField::Name);
    /// assert_eq!(names.count(), 1);
    /// # }
    /// ```
    pub fn values_of(p: &Peer) -> Vec<(ProbeField, String)> {
        let mut out = vec![
            (ProbeField::Name, p.name.key()),
            (ProbeField::Key, p.public_key.to_base64()),
        ];
        if let Some(a) = p.address_v6 {
            out.push((ProbeField::V6, a.to_string()));
        }
        if let Some(a) = p.address_v4 {
            out.push((ProbeField::V4, a.to_string()));
        }
        if let Some(n) = p.delegated_prefix {
            out.push((ProbeField::Prefix, n.to_string()));
        }
        out
    }

    /// Every probed value with its field.
    pub fn values(&self) -> impl Iterator<Item = (ProbeField, &str)> + '_ {
        fn tag(f: ProbeField, list: &[String]) -> impl Iterator<Item = (ProbeField, &str)> {
            list.iter().map(move |v| (f, v.as_str()))
        }
        tag(ProbeField::Name, &self.names)
            .chain(tag(ProbeField::Key, &self.keys))
            .chain(tag(ProbeField::V6, &self.v6))
            .chain(tag(ProbeField::V4, &self.v4))
            .chain(tag(ProbeField::Prefix, &self.prefixes))
    }

    fn add_peer(&mut self, p: &Peer) {
        for (field, value) in Self::values_of(p) {
            match field {
                ProbeField::Name => self.names.push(value),
                ProbeField::Key => self.keys.push(value),
                ProbeField::V6 => self.v6.push(value),
                ProbeField::V4 => self.v4.push(value),
                ProbeField::Prefix => self.prefixes.push(value),
            }
        }
    }
}

/// The user fields another user may clash with ([`Transaction::user_clash`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserClash {
    /// The name key is taken.
    Name,
    /// The e-mail address is taken.
    Email,
}

/// The storage primitives of one write transaction of a store engine. The rules in this
/// module ([`commit_with_rules`], [`commit_identity_with_rules`],
/// [`append_audit_with_rules`]) decide with them; the engine only reads and writes.
///
/// # Contract
///
/// - Everything happens inside one transaction of the engine that the caller opens
///   before and commits after the rules ran, and rolls back (drops) when they return an
///   error. [`commit_with_rules`] makes every check before its first write, so an engine
///   whose writes cannot fail needs no rollback of a server commit;
///   [`commit_identity_with_rules`] writes each change before checking the next one,
///   so reads must see the transaction's own earlier writes (an engine that buffers its
///   writes answers reads from the buffer first).
/// - Reads that decide must not change under the transaction until it ends: lock what
///   [`lock_server`](Transaction::lock_server) reads (the head row), serialize writers
///   (SQLite's `BEGIN IMMEDIATE`), hold a lock (the memory store's mutex), or detect
///   the change at commit time and run the rules again (an optimistic engine).
/// - `Error` carries the rules' [`Error`]s unchanged ([`From`]) and whatever the
///   engine's own failures are; the engine's `Store` methods turn it into [`Error`].
///
/// # A new engine
///
/// Implement these primitives over the engine's own transaction and call the rules:
/// nothing of the rules is copied. Redis, for example (where `WATCH`/`MULTI` is unsafe on
/// a multiplexed connection, so compare-and-swap happens in a script): answer the reads
/// with plain `GET`/`HGET`/set lookups of per-server indexes (name, key, address, prefix
/// → peer id) and remember the head revision and audit tail they saw; buffer the writes;
/// after the rules returned `Ok`, send the buffer to one script that re-checks that head
/// and tail and only then writes (the rules check everything before the first write, as a
/// script that cannot roll back needs). When the script finds either moved, run the rules
/// again on fresh reads: they return [`ConflictKind::StaleRevision`] if another commit
/// won, or land if only the audit log moved.
///
/// The methods are `async` and their futures `Send`, so an engine may await I/O in
/// them; an engine without I/O may implement them with `async fn` and poll the rules'
/// future once (`futures::FutureExt::now_or_never`), as the memory store does.
pub trait Transaction: Send {
    /// The engine's error: the rules' [`Error`]s convert into it.
    type Error: From<Error> + Send;

    /// The head revision of a server, locking it (`None`: never existed; a deleted
    /// server keeps its head), and the stored server (`None`: absent or deleted).
    fn lock_server(
        &mut self,
        id: ServerId,
    ) -> impl Future<Output = Result<(Option<RevisionNo>, Option<Server>), Self::Error>> + Send;

    /// Whether a stored server other than `except` has this name key
    /// (`ServerName::key`).
    fn server_name_taken(
        &mut self,
        name_key: &str,
        except: Option<ServerId>,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// Stored peers of the server, keyed by row id, whose id is one of `ids` or that hold
    /// any of the probed values (an engine may index [`Probe::values_of`] to find them). More
    /// peers than that do no harm.
    fn peers_for_commit(
        &mut self,
        server: ServerId,
        ids: &[PeerId],
        probe: &Probe,
    ) -> impl Future<Output = Result<Vec<(PeerId, Peer)>, Self::Error>> + Send;

    /// Create the head of a server that never existed, at `rev` (before its server row).
    fn insert_head(
        &mut self,
        id: ServerId,
        rev: RevisionNo,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Replace the stored server (`exists`) or insert it (it is not there).
    fn write_server(
        &mut self,
        s: &Server,
        exists: bool,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Delete a stored server and all its peers (not its head or revisions).
    fn delete_server(
        &mut self,
        id: ServerId,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Delete these peers of the server (absent ids are ignored).
    fn delete_peers(
        &mut self,
        server: ServerId,
        ids: &[PeerId],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Insert peers (row id, peer) of the server.
    fn insert_peers(
        &mut self,
        server: ServerId,
        peers: &[(PeerId, &Peer)],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The tail of the audit log, locking it (the last lock a transaction takes): the
    /// sequence number of the last appended record and its hash; `(0,
    /// AUDIT_GENESIS)` for an empty log.
    ///
    /// [`AUDIT_GENESIS`]: crate::model::AUDIT_GENESIS
    fn audit_tail(&mut self) -> impl Future<Output = Result<(u64, String), Self::Error>> + Send;

    /// Append an audit record the rules chained after [`Transaction::audit_tail`], and
    /// move the tail to it.
    fn write_audit(
        &mut self,
        record: &AuditRecord,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Finish a server commit: move the head to the record's revision, append the
    /// revision record and the chained audit record (as [`Transaction::write_audit`]),
    /// and announce the revision if the engine does (PostgreSQL's `NOTIFY`, delivered
    /// only when the transaction commits). The stored server, if any, is at that
    /// revision afterwards.
    fn finish(
        &mut self,
        record: &RevisionRecord,
        audit: &AuditRecord,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// [`Transaction::finish`] for several commits of one server in a row (revisions and
    /// audit records in order, each chained to the one before): the head moves to the
    /// last revision. An engine may write them in one statement; by default, one
    /// [`Transaction::finish`] each.
    fn finish_all(
        &mut self,
        done: &[Committed],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async move {
            for c in done {
                self.finish(&c.record, &c.audit).await?;
            }
            Ok(())
        }
    }

    /// The stored audit key, if any (locking it where the engine locks rows).
    fn audit_key(
        &mut self,
    ) -> impl Future<Output = Result<Option<StoredAuditKey>, Self::Error>> + Send;

    /// Store the audit key: insert it unless one exists (`exists == false`; a key
    /// another writer inserted first stays, and this is no error), or replace the stored
    /// one (`exists == true`).
    fn write_audit_key(
        &mut self,
        key: &StoredAuditKey,
        exists: bool,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The head revision of every server that ever existed (deleted ones included).
    fn server_heads(
        &mut self,
    ) -> impl Future<Output = Result<BTreeMap<ServerId, RevisionNo>, Self::Error>> + Send;

    /// A user's stored version, locking the user (`None`: no such user).
    fn user_version(
        &mut self,
        id: UserId,
    ) -> impl Future<Output = Result<Option<u64>, Self::Error>> + Send;

    /// Whether another user holds this user's name key or e-mail address; a taken name
    /// is reported before a taken e-mail address.
    fn user_clash(
        &mut self,
        user: &User,
    ) -> impl Future<Output = Result<Option<UserClash>, Self::Error>> + Send;

    /// Insert a user.
    fn insert_user(&mut self, user: &User) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Replace a user.
    fn update_user(&mut self, user: &User) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Delete a user and their tokens; `false` if there was no such user.
    fn delete_user(&mut self, id: UserId)
        -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// Create or replace a role (by its name key).
    fn put_role(&mut self, role: &Role) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Delete a role; `false` if there was none.
    fn delete_role(
        &mut self,
        name: &RoleName,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// A stored token, locking it.
    fn token(
        &mut self,
        id: TokenId,
    ) -> impl Future<Output = Result<Option<ApiTokenRecord>, Self::Error>> + Send;

    /// Insert a token.
    fn insert_token(
        &mut self,
        t: &ApiTokenRecord,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Replace a token.
    fn update_token(
        &mut self,
        t: &ApiTokenRecord,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Check the uniqueness rules of one server's state after changes were applied:
/// peer names (case-insensitive), public keys (also against the server's own key) and
/// addresses/prefixes are unique within the server. A taken name or key is
/// [`Error::AlreadyExists`]; the server's own key, a taken address or prefix is
/// [`Error::Conflict`] with [`ConflictKind::Taken`].
///
/// ```
/// # use wgm_core::store::check_server_uniqueness;
/// # fn demo(state: &wgm_core::model::ServerState) { let _ = check_server_uniqueness(state); }
/// ```
pub fn check_server_uniqueness(state: &ServerState) -> Result<(), Error> {
    let mut names = HashMap::with_capacity(state.peers.len());
    let mut keys = HashMap::with_capacity(state.peers.len());
    let mut addrs: HashMap<IpAddr, PeerId> = HashMap::with_capacity(state.peers.len() * 2);
    let mut prefixes = HashMap::new();
    for p in state.peers.values() {
        if names.insert(p.name.key(), p.id).is_some() {
            return Err(Error::already_exists("peer", format!("name {}", p.name)));
        }
        if p.public_key == state.server.public_key {
            return Err(Error::conflict_of(ConflictKind::Taken(Taken::ServerKey)));
        }
        if keys.insert(p.public_key, p.id).is_some() {
            return Err(Error::already_exists(
                "peer",
                format!("public key {}", p.public_key),
            ));
        }
        for a in p
            .address_v6
            .map(IpAddr::V6)
            .into_iter()
            .chain(p.address_v4.map(IpAddr::V4))
        {
            if addrs.insert(a, p.id).is_some() {
                return Err(Error::conflict_of(ConflictKind::Taken(Taken::Address(a))));
            }
        }
        if let Some(pfx) = p.delegated_prefix {
            if prefixes.insert(pfx, p.id).is_some() {
                return Err(Error::conflict_of(ConflictKind::Taken(Taken::Prefix(pfx))));
            }
        }
    }
    Ok(())
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
    /// Stored peers that may clash with the changes (see [`commit_with_rules`]).
    candidates: BTreeMap<PeerId, Peer>,
}

impl Draft {
    /// The draft of `server` as stored, before any change: `ids` are the peers the
    /// changes name, `candidates` the stored peers the probe found.
    fn new(server: Option<Server>, ids: &[PeerId], candidates: BTreeMap<PeerId, Peer>) -> Self {
        let stored = ids
            .iter()
            .copied()
            .filter(|id| candidates.contains_key(id))
            .collect();
        Draft {
            server,
            server_dirty: false,
            cleared: false,
            touched: BTreeMap::new(),
            stored,
            candidates,
        }
    }

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

/// Commit a server mutation inside `tx`: compare-and-swap on the head, apply the changes,
/// check uniqueness, write the revision with its MAC and the audit record chained under
/// `key` (its `revision` and `server_id` set). Every check comes before the first write.
///
/// The errors, which `ServerStore::commit` returns as they are:
/// - the head is not `commit.expected`: [`Error::Conflict`] with
///   [`ConflictKind::StaleRevision`] (checked first, before anything else is read);
/// - a taken server name, peer name or public key, or a created server or added peer
///   that exists: [`Error::AlreadyExists`];
/// - the server's own key on a peer, an address or prefix held twice:
///   [`Error::Conflict`] with [`ConflictKind::Taken`];
/// - a change to a server or peer that does not exist: [`Error::NotFound`];
/// - a change that names another server than the commit: [`Error::Conflict`] with
///   [`ConflictKind::Other`].
///
/// # Errors
///
/// The above, and the engine's own failures.
pub async fn commit_with_rules<T: Transaction>(
    tx: &mut T,
    c: &Commit,
    key: &AuditKey,
) -> Result<Committed, T::Error> {
    let sid = c.server_id;
    let (head, original) = tx.lock_server(sid).await?;
    let head_no = head.unwrap_or(RevisionNo::NONE);
    expect_head(c, head_no)?;
    let new_rev = head_no.next();

    // What the changes need to know of the stored peers, fetched in one call: which of
    // the peers they name exist, and which stored peers share a unique value with any
    // peer or server key they carry (a superset of the final values).
    let (ids, probe) = probe_of(&c.changes);
    let mut candidates = BTreeMap::new();
    if original.is_some() && !(ids.is_empty() && probe.is_empty()) {
        candidates.extend(tx.peers_for_commit(sid, &ids, &probe).await?);
    }
    let mut d = Draft::new(original.clone(), &ids, candidates);

    for change in &c.changes {
        apply(tx, &mut d, sid, change).await?;
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
    if d.server.is_some() {
        write_touched(tx, sid, &d).await?;
    }

    let (record, audit) = record_of(c, new_rev, key);
    let audit = chain(tx, audit, key).await?;
    tx.finish(&record, &audit).await?;
    Ok(Committed { record, audit })
}

/// [`commit_with_rules`] for each of `commits` in turn, inside one transaction: what an
/// engine's [`ServerStore::commit_all`](crate::store::ServerStore::commit_all) runs before
/// committing its transaction. On the first failure it stops and says which commit
/// failed ([`BatchFailure::at`]); the engine then rolls the transaction back and maps
/// the outcome with [`batch_results`].
///
/// # Errors
///
/// The first commit's failure, with its index.
pub async fn commit_all_with_rules<T: Transaction>(
    tx: &mut T,
    commits: &[Commit],
    key: &AuditKey,
) -> Result<Vec<Committed>, BatchFailure<T::Error>> {
    if commits.len() > 1 && is_peer_chain(commits) {
        return commit_chain(tx, commits, key).await;
    }
    let mut out = Vec::with_capacity(commits.len());
    for (i, c) in commits.iter().enumerate() {
        match commit_with_rules(tx, c, key).await {
            Ok(done) => out.push(done),
            Err(error) => return Err(BatchFailure { at: Some(i), error }),
        }
    }
    Ok(out)
}

/// Whether `commits` change only peers of one server, each expecting the revision the
/// one before it makes: what [`commit_all_with_rules`] checks in full before it writes
/// anything, with one read of each kind (so even an engine without rollback may run
/// such a batch through it: a failing commit leaves nothing written).
///
/// ```
/// assert!(!wgm_core::store::rules::is_peer_chain(&[]));
/// ```
pub fn is_peer_chain(commits: &[Commit]) -> bool {
    let Some(first) = commits.first() else {
        return false;
    };
    commits.iter().zip(0u64..).all(|(c, i)| {
        c.server_id == first.server_id
            && first.expected.0.checked_add(i) == Some(c.expected.0)
            && c.changes.iter().all(Change::is_peer_change)
    })
}

/// A chain of peer commits of one server ([`is_peer_chain`]) in one transaction, with
/// the result [`commit_with_rules`] gives each in turn: one lock of the head, one probe
/// of the stored peers for every commit's values, one write of the peers and one
/// [`Transaction::finish_all`]. Each commit is still checked on its own, in order, on the
/// peers as the commits before it left them: its changes must find (or not find) their
/// peers, and the uniqueness rules must hold after it. Every check of every commit comes
/// before the first write.
async fn commit_chain<T: Transaction>(
    tx: &mut T,
    commits: &[Commit],
    key: &AuditKey,
) -> Result<Vec<Committed>, BatchFailure<T::Error>> {
    let at = |i: usize| move |error: T::Error| BatchFailure { at: Some(i), error };
    let Some(first) = commits.first() else {
        return Ok(Vec::new());
    };
    let sid = first.server_id;
    let (head, original) = tx.lock_server(sid).await.map_err(at(0))?;
    let head_no = head.unwrap_or(RevisionNo::NONE);
    expect_head(first, head_no).map_err(|e| at(0)(e.into()))?;
    let Some(server) = original else {
        return Err(at(0)(Error::not_found("server", sid).into()));
    };
    let (ids, probe) = probe_of(commits.iter().flat_map(|c| &c.changes));
    let candidates: BTreeMap<PeerId, Peer> = tx
        .peers_for_commit(sid, &ids, &probe)
        .await
        .map_err(at(0))?
        .into_iter()
        .collect();
    let mut d = Draft::new(Some(server.clone()), &ids, candidates);
    let mut rev = head_no;
    for (i, c) in commits.iter().enumerate() {
        rev = rev.next();
        for change in &c.changes {
            apply(tx, &mut d, sid, change).await.map_err(at(i))?;
        }
        check_uniqueness(&server, &d, rev).map_err(|e| at(i)(e.into()))?;
    }

    // Write, as `commit_with_rules` does: the peers, then the heads, revisions and audit
    // records. A failure here is the batch's, reported on its first commit.
    write_touched(tx, sid, &d).await.map_err(at(0))?;
    let (mut seq, mut hash) = tx.audit_tail().await.map_err(at(0))?;
    let mut done = Vec::with_capacity(commits.len());
    let mut rev = head_no;
    for c in commits {
        rev = rev.next();
        let (record, entry) = record_of(c, rev, key);
        seq = seq.saturating_add(1);
        let audit = AuditRecord::chain(seq, &hash, entry, key);
        hash.clone_from(&audit.hash);
        done.push(Committed { record, audit });
    }
    tx.finish_all(&done).await.map_err(at(0))?;
    Ok(done)
}

/// Why a batch of commits written in one transaction did not land.
#[derive(Debug)]
pub struct BatchFailure<E> {
    /// The commit whose rules or statements failed, or `None` when the transaction
    /// itself failed (its begin or its final commit: the outcome of a failed final commit
    /// may be unknown, as for a single commit).
    pub at: Option<usize>,
    /// The failure.
    pub error: E,
}

impl<E> BatchFailure<E> {
    /// A failure of the transaction itself (not of one commit).
    pub fn whole(error: E) -> Self {
        BatchFailure { at: None, error }
    }
}

/// One result per commit of an all-or-nothing batch (the contract of
/// [`ServerStore::commit_all`](crate::store::ServerStore::commit_all)): every commit
/// when the batch landed; otherwise the failing commit's own error and a stale revision
/// for every other (none of them landed; they may be retried on fresh state). A failure
/// of the transaction itself is reported to every commit as a store failure: it is
/// not known to be curable by a retry.
///
/// ```
/// use wgm_core::store::rules::{batch_results, BatchFailure};
/// let none: Vec<wgm_core::model::Commit> = Vec::new();
/// assert!(batch_results(&none, Ok(Vec::new())).is_empty());
/// assert!(batch_results(&none, Err(BatchFailure::whole(wgm_core::Error::conflict("x")))).is_empty());
/// ```
pub fn batch_results(
    commits: &[Commit],
    outcome: Result<Vec<Committed>, BatchFailure<Error>>,
) -> Vec<Result<Committed, Error>> {
    let failure = match outcome {
        Ok(done) => return done.into_iter().map(Ok).collect(),
        Err(f) => f,
    };
    let store = match &failure.error {
        Error::Store { store, .. } => store,
        _ => "store",
    };
    let message = failure.error.to_string();
    let mut error = Some(failure.error);
    // Where the head stood for the batch: what its first commit expected.
    let start = commits.first().map_or(0, |c| c.expected.0);
    commits
        .iter()
        .enumerate()
        .map(|(i, c)| match failure.at {
            Some(at) if at == i => Err(error
                .take()
                .unwrap_or_else(|| Error::store(store, message.clone()))),
            Some(_) => Err(not_landed(c, start)),
            None => Err(error.take().unwrap_or_else(|| {
                Error::store(
                    store,
                    format!("the transaction of this commit's batch failed: {message}"),
                )
            })),
        })
        .collect()
}

/// A stale revision unless the head is what `c` expects.
fn expect_head(c: &Commit, head: RevisionNo) -> Result<(), Error> {
    if head == c.expected {
        return Ok(());
    }
    Err(Error::conflict_of(ConflictKind::StaleRevision {
        server: c.server_id.0,
        expected: c.expected.0,
        actual: head.0,
    }))
}

/// The peer ids `changes` name and the probe of every unique value they carry (peers'
/// and servers' keys): what the changes need to know of the stored peers.
fn probe_of<'a>(changes: impl IntoIterator<Item = &'a Change>) -> (Vec<PeerId>, Probe) {
    let mut ids = Vec::new();
    let mut probe = Probe::default();
    for change in changes {
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
            Change::ServerDeleted { .. } => {}
        }
    }
    (ids, probe)
}

/// Write the peers a draft touched: delete the stored ones among them (unless every
/// stored peer went already), insert their final values.
async fn write_touched<T: Transaction>(
    tx: &mut T,
    sid: ServerId,
    d: &Draft,
) -> Result<(), T::Error> {
    if d.touched.is_empty() {
        return Ok(());
    }
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
    Ok(())
}

/// The revision record of `c` as revision `rev`, with its MAC, and its audit entry
/// numbered for it (chained by the caller).
fn record_of(c: &Commit, rev: RevisionNo, key: &AuditKey) -> (RevisionRecord, AuditEntry) {
    let mut record = RevisionRecord {
        server_id: c.server_id,
        revision: rev,
        author: c.author.clone(),
        at: c.at,
        summary: c.summary.clone(),
        changes: c.changes.clone(),
        mac: None,
    };
    record.mac = Some(revision_mac(key, &record));
    let mut entry = c.audit.clone();
    entry.revision = Some(rev);
    entry.server_id = Some(c.server_id);
    (record, entry)
}

/// The error of a commit of a batch that did not land because another of the batch
/// failed: a stale revision (retried on fresh state, as after a lost compare-and-swap).
/// `actual` is the head as the caller last knew it.
///
/// ```
/// # fn demo(c: &wgm_core::model::Commit) {
/// assert!(wgm_core::store::rules::not_landed(c, 3).is_stale_revision());
/// # }
/// ```
pub fn not_landed(c: &Commit, actual: u64) -> Error {
    Error::conflict_of(ConflictKind::StaleRevision {
        server: c.server_id.0,
        expected: c.expected.0,
        actual,
    })
}

/// Apply one change to the draft, checking that what it changes exists (or does not).
async fn apply<T: Transaction>(
    tx: &mut T,
    d: &mut Draft,
    sid: ServerId,
    change: &Change,
) -> Result<(), T::Error> {
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
    }
    Ok(())
}

/// Check the uniqueness rules on the changed peers plus the stored peers that may clash
/// with them or with the server's key (unless the commit dropped every stored peer).
fn check_uniqueness(server: &Server, d: &Draft, new_rev: RevisionNo) -> Result<(), Error> {
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
    check_server_uniqueness(&state)
}

/// Number and chain `entry` after the audit tail (locking it), keyed with `key`.
async fn chain<T: Transaction>(
    tx: &mut T,
    entry: AuditEntry,
    key: &AuditKey,
) -> Result<AuditRecord, T::Error> {
    let (seq, hash) = tx.audit_tail().await?;
    Ok(AuditRecord::chain(seq.saturating_add(1), &hash, entry, key))
}

/// Append an audit record that accompanies no state change: number it, chain it to the
/// tail of the log under `key` and write it, inside `tx`.
///
/// # Errors
///
/// The engine's failures.
pub async fn append_audit_with_rules<T: Transaction>(
    tx: &mut T,
    entry: AuditEntry,
    key: &AuditKey,
) -> Result<AuditRecord, T::Error> {
    let rec = chain(tx, entry, key).await?;
    tx.write_audit(&rec).await?;
    Ok(rec)
}

/// The store's audit key, created inside `tx` if there is none: lock the audit tail (so
/// no record is appended meanwhile), and if no key is stored, read what the store holds
/// ([`LegacyBound`]: the tail, every server's head), seal a key with it (`seal`) and
/// insert it unless another writer did first; then read back the stored key. Returns it
/// and whether this call created it.
///
/// # Errors
///
/// `seal`'s errors and the engine's failures.
pub async fn init_audit_key_with_rules<T: Transaction>(
    tx: &mut T,
    seal: &SealAuditKey<'_>,
) -> Result<(StoredAuditKey, bool), T::Error> {
    let (audit_seq, audit_hash) = tx.audit_tail().await?;
    if let Some(k) = tx.audit_key().await? {
        return Ok((k, false));
    }
    let legacy = LegacyBound {
        audit_seq,
        audit_hash,
        revisions: tx.server_heads().await?,
    };
    let sealed = seal(&legacy)?;
    let mine = StoredAuditKey { sealed, legacy };
    tx.write_audit_key(&mine, false).await?;
    let stored = tx
        .audit_key()
        .await?
        .ok_or_else(|| Error::conflict("the audit key vanished while it was created"))?;
    let created = stored == mine;
    Ok((stored, created))
}

/// Replace the stored audit key by `resealed` inside `tx` if it is still `expected`
/// (a master-key rotation re-seals it; the bound must not move).
///
/// # Errors
///
/// [`Error::NotFound`] without a key; [`Error::Conflict`] when the stored key is no
/// longer `expected` or `resealed` carries another bound; the engine's failures.
pub async fn reseal_audit_key_with_rules<T: Transaction>(
    tx: &mut T,
    expected: &SealedSecret,
    resealed: &StoredAuditKey,
) -> Result<(), T::Error> {
    let stored = tx
        .audit_key()
        .await?
        .ok_or_else(|| Error::not_found("audit key", "of this store"))?;
    if &stored.sealed != expected {
        return Err(Error::conflict("the audit key was re-sealed concurrently").into());
    }
    if stored.legacy != resealed.legacy {
        return Err(Error::conflict("re-sealing the audit key must keep its bound").into());
    }
    tx.write_audit_key(resealed, true).await
}

/// Apply identity changes in order inside `tx` and append their audit record, chained
/// under `key`; returns the record.
///
/// The errors:
/// - a `UserUpdated` whose `version` is not the stored version + 1: [`Error::Conflict`]
///   with [`ConflictKind::StaleUser`];
/// - a created user or token that exists, a user name or e-mail address another user
///   holds: [`Error::AlreadyExists`];
/// - a change to a user, role or token that does not exist (or a token of a missing
///   user): [`Error::NotFound`].
///
/// # Errors
///
/// The above, and the engine's own failures.
pub async fn commit_identity_with_rules<T: Transaction>(
    tx: &mut T,
    changes: &[IdentityChange],
    audit: &AuditEntry,
    key: &AuditKey,
) -> Result<AuditRecord, T::Error> {
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
                    return Err(Error::conflict_of(ConflictKind::StaleUser {
                        user: user.name.to_string(),
                    })
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
        }
    }
    append_audit_with_rules(tx, audit.clone(), key).await
}

async fn check_user_unique<T: Transaction>(tx: &mut T, user: &User) -> Result<(), T::Error> {
    match tx.user_clash(user).await? {
        Some(UserClash::Name) => Err(Error::already_exists("user", user.name.as_str()).into()),
        Some(UserClash::Email) => {
            Err(Error::already_exists("user", "with this e-mail address").into())
        }
        None => Ok(()),
    }
}

/// The primitives an import of a [`Snapshot`](crate::store::Snapshot) needs beyond
/// [`Transaction`]'s, inside the same engine transaction
/// ([`import_snapshot_with_rules`]).
pub trait Restore: Transaction {
    /// Delete everything the store holds — servers, peers, revisions, host state, users,
    /// roles, tokens, the audit log, its head (back to genesis) and its key — for an
    /// import that replaces the contents ([`ImportMode::Replace`]). Inside the import's
    /// transaction, so nothing is gone unless the import commits.
    fn clear(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Whether the store holds nothing: no server head, audit record, audit key, user,
    /// role, token, applied revision, lease, report or allocator state (as far as the
    /// engine can tell inside its transaction; its docs say what it checks).
    fn is_empty(&mut self) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// Insert revision records as they are (no head move, no audit record).
    fn insert_revisions(
        &mut self,
        records: &[RevisionRecord],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Insert audit records as they are, in order (the stored head is written apart,
    /// by [`Restore::write_audit_head`]).
    fn insert_audit(
        &mut self,
        records: &[AuditRecord],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Set the stored head of the audit log.
    fn write_audit_head(
        &mut self,
        head: &crate::integrity::AuditHead,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Insert the host state of one server: its allocator state, applied revisions,
    /// leases and reports.
    fn write_host_state(
        &mut self,
        server: &crate::store::ServerSnapshot,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Whether an import needs an empty store or replaces what the store holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportMode {
    /// Refuse a store that holds anything
    /// ([`SnapshotStore::import_snapshot`](crate::store::SnapshotStore::import_snapshot)).
    IntoEmpty,
    /// Delete everything first, in the same transaction
    /// ([`SnapshotStore::replace_with_snapshot`](crate::store::SnapshotStore::replace_with_snapshot)).
    Replace,
}

/// Import `snapshot` into the store behind `tx` (the rules of
/// [`SnapshotStore::import_snapshot`](crate::store::SnapshotStore::import_snapshot) and
/// [`replace_with_snapshot`](crate::store::SnapshotStore::replace_with_snapshot)):
/// check the snapshot, lock the audit tail (the lock every audited writer takes), with
/// [`ImportMode::Replace`] clear the store, refuse a store that holds anything with
/// [`not_empty`](crate::store::not_empty) before the first write, then write every
/// record as it is. The caller commits the transaction only on `Ok`.
pub async fn import_snapshot_with_rules<T: Restore>(
    tx: &mut T,
    store: &'static str,
    snapshot: &crate::store::Snapshot,
    mode: ImportMode,
) -> Result<(), T::Error> {
    snapshot.check()?;
    let (seq, _) = tx.audit_tail().await?;
    match mode {
        ImportMode::Replace => tx.clear().await?,
        ImportMode::IntoEmpty => {
            if seq != 0 || tx.audit_key().await?.is_some() || !tx.is_empty().await? {
                return Err(crate::store::not_empty(store).into());
            }
        }
    }
    for s in &snapshot.servers {
        if let Some(head) = s.head {
            tx.insert_head(s.id, head).await?;
        }
        if let Some(st) = &s.state {
            tx.write_server(&st.server, false).await?;
            let peers: Vec<(PeerId, &Peer)> = st.peers.iter().map(|(id, p)| (*id, p)).collect();
            tx.insert_peers(s.id, &peers).await?;
        }
        tx.insert_revisions(&s.revisions).await?;
        tx.write_host_state(s).await?;
    }
    for u in &snapshot.users {
        tx.insert_user(u).await?;
    }
    for r in &snapshot.roles {
        tx.put_role(r).await?;
    }
    for t in &snapshot.tokens {
        tx.insert_token(t).await?;
    }
    tx.insert_audit(&snapshot.audit).await?;
    tx.write_audit_head(&snapshot.audit_head).await?;
    if let Some(k) = &snapshot.audit_key {
        tx.write_audit_key(k, false).await?;
    }
    Ok(())
}
