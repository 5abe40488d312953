//! History, diff, rollback and the audit log.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::peers::removal_changes;
use super::{Manager, Mutation};
use crate::audit::AuditAction;
pub use crate::integrity::AuditVerification;
use crate::integrity::{check_revision, AuditHead, ChainVerifier};
use crate::keys::PublicKey;
use crate::model::{
    AuditQuery, AuditRecord, Change, Peer, PeerId, RevisionNo, RevisionRecord, ServerId,
    ServerState,
};
use crate::rbac::{Action, Principal, Resource, Target};
use crate::{Error, Result};

/// One difference between two revisions of a server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiffEntry {
    /// `server`, `peer_added`, `peer_removed` or `peer_changed`.
    pub kind: String,
    /// The object's name.
    pub object: String,
    /// Changed fields with their values before and after (secrets show as
    /// `"<changed>"`, never as values).
    pub fields: BTreeMap<String, (Value, Value)>,
}

const SECRET_FIELDS: &[&str] = &["private_key", "preshared_key"];
const IGNORED_FIELDS: &[&str] = &["updated_at", "stats", "quarantine"];

fn field_diff(before: &Value, after: &Value) -> BTreeMap<String, (Value, Value)> {
    let mut out = BTreeMap::new();
    let (Value::Object(b), Value::Object(a)) = (before, after) else {
        return out;
    };
    for (k, bv) in b {
        if IGNORED_FIELDS.contains(&k.as_str()) {
            continue;
        }
        let av = a.get(k).unwrap_or(&Value::Null);
        if k == "policy" {
            continue;
        }
        if av != bv {
            if SECRET_FIELDS.contains(&k.as_str()) {
                out.insert(k.clone(), (json!("<sealed>"), json!("<changed>")));
            } else {
                out.insert(k.clone(), (bv.clone(), av.clone()));
            }
        }
    }
    policy_diff(before, after, &mut out);
    out
}

/// The firewall policy's fields, one entry each (`policy.allow`, `policy.forwarding`),
/// with the default policy standing in where a record has none.
fn policy_diff(before: &Value, after: &Value, out: &mut BTreeMap<String, (Value, Value)>) {
    // Servers have an interface, peers do not.
    let default = if before.get("interface").is_some() {
        to_value(&crate::policy::ServerPolicy::default())
    } else {
        to_value(&crate::policy::PeerPolicy::default())
    };
    let b = before.get("policy").unwrap_or(&default);
    let a = after.get("policy").unwrap_or(&default);
    let (Value::Object(b), Value::Object(a)) = (b, a) else {
        return;
    };
    let keys: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    for k in keys {
        let bv = b.get(k).unwrap_or(&Value::Null);
        let av = a.get(k).unwrap_or(&Value::Null);
        if av != bv {
            out.insert(format!("policy.{k}"), (bv.clone(), av.clone()));
        }
    }
}

