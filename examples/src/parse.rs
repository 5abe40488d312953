//! Parsing command-line values with `wgm-core`'s strict parsers. Every error is
//! `InvalidInput` naming the field (exit code 2).
//!
//! The functions of the "value parsers" section are clap `value_parser`s: clap calls them
//! while it reads the command line, so a command receives typed values; the library's
//! error (naming the field) reaches the user through `main::bad_value_message`, which
//! also names the flag. Values that need the store or the clock (times relative to now,
//! owners, servers by name) and lists with a `none` word are parsed by the commands.

use std::net::{Ipv4Addr, Ipv6Addr};

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use wgm_core::integrity::AuditHead;
use wgm_core::keys::PublicKey;
use wgm_core::manager::{AddrRequest, NewPeer};
use wgm_core::model::{RevisionNo, TokenId};
use wgm_core::names::{
    Description, HostName, InterfaceName, PeerName, RoleName, ServerName, UserName,
};
use wgm_core::net::{self, DnsEntry};
use wgm_core::net::{Endpoint, FwMark, Keepalive, ListenPort, Mtu};
use wgm_core::{Error, Result};

/// Split a comma-separated list; spaces around items are ignored, empty items refused.
pub fn list<'a>(s: &'a str, field: &'static str) -> Result<Vec<&'a str>> {
    let items: Vec<&str> = s.split(',').map(|x| x.trim_matches(' ')).collect();
    if items.iter().any(|x| x.is_empty()) {
        return Err(Error::invalid(
            field,
            "empty item in a comma-separated list",
        ));
    }
    Ok(items)
}

/// Whether `s` is the word that clears an optional setting.
pub fn is_none_word(s: &str) -> bool {
    s == "none"
}

/// A DNS list, or `none` for an empty one; the library's list rules
/// (`net::check_dns_list`: at most 16 entries, none twice) apply at once.
pub fn dns_list(s: &str, field: &'static str) -> Result<Vec<DnsEntry>> {
    if is_none_word(s) {
        return Ok(Vec::new());
    }
    let entries = list(s, field)?
        .into_iter()
        .map(|x| DnsEntry::parse(x, field))
        .collect::<Result<Vec<_>>>()?;
    net::check_dns_list(&entries, field)?;
    Ok(entries)
}

/// A list of networks (allowed IPs): CIDR or bare addresses (host routes), no host bits.
pub fn allowed_ips(s: &str, field: &'static str) -> Result<Vec<ipnet::IpNet>> {
    if is_none_word(s) {
        return Ok(Vec::new());
    }
    list(s, field)?
        .into_iter()
        .map(|x| net::parse_allowed_ip(x, field))
        .collect()
}

/// A non-negative decimal number without sign, spaces or leading zeros.
pub fn number(s: &str, field: &'static str, max: u64) -> Result<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::invalid(field, "must be decimal digits only"));
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(Error::invalid(field, "must not have leading zeros"));
    }
    match s.parse::<u64>() {
        Ok(v) if v <= max => Ok(v),
        _ => Err(Error::invalid(field, format!("must be at most {max}"))),
    }
}

/// A revision number (1 or more).
pub fn revision(s: &str, field: &'static str) -> Result<RevisionNo> {
    let n = number(s, field, u64::MAX)?;
    if n == 0 {
        return Err(Error::invalid(field, "revisions start at 1"));
    }
    Ok(RevisionNo(n))
}

/// `--count` of `peer add` (a `value_parser`): decimal digits, at most
/// [`NewPeer::MAX_COUNT`]; the library refuses 0 and what copies cannot share
/// ([`NewPeer::numbered`]).
pub fn peer_count(s: &str) -> Result<u32> {
    let n = number(s, "peer.count", u64::from(NewPeer::MAX_COUNT))?;
    // At most NewPeer::MAX_COUNT, a u32.
    u32::try_from(n).map_err(|_| Error::invalid("peer.count", "is too large"))
}

