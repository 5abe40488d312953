//! The store semantics, checked on every engine: each check passing on the memory store,
//! SQLite and PostgreSQL is what "the engines have the same semantics" means. Every
//! check names its servers, users and roles with a fresh tag and dates its records at a
//! random instant, so it holds on a store that already has data (the conformance
//! entry points run everything twice on one store); counts and sequence numbers are
//! compared relative to what was there before.

use std::fmt::Debug;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::panic::Location;
use std::sync::Arc;

use futures::future::join_all;
use ipnet::{Ipv4Net, Ipv6Net};
use rand::Rng;
use time::{Duration, OffsetDateTime};

use super::{audit_key, Failure};
use crate::error::{ConflictKind, Taken};
use crate::integrity::{
    check_revision, AuditVerification, ChainVerifier, LegacyBound, RevisionIntegrity,
    StoredAuditKey,
};
use crate::ipam::Strategy;
use crate::keys::PrivateKey;
use crate::model::{
    Actor, ApiTokenRecord, AuditEntry, AuditOutcome, AuditQuery, AuditRecord, Change,
    ClientTemplate, Commit, IdentityChange, Page, Peer, PeerId, PeerStats, RevisionNo, Server,
    ServerId, TokenId, User, UserId,
};
use crate::names::{Description, InterfaceName, PeerName, RoleName, ServerName, UserName};
use crate::net::{Keepalive, ListenPort, Mtu};
use crate::rbac::{Action, Permission, Resource, Role};
use crate::seal::{MasterKey, SealedSecret, Sealer, SecretKind};
use crate::store::{PeerLookup, Store};
use crate::Error;

type R = std::result::Result<(), Failure>;

/// `Ok` of a result or `Some` of an option, or a failure naming the caller's line.
trait Must<T> {
    fn must(self) -> std::result::Result<T, Failure>;
}

impl<T, E: Debug> Must<T> for std::result::Result<T, E> {
    #[track_caller]
    fn must(self) -> std::result::Result<T, Failure> {
        let at = Location::caller();
        self.map_err(|e| format!("line {}: unexpected error: {e:?}", at.line()))
    }
}

impl<T> Must<T> for Option<T> {
    #[track_caller]
    fn must(self) -> std::result::Result<T, Failure> {
        let at = Location::caller();
        self.ok_or_else(|| format!("line {}: expected a value, found none", at.line()))
    }
}

/// The error of a result that must have failed.
trait MustErr<E> {
    fn must_err(self) -> std::result::Result<E, Failure>;
}

impl<T: Debug, E> MustErr<E> for std::result::Result<T, E> {
    #[track_caller]
    fn must_err(self) -> std::result::Result<E, Failure> {
        let at = Location::caller();
        match self {
            Ok(v) => Err(format!("line {}: expected an error, got {v:?}", at.line())),
            Err(e) => Ok(e),
        }
    }
}

macro_rules! check_eq {
    ($a:expr, $b:expr $(,)?) => {
        match (&$a, &$b) {
            (l, r) => {
                if !(*l == *r) {
                    return Err(format!(
                        "line {}: {} == {} failed: {:?} != {:?}",
                        line!(),
                        stringify!($a),
                        stringify!($b),
                        l,
                        r
                    ));
                }
            }
        }
    };
}

macro_rules! check {
    ($c:expr $(,)?) => {
        if !$c {
            return Err(format!("line {}: {} failed", line!(), stringify!($c)));
        }
    };
    ($c:expr, $($m:tt)+) => {
        if !$c {
            return Err(format!("line {}: {}", line!(), format!($($m)+)));
        }
    };
}

/// The error code of a result that must have failed (`ok` when it did not).
fn code<T>(r: std::result::Result<T, Error>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.code(),
    }
}

/// [`code`], with the kind of a conflict told apart: `stale_revision`, `stale_user`,
/// `taken` (other conflicts stay `conflict`).
fn kind<T>(r: std::result::Result<T, Error>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(Error::Conflict { kind }) => match kind {
            ConflictKind::StaleRevision { .. } => "stale_revision",
            ConflictKind::StaleUser { .. } => "stale_user",
            ConflictKind::Taken(_) => "taken",
            ConflictKind::RevisionAltered { .. } => "revision_altered",
            _ => "conflict",
        },
        Err(e) => e.code(),
    }
}

async fn audit_len(s: &dyn Store) -> std::result::Result<usize, Failure> {
    Ok(s.query_audit(&AuditQuery::default()).await.must()?.len())
}

/// The last audit sequence number (0 for an empty log).
async fn audit_seq(s: &dyn Store) -> std::result::Result<u64, Failure> {
    Ok(s.query_audit(&AuditQuery::default())
        .await
        .must()?
        .last()
        .map_or(0, |r| r.seq))
}

/// Verify the whole stored log under the suite's key, against the stored head.
async fn verify_chain(s: &dyn Store) -> std::result::Result<AuditVerification, Error> {
    let legacy = LegacyBound::empty();
    let mut v = ChainVerifier::new(Some((audit_key(), &legacy)), None);
    for r in &s.query_audit(&AuditQuery::default()).await? {
        v.push(r)?;
    }
    v.finish(&s.audit_head().await?)
}

/// The fixtures of one check: names tagged with a fresh tag, times from a random
/// instant (with nanoseconds, so round trips of times are checked exactly).
struct Fx {
    tag: String,
    t0: OffsetDateTime,
    sealer: Sealer,
}

impl Fx {
    fn new() -> Self {
        let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        // 2025-03-04 05:06:07.123456789 UTC plus up to ~115 days: clear of the other
        // checks' instants, and of this check's twin on a second run.
        let base = OffsetDateTime::from_unix_timestamp_nanos(1_741_064_767_123_456_789)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let t0 = base + Duration::seconds(rand::thread_rng().gen_range(0..10_000_000));
        Fx {
            tag,
            t0,
            sealer: Sealer::new(MasterKey::generate()),
        }
    }

    /// `name` tagged for this check (case preserved, so case-folding is still tested).
    fn name(&self, name: &str) -> String {
        format!("{name}-{}", self.tag)
    }

    fn sealed(&self, kind: SecretKind, id: &str) -> std::result::Result<SealedSecret, Failure> {
        let k = PrivateKey::generate();
        self.sealer.seal(kind, id, k.expose_bytes()).must()
    }

    /// A server named `name` (tagged) with pool `fd00:42::/64` and, if given, an IPv4
    /// pool.
    fn server(&self, name: &str, v4_pool: Option<&str>) -> std::result::Result<Server, Failure> {
        let id = ServerId::new_random();
        let v6: Ipv6Net = "fd00:42::/64".parse().must()?;
        let v4: Option<Ipv4Net> = match v4_pool {
            Some(p) => Some(p.parse().must()?),
            None => None,
        };
        Ok(Server {
            id,
            name: ServerName::new(self.name(name)).must()?,
            interface: InterfaceName::new("wg0").must()?,
            listen_port: ListenPort::DEFAULT,
            private_key: self.sealed(SecretKind::ServerPrivateKey, &id.to_string())?,
            public_key: PrivateKey::generate().public_key(),
            ipv6_pool: v6,
            ipv4_pool: v4,
            address_v6: "fd00:42::1".parse().must()?,
            address_v4: v4.map(|n| host_v4(n, 1)),
            delegation: None,
            strategy: Strategy::Sequential,
            quarantine_secs: 0,
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
            created_at: self.t0,
            updated_at: self.t0,
        })
    }

    /// A peer of `server` named `name` with IPv6 host `i` (and IPv4 host `i` if the
    /// server has an IPv4 pool), a sealed private key and PSK.
    fn peer(&self, server: &Server, name: &str, i: u16) -> std::result::Result<Peer, Failure> {
        let id = PeerId::new_random();
        Ok(Peer {
            id,
            server_id: server.id,
            name: PeerName::new(name).must()?,
            description: None,
            owner: None,
            public_key: PrivateKey::generate().public_key(),
            private_key: Some(self.sealed(SecretKind::PeerPrivateKey, &id.to_string())?),
            preshared_key: Some(self.sealed(SecretKind::PeerPresharedKey, &id.to_string())?),
            address_v6: Some(Ipv6Addr::new(0xfd00, 0x42, 0, 0, 0, 0, 0, i)),
            address_v4: server.ipv4_pool.map(|n| host_v4(n, u32::from(i))),
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
            created_at: self.t0,
            updated_at: self.t0,
        })
    }

    /// A user named `name` (tagged), with `email` (tagged) if given.
    fn user(&self, name: &str, email: Option<&str>) -> std::result::Result<User, Failure> {
        Ok(User {
            id: UserId::new_random(),
            name: UserName::new(self.name(name)).must()?,
            email: email.map(|e| format!("{}.{e}", self.tag)),
            password_hash: Some(
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
            ),
            active: true,
            superuser: false,
            roles: Vec::new(),
            totp: None,
            token_version: 0,
            peer_quota: None,
            last_login: None,
            version: 1,
            created_at: self.t0,
            updated_at: self.t0,
        })
    }

