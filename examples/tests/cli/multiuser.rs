//! Many users on one installation, through the CLI with `--token`, exactly as the
//! attacks were found: a `user` routing other people's traffic to their peer, undoing an
//! administrator, and reading other users' peers through `plan` and `status`; and the
//! rules `server import` and `server create` share.

use serde_json::Value;

use crate::harness::{check_failure, Env};

/// A user with the built-in `user` role and an API token; returns the token.
fn user_token(env: &Env, name: &str) -> String {
    env.ok(&["user", "add", name, "--role", "user"]);
    let t = env.json(&["token", "create", name]);
    t["secret"].as_str().unwrap().to_owned()
}

fn as_user(env: &Env, token: &str, args: &[&str]) -> crate::harness::Run {
    let mut a = vec!["--token", token];
    a.extend_from_slice(args);
    env.run(&a)
}

fn denials_of(env: &Env, actor: &str, action: &str) -> usize {
    let audit = env.json(&["audit", "--actor", actor]);
    audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["entry"]["outcome"] == "denied" && r["entry"]["action"] == action)
        .count()
}

#[test]
fn a_user_token_cannot_route_other_peoples_traffic_to_its_peer() {
    let env = Env::new();
    env.server("office", 51820);
    let alice = user_token(&env, "alice");
    let r = as_user(&env, &alice, &["peer", "add", "office", "alice-phone"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let before = env.snapshot();
    let args = [
        "peer",
        "set",
        "office",
        "alice-phone",
        "--allowed-ips",
        "8.8.8.8/32,1.1.1.0/24",
    ];
    let r = as_user(&env, &alice, &args);
    check_failure(&args, &r, 5);
    assert!(r.stderr.contains("peer:route"), "{}", r.stderr);
    let args = [
        "peer",
        "add",
        "office",
        "alice-router",
        "--allowed-ips",
        "192.168.50.0/24",
    ];
    let r = as_user(&env, &alice, &args);
    check_failure(&args, &r, 5);
    // Nothing written but the two refusals' audit records.
    let mut want = before;
    want["audit_writes"] = (want["audit_writes"].as_u64().unwrap() + 2).into();
    assert_eq!(env.snapshot(), want);
    // The administrator's plan routes nothing of it.
    let plan = env.json(&["plan", "office"]).to_string();
    assert!(
        !plan.contains("8.8.8.8") && !plan.contains("1.1.1.0"),
        "{plan}"
    );
    assert_eq!(denials_of(&env, "user:alice", "peer.route"), 2);
    // An operator may grant a network; the user keeps it but cannot widen it.
    env.ok(&[
        "peer",
        "set",
        "office",
        "alice-phone",
        "--allowed-ips",
        "192.168.7.0/24",
    ]);
    let args = [
        "peer",
        "set",
        "office",
        "alice-phone",
        "--allowed-ips",
        "192.168.7.0/24,8.8.8.8/32",
    ];
    check_failure(&args, &as_user(&env, &alice, &args), 5);
    let shown = env.json(&["peer", "show", "office", "alice-phone"]);
    assert_eq!(
        shown["extra_allowed_ips"],
        serde_json::json!(["192.168.7.0/24"])
    );
}

#[test]
fn a_user_token_cannot_undo_an_administrators_disable_or_expiry() {
    let env = Env::new();
    env.server("office", 51820);
    let alice = user_token(&env, "alice");
    assert_eq!(
        as_user(&env, &alice, &["peer", "add", "office", "alice-phone"]).code,
        0
    );
    let v = env.json(&["peer", "disable", "office", "alice-phone"]);
    assert_eq!(v["disabled_by"], "administrator");
    let args = ["peer", "enable", "office", "alice-phone"];
    check_failure(&args, &as_user(&env, &alice, &args), 5);
    assert_eq!(
        env.json(&["peer", "show", "office", "alice-phone"])["enabled"],
        false
    );
    env.ok(&["peer", "enable", "office", "alice-phone"]);
    // Her own disable she may lift.
    assert_eq!(
        as_user(&env, &alice, &["peer", "disable", "office", "alice-phone"]).code,
        0
    );
    assert_eq!(
        as_user(&env, &alice, &["peer", "enable", "office", "alice-phone"]).code,
        0
    );
    // An expiry the administrator set: never lifted or extended by her.
    env.ok(&["peer", "set", "office", "alice-phone", "--expires", "30d"]);
    for expires in ["never", "90d"] {
        let args = ["peer", "set", "office", "alice-phone", "--expires", expires];
        check_failure(&args, &as_user(&env, &alice, &args), 5);
    }
    let r = as_user(
        &env,
        &alice,
        &["peer", "set", "office", "alice-phone", "--expires", "1d"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(denials_of(&env, "user:alice", "peer.update") >= 3);
}

#[test]
fn plan_and_status_show_a_user_token_nothing_of_other_users() {
    let env = Env::new();
    env.server("office", 51820);
    let alice = user_token(&env, "alice");
    let bob = user_token(&env, "bob");
    assert_eq!(
        as_user(&env, &alice, &["peer", "add", "office", "alice-phone"]).code,
        0
    );
    assert_eq!(
        as_user(&env, &bob, &["peer", "add", "office", "bob-phone"]).code,
        0
    );
    let bob_key = env.json(&["peer", "show", "office", "bob-phone"])["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = env.snapshot();
    for args in [
        &["plan", "office"][..],
        &["history", "office"],
        &["diff", "office", "1", "2"],
    ] {
        let r = as_user(&env, &alice, args);
        check_failure(args, &r, 5);
        assert!(!r.stderr.contains("bob"), "{}", r.stderr);
    }
    let r = as_user(&env, &alice, &["--json", "status", "office"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let status: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(status["missing"], serde_json::json!(["alice-phone"]));
    for leak in ["bob-phone", bob_key.as_str()] {
        assert!(
            !r.stdout.contains(leak) && !r.stderr.contains(leak),
            "{leak}"
        );
    }
    // Status wrote nothing for her; the three refusals wrote their audit records.
    let mut want = before;
    want["audit_writes"] = (want["audit_writes"].as_u64().unwrap() + 3).into();
    assert_eq!(env.snapshot(), want);
    // The administrator sees both.
    let all = env.json(&["status", "office"]);
    assert_eq!(
        all["missing"],
        serde_json::json!(["alice-phone", "bob-phone"])
    );
}

#[test]
fn import_and_create_keep_the_one_host_rules() {
    let env = Env::new();
    env.server("office", 51820);
    env.ok(&["peer", "add", "office", "alice"]);
    let before = env.snapshot();
    // A second server on office's port, or with its pools.
    let e = env.fails(
        &[
            "server",
            "create",
            "lab",
            "--listen-port",
            "51820",
            "--ipv6",
            "fd00:77::/64",
        ],
        2,
    );
    assert!(e.contains("server.listen_port"), "{e}");
    let e = env.fails(
        &[
            "server",
            "create",
            "lab",
            "--listen-port",
            "51821",
            "--ipv6",
            "fd12:3456:789a:1::/64",
        ],
        2,
    );
    assert!(e.contains("server.ipv6_pool"), "{e}");
    // An imported peer whose allowed IPs cover the whole pool and the server's address.
    let key = wgm_core::keys::PrivateKey::generate();
    let peer = wgm_core::keys::PrivateKey::generate().public_key();
    let text = format!(
        "[Interface]\nPrivateKey = {}\nAddress = fd00:88::1/64, 10.88.0.1/24\nListenPort = 51888\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = fd00:88::2/128, 10.88.0.0/24\n",
        key.expose_base64().as_str(),
        peer.to_base64()
    );
    let file = env.path("covering.conf");
    std::fs::write(&file, text).unwrap();
    let e = env.fails(
        &[
            "server",
            "import",
            "imp",
            "--file",
            file.to_str().unwrap(),
            "--interface",
            "wgimp",
        ],
        2,
    );
    assert!(e.contains("import.peers[0].AllowedIPs"), "{e}");
    // The export of office, imported again: its port, key and pools are taken.
    let conf = env.path("office.conf");
    env.ok(&[
        "server",
        "export",
        "office",
        "--out",
        conf.to_str().unwrap(),
    ]);
    let e = env.fails(
        &[
            "server",
            "import",
            "copy",
            "--file",
            conf.to_str().unwrap(),
            "--interface",
            "wgcopy",
        ],
        2,
    );
    assert!(e.contains("import."), "{e}");
    assert_eq!(env.snapshot(), before);
}