/// `auto` or an IPv6 address.
pub fn ipv6_request(s: &str) -> Result<AddrRequest<Ipv6Addr>> {
    match s {
        "auto" => Ok(AddrRequest::Auto),
        "none" => Err(Error::invalid(
            "peer.ipv6",
            "every peer gets an IPv6 address (IPv6 is always on); use auto or an address",
        )),
        _ => {
            let a = net::parse_ipv6(s, "peer.ipv6")?;
            net::check_assignable(a.into(), "peer.ipv6")?;
            Ok(AddrRequest::Fixed(a))
        }
    }
}

/// `auto`, `none` or an IPv4 address.
pub fn ipv4_request(s: &str) -> Result<AddrRequest<Ipv4Addr>> {
    match s {
        "auto" => Ok(AddrRequest::Auto),
        "none" => Ok(AddrRequest::None),
        _ => {
            let a = net::parse_ipv4(s, "peer.ipv4")?;
            net::check_assignable(a.into(), "peer.ipv4")?;
            Ok(AddrRequest::Fixed(a))
        }
    }
}

/// `auto`, `none` or an IPv6 prefix.
pub fn prefix_request(s: &str) -> Result<AddrRequest<ipnet::Ipv6Net>> {
    match s {
        "auto" => Ok(AddrRequest::Auto),
        "none" => Ok(AddrRequest::None),
        _ => match net::parse_network(s, "peer.prefix")? {
            ipnet::IpNet::V6(n) => Ok(AddrRequest::Fixed(n)),
            ipnet::IpNet::V4(_) => Err(Error::invalid(
                "peer.prefix",
                "a delegated prefix is an IPv6 network",
            )),
        },
    }
}

/// Which way a relative duration points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relative {
    /// `30d` means 30 days from now (expiry).
    Future,
    /// `1h` means one hour ago (`--since`).
    Past,
}

/// A time as given on the command line: absolute, or a duration from now (which way is
/// the flag's to say). Parsed while the command line is read; made absolute by the
/// command with the manager's clock ([`When::at`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// An RFC 3339 time.
    At(OffsetDateTime),
    /// A duration (`90s`, `15m`, `12h`, `30d`, `2w`).
    After(Duration),
}

impl When {
    /// The absolute time: a duration counted from `now` in direction `dir`.
    pub fn at(self, now: OffsetDateTime, dir: Relative) -> OffsetDateTime {
        match (self, dir) {
            (When::At(t), _) => t,
            (When::After(d), Relative::Future) => now + d,
            (When::After(d), Relative::Past) => now - d,
        }
    }
}

/// An RFC 3339 time, or a duration such as `90s`, `15m`, `12h`, `30d`, `2w` (at most
/// 100 years), naming `field` in errors.
pub fn when(s: &str, field: &'static str) -> Result<When> {
    if let Some(unit) = s.chars().last().filter(|c| "smhdw".contains(*c)) {
        let digits = &s[..s.len() - 1];
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            let n = i64::try_from(number(digits, field, 100 * 365 * 86_400)?)
                .map_err(|_| Error::invalid(field, "duration is too long"))?;
            let secs = match unit {
                's' => n,
                'm' => n * 60,
                'h' => n * 3600,
                'd' => n * 86_400,
                _ => n * 7 * 86_400,
            };
            if secs > 100 * 365 * 86_400 {
                return Err(Error::invalid(
                    field,
                    "duration is too long (at most 100 years)",
                ));
            }
            return Ok(When::After(Duration::seconds(secs)));
        }
    }
    OffsetDateTime::parse(s, &Rfc3339)
        .map(When::At)
        .map_err(|_| {
            Error::invalid(
                field,
                "must be an RFC 3339 time (2026-12-31T23:59:59Z) or a duration like 30d, 12h, 15m",
            )
        })
}

// ------------------------------------------------------------------ value parsers

