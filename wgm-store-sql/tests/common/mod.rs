//! Shared fixtures of the store tests: model values, and stores of every kind
//! (in-memory reference, SQLite file, SQLite in memory, PostgreSQL in a fresh database).
#![allow(dead_code, clippy::missing_panics_doc, clippy::unwrap_used)]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use ipnet::{Ipv4Net, Ipv6Net};
use time::macros::datetime;
use time::OffsetDateTime;
use wgm_core::ipam::Strategy;
use wgm_core::keys::{PrivateKey, PublicKey};
use wgm_core::model::{
    Actor, AuditEntry, AuditOutcome, Change, ClientTemplate, Commit, Peer, PeerId, PeerStats,
    RevisionNo, Server, ServerId, User, UserId,
};
use wgm_core::names::{InterfaceName, PeerName, ServerName, UserName};
use wgm_core::net::{Keepalive, ListenPort, Mtu};
use wgm_core::seal::{MasterKey, SealedSecret, Sealer, SecretKind};
use wgm_core::store::{MemoryStore, Store};
use wgm_store_sql::SqlStore;

/// The audit key the tests commit with: the conformance suite's, so that stores the
/// suite also writes to keep one chain.
pub fn key() -> &'static wgm_core::integrity::AuditKey {
    wgm_core::conformance::store::audit_key()
}

/// Verify the whole stored log under [`key`] (no unkeyed prefix) against the stored head.
pub async fn verify_chain(
    s: &dyn Store,
) -> wgm_core::Result<wgm_core::integrity::AuditVerification> {
    use wgm_core::integrity::{ChainVerifier, LegacyBound};
    let legacy = LegacyBound::empty();
    let mut v = ChainVerifier::new(Some((key(), &legacy)), None);
    for r in &s
        .query_audit(&wgm_core::model::AuditQuery::default())
        .await?
    {
        v.push(r)?;
    }
    v.finish(&s.audit_head().await?)
}

/// A fixed instant with nanoseconds, so that round trips of times are checked exactly.
pub const T0: OffsetDateTime = datetime!(2025-03-04 05:06:07.123456789 UTC);

fn sealer() -> &'static Sealer {
    static S: OnceLock<Sealer> = OnceLock::new();
    S.get_or_init(|| Sealer::new(MasterKey::generate()))
}

/// A sealed random key for a record.
pub fn sealed(kind: SecretKind, id: &str) -> SealedSecret {
    let k = PrivateKey::generate();
    sealer().seal(kind, id, k.expose_bytes()).unwrap()
}

/// A fresh public key.
pub fn pubkey() -> PublicKey {
    PrivateKey::generate().public_key()
}

/// A server named `name` with pool `fd00:<n>::/64` and, if given, an IPv4 pool.
pub fn server(name: &str, v4_pool: Option<&str>) -> Server {
    let id = ServerId::new_random();
    let v6: Ipv6Net = "fd00:42::/64".parse().unwrap();
    let v4: Option<Ipv4Net> = v4_pool.map(|p| p.parse().unwrap());
    Server {
        id,
        name: ServerName::new(name).unwrap(),
        interface: InterfaceName::new("wg0").unwrap(),
        listen_port: ListenPort::DEFAULT,
        private_key: sealed(SecretKind::ServerPrivateKey, &id.to_string()),
        public_key: pubkey(),
        ipv6_pool: v6,
        ipv4_pool: v4,
        address_v6: "fd00:42::1".parse().unwrap(),
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
        policy: wgm_core::policy::ServerPolicy::default(),
        created_at: T0,
        updated_at: T0,
    }
}

/// Host `i` of an IPv4 network.
pub fn host_v4(n: Ipv4Net, i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(n.network()) + i)
}

/// Host `i` of the test IPv6 pool.
pub fn host_v6(i: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x42, 0, 0, 0, 0, 0, i)
}

