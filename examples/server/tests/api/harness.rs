//! Starting the real `wgm-server` binary on a free loopback port with a temporary store,
//! and talking to it with an HTTP client.

// `Server::start(&store, Options::default().env(..))` reads better than a borrow.
#![allow(clippy::needless_pass_by_value)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wgm_cli::open::{open, KeySource, OpenOptions};
use wgm_core::manager::NewUser;
use wgm_core::model::RoleAssignment;
use wgm_core::names::{RoleName, UserName};
use wgm_core::rbac::Scope;

/// The JWT key every server of a test shares (base64 of 32 random-looking bytes).
pub const JWT_KEY: &str = "q8n3Hc0Vt6C7o2y1XJtq7m1b0o7tQm2W3xv9sB0fK6E=";

pub const ADMIN_PASSWORD: &str = "adm1n-Pa55word-for-tests";

static PROVIDER: Once = Once::new();

/// rustls's ring provider for the test client.
pub fn install_provider() {
    PROVIDER.call_once(|| {
        #[allow(deprecated)]
        let p = rustls::crypto::ring::default_provider();
        let _ = p.install_default();
    });
}

/// A store (a temporary SQLite file unless `url` is given) with its master key file.
pub struct Store {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub key: PathBuf,
}

impl Store {
    pub fn sqlite() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("wgm.db").display());
        let key = dir.path().join("wgm.key");
        Store { dir, url, key }
    }

    pub fn at(url: String) -> Store {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("wgm.key");
        Store { dir, url, key }
    }

    /// Run `f` on a manager of this store, as its local administrator, on a runtime of
    /// its own (the tests call it from `block_in_place`).
    fn as_admin<T>(
        &self,
        f: impl AsyncFnOnce(&wgm_core::manager::Manager, &wgm_core::rbac::Principal) -> T,
    ) -> T {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let o = open(OpenOptions {
                store: Some(self.url.clone()),
                key: KeySource::File(self.key.clone()),
                local_admin: true,
                jwt: None,
            })
            .await
            .unwrap();
            let admin = o.local.as_ref().unwrap().principal("test");
            f(&o.manager, &admin).await
        })
    }

    /// Create user `name` with `role` and `password` as the local administrator.
    pub fn add_user(&self, name: &str, role: &str, password: &str) {
        self.as_admin(async |m, admin| {
            let mut spec = NewUser::new(UserName::new(name).unwrap(), RoleName::new(role).unwrap());
            spec.roles = vec![RoleAssignment {
                role: RoleName::new(role).unwrap(),
                scope: Scope::Global,
            }];
            spec.password = Some(zeroize::Zeroizing::new(password.to_owned()));
            m.create_user(admin, spec).await.unwrap();
        });
    }

    /// Write what the agent of `host` would report of server `server`: it applied
    /// `applied` and converged.
    pub fn report(&self, server: &str, host: &str, applied: u64) {
        self.as_admin(async |m, admin| {
            let id = m.resolve_server(admin, server).await.unwrap();
            let report = wgm_core::model::HostReport {
                server_id: id,
                host: wgm_core::names::HostName::new(host).unwrap(),
                agent: format!("{host}/1/1"),
                fencing: 0,
                applied: Some(wgm_core::model::RevisionNo(applied)),
                instance: None,
                converged: true,
                peers: 0,
                error: None,
                heartbeat: m.now(),
            };
            m.report_host(admin, &report).await.unwrap();
        });
    }
}

/// How to start a server.
pub struct Options {
    pub env: Vec<(String, String)>,
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            // Generous limits by default: the rate-limit tests set their own.
            env: vec![
                ("WGM_SERVER_RATE_PER_ADDRESS".into(), "100000/60".into()),
                ("WGM_SERVER_RATE_PER_PRINCIPAL".into(), "100000/60".into()),
                ("WGM_SERVER_RATE_LOGIN_PER_ADDRESS".into(), "1000/60".into()),
            ],
            tls: None,
        }
    }
}

