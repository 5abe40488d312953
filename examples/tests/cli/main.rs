//! Integration tests of the `wgm` binary: every command runs against a private SQLite
//! store in a temporary directory.

mod agent;
mod documented;
mod files;
mod firewall;
mod firewall_live;
mod harness;
mod live;
mod multiuser;
mod postgres;
mod redis;
mod rejections;
mod security;
mod tamper;
mod transfer;

use harness::{check_failure, mode, Env};
use serde_json::Value;

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x["name"].as_str().expect("name").to_owned())
        .collect()
}

#[test]
fn init_creates_the_store_and_a_private_key_file_once() {
    let env = Env::new();
    let v = env.json(&["init"]);
    assert_eq!(v["store_created"], true);
    assert_eq!(v["master_key"]["source"], "file");
    assert_eq!(v["master_key"]["created"], true);
    assert_eq!(mode(&env.key), 0o600);
    assert_eq!(mode(&env.path("wgm.db")), 0o600);
    let key = std::fs::read(&env.key).unwrap();
    let again = env.json(&["init"]);
    assert_eq!(again["store_created"], false);
    assert_eq!(again["master_key"]["created"], false);
    assert_eq!(
        std::fs::read(&env.key).unwrap(),
        key,
        "init never replaces a key"
    );
    let human = env.ok(&["init"]);
    assert!(
        human.contains("store:") && human.contains("master key:"),
        "{human}"
    );
}

