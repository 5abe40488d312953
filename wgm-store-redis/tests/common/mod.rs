//! Shared fixtures of the Redis store tests: a store in a namespace of its own on the
//! shared Redis (`WGM_TEST_REDIS_URL`), whose keys are deleted when it drops; a
//! `redis-server` of the test's own (durability, a server killed mid-use); model values.
#![allow(dead_code, clippy::missing_panics_doc, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wgm_core::model::{
    Actor, AuditEntry, AuditOutcome, Change, Commit, Peer, RevisionNo, Server, ServerId,
};
use wgm_core::store::Store;
use wgm_store_redis::{RedisOptions, RedisStore};

/// The audit key the tests commit with: the conformance suite's.
pub fn key() -> &'static wgm_core::integrity::AuditKey {
    wgm_core::conformance::store::audit_key()
}

/// The shared Redis's URL, or `None` when the redis suite is off (one `SKIPPED` line);
/// with the suite on and Redis not answering, the test fails here.
pub fn redis_url(tools: &[&str]) -> Option<String> {
    wgm_test_support::require(wgm_test_support::Suite::Redis, tools).map(|g| g.url().to_owned())
}

/// A namespace no other test uses.
pub fn fresh_namespace() -> String {
    format!("wgm-test-{}", uuid::Uuid::new_v4().simple())
}

/// Delete every key of `namespace` (SCAN + DEL; never FLUSHDB on a shared server).
pub fn delete_namespace(url: &str, namespace: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut c) = client.get_connection_with_timeout(Duration::from_secs(5)) else {
        return;
    };
    let pattern = format!("{{{namespace}}}:*");
    let mut cursor: u64 = 0;
    loop {
        let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(500)
            .query(&mut c)
        else {
            return;
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&keys).query(&mut c);
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// A store in a namespace of its own on the shared Redis; its keys go when it drops.
pub struct TestStore {
    pub store: Arc<RedisStore>,
    pub url: String,
    pub namespace: String,
}

impl TestStore {
    /// The store as a trait object.
    pub fn dyn_store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Another store on the same namespace (another process's view: its own connections).
    pub async fn reopen(&self) -> RedisStore {
        RedisStore::open(
            &self.url,
            RedisOptions::default().namespace(self.namespace.clone()),
        )
        .await
        .unwrap()
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        self.store.close();
        delete_namespace(&self.url, &self.namespace);
    }
}

/// A store on the shared Redis with `options` (its namespace replaced by a fresh one), or
/// `None` when the redis suite is off.
pub async fn open_with(options: RedisOptions) -> Option<TestStore> {
    let url = redis_url(&[])?;
    let namespace = fresh_namespace();
    let store = RedisStore::open(&url, options.namespace(namespace.clone()))
        .await
        .unwrap();
    Some(TestStore {
        store: Arc::new(store),
        url,
        namespace,
    })
}

/// A store on the shared Redis in a fresh namespace, or `None` when the suite is off.
pub async fn open() -> Option<TestStore> {
    open_with(RedisOptions::default()).await
}

/// A loopback port nothing listens on: bound by the OS, then closed again.
pub fn free_port() -> u16 {
    let l = TcpListener::bind(("127.0.0.1", 0)).expect("bind a free port");
    l.local_addr().expect("local address").port()
}

/// A `redis-server` this test started (on a free loopback port, its files in `dir`),
/// killed when this guard drops.
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    /// Start `redis-server` with an append-only file fsynced on every write, in `dir`,
    /// on `port` (a free one when `None`), and wait until it answers.
    pub fn start(dir: &Path, port: Option<u16>) -> OwnRedis {
        Self::start_with(dir, port, true)
    }

    /// Start `redis-server` in `dir` on `port` (a free one when `None`), with an
    /// append-only file fsynced on every write when `durable`, without one otherwise, and
    /// wait until it answers.
    pub fn start_with(dir: &Path, port: Option<u16>, durable: bool) -> OwnRedis {
        let port = port.unwrap_or_else(free_port);
        let aof: &[&str] = if durable {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args(aof)
            .args(["--save", ""])
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let mut me = OwnRedis {
            port,
            child: Some(child),
        };
        me.wait_ready();
        me
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = redis::Client::open(self.url()).unwrap();
        loop {
            if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(500)) {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query(&mut c);
                if pong.is_ok() {
                    return;
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("redis-server exited at start: {status}");
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kill the server with SIGKILL (by the pid this test started) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` sends SIGKILL on Unix.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
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
        at: time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
        actor: actor(),
        action: action.into(),
        object: object.into(),
        server_id: None,
        revision: None,
        outcome: AuditOutcome::Success,
        details: serde_json::json!({ "n": 1 }),
    }
}

/// A commit of `changes` on `server` from revision `expected`.
pub fn commit(server: ServerId, expected: u64, changes: Vec<Change>) -> Commit {
    Commit {
        server_id: server,
        expected: RevisionNo(expected),
        audit: entry("server.change", &format!("server/{server}")),
        changes,
        author: actor(),
        at: time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
        summary: "test".into(),
    }
}

/// A server fixture named `name-<random>`.
pub fn server(name: &str) -> Server {
    wgm_core::conformance::store::fixture_server(&format!(
        "{name}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ))
    .unwrap()
}

/// A peer of `server` with host index `n`.
pub fn peer(server: &Server, name: &str, n: u32) -> Peer {
    wgm_core::conformance::store::fixture_peer(server, name, n).unwrap()
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

/// Verify the whole stored log under [`key`] against the stored head.
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