impl Options {
    pub fn env(mut self, k: &str, v: &str) -> Options {
        self.env.retain(|(x, _)| x != k);
        self.env.push((k.into(), v.into()));
        self
    }
}

/// A running server; killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Server {
    pub fn start(store: &Store, o: Options) -> Server {
        install_provider();
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wgm-server"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", store.dir.path())
            .env("WGM_STORE", &store.url)
            .env("WGM_MASTER_KEY_FILE", &store.key)
            .env("WGM_SERVER_LISTEN", "127.0.0.1:0")
            .env("WGM_SERVER_JWT_KEY", JWT_KEY)
            .env("WGM_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
        match &o.tls {
            Some((c, k)) => {
                cmd.env("WGM_SERVER_TLS_CERT", c)
                    .env("WGM_SERVER_TLS_KEY", k);
            }
            None => {
                cmd.env("WGM_SERVER_INSECURE_HTTP", "1");
            }
        }
        for (k, v) in &o.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start wgm-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            panic!(
                "wgm-server did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let base = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Server {
            child,
            base,
            log,
            _logdir: logdir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails when any of `secrets` appears in the server's log.
    pub fn assert_no_secret_logged(&self, secrets: &[String]) {
        let log = self.log_text();
        assert!(!log.is_empty(), "the server logged nothing");
        for s in secrets.iter().filter(|s| s.len() >= 8) {
            assert!(
                !log.contains(s.as_str()),
                "a secret ({}…) appears in the server's log",
                &s[..4]
            );
        }
    }

    /// Send a signal to the server (through `kill(1)`, with argv, no shell).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn etag(&self) -> String {
        self.headers
            .get("etag")
            .expect("an ETag")
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[track_caller]
    pub fn ok(self) -> Answer {
        assert!(self.status.is_success(), "{} {}", self.status, self.text);
        self
    }

    /// An error answer of `status` with `code` (and `field`, when given).
    #[track_caller]
    pub fn err(&self, status: u16, code: &str, field: Option<&str>) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(self.body["code"], code, "{}", self.text);
        assert!(self.body["reason"].is_string(), "{}", self.text);
        assert!(self.body["kind"].is_string(), "{}", self.text);
        if let Some(f) = field {
            assert_eq!(self.body["field"], f, "{}", self.text);
        }
    }
}

/// A client acting as one bearer credential (or none).
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
}

impl Api {
    pub fn new(server: &Server) -> Api {
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            base: server.base.clone(),
            token: None,
        }
    }

    pub fn as_token(&self, token: &str) -> Api {
        Api {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut rb = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let res = rb.send().await.expect("request");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(
            !status.is_server_error(),
            "server error {status} on {path}: {text}"
        );
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body), &[]).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PATCH, path, Some(body), &[]).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PUT, path, Some(body), &[]).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, None, &[]).await
    }

    /// Log in; returns (access, refresh).
    pub async fn login(&self, user: &str, password: &str) -> (String, String) {
        let a = self
            .post("/api/v1/login", json!({"user": user, "password": password}))
            .await
            .ok();
        (
            a.body["access_token"].as_str().unwrap().to_owned(),
            a.body["refresh_token"].as_str().unwrap().to_owned(),
        )
    }
}

/// A store with an administrator `admin`, a server on it, and an admin client.
pub async fn admin_setup(o: Options) -> (Store, Server, Api, Vec<String>) {
    let store = Store::sqlite();
    tokio::task::block_in_place(|| store.add_user("admin", "admin", ADMIN_PASSWORD));
    let server = Server::start(&store, o);
    let anon = Api::new(&server);
    let (access, refresh) = anon.login("admin", ADMIN_PASSWORD).await;
    let secrets = vec![ADMIN_PASSWORD.to_owned(), access.clone(), refresh];
    (store, server, anon.as_token(&access), secrets)
}

/// The private and preshared keys in a wg-quick text.
pub fn keys_in(config: &str) -> Vec<String> {
    config
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let k = k.trim();
            (k == "PrivateKey" || k == "PresharedKey").then(|| v.trim().to_owned())
        })
        .collect()
}