    fn actor() -> Actor {
        Actor {
            user_id: None,
            label: "local:test".into(),
        }
    }

    /// An audit entry at `t0`.
    fn entry(&self, action: &str, object: &str) -> AuditEntry {
        AuditEntry {
            at: self.t0,
            actor: Self::actor(),
            action: action.into(),
            object: object.into(),
            server_id: None,
            revision: None,
            outcome: AuditOutcome::Success,
            details: serde_json::json!({ "n": 1, "list": [1, 2.5, "x"], "nested": { "b": true, "a": null } }),
        }
    }

    /// A commit of `changes` on `server` from revision `expected`.
    fn commit(&self, server: ServerId, expected: u64, changes: Vec<Change>) -> Commit {
        let summary = changes
            .iter()
            .map(Change::kind)
            .collect::<Vec<_>>()
            .join(",");
        Commit {
            server_id: server,
            expected: RevisionNo(expected),
            audit: self.entry("server.change", &format!("server/{server}")),
            changes,
            author: Self::actor(),
            at: self.t0,
            summary,
        }
    }

    /// Create `srv` (revision 1).
    async fn create(&self, store: &dyn Store, srv: &Server) -> R {
        store
            .commit(
                self.commit(
                    srv.id,
                    0,
                    vec![Change::ServerCreated {
                        server: Box::new(srv.clone()),
                    }],
                ),
                audit_key(),
            )
            .await
            .must()?;
        Ok(())
    }

    /// Add `p` at `expected`.
    fn add(&self, server: ServerId, expected: u64, p: &Peer) -> Commit {
        self.commit(
            server,
            expected,
            vec![Change::PeerAdded {
                peer: Box::new(p.clone()),
            }],
        )
    }
}

/// Host `i` of an IPv4 network.
fn host_v4(n: Ipv4Net, i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(n.network()) + i)
}

/// Create, load, find, list: the stored state equals what was committed, exactly.
pub async fn create_and_load_round_trip(store: Arc<dyn Store>) -> R {
    let fx = &Fx::new();
    let s = &*store;
    let srv = fx.server("Office", Some("10.8.0.0/24"))?;
    fx.create(s, &srv).await?;
    let mut p1 = fx.peer(&srv, "alice", 2)?;
    p1.description = Some(Description::new("laptop").must()?);
    p1.expires_at = Some(fx.t0 + Duration::days(30));
    p1.extra_allowed_ips = vec![
        "2001:db8:1::/48".parse().must()?,
        "192.168.7.0/24".parse().must()?,
    ];
    let mut p2 = fx.peer(&srv, "bob", 3)?;
    p2.private_key = None;
    p2.address_v4 = None;
    p2.delegated_prefix = Some("fd99:1:2:3::/64".parse().must()?);
    p2.stats = PeerStats {
        last_seen: Some(fx.t0),
        rx_bytes: u64::MAX,
        tx_bytes: 7,
    };
    let rec = s
        .commit(
            fx.commit(
                srv.id,
                1,
                vec![
                    Change::PeerAdded {
                        peer: Box::new(p1.clone()),
                    },
                    Change::PeerAdded {
                        peer: Box::new(p2.clone()),
                    },
                ],
            ),
            audit_key(),
        )
        .await
        .must()?;
    check_eq!(rec.record.revision, RevisionNo(2));
    check_eq!(rec.record.at, fx.t0);

    let st = s.load_server(srv.id).await.must()?.must()?;
    check_eq!(st.revision, RevisionNo(2));
    check_eq!(st.server, srv);
    check_eq!(st.peers.len(), 2);
    check_eq!(st.peers.get(&p1.id), Some(&p1));
    check_eq!(st.peers.get(&p2.id), Some(&p2));

    // One peer by id, by name (case-insensitively) and by key, as `load_server` has it
    // (statistics included); nothing for another server or an unknown peer.
    check_eq!(
        s.find_peer(srv.id, PeerLookup::Id(p1.id)).await.must()?,
        Some(p1.clone())
    );
    let upper = PeerName::new(p1.name.as_str().to_uppercase()).must()?;
    check_eq!(
        s.find_peer(srv.id, PeerLookup::Name(&upper)).await.must()?,
        Some(p1.clone())
    );
    check_eq!(
        s.find_peer(srv.id, PeerLookup::Key(&p2.public_key))
            .await
            .must()?,
        Some(p2.clone())
    );
    check_eq!(
        s.find_peer(ServerId::new_random(), PeerLookup::Id(p1.id))
            .await
            .must()?,
        None
    );
    check_eq!(
        s.find_peer(srv.id, PeerLookup::Id(PeerId::new_random()))
            .await
            .must()?,
        None
    );
    let carol = PeerName::new("carol").must()?;
    check_eq!(
        s.find_peer(srv.id, PeerLookup::Name(&carol)).await.must()?,
        None
    );
    check_eq!(
        s.find_peer(srv.id, PeerLookup::Key(&srv.public_key))
            .await
            .must()?,
        None
    );
    check_eq!(
        s.load_server_overview(srv.id).await.must()?,
        Some((srv.clone(), RevisionNo(2), 2))
    );
    check!(s
        .load_server_overview(ServerId::new_random())
        .await
        .must()?
        .is_none());

    check_eq!(s.head(srv.id).await.must()?, Some(RevisionNo(2)));
    check_eq!(s.head(ServerId::new_random()).await.must()?, None);
    check!(s
        .load_server(ServerId::new_random())
        .await
        .must()?
        .is_none());
    check_eq!(
        s.find_server(&ServerName::new(fx.name("OFFICE")).must()?)
            .await
            .must()?,
        Some(srv.id)
    );
    check_eq!(
        s.find_server(&ServerName::new(fx.name("home")).must()?)
            .await
            .must()?,
        None
    );
    let list: Vec<_> = s
        .list_servers(Page::ALL)
        .await
        .must()?
        .into_iter()
        .filter(|x| x.name.as_str().ends_with(&fx.tag))
        .collect();
    check_eq!(list.len(), 1);
    check_eq!(
        (list[0].id, list[0].peer_count, list[0].revision),
        (srv.id, 2, RevisionNo(2))
    );
    check_eq!(list[0].name, srv.name);
    Ok(())
}

/// Compare-and-swap on the head: a stale or future expected revision is a Conflict and
/// writes nothing (no revision, no audit record).
pub async fn revision_cas(store: Arc<dyn Store>) -> R {
    let fx = &Fx::new();
    let s = &*store;
    let srv = fx.server("cas", None)?;
    fx.create(s, &srv).await?;
    s.commit(fx.add(srv.id, 1, &fx.peer(&srv, "a", 2)?), audit_key())
        .await
        .must()?;
    let audits = audit_len(s).await?;
    check_eq!(
        kind(
            s.commit(fx.add(srv.id, 1, &fx.peer(&srv, "b", 3)?), audit_key())
                .await
        ),
        "stale_revision"
    );
    check_eq!(
        kind(
            s.commit(fx.add(srv.id, 5, &fx.peer(&srv, "b", 3)?), audit_key())
                .await
        ),
        "stale_revision"
    );
    check_eq!(
        kind(
            s.commit(
                fx.commit(
                    srv.id,
                    0,
                    vec![Change::ServerCreated {
                        server: Box::new(srv.clone())
                    }]
                ),
                audit_key()
            )
            .await
        ),
        "stale_revision"
    );
    check_eq!(s.head(srv.id).await.must()?, Some(RevisionNo(2)));
    check_eq!(
        s.revisions(srv.id, RevisionNo::NONE, 100)
            .await
            .must()?
            .len(),
        2
    );
    check_eq!(audit_len(s).await?, audits);
    check_eq!(
        s.commit(fx.add(srv.id, 2, &fx.peer(&srv, "b", 3)?), audit_key())
            .await
            .must()?
            .record
            .revision,
        RevisionNo(3)
    );
    Ok(())
}