/// A value, or the word `none` that clears (or leaves out) a setting. A type of its own,
/// not `Option`, so that clap does not read `Option<Option<T>>` as "a flag whose value
/// is optional".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrNone<T> {
    /// The value given.
    Value(T),
    /// `none`.
    None,
}

impl<T> OrNone<T> {
    /// `Some(value)`, or `None` for the word `none`.
    pub fn into_option(self) -> Option<T> {
        match self {
            OrNone::Value(v) => Some(v),
            OrNone::None => None,
        }
    }

    /// `none`, or the value parsed by `parse`.
    fn parse(s: &str, parse: impl FnOnce(&str) -> Result<T>) -> Result<OrNone<T>> {
        if is_none_word(s) {
            Ok(OrNone::None)
        } else {
            parse(s).map(OrNone::Value)
        }
    }
}

/// A comma-separated list (`none`: an empty one), parsed whole. A type of its own, not
/// `Vec`, so that clap does not read it as a flag given many times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct List<T>(pub Vec<T>);

/// `--dns` of a server: addresses and search domains, or `none`.
pub fn server_dns(s: &str) -> Result<List<DnsEntry>> {
    dns_list(s, "server.dns").map(List)
}

/// `--allowed-ips` of a peer: networks, or `none`.
pub fn peer_allowed_ips(s: &str) -> Result<List<ipnet::IpNet>> {
    allowed_ips(s, "peer.allowed_ips").map(List)
}

/// `--interface` of a new server: a valid interface name.
pub fn interface(s: &str) -> Result<InterfaceName> {
    InterfaceName::new(s).map_err(|e| e.in_field("server"))
}

/// `--description` of a new peer.
pub fn description(s: &str) -> Result<Description> {
    Description::new(s)
}

/// `--description` of `peer set`: text, or `none` to clear it.
pub fn description_or_none(s: &str) -> Result<OrNone<Description>> {
    OrNone::parse(s, description)
}

/// A new user's name.
pub fn user_name(s: &str) -> Result<UserName> {
    UserName::new(s)
}

/// A role name (`--role` of `user add`, `ROLE` of `user role`).
pub fn role_name(s: &str) -> Result<RoleName> {
    RoleName::new(s).map_err(|e| e.in_field("user"))
}

/// `--ipv6` pool of a new server: an IPv6 network.
pub fn ipv6_pool(s: &str) -> Result<ipnet::Ipv6Net> {
    match net::parse_network(s, "server.ipv6_pool")? {
        ipnet::IpNet::V6(n) => Ok(n),
        ipnet::IpNet::V4(_) => Err(Error::invalid(
            "server.ipv6_pool",
            "must be an IPv6 network",
        )),
    }
}

/// `--ipv4` pool of a new server: an IPv4 network, or `none` (no IPv4).
pub fn ipv4_pool(s: &str) -> Result<OrNone<ipnet::Ipv4Net>> {
    OrNone::parse(s, |s| match net::parse_network(s, "server.ipv4_pool")? {
        ipnet::IpNet::V4(n) => Ok(n),
        ipnet::IpNet::V6(_) => Err(Error::invalid(
            "server.ipv4_pool",
            "must be an IPv4 network",
        )),
    })
}

/// `--delegation` of a new server: the IPv6 network prefixes are delegated out of.
pub fn delegation_pool(s: &str) -> Result<ipnet::Ipv6Net> {
    match net::parse_network(s, "server.delegation.pool")? {
        ipnet::IpNet::V6(n) => Ok(n),
        ipnet::IpNet::V4(_) => Err(Error::invalid(
            "server.delegation.pool",
            "must be an IPv6 network",
        )),
    }
}

/// `--endpoint` of `server set`: HOST:PORT or `none`.
pub fn server_endpoint_or_none(s: &str) -> Result<OrNone<Endpoint>> {
    OrNone::parse(s, server_endpoint)
}

