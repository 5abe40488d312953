//! Property tests of the wg-quick format.
//!
//! - For random typed configurations: `parse(render(x)) == x`, and the document of the
//!   rendering gives it back byte for byte.
//! - The same rendering, disguised as a hand-edited file (key case, spacing, tabs, CRLF,
//!   blank lines, lists split over several lines, no final newline), still parses to `x`
//!   and still round-trips byte for byte.
//! - Random documents built from valid lines round-trip byte for byte.

// Tests panic on unexpected results by design.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wgm_core::keys::{PresharedKey, PrivateKey};
use wgm_core::net::{DnsEntry, Endpoint, FwMark, Keepalive, ListenPort, Mtu};
use wgm_core::wgquick::{
    self, name_from_comment, Document, Hooks, InterfaceSection, Key, ParseOptions, ParsedConfig,
    PeerSection, Table, WgQuickConfig,
};

const HOOKS: ParseOptions = ParseOptions {
    allow_hooks: true,
    max_bytes: ParseOptions::DEFAULT_MAX_BYTES,
};

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        any::<u128>().prop_map(Ipv6Addr::from),
        // Short, zero-compressed forms.
        (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Ipv6Addr::new(0xfd00, a, 0, 0, 0, 0, 0, b)),
    ]
    .prop_filter("no IPv4-mapped", |a| a.to_ipv4_mapped().is_none())
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        ipv6().prop_map(IpAddr::V6)
    ]
}

fn interface_address() -> impl Strategy<Value = IpNet> {
    ip().prop_flat_map(|a| {
        let max: u8 = if a.is_ipv4() { 32 } else { 128 };
        (0..=max).prop_map(move |p| IpNet::new(a, p).unwrap())
    })
}

fn allowed_ip() -> impl Strategy<Value = IpNet> {
    interface_address().prop_map(|n| n.trunc())
}

fn label() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9-]{0,6}[a-z0-9])?"
}

fn host_name() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..4).prop_map(|l| l.join("."))
}

fn dns_entry() -> impl Strategy<Value = DnsEntry> {
    prop_oneof![
        ip().prop_filter("a usable resolver", |a| match a {
            IpAddr::V4(a) => !a.is_unspecified() && !a.is_multicast() && !a.is_broadcast(),
            IpAddr::V6(a) => !a.is_unspecified() && !a.is_multicast(),
        })
        .prop_map(DnsEntry::Addr),
        host_name().prop_map(DnsEntry::SearchDomain),
    ]
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    prop_oneof![
        (ip(), 1..=u16::MAX)
            .prop_filter("a unicast address", |(a, _)| match a {
                IpAddr::V4(a) => !a.is_unspecified() && !a.is_multicast() && !a.is_broadcast(),
                IpAddr::V6(a) => !a.is_unspecified() && !a.is_multicast(),
            })
            .prop_map(|(a, p)| Endpoint::Addr(SocketAddr::new(a, p))),
        (host_name(), 1..=u16::MAX).prop_map(|(host, port)| Endpoint::Host { host, port }),
    ]
}

fn table() -> impl Strategy<Value = Table> {
    prop_oneof![
        Just(Table::Auto),
        Just(Table::Off),
        any::<u32>().prop_map(Table::Id),
        "[a-z_][a-z0-9_.-]{0,10}"
            .prop_filter("not a keyword", |s| s != "auto" && s != "off")
            .prop_map(Table::Named),
    ]
}

/// One line of free text: printable, with `#`, `=`, `:` and non-ASCII, no edge blanks.
fn text_line(min: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-zA-Z0-9 \t#=:;,.'\"()/é€-]{{{min},24}}"))
        .unwrap()
        .prop_map(|s| s.trim_matches([' ', '\t']).to_owned())
        .prop_filter("non-empty when required", move |s| s.len() >= min)
}

fn hook() -> impl Strategy<Value = String> {
    text_line(0).prop_map(|s| s.replace('#', "").trim_matches([' ', '\t']).to_owned())
}

/// A name and comments that render: without a name, no comment may look like a name tag.
fn names() -> impl Strategy<Value = (Option<String>, Vec<String>)> {
    (
        prop::option::of(text_line(1)),
        prop::collection::vec(text_line(0), 0..3),
    )
        .prop_map(|(name, mut comments)| {
            if name.is_none() {
                comments.retain(|c| name_from_comment(c).is_none());
            }
            (name, comments)
        })
}

