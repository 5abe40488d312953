//! Firewall policy through the CLI: `wgm policy show|set`, the firewall options of
//! `wgm peer set`, bad input per field, who may change a policy, and history, diff and
//! rollback of policies.

use crate::harness::{check_failure, Env};

#[test]
fn server_and_peer_policies_round_trip_through_set_and_show() {
    let env = Env::new();
    env.server("office", 51820);
    env.ok(&["peer", "add", "office", "laptop"]);
    let v = env.json(&["policy", "show", "office"]);
    assert_eq!(v["policy"]["forwarding"], true);
    assert_eq!(v["policy"]["peer_to_peer"], false);
    assert_eq!(v["policy"]["default_verdict"], "allow");
    assert_eq!(v["peers"][0]["name"], "laptop");
    assert!(v["peers"][0]["policy"]["allow"].is_null());

    let v = env.json(&[
        "policy",
        "set",
        "office",
        "--forwarding",
        "off",
        "--masquerade4",
        "eth0",
        "--masquerade6",
        "eth1",
        "--peer-to-peer",
        "allow",
        "--default",
        "deny",
    ]);
    assert_eq!(v["policy"]["forwarding"], false);
    assert_eq!(v["policy"]["masquerade4"], "eth0");
    assert_eq!(v["policy"]["masquerade6"], "eth1");
    assert_eq!(v["policy"]["peer_to_peer"], true);
    assert_eq!(v["policy"]["default_verdict"], "deny");
    let shown = env.json(&["policy", "show", "office"]);
    assert_eq!(shown["policy"], v["policy"]);
    let v = env.json(&["policy", "set", "office", "--masquerade4", "none"]);
    assert!(v["policy"]["masquerade4"].is_null());
    assert_eq!(v["policy"]["masquerade6"], "eth1");

    let v = env.json(&[
        "peer",
        "set",
        "office",
        "laptop",
        "--allow",
        "fd00:300::/48,10.9.0.0/16:tcp:443",
        "--rate-up",
        "10mbit",
        "--rate-down",
        "20mbit",
        "--quota",
        "10GiB/30d",
        "--quota-action",
        "report",
    ]);
    let p = &v["policy"];
    assert_eq!(p["allow"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(p["rate_up"], "10mbit");
    assert_eq!(p["rate_down"], "20mbit");
    assert_eq!(p["quota_action"], "report");
    assert!(p["quota"].as_str().unwrap().contains("30d"), "{p}");
    let shown = env.json(&["peer", "show", "office", "laptop"]);
    assert_eq!(shown["policy"], v["policy"]);
    let table = env.ok(&["policy", "show", "office"]);
    assert!(
        table.contains("laptop") && table.contains("10mbit"),
        "{table}"
    );
    // Policy options and other settings are two revisions under two permissions: one
    // `peer set` with both is refused as a usage error before anything is written.
    let before = env.snapshot();
    let mixed = env.fails(
        &[
            "peer",
            "set",
            "office",
            "laptop",
            "--quota",
            "none",
            "--keepalive",
            "10",
        ],
        1,
    );
    assert!(mixed.contains("without other settings"), "{mixed}");
    assert_eq!(env.snapshot(), before);
    // `none` clears.
    let v = env.json(&[
        "peer", "set", "office", "laptop", "--allow", "none", "--quota", "none",
    ]);
    assert!(v["policy"]["allow"].is_null());
    assert!(v["policy"]["quota"].is_null());
    assert_eq!(v["policy"]["rate_up"], "10mbit");
    let v = env.json(&["peer", "set", "office", "laptop", "--keepalive", "10"]);
    assert_eq!(v["keepalive"], 10);
    assert_eq!(v["policy"]["rate_up"], "10mbit");
}

#[test]
fn bad_policy_input_exits_2_naming_the_field() {
    let env = Env::new();
    env.server("office", 51820);
    env.ok(&["peer", "add", "office", "laptop"]);
    let before = env.snapshot();
    let cases: &[(&[&str], &str)] = &[
        (&["--allow", "10.0.0.0/8:nope"], "peer.policy.allow[0]"),
        (
            &["--allow", "10.0.0.0/8,10.1.0.0/16"],
            "peer.policy.allow[1]",
        ),
        (&["--rate-up", "fast"], "peer.policy.rate_up"),
        (&["--rate-down", "0mbit"], "peer.policy.rate_down"),
        (&["--quota", "10GiB"], "peer.policy.quota"),
        (&["--quota-action", "block"], "peer.policy.quota_action"),
    ];
    for (opts, field) in cases {
        let mut args = vec!["peer", "set", "office", "laptop"];
        args.extend_from_slice(opts);
        let r = env.run(&args);
        check_failure(&args, &r, 2);
        assert!(r.stderr.contains(field), "{args:?}: {}", r.stderr);
    }
    let cases: &[(&[&str], &str)] = &[
        (&["--forwarding", "yes"], "server.policy.forwarding"),
        (&["--masquerade4", "bad/name"], "server.policy.masquerade4"),
        (&["--masquerade6", ""], "server.policy.masquerade6"),
        (&["--peer-to-peer", "on"], "server.policy.peer_to_peer"),
        (&["--default", "reject"], "server.policy.default_verdict"),
    ];
    for (opts, field) in cases {
        let mut args = vec!["policy", "set", "office"];
        args.extend_from_slice(opts);
        let r = env.run(&args);
        check_failure(&args, &r, 2);
        assert!(r.stderr.contains(field), "{args:?}: {}", r.stderr);
    }
    // Nothing to change is a usage error, as for `peer set`.
    let args = ["policy", "set", "office"];
    check_failure(&args, &env.run(&args), 1);
    assert_eq!(env.snapshot(), before, "nothing written");
}

#[test]
fn a_user_may_not_change_the_policy_of_their_own_peer() {
    let env = Env::new();
    env.server("office", 51820);
    env.ok(&["user", "add", "alice", "--role", "user"]);
    let t = env.json(&["token", "create", "alice"]);
    let token = t["secret"].as_str().unwrap().to_owned();
    let r = env.run(&["--token", &token, "peer", "add", "office", "alice-phone"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    env.ok(&["peer", "set", "office", "alice-phone", "--quota", "1GiB/1d"]);
    let before = env.snapshot();
    for args in [
        vec![
            "--token",
            &token,
            "peer",
            "set",
            "office",
            "alice-phone",
            "--quota",
            "none",
        ],
        vec![
            "--token",
            &token,
            "peer",
            "set",
            "office",
            "alice-phone",
            "--allow",
            "none",
        ],
        vec![
            "--token",
            &token,
            "policy",
            "set",
            "office",
            "--default",
            "allow",
        ],
    ] {
        let r = env.run(&args);
        check_failure(&args, &r, 5);
        assert!(r.stderr.contains("policy"), "{}", r.stderr);
    }
    let after = env.snapshot();
    assert_eq!(after["per_server"], before["per_server"], "nothing written");
    let shown = env.json(&["peer", "show", "office", "alice-phone"]);
    assert!(shown["policy"]["quota"]
        .as_str()
        .unwrap()
        .starts_with("1GiB"));
}

#[test]
fn history_diff_and_rollback_cover_policies() {
    let env = Env::new();
    env.server("office", 51820);
    env.ok(&["peer", "add", "office", "laptop"]);
    let base = env.json(&["history", "office"]).as_array().unwrap().len();
    env.ok(&["policy", "set", "office", "--default", "deny"]);
    env.ok(&["peer", "set", "office", "laptop", "--rate-up", "5mbit"]);
    let h = env.json(&["history", "office"]);
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), base + 2);
    let to = (base + 2).to_string();
    let from = base.to_string();
    let d = env.json(&["diff", "office", &from, &to]).to_string();
    assert!(d.contains("policy.default_verdict"), "{d}");
    assert!(d.contains("policy.rate_up"), "{d}");
    assert!(d.contains("5mbit"), "{d}");
    env.ok(&["rollback", "office", &from]);
    let v = env.json(&["policy", "show", "office"]);
    assert_eq!(v["policy"]["default_verdict"], "allow");
    assert!(v["peers"][0]["policy"]["rate_up"].is_null(), "{v}");
}