/// `--fwmark` of `server set`: a mark or `none`.
pub fn server_fwmark_or_none(s: &str) -> Result<OrNone<FwMark>> {
    OrNone::parse(s, server_fwmark)
}

/// `--endpoint` of `peer set`: HOST:PORT or `none`.
pub fn peer_endpoint_or_none(s: &str) -> Result<OrNone<Endpoint>> {
    OrNone::parse(s, peer_endpoint)
}

/// `--expires` of a new peer.
pub fn peer_expires(s: &str) -> Result<When> {
    when(s, "peer.expires_at")
}

/// `--expires` of `peer set`: a time, or `never` (stored as [`OrNone::None`]).
pub fn peer_expires_or_never(s: &str) -> Result<OrNone<When>> {
    if s == "never" {
        return Ok(OrNone::None);
    }
    peer_expires(s).map(OrNone::Value)
}

/// `--expires` of a new API token.
pub fn token_expires(s: &str) -> Result<When> {
    when(s, "token.expires_at")
}

/// `--since` of `wgm audit`.
pub fn audit_since(s: &str) -> Result<When> {
    when(s, "audit.since")
}

/// `--until` of `wgm audit`.
pub fn audit_until(s: &str) -> Result<When> {
    when(s, "audit.until")
}

/// `ID` of `wgm token revoke`: a UUID.
pub fn token_id(s: &str) -> Result<TokenId> {
    s.parse()
}

/// `--interval` of `wgm reconcile`: 1 to 86400 seconds.
pub fn reconcile_interval(s: &str) -> Result<u64> {
    match number(s, "reconcile.interval", 86_400)? {
        0 => Err(Error::invalid(
            "reconcile.interval",
            "must be at least 1 second",
        )),
        n => Ok(n),
    }
}

/// `--listen-port` of a server.
pub fn server_listen_port(s: &str) -> Result<ListenPort> {
    ListenPort::parse(s, "server.listen_port")
}

/// `--mtu` of a server.
pub fn server_mtu(s: &str) -> Result<Mtu> {
    Mtu::parse(s, "server.mtu")
}

/// `--fwmark` of a new server.
pub fn server_fwmark(s: &str) -> Result<FwMark> {
    FwMark::parse(s, "server.fwmark")
}

/// `--endpoint` of a new server.
pub fn server_endpoint(s: &str) -> Result<Endpoint> {
    Endpoint::parse(s, "server.endpoint")
}

/// A new server's name (or `--rename`).
pub fn server_name(s: &str) -> Result<ServerName> {
    ServerName::new(s)
}

/// `--host` of `server create`: the host that runs the server (its agent applies it).
pub fn server_host(s: &str) -> Result<HostName> {
    HostName::new(s).map_err(|e| e.in_field("server"))
}

/// `--host` of `server set`: a host name, or `none` to unassign the server.
pub fn server_host_or_none(s: &str) -> Result<OrNone<HostName>> {
    OrNone::parse(s, server_host)
}

/// `--client-keepalive` of a server's client template.
pub fn client_keepalive(s: &str) -> Result<Keepalive> {
    Keepalive::parse(s, "server.client_template.keepalive")
}

/// `--delegation-len`: the length of each delegated prefix (at most 128).
pub fn delegation_len(s: &str) -> Result<u8> {
    let n = number(s, "server.delegation.prefix_len", 128)?;
    // At most 128 by the parse above.
    u8::try_from(n).map_err(|_| Error::invalid("server.delegation.prefix_len", "is too large"))
}

/// A new peer's name (or `--rename`).
pub fn peer_name(s: &str) -> Result<PeerName> {
    PeerName::new(s)
}

/// `--keepalive` of a peer.
pub fn peer_keepalive(s: &str) -> Result<Keepalive> {
    Keepalive::parse(s, "peer.keepalive")
}

/// `--endpoint` of a new peer.
pub fn peer_endpoint(s: &str) -> Result<Endpoint> {
    Endpoint::parse(s, "peer.endpoint")
}