fn key_bytes() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn peer() -> impl Strategy<Value = PeerSection> {
    (
        names(),
        key_bytes(),
        prop::option::of(key_bytes()),
        prop::collection::vec(allowed_ip(), 0..5),
        prop::option::of(endpoint()),
        prop::option::of(any::<u16>()),
    )
        .prop_map(
            |((name, comments), key, psk, allowed_ips, endpoint, keepalive)| {
                let mut p = PeerSection::new(PrivateKey::from_bytes(key).public_key());
                p.name = name;
                p.comments = comments;
                p.preshared_key = psk.map(PresharedKey::from_bytes);
                p.allowed_ips = allowed_ips;
                p.endpoint = endpoint;
                p.persistent_keepalive = keepalive.map(|k| Keepalive::new(k).unwrap());
                p
            },
        )
}

fn hooks() -> impl Strategy<Value = Hooks> {
    let list = || prop::collection::vec(hook(), 0..2);
    (list(), list(), list(), list()).prop_map(|(pre_up, post_up, pre_down, post_down)| Hooks {
        pre_up,
        post_up,
        pre_down,
        post_down,
    })
}

fn interface() -> impl Strategy<Value = InterfaceSection> {
    (
        (
            names(),
            prop::option::of(key_bytes()),
            prop::option::of(1..=u16::MAX),
            prop::option::of(any::<u32>()),
        ),
        (
            prop::collection::vec(interface_address(), 0..4),
            // Each DNS server or search domain at most once (compared as written,
            // ignoring case), as `net::check_dns_list` requires.
            prop::collection::vec(dns_entry(), 0..4).prop_map(|mut v| {
                let mut seen = std::collections::HashSet::new();
                v.retain(|d| seen.insert(d.to_string().to_ascii_lowercase()));
                v
            }),
            prop::option::of(Mtu::MIN_IPV6..=Mtu::MAX),
            prop::option::of(table()),
            prop::option::of(any::<bool>()),
            hooks(),
        ),
    )
        .prop_map(
            |(((name, comments), key, port, fwmark), (addresses, dns, mtu, table, save, hooks))| {
                InterfaceSection {
                    name,
                    comments,
                    private_key: key.map(PrivateKey::from_bytes),
                    listen_port: port.map(|p| ListenPort::new(p).unwrap()),
                    fwmark: fwmark.map(|m| FwMark::new(m).unwrap()),
                    addresses,
                    dns,
                    mtu: mtu.map(|m| Mtu::new(m).unwrap()),
                    table,
                    save_config: save,
                    hooks,
                }
            },
        )
}

fn config() -> impl Strategy<Value = WgQuickConfig> {
    (
        prop::collection::vec(text_line(0), 0..3),
        interface(),
        prop::collection::vec(peer(), 0..6),
    )
        .prop_map(|(comments, interface, peers)| WgQuickConfig {
            comments,
            interface,
            peers,
        })
}

// ---------------------------------------------------------------------------------------
// Disguising a canonical rendering as a hand-edited file
// ---------------------------------------------------------------------------------------

fn blanks(rng: &mut StdRng) -> String {
    (0..rng.gen_range(0..3))
        .map(|_| if rng.gen_bool(0.5) { ' ' } else { '\t' })
        .collect()
}

