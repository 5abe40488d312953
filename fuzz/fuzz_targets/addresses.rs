//! Every address, network, endpoint, number and name parser: no panic on any input, and
//! for every accepted input, Display then parse gives the same value back.
#![no_main]

use std::fmt::Display;
use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use wgm_core::names::{Description, InterfaceName, PeerName, RoleName, ServerName, UserName};
use wgm_core::net::{self, DnsEntry, Endpoint, FwMark, Keepalive, ListenPort, Mtu};

/// If `s` parses, its Display form parses to the same value.
fn round_trip<T>(s: &str)
where
    T: FromStr + Display + PartialEq + std::fmt::Debug,
    T::Err: std::fmt::Debug,
{
    if let Ok(v) = s.parse::<T>() {
        let shown = v.to_string();
        assert_eq!(shown.parse::<T>().unwrap(), v, "{shown:?}");
    }
}

/// Names display exactly as given, and never hold a line break.
fn name<T>(s: &str)
where
    T: FromStr + Display + PartialEq + std::fmt::Debug,
    T::Err: std::fmt::Debug,
{
    if let Ok(v) = s.parse::<T>() {
        assert_eq!(v.to_string(), s);
        assert!(!s.contains(['\n', '\r', '\0', '\u{85}', '\u{2028}', '\u{2029}']));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(a) = net::parse_ip(s, "f") {
        assert_eq!(net::parse_ip(&a.to_string(), "f").unwrap(), a);
        let _ = net::check_assignable(a, "f");
    }
    if let Ok(a) = net::parse_ipv4(s, "f") {
        assert_eq!(net::parse_ipv4(&a.to_string(), "f").unwrap(), a);
    }
    if let Ok(a) = net::parse_ipv6(s, "f") {
        assert_eq!(net::parse_ipv6(&a.to_string(), "f").unwrap(), a);
    }
    if let Ok(n) = net::parse_network(s, "f") {
        assert_eq!(n.trunc(), n);
        assert_eq!(net::parse_network(&n.to_string(), "f").unwrap(), n);
    }
    if let Ok(n) = net::parse_interface_address(s, "f") {
        assert_eq!(net::parse_interface_address(&n.to_string(), "f").unwrap(), n);
    }
    if let Ok(n) = net::parse_allowed_ip(s, "f") {
        assert_eq!(n.trunc(), n);
        assert_eq!(net::parse_allowed_ip(&n.to_string(), "f").unwrap(), n);
    }
    if let Ok(p) = net::parse_port(s, "f") {
        assert_eq!(p.to_string(), s);
    }
    let _ = net::check_host_name(s, "f");

    round_trip::<Endpoint>(s);
    round_trip::<DnsEntry>(s);
    round_trip::<ListenPort>(s);
    round_trip::<Mtu>(s);
    round_trip::<Keepalive>(s);
    round_trip::<FwMark>(s);

    name::<InterfaceName>(s);
    name::<ServerName>(s);
    name::<PeerName>(s);
    name::<UserName>(s);
    name::<RoleName>(s);
    name::<Description>(s);
    if let Ok(p) = PeerName::new(s) {
        // The uniqueness key is a fixed point of folding.
        let key = p.key();
        if let Ok(again) = PeerName::new(key.clone()) {
            assert_eq!(again.key(), key);
        }
    }
});
