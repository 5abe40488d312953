//! F20 and "sealed at rest" on the SQL stores: a Manager workflow over SQLite (and
//! PostgreSQL) with TRACE logging, sqlx's statement logs included; then every secret it
//! generated — server and peer private keys and PSKs (base64, hex and raw bytes), the
//! master key, a password, an API token — is searched for in the logs and in the database
//! itself (the SQLite file and its WAL byte for byte; every PostgreSQL row as text).
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use sqlx::Connection;
use wgm_core::manager::{Manager, ManagerConfig, NewPeer, NewServer, NewToken, NewUser};
use wgm_core::names::{InterfaceName, PeerName, RoleName, ServerName, UserName};
use wgm_core::net::ListenPort;
use wgm_core::seal::{MasterKey, Sealer};
use wgm_core::store::Store;
use wgm_core::wgquick::{self, ParseOptions};
use wgm_store_sql::SqlStore;

mod common;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A secret in every form it could leak in.
struct Secret {
    text: Vec<String>,
    raw: Vec<u8>,
}

fn key_secret(b64: &str, hex_form: &str, raw: &[u8]) -> Secret {
    Secret {
        text: vec![b64.to_owned(), hex_form.to_owned()],
        raw: raw.to_vec(),
    }
}

/// The process-wide TRACE capture. Global, not per thread: SQLite runs its statements (and
/// sqlx logs them) on a worker thread of its own. Both tests share it, so each also
/// checks the other's logs.
fn capture() -> Capture {
    static CAPTURE: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let capture = Capture::default();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(capture.clone())
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_global_default(subscriber).unwrap();
            capture
        })
        .clone()
}

/// Run the workflow on the store at `url`; return the secrets and the captured logs.
fn workflow(url: &str) -> (Vec<Secret>, String) {
    let capture = capture();
    let mut secrets = Vec::new();
    let master = MasterKey::generate();
    secrets.push(key_secret(
        &master.expose_base64(),
        &hex::encode(master.expose_bytes()),
        master.expose_bytes(),
    ));
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store: Arc<dyn Store> = Arc::new(SqlStore::open(url).await.unwrap());
            let (m, cap) = Manager::builder(store, Sealer::new(master))
                .config(ManagerConfig {
                    password_params: wgm_core::auth::password::PasswordParams::insecure_for_tests(),
                    ..ManagerConfig::default()
                })
                .build_with_local_admin();
            let admin = cap.principal("root");
            let mut spec = NewServer::new(
                ServerName::new("f20").unwrap(),
                InterfaceName::new("wg0").unwrap(),
                ListenPort::DEFAULT,
            );
            spec.ipv4_pool = Some("10.8.0.0/24".parse().unwrap());
            let s = m.create_server(&admin, spec).await.unwrap();
            let mut ids = Vec::new();
            for name in ["a", "b", "c"] {
                ids.push(
                    m.add_peer(&admin, s.id, NewPeer::new(PeerName::new(name).unwrap()))
                        .await
                        .unwrap()
                        .id,
                );
            }
            // A key rotation leaves a superseded key behind in the history.
            let mut exports = Vec::new();
            exports.push(
                m.client_config(&admin, s.id, ids[0])
                    .await
                    .unwrap()
                    .text
                    .to_string(),
            );
            m.rotate_peer_key(&admin, s.id, ids[0]).await.unwrap();
            for id in &ids {
                exports.push(
                    m.client_config(&admin, s.id, *id)
                        .await
                        .unwrap()
                        .text
                        .to_string(),
                );
            }
            let server_text = m.server_config(&admin, s.id).await.unwrap();
            let sc = wgquick::parse(&server_text, &ParseOptions::default()).unwrap();
            let sk = sc.interface.private_key.as_ref().unwrap();
            secrets.push(key_secret(
                &sk.expose_base64(),
                &sk.expose_hex(),
                sk.expose_bytes(),
            ));
            for text in &exports {
                let c = wgquick::parse(text, &ParseOptions::default()).unwrap();
                let pk = c.interface.private_key.as_ref().unwrap();
                secrets.push(key_secret(
                    &pk.expose_base64(),
                    &pk.expose_hex(),
                    pk.expose_bytes(),
                ));
                let psk = c.peers[0].preshared_key.as_ref().unwrap();
                secrets.push(key_secret(
                    &psk.expose_base64(),
                    &psk.expose_hex(),
                    psk.expose_bytes(),
                ));
            }
            let password = "a long and secret passphrase 7";
            let mut nu = NewUser::new(
                UserName::new("alice").unwrap(),
                RoleName::new("operator").unwrap(),
            );
            nu.password = Some(zeroize::Zeroizing::new(password.to_owned()));
            let alice = m.create_user(&admin, nu).await.unwrap();
            secrets.push(Secret {
                text: vec![password.to_owned()],
                raw: Vec::new(),
            });
            let (_, token) = m
                .create_token(
                    &admin,
                    NewToken {
                        user: alice.id,
                        name: "ci".into(),
                        scopes: None,
                        expires_at: None,
                    },
                )
                .await
                .unwrap();
            secrets.push(Secret {
                text: vec![token.to_string()],
                raw: Vec::new(),
            });
        });
    }
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    (secrets, logs)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn check(secrets: &[Secret], logs: &str, at_rest: &[u8]) {
    // The capture works and sqlx's statement logs are in it.
    assert!(
        logs.contains("INSERT INTO"),
        "no SQL statements were logged at TRACE"
    );
    assert!(secrets.len() >= 12);
    for (i, s) in secrets.iter().enumerate() {
        for t in &s.text {
            assert!(
                !logs.contains(t.as_str()),
                "secret {i} appeared in the TRACE logs"
            );
            assert!(
                !contains(at_rest, t.as_bytes()),
                "secret {i} is stored in the clear"
            );
        }
        assert!(
            !contains(at_rest, &s.raw),
            "secret {i} is stored as raw bytes"
        );
    }
}

#[test]
fn no_secret_in_logs_or_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wgm.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let (secrets, logs) = workflow(&url);
    // The database file and its write-ahead log, as they lie on disk.
    let mut at_rest = std::fs::read(&path).unwrap();
    if let Ok(wal) = std::fs::read(dir.path().join("wgm.db-wal")) {
        at_rest.extend(wal);
    }
    assert!(
        contains(&at_rest, b"peer_added"),
        "the database holds no revisions: wrong file?"
    );
    check(&secrets, &logs, &at_rest);
}

#[test]
fn no_secret_in_logs_or_postgres_rows() {
    let Some(admin) = common::postgres_admin_url() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(common::PgDatabase::create(&admin));
    let url = db.url();
    let (secrets, logs) = workflow(&url);
    let at_rest = rt.block_on(async {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        let mut dump = String::new();
        for table in [
            "heads",
            "servers",
            "peers",
            "revisions",
            "applied",
            "users",
            "roles",
            "tokens",
            "audit",
            "audit_head",
        ] {
            let rows: Vec<String> =
                sqlx::query_scalar(&format!("SELECT row_to_json(t)::text FROM wgm.{table} t"))
                    .fetch_all(&mut c)
                    .await
                    .unwrap();
            dump.push_str(&rows.join("\n"));
        }
        c.close().await.unwrap();
        dump
    });
    assert!(
        at_rest.contains("peer_added"),
        "the dump holds no revisions"
    );
    check(&secrets, &logs, at_rest.as_bytes());
}