fn to_value<T: Serialize>(t: &T) -> Value {
    // Our model types always serialize (string keys only).
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// Differences from state `a` to state `b` (peers by id).
fn diff_states(a: &ServerState, b: &ServerState) -> Vec<DiffEntry> {
    let mut out = Vec::new();
    let sf = field_diff(&to_value(&a.server), &to_value(&b.server));
    if !sf.is_empty() {
        out.push(DiffEntry {
            kind: "server".into(),
            object: b.server.name.to_string(),
            fields: sf,
        });
    }
    for (id, pa) in &a.peers {
        match b.peers.get(id) {
            None => out.push(DiffEntry {
                kind: "peer_removed".into(),
                object: pa.name.to_string(),
                fields: BTreeMap::new(),
            }),
            Some(pb) => {
                let f = field_diff(&to_value(pa), &to_value(pb));
                if !f.is_empty() {
                    out.push(DiffEntry {
                        kind: "peer_changed".into(),
                        object: pb.name.to_string(),
                        fields: f,
                    });
                }
            }
        }
    }
    for (id, pb) in &b.peers {
        if !a.peers.contains_key(id) {
            out.push(DiffEntry {
                kind: "peer_added".into(),
                object: pb.name.to_string(),
                fields: BTreeMap::new(),
            });
        }
    }
    out
}

/// Replay revisions into the state at each revision number.
fn replay(revisions: &[RevisionRecord], upto: RevisionNo) -> Result<ServerState> {
    let mut state: Option<ServerState> = None;
    for rec in revisions.iter().take_while(|r| r.revision <= upto) {
        for ch in &rec.changes {
            match (ch, state.as_mut()) {
                (Change::ServerCreated { server }, None) => {
                    state = Some(ServerState {
                        server: (**server).clone(),
                        peers: BTreeMap::new(),
                        revision: rec.revision,
                    });
                }
                (Change::ServerDeleted { .. }, Some(_)) => state = None,
                (_, Some(st)) => st.apply_change(ch)?,
                (_, None) => {
                    return Err(Error::conflict(format!(
                        "revision {} has no server to apply to",
                        rec.revision
                    )))
                }
            }
        }
        if let Some(st) = state.as_mut() {
            st.revision = rec.revision;
        }
    }
    state.ok_or_else(|| Error::not_found("revision", upto))
}

impl Manager {
    /// The revisions of a server after `after`, oldest first, at most `limit` (needs
    /// `config:read` and `peer:read` on every peer of the server).
    ///
    /// Every revision is checked before it is returned: it belongs to the server, its
    /// number follows the previous one, and its MAC verifies under the store's audit key
    /// (or it has none and was written before the key existed); otherwise the call fails
    /// with [`Error::Conflict`] of kind
    /// [`ConflictKind::RevisionAltered`](crate::error::ConflictKind::RevisionAltered).
    pub async fn history(
        &self,
        p: &Principal,
        server: ServerId,
        after: RevisionNo,
        limit: u64,
    ) -> Result<Vec<RevisionRecord>> {
        self.authorize(p, Resource::Config, Action::Read, Target::server(server.0))
            .await?;
        // A revision shows every peer it touches, whoever owns it.
        self.authorize_elevated(p, Resource::Peer, Action::Read, Target::server(server.0))
            .await?;
        let revs = self.store.revisions(server, after, limit).await?;
        self.check_revisions(server, after, &revs).await?;
        Ok(revs)
    }

    /// Check revisions of `server` read back from the store, the first of them right
    /// after `after`: each one's MAC ([`check_revision`]) and that the numbers run on
    /// without a gap (a deleted revision would make a replay wrong).
    pub(super) async fn check_revisions(
        &self,
        server: ServerId,
        after: RevisionNo,
        revs: &[RevisionRecord],
    ) -> Result<()> {
        let key = self.existing_audit_key().await?;
        let parts = key.as_deref().map(super::OpenedAuditKey::parts);
        let mut want = after.next();
        for r in revs {
            check_revision(parts, server, r)?;
            if r.revision != want {
                return Err(Error::conflict_of(
                    crate::error::ConflictKind::RevisionAltered {
                        server: server.0,
                        revision: r.revision.0,
                        reason: "the revision before it is missing",
                    },
                ));
            }
            want = want.next();
        }
        Ok(())
    }

    /// The state of a server at revision `rev`, replayed from its checked revisions
    /// (so a forged or altered revision fails here, before anything uses it).
    pub(super) async fn state_at(&self, server: ServerId, rev: RevisionNo) -> Result<ServerState> {
        if rev == RevisionNo::NONE {
            return Err(Error::invalid("revision", "revisions start at 1"));
        }
        let revs = self
            .store
            .revisions(server, RevisionNo::NONE, rev.0)
            .await?;
        self.check_revisions(server, RevisionNo::NONE, &revs)
            .await?;
        if revs.last().map(|r| r.revision) != Some(rev) {
            return Err(Error::not_found("revision", rev));
        }
        replay(&revs, rev)
    }

    /// What changed from revision `a` to revision `b` of a server (needs `config:read`
    /// and `peer:read` on every peer of the server).
    pub async fn diff(
        &self,
        p: &Principal,
        server: ServerId,
        a: RevisionNo,
        b: RevisionNo,
    ) -> Result<Vec<DiffEntry>> {
        self.authorize(p, Resource::Config, Action::Read, Target::server(server.0))
            .await?;
        // A revision shows every peer it touches, whoever owns it.
        self.authorize_elevated(p, Resource::Peer, Action::Read, Target::server(server.0))
            .await?;
        let sa = self.state_at(server, a).await?;
        let sb = self.state_at(server, b).await?;
        Ok(diff_states(&sa, &sb))
    }

    /// Restore a server's configuration as it was at revision `to`, as a new revision.
    ///
    /// Refused with [`Error::Conflict`] naming the address or key when restoring would
    /// move an address, prefix, public key or name that another peer holds now: a
    /// rollback never silently takes an address from one device and gives it to another
    /// (remove the newer peer first if that is what you want).
    ///
    /// What it restores is checked as if it were new input: every restored or changed
    /// peer's addresses lie in the pools and are not the server's, its extra allowed IPs
    /// follow the rules of [`Manager::update_peer`], no two peers' allowed IPs overlap,
    /// and routing more networks to a peer than it has now needs `peer:route`.
    ///
    /// Key material is never brought back: the server keeps its current key pair, every
    /// peer that exists now keeps its current keys and preshared key, and a peer removed
    /// since comes back with the keys it had when it was removed. The revision's summary
    /// and its audit details say which keys were kept.
    pub async fn rollback(
        &self,
        p: &Principal,
        server: ServerId,
        to: RevisionNo,
    ) -> Result<RevisionRecord> {
        self.authorize(
            p,
            Resource::Config,
            Action::Rollback,
            Target::server(server.0),
        )
        .await?;
        let target = self.state_at(server, to).await?;
        // The last state of every peer changed since `to`: a peer removed since comes
        // back with the keys it had when it was removed, not older ones.
        let mut latest: HashMap<PeerId, Peer> = HashMap::new();
        for rec in self.store.revisions(server, to, u64::MAX).await? {
            for ch in rec.changes {
                match ch {
                    Change::PeerAdded { peer } | Change::PeerRemoved { peer } => {
                        latest.insert(peer.id, *peer);
                    }
                    Change::PeerUpdated { after, .. } => {
                        latest.insert(after.id, *after);
                    }
                    _ => {}
                }
            }
        }
        let may_route = |owner: Option<crate::model::UserId>| {
            crate::rbac::authorize(
                p,
                Resource::Peer,
                Action::Route,
                Target::peer(server.0, owner.map(|u| u.0)),
            )
            .is_ok()
        };
        let may_policy = |resource, owner: Option<crate::model::UserId>| {
            crate::rbac::authorize(
                p,
                resource,
                Action::Policy,
                Target::peer(server.0, owner.map(|u| u.0)),
            )
            .is_ok()
        };
        let mut route_refused: Option<Option<crate::model::UserId>> = None;
        let mut policy_refused: Option<(Resource, Option<crate::model::UserId>)> = None;
        let res = self
            .mutate(p, server, |c, now| {
                let cur = &c.state;
                if cur.server.ipv6_pool != target.server.ipv6_pool
                    || cur.server.ipv4_pool != target.server.ipv4_pool
                {
                    return Err(Error::conflict(
                        "the server's pools changed since that revision",
                    ));
                }
                let mut kept: Vec<String> = Vec::new();
                let mut restored = target.clone();
                keep_current_keys(cur, &latest, &mut restored, &mut kept);
                check_no_reassignment(cur, &restored)?;
                let mut changes = Vec::new();
                let mut tserver = restored.server.clone();
                tserver.quarantine.clone_from(&cur.server.quarantine);
                tserver.updated_at = cur.server.updated_at;
                let removed: Vec<Peer> = cur
                    .peers
                    .values()
                    .filter(|x| !restored.peers.contains_key(&x.id))
                    .cloned()
                    .collect();
                if tserver.policy != cur.server.policy && !may_policy(Resource::Server, None) {
                    policy_refused = Some((Resource::Server, None));
                    return Err(Error::denied(
                        "server:policy: the rollback would change the server's firewall policy",
                    ));
                }
                if tserver != cur.server {
                    tserver.updated_at = now;
                    changes.push(Change::ServerUpdated {
                        before: Box::new(cur.server.clone()),
                        after: Box::new(tserver),
                    });
                }
                for (id, tp) in &restored.peers {
                    let now_peer = cur.peers.get(id);
                    if now_peer.is_some_and(|cp| cp.without_stats() == tp.without_stats()) {
                        continue;
                    }
                    if super::peers::widens_routes(now_peer, tp) && !may_route(tp.owner) {
                        route_refused = Some(tp.owner);
                        return Err(Error::denied(format!(
                            "peer:route: the rollback would route more networks to peer {} \
                             than it has now",
                            tp.name
                        )));
                    }
                    let policy_now = now_peer.map(|cp| cp.policy.clone()).unwrap_or_default();
                    if tp.policy != policy_now && !may_policy(Resource::Peer, tp.owner) {
                        policy_refused = Some((Resource::Peer, tp.owner));
                        return Err(Error::denied(format!(
                            "peer:policy: the rollback would change the firewall policy of \
                             peer {}",
                            tp.name
                        )));
                    }
                    match now_peer {
                        None => {
                            let mut add = tp.clone();
                            add.stats = crate::model::PeerStats::default();
                            add.updated_at = now;
                            changes.push(Change::PeerAdded {
                                peer: Box::new(add),
                            });
                        }
                        Some(cp) => {
                            let mut after = tp.clone();
                            after.stats = cp.stats;
                            after.updated_at = now;
                            changes.push(Change::PeerUpdated {
                                before: Box::new(cp.clone()),
                                after: Box::new(after),
                            });
                        }
                    }
                }
                if !removed.is_empty() {
                    // Quarantine the addresses of peers the rollback removes. When the
                    // server itself changes too, fold the quarantine into that change.
                    let mut rm = removal_changes(cur, &removed, now);
                    let quarantine_update = rm
                        .iter()
                        .position(|c| matches!(c, Change::ServerUpdated { .. }));
                    if let Some(qi) = quarantine_update {
                        let q = rm.remove(qi);
                        if let Change::ServerUpdated { after: qafter, .. } = q {
                            if let Some(Change::ServerUpdated { after, .. }) = changes
                                .iter_mut()
                                .find(|c| matches!(c, Change::ServerUpdated { .. }))
                            {
                                after.quarantine.clone_from(&qafter.quarantine);
                            } else {
                                changes.push(Change::ServerUpdated {
                                    before: Box::new(cur.server.clone()),
                                    after: qafter,
                                });
                            }
                        }
                    }
                    changes.extend(rm);
                }
                if changes.is_empty() {
                    let keys = if kept.is_empty() {
                        String::new()
                    } else {
                        format!(" (a rollback keeps the current keys: {})", kept.join(", "))
                    };
                    return Err(Error::invalid(
                        "revision",
                        format!("the server is already as it was at revision {to}{keys}"),
                    ));
                }
                revalidate(cur, &changes, now)?;
                let summary = if kept.is_empty() {
                    format!("rollback to revision {to}")
                } else {
                    format!(
                        "rollback to revision {to} (current keys kept: {})",
                        kept.join(", ")
                    )
                };
                Ok(Mutation {
                    summary,
                    action: AuditAction::ConfigRollback,
                    object: format!("server/{server}"),
                    details: json!({ "to": to.0, "kept_keys": kept }),
                    changes,
                    output: (),
                })
            })
            .await;
        match (res, route_refused, policy_refused) {
            (Ok((rec, ())), _, _) => Ok(rec),
            (Err(e), Some(owner), _) => {
                let t = Target::peer(server.0, owner.map(|u| u.0));
                Err(self.refusal(p, Resource::Peer, Action::Route, t, e).await)
            }
            (Err(e), None, Some((resource, owner))) => {
                let t = Target::peer(server.0, owner.map(|u| u.0));
                Err(self.refusal(p, resource, Action::Policy, t, e).await)
            }
            (Err(e), None, None) => Err(e),
        }
    }

    /// Audit records matching `q` (auditors and admins).
    pub async fn audit_log(&self, p: &Principal, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let target = match q.server_id {
            Some(s) => Target::server(s.0),
            None => Target::none(),
        };
        self.authorize(p, Resource::Audit, Action::Read, target)
            .await?;
        self.store.query_audit(q).await
    }

    /// Verify the whole audit chain ([`ChainVerifier`]): every record's link — keyed
    /// with the store's audit key, or unkeyed within the prefix written before the key
    /// existed —, that no record was removed or reordered, that the last record is the
    /// head the store keeps (so records deleted from the end show), and, with `expect`
    /// (a head printed by an earlier verification, kept elsewhere), that this head is
    /// still a record of the chain with the same hash (so a truncation below it or a
    /// rewrite of it shows even when the stored head was rewritten too). The store's
    /// engines also check, for every record read, that the columns they filter on agree
    /// with the hashed entry. Never creates the audit key.
    ///
    /// Fails with [`Error::Conflict`] of kind
    /// [`ConflictKind::AuditChainBroken`](crate::error::ConflictKind::AuditChainBroken)
    /// naming the first bad record.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::sync::Arc;
    /// use wgm_core::manager::Manager;
    /// use wgm_core::seal::{MasterKey, Sealer};
    /// use wgm_core::store::MemoryStore;
    /// let (m, local) = Manager::builder(Arc::new(MemoryStore::new()), Sealer::new(MasterKey::generate()))
    ///     .build_with_local_admin();
    /// let admin = local.principal("root");
    /// let v = m.verify_audit_chain(&admin, None).await.unwrap();
    /// assert_eq!((v.records, v.head.to_string().len()), (0, 66));
    /// // Later: the head printed then must still be in the chain.
    /// assert!(m.verify_audit_chain(&admin, Some(&v.head)).await.is_ok());
    /// # });
    /// ```
    pub async fn verify_audit_chain(
        &self,
        p: &Principal,
        expect: Option<&AuditHead>,
    ) -> Result<AuditVerification> {
        self.authorize(p, Resource::Audit, Action::Read, Target::none())
            .await?;
        let key = self.existing_audit_key().await?;
        let mut v = ChainVerifier::new(
            key.as_deref().map(super::OpenedAuditKey::parts),
            expect.cloned(),
        );
        // Walk to the end of the log, then compare with the stored head read after it:
        // records past the head (inserted behind the store's back) and a head past the
        // records (deleted from the end) both fail. A head that moved on meanwhile
        // (a concurrent append) sends the walk on.
        let mut after = 0u64;
        let mut at_end = false;
        loop {
            let batch = self
                .store
                .query_audit(&AuditQuery {
                    after_seq: Some(after),
                    limit: Some(10_000),
                    ..AuditQuery::default()
                })
                .await?;
            if let Some(last) = batch.last() {
                for r in &batch {
                    v.push(r)?;
                }
                after = last.seq;
                at_end = false;
                continue;
            }
            let stored = self.store.audit_head().await?;
            if stored.seq > after && !at_end {
                at_end = true;
                continue;
            }
            return v.finish(&stored);
        }
    }
}

/// Replace the key material of `restored` (a past state) with what is current: the
/// server's key pair, each existing peer's key pair and preshared key, and for a peer
/// removed since, the keys it had when it was removed (`latest`). Names what was kept
/// in `kept` (only keys that differ from the past state's).
fn keep_current_keys(
    cur: &ServerState,
    latest: &HashMap<PeerId, Peer>,
    restored: &mut ServerState,
    kept: &mut Vec<String>,
) {
    if restored.server.public_key != cur.server.public_key
        || restored.server.private_key != cur.server.private_key
    {
        kept.push("server key".to_owned());
    }
    restored.server.private_key = cur.server.private_key.clone();
    restored.server.public_key = cur.server.public_key;
    for (id, tp) in &mut restored.peers {
        let Some(now) = cur.peers.get(id).or_else(|| latest.get(id)) else {
            continue;
        };
        if tp.public_key != now.public_key || tp.private_key != now.private_key {
            kept.push(format!("key of peer {}", tp.name));
        }
        if tp.preshared_key != now.preshared_key {
            kept.push(format!("preshared key of peer {}", tp.name));
        }
        tp.public_key = now.public_key;
        tp.private_key.clone_from(&now.private_key);
        tp.preshared_key.clone_from(&now.preshared_key);
    }
}

/// Check what a rollback writes as if it were new input: the state after `changes`
/// keeps every rule a new peer or `peer set` is held to.
fn revalidate(cur: &ServerState, changes: &[Change], now: time::OffsetDateTime) -> Result<()> {
    let mut after = cur.clone();
    for ch in changes {
        after.apply_change(ch)?;
    }
    let s = &after.server;
    let everyone = |_: &Peer| true;
    for ch in changes {
        let (Change::PeerAdded { peer: p } | Change::PeerUpdated { after: p, .. }) = ch else {
            continue;
        };
        let field = |f: &str| format!("rollback.peer {}.{f}", p.name);
        if p.public_key == s.public_key {
            return Err(Error::invalid(
                field("public_key"),
                "is the server's own key",
            ));
        }
        if let Some(a) = p.address_v6 {
            if a == s.address_v6 || !s.ipv6_pool.contains(&a) {
                return Err(Error::invalid(
                    field("address_v6"),
                    format!("{a} is the server's own address or outside the IPv6 pool"),
                ));
            }
        }
        if let Some(a) = p.address_v4 {
            if Some(a) == s.address_v4 || !s.ipv4_pool.is_some_and(|pool| pool.contains(&a)) {
                return Err(Error::invalid(
                    field("address_v4"),
                    format!("{a} is the server's own address or outside the IPv4 pool"),
                ));
            }
        }
        super::peers::check_extra_allowed_ips(&after, Some(p.id), &p.extra_allowed_ips, &everyone)
            .map_err(|e| e.in_field(&format!("rollback.peer {}", p.name)))?;
    }
    crate::store::check_server_uniqueness(&after)?;
    super::servers::check_no_overlaps(&after)?;
    Manager::build_ipam(&after, now)?;
    Ok(())
}

/// Refuse a rollback that would move an address, prefix, key or name from a peer that
/// holds it now to another peer. Linear in the number of peers (indexed by value).
fn check_no_reassignment(cur: &ServerState, target: &ServerState) -> Result<()> {
    let mut addrs: HashMap<IpAddr, &Peer> = HashMap::with_capacity(cur.peers.len() * 2);
    let mut keys: HashMap<PublicKey, &Peer> = HashMap::with_capacity(cur.peers.len());
    let mut prefixes: HashMap<Ipv6Net, &Peer> = HashMap::new();
    let mut names: HashMap<String, &Peer> = HashMap::with_capacity(cur.peers.len());
    for p in cur.peers.values() {
        for a in p
            .address_v6
            .map(IpAddr::V6)
            .into_iter()
            .chain(p.address_v4.map(IpAddr::V4))
        {
            addrs.insert(a, p);
        }
        keys.insert(p.public_key, p);
        if let Some(x) = p.delegated_prefix {
            prefixes.insert(x, p);
        }
        names.insert(p.name.key(), p);
    }
    for tp in target.peers.values() {
        for a in tp
            .address_v6
            .map(IpAddr::V6)
            .into_iter()
            .chain(tp.address_v4.map(IpAddr::V4))
        {
            if let Some(h) = addrs.get(&a).filter(|h| h.id != tp.id) {
                return Err(Error::conflict(format!(
                    "address {a} of peer {} has been reassigned to peer {} since",
                    tp.name, h.name
                )));
            }
        }
        if let Some(h) = keys.get(&tp.public_key).filter(|h| h.id != tp.id) {
            return Err(Error::conflict(format!(
                "public key {} of peer {} is now used by peer {}",
                tp.public_key, tp.name, h.name
            )));
        }
        if let Some(x) = tp.delegated_prefix {
            if let Some(h) = prefixes.get(&x).filter(|h| h.id != tp.id) {
                return Err(Error::conflict(format!(
                    "prefix {x} of peer {} is now delegated to peer {}",
                    tp.name, h.name
                )));
            }
        }
        if let Some(h) = names
            .get(&tp.name.key())
            .filter(|h| h.id != tp.id && target.peers.contains_key(&h.id))
        {
            return Err(Error::conflict(format!(
                "name {} is taken by peer {}",
                tp.name, h.id
            )));
        }
    }
    if target.server.public_key != cur.server.public_key
        && keys.contains_key(&target.server.public_key)
    {
        return Err(Error::conflict(
            "the server's old public key is now a peer's key",
        ));
    }
    Ok(())
}
