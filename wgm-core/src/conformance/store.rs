//! The conformance suite of [`Store`] implementations.
//!
//! Every store runs [`run_all`] in its own tests (see `wgm-store-sql`). Each check uses
//! fresh random names, so one store instance can run all of them, in any order, even
//! when it already holds data. A check returns `Err` with a description of the first
//! broken expectation rather than panicking, so the calling test prints it.
//!
//! ```
//! # futures::executor::block_on(async {
//! use std::sync::Arc;
//! use wgm_core::store::MemoryStore;
//! wgm_core::conformance::store::run_all(Arc::new(MemoryStore::new())).await.unwrap();
//! # });
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use futures::future::join_all;
use time::OffsetDateTime;

use crate::integrity::{AuditKey, ChainVerifier, LegacyBound};
use crate::ipam::Strategy;
use crate::keys::PrivateKey;
use crate::model::{
    Actor, ApiTokenRecord, AuditEntry, AuditOutcome, AuditQuery, Change, ClientTemplate, Commit,
    IdentityChange, Page, Peer, PeerId, PeerStats, RevisionNo, RoleAssignment, Server, ServerId,
    TokenId, User, UserId,
};
use crate::names::{Description, InterfaceName, PeerName, RoleName, ServerName, UserName};
use crate::net::{Keepalive, ListenPort, Mtu};
use crate::rbac::{Action, Permission, Resource, Role, Scope};
use crate::seal::{MasterKey, Sealer, SecretKind};
use crate::store::Store;
use crate::{Error, Result};

/// A failed expectation.
pub type Failure = String;

mod semantics;

pub use semantics::{
    applied_per_host, audit_key_and_head, audit_log, commit_all_batches,
    create_and_load_round_trip, delete_and_recreate, failed_commit_returns_the_address,
    keyed_revisions_and_audit, listing_order_and_pages, peer_change_errors, peer_statistics,
    peer_uniqueness, revision_cas, revision_history, roles_and_tokens,
    rollback_after_reassignment_conflicts, same_base_exactly_one_wins, server_rules,
    swaps_within_one_commit, throttle_cas, throttle_concurrent_failures, throttle_expiry,
    throttle_success_clears_account_only, users_versions_and_uniqueness,
};

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// The audit key the suite commits with: fixed, so that [`run_all`] can run more than
/// once on one store and every record it appends chains under the same key.
///
/// ```
/// assert_eq!(wgm_core::conformance::store::audit_key().id(), wgm_core::conformance::store::audit_key().id());
/// ```
pub fn audit_key() -> &'static AuditKey {
    static KEY: std::sync::OnceLock<AuditKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| AuditKey::from_bytes(*b"wgm conformance suite audit key!"))
}

pub(crate) fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

