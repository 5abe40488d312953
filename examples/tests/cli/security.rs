//! The master key, secrets at rest and in messages.

use std::os::unix::fs::PermissionsExt;

use crate::harness::{check_failure, Env};

fn with_key_file(env: &Env, key: &std::path::Path, args: &[&str]) -> crate::harness::Run {
    let mut c = env.bare();
    c.arg("--store")
        .arg(&env.store)
        .arg("--master-key-file")
        .arg(key)
        .args(args);
    let o = c.output().unwrap();
    crate::harness::Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[test]
fn a_wrong_master_key_fails_loudly_and_writes_nothing() {
    let env = Env::new();
    env.server("office", 51820);
    env.ok(&["peer", "add", "office", "alice"]);
    let before = env.snapshot();
    // Another valid key, in its own 0600 file.
    let other = env.path("other.key");
    let out = env
        .bare()
        .args(["--store"])
        .arg(format!("sqlite://{}", env.path("x.db").display()))
        .arg("--master-key-file")
        .arg(&other)
        .arg("init")
        .output()
        .unwrap();
    assert!(out.status.success());
    for args in [
        &["server", "list"][..],
        &["peer", "add", "office", "bob"],
        &["peer", "config", "office", "alice"],
        &["server", "export", "office"],
        &["server", "create", "second", "--listen-port", "51821"],
    ] {
        let r = with_key_file(&env, &other, args);
        check_failure(args, &r, 6);
        assert!(r.stderr.contains("wrong master key"), "{}", r.stderr);
        assert!(!r.stderr.contains("PrivateKey"));
    }
    // The same through WGM_MASTER_KEY.
    let text = std::fs::read_to_string(&other).unwrap();
    let r = env
        .bare()
        .env("WGM_MASTER_KEY", text.trim())
        .args(["--store", &env.store, "peer", "config", "office", "alice"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(6));
    assert!(
        !String::from_utf8_lossy(&r.stderr).contains(text.trim()),
        "the key is never echoed"
    );
    // The right key in WGM_MASTER_KEY works.
    let right = std::fs::read_to_string(&env.key).unwrap();
    let r = env
        .bare()
        .env("WGM_MASTER_KEY", right.trim())
        .args(["--store", &env.store, "peer", "config", "office", "alice"])
        .output()
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    // A malformed WGM_MASTER_KEY is refused without echoing it.
    let r = env
        .bare()
        .env("WGM_MASTER_KEY", "c2VjcmV0LXZhbHVl")
        .args(["--store", &env.store, "server", "list"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(6));
    assert!(!String::from_utf8_lossy(&r.stderr).contains("c2VjcmV0LXZhbHVl"));
    assert_eq!(env.snapshot(), before);
}

#[test]
fn key_files_readable_by_others_missing_or_garbage_are_refused() {
    let env = Env::new();
    env.server("office", 51820);
    let before = env.snapshot();
    std::fs::set_permissions(&env.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = env.fails(&["server", "list"], 6);
    assert!(e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&env.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A store with secrets never gets a fresh key silently.
    let missing = env.path("missing.key");
    let r = with_key_file(&env, &missing, &["server", "list"]);
    check_failure(&["server", "list"], &r, 6);
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
    assert!(!missing.exists());
    let garbage = env.path("garbage.key");
    wgm_cli::files::write_private_atomic(&garbage, b"not a key\n").unwrap();
    let r = with_key_file(&env, &garbage, &["server", "list"]);
    check_failure(&["server", "list"], &r, 6);
    assert_eq!(env.snapshot(), before);
}

#[test]
fn secrets_are_sealed_at_rest_and_absent_from_errors_and_logs() {
    let env = Env::new();
    env.server("office", 51820);
    env.ok(&["peer", "add", "office", "alice"]);
    let cfg = env.ok(&["peer", "config", "office", "alice"]);
    let secret = |prefix: &str| {
        cfg.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap()
            .to_owned()
    };
    let private = secret("PrivateKey = ");
    let psk = secret("PresharedKey = ");
    let server_cfg = env.ok(&["server", "export", "office"]);
    let server_private = server_cfg
        .lines()
        .find_map(|l| l.strip_prefix("PrivateKey = "))
        .unwrap()
        .to_owned();
    // Nothing in the database files holds them in plain text.
    let mut db = Vec::new();
    for entry in std::fs::read_dir(env.dir.path()).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("wgm.db") {
            db.extend(std::fs::read(&p).unwrap());
        }
    }
    assert!(!db.is_empty());
    let hay = String::from_utf8_lossy(&db);
    for s in [&private, &psk, &server_private] {
        assert!(
            !hay.contains(s.as_str()),
            "a secret is stored in plain text"
        );
    }
    // Verbose logging of a whole session never prints them either.
    let mut c = env.cmd(&["peer", "list", "office"]);
    c.env("WGM_LOG", "trace");
    let o = c.output().unwrap();
    let mut c = env.cmd(&["peer", "rotate-psk", "office", "alice"]);
    c.env("WGM_LOG", "trace");
    let o2 = c.output().unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o2.stderr)
    );
    for s in [&private, &psk, &server_private] {
        assert!(!logs.contains(s.as_str()), "a secret in the logs");
    }
    // A token's secret is shown once and appears nowhere else.
    env.ok(&["user", "add", "ann", "--role", "operator"]);
    let t = env.json(&["token", "create", "ann"]);
    let token = t["secret"].as_str().unwrap();
    let audit = env.ok(&["--json", "audit"]);
    assert!(!audit.contains(token));
    let r = env.run(&["--token", &format!("{token}x"), "server", "list"]);
    assert_eq!(r.code, 5);
    assert!(!r.stderr.contains(token));
}
