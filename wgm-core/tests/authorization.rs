//! Every public `Manager` method, run by principals that lack the right: each call is
//! refused (`PermissionDenied`, or `NotFound` where the library hides that the object
//! exists, or an empty list where it filters) and writes nothing — no revision, no
//! applied revision, no change to users, tokens, roles or the host, and no audit record
//! except the refusal's own.
//!
//! Completeness is checked, not promised: [`every_public_manager_method_is_listed`] reads
//! the `impl Manager` blocks of the crate's sources and fails when a public method is
//! neither run here ([`CASES`]) nor listed with the reason it needs no authorization
//! ([`EXEMPT`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use wgm_core::backend::firewall::MemoryFirewall;
use wgm_core::backend::{MemoryWireGuard, WireGuardBackend};
use wgm_core::manager::{ApplyOptions, Host};
use wgm_core::manager::{
    Clock, ImportOptions, Manager, ManagerConfig, ManualClock, NewPeer, NewServer, NewToken,
    NewUser, PeerUpdate, ServerUpdate, UserUpdate,
};
use wgm_core::model::{
    AuditOutcome, AuditQuery, HostReport, Lease, LeaseRequest, Page, PeerId, RevisionNo, ServerId,
    UserId,
};
use wgm_core::names::{
    Description, HostName, InterfaceName, PeerName, RoleName, ServerName, UserName,
};
use wgm_core::net::{ListenPort, Mtu};
use wgm_core::rbac::{Principal, Role};
use wgm_core::seal::{MasterKey, Sealer};
use wgm_core::store::{AuditStore, HostStateStore, IdentityStore, MemoryStore, ServerStore};
use wgm_core::{auth, Error};

/// Public `Manager` methods that take no principal, and why they need no authorization.
const EXEMPT: &[(&str, &str)] = &[
    (
        "builder",
        "constructs a manager; no principal exists before it",
    ),
    (
        "watch",
        "a stream, not a call that is refused: it passes on only the wake-ups of servers \
         the caller may read (tests/authorization.rs, watch_shows_only_readable_servers)",
    ),
    ("now", "reads the manager's clock"),
    (
        "login",
        "authentication: takes a password (and TOTP code) and yields a principal; \
         throttled and audited",
    ),
    (
        "authenticate_jwt",
        "authentication: takes an access token and yields a principal",
    ),
    (
        "refresh",
        "authentication: exchanges a refresh token for an access token",
    ),
    (
        "authenticate_token",
        "authentication: takes an API token and yields a principal",
    ),
    (
        "logout",
        "authentication: ends the session of the valid token it is given (holding the \
         token is the right to end it); verified as authenticate_jwt verifies it",
    ),
    (
        "principal_for",
        "needs the LocalAdmin capability, which the type system checks",
    ),
];

/// (method, case): every case calls `method` on objects the principal has no right to.
const CASES: &[(&str, &str)] = &[
    ("resolve_server", "resolve_server"),
    ("create_server", "create_server"),
    ("get_server", "get_server"),
    ("list_servers", "list_servers"),
    ("update_server", "update_server"),
    ("rotate_server_key", "rotate_server_key"),
    ("delete_server", "delete_server"),
    ("import_server", "import_server"),
    ("resolve_peer", "resolve_peer"),
    ("add_peer", "add_peer_for_oneself"),
    ("add_peer", "add_peer_for_other"),
    ("add_peers", "add_peers"),
    ("get_peer", "get_peer"),
    ("list_peers", "list_peers"),
    ("update_peer", "update_peer"),
    ("update_peer", "update_peer_owner"),
    ("set_peer_enabled", "set_peer_enabled"),
    ("set_peer_expiry", "set_peer_expiry"),
    ("rotate_peer_key", "rotate_peer_key"),
    ("rotate_peer_psk", "rotate_peer_psk"),
    ("restore_peer_keys", "restore_peer_keys"),
    ("restore_server_key", "restore_server_key"),
    ("remove_peer", "remove_peer"),
    ("sweep_expired", "sweep_expired"),
    ("client_config", "client_config"),
    ("server_config", "server_config"),
    ("history", "history"),
    ("diff", "diff"),
    ("rollback", "rollback"),
    ("audit_log", "audit_log"),
    ("audit_log", "audit_log_of_server"),
    ("verify_audit_chain", "verify_audit_chain"),
    ("reseal_all", "reseal_all"),
    ("roles", "roles"),
    ("resolve_user", "resolve_user"),
    ("create_user", "create_user"),
    ("get_user", "get_user_other"),
    ("get_user", "get_user_self"),
    ("list_users", "list_users"),
    ("update_user", "update_user_other"),
    ("update_user", "update_user_self"),
    ("update_user", "update_user_self_roles"),
    ("set_password", "set_password_other"),
    ("set_password", "set_password_self"),
    ("delete_user", "delete_user"),
    ("enroll_totp", "enroll_totp_self"),
    ("enroll_totp", "enroll_totp_other"),
    ("confirm_totp", "confirm_totp_self"),
    ("confirm_totp", "confirm_totp_other"),
    ("create_token", "create_token_self"),
    ("create_token", "create_token_other"),
    ("list_tokens", "list_tokens_self"),
    ("list_tokens", "list_tokens_other"),
    ("list_tokens", "list_tokens_all"),
    ("revoke_token", "revoke_token"),
    ("put_role", "put_role"),
    ("delete_role", "delete_role"),
    ("plan", "plan"),
    ("firewall_plan", "firewall_plan"),
    ("set_server_policy", "set_server_policy"),
    ("set_peer_policy", "set_peer_policy"),
    ("apply", "apply"),
    ("status", "status"),
    ("servers_on_host", "servers_on_host"),
    ("acquire_lease", "acquire_lease"),
    ("release_lease", "release_lease"),
    ("report_host", "report_host"),
    ("host_reports", "host_reports"),
];