pub(crate) fn t0() -> OffsetDateTime {
    // Whole seconds, so stores that keep second precision compare equal.
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn actor() -> Actor {
    Actor {
        user_id: None,
        label: "local:conformance".into(),
    }
}

fn audit(action: &str, object: &str) -> AuditEntry {
    AuditEntry {
        at: t0(),
        actor: actor(),
        action: action.into(),
        object: object.into(),
        server_id: None,
        revision: None,
        outcome: AuditOutcome::Success,
        details: serde_json::json!({ "k": "v" }),
    }
}

/// A server fixture with a random name and a sealed key, pools `fd00:<n>::/64` and
/// `10.<n>.0.0/24`-like.
pub fn fixture_server(name: &str) -> std::result::Result<Server, Failure> {
    let sealer = Sealer::new(MasterKey::generate());
    let id = ServerId::new_random();
    let key = PrivateKey::generate();
    let sealed = sealer
        .seal_private_key(&key, SecretKind::ServerPrivateKey, &id.to_string())
        .map_err(|e| e.to_string())?;
    let b = id.0.as_bytes();
    let v6: Ipv6Addr = Ipv6Addr::new(
        0xfd00,
        u16::from(b[0]),
        u16::from(b[1]),
        u16::from(b[2]),
        0,
        0,
        0,
        0,
    );
    let v4 = Ipv4Addr::new(10, b[0], b[1], 0);
    let pool6 = ipnet::Ipv6Net::new(v6, 64).map_err(|e| e.to_string())?;
    let pool4 = ipnet::Ipv4Net::new(v4, 24).map_err(|e| e.to_string())?;
    Ok(Server {
        id,
        name: ServerName::new(name).map_err(|e| e.to_string())?,
        interface: InterfaceName::new(format!("wg{}", &suffix()[..6]))
            .map_err(|e| e.to_string())?,
        listen_port: ListenPort::new(51820).map_err(|e| e.to_string())?,
        private_key: sealed,
        public_key: key.public_key(),
        ipv6_pool: pool6,
        ipv4_pool: Some(pool4),
        address_v6: Ipv6Addr::from(u128::from(v6) + 1),
        address_v4: Some(Ipv4Addr::from(u32::from(v4) + 1)),
        delegation: None,
        strategy: Strategy::Sequential,
        quarantine_secs: 60,
        reserved: Vec::new(),
        quarantine: Vec::new(),
        dns: Vec::new(),
        mtu: Mtu::default(),
        fwmark: None,
        endpoint: None,
        client_template: ClientTemplate::default(),
        config_path: None,
        active: true,
        host: None,
        policy: crate::policy::ServerPolicy::default(),
        created_at: t0(),
        updated_at: t0(),
    })
}

/// A peer fixture on `server` with host index `n` in both pools.
pub fn fixture_peer(server: &Server, name: &str, n: u32) -> std::result::Result<Peer, Failure> {
    let v6 = Ipv6Addr::from(u128::from(server.ipv6_pool.network()) + u128::from(n));
    let v4 = server
        .ipv4_pool
        .map(|p| Ipv4Addr::from(u32::from(p.network()) + n));
    Ok(Peer {
        id: PeerId::new_random(),
        server_id: server.id,
        name: PeerName::new(name).map_err(|e| e.to_string())?,
        description: None,
        owner: None,
        public_key: PrivateKey::generate().public_key(),
        private_key: None,
        preshared_key: None,
        address_v6: Some(v6),
        address_v4: v4,
        delegated_prefix: None,
        extra_allowed_ips: Vec::new(),
        client_allowed_ips: None,
        endpoint: None,
        keepalive: Keepalive::default(),
        enabled: true,
        disabled_by: None,
        policy: crate::policy::PeerPolicy::default(),
        expires_at: None,
        config_path: None,
        stats: PeerStats::default(),
        created_at: t0(),
        updated_at: t0(),
    })
}

pub(crate) fn commit(server: ServerId, expected: RevisionNo, changes: Vec<Change>) -> Commit {
    Commit {
        server_id: server,
        expected,
        changes,
        author: actor(),
        at: t0(),
        summary: "conformance".into(),
        audit: audit("conformance.commit", &format!("server/{server}")),
    }
}

fn err<T: std::fmt::Debug>(what: &str, r: &Result<T>) -> Failure {
    format!("{what}: got {r:?}")
}

/// Create a server and return it with its id.
pub(crate) async fn create(
    store: &dyn Store,
    prefix: &str,
) -> std::result::Result<Server, Failure> {
    let s = fixture_server(&format!("{prefix}-{}", suffix()))?;
    let r = store
        .commit(
            commit(
                s.id,
                RevisionNo::NONE,
                vec![Change::ServerCreated {
                    server: Box::new(s.clone()),
                }],
            ),
            audit_key(),
        )
        .await;
    ensure!(
        matches!(&r, Ok(rec) if rec.record.revision == RevisionNo(1)),
        "{}",
        err("create server", &r)
    );
    Ok(s)
}

/// Servers: create, load, find (case-insensitive), head, CAS, revisions, delete.
pub async fn servers_and_cas(store: Arc<dyn Store>) -> std::result::Result<(), Failure> {
    let s = create(&*store, "cas").await?;
    let loaded = store.load_server(s.id).await.map_err(|e| e.to_string())?;
    ensure!(
        loaded.as_ref().map(|x| &x.server) == Some(&s),
        "load_server returned {loaded:?}"
    );
    ensure!(
        loaded.as_ref().map(|x| x.revision) == Some(RevisionNo(1)),
        "new server is not at revision 1"
    );
    let upper = ServerName::new(s.name.as_str().to_uppercase()).map_err(|e| e.to_string())?;
    let found = store.find_server(&upper).await;
    ensure!(
        matches!(found, Ok(Some(id)) if id == s.id),
        "find_server is not case-insensitive: {found:?}"
    );
    ensure!(
        matches!(store.head(s.id).await, Ok(Some(RevisionNo(1)))),
        "head is not 1"
    );
    ensure!(
        matches!(store.head(ServerId::new_random()).await, Ok(None)),
        "head of unknown server is not None"
    );
    ensure!(
        matches!(store.load_server(ServerId::new_random()).await, Ok(None)),
        "load of unknown server is not None"
    );

    // Same name again (case-insensitively) is refused.
    let mut dup = fixture_server(&s.name.as_str().to_uppercase())?;
    dup.name = upper.clone();
    let r = store
        .commit(
            commit(
                dup.id,
                RevisionNo::NONE,
                vec![Change::ServerCreated {
                    server: Box::new(dup),
                }],
            ),
            audit_key(),
        )
        .await;
    ensure!(
        matches!(r, Err(Error::AlreadyExists { .. })),
        "{}",
        err("duplicate server name", &r)
    );

    // Add a peer at the right base: revision 2.
    let p1 = fixture_peer(&s, &format!("p-{}", suffix()), 2)?;
    let r = store
        .commit(
            commit(
                s.id,
                RevisionNo(1),
                vec![Change::PeerAdded {
                    peer: Box::new(p1.clone()),
                }],
            ),
            audit_key(),
        )
        .await;
    ensure!(
        matches!(&r, Ok(rec) if rec.record.revision == RevisionNo(2)),
        "{}",
        err("add peer", &r)
    );
    // A stale base is a conflict and writes nothing.
    let p2 = fixture_peer(&s, &format!("p-{}", suffix()), 3)?;
    let r = store
        .commit(
            commit(
                s.id,
                RevisionNo(1),
                vec![Change::PeerAdded {
                    peer: Box::new(p2.clone()),
                }],
            ),
            audit_key(),
        )
        .await;
    ensure!(
        matches!(r, Err(Error::Conflict { .. })),
        "{}",
        err("stale base", &r)
    );
    let st = store
        .load_server(s.id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("server vanished")?;
    ensure!(
        st.peers.len() == 1 && st.revision == RevisionNo(2),
        "stale commit left traces: {} peers, rev {}",
        st.peers.len(),
        st.revision
    );
    ensure!(
        st.peers.get(&p1.id) == Some(&p1),
        "peer did not round-trip: {:?}",
        st.peers.get(&p1.id)
    );

    // Update and remove.
    let mut p1b = p1.clone();
    p1b.enabled = false;
    p1b.extra_allowed_ips = vec!["192.168.77.0/24"
        .parse()
        .map_err(|e: ipnet::AddrParseError| e.to_string())?];
    let r = store
        .commit(
            commit(
                s.id,
                RevisionNo(2),
                vec![Change::PeerUpdated {
                    before: Box::new(p1.clone()),
                    after: Box::new(p1b.clone()),
                }],
            ),
            audit_key(),
        )
        .await;
    ensure!(
        matches!(&r, Ok(rec) if rec.record.revision == RevisionNo(3)),
        "{}",
        err("update peer", &r)
    );
    let st = store
        .load_server(s.id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("server vanished")?;
    ensure!(
        st.peers.get(&p1.id) == Some(&p1b),
        "updated peer did not round-trip"
    );
    let mut s2 = s.clone();
    s2.mtu = Mtu::new(1380).map_err(|e| e.to_string())?;
    s2.dns = vec!["2001:db8::53".parse().map_err(|e: Error| e.to_string())?];
    let r = store
        .commit(
            commit(
                s.id,
                RevisionNo(3),
                vec![
                    Change::ServerUpdated {
                        before: Box::new(s.clone()),
                        after: Box::new(s2.clone()),
                    },
                    Change::PeerRemoved {
                        peer: Box::new(p1b.clone()),
                    },
                ],
            ),
            audit_key(),
        )
        .await;
    ensure!(
        matches!(&r, Ok(rec) if rec.record.revision == RevisionNo(4)),
        "{}",
        err("update server + remove peer", &r)
    );
    let st = store
        .load_server(s.id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("server vanished")?;
    ensure!(
        st.peers.is_empty() && st.server == s2,
        "server update/peer removal did not land"
    );

    let revs = store
        .revisions(s.id, RevisionNo::NONE, 100)
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        revs.iter().map(|r| r.revision.0).collect::<Vec<_>>() == vec![1, 2, 3, 4],
        "revisions: {:?}",
        revs.iter().map(|r| r.revision).collect::<Vec<_>>()
    );
    ensure!(
        revs[3].changes.len() == 2 && revs[3].changes[1].kind() == "peer_removed",
        "revision 4 changes did not round-trip"
    );
    let tail = store
        .revisions(s.id, RevisionNo(2), 1)
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        tail.len() == 1 && tail[0].revision == RevisionNo(3),
        "revisions(after, limit) wrong"
    );

    // Delete: gone, history stays, audit has the revision numbers.
    let r = store
        .commit(
            commit(
                s.id,
                RevisionNo(4),
                vec![Change::ServerDeleted {
                    server: Box::new(s2),
                }],
            ),
            audit_key(),
        )
        .await;
    ensure!(
        matches!(&r, Ok(rec) if rec.record.revision == RevisionNo(5)),
        "{}",
        err("delete server", &r)
    );
    ensure!(
        matches!(store.load_server(s.id).await, Ok(None)),
        "deleted server still loads"
    );
    ensure!(
        matches!(store.head(s.id).await, Ok(None)),
        "deleted server still has a head"
    );
    let revs = store
        .revisions(s.id, RevisionNo::NONE, 100)
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        revs.len() == 5,
        "history of a deleted server lost: {}",
        revs.len()
    );
    let audits = store
        .query_audit(&AuditQuery {
            server_id: Some(s.id),
            ..AuditQuery::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        audits
            .iter()
            .filter_map(|a| a.entry.revision.map(|r| r.0))
            .collect::<Vec<_>>()
            == vec![1, 2, 3, 4, 5],
        "audit records do not carry the revisions: {:?}",
        audits.iter().map(|a| a.entry.revision).collect::<Vec<_>>()
    );
    Ok(())
}

/// Uniqueness within a server and atomicity of a failing commit.
pub async fn uniqueness_and_atomicity(store: Arc<dyn Store>) -> std::result::Result<(), Failure> {
    let s = create(&*store, "uniq").await?;
    let base = fixture_peer(&s, &format!("Alice-{}", suffix()), 2)?;
    let r = store
        .commit(
            commit(
                s.id,
                RevisionNo(1),
                vec![Change::PeerAdded {
                    peer: Box::new(base.clone()),
                }],
            ),
            audit_key(),
        )
        .await;
    ensure!(r.is_ok(), "{}", err("add base peer", &r));

    let mut same_name = fixture_peer(&s, &base.name.as_str().to_lowercase(), 3)?;
    same_name.name = PeerName::new(base.name.as_str().to_uppercase()).map_err(|e| e.to_string())?;
    let mut same_key = fixture_peer(&s, &format!("k-{}", suffix()), 4)?;
    same_key.public_key = base.public_key;
    let same_v6 = {
        let mut p = fixture_peer(&s, &format!("a-{}", suffix()), 5)?;
        p.address_v6 = base.address_v6;
        p
    };
    let same_v4 = {
        let mut p = fixture_peer(&s, &format!("b-{}", suffix()), 6)?;
        p.address_v4 = base.address_v4;
        p
    };
    let server_key = {
        let mut p = fixture_peer(&s, &format!("c-{}", suffix()), 7)?;
        p.public_key = s.public_key;
        p
    };
    for (what, p) in [
        ("name", same_name),
        ("public key", same_key),
        ("IPv6 address", same_v6),
        ("IPv4 address", same_v4),
        ("server key", server_key),
    ] {
        let r = store
            .commit(
                commit(
                    s.id,
                    RevisionNo(2),
                    vec![Change::PeerAdded { peer: Box::new(p) }],
                ),
                audit_key(),
            )
            .await;
        ensure!(
            matches!(r, Err(Error::AlreadyExists { .. } | Error::Conflict { .. })),
            "{}",
            err(&format!("duplicate {what}"), &r)
        );
    }
    // A commit whose second change fails writes nothing of the first.
    let ok = fixture_peer(&s, &format!("ok-{}", suffix()), 8)?;
    let mut bad = fixture_peer(&s, &format!("bad-{}", suffix()), 9)?;
    bad.address_v6 = ok.address_v6;
    let r = store
        .commit(
            commit(
                s.id,
                RevisionNo(2),
                vec![
                    Change::PeerAdded {
                        peer: Box::new(ok.clone()),
                    },
                    Change::PeerAdded {
                        peer: Box::new(bad),
                    },
                ],
            ),
            audit_key(),
        )
        .await;
    ensure!(r.is_err(), "conflicting batch was accepted");
    let st = store
        .load_server(s.id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("server vanished")?;
    ensure!(
        st.revision == RevisionNo(2) && st.peers.len() == 1,
        "failed commit left traces (rev {}, {} peers)",
        st.revision,
        st.peers.len()
    );
    // Removing an unknown peer fails.
    let ghost = fixture_peer(&s, &format!("ghost-{}", suffix()), 10)?;
    let r = store
        .commit(
            commit(
                s.id,
                RevisionNo(2),
                vec![Change::PeerRemoved {
                    peer: Box::new(ghost),
                }],
            ),
            audit_key(),
        )
        .await;
    ensure!(
        matches!(r, Err(Error::NotFound { .. })),
        "{}",
        err("remove unknown peer", &r)
    );
    // Changes to an unknown server fail.
    let other = fixture_server(&format!("ghost-{}", suffix()))?;
    let r = store
        .commit(
            commit(
                other.id,
                RevisionNo::NONE,
                vec![Change::PeerAdded { peer: Box::new(ok) }],
            ),
            audit_key(),
        )
        .await;
    ensure!(r.is_err(), "peer added to a server that does not exist");
    Ok(())
}

/// F16: many commits from the same base revision: exactly one wins.
pub async fn concurrent_commits_one_wins(
    store: Arc<dyn Store>,
) -> std::result::Result<(), Failure> {
    let s = create(&*store, "race").await?;
    let mut futs = Vec::new();
    for i in 0..16u32 {
        let p = fixture_peer(&s, &format!("r{i}-{}", suffix()), 10 + i)?;
        let st = store.clone();
        let c = commit(
            s.id,
            RevisionNo(1),
            vec![Change::PeerAdded { peer: Box::new(p) }],
        );
        futs.push(async move { st.commit(c, audit_key()).await });
    }
    let results = join_all(futs).await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    ensure!(
        wins == 1,
        "{wins} commits from the same base won: {:?}",
        results
            .iter()
            .filter(|r| r.is_err())
            .take(2)
            .collect::<Vec<_>>()
    );
    ensure!(
        results
            .iter()
            .filter(|r| r.is_err())
            .all(|r| matches!(r, Err(Error::Conflict { .. }))),
        "losers did not get Conflict: {:?}",
        results
            .iter()
            .find(|r| !matches!(r, Ok(_) | Err(Error::Conflict { .. })))
    );
    let st = store
        .load_server(s.id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("server vanished")?;
    ensure!(
        st.revision == RevisionNo(2) && st.peers.len() == 1,
        "state after race: rev {}, {} peers",
        st.revision,
        st.peers.len()
    );
    Ok(())
}

/// Listing and pagination of servers, ordered by name.
pub async fn pagination(store: Arc<dyn Store>) -> std::result::Result<(), Failure> {
    let tag = suffix();
    for i in 0..5 {
        let s = fixture_server(&format!("zz-page-{tag}-{i}"))?;
        let r = store
            .commit(
                commit(
                    s.id,
                    RevisionNo::NONE,
                    vec![Change::ServerCreated {
                        server: Box::new(s),
                    }],
                ),
                audit_key(),
            )
            .await;
        ensure!(r.is_ok(), "{}", err("create", &r));
    }
    let all = store
        .list_servers(Page::ALL)
        .await
        .map_err(|e| e.to_string())?;
    let mine: Vec<String> = all
        .iter()
        .map(|s| s.name.to_string())
        .filter(|n| n.contains(&tag))
        .collect();
    ensure!(mine.len() == 5, "list_servers shows {} of 5", mine.len());
    let mut sorted = mine.clone();
    sorted.sort();
    ensure!(
        mine == sorted,
        "list_servers is not ordered by name: {mine:?}"
    );
    let names: Vec<String> = all.iter().map(|s| s.name.key()).collect();
    let mut ns = names.clone();
    ns.sort();
    ensure!(names == ns, "list_servers is not ordered by name key");
    let total = all.len() as u64;
    let mut paged = Vec::new();
    let mut off = 0;
    while off < total {
        let page = store
            .list_servers(Page {
                offset: off,
                limit: 2,
            })
            .await
            .map_err(|e| e.to_string())?;
        ensure!(page.len() <= 2, "page larger than its limit");
        if page.is_empty() {
            break;
        }
        off += page.len() as u64;
        paged.extend(page.into_iter().map(|s| s.id));
    }
    ensure!(
        paged == all.iter().map(|s| s.id).collect::<Vec<_>>(),
        "paging does not reproduce the full listing"
    );
    Ok(())
}

fn user(name: &str, email: Option<&str>) -> std::result::Result<User, Failure> {
    Ok(User {
        id: UserId::new_random(),
        name: UserName::new(name).map_err(|e| e.to_string())?,
        email: email.map(str::to_owned),
        password_hash: Some(
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
        ),
        active: true,
        superuser: false,
        roles: vec![RoleAssignment {
            role: RoleName::new("operator").map_err(|e| e.to_string())?,
            scope: Scope::Global,
        }],
        totp: None,
        token_version: 0,
        peer_quota: Some(5),
        last_login: None,
        version: 1,
        created_at: t0(),
        updated_at: t0(),
    })
}

/// Users, roles and tokens: uniqueness, versioned updates, atomicity, cascade.
pub async fn identities(store: Arc<dyn Store>) -> std::result::Result<(), Failure> {
    let tag = suffix();
    let alice = user(
        &format!("alice{tag}"),
        Some(&format!("alice{tag}@example.org")),
    )?;
    let r = store
        .commit_identity(
            vec![IdentityChange::UserCreated {
                user: Box::new(alice.clone()),
            }],
            audit("user.create", "user"),
            audit_key(),
        )
        .await;
    ensure!(r.is_ok(), "{}", err("create user", &r));
    let got = store.get_user(alice.id).await.map_err(|e| e.to_string())?;
    ensure!(
        got.as_ref() == Some(&alice),
        "user did not round-trip: {got:?}"
    );
    let upper = UserName::new(alice.name.as_str().to_uppercase()).map_err(|e| e.to_string())?;
    let got = store.find_user(&upper).await.map_err(|e| e.to_string())?;
    ensure!(
        got.map(|u| u.id) == Some(alice.id),
        "find_user is not case-insensitive"
    );

    let mut dup = user(&format!("ALICE{tag}"), None)?;
    dup.name = upper.clone();
    let r = store
        .commit_identity(
            vec![IdentityChange::UserCreated {
                user: Box::new(dup),
            }],
            audit("user.create", "user"),
            audit_key(),
        )
        .await;
    ensure!(
        matches!(r, Err(Error::AlreadyExists { .. })),
        "{}",
        err("duplicate user name", &r)
    );
    let dup_mail = user(&format!("bob{tag}"), alice.email.as_deref())?;
    let r = store
        .commit_identity(
            vec![IdentityChange::UserCreated {
                user: Box::new(dup_mail),
            }],
            audit("user.create", "user"),
            audit_key(),
        )
        .await;
    ensure!(
        matches!(r, Err(Error::AlreadyExists { .. })),
        "{}",
        err("duplicate e-mail", &r)
    );

    // Versioned update.
    let mut a2 = alice.clone();
    a2.version = 2;
    a2.token_version = 1;
    a2.active = false;
    let r = store
        .commit_identity(
            vec![IdentityChange::UserUpdated {
                user: Box::new(a2.clone()),
            }],
            audit("user.update", "user"),
            audit_key(),
        )
        .await;
    ensure!(r.is_ok(), "{}", err("update user", &r));
    let stale = alice.clone();
    let mut stale2 = stale;
    stale2.version = 2;
    let r = store
        .commit_identity(
            vec![IdentityChange::UserUpdated {
                user: Box::new(stale2),
            }],
            audit("user.update", "user"),
            audit_key(),
        )
        .await;
    ensure!(
        matches!(r, Err(Error::Conflict { .. })),
        "{}",
        err("stale user update", &r)
    );
    ensure!(
        store
            .get_user(alice.id)
            .await
            .map_err(|e| e.to_string())?
            .as_ref()
            == Some(&a2),
        "update did not land"
    );

    // Tokens.
    let tok = ApiTokenRecord {
        id: TokenId::generate(),
        user_id: alice.id,
        name: "ci".into(),
        secret_hash: "ab".repeat(32),
        scopes: None,
        created_at: t0(),
        expires_at: Some(t0() + time::Duration::days(1)),
        revoked: false,
    };
    let r = store
        .commit_identity(
            vec![IdentityChange::TokenCreated { token: tok.clone() }],
            audit("token.create", "token"),
            audit_key(),
        )
        .await;
    ensure!(r.is_ok(), "{}", err("create token", &r));
    ensure!(
        store
            .get_token(tok.id)
            .await
            .map_err(|e| e.to_string())?
            .as_ref()
            == Some(&tok),
        "token did not round-trip"
    );
    let orphan = ApiTokenRecord {
        id: TokenId::generate(),
        user_id: UserId::new_random(),
        ..tok.clone()
    };
    let r = store
        .commit_identity(
            vec![IdentityChange::TokenCreated { token: orphan }],
            audit("token.create", "token"),
            audit_key(),
        )
        .await;
    ensure!(r.is_err(), "token for an unknown user accepted");
    let r = store
        .commit_identity(
            vec![IdentityChange::TokenRevoked { id: tok.id }],
            audit("token.revoke", "token"),
            audit_key(),
        )
        .await;
    ensure!(r.is_ok(), "{}", err("revoke token", &r));
    ensure!(
        store
            .get_token(tok.id)
            .await
            .map_err(|e| e.to_string())?
            .is_some_and(|t| t.revoked),
        "revocation did not land"
    );
    let listed = store
        .list_tokens(Some(alice.id))
        .await
        .map_err(|e| e.to_string())?;
    ensure!(listed.len() == 1, "list_tokens(user) = {}", listed.len());

    // Roles.
    let role = Role::custom(
        RoleName::new(format!("netops{tag}")).map_err(|e| e.to_string())?,
        Description::new("network operators").map_err(|e| e.to_string())?,
        vec![
            Permission::new(Resource::Server, Action::Read),
            Permission::new(Resource::Peer, Action::Update),
        ],
    )
    .map_err(|e| e.to_string())?;
    let r = store
        .commit_identity(
            vec![IdentityChange::RolePut { role: role.clone() }],
            audit("role.put", "role"),
            audit_key(),
        )
        .await;
    ensure!(r.is_ok(), "{}", err("put role", &r));
    ensure!(
        store
            .list_roles()
            .await
            .map_err(|e| e.to_string())?
            .contains(&role),
        "role not listed"
    );

    // Atomicity: a batch with a failing change writes nothing.
    let carol = user(&format!("carol{tag}"), None)?;
    let r = store
        .commit_identity(
            vec![
                IdentityChange::UserCreated {
                    user: Box::new(carol.clone()),
                },
                IdentityChange::UserDeleted {
                    id: UserId::new_random(),
                },
            ],
            audit("user.batch", "user"),
            audit_key(),
        )
        .await;
    ensure!(r.is_err(), "batch with a failing change accepted");
    ensure!(
        store
            .get_user(carol.id)
            .await
            .map_err(|e| e.to_string())?
            .is_none(),
        "failed batch left a user behind"
    );

    // Delete cascades to tokens; role delete.
    let r = store
        .commit_identity(
            vec![
                IdentityChange::UserDeleted { id: alice.id },
                IdentityChange::RoleDeleted {
                    name: role.name.clone(),
                },
            ],
            audit("user.delete", "user"),
            audit_key(),
        )
        .await;
    ensure!(r.is_ok(), "{}", err("delete user + role", &r));
    ensure!(
        store
            .get_user(alice.id)
            .await
            .map_err(|e| e.to_string())?
            .is_none(),
        "deleted user still there"
    );
    ensure!(
        store
            .get_token(tok.id)
            .await
            .map_err(|e| e.to_string())?
            .is_none(),
        "tokens of a deleted user survive"
    );
    ensure!(
        !store
            .list_roles()
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .any(|r| r.name == role.name),
        "deleted role listed"
    );
    // Paging users.
    let users = store
        .list_users(Page::ALL)
        .await
        .map_err(|e| e.to_string())?;
    let keys: Vec<String> = users.iter().map(|u| u.name.key()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    ensure!(keys == sorted, "list_users not ordered by name");
    Ok(())
}

/// The audit log: numbering without gaps, a valid hash chain, queries.
pub async fn audit_chain(store: Arc<dyn Store>) -> std::result::Result<(), Failure> {
    let tag = suffix();
    let before = store
        .query_audit(&AuditQuery::default())
        .await
        .map_err(|e| e.to_string())?;
    let last_seq = before.last().map_or(0, |r| r.seq);
    let mut mine = Vec::new();
    for i in 0..5 {
        let mut e = audit("secret.export", &format!("audit-{tag}/{i}"));
        e.actor.label = format!("user:{tag}");
        e.at = t0() + time::Duration::seconds(i);
        let rec = store
            .append_audit(e, audit_key())
            .await
            .map_err(|e| e.to_string())?;
        mine.push(rec);
    }
    ensure!(
        mine.windows(2).all(|w| w[1].seq > w[0].seq),
        "sequence numbers do not grow"
    );
    ensure!(mine[0].seq > last_seq, "sequence restarted");
    let all = store
        .query_audit(&AuditQuery::default())
        .await
        .map_err(|e| e.to_string())?;
    let legacy = LegacyBound::empty();
    let mut v = ChainVerifier::new(Some((audit_key(), &legacy)), None);
    for r in &all {
        v.push(r)
            .map_err(|e| format!("stored chain does not verify: {e}"))?;
    }
    let head = store.audit_head().await.map_err(|e| e.to_string())?;
    v.finish(&head)
        .map_err(|e| format!("the stored head is not the last record: {e}"))?;
    let by_actor = store
        .query_audit(&AuditQuery {
            actor: Some(format!("user:{tag}")),
            ..AuditQuery::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        by_actor == mine,
        "query by actor returned {} records",
        by_actor.len()
    );
    let window = store
        .query_audit(&AuditQuery {
            actor: Some(format!("user:{tag}")),
            since: Some(t0() + time::Duration::seconds(1)),
            until: Some(t0() + time::Duration::seconds(3)),
            ..AuditQuery::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        window.len() == 2,
        "time window query returned {}",
        window.len()
    );
    let page = store
        .query_audit(&AuditQuery {
            after_seq: Some(mine[1].seq),
            limit: Some(2),
            actor: Some(format!("user:{tag}")),
            ..AuditQuery::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        page.iter().map(|r| r.seq).collect::<Vec<_>>() == vec![mine[2].seq, mine[3].seq],
        "after_seq/limit wrong"
    );
    let prefixed = store
        .query_audit(&AuditQuery {
            object_prefix: Some(format!("audit-{tag}/3")),
            ..AuditQuery::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        prefixed.len() == 1,
        "object prefix query returned {}",
        prefixed.len()
    );
    ensure!(
        prefixed[0].entry.details == serde_json::json!({ "k": "v" }),
        "details did not round-trip"
    );
    Ok(())
}

/// Applied revisions and observed peer statistics.
pub async fn applied_and_stats(store: Arc<dyn Store>) -> std::result::Result<(), Failure> {
    let s = create(&*store, "applied").await?;
    ensure!(
        matches!(store.applied(s.id, "host-a").await, Ok(None)),
        "applied before any apply"
    );
    store
        .set_applied(s.id, "host-a", RevisionNo(1))
        .await
        .map_err(|e| e.to_string())?;
    store
        .set_applied(s.id, "host-b", RevisionNo(1))
        .await
        .map_err(|e| e.to_string())?;
    store
        .set_applied(s.id, "host-a", RevisionNo(3))
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        matches!(store.applied(s.id, "host-a").await, Ok(Some(RevisionNo(3)))),
        "applied not updated"
    );
    ensure!(
        matches!(store.applied(s.id, "host-b").await, Ok(Some(RevisionNo(1)))),
        "applied mixed up hosts"
    );
    // The device part of an applied record: every bit of the instance, the time to the
    // nanosecond; a plain `set_applied` forgets it.
    for instance in [Some(u64::MAX), Some(0), None] {
        let st = crate::model::AppliedState {
            revision: RevisionNo(4),
            instance,
            verified_at: t0() + time::Duration::nanoseconds(123_456_789),
        };
        store
            .set_applied_state(s.id, "host-c", &st)
            .await
            .map_err(|e| e.to_string())?;
        let got = store.applied_state(s.id, "host-c").await;
        ensure!(
            matches!(&got, Ok(Some(x)) if *x == st),
            "applied state {st:?}: got {got:?}"
        );
        ensure!(
            matches!(store.applied(s.id, "host-c").await, Ok(Some(RevisionNo(4)))),
            "applied revision of an applied state"
        );
    }
    ensure!(
        matches!(store.applied_state(s.id, "host-a").await, Ok(None)),
        "an applied state where none was recorded"
    );
    store
        .set_applied(s.id, "host-c", RevisionNo(5))
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        matches!(store.applied_state(s.id, "host-c").await, Ok(None)),
        "set_applied kept an applied state of an older revision"
    );
    let p = fixture_peer(&s, &format!("st-{}", suffix()), 2)?;
    store
        .commit(
            commit(
                s.id,
                RevisionNo(1),
                vec![Change::PeerAdded {
                    peer: Box::new(p.clone()),
                }],
            ),
            audit_key(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let stats = PeerStats {
        last_seen: Some(t0()),
        rx_bytes: 1234,
        tx_bytes: 5678,
    };
    store
        .update_peer_stats(s.id, &[(p.id, stats), (PeerId::new_random(), stats)])
        .await
        .map_err(|e| e.to_string())?;
    let st = store
        .load_server(s.id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("server vanished")?;
    ensure!(
        st.peers.get(&p.id).map(|x| x.stats) == Some(stats),
        "stats not stored"
    );
    ensure!(st.revision == RevisionNo(2), "stats created a revision");

    // A large batch at once (what a status of a big server writes): each peer gets its
    // own statistics.
    let many: Vec<Peer> = (0..300u32)
        .map(|i| {
            let mut q = fixture_peer(&s, &format!("sb-{i}-{}", suffix()), 100 + i)?;
            q.address_v4 = None;
            Ok(q)
        })
        .collect::<std::result::Result<_, Failure>>()?;
    let adds = many
        .iter()
        .map(|q| Change::PeerAdded {
            peer: Box::new(q.clone()),
        })
        .collect();
    store
        .commit(commit(s.id, RevisionNo(2), adds), audit_key())
        .await
        .map_err(|e| e.to_string())?;
    let batch: Vec<(PeerId, PeerStats)> = many
        .iter()
        .zip(1u64..)
        .map(|(q, i)| {
            let stats = PeerStats {
                last_seen: None,
                rx_bytes: i,
                tx_bytes: 2 * i,
            };
            (q.id, stats)
        })
        .collect();
    store
        .update_peer_stats(s.id, &batch)
        .await
        .map_err(|e| e.to_string())?;
    let st = store
        .load_server(s.id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("server vanished")?;
    for (id, stats) in &batch {
        ensure!(
            st.peers.get(id).map(|x| x.stats) == Some(*stats),
            "a batch of 300 statistics was not stored peer by peer"
        );
    }
    ensure!(
        st.peers.get(&p.id).map(|x| x.stats) == Some(stats),
        "a batch for other peers changed this one"
    );
    Ok(())
}

/// Leases (one holder per server and host, fencing raised at every new holder, lapse,
/// take-over, release), fenced host reports, and a server's host assignment.
pub async fn leases_and_reports(store: Arc<dyn Store>) -> std::result::Result<(), Failure> {
    use crate::model::{HostReport, LeaseRequest};
    use crate::names::HostName;
    let mut s = fixture_server(&format!("lease-{}", suffix()))?;
    let h1 = HostName::new(format!("h1-{}", suffix())).map_err(|e| e.to_string())?;
    let h0 = HostName::new(format!("h0-{}", suffix())).map_err(|e| e.to_string())?;
    s.host = Some(h1.clone());
    store
        .commit(
            commit(
                s.id,
                RevisionNo::NONE,
                vec![Change::ServerCreated {
                    server: Box::new(s.clone()),
                }],
            ),
            audit_key(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let st = store
        .load_server(s.id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("server vanished")?;
    ensure!(
        st.server.host.as_ref() == Some(&h1),
        "host assignment lost: {:?}",
        st.server.host
    );
    let listed = store
        .list_servers(Page::ALL)
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        listed
            .iter()
            .any(|x| x.id == s.id && x.host.as_ref() == Some(&h1)),
        "the listing lost the host assignment"
    );
    let at = |secs: i64| t0() + time::Duration::seconds(secs);
    let req = |host: &HostName, holder: &str, now: i64, take_over: Option<&str>| LeaseRequest {
        server_id: s.id,
        host: host.clone(),
        holder: holder.to_owned(),
        now: at(now),
        ttl: time::Duration::seconds(15),
        take_over: take_over.map(str::to_owned),
    };
    let a = store
        .acquire_lease(&req(&h1, "agent-a", 0, None))
        .await
        .map_err(|e| e.to_string())?;
    ensure!(a.fencing == 1 && a.expires == at(15), "first grant: {a:?}");
    let r = store.acquire_lease(&req(&h1, "agent-b", 5, None)).await;
    ensure!(
        matches!(r, Err(Error::Conflict { .. })),
        "{}",
        err("a second holder while the lease runs", &r)
    );
    let other = store
        .acquire_lease(&req(&h0, "agent-b", 5, None))
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        other.fencing == 1,
        "another host's lease is its own: {other:?}"
    );
    let renewed = store
        .acquire_lease(&req(&h1, "agent-a", 10, None))
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        renewed.fencing == 1 && renewed.expires == at(25),
        "renewal: {renewed:?}"
    );
    let taken = store
        .acquire_lease(&req(&h1, "agent-b", 11, Some("agent-a")))
        .await
        .map_err(|e| e.to_string())?;
    ensure!(taken.fencing == 2, "take-over raises fencing: {taken:?}");
    let report = |fencing: u64, agent: &str, host: &HostName| HostReport {
        server_id: s.id,
        host: host.clone(),
        agent: agent.to_owned(),
        fencing,
        applied: Some(RevisionNo(1)),
        instance: Some(42),
        converged: true,
        peers: 3,
        error: None,
        heartbeat: at(12),
    };
    let r = store.put_host_report(&report(1, "agent-a", &h1)).await;
    ensure!(
        matches!(r, Err(Error::Conflict { .. })),
        "{}",
        err("a report under a superseded lease", &r)
    );
    store
        .put_host_report(&report(2, "agent-b", &h1))
        .await
        .map_err(|e| e.to_string())?;
    store
        .put_host_report(&report(1, "agent-b", &h0))
        .await
        .map_err(|e| e.to_string())?;
    let reports = store.host_reports(s.id).await.map_err(|e| e.to_string())?;
    ensure!(
        reports == vec![report(1, "agent-b", &h0), report(2, "agent-b", &h1)],
        "reports (by host name): {reports:?}"
    );
    ensure!(
        !store
            .release_lease(&a, at(12))
            .await
            .map_err(|e| e.to_string())?,
        "a superseded lease was released"
    );
    ensure!(
        store
            .release_lease(&taken, at(12))
            .await
            .map_err(|e| e.to_string())?,
        "the holder could not release its lease"
    );
    let next = store
        .acquire_lease(&req(&h1, "agent-c", 13, None))
        .await
        .map_err(|e| e.to_string())?;
    ensure!(next.fencing == 3, "a grant after release: {next:?}");
    let lapsed = store
        .acquire_lease(&req(&h1, "agent-d", 40, None))
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        lapsed.fencing == 4,
        "a grant after the lease lapsed: {lapsed:?}"
    );

    // Contention: of many holders asking at once, exactly one gets the lease.
    let h2 = HostName::new(format!("h2-{}", suffix())).map_err(|e| e.to_string())?;
    let asks = (0..8).map(|i| {
        let st = store.clone();
        let r = req(&h2, &format!("racer-{i}"), 0, None);
        async move { st.acquire_lease(&r).await }
    });
    let results = join_all(asks).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    ensure!(
        won == 1
            && results.iter().all(|r| matches!(r, Ok(l) if l.fencing == 1)
                || matches!(r, Err(Error::Conflict { .. }))),
        "8 holders at once: {won} won: {results:?}"
    );
    Ok(())
}

/// The durable allocator state: absent at first, stored per server, and a newer
/// revision's replaces an older one but never the other way round.
pub async fn allocator_state(store: Arc<dyn Store>) -> std::result::Result<(), Failure> {
    use crate::ipam::HeldRuns;
    let s = create(&*store, "alloc").await?;
    let other = create(&*store, "alloc-other").await?;
    ensure!(
        matches!(store.allocator_state(s.id).await, Ok(None)),
        "an allocator state before any was stored"
    );
    // Indices beyond u64 (a pool wider than a /64) survive.
    let wide = HeldRuns {
        v6: vec![(2, 10_001), (1 << 70, (1 << 70) + 5)],
        v4: vec![(2, 10_001)],
    };
    let narrow = HeldRuns {
        v6: vec![(2, 3)],
        v4: vec![],
    };
    let put = |rev: u64, h: &HeldRuns| {
        let store = store.clone();
        let h = h.clone();
        async move { store.put_allocator_state(s.id, RevisionNo(rev), &h).await }
    };
    put(5, &wide).await.map_err(|e| e.to_string())?;
    let got = store
        .allocator_state(s.id)
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        got == Some((RevisionNo(5), wide.clone())),
        "stored state: {got:?}"
    );
    let now = |store: Arc<dyn Store>| async move {
        store.allocator_state(s.id).await.map_err(|e| e.to_string())
    };
    put(4, &narrow).await.map_err(|e| e.to_string())?;
    let got = now(store.clone()).await?;
    ensure!(
        got == Some((RevisionNo(5), wide.clone())),
        "an older revision replaced the state: {got:?}"
    );
    put(5, &narrow).await.map_err(|e| e.to_string())?;
    let got = now(store.clone()).await?;
    ensure!(
        got == Some((RevisionNo(5), narrow.clone())),
        "the same revision did not replace the state (a repair): {got:?}"
    );
    put(6, &wide).await.map_err(|e| e.to_string())?;
    let got = now(store.clone()).await?;
    ensure!(
        got == Some((RevisionNo(6), wide)),
        "a newer state was refused: {got:?}"
    );
    ensure!(
        matches!(store.allocator_state(other.id).await, Ok(None)),
        "another server's allocator state"
    );
    Ok(())
}

/// A store must never hold a secret in the clear: the sealed server key round-trips as
/// the same ciphertext.
pub async fn sealed_values_round_trip(store: Arc<dyn Store>) -> std::result::Result<(), Failure> {
    let s = create(&*store, "sealed").await?;
    let st = store
        .load_server(s.id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("server vanished")?;
    ensure!(
        st.server.private_key == s.private_key,
        "sealed key changed in the store"
    );
    let _ = IpAddr::V4(Ipv4Addr::LOCALHOST);
    Ok(())
}

/// Calls the macro `$m` with the name of every check of this suite, in the order
/// [`run_all`] runs them. An engine's tests generate one test per check from it, so a
/// check added here reaches every engine (an engine keeps no list of its own to drift).
///
/// ```
/// macro_rules! names {
///     ($($check:ident),* $(,)?) => { vec![$(stringify!($check)),*] };
/// }
/// let all: Vec<&str> = wgm_core::store_checks!(names);
/// assert_eq!(all.first(), Some(&"servers_and_cas"));
/// assert!(all.contains(&"audit_key_and_head"));
/// ```
#[macro_export]
macro_rules! store_checks {
    ($m:ident) => {
        $m! {
            servers_and_cas,
            uniqueness_and_atomicity,
            concurrent_commits_one_wins,
            pagination,
            identities,
            audit_chain,
            applied_and_stats,
            sealed_values_round_trip,
            leases_and_reports,
            allocator_state,
            create_and_load_round_trip,
            revision_cas,
            server_rules,
            peer_uniqueness,
            swaps_within_one_commit,
            commit_all_batches,
            peer_change_errors,
            delete_and_recreate,
            revision_history,
            applied_per_host,
            peer_statistics,
            listing_order_and_pages,
            users_versions_and_uniqueness,
            roles_and_tokens,
            audit_log,
            same_base_exactly_one_wins,
            failed_commit_returns_the_address,
            rollback_after_reassignment_conflicts,
            keyed_revisions_and_audit,
            audit_key_and_head,
            throttle_cas,
            throttle_expiry,
            throttle_concurrent_failures,
            throttle_success_clears_account_only,
        }
    };
}

/// Run every check in order ([`store_checks!`](crate::store_checks)); the first failure
/// is returned with the check's name.
pub async fn run_all(store: Arc<dyn Store>) -> std::result::Result<(), Failure> {
    macro_rules! run {
        ($($check:ident),* $(,)?) => {
            $( $check(store.clone())
                .await
                .map_err(|e| format!("{}: {e}", stringify!($check)))?; )*
        };
    }
    crate::store_checks!(run);
    Ok(())
}

// By value: it is `map_err`'s argument.
#[allow(clippy::needless_pass_by_value)]
fn fail(e: Error) -> Failure {
    e.to_string()
}

/// Export and import ([`crate::store::SnapshotStore`]): fill `source` through the
/// `Manager` (servers, peers with keys, several revisions with a removal and a rollback,
/// a deleted server, users, a custom role, a token, applied state, peer statistics), copy
/// it into `target` ([`crate::store::copy`]), and check that the target answers exactly as
/// the source does: listings, every server's state and history, the audit verification
/// (same head), client configs and diffs; a second export is the same snapshot. Then an
/// import into the non-empty target is refused and writes nothing. Throttle records
/// ([`crate::store::ThrottleStore`]) travel nowhere: a copy, a snapshot and its backup do
/// not carry the source's, and the target's own survive the import, a forced import and
/// do not make it non-empty. Both stores must be empty at the start (`target` may be of
/// another engine).
pub async fn snapshot_round_trip(
    source: Arc<dyn Store>,
    target: Arc<dyn Store>,
) -> std::result::Result<(), Failure> {
    use crate::manager::{Manager, NewPeer, NewServer, NewToken, NewUser};
    let sealer_key = MasterKey::generate();
    let (m, local) =
        Manager::builder(source.clone(), Sealer::new(sealer_key.clone())).build_with_local_admin();
    let admin = local.principal("root");
    let sfx = suffix();
    let name = |s: &str| ServerName::new(format!("{s}-{sfx}")).map_err(fail);
    let a = m
        .create_server(
            &admin,
            NewServer::new(
                name("alpha")?,
                InterfaceName::new("wg0").map_err(fail)?,
                ListenPort::new(51820).map_err(fail)?,
            ),
        )
        .await
        .map_err(fail)?;
    let b = m
        .create_server(
            &admin,
            NewServer::new(
                name("beta")?,
                InterfaceName::new("wg1").map_err(fail)?,
                ListenPort::new(51821).map_err(fail)?,
            ),
        )
        .await
        .map_err(fail)?;
    let gone = m
        .create_server(
            &admin,
            NewServer::new(
                name("gone")?,
                InterfaceName::new("wg2").map_err(fail)?,
                ListenPort::new(51822).map_err(fail)?,
            ),
        )
        .await
        .map_err(fail)?;
    let peers = m
        .add_peers(
            &admin,
            a.id,
            NewPeer::new(PeerName::new("laptop").map_err(fail)?)
                .numbered(3)
                .map_err(fail)?,
        )
        .await
        .map_err(fail)?;
    m.add_peers(
        &admin,
        b.id,
        vec![NewPeer::new(PeerName::new("phone").map_err(fail)?)],
    )
    .await
    .map_err(fail)?;
    m.remove_peer(&admin, a.id, peers[0].id)
        .await
        .map_err(fail)?;
    m.rollback(&admin, a.id, RevisionNo(2))
        .await
        .map_err(fail)?;
    m.remove_peer(&admin, a.id, peers[2].id)
        .await
        .map_err(fail)?;
    m.delete_server(&admin, gone.id).await.map_err(fail)?;
    let role = Role::custom(
        RoleName::new(format!("viewer-{sfx}")).map_err(fail)?,
        Description::new("reads servers").map_err(fail)?,
        vec![Permission::new(Resource::Server, Action::Read)],
    )
    .map_err(fail)?;
    m.put_role(&admin, role).await.map_err(fail)?;
    let user = m
        .create_user(
            &admin,
            NewUser::new(
                UserName::new(format!("ann-{sfx}")).map_err(fail)?,
                RoleName::new("operator").map_err(fail)?,
            ),
        )
        .await
        .map_err(fail)?;
    m.create_token(
        &admin,
        NewToken {
            user: user.id,
            name: "ci".into(),
            scopes: None,
            expires_at: None,
        },
    )
    .await
    .map_err(fail)?;
    source
        .set_applied(a.id, "gw-1", RevisionNo(1))
        .await
        .map_err(fail)?;
    let st = source
        .load_server(a.id)
        .await
        .map_err(fail)?
        .ok_or("server alpha vanished")?;
    let first = *st.peers.keys().next().ok_or("server alpha has no peer")?;
    source
        .update_peer_stats(
            a.id,
            &[(
                first,
                PeerStats {
                    rx_bytes: 7,
                    tx_bytes: 9,
                    ..PeerStats::default()
                },
            )],
        )
        .await
        .map_err(fail)?;

    // Throttle records are not store contents: the source's are not exported, and the
    // target's own do not make it non-empty, nor does any import or forced restore
    // remove them.
    let throttle = crate::store::LoginThrottle::default();
    let now = OffsetDateTime::now_utc();
    let (gone_account, kept_account) = (format!("ghost-{sfx}"), format!("kept-{sfx}"));
    let throttled_source: IpAddr = "2001:db8:7:7::1".parse().map_err(|e| format!("{e}"))?;
    throttle
        .record_login_failure(&*source, Some(&gone_account), throttled_source, now)
        .await
        .map_err(fail)?;
    throttle
        .record_login_failure(&*target, Some(&kept_account), throttled_source, now)
        .await
        .map_err(fail)?;
    let throttled = |s: Arc<dyn Store>, account: String| async move {
        s.throttle_records(
            &[crate::auth::throttle::ThrottleKey::account(&account)],
            now,
        )
        .await
        .map(|r| r.iter().all(Option::is_some))
        .map_err(fail)
    };

    let snap = crate::store::copy(&*source, &*target).await.map_err(fail)?;
    ensure!(
        !throttled(target.clone(), gone_account.clone()).await?
            && throttled(source.clone(), gone_account.clone()).await?
            && throttled(target.clone(), kept_account.clone()).await?,
        "a copy carried the source's throttle records or lost the target's"
    );
    let json = serde_json::to_string(&snap).map_err(|e| e.to_string())?;
    let sealed = crate::store::backup::encode(&snap, &sealer_key).map_err(fail)?;
    let opened = crate::store::backup::decode(&sealed, &sealer_key).map_err(fail)?;
    ensure!(
        !json.contains(&gone_account) && !json.contains(&kept_account) && opened == snap,
        "a snapshot or its backup holds throttle records"
    );
    ensure!(
        snap.servers.len() == 3,
        "the snapshot holds {} servers, not 3 (one of them deleted)",
        snap.servers.len()
    );
    let again = target.export_snapshot().await.map_err(fail)?;
    ensure!(
        again == snap,
        "the target's export differs from the source's ({} vs {} audit records)",
        again.audit.len(),
        snap.audit.len()
    );

    let (t, tlocal) =
        Manager::builder(target.clone(), Sealer::new(sealer_key)).build_with_local_admin();
    let tadmin = tlocal.principal("root");
    ensure!(
        m.list_servers(&admin, Page::ALL).await.map_err(fail)?
            == t.list_servers(&tadmin, Page::ALL).await.map_err(fail)?,
        "the server listings differ"
    );
    for id in [a.id, b.id, gone.id] {
        ensure!(
            source.load_server(id).await.map_err(fail)?
                == target.load_server(id).await.map_err(fail)?,
            "server {id} differs"
        );
        ensure!(
            m.history(&admin, id, RevisionNo::NONE, 1000)
                .await
                .map_err(fail)?
                == t.history(&tadmin, id, RevisionNo::NONE, 1000)
                    .await
                    .map_err(fail)?,
            "the history of server {id} differs"
        );
    }
    ensure!(
        m.diff(&admin, a.id, RevisionNo(1), RevisionNo(4))
            .await
            .map_err(fail)?
            == t.diff(&tadmin, a.id, RevisionNo(1), RevisionNo(4))
                .await
                .map_err(fail)?,
        "the diffs differ"
    );
    ensure!(
        m.list_users(&admin, Page::ALL).await.map_err(fail)?
            == t.list_users(&tadmin, Page::ALL).await.map_err(fail)?,
        "the user listings differ"
    );
    let cfg_s = m.client_config(&admin, a.id, first).await.map_err(fail)?;
    let cfg_t = t.client_config(&tadmin, a.id, first).await.map_err(fail)?;
    ensure!(*cfg_s.text == *cfg_t.text, "the client configs differ");
    // Both logs now end with the export just audited, each on its own; verify both.
    let vs = m.verify_audit_chain(&admin, None).await.map_err(fail)?;
    let vt = t.verify_audit_chain(&tadmin, None).await.map_err(fail)?;
    ensure!(
        vs.records == vt.records && vs.head.seq == vt.head.seq,
        "the audit logs differ after one export each: {} vs {}",
        vs.head,
        vt.head
    );
    ensure!(
        t.verify_audit_chain(&tadmin, Some(&snap.audit_head))
            .await
            .is_ok(),
        "the copied head is not in the target's chain"
    );

    // A second import into the (now non-empty) target is refused and writes nothing.
    let before = target.export_snapshot().await.map_err(fail)?;
    let e = target
        .import_snapshot(&snap)
        .await
        .err()
        .ok_or("an import into a non-empty store was accepted")?;
    ensure!(
        matches!(e, Error::Conflict { .. }) && e.to_string().contains("not empty"),
        "an import into a non-empty store failed with {e}, not a not-empty conflict"
    );
    ensure!(
        target.export_snapshot().await.map_err(fail)? == before,
        "a refused import changed the target"
    );

    // Forced: a later snapshot of the source replaces everything the target holds, the
    // target's own audit records since the copy included; the target's manager, which
    // cached server alpha, answers from the replaced contents. A snapshot that fails its
    // check changes nothing.
    m.add_peers(
        &admin,
        a.id,
        vec![NewPeer::new(PeerName::new("tablet").map_err(fail)?)],
    )
    .await
    .map_err(fail)?;
    m.delete_server(&admin, b.id).await.map_err(fail)?;
    let later = source.export_snapshot().await.map_err(fail)?;
    let mut bad = later.clone();
    bad.version += 1;
    let e = target.replace_with_snapshot(&bad).await;
    ensure!(
        matches!(&e, Err(Error::InvalidInput { field, .. }) if field == "snapshot.version"),
        "a forced import of a bad snapshot was not refused on its version: {e:?}"
    );
    ensure!(
        target.export_snapshot().await.map_err(fail)? == before,
        "a refused forced import changed the target"
    );
    target.replace_with_snapshot(&later).await.map_err(fail)?;
    let replaced = target.export_snapshot().await.map_err(fail)?;
    ensure!(
        replaced == later,
        "after a forced import the target's export differs from the snapshot ({} vs {} audit records)",
        replaced.audit.len(),
        later.audit.len()
    );
    ensure!(
        m.list_servers(&admin, Page::ALL).await.map_err(fail)?
            == t.list_servers(&tadmin, Page::ALL).await.map_err(fail)?,
        "the server listings differ after a forced import"
    );
    // (Peer statistics are not revisioned, so the source's manager, which did not write
    // them, may show older ones: compare with the store.)
    let stored = source
        .load_server(a.id)
        .await
        .map_err(fail)?
        .ok_or("server alpha vanished")?;
    let shown = t.list_peers(&tadmin, a.id).await.map_err(fail)?;
    ensure!(
        shown.len() == stored.peers.len()
            && shown.iter().all(|v| stored
                .peers
                .get(&v.id)
                .is_some_and(|p| p.name == v.name && p.stats == v.stats)),
        "the target's manager answers with the peers it held before the forced import"
    );
    // Replacing with nothing empties the store (the layout stays).
    target
        .replace_with_snapshot(&crate::store::Snapshot::empty())
        .await
        .map_err(fail)?;
    ensure!(
        target.export_snapshot().await.map_err(fail)?.is_empty(),
        "a forced import of an empty snapshot left something behind"
    );
    ensure!(
        throttled(target.clone(), kept_account.clone()).await?,
        "a forced import removed the target's throttle records"
    );
    // Still empty as far as an import is concerned: throttle records are not contents.
    target.import_snapshot(&later).await.map_err(fail)?;
    ensure!(
        throttled(target.clone(), kept_account.clone()).await?,
        "an import removed the target's throttle records"
    );
    // A snapshot of another layout version is refused by the check, naming the field.
    let mut bad = snap.clone();
    bad.version += 1;
    let e =
        crate::store::SnapshotStore::import_snapshot(&crate::store::MemoryStore::new(), &bad).await;
    ensure!(
        matches!(&e, Err(Error::InvalidInput { field, .. }) if field == "snapshot.version"),
        "a snapshot of another version was not refused on its version: {e:?}"
    );
    Ok(())
}

/// An export while another writer commits is one instant of the store: in every
/// snapshot taken during a run of commits, the last audit record is the stored audit
/// head, each server's state is at its head and its last revision is that head, and the
/// record count is the head's sequence number. `source` must be empty.
pub async fn snapshot_is_consistent_under_writes(
    source: Arc<dyn Store>,
) -> std::result::Result<(), Failure> {
    use crate::manager::{Manager, NewPeer, NewServer};
    let (m, local) = Manager::builder(source.clone(), Sealer::new(MasterKey::generate()))
        .build_with_local_admin();
    let admin = local.principal("root");
    let s = m
        .create_server(
            &admin,
            NewServer::new(
                ServerName::new(format!("busy-{}", suffix())).map_err(fail)?,
                InterfaceName::new("wg0").map_err(fail)?,
                ListenPort::new(51820).map_err(fail)?,
            ),
        )
        .await
        .map_err(fail)?;
    let writes = async {
        for i in 0..20 {
            m.add_peers(
                &admin,
                s.id,
                vec![NewPeer::new(PeerName::new(format!("p{i}")).map_err(fail)?)],
            )
            .await
            .map_err(fail)?;
        }
        Ok::<(), Failure>(())
    };
    let exports = async {
        let mut seen = Vec::new();
        for _ in 0..10 {
            seen.push(source.export_snapshot().await.map_err(fail)?);
        }
        Ok::<_, Failure>(seen)
    };
    let (w, seen) = futures::join!(writes, exports);
    w?;
    let mut seen = seen?;
    seen.push(source.export_snapshot().await.map_err(fail)?);
    for snap in &seen {
        let last = snap.audit.last().map_or(0, |r| r.seq);
        ensure!(
            snap.audit_head.seq == last && snap.audit.len() as u64 == last,
            "an export holds {} audit records up to {last} under head {}",
            snap.audit.len(),
            snap.audit_head
        );
        for sv in &snap.servers {
            let last_rev = sv.revisions.last().map(|r| r.revision);
            ensure!(
                sv.head == last_rev && sv.state.as_ref().map(|st| st.revision) == sv.head,
                "an export holds server {} at head {:?} with its last revision {last_rev:?}",
                sv.id,
                sv.head
            );
            // One revision creates the server, each later one adds one peer.
            let peers = sv.state.as_ref().map_or(0, |st| st.peers.len());
            ensure!(
                peers + 1 == sv.revisions.len(),
                "an export holds {peers} peers beside {} revisions",
                sv.revisions.len()
            );
        }
    }
    let last = seen.last().ok_or("no export")?;
    let peers = last
        .servers
        .iter()
        .find(|sv| sv.id == s.id)
        .and_then(|sv| sv.state.as_ref())
        .map_or(0, |st| st.peers.len());
    ensure!(peers == 20, "the final export holds {peers} peers, not 20");
    Ok(())
}

/// The login throttle of [`Manager::login`](crate::manager::Manager::login) is shared by
/// every manager on `store` (two here, as two processes would be), on the store's
/// [`ThrottleStore`](crate::store::ThrottleStore):
///
/// - 2 managers × 5 concurrent wrong passwords for one account leave its record (and
///   the source's) exactly as 10 failures one after the other do, and both managers
///   then refuse the account — the right password included, which is not looked at;
/// - once the block is over, a success on one manager clears the account for both and
///   keeps the source's count;
/// - with the default policy (5 free failures), failures alternating between the two
///   managers block the account after the sixth: the seventh attempt is throttled on
///   either, though neither manager saw more than three of them itself;
/// - a logout ([`Manager::logout`](crate::manager::Manager::logout)) through one manager
///   ends the session on another with the same JWT key, the access and the refresh token
///   each, and nothing else.
///
/// `store` must hold no audit key a fresh master key cannot open (an empty store does).
#[cfg(feature = "auth")]
pub async fn login_throttle_shared_by_managers(
    store: Arc<dyn Store>,
) -> std::result::Result<(), Failure> {
    use crate::auth::jwt::{JwtIssuer, JwtKey};
    use crate::auth::password::PasswordParams;
    use crate::auth::throttle::{ThrottleKey, ThrottlePolicy, ThrottleState};
    use crate::manager::{ManagerConfig, ManualClock, NewUser};
    use crate::store::LoginThrottle;

    let key = MasterKey::generate();
    let clock = Arc::new(ManualClock::new(t0()));
    let account = ThrottlePolicy {
        // Ten concurrent attempts all pass the check whatever their order.
        free_failures: 9,
        base_delay_secs: 60,
        max_delay_secs: 3600,
        forget_after_secs: 3600,
    };
    let config = |login_throttle: LoginThrottle| crate::manager::ManagerConfig {
        password_params: PasswordParams::insecure_for_tests(),
        login_throttle,
        ..ManagerConfig::default()
    };
    let manager = |login_throttle: LoginThrottle| {
        Ok::<_, Failure>(
            crate::manager::Manager::builder(
                store.clone(),
                Sealer::new(MasterKey::from_bytes(*key.expose_bytes())),
            )
            .clock(clock.clone())
            .config(config(login_throttle))
            .jwt(JwtIssuer::new(JwtKey::generate(), "wgm", "wgm-api").map_err(fail)?),
        )
    };
    let tuned = LoginThrottle {
        account,
        ..LoginThrottle::default()
    };
    let (a, local) = manager(tuned)?.build_with_local_admin();
    let b = manager(tuned)?.build();
    let admin = local.principal("root");
    let sfx = suffix();
    let password = "correct horse battery";
    let user = |name: String| {
        let mut nu = NewUser::new(
            UserName::new(name).map_err(fail)?,
            RoleName::new("user").map_err(fail)?,
        );
        nu.password = Some(zeroize::Zeroizing::new(password.to_owned()));
        Ok::<_, Failure>(nu)
    };
    let carol = format!("Carol-{sfx}");
    a.create_user(&admin, user(carol.clone())?)
        .await
        .map_err(fail)?;
    let src: IpAddr = format!("2001:db8:{}::7", &sfx[..4])
        .parse()
        .map_err(|e| format!("{e}"))?;
    let now = t0();
    let after = |n: u32, policy: &ThrottlePolicy| {
        let mut s = ThrottleState::default();
        for _ in 0..n {
            s.record_failure(policy, u64::try_from(now.unix_timestamp()).unwrap_or(0));
        }
        s
    };

    // Concurrent failures on both managers all count.
    let attempts = (0..10).map(|i| {
        let m = if i % 2 == 0 { &a } else { &b };
        m.login(&carol, "wrong password!!", None, src)
    });
    for r in join_all(attempts).await {
        ensure!(
            matches!(r, Err(Error::Unauthenticated { .. })),
            "a concurrent wrong password gave {r:?}"
        );
    }
    let keys = [
        ThrottleKey::account(&UserName::new(carol.clone()).map_err(fail)?.key()),
        ThrottleKey::source(src),
    ];
    let records = store.throttle_records(&keys, now).await.map_err(fail)?;
    ensure!(
        records == [Some(after(10, &account)), Some(after(10, &tuned.source))],
        "10 concurrent failures on two managers left {records:?}"
    );
    for (m, which) in [(&a, "a"), (&b, "b")] {
        // Every spelling of the account is its account.
        let r = m.login(&carol.to_uppercase(), password, None, src).await;
        ensure!(
            matches!(
                r,
                Err(Error::Throttled {
                    retry_after_secs: 60
                })
            ),
            "manager {which} let the blocked account try its password: {r:?}"
        );
    }

    // After the block, a success on one manager clears the account for both.
    clock.advance(time::Duration::seconds(60));
    b.login(&carol, password, None, src).await.map_err(fail)?;
    let later = t0() + time::Duration::seconds(60);
    let records = store.throttle_records(&keys, later).await.map_err(fail)?;
    ensure!(
        records == [None, Some(after(10, &tuned.source))],
        "a success left {records:?} (the account cleared, the source kept)"
    );
    a.login(&carol, password, None, src).await.map_err(fail)?;

    // The default policy, budget shared: the sixth failure blocks, wherever it lands.
    let (c, d) = (
        manager(LoginThrottle::default())?.build(),
        manager(LoginThrottle::default())?.build(),
    );
    let dave = format!("dave-{sfx}");
    a.create_user(&admin, user(dave.clone())?)
        .await
        .map_err(fail)?;
    let other: IpAddr = format!("2001:db8:{}:1::9", &sfx[..4])
        .parse()
        .map_err(|e| format!("{e}"))?;
    for i in 0..6 {
        let m = if i % 2 == 0 { &c } else { &d };
        let r = m.login(&dave, "wrong password!!", None, other).await;
        ensure!(
            matches!(r, Err(Error::Unauthenticated { .. })),
            "failure {} gave {r:?}",
            i + 1
        );
    }
    for (m, which) in [(&d, "d"), (&c, "c")] {
        let r = m.login(&dave, password, None, other).await;
        ensure!(
            matches!(r, Err(Error::Throttled { retry_after_secs: 1 })),
            "after six failures shared by two managers, manager {which} let an attempt through: {r:?}"
        );
    }

    // A logout through one manager holds on another with the same JWT key (two copies
    // of a server): the ended session is a record in the store.
    let issuer = JwtIssuer::new(JwtKey::generate(), "wgm", "wgm-api").map_err(fail)?;
    let with_issuer = || {
        crate::manager::Manager::builder(
            store.clone(),
            Sealer::new(MasterKey::from_bytes(*key.expose_bytes())),
        )
        .clock(clock.clone())
        .config(config(LoginThrottle::default()))
        .jwt(issuer.clone())
        .build()
    };
    let (e, f) = (with_issuer(), with_issuer());
    let erin = format!("erin-{sfx}");
    a.create_user(&admin, user(erin.clone())?)
        .await
        .map_err(fail)?;
    let third: IpAddr = format!("2001:db8:{}:2::9", &sfx[..4])
        .parse()
        .map_err(|e| format!("{e}"))?;
    let session = e.login(&erin, password, None, third).await.map_err(fail)?;
    f.authenticate_jwt(&session.access_token)
        .await
        .map_err(fail)?;
    e.logout(&session.access_token).await.map_err(fail)?;
    e.logout(&session.access_token).await.map_err(fail)?;
    for (m, which) in [(&f, "f"), (&e, "e")] {
        let r = m.authenticate_jwt(&session.access_token).await;
        ensure!(
            matches!(r, Err(Error::Unauthenticated { .. })),
            "manager {which} took a logged-out access token: {:?}",
            r.map(|p| p.user_id())
        );
    }
    // The refresh token is its own session until it is logged out too.
    f.refresh(&session.refresh_token).await.map_err(fail)?;
    f.logout(&session.refresh_token).await.map_err(fail)?;
    ensure!(
        matches!(
            e.refresh(&session.refresh_token).await,
            Err(Error::Unauthenticated { .. })
        ),
        "manager e took a logged-out refresh token"
    );
    ensure!(
        matches!(
            e.logout("not a token").await,
            Err(Error::Unauthenticated { .. })
        ),
        "a logout of no token was not refused"
    );
    // Nothing else was ended: a new login works on both.
    let fresh = f.login(&erin, password, None, third).await.map_err(fail)?;
    e.authenticate_jwt(&fresh.access_token)
        .await
        .map_err(fail)?;
    Ok(())
}
