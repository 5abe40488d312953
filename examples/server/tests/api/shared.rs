//! Copies of the server sharing state: the library's login throttle and logouts through
//! their one store (two copies on one SQLite file, always run), two on one PostgreSQL
//! database, and rate limits shared through Redis. The last two are opt-in suites
//! (`WGM_TEST_POSTGRES_URL`, `WGM_TEST_REDIS_URL`); skipped visibly when off.

use std::collections::HashSet;
use std::process::Command;

use reqwest::Method;
use serde_json::json;
use wgm_test_support::{require, Suite};

use crate::harness::{Api, Options, Server, Store, ADMIN_PASSWORD};

/// A fresh database, dropped on drop (through `psql`, with argv, no shell).
struct Database {
    admin: String,
    name: String,
}

impl Database {
    fn create(admin: &str) -> Database {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("wgm_server_{}_{}", std::process::id(), t % 1_000_000);
        let ok = Command::new("psql")
            .args([
                admin,
                "-v",
                "ON_ERROR_STOP=1",
                "-qAtc",
                &format!("CREATE DATABASE {name}"),
            ])
            .status()
            .expect("psql")
            .success();
        assert!(ok, "CREATE DATABASE");
        Database {
            admin: admin.to_owned(),
            name,
        }
    }

    fn url(&self) -> String {
        let (base, query) = self
            .admin
            .split_once('?')
            .map_or((self.admin.as_str(), None), |(b, q)| (b, Some(q)));
        let host_start = base.find("://").map_or(0, |i| i + 3);
        let base = match base[host_start..].find('/') {
            Some(i) => &base[..host_start + i],
            None => base,
        };
        match query {
            Some(q) => format!("{base}/{}?{q}", self.name),
            None => format!("{base}/{}", self.name),
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                self.admin.as_str(),
                "-qAtc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .status();
    }
}

/// Two copies of the server on one store share the library's login throttle: wrong
/// passwords for one account alternating between them block it after the sixth (five
/// free failures), on both copies, though neither saw more than three. And a logout
/// through one copy holds on the other.
#[tokio::test(flavor = "multi_thread")]
async fn two_copies_share_the_login_throttle() {
    let store = Store::sqlite();
    tokio::task::block_in_place(|| store.add_user("admin", "admin", ADMIN_PASSWORD));
    // A long first block, so that the checks below never race its end.
    let o = || Options::default().env("WGM_SERVER_LOGIN_BLOCK_SECS", "600");
    let a = Server::start(&store, o());
    let b = Server::start(&store, o());
    let copies = [Api::new(&a), Api::new(&b)];
    for i in 0..6 {
        copies[i % 2]
            .post(
                "/api/v1/login",
                json!({"user": "admin", "password": "not-the-password"}),
            )
            .await
            .err(401, "unauthenticated", None);
    }
    for api in &copies {
        let t = api
            .post(
                "/api/v1/login",
                json!({"user": "admin", "password": ADMIN_PASSWORD}),
            )
            .await;
        t.err(429, "throttled", None);
        assert_eq!(t.body["kind"], "login");
        let after: u64 = t.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((500..=600).contains(&after), "{after}");
    }

    // A logout through one copy holds on the other, without Redis: the library records
    // the ended session in the store.
    let pw = "carol-password-42";
    tokio::task::block_in_place(|| store.add_user("carol", "user", pw));
    let (access, refresh) = copies[0].login("carol", pw).await;
    let on_a = Api::new(&a).as_token(&access);
    let on_b = Api::new(&b).as_token(&access);
    on_b.get("/api/v1/me").await.ok();
    let out = on_a
        .post("/api/v1/logout", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(out.status, 204, "{}", out.text);
    on_b.get("/api/v1/me")
        .await
        .err(401, "unauthenticated", None);
    on_a.get("/api/v1/me")
        .await
        .err(401, "unauthenticated", None);
    copies[1]
        .post("/api/v1/refresh", json!({"refresh_token": refresh}))
        .await
        .err(401, "unauthenticated", None);
    // A fresh login is a new session.
    let (again, _) = copies[1].login("carol", pw).await;
    Api::new(&a).as_token(&again).get("/api/v1/me").await.ok();

    let secrets = vec![
        ADMIN_PASSWORD.to_owned(),
        pw.to_owned(),
        access,
        refresh,
        again,
    ];
    a.assert_no_secret_logged(&secrets);
    b.assert_no_secret_logged(&secrets);
}

/// Two copies of the server on one PostgreSQL database: 200 concurrent peer adds split
/// across them give 200 unique addresses and 200 revisions, one each; conditional
/// writes at one revision raced across them land exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn two_copies_on_postgresql_200_concurrent_adds() {
    let Some(pg) = require(Suite::Postgres, &["psql"]) else {
        return;
    };
    let db = Database::create(pg.url());
    let store = Store::at(db.url());
    tokio::task::block_in_place(|| store.add_user("admin", "admin", ADMIN_PASSWORD));
    let a = Server::start(&store, Options::default());
    let b = Server::start(&store, Options::default());
    let (access, refresh) = Api::new(&a).login("admin", ADMIN_PASSWORD).await;
    let api_a = Api::new(&a).as_token(&access);
    // Same JWT key: a login on one copy is good on the other.
    let api_b = Api::new(&b).as_token(&access);
    api_a
        .post(
            "/api/v1/servers",
            json!({"name": "office", "listen_port": 51820, "ipv4_pool": "10.20.0.0/16"}),
        )
        .await
        .ok();
    api_b.get("/api/v1/servers/office").await.ok();

    let mut tasks = Vec::new();
    for i in 0..200 {
        let api = if i % 2 == 0 {
            api_a.clone()
        } else {
            api_b.clone()
        };
        tasks.push(tokio::spawn(async move {
            api.post(
                "/api/v1/servers/office/peers",
                json!({"name": format!("p{i}")}),
            )
            .await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let peers = api_b
        .get("/api/v1/servers/office/peers?limit=1000")
        .await
        .ok();
    let items = peers.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 200);
    let v6: HashSet<&str> = items
        .iter()
        .map(|p| p["address_v6"].as_str().unwrap())
        .collect();
    let v4: HashSet<&str> = items
        .iter()
        .map(|p| p["address_v4"].as_str().unwrap())
        .collect();
    assert_eq!((v6.len(), v4.len()), (200, 200), "unique addresses");
    let server = api_a.get("/api/v1/servers/office").await.ok();
    assert_eq!(server.body["revision"], 201);
    let mut revisions = Vec::new();
    let mut after = 0;
    loop {
        let h = api_a
            .get(&format!(
                "/api/v1/servers/office/history?after={after}&limit=1000"
            ))
            .await
            .ok();
        let items = h.body["items"].as_array().unwrap().clone();
        if items.is_empty() {
            break;
        }
        after = items.last().unwrap()["revision"].as_u64().unwrap();
        revisions.extend(items);
    }
    assert_eq!(revisions.len(), 201);
    for r in &revisions[1..] {
        let changes = r["changes"].as_array().unwrap();
        assert_eq!(changes.len(), 1, "{r}");
        assert_eq!(changes[0]["kind"], "peer_added");
    }

    // Conditional writes at one revision, raced across both copies: exactly one lands
    // (the store's compare-and-swap decides, not either copy's memory); the others get
    // 412 with the new head, and change nothing.
    let head = server.etag();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let api = if i % 2 == 0 {
            api_a.clone()
        } else {
            api_b.clone()
        };
        let head = head.clone();
        tasks.push(tokio::spawn(async move {
            api.call(
                Method::POST,
                "/api/v1/servers/office/peers",
                Some(json!({"name": format!("cond{i}")})),
                &[("If-Match", &head)],
            )
            .await
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        if r.status == 412 {
            assert_eq!(r.etag(), "\"202\"", "{}", r.text);
        }
        statuses.push(r.status);
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 412).count(),
        19,
        "{statuses:?}"
    );
    let server = api_b.get("/api/v1/servers/office").await.ok();
    assert_eq!(server.body["revision"], 202);

    // A newer build migrates the database: these copies are no longer ready (they would
    // read and write a schema they do not know), and are again once it is theirs.
    let psql = |sql: &str| {
        let ok = Command::new("psql")
            .args([db.url().as_str(), "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
            .status()
            .expect("psql")
            .success();
        assert!(ok, "{sql}");
    };
    let anon_a = Api::new(&a);
    assert_eq!(anon_a.get("/ready").await.ok().body["status"], "ok");
    psql("INSERT INTO wgm.schema_migrations (version, name, applied_ns) VALUES (999, 'future', 0)");
    // (Raw requests: the harness refuses 5xx answers.)
    let ready = |server: &Server| {
        let url = server.url("/ready");
        async move {
            let r = reqwest::get(url).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, text) = ready(&a).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("schema version 999"), "{text}");
    assert_eq!(ready(&b).await.0, 503);
    psql("DELETE FROM wgm.schema_migrations WHERE version = 999");
    assert_eq!(anon_a.get("/ready").await.ok().body["status"], "ok");
    let secrets = vec![ADMIN_PASSWORD.to_owned(), access, refresh];
    a.assert_no_secret_logged(&secrets);
    b.assert_no_secret_logged(&secrets);
}

/// Deletes the test's keys on drop (through `redis-cli`, with argv, no shell).
struct Namespace {
    url: String,
    name: String,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let out = Command::new("redis-cli")
            .args([
                "-u",
                &self.url,
                "--scan",
                "--pattern",
                &format!("{}*", self.name),
            ])
            .output();
        if let Ok(out) = out {
            for k in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = Command::new("redis-cli")
                    .args(["-u", &self.url, "DEL", k])
                    .output();
            }
        }
    }
}

/// With `redis_url`, two copies share the rate limit of an address and the list of
/// logged-out tokens.
#[tokio::test(flavor = "multi_thread")]
async fn redis_shares_limits_and_logouts_across_copies() {
    let Some(redis) = require(Suite::Redis, &["redis-cli"]) else {
        return;
    };
    let ns = Namespace {
        url: redis.url().to_owned(),
        name: format!("wgm-server-test-{}", std::process::id()),
    };
    let store = Store::sqlite();
    tokio::task::block_in_place(|| store.add_user("admin", "admin", ADMIN_PASSWORD));
    let o = || {
        Options::default()
            .env("WGM_SERVER_REDIS_URL", redis.url())
            .env("WGM_SERVER_REDIS_NAMESPACE", &ns.name)
            .env("WGM_SERVER_RATE_PER_ADDRESS", "10/60")
    };
    let a = Server::start(&store, o());
    let b = Server::start(&store, o());
    assert!(a.log_text().contains("shared through Redis"));
    // Logout on A holds on B.
    let (access, refresh) = Api::new(&a).login("admin", ADMIN_PASSWORD).await;
    let on_a = Api::new(&a).as_token(&access);
    let on_b = Api::new(&b).as_token(&access);
    on_b.get("/api/v1/me").await.ok();
    let out = on_a
        .post("/api/v1/logout", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(out.status, 204, "{}", out.text);
    on_b.get("/api/v1/me")
        .await
        .err(401, "unauthenticated", None);
    Api::new(&b)
        .post("/api/v1/refresh", json!({"refresh_token": refresh}))
        .await
        .err(401, "unauthenticated", None);
    // One budget of 10 for this address across both copies (4 spent above).
    let mut ok = 4;
    let mut refused = None;
    for i in 0..20 {
        let api = if i % 2 == 0 {
            Api::new(&a)
        } else {
            Api::new(&b)
        };
        let r = api.get("/api/v1/openapi.json").await;
        let r2 = api.get("/api/v1/servers").await;
        for x in [r, r2] {
            if x.status == 429 {
                refused.get_or_insert(x);
            } else {
                ok += 1;
            }
        }
        if refused.is_some() {
            break;
        }
    }
    let r = refused.expect("limited across copies");
    assert!(ok <= 11, "{ok} requests went through a budget of 10");
    assert!(r.headers.contains_key("retry-after"));
    let secrets = vec![ADMIN_PASSWORD.to_owned(), access, refresh];
    a.assert_no_secret_logged(&secrets);
    b.assert_no_secret_logged(&secrets);
}