/// A peer of `server` named `name` with IPv6 host `i` (and IPv4 host `i` if the server has
/// an IPv4 pool), a sealed private key and PSK.
pub fn peer(server: &Server, name: &str, i: u16) -> Peer {
    let id = PeerId::new_random();
    Peer {
        id,
        server_id: server.id,
        name: PeerName::new(name).unwrap(),
        description: None,
        owner: None,
        public_key: pubkey(),
        private_key: Some(sealed(SecretKind::PeerPrivateKey, &id.to_string())),
        preshared_key: Some(sealed(SecretKind::PeerPresharedKey, &id.to_string())),
        address_v6: Some(host_v6(i)),
        address_v4: server.ipv4_pool.map(|n| host_v4(n, u32::from(i))),
        delegated_prefix: None,
        extra_allowed_ips: Vec::new(),
        client_allowed_ips: None,
        endpoint: None,
        keepalive: Keepalive::default(),
        enabled: true,
        disabled_by: None,
        policy: wgm_core::policy::PeerPolicy::default(),
        expires_at: None,
        config_path: None,
        stats: PeerStats::default(),
        created_at: T0,
        updated_at: T0,
    }
}

/// The test actor.
pub fn actor() -> Actor {
    Actor {
        user_id: None,
        label: "local:test".into(),
    }
}

/// An audit entry.
pub fn entry(action: &str, object: &str) -> AuditEntry {
    AuditEntry {
        at: T0,
        actor: actor(),
        action: action.into(),
        object: object.into(),
        server_id: None,
        revision: None,
        outcome: AuditOutcome::Success,
        details: serde_json::json!({ "n": 1, "list": [1, 2.5, "x"], "nested": { "b": true, "a": null } }),
    }
}

/// A commit of `changes` on `server` from revision `expected`.
pub fn commit(server: ServerId, expected: u64, changes: Vec<Change>) -> Commit {
    let summary = changes
        .iter()
        .map(Change::kind)
        .collect::<Vec<_>>()
        .join(",");
    Commit {
        server_id: server,
        expected: RevisionNo(expected),
        audit: entry("server.change", &format!("server/{server}")),
        changes,
        author: actor(),
        at: T0,
        summary,
    }
}

/// Create `s` (revision 1).
pub async fn create(store: &dyn Store, s: &Server) {
    store
        .commit(
            commit(
                s.id,
                0,
                vec![Change::ServerCreated {
                    server: Box::new(s.clone()),
                }],
            ),
            key(),
        )
        .await
        .unwrap();
}

/// Add `p` at `expected`.
pub fn add(server: ServerId, expected: u64, p: &Peer) -> Commit {
    commit(
        server,
        expected,
        vec![Change::PeerAdded {
            peer: Box::new(p.clone()),
        }],
    )
}

/// A user.
pub fn user(name: &str, email: Option<&str>) -> User {
    User {
        id: UserId::new_random(),
        name: UserName::new(name).unwrap(),
        email: email.map(str::to_owned),
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
        created_at: T0,
        updated_at: T0,
    }
}

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `wgm_core::store::MemoryStore`, the reference the SQL stores must equal.
    Memory,
    /// SQLite in a file in a temporary directory.
    SqliteFile,
    /// `sqlite::memory:`.
    SqliteMemory,
    /// PostgreSQL in a fresh database (needs `WGM_TEST_POSTGRES_URL`).
    Postgres,
}

/// A store under test and whatever keeps its database alive.
pub struct TestStore {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The same store as a `SqlStore` (not for `Memory`).
    pub sql: Option<Arc<SqlStore>>,
    /// The URL it was opened with (not for `Memory`).
    pub url: Option<String>,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<PgDatabase>,
}

impl TestStore {
    /// Open another `SqlStore` on the same database (another pool, like another process).
    pub async fn reopen(&self) -> SqlStore {
        SqlStore::open(self.url.as_deref().unwrap()).await.unwrap()
    }
}

/// The PostgreSQL admin URL from `WGM_TEST_POSTGRES_URL`, or `None` when the postgres
/// suite is off (the binary prints one `SKIPPED` line). With the suite on and the server
/// not answering, the test fails here.
pub fn postgres_admin_url() -> Option<String> {
    wgm_test_support::require(wgm_test_support::Suite::Postgres, &[]).map(|pg| pg.url().to_owned())
}