#[test]
fn the_default_store_and_key_live_in_the_data_directory() {
    let env = Env::new();
    // XDG_DATA_HOME wins.
    let xdg = env.path("xdg");
    let out = env
        .bare()
        .env("XDG_DATA_HOME", &xdg)
        .args(["--json", "init"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(xdg.join("wgm/wgm.db").is_file());
    assert_eq!(mode(&xdg.join("wgm/wgm.key")), 0o600);
    assert_eq!(mode(&xdg.join("wgm")), 0o700);
    // Otherwise ~/.local/share/wgm; any command creates it on first use.
    let out = env.bare().args(["server", "list"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let home = env.path("home/.local/share/wgm");
    assert!(home.join("wgm.db").is_file());
    assert_eq!(mode(&home.join("wgm.key")), 0o600);
    // WGM_STORE is the same as --store.
    let other = env.path("other.db");
    let out = env
        .bare()
        .env("WGM_STORE", format!("sqlite://{}", other.display()))
        .args(["server", "list"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(other.is_file());
    assert_eq!(
        mode(&env.path("other.key")),
        0o600,
        "the key sits beside the database"
    );
}

#[test]
fn quickstart_makes_a_dual_stack_server_with_three_peers_and_shows_their_configs() {
    let env = Env::new();
    // Exactly the README's first command: no store option, the default data directory.
    let out = env.bare().arg("quickstart").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("[Interface]").count(), 3, "{stdout}");
    assert_eq!(stdout.matches("PrivateKey = ").count(), 3);
    for name in ["laptop", "phone", "tablet"] {
        assert!(stdout.contains(&format!("# Name = {name}")), "{stdout}");
    }
    for line in stdout.lines().filter(|l| l.starts_with("Address = ")) {
        assert!(
            line.contains("::") && line.contains("10.42.0."),
            "dual-stack: {line}"
        );
    }
    // The state behind it is real: the same store answers the other commands.
    let home_store = format!(
        "sqlite://{}",
        env.path("home/.local/share/wgm/wgm.db").display()
    );
    let list = env
        .bare()
        .args(["--json", "--store", &home_store, "peer", "list", "demo"])
        .output()
        .unwrap();
    let peers: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(names(&peers), ["laptop", "phone", "tablet"]);
    for p in peers.as_array().unwrap() {
        assert!(p["address_v6"].is_string() && p["address_v4"].is_string());
    }
    // Running it again, exactly as the README says, exits 0, says the server exists and
    // how to see its peers, and changes nothing.
    let history = |env: &Env| {
        let out = env
            .bare()
            .args(["--json", "--store", &home_store, "history", "demo"])
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let before = history(&env);
    let again = env.bare().arg("quickstart").output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&again.stdout),
        String::from_utf8_lossy(&again.stderr),
    );
    assert_eq!(again.status.code(), Some(0), "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("server demo exists") && out.contains("3 peers"),
        "{out}"
    );
    assert!(err.contains("wgm peer list demo"), "{err}");
    assert!(
        !out.contains("PrivateKey"),
        "no secret is printed again: {out}"
    );
    assert_eq!(history(&env), before, "the second run wrote nothing");
    let json = env.bare().args(["--json", "quickstart"]).output().unwrap();
    assert_eq!(json.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["created"], false);
    assert_eq!(v["server"]["name"], "demo");
    assert_eq!(v["server"]["peer_count"], 3);
    assert!(v.get("peers").is_none(), "{v}");
}

#[test]
fn a_taken_server_name_is_reported_before_the_interface_derived_from_it() {
    let env = Env::new();
    env.server("office", 51820);
    // The interface `office` is taken too, but the caller chose the name.
    let err = env.fails(&["server", "create", "office", "--listen-port", "51821"], 2);
    assert!(
        err.contains("server.name") && err.contains("office is already used by server office"),
        "{err}"
    );
    let err = env.fails(&["server", "create", "OFFICE", "--listen-port", "51821"], 2);
    assert!(err.contains("server.name"), "case-insensitive: {err}");
    // A free name whose interface is taken names the interface.
    let err = env.fails(
        &[
            "server",
            "create",
            "branch",
            "--interface",
            "office",
            "--listen-port",
            "51821",
        ],
        2,
    );
    assert!(err.contains("server.interface"), "{err}");
    // A quick start under a new name whose interface is taken is still refused, and
    // names the interface.
    let err = env.fails(&["quickstart", "branch", "--interface", "office"], 2);
    assert!(err.contains("server.interface"), "{err}");
}

#[test]
fn quickstart_json_has_the_server_and_every_config() {
    let env = Env::new();
    let v = env.json(&[
        "quickstart",
        "office",
        "--ipv4",
        "none",
        "--endpoint",
        "vpn.example.org:51820",
    ]);
    assert_eq!(v["server"]["name"], "office");
    assert_eq!(v["created"], true);
    assert!(v["server"]["ipv4_pool"].is_null());
    let peers = v["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 3);
    for p in peers {
        let cfg = p["config"].as_str().unwrap();
        assert!(cfg.contains("Endpoint = vpn.example.org:51820"), "{cfg}");
        assert!(p["peer"]["address_v4"].is_null());
    }
}

#[test]
fn server_create_list_show_set_export_rotate_delete() {
    let env = Env::new();
    let v = env.json(&[
        "server",
        "create",
        "office",
        "--listen-port",
        "51820",
        "--interface",
        "wg0",
        "--ipv6",
        "fd00:1::/64",
        "--ipv4",
        "10.20.0.0/24",
        "--endpoint",
        "[2001:db8::1]:51820",
        "--dns",
        "fd00:1::1, 10.20.0.1",
        "--mtu",
        "1380",
        "--strategy",
        "random",
        "--fwmark",
        "0x51820",
        "--tunnel",
        "split",
    ]);
    assert_eq!(v["name"], "office");
    assert_eq!(v["interface"], "wg0");
    assert_eq!(v["listen_port"], 51820);
    assert_eq!(v["ipv6_pool"], "fd00:1::/64");
    assert_eq!(v["address_v6"], "fd00:1::1");
    assert_eq!(v["ipv4_pool"], "10.20.0.0/24");
    assert_eq!(v["endpoint"], "[2001:db8::1]:51820");
    assert_eq!(v["mtu"], 1380);
    assert_eq!(v["revision"], 1);
    // Defaults: a random ULA /64, IPv6 only, interface = name.
    let d = env.json(&["server", "create", "lab", "--listen-port", "51821"]);
    assert!(d["ipv6_pool"].as_str().unwrap().starts_with("fd"));
    assert!(d["ipv6_pool"].as_str().unwrap().ends_with("/64"));
    assert!(d["ipv4_pool"].is_null());
    assert_eq!(d["interface"], "lab");

    assert_eq!(names(&env.json(&["server", "list"])), ["lab", "office"]);
    let table = env.ok(&["server", "list"]);
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("IPV6 POOL"),
        "{table}"
    );
    assert!(table.lines().nth(2).unwrap().starts_with("office "));
    let show = env.ok(&["server", "show", "office"]);
    assert!(
        show.contains("fd00:1::/64") && show.contains("public key:"),
        "{show}"
    );
    let by_id = env.json(&["server", "show", v["id"].as_str().unwrap()]);
    assert_eq!(by_id["name"], "office");

    let set = env.json(&[
        "server",
        "set",
        "office",
        "--endpoint",
        "vpn.example.org:51820",
        "--dns",
        "none",
        "--mtu",
        "1420",
        "--client-keepalive",
        "0",
    ]);
    assert_eq!(set["endpoint"], "vpn.example.org:51820");
    assert_eq!(set["dns"], Value::Array(vec![]));
    assert_eq!(set["client_template"]["keepalive"], 0);
    assert_eq!(set["revision"], 2);
    env.fails(&["server", "set", "office"], 1);
    assert_eq!(
        env.json(&["server", "set", "office", "--active", "no"])["active"],
        false
    );
    assert_eq!(
        env.json(&["server", "set", "office", "--active", "yes"])["active"],
        true
    );
    env.fails(&["server", "set", "office", "--active", "maybe"], 2);

    let export = env.ok(&["server", "export", "office"]);
    assert!(
        export.contains("[Interface]") && export.contains("ListenPort = 51820"),
        "{export}"
    );
    assert!(export.contains("PrivateKey = "));
    let file = env.path("office.conf");
    env.ok(&[
        "server",
        "export",
        "office",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), export);
    assert_eq!(mode(&file), 0o600);

    let rotated = env.json(&["server", "rotate-key", "office"]);
    assert_ne!(rotated["public_key"], v["public_key"]);
    assert_eq!(rotated["revision"], 5);

    let del = env.json(&["server", "delete", "office"]);
    assert_eq!(del["deleted"]["name"], "office");
    assert_eq!(names(&env.json(&["server", "list"])), ["lab"]);
    let e = env.fails(&["server", "show", "office"], 3);
    assert!(e.contains("not found"), "{e}");
    // A name that is taken.
    env.fails(
        &[
            "server",
            "create",
            "lab",
            "--listen-port",
            "51822",
            "--interface",
            "wg9",
        ],
        2,
    );
}

#[test]
fn server_import_takes_a_wg_quick_file_in_one_revision() {
    let env = Env::new();
    env.server("a", 51820);
    env.ok(&["peer", "add", "a", "p1"]);
    env.ok(&["peer", "add", "a", "p2", "--allowed-ips", "192.168.7.0/24"]);
    let conf = env.path("a.conf");
    env.ok(&["server", "export", "a", "--out", conf.to_str().unwrap()]);
    env.ok(&["server", "delete", "a"]);
    let v = env.json(&[
        "server",
        "import",
        "b",
        "--file",
        conf.to_str().unwrap(),
        "--interface",
        "wg1",
    ]);
    assert_eq!(v["peer_count"], 2);
    assert_eq!(v["revision"], 1);
    assert_eq!(v["ipv4_pool"], "10.8.0.0/24");
    let peers = env.json(&["peer", "list", "b"]);
    assert_eq!(names(&peers), ["p1", "p2"]);
    assert_eq!(peers[1]["extra_allowed_ips"][0], "192.168.7.0/24");
    // Hooks are refused unless allowed; allowed, they are dropped, never stored.
    let text = std::fs::read_to_string(&conf).unwrap().replace(
        "[Interface]\n",
        "[Interface]\nPostUp = iptables -A FORWARD -i %i -j ACCEPT\n",
    );
    let hooked = env.path("hooked.conf");
    std::fs::write(&hooked, text).unwrap();
    // Server b holds this file's port, key and pools: a second copy on the same host is
    // refused.
    let e = env.fails(
        &[
            "server",
            "import",
            "c",
            "--file",
            conf.to_str().unwrap(),
            "--interface",
            "wg2",
        ],
        2,
    );
    assert!(e.contains("import.listen_port"), "{e}");
    env.ok(&["server", "delete", "b"]);
    let e = env.fails(
        &[
            "server",
            "import",
            "c",
            "--file",
            hooked.to_str().unwrap(),
            "--interface",
            "wg2",
        ],
        2,
    );
    assert!(e.contains("PostUp"), "{e}");
    env.ok(&[
        "server",
        "import",
        "c",
        "--file",
        hooked.to_str().unwrap(),
        "--interface",
        "wg2",
        "--allow-hooks",
    ]);
    let export = env.ok(&["server", "export", "c"]);
    assert!(!export.contains("PostUp"));
    env.ok(&["server", "delete", "c"]);
    // From stdin.
    let r = env.run_with_stdin(
        &[
            "--json",
            "server",
            "import",
            "d",
            "--file",
            "-",
            "--interface",
            "wg3",
        ],
        std::fs::read(&conf).unwrap().as_slice(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn peer_add_list_show_set_enable_disable_rotate_remove() {
    let env = Env::new();
    let s = env.server("office", 51820);
    let added = env.json(&["peer", "add", "office", "alice"]);
    let alice = &added[0];
    assert_eq!(alice["name"], "alice");
    assert_eq!(alice["address_v6"], "fd12:3456:789a:1::2");
    assert_eq!(alice["address_v4"], "10.8.0.2");
    assert_eq!(alice["has_private_key"], true);
    assert_eq!(alice["has_preshared_key"], true);
    assert_eq!(alice["enabled"], true);
    let fixed = env.json(&[
        "peer",
        "add",
        "office",
        "bob",
        "--ipv6",
        "fd12:3456:789a:1::77",
        "--ipv4",
        "none",
        "--keepalive",
        "0",
        "--allowed-ips",
        "192.168.10.0/24,fd99::/64",
        "--no-psk",
        "--expires",
        "30d",
        "--description",
        "Bob's laptop",
    ]);
    assert_eq!(fixed[0]["address_v6"], "fd12:3456:789a:1::77");
    assert!(fixed[0]["address_v4"].is_null());
    assert_eq!(fixed[0]["keepalive"], 0);
    assert_eq!(fixed[0]["has_preshared_key"], false);
    assert!(fixed[0]["expires_at"].is_string());
    assert_eq!(fixed[0]["description"], "Bob's laptop");
    let e = env.fails(&["peer", "add", "office", "site", "--prefix", "auto"], 2);
    assert!(
        e.contains("prefix: this server has no prefix delegation"),
        "{e}"
    );
    env.ok(&[
        "server",
        "create",
        "sites",
        "--listen-port",
        "51830",
        "--delegation",
        "fd12:3456:7800::/48",
    ]);
    let auto = env.json(&["peer", "add", "sites", "branch", "--prefix", "auto"]);
    assert_eq!(auto[0]["delegated_prefix"], "fd12:3456:7800::/64");
    let fixed = env.json(&[
        "peer",
        "add",
        "sites",
        "branch2",
        "--prefix",
        "fd12:3456:7800:9::/64",
    ]);
    assert_eq!(fixed[0]["delegated_prefix"], "fd12:3456:7800:9::/64");
    let prefix = env.json(&["peer", "add", "office", "site", "--ipv4", "none"]);
    assert_eq!(prefix[0]["delegated_prefix"], Value::Null);

    let list = env.json(&["peer", "list", "office"]);
    assert_eq!(names(&list), ["alice", "bob", "site"]);
    let table = env.ok(&["peer", "list", "office"]);
    assert!(table.starts_with("NAME "), "{table}");
    assert!(table.contains("alice") && table.contains("enabled"));
    let show = env.json(&["peer", "show", "office", "alice"]);
    assert_eq!(show["id"], alice["id"]);
    // By public key and by id too.
    let pk = alice["public_key"].as_str().unwrap();
    assert_eq!(env.json(&["peer", "show", "office", pk])["name"], "alice");
    assert_eq!(
        env.json(&["peer", "show", "office", alice["id"].as_str().unwrap()])["name"],
        "alice"
    );
    let human = env.ok(&["peer", "show", "office", "alice"]);
    assert!(human.contains("held by wgm (sealed)"), "{human}");

    let dis = env.json(&["peer", "disable", "office", "alice"]);
    assert_eq!(dis["enabled"], false);
    assert!(env.ok(&["peer", "list", "office"]).contains("disabled"));
    let en = env.json(&["peer", "enable", "office", "alice"]);
    assert_eq!(en["enabled"], true);

    let set = env.json(&[
        "peer",
        "set",
        "office",
        "alice",
        "--keepalive",
        "15",
        "--expires",
        "2099-01-01T00:00:00Z",
        "--endpoint",
        "198.51.100.7:51820",
        "--rename",
        "alice2",
    ]);
    assert_eq!(set["keepalive"], 15);
    assert_eq!(set["name"], "alice2");
    assert_eq!(set["expires_at"], "2099-01-01T00:00:00Z");
    assert_eq!(set["endpoint"], "198.51.100.7:51820");
    let cleared = env.json(&[
        "peer",
        "set",
        "office",
        "alice2",
        "--expires",
        "never",
        "--endpoint",
        "none",
    ]);
    assert!(cleared["expires_at"].is_null() && cleared["endpoint"].is_null());
    env.fails(&["peer", "set", "office", "alice2"], 1);

    let rotated = env.json(&["peer", "rotate-key", "office", "alice2"]);
    assert_ne!(rotated["public_key"], alice["public_key"]);
    let psk = env.json(&["peer", "rotate-psk", "office", "alice2"]);
    assert_eq!(psk["has_preshared_key"], true);

    let removed = env.json(&["peer", "remove", "office", "alice2"]);
    assert_eq!(removed["removed"]["name"], "alice2");
    env.fails(&["peer", "show", "office", "alice2"], 3);
    env.fails(&["peer", "remove", "office", "alice2"], 3);
    env.fails(&["peer", "list", "nope"], 3);
    // Removed addresses are quarantined, not handed out again at once.
    let next = env.json(&["peer", "add", "office", "carol"]);
    assert_ne!(next[0]["address_v6"], "fd12:3456:789a:1::2");
    assert_eq!(s["revision"], 1);
}

#[test]
fn peer_add_count_adds_many_peers_in_one_revision() {
    let env = Env::new();
    env.server("office", 51820);
    let before = env.json(&["history", "office"]).as_array().unwrap().len();
    let added = env.json(&["peer", "add", "office", "dev", "--count", "25"]);
    assert_eq!(added.as_array().unwrap().len(), 25);
    assert_eq!(added[0]["name"], "dev-1");
    assert_eq!(added[24]["name"], "dev-25");
    let history = env.json(&["history", "office"]);
    assert_eq!(history.as_array().unwrap().len(), before + 1);
    assert_eq!(history[before]["changes"].as_array().unwrap().len(), 25);
    // All or nothing: a clash with dev-3 adds none.
    let e = env.fails(&["peer", "add", "office", "dev", "--count", "3"], 2);
    assert!(e.contains("dev-1"), "{e}");
    assert_eq!(
        env.json(&["peer", "list", "office"])
            .as_array()
            .unwrap()
            .len(),
        25
    );
    // Options that cannot be shared are bad input naming the count (the library's rule,
    // NewPeer::numbered).
    let e = env.fails(
        &[
            "peer",
            "add",
            "office",
            "x",
            "--count",
            "2",
            "--ipv6",
            "fd12:3456:789a:1::99",
        ],
        2,
    );
    assert!(
        e.contains("peer.count") && e.contains("cannot be combined"),
        "{e}"
    );
    let e = env.fails(&["peer", "add", "office", "x", "--count", "0"], 2);
    assert!(e.contains("peer.count"), "{e}");
}

#[test]
fn peer_config_prints_writes_0600_and_draws_a_qr_code() {
    let env = Env::new();
    env.server("office", 51820);
    env.ok(&["peer", "add", "office", "alice"]);
    let text = env.ok(&["peer", "config", "office", "alice"]);
    assert!(text.starts_with("[Interface]\n"), "{text}");
    assert!(text.contains("PrivateKey = ") && text.contains("PresharedKey = "));
    assert!(
        text.contains("Address = fd12:3456:789a:1::2/128, 10.8.0.2/32"),
        "{text}"
    );
    assert!(text.contains("Endpoint = vpn.example.org:51820"));
    let file = env.path("alice.conf");
    std::fs::write(&file, "old").unwrap();
    env.ok(&[
        "peer",
        "config",
        "office",
        "alice",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    assert_eq!(mode(&file), 0o600);
    let qr = env.ok(&["peer", "config", "office", "alice", "--qr"]);
    assert!(
        qr.lines().count() > 20 && qr.contains('█') && !qr.contains("PrivateKey"),
        "{qr}"
    );
    let j = env.json(&["peer", "config", "office", "alice"]);
    assert_eq!(j["config"].as_str().unwrap(), text);
    assert_eq!(j["complete"], true);
    // Every export is audited.
    let audit = env.json(&["audit", "--actor", &format!("local:{}", unix_user())]);
    let exports = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["entry"]["action"] == "secret.export")
        .count();
    assert_eq!(exports, 4);
}

fn unix_user() -> String {
    // The label the binary audits with (its own lookup of the real uid).
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_peer_with_its_own_key_gets_an_incomplete_config_and_no_qr_code() {
    let env = Env::new();
    env.server("office", 51820);
    let key = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";
    let v = env.json(&["peer", "add", "office", "byo", "--public-key", key]);
    assert_eq!(v[0]["public_key"], key);
    assert_eq!(v[0]["has_private_key"], false);
    let r = env.run(&["peer", "config", "office", "byo"]);
    assert_eq!(r.code, 0);
    assert!(!r.stdout.contains("PrivateKey"));
    assert!(r.stderr.contains("its own key"), "{}", r.stderr);
    let e = env.fails(&["peer", "config", "office", "byo", "--qr"], 2);
    assert!(e.contains("peer.private_key"), "{e}");
    assert_eq!(
        env.json(&["peer", "config", "office", "byo"])["complete"],
        false
    );
    // The same key twice: bad input naming the field.
    let e = env.fails(&["peer", "add", "office", "byo2", "--public-key", key], 2);
    assert!(e.contains("peer.public_key"), "{e}");
}

#[test]
fn history_diff_and_rollback() {
    let env = Env::new();
    env.server("office", 51820);
    env.ok(&["peer", "add", "office", "alice"]);
    env.ok(&["peer", "add", "office", "bob"]);
    let bob = env.json(&["peer", "show", "office", "bob"]);
    env.ok(&["peer", "remove", "office", "bob"]);
    let h = env.json(&["history", "office"]);
    let revs: Vec<u64> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revs, [1, 2, 3, 4]);
    assert_eq!(h[3]["changes"][0]["kind"], "peer_removed");
    assert_eq!(h[3]["changes"][0]["name"], "bob");
    assert!(h[0]["author"].as_str().unwrap().starts_with("local:"));
    assert!(
        !h.to_string().contains("wgm1:"),
        "no sealed values in history output"
    );
    let table = env.ok(&["history", "office"]);
    assert!(table.contains("remove peer bob"), "{table}");
    assert_eq!(
        env.json(&["history", "office", "--after", "2", "--limit", "1"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let d = env.json(&["diff", "office", "3", "4"]);
    assert_eq!(d[0]["kind"], "peer_removed");
    assert_eq!(d[0]["object"], "bob");
    assert!(env.ok(&["diff", "office", "2", "3"]).contains("+ peer bob"));

    let rb = env.json(&["rollback", "office", "3"]);
    assert_eq!(rb["restored"], 3);
    assert_eq!(rb["revision"]["revision"], 5);
    let back = env.json(&["peer", "show", "office", "bob"]);
    assert_eq!(back["public_key"], bob["public_key"]);
    assert_eq!(back["address_v6"], bob["address_v6"]);
    env.fails(&["rollback", "office", "99"], 3);
    env.fails(&["diff", "office", "1", "99"], 3);
    env.fails(&["rollback", "office", "0"], 2);
}

#[test]
fn audit_filters_and_verifies_the_chain() {
    let env = Env::new();
    env.server("office", 51820);
    env.server_named_other();
    env.ok(&["peer", "add", "office", "alice"]);
    let all = env.json(&["audit"]);
    let actions: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["entry"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["server.create", "server.create", "peer.add"]);
    let office = env.json(&["audit", "--server", "office"]);
    assert_eq!(office.as_array().unwrap().len(), 2);
    assert_eq!(
        env.json(&["audit", "--since", "1h"])
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        env.json(&["audit", "--until", "1h"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        env.json(&["audit", "--limit", "1"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        env.json(&["audit", "--actor", "user:nobody"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let v = env.json(&["audit", "--verify"]);
    assert_eq!(v["records"], 3);
    assert!(env.ok(&["audit", "--verify"]).contains("intact"));
    let table = env.ok(&["audit"]);
    assert!(
        table.starts_with("SEQ ") && table.contains("peer.add"),
        "{table}"
    );
    env.fails(&["audit", "--since", "yesterday"], 2);
}

impl Env {
    fn server_named_other(&self) {
        self.ok(&["server", "create", "other", "--listen-port", "51900"]);
    }
}

#[test]
fn users_tokens_and_acting_as_a_user() {
    let env = Env::new();
    env.server("office", 51820);
    env.ok(&["peer", "add", "office", "alice"]);
    let r = env.run_with_stdin(
        &[
            "--json",
            "user",
            "add",
            "olga",
            "--role",
            "operator",
            "--password-stdin",
        ],
        b"correct horse battery\n",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let olga: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(olga["has_password"], true);
    assert_eq!(olga["roles"][0]["role"], "operator");
    env.ok(&["user", "add", "ann", "--role", "auditor"]);
    env.ok(&[
        "user", "add", "umar", "--role", "user", "--server", "office",
    ]);
    assert_eq!(names(&env.json(&["user", "list"])), ["ann", "olga", "umar"]);
    assert!(env.ok(&["user", "list"]).contains("operator"));
    assert!(env.ok(&["user", "show", "umar"]).contains("@server:"));

    let t = env.json(&[
        "token",
        "create",
        "olga",
        "--name",
        "ci",
        "--expires",
        "90d",
    ]);
    let secret = t["secret"].as_str().unwrap().to_owned();
    assert_eq!(t["token"]["name"], "ci");
    let tokens = env.json(&["token", "list"]);
    assert_eq!(tokens.as_array().unwrap().len(), 1);
    assert!(
        !tokens.to_string().contains(&secret),
        "list never shows the secret"
    );
    // Acting as olga (operator): servers and peers yes, users no.
    let as_olga = |args: &[&str]| {
        let mut a = vec!["--token", secret.as_str()];
        a.extend_from_slice(args);
        a.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>()
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        env.run(&refs)
    };
    assert_eq!(run(as_olga(&["peer", "add", "office", "bob"])).code, 0);
    let r = run(as_olga(&["user", "add", "mallory", "--role", "admin"]));
    check_failure(&["user", "add"], &r, 5);
    // Self-escalation through the role command is refused.
    let r = run(as_olga(&["user", "role", "olga", "admin"]));
    check_failure(&["user", "role"], &r, 5);
    // The audit names olga's token.
    let audit = env.json(&["audit"]);
    assert!(audit.to_string().contains("user:olga token:"), "{audit}");
    // A scope may name its server.
    let scoped = env.json(&[
        "token",
        "create",
        "olga",
        "--scope",
        "peer:read@server:office",
    ]);
    let office_id = env.json(&["server", "show", "office"])["id"].clone();
    assert_eq!(scoped["token"]["scopes"][0]["scope"]["server"], office_id);
    // A token scoped to reading cannot write.
    let ro = env.json(&[
        "token",
        "create",
        "olga",
        "--scope",
        "server:read,peer:read",
    ]);
    let ro_secret = ro["secret"].as_str().unwrap().to_owned();
    let r = env.run(&["--token", &ro_secret, "peer", "list", "office"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = env.run(&["--token", &ro_secret, "peer", "add", "office", "carol"]);
    check_failure(&["peer", "add"], &r, 5);
    // An auditor may not export secrets.
    let ann = env.json(&["token", "create", "ann"]);
    let r = env.run(&[
        "--token",
        ann["secret"].as_str().unwrap(),
        "peer",
        "config",
        "office",
        "alice",
    ]);
    assert!(r.code == 5 || r.code == 3, "{} {}", r.code, r.stderr);
    // Revoked and bogus tokens are refused.
    env.ok(&["token", "revoke", t["token"]["id"].as_str().unwrap()]);
    let r = env.run(&["--token", &secret, "server", "list"]);
    check_failure(&["server", "list"], &r, 5);
    let r = env.run(&["--token", "wgm_bogus", "server", "list"]);
    check_failure(&["server", "list"], &r, 5);

    // Object-level checks (no IDOR): umar, a self-service user on office, sees and
    // touches only his own peers; others' peers do not exist for him.
    let umar = env.json(&["token", "create", "umar"]);
    let umar_secret = umar["secret"].as_str().unwrap();
    let r = env.run(&[
        "--token",
        umar_secret,
        "--json",
        "peer",
        "add",
        "office",
        "umars-phone",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let listed: Value = serde_json::from_str(
        &env.run(&["--token", umar_secret, "--json", "peer", "list", "office"])
            .stdout,
    )
    .unwrap();
    assert_eq!(names(&listed), ["umars-phone"]);
    for args in [
        &["peer", "show", "office", "alice"][..],
        &["peer", "remove", "office", "alice"],
        &["peer", "config", "office", "alice"],
        &["peer", "disable", "office", "alice"],
    ] {
        let mut a = vec!["--token", umar_secret];
        a.extend_from_slice(args);
        let r = env.run(&a);
        check_failure(args, &r, 3);
    }
    assert_eq!(
        env.json(&["peer", "show", "office", "alice"])["enabled"],
        true
    );

    // Users: disable, enable, role, password, delete.
    assert_eq!(env.json(&["user", "disable", "ann"])["active"], false);
    assert_eq!(env.json(&["user", "enable", "ann"])["active"], true);
    assert_eq!(
        env.json(&["user", "role", "ann", "operator"])["roles"][0]["role"],
        "operator"
    );
    let r = env.run_with_stdin(&["user", "passwd", "ann"], b"another long passphrase\n");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(env.json(&["user", "show", "ann"])["has_password"], true);
    env.ok(&["user", "delete", "umar"]);
    env.fails(&["user", "show", "umar"], 3);
    // The last administrator can be neither disabled nor demoted.
    env.ok(&["user", "add", "root-admin", "--role", "admin"]);
    env.fails(&["user", "disable", "root-admin"], 4);
    env.fails(&["user", "role", "root-admin", "user"], 4);
}

#[test]
fn a_full_pool_is_a_conflict_that_says_why() {
    let env = Env::new();
    env.ok(&[
        "server",
        "create",
        "tiny",
        "--listen-port",
        "51820",
        "--ipv4",
        "10.9.0.0/30",
    ]);
    env.ok(&["peer", "add", "tiny", "a"]);
    let before = env.snapshot();
    let e = env.fails(&["peer", "add", "tiny", "b"], 4);
    assert!(e.contains("10.9.0.0/30") && e.contains("pool"), "{e}");
    assert_eq!(
        env.snapshot(),
        before,
        "nothing held after an exhausted pool"
    );
    // Without IPv4 the same peer fits.
    env.ok(&["peer", "add", "tiny", "b", "--ipv4", "none"]);
}

/// The subcommands a `--help` text lists under `Commands:` (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // An entry starts in column 2; deeper-indented lines continue a description.
        .filter(|l| l.starts_with("  ") && !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn help_on_every_command_and_completions_for_every_shell() {
    let env = Env::new();
    // Every command the binary has, found by walking its own help from the top: a new
    // command is covered without being listed here.
    let mut commands: Vec<Vec<String>> = Vec::new();
    let mut todo: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(c) = todo.pop() {
        let mut args = c.clone();
        args.push("--help".into());
        let out = env.bare().args(&args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}");
        let usage = format!("Usage: wgm {}", c.join(" "));
        let usage = usage.trim_end();
        assert!(stdout.contains(usage), "{args:?}: {stdout}");
        for sub in subcommands(&stdout) {
            let mut next = c.clone();
            next.push(sub);
            todo.push(next);
        }
        commands.push(c);
    }
    let found: Vec<String> = commands.iter().map(|c| c.join(" ")).collect();
    // The walk itself works: it reaches commands of every level.
    for known in [
        "init",
        "quickstart",
        "plan",
        "apply",
        "status",
        "reconcile",
        "server create",
        "peer rotate-psk",
        "user passwd",
        "token revoke",
        "completions",
    ] {
        assert!(found.iter().any(|f| f == known), "{known} not in {found:?}");
    }
    assert!(found.len() >= 40, "{found:?}");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = env.bare().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("wgm") && text.contains("rotate-key"),
            "{shell}"
        );
    }
    // Completions need no store.
    assert!(!env.path("home/.local/share/wgm").exists());
    let out = env.bare().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("wgm "));
}

#[test]
fn usage_errors_exit_1_with_one_line() {
    let env = Env::new();
    for args in [
        &["frobnicate"][..],
        &["server", "create", "x"],
        &["peer", "add", "office"],
        &["server", "list", "--bogus"],
        &["peer", "config", "s", "p", "--qr", "--out"],
    ] {
        let r = env.run(args);
        check_failure(args, &r, 1);
        assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
    }
    // A word outside a closed set is a bad value (exit 2) naming the argument and the
    // words it takes, not repeating the value.
    let r = env.run(&["completions", "tcsh"]);
    check_failure(&["completions", "tcsh"], &r, 2);
    assert!(
        r.stderr
            .starts_with("error: invalid value for <SHELL>: must be one of bash,")
            && !r.stderr.contains("tcsh"),
        "{}",
        r.stderr
    );
    let r = env.run(&["--json", "apply", "office", "--backend", "boringtun"]);
    let v: Value = serde_json::from_str(r.stderr.trim()).unwrap();
    assert_eq!(v["error"]["exit_code"], 2);
    assert_eq!(v["error"]["code"], "invalid_input");
    assert_eq!(
        v["error"]["message"],
        "invalid value for --backend: must be one of auto, kernel, userspace"
    );
    // Without a subcommand: the help, on stderr, exit 1.
    let out = env.bare().arg("server").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    // With --json the error is a JSON object.
    let r = env.run(&["--json", "server", "list", "--bogus"]);
    let v: Value = serde_json::from_str(r.stderr.trim()).unwrap();
    assert_eq!(v["error"]["exit_code"], 1);
    assert_eq!(v["error"]["code"], "usage");
    let r = env.run(&["peer", "config", "s", "p", "--qr", "--json"]);
    check_failure(&["--qr --json"], &r, 1);
    assert!(r.stderr.contains("cannot be used with"), "{}", r.stderr);
    let r = env.run(&["--json", "server", "show", "nope"]);
    let v: Value = serde_json::from_str(r.stderr.trim()).unwrap();
    assert_eq!(v["error"]["code"], "not_found");
    assert_eq!(r.code, 3);
}

#[test]
fn stores_that_are_not_available_say_so() {
    let env = Env::new();
    let r = env
        .bare()
        .args(["--store", "rediss://127.0.0.1:6379", "server", "list"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&r.stderr).contains("(rediss://) is not built in"));
    let r = env
        .bare()
        .args(["--store", "mysql://x/y", "server", "list"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("invalid store"));
    // An unreachable PostgreSQL is a store error, without the password in the message.
    let r = env
        .bare()
        .args([
            "--store",
            "postgres://wgm:hunter2@127.0.0.1:1/wgm",
            "--master-key-file",
        ])
        .arg(env.path("pg.key"))
        .args(["server", "list"])
        .output()
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(!String::from_utf8_lossy(&r.stderr).contains("hunter2"));
}
