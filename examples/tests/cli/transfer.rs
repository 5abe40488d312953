//! `wgm store copy`, `wgm backup` and `wgm restore`: a whole installation moved between
//! stores and through a sealed file, answering the same afterwards.

use serde_json::Value;
use wgm_test_support::{require, Suite};

use crate::harness::{check_failure, mode, Env};
use crate::postgres::Database;
use crate::redis::Namespace;

/// A store with a bit of everything: two servers (one deleted), peers, a removal, a
/// rollback, a user with a token.
fn filled() -> Env {
    let env = Env::new();
    env.server("office", 51820);
    env.json(&[
        "server",
        "create",
        "lab",
        "--listen-port",
        "51821",
        "--ipv6",
        "fd12:3456:789a:2::/64",
        "--ipv4",
        "10.9.0.0/24",
    ]);
    env.json(&["peer", "add", "office", "dev", "--count", "4"]);
    env.ok(&["peer", "remove", "office", "dev-2"]);
    env.ok(&["rollback", "office", "2"]);
    env.ok(&["peer", "remove", "office", "dev-3"]);
    env.ok(&["server", "delete", "lab"]);
    env.json(&["user", "add", "ann", "--role", "operator"]);
    env.json(&["token", "create", "ann", "--name", "ci"]);
    env
}

/// The same key and another store.
fn at(env: &Env, store: String) -> Env {
    let mut other = Env::new();
    other.store = store;
    other.key.clone_from(&env.key);
    other
}

/// What must be identical across stores: everything `Env::snapshot` reads, the audit
/// verification (records and head) and a client config.
fn observed(env: &Env) -> (Value, Value, String) {
    let verify = env.json(&["audit", "--verify"]);
    let cfg = env.ok(&["peer", "config", "office", "dev-1"]);
    (env.snapshot(), verify, cfg)
}

#[test]
fn store_copy_sqlite_postgres_redis_sqlite_keeps_everything() {
    let Some(pg) = require(Suite::Postgres, &["psql"]) else {
        return;
    };
    let Some(redis) = require(Suite::Redis, &["redis-cli"]) else {
        return;
    };
    let db = Database::create(pg.url());
    let ns = Namespace::new(redis.url());
    let a = filled();
    let before = a.snapshot();
    let verify_a = a.json(&["audit", "--verify"]);
    let b = Env::new();
    let last = format!("sqlite://{}", b.path("copy.db").display());
    let hops = [a.store.clone(), db.url(), ns.store_url(), last];
    for pair in hops.windows(2) {
        let v = a.json(&["store", "copy", "--from", &pair[0], "--to", &pair[1]]);
        assert_eq!(v["copied"]["servers"], 2, "{v}");
        assert_eq!(v["copied"]["audit_head"], verify_a["head"], "{v}");
        let there = at(&a, pair[1].clone());
        assert_eq!(there.snapshot(), before, "after copying into {}", pair[1]);
        assert_eq!(there.json(&["audit", "--verify"]), verify_a);
    }
    // The end of the chain answers as the start, client configs included (each export
    // is audited in its own store from here on).
    let end = at(&a, hops[3].clone());
    assert_eq!(observed(&end), observed(&a));
    // A non-empty target is refused and left as it was.
    let again = a.fails(&["store", "copy", "--from", &hops[0], "--to", &hops[2]], 4);
    assert!(again.contains("not empty"), "{again}");
    assert_eq!(at(&a, hops[2].clone()).snapshot(), before);
    drop(ns);
    drop(db);
}

#[test]
fn backup_and_restore_round_trip() {
    let a = filled();
    let file = a.path("wgm.backup");
    let file_s = file.to_str().unwrap();
    let v = a.json(&["backup", file_s]);
    assert_eq!(v["backed_up"]["servers"], 2, "{v}");
    assert_eq!(mode(&file), 0o600);
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"WGMBACK\n"));
    // Never overwritten without --force; replaced with it.
    let exists = a.fails(&["backup", file_s], 4);
    assert!(exists.contains("already exists"), "{exists}");
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
    a.json(&["backup", file_s, "--force"]);
    assert_ne!(
        std::fs::read(&file).unwrap(),
        bytes,
        "a new nonce each time"
    );
    assert_eq!(mode(&file), 0o600);

    let target = format!("sqlite://{}", a.path("restored.db").display());
    let r = a.json(&["restore", file_s, "--to", &target]);
    assert_eq!(r["restored"]["users"], 1, "{r}");
    let restored = at(&a, target.clone());
    assert_eq!(observed(&restored), observed(&a));

    // Into a store that is not empty: refused, nothing written.
    let before = restored.snapshot();
    let full = a.fails(&["restore", file_s, "--to", &target], 4);
    assert!(full.contains("not empty"), "{full}");
    assert_eq!(restored.snapshot(), before);

    // Forced: a later backup replaces everything the target holds. A truncated file is
    // refused first, forced or not, and changes nothing.
    a.json(&["peer", "add", "office", "late"]);
    a.json(&["backup", file_s, "--force"]);
    let cut = a.path("cut.backup");
    let later = std::fs::read(&file).unwrap();
    std::fs::write(&cut, &later[..later.len() - 1]).unwrap();
    a.fails(
        &["restore", cut.to_str().unwrap(), "--to", &target, "--force"],
        6,
    );
    assert_eq!(restored.snapshot(), before);
    let r = a.json(&["restore", file_s, "--to", &target, "--force"]);
    assert_eq!(r["replaced"], true, "{r}");
    assert_eq!(observed(&restored), observed(&a));
    assert_ne!(restored.snapshot(), before);
}

#[test]
fn restore_refuses_bad_files_and_other_keys_writing_nothing() {
    let a = filled();
    let file = a.path("wgm.backup");
    let file_s = file.to_str().unwrap();
    a.json(&["backup", file_s]);
    let bytes = std::fs::read(&file).unwrap();
    let target_db = a.path("never.db");
    let target = format!("sqlite://{}", target_db.display());

    let cut = a.path("cut.backup");
    std::fs::write(&cut, &bytes[..bytes.len() - 7]).unwrap();
    let e = a.fails(&["restore", cut.to_str().unwrap(), "--to", &target], 6);
    assert!(e.contains("altered or truncated"), "{e}");

    let flipped = a.path("flipped.backup");
    let mut f = bytes.clone();
    f[12] ^= 0x01;
    std::fs::write(&flipped, &f).unwrap();
    a.fails(&["restore", flipped.to_str().unwrap(), "--to", &target], 2);

    let other = Env::new();
    other.ok(&["init"]);
    let mut c = a.bare();
    c.args(["--master-key-file", other.key.to_str().unwrap()]);
    c.args(["restore", file_s, "--to", &target]);
    let out = c.output().unwrap();
    let r = crate::harness::Run::from(&out);
    check_failure(&["restore", "(another key)"], &r, 6);
    assert!(r.stderr.contains("sealed with master key"), "{}", r.stderr);
    assert!(!target_db.exists(), "a refused restore created its target");
}
