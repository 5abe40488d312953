//! The same commands on PostgreSQL (`--store postgres://…`), in a database created for
//! the test and dropped afterwards. Opt-in with `WGM_TEST_POSTGRES_URL` (an admin URL;
//! needs `psql`; with the switch on, a server that does not answer fails the test).

use std::process::Command;

use wgm_test_support::{require, Suite};

use crate::harness::Env;

/// A fresh database, dropped on drop (through `psql`, with argv, no shell).
pub(crate) struct Database {
    admin: String,
    name: String,
}

impl Database {
    pub(crate) fn create(admin: &str) -> Database {
        let name = format!("wgm_cli_{}_{}", std::process::id(), rand_suffix());
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

    pub(crate) fn url(&self) -> String {
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

fn rand_suffix() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    t % 1_000_000
}

/// The same commands on any store at `store`, whose key file is a file too: init, add,
/// remove, disable, config, history, rollback, `audit --verify`; `before_key_loss` runs
/// just before the key file is removed (the engine's own checks). Without the key file
/// the store's secrets stay sealed.
pub(crate) fn walkthrough(store: String, what: &str, before_key_loss: impl FnOnce()) {
    let mut env = Env::new();
    env.store = store;
    let init = env.json(&["init"]);
    assert_eq!(
        init["master_key"]["created"], true,
        "the key of a {what} store is a file too"
    );
    env.server("office", 51820);
    let added = env.json(&["peer", "add", "office", "dev", "--count", "10"]);
    assert_eq!(added.as_array().unwrap().len(), 10);
    env.ok(&["peer", "remove", "office", "dev-3"]);
    env.ok(&["peer", "disable", "office", "dev-4"]);
    let cfg = env.ok(&["peer", "config", "office", "dev-1"]);
    assert!(cfg.contains("PrivateKey = "));
    assert_eq!(
        env.json(&["history", "office"]).as_array().unwrap().len(),
        4
    );
    env.ok(&["rollback", "office", "2"]);
    assert_eq!(
        env.json(&["peer", "list", "office"])
            .as_array()
            .unwrap()
            .len(),
        10
    );
    assert_eq!(env.json(&["audit", "--verify"])["records"], 6);
    before_key_loss();
    std::fs::remove_file(&env.key).unwrap();
    env.fails(&["peer", "config", "office", "dev-1"], 6);
}

#[test]
fn the_cli_works_on_postgresql() {
    let Some(pg) = require(Suite::Postgres, &["psql"]) else {
        return;
    };
    let db = Database::create(pg.url());
    walkthrough(db.url(), "PostgreSQL", || {});
}