/// Server-level rules: names unique case-insensitively on create and rename; ids must match.
pub async fn server_rules(store: Arc<dyn Store>) -> R {
    let fx = &Fx::new();
    let s = &*store;
    let a = fx.server("Alpha", None)?;
    fx.create(s, &a).await?;
    let dup = fx.server("ALPHA", None)?;
    let e = s
        .commit(
            fx.commit(
                dup.id,
                0,
                vec![Change::ServerCreated {
                    server: Box::new(dup.clone()),
                }],
            ),
            audit_key(),
        )
        .await;
    check_eq!(code(e), "already_exists");
    check_eq!(s.head(dup.id).await.must()?, None);

    let b = fx.server("beta", None)?;
    fx.create(s, &b).await?;
    let mut renamed = b.clone();
    renamed.name = ServerName::new(fx.name("alpha")).must()?;
    let e = s
        .commit(
            fx.commit(
                b.id,
                1,
                vec![Change::ServerUpdated {
                    before: Box::new(b.clone()),
                    after: Box::new(renamed),
                }],
            ),
            audit_key(),
        )
        .await;
    check_eq!(code(e), "already_exists");
    // Renaming to its own name in another case is fine.
    let mut own = b.clone();
    own.name = ServerName::new(fx.name("BETA")).must()?;
    own.listen_port = "51900".parse().must()?;
    s.commit(
        fx.commit(
            b.id,
            1,
            vec![Change::ServerUpdated {
                before: Box::new(b.clone()),
                after: Box::new(own.clone()),
            }],
        ),
        audit_key(),
    )
    .await
    .must()?;
    check_eq!(s.load_server(b.id).await.must()?.must()?.server, own);

    // A creation whose server id is not the commit's.
    let c = fx.server("gamma", None)?;
    let e = s
        .commit(
            fx.commit(
                ServerId::new_random(),
                0,
                vec![Change::ServerCreated {
                    server: Box::new(c),
                }],
            ),
            audit_key(),
        )
        .await;
    check_eq!(code(e), "conflict");
    // An update that targets another server.
    let mut other = own.clone();
    other.id = a.id;
    other.name = ServerName::new(fx.name("zeta")).must()?;
    let e = s
        .commit(
            fx.commit(
                b.id,
                2,
                vec![Change::ServerUpdated {
                    before: Box::new(own.clone()),
                    after: Box::new(other),
                }],
            ),
            audit_key(),
        )
        .await;
    check_eq!(code(e), "conflict");
    // Changes to a server that does not exist.
    let ghost = fx.server("ghost", None)?;
    check_eq!(
        code(
            s.commit(fx.add(ghost.id, 0, &fx.peer(&ghost, "p", 2)?), audit_key())
                .await
        ),
        "not_found"
    );
    check_eq!(
        code(
            s.commit(
                fx.commit(
                    ghost.id,
                    0,
                    vec![Change::ServerDeleted {
                        server: Box::new(ghost.clone())
                    }]
                ),
                audit_key()
            )
            .await
        ),
        "not_found"
    );
    Ok(())
}

/// Peer uniqueness per server: names (case-insensitive) and keys are `AlreadyExists`;
/// addresses, prefixes and a peer holding the server's own key are Conflict; a failed
/// commit writes nothing; the same values on another server are fine.
pub async fn peer_uniqueness(store: Arc<dyn Store>) -> R {
    let fx = &Fx::new();
    let s = &*store;
    let srv = fx.server("uniq", Some("10.9.0.0/24"))?;
    fx.create(s, &srv).await?;
    let mut a = fx.peer(&srv, "Alice", 2)?;
    a.delegated_prefix = Some("fd77::/64".parse().must()?);
    s.commit(fx.add(srv.id, 1, &a), audit_key()).await.must()?;
    let audits = audit_len(s).await?;

    let mut same_name = fx.peer(&srv, "ALICE", 3)?;
    same_name.name = crate::names::PeerName::new("alice").must()?;
    check_eq!(
        kind(s.commit(fx.add(srv.id, 2, &same_name), audit_key()).await),
        "already_exists"
    );
    let mut same_key = fx.peer(&srv, "k", 3)?;
    same_key.public_key = a.public_key;
    check_eq!(
        kind(s.commit(fx.add(srv.id, 2, &same_key), audit_key()).await),
        "already_exists"
    );
    let mut same_v6 = fx.peer(&srv, "v6", 3)?;
    same_v6.address_v6 = a.address_v6;
    check_eq!(
        kind(s.commit(fx.add(srv.id, 2, &same_v6), audit_key()).await),
        "taken"
    );
    let mut same_v4 = fx.peer(&srv, "v4", 3)?;
    same_v4.address_v4 = a.address_v4;
    check_eq!(
        kind(s.commit(fx.add(srv.id, 2, &same_v4), audit_key()).await),
        "taken"
    );
    let mut same_pfx = fx.peer(&srv, "pfx", 3)?;
    same_pfx.delegated_prefix = a.delegated_prefix;
    check_eq!(
        kind(s.commit(fx.add(srv.id, 2, &same_pfx), audit_key()).await),
        "taken"
    );
    let mut server_key = fx.peer(&srv, "srvkey", 3)?;
    server_key.public_key = srv.public_key;
    check_eq!(
        kind(s.commit(fx.add(srv.id, 2, &server_key), audit_key()).await),
        "taken"
    );
    // Two new peers clashing with each other in one commit.
    let b1 = fx.peer(&srv, "b1", 4)?;
    let mut b2 = fx.peer(&srv, "b2", 5)?;
    b2.address_v4 = b1.address_v4;
    let e = s
        .commit(
            fx.commit(
                srv.id,
                2,
                vec![
                    Change::PeerAdded {
                        peer: Box::new(b1.clone()),
                    },
                    Change::PeerAdded { peer: Box::new(b2) },
                ],
            ),
            audit_key(),
        )
        .await;
    check_eq!(kind(e), "taken");
    // The server's key changed to a peer's key.
    let mut srv2 = srv.clone();
    srv2.public_key = a.public_key;
    let e = s
        .commit(
            fx.commit(
                srv.id,
                2,
                vec![Change::ServerUpdated {
                    before: Box::new(srv.clone()),
                    after: Box::new(srv2),
                }],
            ),
            audit_key(),
        )
        .await;
    check_eq!(kind(e), "taken");

    // Nothing of the failed commits was written.
    let st = s.load_server(srv.id).await.must()?.must()?;
    check_eq!((st.revision, st.peers.len()), (RevisionNo(2), 1));
    check_eq!(
        s.revisions(srv.id, RevisionNo::NONE, 100)
            .await
            .must()?
            .len(),
        2
    );
    check_eq!(audit_len(s).await?, audits);

    // The same values on another server are fine.
    let other = fx.server("other", Some("10.9.0.0/24"))?;
    fx.create(s, &other).await?;
    let mut twin = a.clone();
    twin.id = PeerId::new_random();
    twin.server_id = other.id;
    s.commit(fx.add(other.id, 1, &twin), audit_key())
        .await
        .must()?;
    Ok(())
}

/// Changes that only a final state can judge: swapping two peers' addresses and names in
/// one commit is valid (checked on the result, not step by step); removing a peer and
/// giving its address to a new one in one commit is valid.
pub async fn swaps_within_one_commit(store: Arc<dyn Store>) -> R {
    let fx = &Fx::new();
    let s = &*store;
    let srv = fx.server("swap", Some("10.10.0.0/24"))?;
    fx.create(s, &srv).await?;
    let a = fx.peer(&srv, "a", 2)?;
    let b = fx.peer(&srv, "b", 3)?;
    s.commit(
        fx.commit(
            srv.id,
            1,
            vec![
                Change::PeerAdded {
                    peer: Box::new(a.clone()),
                },
                Change::PeerAdded {
                    peer: Box::new(b.clone()),
                },
            ],
        ),
        audit_key(),
    )
    .await
    .must()?;
    let mut a2 = a.clone();
    let mut b2 = b.clone();
    std::mem::swap(&mut a2.address_v6, &mut b2.address_v6);
    std::mem::swap(&mut a2.address_v4, &mut b2.address_v4);
    std::mem::swap(&mut a2.name, &mut b2.name);
    std::mem::swap(&mut a2.public_key, &mut b2.public_key);
    s.commit(
        fx.commit(
            srv.id,
            2,
            vec![
                Change::PeerUpdated {
                    before: Box::new(a.clone()),
                    after: Box::new(a2.clone()),
                },
                Change::PeerUpdated {
                    before: Box::new(b.clone()),
                    after: Box::new(b2.clone()),
                },
            ],
        ),
        audit_key(),
    )
    .await
    .must()?;
    let st = s.load_server(srv.id).await.must()?.must()?;
    check_eq!(st.peers.get(&a.id), Some(&a2));
    check_eq!(st.peers.get(&b.id), Some(&b2));

    let mut c = fx.peer(&srv, "c", 9)?;
    c.address_v6 = a2.address_v6;
    c.address_v4 = a2.address_v4;
    c.name = a2.name.clone();
    s.commit(
        fx.commit(
            srv.id,
            3,
            vec![
                Change::PeerRemoved {
                    peer: Box::new(a2.clone()),
                },
                Change::PeerAdded {
                    peer: Box::new(c.clone()),
                },
            ],
        ),
        audit_key(),
    )
    .await
    .must()?;
    let st = s.load_server(srv.id).await.must()?.must()?;
    check_eq!(st.peers.len(), 2);
    check_eq!(st.peers.get(&c.id), Some(&c));
    check!(!st.peers.contains_key(&a.id));
    Ok(())
}