/// `--public-key` of a new peer (the error never repeats the key).
pub fn peer_public_key(s: &str) -> Result<PublicKey> {
    PublicKey::from_base64_field(s, "peer.public_key")
}

/// `FROM` of `wgm diff`.
pub fn diff_from(s: &str) -> Result<RevisionNo> {
    revision(s, "diff.from")
}

/// `TO` of `wgm diff`.
pub fn diff_to(s: &str) -> Result<RevisionNo> {
    revision(s, "diff.to")
}

/// `REVISION` of `wgm rollback`.
pub fn rollback_revision(s: &str) -> Result<RevisionNo> {
    revision(s, "rollback.revision")
}

/// `--from` of `wgm peer restore-keys` and `wgm server restore-key`.
pub fn restore_from(s: &str) -> Result<RevisionNo> {
    revision(s, "restore.from")
}

/// `--after` of `wgm history` (0 is allowed: every revision).
pub fn history_after(s: &str) -> Result<RevisionNo> {
    Ok(RevisionNo(number(s, "history.after", u64::MAX)?))
}

/// `--limit` of `wgm history`.
pub fn history_limit(s: &str) -> Result<u64> {
    number(s, "history.limit", u64::MAX)
}

/// `--limit` of `wgm audit`.
pub fn audit_limit(s: &str) -> Result<u64> {
    number(s, "audit.limit", u64::MAX)
}

/// `--expect` of `wgm audit --verify`: a head as `SEQ:HASH`.
pub fn audit_head(s: &str) -> Result<AuditHead> {
    s.parse().map_err(|e| match e {
        Error::InvalidInput { reason, .. } => Error::invalid("audit.expect", reason),
        other => other,
    })
}

/// `--allow` of `peer set`: comma-separated filter rules (`CIDR[:PROTO[:PORTS]]`), or
/// `none` (no allow list of its own: the server's default verdict applies). An empty
/// list is not spellable here on purpose: `none` means "no list".
///
/// ```
/// use wgm_cli::parse::{peer_allow, OrNone};
/// assert!(matches!(peer_allow("none").unwrap(), OrNone::None));
/// assert!(matches!(peer_allow("10.0.0.0/8,fd00::/8:tcp:443").unwrap(), OrNone::Value(v) if v.len() == 2));
/// assert!(peer_allow("10.0.0.0/8:nope").unwrap_err().to_string().contains("peer.policy.allow[0]"));
/// ```
pub fn peer_allow(s: &str) -> Result<OrNone<Vec<wgm_core::policy::FilterRule>>> {
    OrNone::parse(s, |s| {
        let rules = s
            .split(',')
            .enumerate()
            .map(|(i, r)| {
                wgm_core::policy::FilterRule::parse(r.trim(), format!("peer.policy.allow[{i}]"))
            })
            .collect::<Result<Vec<_>>>()?;
        wgm_core::policy::check_filter_rules(&rules, "peer.policy.allow")?;
        Ok(rules)
    })
}

/// `--rate-up` of `peer set`: a rate (`10mbit`, `1MBps`), or `none`.
pub fn peer_rate_up(s: &str) -> Result<OrNone<wgm_core::policy::Rate>> {
    OrNone::parse(s, |s| {
        wgm_core::policy::Rate::parse(s, "peer.policy.rate_up")
    })
}

/// `--rate-down` of `peer set`: a rate, or `none`.
pub fn peer_rate_down(s: &str) -> Result<OrNone<wgm_core::policy::Rate>> {
    OrNone::parse(s, |s| {
        wgm_core::policy::Rate::parse(s, "peer.policy.rate_down")
    })
}

/// `--quota` of `peer set`: `BYTES/PERIOD` (`10GiB/30d`), or `none`.
pub fn peer_quota(s: &str) -> Result<OrNone<wgm_core::policy::Quota>> {
    OrNone::parse(s, |s| {
        wgm_core::policy::Quota::parse(s, "peer.policy.quota")
    })
}