/// `url` with its database replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[host_start..].find('/') {
        Some(i) => &base[..host_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// A uniquely named database, created now and dropped when this guard drops.
pub struct PgDatabase {
    admin: String,
    name: String,
}

impl PgDatabase {
    /// Create a fresh database through the admin URL.
    pub async fn create(admin: &str) -> PgDatabase {
        use sqlx::Connection;
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "wgm_test_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let mut c = sqlx::PgConnection::connect(admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
        PgDatabase {
            admin: admin.to_owned(),
            name,
        }
    }

    /// The URL of this database.
    pub fn url(&self) -> String {
        with_database(&self.admin, &self.name)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop may run inside the test's runtime: do the async work on a thread of its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut c)
                        .await;
                    let _ = c.close().await;
                }
            });
        })
        .join();
        if done.is_err() {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

/// Open a store of `kind`; `None` when its suite is off (see [`postgres_admin_url`]).
pub async fn open(kind: Kind) -> Option<TestStore> {
    Some(match kind {
        Kind::Memory => TestStore {
            store: Arc::new(MemoryStore::new()),
            sql: None,
            url: None,
            _dir: None,
            _pg: None,
        },
        Kind::SqliteFile => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("wgm.db").display());
            let sql = Arc::new(SqlStore::open(&url).await.unwrap());
            TestStore {
                store: sql.clone(),
                sql: Some(sql),
                url: Some(url),
                _dir: Some(dir),
                _pg: None,
            }
        }
        Kind::SqliteMemory => {
            let sql = Arc::new(SqlStore::open("sqlite::memory:").await.unwrap());
            TestStore {
                store: sql.clone(),
                sql: Some(sql),
                url: None,
                _dir: None,
                _pg: None,
            }
        }
        Kind::Postgres => {
            let admin = postgres_admin_url()?;
            let db = PgDatabase::create(&admin).await;
            let url = db.url();
            let sql = Arc::new(SqlStore::open(&url).await.unwrap());
            TestStore {
                store: sql.clone(),
                sql: Some(sql),
                url: Some(url),
                _dir: None,
                _pg: Some(db),
            }
        }
    })
}

/// Read a change feed's `events` until one says `server` is at `revision` or later
/// (`Ok`), or the feed reports a gap first (`Err(())`); panics when nothing comes within
/// 30 s or the feed ends.
pub async fn until_at(
    events: &mut futures::stream::BoxStream<'static, wgm_core::store::FeedEvent>,
    server: ServerId,
    revision: RevisionNo,
) -> Result<(), ()> {
    use futures::StreamExt;
    use wgm_core::store::FeedEvent;
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match events.next().await.expect("the feed ended") {
                FeedEvent::Committed {
                    server: s,
                    revision: r,
                } if s == server && r >= revision => return Ok(()),
                FeedEvent::Committed { .. } => {}
                FeedEvent::Missed => return Err(()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no wake-up for {server} at {revision} within 30 s"))
}

/// Generate one `#[tokio::test]` per store kind for each listed check
/// (`async fn check(t: TestStore)`).
#[macro_export]
macro_rules! for_each_store {
    ($($check:ident),* $(,)?) => {
        mod memory {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $check() { super::$check(super::common::open(super::common::Kind::Memory).await.unwrap()).await } )*
        }
        mod sqlite_file {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $check() { super::$check(super::common::open(super::common::Kind::SqliteFile).await.unwrap()).await } )*
        }
        mod sqlite_memory {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $check() { super::$check(super::common::open(super::common::Kind::SqliteMemory).await.unwrap()).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $check() {
                   let Some(t) = super::common::open(super::common::Kind::Postgres).await else { return };
                   super::$check(t).await
               } )*
        }
    };
}

/// Wait for the child processes of a multi-process race and collect what each reported
/// on its `RESULT allocated=a,b,… exhausted=N` line: every allocated IPv4 address, the
/// total of exhausted attempts, and how many addresses each child got.
pub async fn collect_children(
    children: Vec<std::process::Child>,
) -> (Vec<Ipv4Addr>, usize, Vec<usize>) {
    let mut got = Vec::new();
    let mut exhausted = 0;
    let mut per_child = Vec::new();
    for child in children {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
            .unwrap_or_else(|| panic!("no result in {stdout}"));
        let (addrs, ex) = line.split_once(" exhausted=").unwrap();
        exhausted += ex.trim().parse::<usize>().unwrap();
        let before = got.len();
        got.extend(
            addrs
                .trim_start_matches("allocated=")
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<Ipv4Addr>().unwrap()),
        );
        per_child.push(got.len() - before);
    }
    (got, exhausted, per_child)
}