/// Errors of peer changes: adding an existing id, updating or removing a missing peer.
pub async fn peer_change_errors(store: Arc<dyn Store>) -> R {
    let fx = &Fx::new();
    let s = &*store;
    let srv = fx.server("errs", None)?;
    fx.create(s, &srv).await?;
    let a = fx.peer(&srv, "a", 2)?;
    s.commit(fx.add(srv.id, 1, &a), audit_key()).await.must()?;
    let mut again = fx.peer(&srv, "other", 3)?;
    again.id = a.id;
    check_eq!(
        code(s.commit(fx.add(srv.id, 2, &again), audit_key()).await),
        "already_exists"
    );
    let ghost = fx.peer(&srv, "ghost", 4)?;
    let e = s
        .commit(
            fx.commit(
                srv.id,
                2,
                vec![Change::PeerUpdated {
                    before: Box::new(ghost.clone()),
                    after: Box::new(ghost.clone()),
                }],
            ),
            audit_key(),
        )
        .await;
    check_eq!(code(e), "not_found");
    check_eq!(
        code(
            s.commit(
                fx.commit(
                    srv.id,
                    2,
                    vec![Change::PeerRemoved {
                        peer: Box::new(ghost.clone())
                    }]
                ),
                audit_key()
            )
            .await
        ),
        "not_found"
    );
    // Removed earlier in the same commit, then updated: not found.
    let e = s
        .commit(
            fx.commit(
                srv.id,
                2,
                vec![
                    Change::PeerRemoved {
                        peer: Box::new(a.clone()),
                    },
                    Change::PeerUpdated {
                        before: Box::new(a.clone()),
                        after: Box::new(a.clone()),
                    },
                ],
            ),
            audit_key(),
        )
        .await;
    check_eq!(code(e), "not_found");
    // Added and removed in the same commit: nothing remains, one revision.
    let b = fx.peer(&srv, "b", 5)?;
    s.commit(
        fx.commit(
            srv.id,
            2,
            vec![
                Change::PeerAdded {
                    peer: Box::new(b.clone()),
                },
                Change::PeerRemoved { peer: Box::new(b) },
            ],
        ),
        audit_key(),
    )
    .await
    .must()?;
    let st = s.load_server(srv.id).await.must()?.must()?;
    check_eq!((st.revision, st.peers.len()), (RevisionNo(3), 1));
    // A peer of a server cannot be touched through another server.
    let other = fx.server("other", None)?;
    fx.create(s, &other).await?;
    check_eq!(
        code(
            s.commit(
                fx.commit(
                    other.id,
                    1,
                    vec![Change::PeerRemoved {
                        peer: Box::new(a.clone())
                    }]
                ),
                audit_key()
            )
            .await
        ),
        "not_found"
    );
    Ok(())
}

/// Deleting a server keeps its history; re-creating it continues the numbering.
pub async fn delete_and_recreate(store: Arc<dyn Store>) -> R {
    let fx = &Fx::new();
    let s = &*store;
    let srv = fx.server("doomed", None)?;
    fx.create(s, &srv).await?;
    s.commit(fx.add(srv.id, 1, &fx.peer(&srv, "a", 2)?), audit_key())
        .await
        .must()?;
    s.commit(
        fx.commit(
            srv.id,
            2,
            vec![Change::ServerDeleted {
                server: Box::new(srv.clone()),
            }],
        ),
        audit_key(),
    )
    .await
    .must()?;
    check!(s.load_server(srv.id).await.must()?.is_none());
    check_eq!(s.head(srv.id).await.must()?, None);
    check_eq!(s.find_server(&srv.name).await.must()?, None);
    check!(!s
        .list_servers(Page::ALL)
        .await
        .must()?
        .iter()
        .any(|x| x.id == srv.id));
    check_eq!(
        s.revisions(srv.id, RevisionNo::NONE, 10)
            .await
            .must()?
            .len(),
        3
    );
    // The name is free again for another server.
    let twin = fx.server("DOOMED", None)?;
    fx.create(s, &twin).await?;
    s.commit(
        fx.commit(
            twin.id,
            1,
            vec![Change::ServerDeleted {
                server: Box::new(twin),
            }],
        ),
        audit_key(),
    )
    .await
    .must()?;
    // Re-creating needs the last revision as the expected one.
    let re = fx.commit(
        srv.id,
        0,
        vec![Change::ServerCreated {
            server: Box::new(srv.clone()),
        }],
    );
    check_eq!(kind(s.commit(re, audit_key()).await), "stale_revision");
    let rec = s
        .commit(
            fx.commit(
                srv.id,
                3,
                vec![Change::ServerCreated {
                    server: Box::new(srv.clone()),
                }],
            ),
            audit_key(),
        )
        .await
        .must()?;
    check_eq!(rec.record.revision, RevisionNo(4));
    let st = s.load_server(srv.id).await.must()?.must()?;
    check_eq!((st.revision, st.peers.len()), (RevisionNo(4), 0));
    // Delete and re-create in one commit drops the peers. Name checks see the committed
    // servers, so the re-created server needs a name other than its old one.
    s.commit(fx.add(srv.id, 4, &fx.peer(&srv, "b", 3)?), audit_key())
        .await
        .must()?;
    let deleted = Change::ServerDeleted {
        server: Box::new(srv.clone()),
    };
    let e = s
        .commit(
            fx.commit(
                srv.id,
                5,
                vec![
                    deleted.clone(),
                    Change::ServerCreated {
                        server: Box::new(srv.clone()),
                    },
                ],
            ),
            audit_key(),
        )
        .await;
    check_eq!(code(e), "already_exists");
    let mut renamed = srv.clone();
    renamed.name = ServerName::new(fx.name("reborn")).must()?;
    s.commit(
        fx.commit(
            srv.id,
            5,
            vec![
                deleted,
                Change::ServerCreated {
                    server: Box::new(renamed.clone()),
                },
            ],
        ),
        audit_key(),
    )
    .await
    .must()?;
    let st = s.load_server(srv.id).await.must()?.must()?;
    check_eq!(
        (st.server, st.peers.len(), st.revision),
        (renamed, 0, RevisionNo(6))
    );
    Ok(())
}