fn random_case(rng: &mut StdRng, s: &str) -> String {
    s.chars()
        .map(|c| {
            if rng.gen_bool(0.5) {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Rewrite canonical text without changing its meaning.
fn disguise(canonical: &str, seed: u64) -> String {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut lines: Vec<String> = Vec::new();
    for line in canonical.lines() {
        if rng.gen_bool(0.1) {
            lines.push(blanks(&mut rng));
        }
        if line.starts_with('[') {
            lines.push(format!(
                "{}{}{}",
                blanks(&mut rng),
                random_case(&mut rng, line),
                blanks(&mut rng)
            ));
            continue;
        }
        let Some((key, value)) = line.split_once(" = ").filter(|_| !line.starts_with('#')) else {
            lines.push(line.to_owned());
            continue;
        };
        let is_list = matches!(
            Key::lookup(key),
            Some(Key::Address | Key::Dns | Key::AllowedIps)
        );
        let items: Vec<&str> = if is_list {
            value.split(", ").collect()
        } else {
            vec![value]
        };
        // Split a list over several lines, or re-space its commas.
        let groups: Vec<Vec<&str>> = if is_list && items.len() > 1 && rng.gen_bool(0.5) {
            items.iter().map(|i| vec![*i]).collect()
        } else {
            vec![items]
        };
        for group in groups {
            let mut joined = String::new();
            for (i, item) in group.iter().enumerate() {
                if i > 0 {
                    let (before, after) = (blanks(&mut rng), blanks(&mut rng));
                    joined.push_str(&before);
                    joined.push(',');
                    joined.push_str(&after);
                }
                joined.push_str(item);
            }
            lines.push(format!(
                "{}{}{}={}{}{}",
                blanks(&mut rng),
                random_case(&mut rng, key),
                blanks(&mut rng),
                blanks(&mut rng),
                joined,
                if key.ends_with("Up") || key.ends_with("Down") {
                    String::new()
                } else {
                    blanks(&mut rng)
                },
            ));
        }
    }
    let mut out = String::new();
    for line in &lines {
        out.push_str(line);
        out.push_str(if rng.gen_bool(0.3) { "\r\n" } else { "\n" });
    }
    if rng.gen_bool(0.3) {
        while out.ends_with('\n') {
            out.pop();
            if out.ends_with('\r') {
                out.pop();
            }
            if rng.gen_bool(0.5) {
                break;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Random documents from valid lines
// ---------------------------------------------------------------------------------------

fn document_text(seed: u64, peers: usize) -> String {
    let mut rng = StdRng::seed_from_u64(seed);
    let keys_of = |kind| {
        Key::ALL
            .into_iter()
            .filter(|k| k.section() == kind)
            .collect::<Vec<Key>>()
    };
    let interface_keys = keys_of(wgquick::SectionKind::Interface);
    let peer_keys = keys_of(wgquick::SectionKind::Peer);
    let mut lines: Vec<String> = Vec::new();
    let sections = std::iter::once(("[Interface]", &interface_keys))
        .chain(std::iter::repeat_n(("[Peer]", &peer_keys), peers));
    for (header, keys) in sections {
        for _ in 0..rng.gen_range(0..3) {
            let text = ["", " note", " Name = x", "# ## #"][rng.gen_range(0..4)];
            lines.push(format!("{}#{text}", blanks(&mut rng)));
        }
        let comment = if rng.gen_bool(0.2) { " # hdr" } else { "" };
        lines.push(format!(
            "{}{}{comment}",
            blanks(&mut rng),
            random_case(&mut rng, header)
        ));
        for _ in 0..rng.gen_range(0..6) {
            let key = keys[rng.gen_range(0..keys.len())];
            let value =
                ["1", "x y z", "10.0.0.1/24, fd00::1", "a=b", "[::1]:5"][rng.gen_range(0..5)];
            let comment = if rng.gen_bool(0.2) { " # c" } else { "" };
            let (b1, k, b2, b3, b4) = (
                blanks(&mut rng),
                random_case(&mut rng, key.canonical()),
                blanks(&mut rng),
                blanks(&mut rng),
                blanks(&mut rng),
            );
            lines.push(format!("{b1}{k}{b2}={b3}{value}{b4}{comment}"));
            if rng.gen_bool(0.2) {
                lines.push(blanks(&mut rng));
            }
        }
    }
    let mut out = String::new();
    for line in &lines {
        out.push_str(line);
        out.push_str(if rng.gen_bool(0.2) { "\r\n" } else { "\n" });
    }
    if rng.gen_bool(0.3) {
        out.pop();
        if out.ends_with('\r') {
            out.pop();
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parse_of_render_is_identity(cfg in config()) {
        let text = wgquick::render(&cfg).unwrap();
        let parsed = ParsedConfig::parse(&text, &HOOKS).unwrap();
        prop_assert_eq!(parsed.config(), &cfg, "{}", &*text);
        prop_assert_eq!(&*parsed.to_text(), &*text);
    }

    #[test]
    fn disguised_rendering_parses_to_the_same_config(cfg in config(), seed in any::<u64>()) {
        let canonical = wgquick::render(&cfg).unwrap();
        let noisy = disguise(&canonical, seed);
        let parsed = ParsedConfig::parse(&noisy, &HOOKS)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{noisy}")))?;
        prop_assert_eq!(&*parsed.to_text(), &noisy);
        prop_assert_eq!(parsed.config(), &cfg, "{}", noisy);
    }

    #[test]
    fn documents_round_trip_byte_for_byte(seed in any::<u64>(), peers in 0usize..4) {
        let text = document_text(seed, peers);
        let doc = Document::parse(&text, &HOOKS).map_err(|e| TestCaseError::fail(format!("{e}\n{text:?}")))?;
        prop_assert_eq!(doc.as_text(), &text);
        prop_assert_eq!(doc.lines().len(), text.split_inclusive('\n').count());
    }

    #[test]
    fn any_text_parses_or_fails_cleanly(text in "\\PC{0,200}") {
        // Never a panic; when the document parses, it gives the text back.
        if let Ok(doc) = Document::parse(&text, &HOOKS) {
            prop_assert_eq!(doc.as_text(), &text);
        }
        let _ = wgquick::parse(&text, &HOOKS);
    }
}