/// `--quota-action` of `peer set`: `drop` or `report`.
pub fn peer_quota_action(s: &str) -> Result<wgm_core::policy::QuotaAction> {
    wgm_core::policy::QuotaAction::parse(s, "peer.policy.quota_action")
}

/// `--masquerade4` of `policy set`: an interface name, or `none`.
pub fn masquerade4(s: &str) -> Result<OrNone<InterfaceName>> {
    masquerade(s, "server.policy.masquerade4")
}

/// `--masquerade6` of `policy set`: an interface name, or `none`.
pub fn masquerade6(s: &str) -> Result<OrNone<InterfaceName>> {
    masquerade(s, "server.policy.masquerade6")
}

fn masquerade(s: &str, field: &'static str) -> Result<OrNone<InterfaceName>> {
    OrNone::parse(s, |s| {
        InterfaceName::new(s).map_err(|e| match e {
            Error::InvalidInput { reason, .. } => Error::invalid(field, reason),
            other => other,
        })
    })
}

/// `--default` of `policy set`: `allow` or `deny`.
pub fn default_verdict(s: &str) -> Result<wgm_core::policy::Verdict> {
    wgm_core::policy::Verdict::parse(s, "server.policy.default_verdict")
}

/// `--forwarding` of `policy set`: `on` or `off`.
pub fn forwarding(s: &str) -> Result<bool> {
    on_off(s, "server.policy.forwarding", "on", "off")
}

/// `--peer-to-peer` of `policy set`: `allow` or `deny`.
pub fn peer_to_peer(s: &str) -> Result<bool> {
    on_off(s, "server.policy.peer_to_peer", "allow", "deny")
}

fn on_off(s: &str, field: &'static str, yes: &str, no: &str) -> Result<bool> {
    if s == yes {
        Ok(true)
    } else if s == no {
        Ok(false)
    } else {
        Err(Error::invalid(field, format!("must be {yes} or {no}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn numbers_are_strict() {
        assert_eq!(number("10", "n", 100).unwrap(), 10);
        for bad in ["", "-1", "+1", "01", " 1", "1e3", "101"] {
            assert!(number(bad, "n", 100).is_err(), "{bad}");
        }
        assert!(revision("0", "revision").is_err());
    }

    #[test]
    fn times() {
        let now = datetime!(2026-01-01 00:00 UTC);
        assert_eq!(
            when("2d", "t").unwrap().at(now, Relative::Future),
            datetime!(2026-01-03 00:00 UTC)
        );
        assert_eq!(
            when("1h", "t").unwrap().at(now, Relative::Past),
            datetime!(2025-12-31 23:00 UTC)
        );
        assert_eq!(
            when("2026-02-01T00:00:00Z", "t")
                .unwrap()
                .at(now, Relative::Future),
            datetime!(2026-02-01 00:00 UTC)
        );
        for bad in ["tomorrow", "d", "1y", "2026-02-01", "99999999999w"] {
            let e = when(bad, "peer.expires_at").unwrap_err();
            assert!(e.to_string().contains("peer.expires_at"), "{bad}: {e}");
        }
    }

    #[test]
    fn lists_and_requests() {
        assert_eq!(list("a, b", "x").unwrap(), vec!["a", "b"]);
        assert!(list("a,,b", "x").is_err());
        assert!(dns_list("none", "x").unwrap().is_empty());
        assert!(ipv6_request("none").is_err());
        assert!(ipv6_request("fe80::1").is_err());
        assert!(ipv4_request("010.0.0.1").is_err());
        assert_eq!(ipv4_request("none").unwrap(), AddrRequest::None);
        assert!(prefix_request("10.0.0.0/8").is_err());
        assert!(allowed_ips("10.1.0.1/24", "peer.allowed_ips").is_err());
    }
}