/// Revisions: oldest first, after a number, at most a limit, equal to what was committed.
pub async fn revision_history(store: Arc<dyn Store>) -> R {
    let fx = &Fx::new();
    let s = &*store;
    let srv = fx.server("hist", None)?;
    fx.create(s, &srv).await?;
    let mut commits = Vec::new();
    for i in 0..5u16 {
        let c = fx.add(
            srv.id,
            u64::from(i) + 1,
            &fx.peer(&srv, &format!("p{i}"), i + 2)?,
        );
        s.commit(c.clone(), audit_key()).await.must()?;
        commits.push(c);
    }
    let all = s
        .revisions(srv.id, RevisionNo::NONE, u64::MAX)
        .await
        .must()?;
    check_eq!(
        all.iter().map(|r| r.revision.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    let page = s.revisions(srv.id, RevisionNo(2), 2).await.must()?;
    check_eq!(
        page.iter().map(|r| r.revision.0).collect::<Vec<_>>(),
        vec![3, 4]
    );
    check_eq!(page[0].changes, commits[1].changes);
    check_eq!(page[0].author, commits[1].author);
    check_eq!(page[0].summary, commits[1].summary);
    check!(s
        .revisions(srv.id, RevisionNo(6), 10)
        .await
        .must()?
        .is_empty());
    check!(s
        .revisions(ServerId::new_random(), RevisionNo::NONE, 10)
        .await
        .must()?
        .is_empty());
    check!(s
        .revisions(srv.id, RevisionNo::NONE, 0)
        .await
        .must()?
        .is_empty());
    Ok(())
}

/// Applied revisions per host.
pub async fn applied_per_host(store: Arc<dyn Store>) -> R {
    let s = &*store;
    let id = ServerId::new_random();
    check_eq!(s.applied(id, "host-a").await.must()?, None);
    s.set_applied(id, "host-a", RevisionNo(3)).await.must()?;
    s.set_applied(id, "host-b", RevisionNo(1)).await.must()?;
    s.set_applied(id, "host-a", RevisionNo(4)).await.must()?;
    check_eq!(s.applied(id, "host-a").await.must()?, Some(RevisionNo(4)));
    check_eq!(s.applied(id, "host-b").await.must()?, Some(RevisionNo(1)));
    check_eq!(
        s.applied(ServerId::new_random(), "host-a").await.must()?,
        None
    );
    Ok(())
}

/// Observed statistics: updated in place, unknown peers ignored, last entry wins, never a
/// revision; an unknown server is `NotFound`.
pub async fn peer_statistics(store: Arc<dyn Store>) -> R {
    let fx = &Fx::new();
    let s = &*store;
    let srv = fx.server("stats", None)?;
    fx.create(s, &srv).await?;
    let a = fx.peer(&srv, "a", 2)?;
    let b = fx.peer(&srv, "b", 3)?;
    s.commit(
        fx.commit(
            srv.id,
            1,
            vec![
                Change::PeerAdded {
                    peer: Box::new(a.clone()),
                },
                Change::PeerAdded {
                    peer: Box::new(b.clone()),
                },
            ],
        ),
        audit_key(),
    )
    .await
    .must()?;
    let st1 = PeerStats {
        last_seen: Some(fx.t0 + Duration::seconds(5)),
        rx_bytes: 10,
        tx_bytes: 20,
    };
    let st2 = PeerStats {
        last_seen: None,
        rx_bytes: 1 << 62,
        tx_bytes: 3,
    };
    let later = PeerStats {
        last_seen: Some(fx.t0 + Duration::seconds(9)),
        rx_bytes: 11,
        tx_bytes: 21,
    };
    s.update_peer_stats(
        srv.id,
        &[
            (a.id, st1),
            (b.id, st2),
            (PeerId::new_random(), st1),
            (a.id, later),
        ],
    )
    .await
    .must()?;
    let loaded = s.load_server(srv.id).await.must()?.must()?;
    check_eq!(loaded.peers.get(&a.id).map(|p| p.stats), Some(later));
    check_eq!(loaded.peers.get(&b.id).map(|p| p.stats), Some(st2));
    check_eq!(loaded.revision, RevisionNo(2));
    check_eq!(
        loaded.peers.get(&a.id).map(Peer::without_stats),
        Some(a.clone())
    );
    check_eq!(
        code(
            s.update_peer_stats(ServerId::new_random(), &[(a.id, st1)])
                .await
        ),
        "not_found"
    );
    s.update_peer_stats(srv.id, &[]).await.must()?;
    Ok(())
}

/// Pagination and order of servers (by case-folded name) and users: this check's names
/// come in that order among all, and every page is the matching slice of the full list.
pub async fn listing_order_and_pages(store: Arc<dyn Store>) -> R {
    let fx = &Fx::new();
    let s = &*store;
    for n in ["delta", "Alpha", "charlie", "Bravo", "echo"] {
        fx.create(s, &fx.server(n, None)?).await?;
    }
    let names = |v: Vec<crate::model::ServerSummary>| {
        v.into_iter()
            .map(|x| x.name.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    let mine = |all: &[String]| -> Vec<String> {
        all.iter()
            .filter(|n| n.ends_with(&fx.tag))
            .cloned()
            .collect()
    };
    let all = names(s.list_servers(Page::ALL).await.must()?);
    check_eq!(
        mine(&all),
        ["Alpha", "Bravo", "charlie", "delta", "echo"].map(|n| fx.name(n))
    );
    let first = all.iter().position(|n| *n == fx.name("Alpha")).must()? as u64;
    for (offset, limit) in [(first + 1, 2), (first + 4, 10), (0, 3)] {
        let page = names(s.list_servers(Page { offset, limit }).await.must()?);
        let from = usize::try_from(offset).must()?.min(all.len());
        let to = (from + usize::try_from(limit).must()?).min(all.len());
        check_eq!(page, all[from..to]);
    }
    check!(s
        .list_servers(Page {
            offset: all.len() as u64,
            limit: 10
        })
        .await
        .must()?
        .is_empty());
    check!(s.list_servers(Page::first(0)).await.must()?.is_empty());

    let mut changes = Vec::new();
    for n in ["mallory", "Carol", "bob", "Dave"] {
        changes.push(IdentityChange::UserCreated {
            user: Box::new(fx.user(n, None)?),
        });
    }
    s.commit_identity(changes, fx.entry("user.create", "user/*"), audit_key())
        .await
        .must()?;
    let users = |v: Vec<User>| -> Vec<String> {
        v.into_iter().map(|u| u.name.as_str().to_owned()).collect()
    };
    let all = users(s.list_users(Page::ALL).await.must()?);
    check_eq!(
        mine(&all),
        ["bob", "Carol", "Dave", "mallory"].map(|n| fx.name(n))
    );
    let dave = all.iter().position(|n| *n == fx.name("Dave")).must()? as u64;
    let page = users(
        s.list_users(Page {
            offset: dave,
            limit: 1,
        })
        .await
        .must()?,
    );
    check_eq!(page, [fx.name("Dave")]);
    Ok(())
}

/// Users: unique names (case-insensitive) and e-mails, version CAS, not found, delete
/// removes tokens; a batch with one failing change writes nothing.
pub async fn users_versions_and_uniqueness(store: Arc<dyn Store>) -> R {
    let fx = &Fx::new();
    let s = &*store;
    let alice = fx.user("alice", Some("alice@example.org"))?;
    s.commit_identity(
        vec![IdentityChange::UserCreated {
            user: Box::new(alice.clone()),
        }],
        fx.entry("user.create", "user/a"),
        audit_key(),
    )
    .await
    .must()?;
    check_eq!(s.get_user(alice.id).await.must()?.must()?, alice);
    check_eq!(
        s.find_user(&UserName::new(fx.name("ALICE")).must()?)
            .await
            .must()?
            .must()?,
        alice
    );
    check!(s
        .find_user(&UserName::new(fx.name("nobody")).must()?)
        .await
        .must()?
        .is_none());

    let audits = audit_len(s).await?;
    let clash = |u| async {
        s.commit_identity(
            vec![IdentityChange::UserCreated { user: Box::new(u) }],
            fx.entry("user.create", "user/x"),
            audit_key(),
        )
        .await
    };
    check_eq!(code(clash(fx.user("Alice", None)?).await), "already_exists");
    check_eq!(
        code(clash(fx.user("alice2", Some("alice@example.org"))?).await),
        "already_exists"
    );
    let mut same_id = fx.user("alice3", None)?;
    same_id.id = alice.id;
    check_eq!(code(clash(same_id).await), "already_exists");
    check_eq!(audit_len(s).await?, audits);

    // Version CAS.
    let mut v2 = alice.clone();
    v2.version = 2;
    v2.token_version = 1;
    v2.email = Some(format!("{}.a@example.org", fx.tag));
    let upd = |u: crate::model::User| async move {
        s.commit_identity(
            vec![IdentityChange::UserUpdated { user: Box::new(u) }],
            fx.entry("user.update", "user/a"),
            audit_key(),
        )
        .await
    };
    upd(v2.clone()).await.must()?;
    check_eq!(kind(upd(v2.clone()).await), "stale_user");
    let mut skip = v2.clone();
    skip.version = 4;
    check_eq!(kind(upd(skip).await), "stale_user");
    check_eq!(code(upd(fx.user("ghost", None)?).await), "not_found");
    check_eq!(s.get_user(alice.id).await.must()?.must()?, v2);
    // The old e-mail is free now; the new one is taken.
    clash(fx.user("carol", Some("alice@example.org"))?)
        .await
        .must()?;
    check_eq!(
        code(clash(fx.user("dave", Some("a@example.org"))?).await),
        "already_exists"
    );
    // Two users without e-mail are fine.
    clash(fx.user("erin", None)?).await.must()?;
    clash(fx.user("frank", None)?).await.must()?;

    // Atomicity: the second change fails, so the first is not kept either.
    let g = fx.user("grace", None)?;
    let e = s
        .commit_identity(
            vec![
                IdentityChange::UserCreated {
                    user: Box::new(g.clone()),
                },
                IdentityChange::UserDeleted {
                    id: crate::model::UserId::new_random(),
                },
            ],
            fx.entry("user.create", "user/g"),
            audit_key(),
        )
        .await;
    check_eq!(code(e), "not_found");
    check!(s.get_user(g.id).await.must()?.is_none());

    // Changes in one batch see each other.
    let h = fx.user("heidi", None)?;
    let mut h2 = h.clone();
    h2.version = 2;
    s.commit_identity(
        vec![
            IdentityChange::UserCreated {
                user: Box::new(h.clone()),
            },
            IdentityChange::UserUpdated {
                user: Box::new(h2.clone()),
            },
        ],
        fx.entry("user.create", "user/h"),
        audit_key(),
    )
    .await
    .must()?;
    check_eq!(s.get_user(h.id).await.must()?.must()?, h2);

    // Deleting a user.
    s.commit_identity(
        vec![IdentityChange::UserDeleted { id: h.id }],
        fx.entry("user.delete", "user/h"),
        audit_key(),
    )
    .await
    .must()?;
    check!(s.get_user(h.id).await.must()?.is_none());
    check_eq!(
        code(
            s.commit_identity(
                vec![IdentityChange::UserDeleted { id: h.id }],
                fx.entry("user.delete", "user/h"),
                audit_key()
            )
            .await
        ),
        "not_found"
    );
    Ok(())
}

fn token(fx: &Fx, user: UserId, name: &str, created_offset: i64) -> ApiTokenRecord {
    ApiTokenRecord {
        id: TokenId::generate(),
        user_id: user,
        name: name.into(),
        secret_hash: "ab".repeat(32),
        scopes: Some(vec![Permission::new(Resource::Peer, Action::Read)]),
        created_at: fx.t0 + Duration::seconds(created_offset),
        expires_at: Some(fx.t0 + Duration::days(1)),
        revoked: false,
    }
}

/// Roles and tokens: put/replace/delete, create for a missing user, duplicates, revoke,
/// ordering and filtering, tokens removed with their user.
pub async fn roles_and_tokens(store: Arc<dyn Store>) -> R {
    let fx = &Fx::new();
    let s = &*store;
    let role = |name: &str, d: &str| -> std::result::Result<Role, Failure> {
        let perms = vec![Permission::new(Resource::Peer, Action::Read)];
        Role::custom(
            RoleName::new(fx.name(name)).must()?,
            Description::new(d).must()?,
            perms,
        )
        .must()
    };
    s.commit_identity(
        vec![
            IdentityChange::RolePut {
                role: role("viewer", "v1")?,
            },
            IdentityChange::RolePut {
                role: role("editor", "e")?,
            },
        ],
        fx.entry("role.put", "role/*"),
        audit_key(),
    )
    .await
    .must()?;
    // The same name in another case replaces the role.
    s.commit_identity(
        vec![IdentityChange::RolePut {
            role: role("Viewer", "v2")?,
        }],
        fx.entry("role.put", "role/viewer"),
        audit_key(),
    )
    .await
    .must()?;
    let mine = |roles: Vec<Role>| -> Vec<Role> {
        roles
            .into_iter()
            .filter(|r| r.name.as_str().ends_with(&fx.tag))
            .collect()
    };
    let roles = mine(s.list_roles().await.must()?);
    check_eq!(roles, vec![role("editor", "e")?, role("Viewer", "v2")?]);
    s.commit_identity(
        vec![IdentityChange::RoleDeleted {
            name: RoleName::new(fx.name("EDITOR")).must()?,
        }],
        fx.entry("role.delete", "role/editor"),
        audit_key(),
    )
    .await
    .must()?;
    check_eq!(
        code(
            s.commit_identity(
                vec![IdentityChange::RoleDeleted {
                    name: RoleName::new(fx.name("EDITOR")).must()?
                }],
                fx.entry("role.delete", "role/editor"),
                audit_key()
            )
            .await
        ),
        "not_found"
    );
    check_eq!(mine(s.list_roles().await.must()?).len(), 1);

    let u1 = fx.user("owner1", None)?;
    let u2 = fx.user("owner2", None)?;
    s.commit_identity(
        vec![
            IdentityChange::UserCreated {
                user: Box::new(u1.clone()),
            },
            IdentityChange::UserCreated {
                user: Box::new(u2.clone()),
            },
        ],
        fx.entry("user.create", "user/*"),
        audit_key(),
    )
    .await
    .must()?;
    let t_late = token(fx, u1.id, "late", 50);
    let t_early = token(fx, u1.id, "early", 10);
    let t_other = token(fx, u2.id, "other", 30);
    for tk in [&t_late, &t_early, &t_other] {
        s.commit_identity(
            vec![IdentityChange::TokenCreated { token: tk.clone() }],
            fx.entry("token.create", "token/x"),
            audit_key(),
        )
        .await
        .must()?;
    }
    let mut dup = token(fx, u1.id, "dup", 0);
    dup.id = t_late.id;
    check_eq!(
        code(
            s.commit_identity(
                vec![IdentityChange::TokenCreated { token: dup }],
                fx.entry("token.create", "t"),
                audit_key()
            )
            .await
        ),
        "already_exists"
    );
    let orphan = token(fx, UserId::new_random(), "orphan", 0);
    check_eq!(
        code(
            s.commit_identity(
                vec![IdentityChange::TokenCreated { token: orphan }],
                fx.entry("token.create", "t"),
                audit_key()
            )
            .await
        ),
        "not_found"
    );

    check_eq!(s.get_token(t_early.id).await.must()?.must()?, t_early);
    check!(s.get_token(TokenId::generate()).await.must()?.is_none());
    // Tokens of this check's users only (the store may hold others).
    let ids = |v: Vec<ApiTokenRecord>| {
        v.into_iter()
            .filter(|t| t.user_id == u1.id || t.user_id == u2.id)
            .map(|t| t.id)
            .collect::<Vec<_>>()
    };
    check_eq!(
        ids(s.list_tokens(None).await.must()?),
        vec![t_early.id, t_other.id, t_late.id]
    );
    check_eq!(
        ids(s.list_tokens(Some(u1.id)).await.must()?),
        vec![t_early.id, t_late.id]
    );

    s.commit_identity(
        vec![IdentityChange::TokenRevoked { id: t_early.id }],
        fx.entry("token.revoke", "t"),
        audit_key(),
    )
    .await
    .must()?;
    check!(s.get_token(t_early.id).await.must()?.must()?.revoked);
    check_eq!(
        code(
            s.commit_identity(
                vec![IdentityChange::TokenRevoked {
                    id: TokenId::generate()
                }],
                fx.entry("token.revoke", "t"),
                audit_key()
            )
            .await
        ),
        "not_found"
    );

    s.commit_identity(
        vec![IdentityChange::UserDeleted { id: u1.id }],
        fx.entry("user.delete", "user/1"),
        audit_key(),
    )
    .await
    .must()?;
    check_eq!(ids(s.list_tokens(None).await.must()?), vec![t_other.id]);
    check!(s.get_token(t_late.id).await.must()?.is_none());
    Ok(())
}

/// The audit log: one record per commit (revision and server filled in), per identity
/// commit and per plain append, numbered on from the last record without gaps,
/// hash-chained, queryable (each query here limited to this check's records with
/// `after_seq`, which combines with the other filters).
pub async fn audit_log(store: Arc<dyn Store>) -> R {
    let fx = &Fx::new();
    let s = &*store;
    let b = audit_seq(s).await?;
    let srv = fx.server("audited", None)?;
    fx.create(s, &srv).await?;
    let mut c = fx.add(srv.id, 1, &fx.peer(&srv, "a", 2)?);
    c.audit.at = fx.t0 + Duration::seconds(10);
    s.commit(c, audit_key()).await.must()?;
    let mut e = fx.entry("secret.export", &format!("server/{}/peer/x", srv.id));
    e.actor.label = format!("user:{}", fx.name("alice"));
    e.at = fx.t0 + Duration::seconds(20);
    let rec = s.append_audit(e.clone(), audit_key()).await.must()?;
    check_eq!(rec.seq, b + 3);
    check_eq!(rec.entry, e);
    let mut e2 = fx.entry("user.create", &format!("user/{}/bob", fx.tag));
    e2.at = fx.t0 + Duration::seconds(30);
    s.commit_identity(
        vec![IdentityChange::UserCreated {
            user: Box::new(fx.user("bob", None)?),
        }],
        e2.clone(),
        audit_key(),
    )
    .await
    .must()?;

    let all = s.query_audit(&AuditQuery::default()).await.must()?;
    verify_chain(s).await.must()?;
    let mine: Vec<&AuditRecord> = all.iter().filter(|r| r.seq > b).collect();
    check_eq!(
        mine.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![b + 1, b + 2, b + 3, b + 4]
    );
    check_eq!(mine[0].entry.revision, Some(RevisionNo(1)));
    check_eq!(mine[1].entry.revision, Some(RevisionNo(2)));
    check_eq!(mine[1].entry.server_id, Some(srv.id));
    check_eq!(mine[3].entry, e2);
    check_eq!(*mine[2], rec);

    let q = |q: AuditQuery| async move {
        Ok::<_, Failure>(
            s.query_audit(&q)
                .await
                .must()?
                .into_iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>(),
        )
    };
    let after = Some(b);
    check_eq!(
        q(AuditQuery {
            actor: Some(format!("user:{}", fx.name("alice"))),
            ..Default::default()
        })
        .await?,
        vec![b + 3]
    );
    check_eq!(
        q(AuditQuery {
            server_id: Some(srv.id),
            ..Default::default()
        })
        .await?,
        vec![b + 1, b + 2]
    );
    check_eq!(
        q(AuditQuery {
            object_prefix: Some(format!("server/{}/peer/", srv.id)),
            ..Default::default()
        })
        .await?,
        vec![b + 3]
    );
    check_eq!(
        q(AuditQuery {
            object_prefix: Some(format!("user/{}/", fx.tag)),
            ..Default::default()
        })
        .await?,
        vec![b + 4]
    );
    check_eq!(
        q(AuditQuery {
            object_prefix: Some("%".into()),
            after_seq: after,
            ..Default::default()
        })
        .await?,
        Vec::<u64>::new()
    );
    check_eq!(
        q(AuditQuery {
            since: Some(fx.t0 + Duration::seconds(10)),
            after_seq: after,
            ..Default::default()
        })
        .await?,
        vec![b + 2, b + 3, b + 4]
    );
    check_eq!(
        q(AuditQuery {
            until: Some(fx.t0 + Duration::seconds(20)),
            after_seq: after,
            ..Default::default()
        })
        .await?,
        vec![b + 1, b + 2]
    );
    check_eq!(
        q(AuditQuery {
            since: Some(fx.t0 + Duration::seconds(20)),
            until: Some(fx.t0 + Duration::seconds(20) + Duration::nanoseconds(1)),
            after_seq: after,
            ..Default::default()
        })
        .await?,
        vec![b + 3]
    );
    check_eq!(
        q(AuditQuery {
            after_seq: Some(b + 2),
            limit: Some(1),
            ..Default::default()
        })
        .await?,
        vec![b + 3]
    );
    check_eq!(
        q(AuditQuery {
            limit: Some(0),
            ..Default::default()
        })
        .await?,
        Vec::<u64>::new()
    );
    Ok(())
}

/// F16: many writers from the same base revision at once: exactly one wins, the others
/// get a stale revision, and the history has one revision more.
pub async fn same_base_exactly_one_wins(store: Arc<dyn Store>) -> R {
    let fx = &Fx::new();
    let s = &*store;
    let srv = fx.server("race", Some("10.20.0.0/24"))?;
    fx.create(s, &srv).await?;
    let mut commits = Vec::new();
    for i in 0..16u16 {
        commits.push(fx.add(srv.id, 1, &fx.peer(&srv, &format!("p{i}"), i + 2)?));
    }
    // All in flight at once (each on its own connection on a pooled engine).
    let results = join_all(commits.into_iter().map(|c| s.commit(c, audit_key()))).await;
    let mut ok = 0;
    for r in results {
        match r {
            Ok(r) => {
                ok += 1;
                check_eq!(r.record.revision, RevisionNo(2));
            }
            Err(e) => check!(e.is_stale_revision(), "a loser got {e}"),
        }
    }
    check_eq!(ok, 1);
    let st = s.load_server(srv.id).await.must()?.must()?;
    check_eq!((st.revision, st.peers.len()), (RevisionNo(2), 1));
    check_eq!(
        s.revisions(srv.id, RevisionNo::NONE, 10)
            .await
            .must()?
            .len(),
        2
    );
    verify_chain(s).await.must()?;
    Ok(())
}

/// F3: a commit that fails after its address was chosen leaves the address free: the next
/// commit can take it, and nothing of the failed one is visible.
pub async fn failed_commit_returns_the_address(store: Arc<dyn Store>) -> R {
    let fx = &Fx::new();
    let s = &*store;
    let srv = fx.server("f3", Some("10.30.0.0/24"))?;
    fx.create(s, &srv).await?;
    let taken = fx.peer(&srv, "taken", 2)?;
    s.commit(fx.add(srv.id, 1, &taken), audit_key())
        .await
        .must()?;
    let before = (
        s.load_server(srv.id).await.must()?.must()?,
        audit_len(s).await?,
    );
    // The new peer got address 3, but the commit fails on its name.
    let fresh = fx.peer(&srv, "fresh", 3)?;
    let mut clash = fx.peer(&srv, "TAKEN", 4)?;
    clash.name = taken.name.clone();
    let e = s
        .commit(
            fx.commit(
                srv.id,
                2,
                vec![
                    Change::PeerAdded {
                        peer: Box::new(fresh.clone()),
                    },
                    Change::PeerAdded {
                        peer: Box::new(clash),
                    },
                ],
            ),
            audit_key(),
        )
        .await;
    check_eq!(code(e), "already_exists");
    check_eq!(
        (
            s.load_server(srv.id).await.must()?.must()?,
            audit_len(s).await?
        ),
        before
    );
    // Address 3 is still free.
    let mut again = fx.peer(&srv, "again", 3)?;
    again.address_v4 = fresh.address_v4;
    s.commit(fx.add(srv.id, 2, &again), audit_key())
        .await
        .must()?;
    let st = s.load_server(srv.id).await.must()?.must()?;
    check_eq!(st.peers.len(), 2);
    Ok(())
}

/// F17: rolling back past an address that was given to another peer since is a Conflict
/// naming the address (the inverse of the removal re-adds a peer whose address is taken).
pub async fn rollback_after_reassignment_conflicts(store: Arc<dyn Store>) -> R {
    let fx = &Fx::new();
    let s = &*store;
    let srv = fx.server("f17", Some("10.40.0.0/24"))?;
    fx.create(s, &srv).await?;
    let a = fx.peer(&srv, "a", 2)?;
    s.commit(fx.add(srv.id, 1, &a), audit_key()).await.must()?;
    let removal = fx.commit(
        srv.id,
        2,
        vec![Change::PeerRemoved {
            peer: Box::new(a.clone()),
        }],
    );
    s.commit(removal.clone(), audit_key()).await.must()?;
    let mut b = fx.peer(&srv, "b", 9)?;
    b.address_v4 = a.address_v4;
    s.commit(fx.add(srv.id, 3, &b), audit_key()).await.must()?;
    // Roll back to revision 2: the inverse of revision 3's removal.
    let inverse: Vec<Change> = removal.changes.iter().rev().map(Change::inverse).collect();
    let e = s
        .commit(fx.commit(srv.id, 4, inverse), audit_key())
        .await
        .must_err()?;
    check_eq!(e.code(), "conflict");
    check!(
        matches!(
            e.conflict_kind(),
            Some(ConflictKind::Taken(Taken::Address(_)))
        ),
        "{e} should be a taken address"
    );
    let addr = a.address_v4.must()?.to_string();
    check!(e.to_string().contains(&addr), "{e} should name {addr}");
    let st = s.load_server(srv.id).await.must()?.must()?;
    check_eq!((st.revision, st.peers.len()), (RevisionNo(4), 1));
    Ok(())
}

/// Every revision a commit writes carries a MAC under the audit key it was given, and
/// the commit returns the revision and its audit record, whose link is the stored head.
pub async fn keyed_revisions_and_audit(store: Arc<dyn Store>) -> R {
    let fx = &Fx::new();
    let s = &*store;
    let srv = fx.server("keyed", None)?;
    fx.create(s, &srv).await?;
    let c = s
        .commit(fx.add(srv.id, 1, &fx.peer(&srv, "a", 2)?), audit_key())
        .await
        .must()?;
    check_eq!(s.audit_head().await.must()?, c.audit.head());
    check_eq!(c.audit.entry.revision, Some(RevisionNo(2)));
    let revs = s.revisions(srv.id, RevisionNo::NONE, 10).await.must()?;
    check_eq!(revs.len(), 2);
    check_eq!(revs[1], c.record);
    let legacy = LegacyBound::empty();
    for r in &revs {
        check_eq!(
            check_revision(Some((audit_key(), &legacy)), srv.id, r).must()?,
            RevisionIntegrity::Keyed
        );
    }
    // The MAC covers what the revision says: another summary does not verify.
    let mut changed = revs[1].clone();
    changed.summary.push('!');
    check_eq!(
        kind(check_revision(
            Some((audit_key(), &legacy)),
            srv.id,
            &changed
        )),
        "revision_altered"
    );
    let rec = s
        .append_audit(fx.entry("secret.export", "x"), audit_key())
        .await
        .must()?;
    check_eq!(s.audit_head().await.must()?, rec.head());
    let id_rec = s
        .commit_identity(
            vec![IdentityChange::UserCreated {
                user: Box::new(fx.user("keyed", None)?),
            }],
            fx.entry("user.create", "user/keyed"),
            audit_key(),
        )
        .await
        .must()?;
    check_eq!(id_rec.seq, rec.seq + 1);
    check_eq!(s.audit_head().await.must()?, id_rec.head());
    verify_chain(s).await.must()?;
    Ok(())
}

/// The audit key: created once (also by two callers at once), bound to what the store
/// held then, read back as stored, re-sealed only from the value expected and with the
/// same bound.
pub async fn audit_key_and_head(store: Arc<dyn Store>) -> R {
    let fx = &Fx::new();
    let s = &*store;
    let had = s.audit_key().await.must()?;
    let head = s.audit_head().await.must()?;
    let seal = |legacy: &LegacyBound| {
        fx.sealer.seal(
            SecretKind::AuditKey,
            "conformance",
            legacy.audit_hash.as_bytes(),
        )
    };
    let (a, b) = futures::join!(s.init_audit_key(&seal), s.init_audit_key(&seal));
    let ((ka, ca), (kb, cb)) = (a.must()?, b.must()?);
    check_eq!(ka, kb);
    check_eq!(u8::from(ca) + u8::from(cb), u8::from(had.is_none()));
    if let Some(k) = &had {
        check_eq!(&ka, k);
    } else {
        // Made now: bound to the log's tail and every server's head.
        check_eq!(ka.legacy.audit_seq, head.seq);
        check_eq!(ka.legacy.audit_hash, head.hash);
        for srv in s.list_servers(Page::ALL).await.must()? {
            check_eq!(ka.legacy.revisions.get(&srv.id), Some(&srv.revision));
        }
    }
    check_eq!(s.audit_key().await.must()?, Some(ka.clone()));
    let (again, created) = s.init_audit_key(&seal).await.must()?;
    check_eq!((again, created), (ka.clone(), false));

    // Re-sealing: only from the expected value, never moving the bound.
    let resealed = StoredAuditKey {
        sealed: fx
            .sealer
            .seal(SecretKind::AuditKey, "conformance", b"resealed")
            .must()?,
        legacy: ka.legacy.clone(),
    };
    check_eq!(
        code(s.reseal_audit_key(&resealed.sealed, &resealed).await),
        "conflict"
    );
    let mut moved = resealed.clone();
    moved.legacy.audit_seq += 1;
    check_eq!(
        code(s.reseal_audit_key(&ka.sealed, &moved).await),
        "conflict"
    );
    check_eq!(s.audit_key().await.must()?, Some(ka.clone()));
    s.reseal_audit_key(&ka.sealed, &resealed).await.must()?;
    check_eq!(s.audit_key().await.must()?, Some(resealed.clone()));
    // Back as it was (a store may run the suite more than once).
    s.reseal_audit_key(&resealed.sealed, &ka).await.must()?;
    check_eq!(s.audit_key().await.must()?, Some(ka));
    // Nothing of this touched the log.
    check_eq!(s.audit_head().await.must()?, head);
    Ok(())
}

mod throttle;

pub use throttle::{
    throttle_cas, throttle_concurrent_failures, throttle_expiry,
    throttle_success_clears_account_only,
};

/// [`ServerStore::commit_all`](crate::store::ServerStore::commit_all): a chain of peer
/// commits lands as the same commits one by one would (each its own keyed revision and
/// audit record, each checked on the peers the ones before it left: a peer added and
/// then changed, a removed peer's name and addresses taken by a later commit); when one
/// commit of a chain breaks a rule, it gets its own error, what landed is a prefix and
/// every other commit is told it is stale; a chain from a stale head lands nothing; and
/// commits of different servers in one call each land.
pub async fn commit_all_batches(store: Arc<dyn Store>) -> R {
    let fx = &Fx::new();
    let s = &*store;
    let srv = fx.server("batch", Some("10.11.0.0/24"))?;
    fx.create(s, &srv).await?;
    let seq0 = audit_seq(s).await?;
    let a = fx.peer(&srv, "a", 2)?;
    let b = fx.peer(&srv, "b", 3)?;
    let mut a2 = a.clone();
    a2.name = PeerName::new("a-renamed").must()?;
    a2.address_v6 = Some(Ipv6Addr::new(0xfd00, 0x42, 0, 0, 0, 0, 0, 9));
    let mut c = fx.peer(&srv, "c", 4)?;
    // c takes the name and addresses b leaves in the commit before it.
    c.name = b.name.clone();
    c.address_v6 = b.address_v6;
    c.address_v4 = b.address_v4;
    let chain = vec![
        fx.add(srv.id, 1, &a),
        fx.add(srv.id, 2, &b),
        fx.commit(
            srv.id,
            3,
            vec![Change::PeerUpdated {
                before: Box::new(a.clone()),
                after: Box::new(a2.clone()),
            }],
        ),
        fx.commit(
            srv.id,
            4,
            vec![Change::PeerRemoved {
                peer: Box::new(b.clone()),
            }],
        ),
        fx.add(srv.id, 5, &c),
    ];
    let results = s.commit_all(chain.clone(), audit_key()).await;
    check_eq!(results.len(), 5);
    let mut done = Vec::new();
    for r in results {
        done.push(r.must()?);
    }
    let legacy = LegacyBound::empty();
    let revs = s.revisions(srv.id, RevisionNo(1), 10).await.must()?;
    check_eq!(revs.len(), 5);
    for (i, ((d, rev), sent)) in done.iter().zip(&revs).zip(&chain).enumerate() {
        let n = i as u64;
        check_eq!(d.record.revision, RevisionNo(2 + n));
        check_eq!(&d.record, rev);
        check_eq!(&d.record.changes, &sent.changes);
        check_eq!(
            check_revision(Some((audit_key(), &legacy)), srv.id, rev).must()?,
            RevisionIntegrity::Keyed
        );
        check_eq!(d.audit.seq, seq0 + 1 + n);
        check_eq!(d.audit.entry.revision, Some(RevisionNo(2 + n)));
    }
    check_eq!(s.audit_head().await.must()?, done[4].audit.head());
    verify_chain(s).await.must()?;
    let st = s.load_server(srv.id).await.must()?.must()?;
    check_eq!(st.revision, RevisionNo(6));
    check_eq!(st.peers.len(), 2);
    check_eq!(st.peers.get(&a.id).must()?, &a2);
    check_eq!(st.peers.get(&c.id).must()?, &c);

    // A chain on stored peers: a removed, c changed twice, and a's name and addresses
    // given to a new peer.
    let mut c2 = c.clone();
    c2.enabled = false;
    let mut c3 = c2.clone();
    c3.name = PeerName::new("c-renamed").must()?;
    let mut n = fx.peer(&srv, "n", 11)?;
    n.name = a2.name.clone();
    n.address_v6 = a2.address_v6;
    n.address_v4 = a2.address_v4;
    let results = s
        .commit_all(
            vec![
                fx.commit(
                    srv.id,
                    6,
                    vec![Change::PeerRemoved {
                        peer: Box::new(a2.clone()),
                    }],
                ),
                fx.commit(
                    srv.id,
                    7,
                    vec![Change::PeerUpdated {
                        before: Box::new(c.clone()),
                        after: Box::new(c2.clone()),
                    }],
                ),
                fx.commit(
                    srv.id,
                    8,
                    vec![Change::PeerUpdated {
                        before: Box::new(c2.clone()),
                        after: Box::new(c3.clone()),
                    }],
                ),
                fx.add(srv.id, 9, &n),
            ],
            audit_key(),
        )
        .await;
    for r in results {
        r.must()?;
    }
    let st = s.load_server(srv.id).await.must()?.must()?;
    check_eq!(st.revision, RevisionNo(10));
    check_eq!(st.peers.len(), 2);
    check!(
        !st.peers.contains_key(&a.id),
        "a removed peer is still stored"
    );
    check_eq!(st.peers.get(&c.id).must()?, &c3);
    check_eq!(st.peers.get(&n.id).must()?, &n);
    check_eq!(
        s.find_peer(srv.id, PeerLookup::Name(&a2.name))
            .await
            .must()?
            .map(|p| p.id),
        Some(n.id)
    );
    verify_chain(s).await.must()?;

    // The second of three breaks a rule (a name, then an address, the first took).
    for (clash, host) in [("name", 20), ("address", 23)] {
        let head = s.head(srv.id).await.must()?.must()?.0;
        let seq = audit_seq(s).await?;
        let d = fx.peer(&srv, &format!("d-{clash}"), host)?;
        let mut e = fx.peer(&srv, &format!("e-{clash}"), host + 1)?;
        if clash == "name" {
            e.name = d.name.clone();
        } else {
            e.address_v6 = d.address_v6;
        }
        let f = fx.peer(&srv, &format!("f-{clash}"), host + 2)?;
        let results = s
            .commit_all(
                vec![
                    fx.add(srv.id, head, &d),
                    fx.add(srv.id, head + 1, &e),
                    fx.add(srv.id, head + 2, &f),
                ],
                audit_key(),
            )
            .await;
        check_eq!(results.len(), 3);
        let kinds: Vec<&str> = results.into_iter().map(kind).collect();
        let landed = kinds.iter().take_while(|k| **k == "ok").count();
        check!(landed <= 1, "{clash}: {kinds:?}");
        let own = if clash == "name" {
            "already_exists"
        } else {
            "taken"
        };
        check_eq!(kinds[1], own);
        for (i, k) in kinds.iter().enumerate() {
            check!(
                i == 1 || i < landed || *k == "stale_revision",
                "{clash}: {kinds:?}"
            );
        }
        let st = s.load_server(srv.id).await.must()?.must()?;
        check_eq!(st.revision.0, head + landed as u64);
        check_eq!(st.peers.contains_key(&d.id), landed == 1);
        check!(!st.peers.contains_key(&e.id) && !st.peers.contains_key(&f.id));
        check_eq!(audit_seq(s).await?, seq + landed as u64);
        verify_chain(s).await.must()?;
    }

    // From a stale head: nothing lands, the first is told why.
    let head = s.head(srv.id).await.must()?.must()?.0;
    let g = fx.peer(&srv, "g", 30)?;
    let h = fx.peer(&srv, "h", 31)?;
    let results = s
        .commit_all(
            vec![fx.add(srv.id, head - 1, &g), fx.add(srv.id, head, &h)],
            audit_key(),
        )
        .await;
    let kinds: Vec<&str> = results.into_iter().map(kind).collect();
    check_eq!(kinds, vec!["stale_revision", "stale_revision"]);
    check_eq!(s.head(srv.id).await.must()?.must()?.0, head);

    // Two servers in one call: each commit lands.
    let other = fx.server("batch-other", None)?;
    fx.create(s, &other).await?;
    let x = fx.peer(&other, "x", 2)?;
    let results = s
        .commit_all(
            vec![fx.add(srv.id, head, &g), fx.add(other.id, 1, &x)],
            audit_key(),
        )
        .await;
    for r in results {
        r.must()?;
    }
    check_eq!(s.head(srv.id).await.must()?.must()?.0, head + 1);
    check_eq!(s.head(other.id).await.must()?.must()?, RevisionNo(2));
    verify_chain(s).await.must()?;
    Ok(())
}