/// A peer policy with one upload limit.
fn rate_limited() -> wgm_core::policy::PeerPolicy {
    wgm_core::policy::PeerPolicy {
        rate_up: Some("10mbit".parse().unwrap()),
        ..Default::default()
    }
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

fn spec(name: &str, v6: &str, v4: &str) -> NewServer {
    // Servers of one installation may not share a listen port: one per name.
    let port = 51820 + name.bytes().map(u16::from).sum::<u16>() % 1000;
    let mut s = NewServer::new(
        ServerName::new(name).unwrap(),
        InterfaceName::new(format!("wg-{name}")).unwrap(),
        ListenPort::new(port).unwrap(),
    );
    s.ipv6_pool = Some(v6.parse().unwrap());
    s.ipv4_pool = Some(v4.parse().unwrap());
    s
}

fn user(name: &str, role: &str) -> NewUser {
    NewUser::new(UserName::new(name).unwrap(), RoleName::new(role).unwrap())
}

/// What the principals act on: a server with a peer and an API token of another user, a
/// custom role, and a host the server was applied to. Each mutation would write if it
/// were allowed: a peer has expired (so a sweep would disable it) and the secrets are
/// sealed under the previous master key (so a re-seal would rewrite them).
struct World {
    m: Manager,
    store: Arc<MemoryStore>,
    wg: Arc<MemoryWireGuard>,
    host: Host,
    server: ServerId,
    server_name: String,
    iface: InterfaceName,
    other: UserId,
    others_peer: PeerId,
    others_token: wgm_core::auth::token::TokenId,
    /// A principal holding only a custom role that grants nothing (not even
    /// self-service), obtained for a stored user.
    nobody: Principal,
    /// An administrator's API token narrowed to an empty scope, obtained by
    /// authenticating the token.
    empty_token: Principal,
    /// That administrator itself (the positive control).
    boss: Principal,
    /// For the role matrix: a user holding the role under test, with a peer of their
    /// own (`mine`) and an API token of their own. `None` in the plain world.
    subject: Option<Subject>,
}

struct Subject {
    p: Principal,
    mine: PeerId,
    token: wgm_core::auth::token::TokenId,
}

fn world() -> World {
    world_for(None)
}

/// The world, plus a subject holding `role` (`operator@s1`: the operator role assigned
/// on server s1 only).
fn world_for(role: Option<&str>) -> World {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
    let config = || ManagerConfig {
        password_params: auth::password::PasswordParams::insecure_for_tests(),
        ..ManagerConfig::default()
    };
    let old = MasterKey::generate();
    let (m, local) = Manager::builder(
        store.clone(),
        Sealer::new(MasterKey::from_bytes(*old.expose_bytes())),
    )
    .config(config())
    .clock(clock.clone())
    .build_with_local_admin();
    let root = local.principal("root");
    let wg = Arc::new(MemoryWireGuard::new());
    let host = Host::new("h", wg.clone(), Some(Arc::new(wg.network())));
    block(async {
        let s = m
            .create_server(&root, {
                let mut s1 = spec("s1", "fd00:1::/64", "10.8.0.0/24");
                s1.host = Some(HostName::new("h").unwrap());
                s1
            })
            .await
            .unwrap();
        let nothing = Role::custom(
            RoleName::new("nothing").unwrap(),
            Description::new("grants nothing").unwrap(),
            vec![],
        )
        .unwrap();
        m.put_role(&root, nothing).await.unwrap();
        let other = m.create_user(&root, user("other", "user")).await.unwrap();
        let boss = m.create_user(&root, user("boss", "admin")).await.unwrap();
        let nobody = m
            .create_user(&root, user("nobody", "nothing"))
            .await
            .unwrap();
        let mut theirs = NewPeer::new(PeerName::new("theirs").unwrap());
        theirs.owner = Some(other.id);
        let peer = m.add_peer(&root, s.id, theirs).await.unwrap();
        // Rotated once each, so that keys of an earlier revision can be restored (the
        // peer's of revision 2, the server's of revision 1).
        m.rotate_peer_key(&root, s.id, peer.id).await.unwrap();
        m.rotate_server_key(&root, s.id).await.unwrap();
        let mut brief = NewPeer::new(PeerName::new("brief").unwrap());
        brief.expires_at = Some(clock.now() + time::Duration::hours(1));
        m.add_peer(&root, s.id, brief).await.unwrap();
        let token = |u: UserId, scopes| NewToken {
            user: u,
            name: "t".into(),
            scopes,
            expires_at: None,
        };
        let (others_token, _) = m.create_token(&root, token(other.id, None)).await.unwrap();
        let (_, empty) = m
            .create_token(&root, token(boss.id, Some(vec![])))
            .await
            .unwrap();
        m.create_token(&root, token(nobody.id, Some(vec![])))
            .await
            .unwrap();
        m.apply(&root, s.id, &host, ApplyOptions::default())
            .await
            .unwrap();
        clock.advance(time::Duration::hours(2));
        // From here on a new master key, with the old one to open what it sealed.
        let (m, local) = Manager::builder(
            store.clone(),
            Sealer::new(MasterKey::generate()).with_previous(old),
        )
        .config(config())
        .clock(clock.clone())
        .build_with_local_admin();
        let nobody = m
            .principal_for(&local, &store.get_user(nobody.id).await.unwrap().unwrap())
            .await
            .unwrap();
        let empty_token = m.authenticate_token(&empty).await.unwrap();
        let root = local.principal("root");
        let subject = match role {
            None => None,
            Some(role) => {
                let (name, scope) = match role.split_once('@') {
                    Some((r, _)) => (r, wgm_core::rbac::Scope::Server(s.id.0)),
                    None => (role, wgm_core::rbac::Scope::Global),
                };
                let mut nu = user("subject", name);
                nu.roles = vec![wgm_core::model::RoleAssignment {
                    role: RoleName::new(name).unwrap(),
                    scope,
                }];
                let u = m.create_user(&root, nu).await.unwrap();
                let mut mine = NewPeer::new(PeerName::new("subjects").unwrap());
                mine.owner = Some(u.id);
                let mine = m.add_peer(&root, s.id, mine).await.unwrap().id;
                let (t, _) = m
                    .create_token(&root, token(u.id, Some(vec![])))
                    .await
                    .unwrap();
                let p = m
                    .principal_for(&local, &store.get_user(u.id).await.unwrap().unwrap())
                    .await
                    .unwrap();
                Some(Subject {
                    p,
                    mine,
                    token: t.id,
                })
            }
        };
        let boss = m
            .principal_for(&local, &store.get_user(boss.id).await.unwrap().unwrap())
            .await
            .unwrap();
        World {
            server: s.id,
            server_name: s.name.to_string(),
            iface: s.interface.clone(),
            other: other.id,
            others_peer: peer.id,
            others_token: others_token.id,
            nobody,
            empty_token,
            boss,
            subject,
            m,
            store,
            wg,
            host,
        }
    })
}

/// Everything a refused call must leave as it was (the audit log is checked apart).
#[derive(Debug, PartialEq)]
struct Snapshot {
    heads: Vec<(ServerId, Option<RevisionNo>)>,
    applied: Option<RevisionNo>,
    reports: Vec<HostReport>,
    users: Vec<wgm_core::model::User>,
    tokens: Vec<wgm_core::model::ApiTokenRecord>,
    roles: Vec<Role>,
    devices: Vec<InterfaceName>,
    device: Option<wgm_core::backend::DeviceState>,
}

async fn snapshot(w: &World) -> Snapshot {
    let mut heads = Vec::new();
    for s in w.store.list_servers(Page::ALL).await.unwrap() {
        heads.push((s.id, w.store.head(s.id).await.unwrap()));
    }
    Snapshot {
        heads,
        applied: w.store.applied(w.server, "h").await.unwrap(),
        reports: w.store.host_reports(w.server).await.unwrap(),
        users: w.store.list_users(Page::ALL).await.unwrap(),
        tokens: w.store.list_tokens(None).await.unwrap(),
        roles: w.store.list_roles().await.unwrap(),
        devices: w.wg.list_devices().await.unwrap(),
        device: w.wg.read_device(&w.iface).await.unwrap(),
    }
}

fn lease_request(s: ServerId) -> LeaseRequest {
    LeaseRequest {
        server_id: s,
        host: HostName::new("h").unwrap(),
        holder: "agent".into(),
        now: time::OffsetDateTime::now_utc(),
        ttl: time::Duration::seconds(15),
        take_over: None,
    }
}

fn host_report(s: ServerId) -> HostReport {
    HostReport {
        server_id: s,
        host: HostName::new("h").unwrap(),
        agent: "agent".into(),
        fencing: 1,
        applied: Some(RevisionNo(1)),
        instance: None,
        converged: true,
        peers: 0,
        error: None,
        heartbeat: time::OffsetDateTime::now_utc(),
    }
}

/// Run one case as `p`. `Ok(n)`: the call succeeded and revealed `n` objects (a list
/// filtered down to nothing reveals 0; any other success counts as 1).
async fn run(w: &World, p: &Principal, case: &str) -> Result<usize, Error> {
    let m = &w.m;
    let (s, peer, other) = (w.server, w.others_peer, w.other);
    let me = UserId(p.user_id());
    let future = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let name = |n: &str| PeerName::new(n).unwrap();
    match case {
        "resolve_server" => m.resolve_server(p, &w.server_name).await.map(|_| 1),
        "create_server" => m
            .create_server(p, spec("s9", "fd00:9::/64", "10.9.0.0/24"))
            .await
            .map(|_| 1),
        "get_server" => m.get_server(p, s).await.map(|_| 1),
        "list_servers" => m.list_servers(p, Page::ALL).await.map(|v| v.len()),
        "update_server" => m
            .update_server(
                p,
                s,
                ServerUpdate {
                    mtu: Some(Mtu::new(1380).unwrap()),
                    ..ServerUpdate::default()
                },
            )
            .await
            .map(|_| 1),
        "rotate_server_key" => m.rotate_server_key(p, s).await.map(|_| 1),
        "delete_server" => m.delete_server(p, s).await.map(|_| 1),
        "import_server" => {
            let key = wgm_core::keys::PrivateKey::generate();
            let text = format!(
                "[Interface]\nPrivateKey = {}\nAddress = fd00:7::1/64\nListenPort = 51827\n",
                key.expose_base64().as_str()
            );
            let opts = ImportOptions {
                interface: Some(InterfaceName::new("wg-imp").unwrap()),
                ..ImportOptions::default()
            };
            m.import_server(p, ServerName::new("imp").unwrap(), &text, opts)
                .await
                .map(|_| 1)
        }
        "resolve_peer" => m.resolve_peer(p, s, "theirs").await.map(|_| 1),
        "add_peer_for_oneself" => m
            .add_peer(p, s, NewPeer::new(name("mine")))
            .await
            .map(|_| 1),
        "add_peer_for_other" => {
            let mut x = NewPeer::new(name("gift"));
            x.owner = Some(other);
            m.add_peer(p, s, x).await.map(|_| 1)
        }
        "add_peers" => m
            .add_peers(
                p,
                s,
                vec![NewPeer::new(name("b1")), NewPeer::new(name("b2"))],
            )
            .await
            .map(|v| v.len()),
        "get_peer" => m.get_peer(p, s, peer).await.map(|_| 1),
        "list_peers" => m.list_peers(p, s).await.map(|v| v.len()),
        "update_peer" => m
            .update_peer(
                p,
                s,
                peer,
                PeerUpdate {
                    keepalive: Some(wgm_core::net::Keepalive::new(10).unwrap()),
                    ..PeerUpdate::default()
                },
            )
            .await
            .map(|_| 1),
        "update_peer_owner" => m
            .update_peer(
                p,
                s,
                peer,
                PeerUpdate {
                    owner: Some(Some(me)),
                    ..PeerUpdate::default()
                },
            )
            .await
            .map(|_| 1),
        "set_peer_enabled" => m.set_peer_enabled(p, s, peer, false).await.map(|_| 1),
        "set_peer_expiry" => m.set_peer_expiry(p, s, peer, Some(future)).await.map(|_| 1),
        "rotate_peer_key" => m.rotate_peer_key(p, s, peer).await.map(|_| 1),
        "rotate_peer_psk" => m.rotate_peer_psk(p, s, peer).await.map(|_| 1),
        "remove_peer" => m.remove_peer(p, s, peer).await.map(|()| 1),
        "restore_peer_keys" => m
            .restore_peer_keys(p, s, peer, RevisionNo(2))
            .await
            .map(|_| 1),
        "restore_server_key" => m.restore_server_key(p, s, RevisionNo(1)).await.map(|_| 1),
        "sweep_expired" => m.sweep_expired(p).await,
        "client_config" => m.client_config(p, s, peer).await.map(|_| 1),
        "server_config" => m.server_config(p, s).await.map(|_| 1),
        "history" => m.history(p, s, RevisionNo::NONE, 10).await.map(|v| v.len()),
        "diff" => m.diff(p, s, RevisionNo(1), RevisionNo(2)).await.map(|_| 1),
        "rollback" => m.rollback(p, s, RevisionNo(1)).await.map(|_| 1),
        "audit_log" => m
            .audit_log(p, &AuditQuery::default())
            .await
            .map(|v| v.len()),
        "audit_log_of_server" => {
            let q = AuditQuery {
                server_id: Some(s),
                ..AuditQuery::default()
            };
            m.audit_log(p, &q).await.map(|v| v.len())
        }
        "verify_audit_chain" => m.verify_audit_chain(p, None).await.map(|_| 1),
        "reseal_all" => m.reseal_all(p).await.map(|r| r.secrets),
        "roles" => m.roles(p).await.map(|v| v.len()),
        "resolve_user" => m.resolve_user(p, "other").await.map(|_| 1),
        "create_user" => m
            .create_user(
                p,
                NewUser {
                    roles: vec![],
                    ..user("newcomer", "user")
                },
            )
            .await
            .map(|_| 1),
        "get_user_other" => m.get_user(p, other).await.map(|_| 1),
        "get_user_self" => m.get_user(p, me).await.map(|_| 1),
        "list_users" => m.list_users(p, Page::ALL).await.map(|v| v.len()),
        "update_user_other" => m
            .update_user(
                p,
                other,
                UserUpdate {
                    active: Some(false),
                    ..UserUpdate::default()
                },
            )
            .await
            .map(|_| 1),
        "update_user_self" => m
            .update_user(
                p,
                me,
                UserUpdate {
                    email: Some(Some("me@example.org".into())),
                    ..UserUpdate::default()
                },
            )
            .await
            .map(|_| 1),
        "update_user_self_roles" => m
            .update_user(
                p,
                me,
                UserUpdate {
                    roles: Some(vec![wgm_core::model::RoleAssignment {
                        role: RoleName::new("admin").unwrap(),
                        scope: wgm_core::rbac::Scope::Global,
                    }]),
                    ..UserUpdate::default()
                },
            )
            .await
            .map(|_| 1),
        "set_password_other" => m
            .set_password(p, other, None, "a long new passphrase")
            .await
            .map(|()| 1),
        "set_password_self" => m
            .set_password(p, me, None, "a long new passphrase")
            .await
            .map(|()| 1),
        "delete_user" => m.delete_user(p, other).await.map(|()| 1),
        "enroll_totp_self" => m.enroll_totp(p, me, "wgm").await.map(|_| 1),
        "enroll_totp_other" => m.enroll_totp(p, other, "wgm").await.map(|_| 1),
        "confirm_totp_self" => m.confirm_totp(p, me, "000000").await.map(|()| 1),
        "confirm_totp_other" => m.confirm_totp(p, other, "000000").await.map(|()| 1),
        "create_token_self" | "create_token_other" => {
            let owner = if case == "create_token_self" {
                me
            } else {
                other
            };
            let t = NewToken {
                user: owner,
                name: "mine".into(),
                scopes: Some(vec![]),
                expires_at: None,
            };
            m.create_token(p, t).await.map(|_| 1)
        }
        "list_tokens_self" => m.list_tokens(p, Some(me)).await.map(|v| v.len()),
        "list_tokens_other" => m.list_tokens(p, Some(other)).await.map(|v| v.len()),
        "list_tokens_all" => m.list_tokens(p, None).await.map(|v| v.len()),
        "revoke_token" => m.revoke_token(p, w.others_token).await.map(|()| 1),
        "put_role" => {
            let r = Role::custom(
                RoleName::new("extra").unwrap(),
                Description::new("").unwrap(),
                vec![],
            )
            .unwrap();
            m.put_role(p, r).await.map(|()| 1)
        }
        "delete_role" => m
            .delete_role(p, &RoleName::new("nothing").unwrap())
            .await
            .map(|()| 1),
        "plan" => m.plan(p, s, &w.host).await.map(|_| 1),
        "firewall_plan" => m
            .firewall_plan(
                p,
                s,
                &w.host
                    .clone()
                    .with_firewall(Arc::new(MemoryFirewall::new())),
            )
            .await
            .map(|_| 1),
        "set_server_policy" => m
            .set_server_policy(
                p,
                s,
                wgm_core::policy::ServerPolicy {
                    peer_to_peer: true,
                    ..Default::default()
                },
            )
            .await
            .map(|_| 1),
        "set_peer_policy" => m
            .set_peer_policy(p, s, w.others_peer, rate_limited())
            .await
            .map(|_| 1),
        "apply" => m
            .apply(p, s, &w.host, ApplyOptions::default())
            .await
            .map(|_| 1),
        "status" => m.status(p, s, &w.host).await.map(|_| 1),
        "servers_on_host" => m
            .servers_on_host(p, &HostName::new("h").unwrap())
            .await
            .map(|v| v.len()),
        "acquire_lease" => m.acquire_lease(p, &lease_request(s)).await.map(|_| 1),
        "release_lease" => {
            let lease = Lease {
                server_id: s,
                host: HostName::new("h").unwrap(),
                holder: "agent".into(),
                fencing: 1,
                expires: future,
            };
            m.release_lease(p, &lease).await.map(|_| 1)
        }
        "report_host" => m.report_host(p, &host_report(s)).await.map(|()| 1),
        "host_reports" => m.host_reports(p, s).await.map(|_| 1),
        other => run_own(w, p, other).await,
    }
}

/// The cases on the role-matrix subject's own objects (its peer `mine`, its account
/// and token), and the route case on someone else's peer.
async fn run_own(w: &World, p: &Principal, case: &str) -> Result<usize, Error> {
    let m = &w.m;
    let s = w.server;
    let subject = w.subject.as_ref().expect("own cases need a subject");
    let mine = subject.mine;
    let future = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let route = || PeerUpdate {
        extra_allowed_ips: Some(vec!["192.168.77.0/24".parse().unwrap()]),
        ..PeerUpdate::default()
    };
    match case {
        "resolve_own_peer" => m.resolve_peer(p, s, "subjects").await.map(|_| 1),
        "get_own_peer" => m.get_peer(p, s, mine).await.map(|_| 1),
        "update_own_peer" => m
            .update_peer(
                p,
                s,
                mine,
                PeerUpdate {
                    keepalive: Some(wgm_core::net::Keepalive::new(10).unwrap()),
                    ..PeerUpdate::default()
                },
            )
            .await
            .map(|_| 1),
        "route_own_peer" => m.update_peer(p, s, mine, route()).await.map(|_| 1),
        "policy_own_peer" => m
            .set_peer_policy(p, s, mine, rate_limited())
            .await
            .map(|_| 1),
        "route_others_peer" => m.update_peer(p, s, w.others_peer, route()).await.map(|_| 1),
        "disable_own_peer" => m.set_peer_enabled(p, s, mine, false).await.map(|_| 1),
        "expire_own_peer" => m.set_peer_expiry(p, s, mine, Some(future)).await.map(|_| 1),
        "rotate_own_key" => m.rotate_peer_key(p, s, mine).await.map(|_| 1),
        "rotate_own_psk" => m.rotate_peer_psk(p, s, mine).await.map(|_| 1),
        "remove_own_peer" => m.remove_peer(p, s, mine).await.map(|()| 1),
        "own_client_config" => m.client_config(p, s, mine).await.map(|_| 1),
        "resolve_user_self" => m.resolve_user(p, "subject").await.map(|_| 1),
        "revoke_own_token" => m.revoke_token(p, subject.token).await.map(|()| 1),
        other => panic!("no case {other}"),
    }
}

#[test]
fn every_public_manager_method_refuses_a_principal_without_the_right_and_writes_nothing() {
    let w = world();
    let principals = [("nobody", &w.nobody), ("empty token", &w.empty_token)];
    let mut failures = Vec::new();
    for (who, p) in principals {
        for (method, case) in CASES {
            block(async {
                let before = snapshot(&w).await;
                let audit_before = w.store.query_audit(&AuditQuery::default()).await.unwrap();
                let outcome = run(&w, p, case).await;
                let refused = match &outcome {
                    Err(Error::PermissionDenied { .. } | Error::NotFound { .. }) | Ok(0) => true,
                    Ok(_) | Err(_) => false,
                };
                if !refused {
                    failures.push(format!("{who} / {method} ({case}): {outcome:?}"));
                }
                let after = snapshot(&w).await;
                if after != before {
                    failures.push(format!("{who} / {method} ({case}): wrote {after:#?}"));
                }
                let audit = w.store.query_audit(&AuditQuery::default()).await.unwrap();
                let added = &audit[audit_before.len().min(audit.len())..];
                let own_denial = |r: &wgm_core::model::AuditRecord| {
                    r.entry.outcome == AuditOutcome::Denied
                        && r.entry.actor.user_id == Some(UserId(p.user_id()))
                        && r.entry.revision.is_none()
                };
                if audit.len() < audit_before.len()
                    || audit[..audit_before.len()] != audit_before[..]
                    || added.len() > 1
                    || !added.iter().all(own_denial)
                {
                    failures.push(format!(
                        "{who} / {method} ({case}): audit log changed beyond one denial: {added:?}"
                    ));
                }
            });
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Cases an administrator cannot do either, and why.
const NOT_FOR_ADMIN_EITHER: &[(&str, &str)] = &[
    ("enroll_totp_other", "only users enrol their own TOTP"),
    ("confirm_totp_other", "only users confirm their own TOTP"),
    ("confirm_totp_self", "no enrolment in progress"),
    ("delete_role", "the role is still held"),
];

/// The positive control: the same calls, by an administrator, in a fresh world each,
/// succeed and reveal something — so the refusals above come from authorization, not
/// from inputs that fail anyway.
#[test]
fn the_same_calls_succeed_for_an_administrator() {
    let mut failures = Vec::new();
    for (method, case) in CASES {
        let w = world();
        let outcome = block(run(&w, &w.boss, case));
        let ok = match NOT_FOR_ADMIN_EITHER.iter().find(|(c, _)| c == case) {
            Some(_) => outcome.is_err(),
            None => matches!(outcome, Ok(n) if n > 0),
        };
        if !ok {
            failures.push(format!("admin / {method} ({case}): {outcome:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The names of the public methods of every `impl Manager` block under `src/` (any
/// module: the reconciler's orchestration lives beside the manager's).
fn public_manager_methods() -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for name in methods_in(&text) {
                    out.insert(name, path.display().to_string());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out
}

/// Public methods declared directly in `impl Manager { … }` blocks of one file, as
/// rustfmt lays them out: the block opens at column 0 and closes with `}` at column 0;
/// its items are indented by four spaces.
fn methods_in(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if !inside {
            let t = line.trim_end();
            inside = t == "impl Manager {" || t.starts_with("impl Manager where");
            continue;
        }
        if line.starts_with('}') {
            inside = false;
            continue;
        }
        let Some(item) = line.strip_prefix("    pub ") else {
            continue;
        };
        let item = ["async ", "const ", "unsafe "]
            .iter()
            .fold(item, |s, q| s.strip_prefix(q).unwrap_or(s));
        if let Some(rest) = item.strip_prefix("fn ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            names.push(name);
        }
    }
    names
}

#[test]
fn the_method_scanner_finds_what_it_should() {
    let text = "impl Manager {\n    pub async fn a(&self) {}\n    pub(crate) fn hidden() {}\n    \
                fn private() {}\n    pub fn b<T>(&self) {}\n    pub const fn c() {}\n}\n\
                impl ManagerBuilder {\n    pub fn not_manager(self) {}\n}\n\
                impl Manager {\n    pub async fn d(\n        &self,\n    ) {}\n}\n";
    assert_eq!(methods_in(text), ["a", "b", "c", "d"]);
}

#[test]
fn every_public_manager_method_is_listed() {
    let found = public_manager_methods();
    // A sanity floor, so that a scanner that finds nothing cannot pass.
    assert!(found.len() >= 50, "found only {found:?}");
    let exempt: BTreeSet<&str> = EXEMPT.iter().map(|(n, _)| *n).collect();
    let run: BTreeSet<&str> = CASES.iter().map(|(n, _)| *n).collect();
    assert!(
        exempt.is_disjoint(&run),
        "both run and exempt: {:?}",
        exempt.intersection(&run).collect::<Vec<_>>()
    );
    let missing: Vec<String> = found
        .iter()
        .filter(|(n, _)| !exempt.contains(n.as_str()) && !run.contains(n.as_str()))
        .map(|(n, file)| format!("{n} ({file})"))
        .collect();
    assert!(
        missing.is_empty(),
        "public Manager methods with no denial case in tests/authorization.rs (add a case to \
         CASES, or list the method in EXEMPT with the reason it needs no authorization): {}",
        missing.join(", ")
    );
    let stale: Vec<&&str> = exempt
        .iter()
        .chain(run.iter())
        .filter(|n| !found.contains_key(**n))
        .collect();
    assert!(
        stale.is_empty(),
        "listed but not public Manager methods: {stale:?}"
    );
    let cases: BTreeSet<&str> = CASES.iter().map(|(_, c)| *c).collect();
    assert_eq!(cases.len(), CASES.len(), "case names must be unique");
}

/// The role matrix: every case above (every public `Manager` method, on an object of
/// the caller's own and one of someone else's where that differs) for every built-in
/// role, and the operator role assigned on one server. Columns: admin, operator,
/// auditor, user, operator@s1. `Y`: allowed; `.`: refused (`PermissionDenied`,
/// `NotFound` for a hidden object, or a list filtered to nothing); `x`: fails for
/// everyone for a reason other than authorization (noted in `NOT_FOR_ADMIN_EITHER`).
const ROLE_MATRIX: &str = "
    # case                       admin operator auditor user op@s1
    resolve_server                 Y     Y        Y      Y     Y
    create_server                  Y     Y        .      .     .
    get_server                     Y     Y        Y      Y     Y
    list_servers                   Y     Y        Y      Y     Y
    update_server                  Y     Y        .      .     Y
    rotate_server_key              Y     Y        .      .     Y
    delete_server                  Y     Y        .      .     Y
    import_server                  Y     Y        .      .     .
    resolve_peer                   Y     Y        Y      .     Y
    resolve_own_peer               Y     Y        Y      Y     Y
    add_peer_for_oneself           Y     Y        .      Y     Y
    add_peer_for_other             Y     Y        .      .     Y
    add_peers                      Y     Y        .      Y     Y
    get_peer                       Y     Y        Y      .     Y
    get_own_peer                   Y     Y        Y      Y     Y
    list_peers                     Y     Y        Y      Y     Y
    update_peer                    Y     Y        .      .     Y
    update_own_peer                Y     Y        .      Y     Y
    update_peer_owner              Y     Y        .      .     Y
    route_own_peer                 Y     Y        .      .     Y
    route_others_peer              Y     Y        .      .     Y
    set_peer_enabled               Y     Y        .      .     Y
    disable_own_peer               Y     Y        .      Y     Y
    set_peer_expiry                Y     Y        .      .     Y
    expire_own_peer                Y     Y        .      Y     Y
    rotate_peer_key                Y     Y        .      .     Y
    rotate_own_key                 Y     Y        .      Y     Y
    rotate_peer_psk                Y     Y        .      .     Y
    rotate_own_psk                 Y     Y        .      Y     Y
    remove_peer                    Y     Y        .      .     Y
    remove_own_peer                Y     Y        .      Y     Y
    restore_peer_keys              Y     Y        .      .     Y
    restore_server_key             Y     Y        .      .     Y
    sweep_expired                  Y     Y        .      .     .
    client_config                  Y     Y        .      .     Y
    own_client_config              Y     Y        .      Y     Y
    server_config                  Y     Y        .      .     Y
    history                        Y     Y        Y      .     Y
    diff                           Y     Y        Y      .     Y
    rollback                       Y     Y        .      .     Y
    audit_log                      Y     .        Y      .     .
    audit_log_of_server            Y     .        Y      .     .
    verify_audit_chain             Y     .        Y      .     .
    reseal_all                     Y     Y        .      .     .
    roles                          Y     .        Y      .     .
    resolve_user                   Y     Y        Y      .     .
    resolve_user_self              Y     Y        Y      Y     Y
    create_user                    Y     .        .      .     .
    get_user_other                 Y     Y        Y      .     .
    get_user_self                  Y     Y        Y      Y     Y
    list_users                     Y     Y        Y      Y     Y
    update_user_other              Y     .        .      .     .
    update_user_self               Y     Y        Y      Y     Y
    update_user_self_roles         Y     .        .      .     .
    set_password_other             Y     .        .      .     .
    set_password_self              Y     Y        Y      Y     Y
    delete_user                    Y     .        .      .     .
    enroll_totp_self               Y     Y        Y      Y     Y
    enroll_totp_other              .     .        .      .     .
    confirm_totp_self              x     x        x      x     x
    confirm_totp_other             .     .        .      .     .
    create_token_self              Y     Y        Y      Y     Y
    create_token_other             Y     .        .      .     .
    list_tokens_self               Y     Y        Y      Y     Y
    list_tokens_other              Y     .        Y      .     .
    list_tokens_all                Y     Y        Y      Y     Y
    revoke_token                   Y     .        .      .     .
    revoke_own_token               Y     Y        Y      Y     Y
    put_role                       Y     .        .      .     .
    delete_role                    x     .        .      .     .
    plan                           Y     Y        Y      .     Y
    firewall_plan                  Y     Y        Y      .     Y
    set_server_policy              Y     Y        .      .     Y
    set_peer_policy                Y     Y        .      .     Y
    policy_own_peer                Y     Y        .      .     Y
    apply                          Y     Y        .      .     Y
    status                         Y     Y        Y      Y     Y
    servers_on_host                Y     Y        Y      Y     Y
    acquire_lease                  Y     Y        .      .     Y
    release_lease                  Y     Y        .      .     Y
    report_host                    Y     Y        .      .     Y
    host_reports                   Y     Y        Y      .     Y
";

const MATRIX_ROLES: [&str; 5] = ["admin", "operator", "auditor", "user", "operator@s1"];

/// What another user's objects look like in text: the peer's name and key, the other
/// user's name and id. None of it may reach a caller who may not see it.
fn others_data(w: &World) -> Vec<String> {
    let st = block(w.store.load_server(w.server)).unwrap().unwrap();
    let theirs = &st.peers[&w.others_peer];
    let mut v = vec![
        "theirs".to_owned(),
        theirs.public_key.to_base64(),
        w.other.to_string(),
        "\"other\"".to_owned(),
    ];
    v.extend(theirs.address_v6.map(|a| a.to_string()));
    v.extend(theirs.address_v4.map(|a| format!("{a}/")));
    v
}

#[test]
fn the_role_matrix_holds_for_every_public_method_and_built_in_role() {
    let rows: Vec<(&str, Vec<char>)> = ROLE_MATRIX
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut cols = l.split_whitespace();
            let case = cols.next().unwrap();
            let cells: Vec<char> = cols.map(|c| c.chars().next().unwrap()).collect();
            assert_eq!(cells.len(), MATRIX_ROLES.len(), "{l}");
            (case, cells)
        })
        .collect();
    // Every case of the denial test is in the matrix, so every public method is.
    for (_, case) in CASES {
        assert!(
            rows.iter().any(|(c, _)| c == case),
            "{case} is missing from ROLE_MATRIX"
        );
    }
    let mut failures = Vec::new();
    let mut cells = 0;
    for (col, role) in MATRIX_ROLES.iter().enumerate() {
        for (case, expected) in &rows {
            let want = expected[col];
            let w = world_for(Some(role));
            let p = w.subject.as_ref().unwrap().p.clone();
            let secret_data = others_data(&w);
            block(async {
                let before = snapshot(&w).await;
                let audit_before = w.store.query_audit(&AuditQuery::default()).await.unwrap();
                let outcome = run(&w, &p, case).await;
                cells += 1;
                let what = format!("{role} / {case}");
                let refused = matches!(
                    &outcome,
                    Err(Error::PermissionDenied { .. } | Error::NotFound { .. }) | Ok(0)
                );
                let allowed = matches!(&outcome, Ok(n) if *n > 0);
                let ok = match want {
                    'Y' => allowed,
                    '.' => refused,
                    'x' => outcome.is_err() && !refused,
                    other => panic!("bad cell {other}"),
                };
                if !ok {
                    failures.push(format!("{what}: expected {want}, got {outcome:?}"));
                }
                let audit = w.store.query_audit(&AuditQuery::default()).await.unwrap();
                let added = &audit[audit_before.len().min(audit.len())..];
                if want != 'Y' {
                    let after = snapshot(&w).await;
                    if after != before {
                        failures.push(format!("{what}: refused but wrote {after:#?}"));
                    }
                    let denials = added
                        .iter()
                        .filter(|r| {
                            r.entry.outcome == AuditOutcome::Denied
                                && r.entry.actor.user_id == Some(UserId(p.user_id()))
                        })
                        .count();
                    let refused_by_error = refused && outcome.is_err();
                    let filtered = matches!(&outcome, Ok(0));
                    if (refused_by_error && (denials != 1 || added.len() != 1))
                        || (filtered && !added.is_empty())
                    {
                        failures.push(format!(
                            "{what}: a refusal must leave exactly one denial record: {added:?}"
                        ));
                    }
                }
                // No other user's data in what a user, or any refused caller, is told
                // (beyond the name or id the caller gave).
                if *role == "user" || want != 'Y' {
                    // Indices 0, 2, 3: the peer's and the user's name and id.
                    let secret_data: Vec<&String> = secret_data
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| ![0, 2, 3].contains(i))
                        .map(|(_, x)| x)
                        .collect();
                    let text = match &outcome {
                        Ok(_) => String::new(),
                        Err(e) => e.to_string(),
                    };
                    for leak in &secret_data {
                        if text.contains(leak.as_str()) {
                            failures.push(format!("{what}: {leak} in {text}"));
                        }
                    }
                }
            });
        }
    }
    assert_eq!(cells, rows.len() * MATRIX_ROLES.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What a `user` reads through every read method that succeeds for them contains
/// nothing of another user's: not the peer's name, key or address, not the user.
#[test]
fn what_a_user_reads_holds_nothing_of_other_users() {
    let w = world_for(Some("user"));
    let p = w.subject.as_ref().unwrap().p.clone();
    let m = &w.m;
    let s = w.server;
    let mut texts: Vec<(&str, String)> = Vec::new();
    block(async {
        texts.push((
            "get_server",
            format!("{:?}", m.get_server(&p, s).await.unwrap()),
        ));
        texts.push((
            "list_servers",
            format!("{:?}", m.list_servers(&p, Page::ALL).await.unwrap()),
        ));
        texts.push((
            "list_peers",
            format!("{:?}", m.list_peers(&p, s).await.unwrap()),
        ));
        let st = m.status(&p, s, &w.host).await.unwrap();
        texts.push(("status", serde_json::to_string(&st).unwrap()));
        texts.push((
            "list_users",
            format!("{:?}", m.list_users(&p, Page::ALL).await.unwrap()),
        ));
        texts.push((
            "list_tokens",
            format!("{:?}", m.list_tokens(&p, None).await.unwrap()),
        ));
        let mine = w.subject.as_ref().unwrap().mine;
        texts.push((
            "client_config",
            m.client_config(&p, s, mine).await.unwrap().text.to_string(),
        ));
    });
    let leaks = others_data(&w);
    for (what, text) in &texts {
        for leak in &leaks {
            assert!(!text.contains(leak.as_str()), "{what}: {leak} in {text}");
        }
    }
    // The status shows the user's own peer, so the check above looked at real output.
    assert!(texts
        .iter()
        .any(|(w, t)| *w == "status" && t.contains("subjects")));
}

/// The change feed as a caller sees it: wake-ups of servers it may read, nothing of
/// the others (a server's id and revision are not for everyone).
#[test]
fn watch_shows_only_readable_servers() {
    use futures::{FutureExt, StreamExt};
    let w = world();
    block(async {
        let mut boss = w.m.watch(&w.boss).await.unwrap();
        let mut nobody = w.m.watch(&w.nobody).await.unwrap();
        let v =
            w.m.update_server(
                &w.boss,
                w.server,
                ServerUpdate {
                    mtu: Some(Mtu::new(1380).unwrap()),
                    ..ServerUpdate::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            boss.next().await,
            Some(wgm_core::store::FeedEvent::Committed {
                server: w.server,
                revision: v.revision
            })
        );
        // The same event reached `nobody`'s stream and was dropped there.
        assert_eq!(nobody.next().now_or_never(), None);
        w.store.disrupt_feeds();
        assert_eq!(
            nobody.next().await,
            Some(wgm_core::store::FeedEvent::Missed)
        );
    });
}
