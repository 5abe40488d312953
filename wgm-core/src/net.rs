//! Addresses, networks, endpoints and the small numbers of a tunnel configuration,
//! parsed strictly.
//!
//! Address text is accepted only in its one unambiguous spelling, so that two tools never
//! read the same string as two different addresses and a stored value always prints back
//! as it was read:
//!
//! - IPv4 is a full dotted quad of decimal parts without leading zeros: `010.8.0.2` (octal
//!   to `inet_aton`), `0x0a.0.0.1` (hex) and `10.1` (short form) are refused.
//! - IPv6 has no zone id (`fe80::1%wg0`): tunnel addresses and routes have no scope.
//! - IPv4-mapped IPv6 (`::ffff:10.8.0.2`) is refused with a reason telling the caller to
//!   write the IPv4 form; accepting both would give one host two spellings.
//! - Prefix lengths are decimal without leading zeros and at most 32 or 128.
//! - Decimal numbers (ports, MTU, keepalive) are ASCII digits only: no sign, no
//!   whitespace, no leading zeros.
//!
//! Rejections are [`Error::InvalidInput`] naming the field the caller passes in and the
//! rule that was broken. The rejected text is not repeated: a misplaced secret (a key
//! pasted into the wrong box) must not end up in a log.
//!
//! ```
//! use wgm_core::net::{parse_allowed_ip, parse_ip, Endpoint};
//!
//! assert!(parse_ip("010.8.0.2", "peer.address").is_err());
//! assert!(parse_ip("::ffff:10.8.0.2", "peer.address").is_err());
//! assert_eq!(parse_allowed_ip("fd00::2", "peer.allowed_ips")?.to_string(), "fd00::2/128");
//! let e = Endpoint::parse("[2001:db8::1]:51820", "peer.endpoint")?;
//! assert_eq!(e.to_string(), "[2001:db8::1]:51820");
//! assert!(Endpoint::parse("2001:db8::1:51820", "peer.endpoint").is_err()); // no brackets
//! # Ok::<(), wgm_core::Error>(())
//! ```

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv6Net};

use crate::{Error, Result};

type Check<T = ()> = std::result::Result<T, &'static str>;

// ---------------------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------------------

/// Parse an IPv4 or IPv6 address strictly (see the [module docs](self)).
///
/// ```
/// use wgm_core::net::parse_ip;
/// assert_eq!(parse_ip("10.8.0.2", "address")?.to_string(), "10.8.0.2");
/// assert!(parse_ip("1.2.3", "address").is_err());
/// assert!(parse_ip("fe80::1%wg0", "address").is_err());
/// # Ok::<(), wgm_core::Error>(())
/// ```
pub fn parse_ip(s: &str, field: &'static str) -> Result<IpAddr> {
    ip(s).map_err(|reason| Error::invalid(field, reason))
}

/// [`parse_ip`], requiring IPv4.
pub fn parse_ipv4(s: &str, field: &'static str) -> Result<Ipv4Addr> {
    match parse_ip(s, field)? {
        IpAddr::V4(a) => Ok(a),
        IpAddr::V6(_) => Err(Error::invalid(field, "must be an IPv4 address")),
    }
}

/// [`parse_ip`], requiring IPv6.
pub fn parse_ipv6(s: &str, field: &'static str) -> Result<Ipv6Addr> {
    match parse_ip(s, field)? {
        IpAddr::V6(a) => Ok(a),
        IpAddr::V4(_) => Err(Error::invalid(field, "must be an IPv6 address")),
    }
}

fn ip(s: &str) -> Check<IpAddr> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_some() => Err(
            "is an IPv4-mapped IPv6 address (::ffff:a.b.c.d); write the IPv4 form a.b.c.d instead",
        ),
        Ok(a) => Ok(a),
        Err(_) => Err(explain_bad_ip(s)),
    }
}

/// Why `s` (which std refused) is not an address, as precisely as we can say.
fn explain_bad_ip(s: &str) -> &'static str {
    if s.is_empty() {
        return "must not be empty";
    }
    if s.contains('%') {
        return "must not carry a zone id (%…); WireGuard addresses have no scope";
    }
    if s.starts_with('[') || s.ends_with(']') {
        return "must not be in brackets (brackets are only for IPv6 endpoints with a port)";
    }
    if s.contains('/') {
        return "must be a single address without a /prefix";
    }
    if s.bytes().any(|b| b.is_ascii_whitespace()) {
        return "must not contain whitespace";
    }
    if !s.contains(':') {
        let parts: Vec<&str> = s.split('.').collect();
        if parts
            .iter()
            .any(|p| p.len() > 1 && (p.starts_with("0x") || p.starts_with("0X")))
        {
            return "IPv4 parts must be decimal (no 0x hex parts)";
        }
        if parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            if parts.len() < 4 {
                return "IPv4 addresses need all four parts (no short forms like 10.1)";
            }
            if parts.iter().any(|p| p.len() > 1 && p.starts_with('0')) {
                return "IPv4 parts must not have leading zeros (read as octal by some tools)";
            }
            if parts.len() == 4 {
                return "IPv4 parts must be at most 255";
            }
        }
    }
    "is not an IP address (IPv4 like 10.8.0.2 or IPv6 like fd00::2)"
}

/// Reject addresses no peer or server may hold: unspecified, loopback, multicast,
/// link-local, the IPv4 limited broadcast `255.255.255.255`, `0.0.0.0/8` ("this network")
/// and IPv4-mapped IPv6. Documentation ranges are allowed (tests and examples use them).
/// Pool-specific rules (network and broadcast address of the pool, the server's own
/// address, reserved IPv6 interface identifiers) are the allocator's.
///
/// ```
/// use wgm_core::net::check_assignable;
/// assert!(check_assignable("10.8.0.2".parse().unwrap(), "peer.address").is_ok());
/// assert!(check_assignable("fe80::1".parse().unwrap(), "peer.address").is_err());
/// assert!(check_assignable("2001:db8::1".parse().unwrap(), "peer.address").is_ok());
/// ```
pub fn check_assignable(addr: IpAddr, field: &'static str) -> Result<()> {
    assignable(addr).map_err(|reason| Error::invalid(field, reason))
}

fn assignable(addr: IpAddr) -> Check {
    match addr {
        IpAddr::V4(a) => {
            if a.is_unspecified() {
                Err("must not be the unspecified address 0.0.0.0")
            } else if a.octets()[0] == 0 {
                Err("must not be in 0.0.0.0/8 (\"this network\")")
            } else if a.is_loopback() {
                Err("must not be a loopback address (127.0.0.0/8)")
            } else if a.is_multicast() {
                Err("must not be a multicast address (224.0.0.0/4)")
            } else if a.is_link_local() {
                Err("must not be a link-local address (169.254.0.0/16)")
            } else if a.is_broadcast() {
                Err("must not be the broadcast address 255.255.255.255")
            } else {
                Ok(())
            }
        }
        IpAddr::V6(a) => {
            if a.is_unspecified() {
                Err("must not be the unspecified address ::")
            } else if a.is_loopback() {
                Err("must not be the loopback address ::1")
            } else if a.is_multicast() {
                Err("must not be a multicast address (ff00::/8)")
            } else if a.is_unicast_link_local() {
                Err("must not be a link-local address (fe80::/10)")
            } else if a.to_ipv4_mapped().is_some() {
                Err("must not be an IPv4-mapped IPv6 address; use the IPv4 form")
            } else {
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Networks
// ---------------------------------------------------------------------------------------

/// Parse a network in CIDR form (`10.8.0.0/24`, `fd00:1::/64`): a strict address, a
/// prefix length, and no host bits set. Used for pools and routes.
///
/// ```
/// use wgm_core::net::parse_network;
/// assert!(parse_network("10.8.0.0/24", "server.ipv4_pool").is_ok());
/// assert!(parse_network("10.8.0.1/24", "server.ipv4_pool").is_err()); // host bits
/// assert!(parse_network("10.8.0.0", "server.ipv4_pool").is_err()); // no prefix
/// ```
pub fn parse_network(s: &str, field: &'static str) -> Result<IpNet> {
    let Some((addr, prefix)) = s.split_once('/') else {
        return Err(Error::invalid(
            field,
            "must be a network in CIDR form, e.g. 10.8.0.0/24 or fd00::/64",
        ));
    };
    let net = cidr(addr, prefix).map_err(|reason| Error::invalid(field, reason))?;
    check_no_host_bits(net, field)?;
    Ok(net)
}

/// Parse a wg-quick `Address =` value: `addr/prefix` with host bits allowed (the address
/// of the interface inside its subnet), or a bare address, which means `/32` or `/128`.
///
/// ```
/// use wgm_core::net::parse_interface_address;
/// assert_eq!(parse_interface_address("10.8.0.1/24", "address")?.to_string(), "10.8.0.1/24");
/// assert_eq!(parse_interface_address("fd00::1", "address")?.to_string(), "fd00::1/128");
/// # Ok::<(), wgm_core::Error>(())
/// ```
pub fn parse_interface_address(s: &str, field: &'static str) -> Result<IpNet> {
    match s.split_once('/') {
        Some((addr, prefix)) => cidr(addr, prefix).map_err(|reason| Error::invalid(field, reason)),
        None => Ok(IpNet::from(parse_ip(s, field)?)),
    }
}

/// Parse one allowed IP as `wg(8)` does: `addr/prefix`, or a bare address meaning a host
/// route (`/32`, `/128`).
///
/// **Stricter than `wg(8)`:** `wg` silently masks host bits (`10.8.0.1/24` becomes
/// `10.8.0.0/24`); we refuse them, since such an entry is nearly always a typo for the
/// host route `/32` and would route a whole subnet to one peer.
///
/// ```
/// use wgm_core::net::parse_allowed_ip;
/// assert_eq!(parse_allowed_ip("10.8.0.2", "allowed_ips")?.to_string(), "10.8.0.2/32");
/// assert_eq!(parse_allowed_ip("::/0", "allowed_ips")?.to_string(), "::/0");
/// assert!(parse_allowed_ip("10.8.0.2/24", "allowed_ips").is_err());
/// # Ok::<(), wgm_core::Error>(())
/// ```
pub fn parse_allowed_ip(s: &str, field: &'static str) -> Result<IpNet> {
    let net = parse_interface_address(s, field)?;
    check_no_host_bits(net, field)?;
    Ok(net)
}

fn cidr(addr: &str, prefix: &str) -> Check<IpNet> {
    let addr = ip(addr)?;
    let max: u8 = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let prefix = match decimal(prefix, u64::from(max)) {
        Ok(p) => p,
        Err(Decimal::TooLarge) => {
            return Err(if max == 32 {
                "prefix length must be at most 32 for IPv4"
            } else {
                "prefix length must be at most 128 for IPv6"
            })
        }
        Err(Decimal::Empty) => return Err("prefix length must not be empty"),
        Err(Decimal::NotDigits) => return Err("prefix length must be decimal digits only"),
        Err(Decimal::LeadingZero) => return Err("prefix length must not have leading zeros"),
    };
    // `decimal` capped the value at 32/128, so this conversion and `IpNet::new` succeed.
    let prefix = u8::try_from(prefix).map_err(|_| "prefix length is out of range")?;
    IpNet::new(addr, prefix).map_err(|_| "prefix length is out of range")
}

fn check_no_host_bits(net: IpNet, field: &'static str) -> Result<()> {
    if net.trunc() == net {
        Ok(())
    } else {
        // The suggestion is computed from an input that parsed as an address, so it
        // cannot be a misplaced secret.
        Err(Error::invalid(
            field,
            format!("host bits must be zero (the network is {})", net.trunc()),
        ))
    }
}

/// A random RFC 4193 unique local /64: `fd` + a 40-bit random global id + subnet id 0.
/// wgm uses it as the IPv6 pool of a server created without one.
///
/// ```
/// let net = wgm_core::net::random_ula_prefix(&mut rand::thread_rng());
/// assert_eq!(net.prefix_len(), 64);
/// assert_eq!(net.addr().octets()[0], 0xfd);
/// ```
pub fn random_ula_prefix<R: rand::Rng + ?Sized>(rng: &mut R) -> Ipv6Net {
    let global = random_ula_global_prefix(rng);
    // Subnet id 0 of the /48. `new_assert` panics only for a prefix over 128.
    Ipv6Net::new_assert(global.network(), 64)
}

/// A random RFC 4193 unique local /48 (`fd` + 40-bit random global id), for prefix
/// delegation (one /64 per site or peer).
pub fn random_ula_global_prefix<R: rand::Rng + ?Sized>(rng: &mut R) -> Ipv6Net {
    let mut octets = [0u8; 16];
    octets[0] = 0xfd;
    rng.fill_bytes(&mut octets[1..6]);
    // `new_assert` panics only for a prefix over 128.
    Ipv6Net::new_assert(Ipv6Addr::from(octets), 48)
}

// ---------------------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decimal {
    Empty,
    NotDigits,
    LeadingZero,
    TooLarge,
}

impl Decimal {
    fn reason(self) -> &'static str {
        match self {
            Decimal::Empty => "must not be empty",
            Decimal::NotDigits => "must be decimal digits only (no sign, spaces or units)",
            Decimal::LeadingZero => "must not have leading zeros",
            Decimal::TooLarge => "is too large",
        }
    }
}

/// ASCII digits, no leading zeros, value ≤ `max`.
fn decimal(s: &str, max: u64) -> std::result::Result<u64, Decimal> {
    if s.is_empty() {
        return Err(Decimal::Empty);
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Decimal::NotDigits);
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(Decimal::LeadingZero);
    }
    match s.parse::<u64>() {
        Ok(v) if v <= max => Ok(v),
        _ => Err(Decimal::TooLarge),
    }
}

/// Parse a UDP port: digits only, 1–65535.
pub fn parse_port(s: &str, field: &'static str) -> Result<u16> {
    port(s).map_err(|reason| Error::invalid(field, reason))
}

fn port(s: &str) -> Check<u16> {
    match decimal(s, 65535) {
        Ok(0) => Err("port must be 1-65535 (0 would pick a random port)"),
        Ok(p) => u16::try_from(p).map_err(|_| "port must be 1-65535"),
        Err(Decimal::TooLarge) => Err("port must be 1-65535"),
        Err(Decimal::Empty) => Err("port must not be empty"),
        Err(Decimal::NotDigits) => Err("port must be decimal digits only"),
        Err(Decimal::LeadingZero) => Err("port must not have leading zeros"),
    }
}

/// Declares a validated number newtype: `new`, `get`, `parse`, `Display`, `FromStr`,
/// serde as the bare number (validated on deserialize).
macro_rules! number_type {
    ($(#[$meta:meta])* $name:ident($inner:ty), $inner_name:literal, $field:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = $inner_name, into = $inner_name)]
        pub struct $name($inner);

        impl $name {
            /// Validate `value`. Errors name the field
            #[doc = concat!("`", $field, "`.")]
            pub fn new(value: $inner) -> Result<Self> {
                Self::check(value).map_err(|reason| Error::invalid($field, reason))
            }

            /// The value.
            pub fn get(self) -> $inner {
                self.0
            }

            /// Parse the text form, naming `field` in errors.
            pub fn parse(s: &str, field: impl Into<Cow<'static, str>>) -> Result<Self> {
                Self::parse_text(s).map_err(|reason| Error::invalid(field, reason))
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::parse(s, $field)
            }
        }

        impl TryFrom<$inner> for $name {
            type Error = Error;
            fn try_from(value: $inner) -> Result<Self> {
                Self::new(value)
            }
        }

        impl From<$name> for $inner {
            fn from(value: $name) -> $inner {
                value.0
            }
        }
    };
}

number_type!(
    /// The UDP port a server listens on: 1–65535. Port 0 (let the kernel pick) is refused:
    /// wgm always pins the port so that clients' endpoints stay valid.
    ///
    /// ```
    /// use wgm_core::net::ListenPort;
    /// assert_eq!("51820".parse::<ListenPort>()?.get(), 51820);
    /// assert!("0".parse::<ListenPort>().is_err());
    /// assert!(" 51820".parse::<ListenPort>().is_err());
    /// # Ok::<(), wgm_core::Error>(())
    /// ```
    ListenPort(u16),
    "u16",
    "listen_port"
);

impl ListenPort {
    /// The conventional port, 51820 (wg-quick's examples, most firewall rules).
    pub const DEFAULT: ListenPort = ListenPort(51820);

    fn check(value: u16) -> Check<Self> {
        if value == 0 {
            Err("port must be 1-65535 (0 would pick a random port)")
        } else {
            Ok(ListenPort(value))
        }
    }

    fn parse_text(s: &str) -> Check<Self> {
        port(s).map(ListenPort)
    }
}

impl fmt::Display for ListenPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

number_type!(
    /// The MTU of a tunnel interface: 576–9000, as wg-quick allows. A server or client
    /// with IPv6 needs at least 1280 ([`Mtu::check_ipv6`]); wgm is IPv6-first, so the
    /// default is 1420 (1500 − 80 bytes of tunnel overhead over IPv6).
    ///
    /// ```
    /// use wgm_core::net::Mtu;
    /// assert_eq!(Mtu::default().get(), 1420);
    /// let small: Mtu = "1000".parse()?;
    /// assert!(small.check_ipv6("server.mtu").is_err());
    /// # Ok::<(), wgm_core::Error>(())
    /// ```
    Mtu(u16),
    "u16",
    "mtu"
);

impl Mtu {
    /// Smallest MTU accepted.
    pub const MIN: u16 = 576;
    /// Largest MTU accepted (jumbo frames).
    pub const MAX: u16 = 9000;
    /// Smallest MTU of an interface that carries IPv6 (RFC 8200).
    pub const MIN_IPV6: u16 = 1280;

    fn check(value: u16) -> Check<Self> {
        if (Self::MIN..=Self::MAX).contains(&value) {
            Ok(Mtu(value))
        } else {
            Err("must be between 576 and 9000")
        }
    }

    fn parse_text(s: &str) -> Check<Self> {
        match decimal(s, u64::from(Self::MAX)) {
            Ok(v) => Self::check(u16::try_from(v).map_err(|_| "must be between 576 and 9000")?),
            Err(Decimal::TooLarge) => Err("must be between 576 and 9000"),
            Err(e) => Err(e.reason()),
        }
    }

    /// Refuse an MTU below 1280 on an interface that carries IPv6.
    pub fn check_ipv6(self, field: &'static str) -> Result<()> {
        if self.0 < Self::MIN_IPV6 {
            Err(Error::invalid(
                field,
                "must be at least 1280 on an interface with IPv6 (RFC 8200)",
            ))
        } else {
            Ok(())
        }
    }
}

impl Default for Mtu {
    fn default() -> Self {
        Mtu(1420)
    }
}

impl fmt::Display for Mtu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

number_type!(
    /// `PersistentKeepalive` in seconds: 0–65535, 0 meaning off. Parses digits or `off`
    /// as `wg(8)` does; displays the number. The default (for clients behind NAT) is 25.
    ///
    /// ```
    /// use wgm_core::net::Keepalive;
    /// assert_eq!("off".parse::<Keepalive>()?, Keepalive::OFF);
    /// assert_eq!(Keepalive::default().get(), 25);
    /// assert!("65536".parse::<Keepalive>().is_err());
    /// # Ok::<(), wgm_core::Error>(())
    /// ```
    Keepalive(u16),
    "u16",
    "persistent_keepalive"
);

impl Keepalive {
    /// No keepalive packets.
    pub const OFF: Keepalive = Keepalive(0);

    #[allow(
        clippy::unnecessary_wraps,
        reason = "the shape number_type! expects; every u16 is valid"
    )]
    fn check(value: u16) -> Check<Self> {
        Ok(Keepalive(value))
    }

    fn parse_text(s: &str) -> Check<Self> {
        if s == "off" {
            return Ok(Self::OFF);
        }
        match decimal(s, 65535) {
            Ok(v) => u16::try_from(v)
                .map(Keepalive)
                .map_err(|_| "must be 0-65535 seconds"),
            Err(Decimal::TooLarge) => Err("must be 0-65535 seconds"),
            Err(e) => Err(e.reason()),
        }
    }

    /// Whether keepalive is off (0).
    pub fn is_off(self) -> bool {
        self.0 == 0
    }
}

impl Default for Keepalive {
    /// 25 seconds, the interval wg(8) recommends for peers behind NAT.
    fn default() -> Self {
        Keepalive(25)
    }
}

impl fmt::Display for Keepalive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

number_type!(
    /// The firewall mark of outgoing encrypted packets: any 32-bit value, 0 meaning off.
    /// Parses as `wg(8)` does: decimal, `0x` hex, or `off`; displays `0x` hex as
    /// `wg showconf` does.
    ///
    /// ```
    /// use wgm_core::net::FwMark;
    /// assert_eq!("0xca6c".parse::<FwMark>()?.get(), 51820);
    /// assert_eq!("51820".parse::<FwMark>()?.to_string(), "0xca6c");
    /// assert!("4294967296".parse::<FwMark>().is_err());
    /// # Ok::<(), wgm_core::Error>(())
    /// ```
    FwMark(u32),
    "u32",
    "fwmark"
);

impl FwMark {
    /// No mark.
    pub const OFF: FwMark = FwMark(0);

    #[allow(
        clippy::unnecessary_wraps,
        reason = "the shape number_type! expects; every u32 is valid"
    )]
    fn check(value: u32) -> Check<Self> {
        Ok(FwMark(value))
    }

    fn parse_text(s: &str) -> Check<Self> {
        if s == "off" {
            return Ok(Self::OFF);
        }
        if let Some(hex) = s.strip_prefix("0x") {
            if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err("must be decimal, 0x followed by hex digits, or off");
            }
            let digits = hex.trim_start_matches('0');
            if digits.len() > 8 {
                return Err("must be at most 0xffffffff");
            }
            return u32::from_str_radix(if digits.is_empty() { "0" } else { digits }, 16)
                .map(FwMark)
                .map_err(|_| "must be at most 0xffffffff");
        }
        match decimal(s, u64::from(u32::MAX)) {
            Ok(v) => u32::try_from(v)
                .map(FwMark)
                .map_err(|_| "must be at most 4294967295"),
            Err(Decimal::TooLarge) => Err("must be at most 4294967295 (2^32-1)"),
            Err(Decimal::NotDigits) => Err("must be decimal, 0x followed by hex digits, or off"),
            Err(e) => Err(e.reason()),
        }
    }

    /// Whether the mark is off (0).
    pub fn is_off(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for FwMark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

// ---------------------------------------------------------------------------------------
// Host names, endpoints, DNS
// ---------------------------------------------------------------------------------------

/// Longest host name (RFC 1035, without the trailing dot).
pub const MAX_HOST_NAME_LEN: usize = 253;

/// Check a DNS host name: RFC 1123 labels (1–63 of `A–Z a–z 0–9 -`, no `-` at either end),
/// at most 253 characters, no trailing dot, and a last label that is not all digits (so a
/// short IPv4 form like `10.1` or a hex form like `0x0a.0.0.1` is never taken for a name).
pub fn check_host_name(s: &str, field: &'static str) -> Result<()> {
    host_name(s).map_err(|reason| Error::invalid(field, reason))
}

fn host_name(s: &str) -> Check {
    if s.is_empty() {
        return Err("host name must not be empty");
    }
    if s.len() > MAX_HOST_NAME_LEN {
        return Err("host name must be at most 253 characters");
    }
    let mut last = "";
    for label in s.split('.') {
        if label.is_empty() {
            return Err(
                "host name must not have empty labels (\"..\", or a leading or trailing dot)",
            );
        }
        if label.len() > 63 {
            return Err("host name labels must be at most 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("host names may contain only A-Z a-z 0-9 - and dots");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("host name labels must not start or end with '-'");
        }
        last = label;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("is not a valid host name (the last label is numeric) nor a full IPv4 address");
    }
    Ok(())
}

/// Where a peer is reached: an address and port, or a host name and port.
///
/// Text form as in wg-quick's `Endpoint =`: `203.0.113.1:51820`, `[2001:db8::1]:51820`
/// (IPv6 always in brackets), `vpn.example.org:51820`. A port is required (1–65535).
/// Host names are checked against RFC 1123 and stored lowercase. The unspecified,
/// multicast and broadcast addresses are refused.
///
/// ```
/// use wgm_core::net::Endpoint;
/// let e: Endpoint = "VPN.example.org:51820".parse()?;
/// assert_eq!(e.to_string(), "vpn.example.org:51820");
/// assert_eq!(e.port(), 51820);
/// assert!("vpn.example.org".parse::<Endpoint>().is_err()); // no port
/// assert!("[2001:db8::1]:0".parse::<Endpoint>().is_err());
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A literal address and port.
    Addr(SocketAddr),
    /// A DNS name and port, resolved by whoever applies the configuration.
    Host {
        /// The host name (lowercase, RFC 1123).
        host: String,
        /// The UDP port.
        port: u16,
    },
}

impl Endpoint {
    /// Parse the text form, naming `field` in errors.
    pub fn parse(s: &str, field: &'static str) -> Result<Self> {
        endpoint(s).map_err(|reason| Error::invalid(field, reason))
    }

    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            Endpoint::Addr(a) => a.port(),
            Endpoint::Host { port, .. } => *port,
        }
    }
}

fn endpoint(s: &str) -> Check<Endpoint> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if let Some(rest) = s.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return Err("has '[' without a closing ']'");
        };
        let Some(port_text) = after.strip_prefix(':') else {
            return Err("must end with :port, e.g. [2001:db8::1]:51820");
        };
        let IpAddr::V6(v6) = ip(addr)? else {
            return Err("brackets are only for IPv6 addresses");
        };
        let port = port(port_text)?;
        let addr = IpAddr::V6(v6);
        endpoint_addr(addr)?;
        return Ok(Endpoint::Addr(SocketAddr::new(addr, port)));
    }
    let Some((host, port_text)) = s.rsplit_once(':') else {
        return Err("must include a port, e.g. 203.0.113.1:51820 or [2001:db8::1]:51820");
    };
    if host.contains(':') {
        return Err("IPv6 endpoints must be in brackets, e.g. [2001:db8::1]:51820");
    }
    if host.is_empty() {
        return Err("must include a host or address before :port");
    }
    let port = port(port_text)?;
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let addr = ip(host)?;
        endpoint_addr(addr)?;
        return Ok(Endpoint::Addr(SocketAddr::new(addr, port)));
    }
    host_name(host)?;
    Ok(Endpoint::Host {
        host: host.to_ascii_lowercase(),
        port,
    })
}

fn endpoint_addr(addr: IpAddr) -> Check {
    let bad = match addr {
        IpAddr::V4(a) => a.is_unspecified() || a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
    };
    if bad {
        Err("must not be an unspecified, multicast or broadcast address")
    } else {
        Ok(())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Addr(a) => match a.ip() {
                IpAddr::V4(ip) => write!(f, "{ip}:{}", a.port()),
                IpAddr::V6(ip) => write!(f, "[{ip}]:{}", a.port()),
            },
            Endpoint::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl FromStr for Endpoint {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s, "endpoint")
    }
}

impl serde::Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let s = <Cow<'de, str>>::deserialize(deserializer)?;
        Endpoint::parse(&s, "endpoint").map_err(serde::de::Error::custom)
    }
}

/// One entry of wg-quick's `DNS =` list: a resolver address or a search domain.
///
/// As in wg-quick, text made of digits and dots, or containing `:`, is an address (and
/// must then be a valid one); anything else is a search domain (RFC 1123 host name).
///
/// ```
/// use wgm_core::net::DnsEntry;
/// assert!(matches!("fd00::53".parse::<DnsEntry>()?, DnsEntry::Addr(_)));
/// assert!(matches!("corp.example".parse::<DnsEntry>()?, DnsEntry::SearchDomain(_)));
/// assert!("10.0.53".parse::<DnsEntry>().is_err()); // a short IPv4 form, not a domain
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DnsEntry {
    /// A resolver address.
    Addr(IpAddr),
    /// A search domain (lowercase).
    SearchDomain(String),
}

impl DnsEntry {
    /// Parse one entry, naming `field` in errors.
    pub fn parse(s: &str, field: &'static str) -> Result<Self> {
        dns_entry(s).map_err(|reason| Error::invalid(field, reason))
    }
}

fn dns_entry(s: &str) -> Check<DnsEntry> {
    if s.contains(':') || (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')) {
        let addr = ip(s)?;
        let bad = match addr {
            IpAddr::V4(a) => a.is_unspecified() || a.is_multicast() || a.is_broadcast(),
            IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
        };
        if bad {
            return Err("a DNS server must not be an unspecified, multicast or broadcast address");
        }
        return Ok(DnsEntry::Addr(addr));
    }
    host_name(s)?;
    Ok(DnsEntry::SearchDomain(s.to_ascii_lowercase()))
}

/// Most entries a DNS list may hold ([`check_dns_list`]). resolv.conf uses 3 name servers
/// and 6 search domains; 16 leaves room for both families and split DNS.
pub const MAX_DNS_ENTRIES: usize = 16;

/// Check a whole DNS list (a server's `DNS =`, a client template's override): at most
/// [`MAX_DNS_ENTRIES`] entries, none twice, and each one in the form [`DnsEntry::parse`]
/// accepts — resolver addresses parsed strictly, search domains RFC 1123 host names
/// (at most 253 characters, labels of at most 63 of `A–Z a–z 0–9 -`), lowercase. The
/// last check matters for entries built directly rather than parsed.
///
/// Errors are [`Error::InvalidInput`] naming the entry, `field[i]` (`server.dns[3]`), or
/// `field` for the length of the list. The entries are not repeated.
///
/// ```
/// use wgm_core::net::{check_dns_list, DnsEntry};
/// let list: Vec<DnsEntry> = vec!["fd00::53".parse()?, "corp.example".parse()?];
/// check_dns_list(&list, "server.dns")?;
/// let twice = vec![list[0].clone(), list[1].clone(), list[0].clone()];
/// let e = check_dns_list(&twice, "server.dns").unwrap_err();
/// assert!(e.to_string().starts_with("invalid server.dns[2]: "));
/// let shouting = vec![DnsEntry::SearchDomain("CORP.example".into())];
/// assert!(check_dns_list(&shouting, "server.dns").is_err());
/// # Ok::<(), wgm_core::Error>(())
/// ```
pub fn check_dns_list(list: &[DnsEntry], field: &str) -> Result<()> {
    if list.len() > MAX_DNS_ENTRIES {
        return Err(Error::invalid(
            field.to_owned(),
            "must have at most 16 entries",
        ));
    }
    for (i, entry) in list.iter().enumerate() {
        let at = || format!("{field}[{i}]");
        // The one spelling a parse gives back must be this very entry.
        let reparsed =
            dns_entry(&entry.to_string()).map_err(|reason| Error::invalid(at(), reason))?;
        if reparsed != *entry {
            return Err(Error::invalid(
                at(),
                "must be written as it parses: a search domain in lowercase, an address in its plain form",
            ));
        }
        if let Some(first) = list[..i].iter().position(|e| e == entry) {
            return Err(Error::invalid(
                at(),
                format!("repeats entry {first} (each server or search domain at most once)"),
            ));
        }
    }
    Ok(())
}

impl fmt::Display for DnsEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsEntry::Addr(a) => write!(f, "{a}"),
            DnsEntry::SearchDomain(d) => f.write_str(d),
        }
    }
}

impl FromStr for DnsEntry {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s, "dns")
    }
}

impl serde::Serialize for DnsEntry {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DnsEntry {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let s = <Cow<'de, str>>::deserialize(deserializer)?;
        DnsEntry::parse(&s, "dns").map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng as _;

    fn reason(r: Result<impl fmt::Debug>) -> String {
        match r {
            Err(Error::InvalidInput { field, reason }) => format!("{field}: {reason}"),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn addresses_reject_every_listed_form() {
        let cases = [
            ("010.8.0.2", "leading zeros"),
            ("10.8.0.02", "leading zeros"),
            ("0x0a.0.0.1", "0x hex"),
            ("10.0x8.0.1", "0x hex"),
            ("1.2.3", "short forms"),
            ("10.1", "short forms"),
            ("167772161", "short forms"),
            ("10.8.0.256", "at most 255"),
            ("fe80::1%wg0", "zone id"),
            ("fe80::1%2", "zone id"),
            ("::ffff:10.8.0.2", "IPv4-mapped"),
            ("::FFFF:a08:2", "IPv4-mapped"),
            ("[fd00::1]", "brackets"),
            ("10.8.0.2/32", "/prefix"),
            (" 10.8.0.2", "whitespace"),
            ("10.8.0.2\n", "whitespace"),
            ("", "empty"),
            ("fd00:::1", "not an IP address"),
            ("vpn.example.org", "not an IP address"),
            ("1:2:3:4:5:6:7:8:9", "not an IP address"),
            ("+10.8.0.2", "not an IP address"),
        ];
        for (input, want) in cases {
            let r = reason(parse_ip(input, "peer.address"));
            assert!(r.starts_with("peer.address: "), "{r}");
            assert!(r.contains(want), "{input:?}: {r}");
        }
        assert_eq!(
            parse_ipv4("10.8.0.2", "f").unwrap(),
            Ipv4Addr::new(10, 8, 0, 2)
        );
        assert!(reason(parse_ipv4("fd00::1", "f")).contains("IPv4"));
        assert!(reason(parse_ipv6("10.8.0.2", "f")).contains("IPv6"));
        assert_eq!(parse_ipv6("FD00::1", "f").unwrap().to_string(), "fd00::1");
    }

    #[test]
    fn networks() {
        assert_eq!(
            parse_network("10.8.0.0/24", "pool").unwrap().to_string(),
            "10.8.0.0/24"
        );
        assert_eq!(
            parse_network("0.0.0.0/0", "pool").unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            parse_network("fd00:1::/64", "pool").unwrap().to_string(),
            "fd00:1::/64"
        );
        assert_eq!(
            parse_network("10.8.0.1/32", "pool").unwrap().to_string(),
            "10.8.0.1/32"
        );
        let cases = [
            (
                "10.8.0.1/24",
                "host bits must be zero (the network is 10.8.0.0/24)",
            ),
            (
                "fd00::1/64",
                "host bits must be zero (the network is fd00::/64)",
            ),
            ("10.8.0.0/33", "at most 32"),
            ("fd00::/129", "at most 128"),
            ("fd00::/999999999999999999999999", "at most 128"),
            ("10.8.0.0/024", "leading zeros"),
            ("10.8.0.0/+24", "digits"),
            ("10.8.0.0/ 24", "digits"),
            ("10.8.0.0/", "empty"),
            ("10.8.0.0", "CIDR"),
            ("010.8.0.0/24", "leading zeros"),
            ("::ffff:0:0/96", "IPv4-mapped"),
            ("fe80::%wg0/64", "zone id"),
            ("10.8.0.0/24/1", "digits"),
        ];
        for (input, want) in cases {
            let r = reason(parse_network(input, "server.ipv4_pool"));
            assert!(r.contains(want), "{input:?}: {r}");
        }
    }

    #[test]
    fn interface_addresses_and_allowed_ips() {
        assert_eq!(
            parse_interface_address("10.8.0.1/24", "a")
                .unwrap()
                .to_string(),
            "10.8.0.1/24"
        );
        assert_eq!(
            parse_interface_address("10.8.0.1", "a")
                .unwrap()
                .to_string(),
            "10.8.0.1/32"
        );
        assert_eq!(
            parse_interface_address("fd00::1", "a").unwrap().to_string(),
            "fd00::1/128"
        );
        assert!(reason(parse_interface_address("10.8.0.1/33", "a")).contains("at most 32"));
        assert!(reason(parse_interface_address("fe80::1%wg0", "a")).contains("zone"));

        assert_eq!(
            parse_allowed_ip("10.8.0.2", "a").unwrap().to_string(),
            "10.8.0.2/32"
        );
        assert_eq!(
            parse_allowed_ip("0.0.0.0/0", "a").unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(parse_allowed_ip("::/0", "a").unwrap().to_string(), "::/0");
        assert_eq!(
            parse_allowed_ip("fd00:1::/48", "a").unwrap().to_string(),
            "fd00:1::/48"
        );
        for (input, want) in [
            ("10.8.0.2/24", "host bits"),
            ("fd00::2/64", "host bits"),
            ("10.8.0.2/", "empty"),
            ("010.8.0.2", "leading zeros"),
            ("::ffff:10.8.0.2/128", "IPv4-mapped"),
            ("10.8.0.0/24,", "digits"),
        ] {
            let r = reason(parse_allowed_ip(input, "peer.allowed_ips"));
            assert!(
                r.starts_with("peer.allowed_ips: ") && r.contains(want),
                "{input:?}: {r}"
            );
        }
    }

    #[test]
    fn assignable_addresses() {
        for ok in [
            "10.8.0.2",
            "192.0.2.1",
            "100.64.0.1",
            "fd00::2",
            "2001:db8::1",
            "255.255.255.254",
            "::2",
        ] {
            assert!(
                check_assignable(ok.parse().unwrap(), "peer.address").is_ok(),
                "{ok}"
            );
        }
        for (bad, want) in [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "this network"),
            ("127.0.0.1", "loopback"),
            ("127.255.0.1", "loopback"),
            ("224.0.0.1", "multicast"),
            ("239.1.1.1", "multicast"),
            ("169.254.1.1", "link-local"),
            ("255.255.255.255", "broadcast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("ff02::1", "multicast"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("::ffff:10.0.0.1", "IPv4-mapped"),
        ] {
            let r = reason(check_assignable(bad.parse().unwrap(), "peer.address"));
            assert!(r.contains(want), "{bad}: {r}");
        }
    }

    #[test]
    fn ula_prefixes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let a = random_ula_prefix(&mut rng);
        let b = random_ula_prefix(&mut rng);
        assert_ne!(a, b);
        for net in [a, b] {
            assert_eq!(net.prefix_len(), 64);
            assert_eq!(net.trunc(), net);
            let o = net.addr().octets();
            assert_eq!(o[0], 0xfd);
            assert_eq!(&o[6..], &[0; 10]);
            assert!(parse_network(&net.to_string(), "pool").is_ok());
        }
        let g = random_ula_global_prefix(&mut rng);
        assert_eq!(g.prefix_len(), 48);
        assert!("fd00::/8".parse::<Ipv6Net>().unwrap().contains(&g));
        // The 40 random bits actually vary.
        let ids: std::collections::HashSet<_> = (0..64)
            .map(|_| random_ula_prefix(&mut rng).addr().octets()[1..6].to_vec())
            .collect();
        assert_eq!(ids.len(), 64);
    }

    #[test]
    fn endpoints() {
        let ok = [
            ("203.0.113.1:51820", "203.0.113.1:51820"),
            ("[2001:db8::1]:51820", "[2001:db8::1]:51820"),
            ("[2001:DB8::1]:1", "[2001:db8::1]:1"),
            ("vpn.example.org:65535", "vpn.example.org:65535"),
            ("VPN.Example.ORG:51820", "vpn.example.org:51820"),
            ("localhost:51820", "localhost:51820"),
            ("127.0.0.1:51820", "127.0.0.1:51820"),
            ("xn--bcher-kva.example:1", "xn--bcher-kva.example:1"),
            ("a1.b2.c3:5", "a1.b2.c3:5"),
        ];
        for (input, shown) in ok {
            let e = Endpoint::parse(input, "peer.endpoint").unwrap();
            assert_eq!(e.to_string(), shown);
            assert_eq!(shown.parse::<Endpoint>().unwrap(), e);
        }
        assert!(matches!(
            "vpn.example.org:1".parse::<Endpoint>().unwrap(),
            Endpoint::Host { .. }
        ));
        assert!(matches!(
            "10.0.0.1:1".parse::<Endpoint>().unwrap(),
            Endpoint::Addr(_)
        ));
        let bad = [
            ("203.0.113.1", "port"),
            ("vpn.example.org", "port"),
            ("[2001:db8::1]", ":port"),
            ("2001:db8::1:51820", "brackets"),
            ("::1:51820", "brackets"),
            ("203.0.113.1:0", "1-65535"),
            ("203.0.113.1:65536", "1-65535"),
            ("203.0.113.1:99999999999999999999999", "1-65535"),
            ("203.0.113.1:", "port must not be empty"),
            ("203.0.113.1:051820", "leading zeros"),
            ("203.0.113.1:+1", "digits"),
            ("203.0.113.1: 1", "digits"),
            ("[fe80::1%wg0]:51820", "zone id"),
            ("[::ffff:1.2.3.4]:51820", "IPv4-mapped"),
            ("[10.0.0.1]:51820", "only for IPv6"),
            ("[2001:db8::1:51820", "closing"),
            ("010.0.0.1:51820", "leading zeros"),
            ("10.1:51820", "short forms"),
            ("0x0a.0.0.1:51820", "numeric"),
            ("0.0.0.0:51820", "unspecified"),
            ("[::]:51820", "unspecified"),
            ("224.0.0.1:51820", "multicast"),
            (":51820", "host"),
            ("", "empty"),
            ("-vpn.example.org:1", "'-'"),
            ("vpn-.example.org:1", "'-'"),
            ("vpn..example.org:1", "empty labels"),
            ("vpn.example.org.:1", "empty labels"),
            ("vpn_1.example.org:1", "A-Z"),
            ("vpn example.org:1", "A-Z"),
            ("vpn\n.example.org:1", "A-Z"),
            ("bücher.example:1", "A-Z"),
        ];
        for (input, want) in bad {
            let r = reason(Endpoint::parse(input, "peer.endpoint"));
            assert!(
                r.starts_with("peer.endpoint: ") && r.contains(want),
                "{input:?}: {r}"
            );
        }
        let long_label = format!("{}.example:1", "a".repeat(64));
        assert!(reason(long_label.parse::<Endpoint>()).contains("63"));
        let long_name = format!("{}.example:1", ["a"; 127].join("."));
        assert!(reason(long_name.parse::<Endpoint>()).contains("253"));
    }

    #[test]
    fn endpoint_serde() {
        let e: Endpoint = "[2001:db8::1]:51820".parse().unwrap();
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(json, "\"[2001:db8::1]:51820\"");
        assert_eq!(serde_json::from_str::<Endpoint>(&json).unwrap(), e);
        assert!(serde_json::from_str::<Endpoint>("\"2001:db8::1:51820\"").is_err());
        assert_eq!(e.port(), 51820);
    }

    #[test]
    fn numbers() {
        assert_eq!("51820".parse::<ListenPort>().unwrap().get(), 51820);
        assert_eq!("1".parse::<ListenPort>().unwrap().get(), 1);
        assert_eq!("65535".parse::<ListenPort>().unwrap().get(), 65535);
        for (input, want) in [
            ("0", "1-65535"),
            ("65536", "1-65535"),
            ("-1", "digits"),
            ("+1", "digits"),
            (" 1", "digits"),
            ("1 ", "digits"),
            ("0x10", "digits"),
            ("051820", "leading zeros"),
            ("", "empty"),
            ("5e4", "digits"),
            ("５１８２０", "digits"),
        ] {
            let r = reason(input.parse::<ListenPort>());
            assert!(
                r.starts_with("listen_port: ") && r.contains(want),
                "{input:?}: {r}"
            );
        }
        assert!(reason(ListenPort::new(0)).contains("1-65535"));
        assert_eq!(
            ListenPort::parse("80", "server.listen_port")
                .unwrap()
                .to_string(),
            "80"
        );
        assert!(
            reason(ListenPort::parse("x", "server.listen_port")).starts_with("server.listen_port")
        );

        assert_eq!(Mtu::default().get(), 1420);
        assert_eq!("576".parse::<Mtu>().unwrap().get(), 576);
        assert_eq!("9000".parse::<Mtu>().unwrap().get(), 9000);
        for (input, want) in [
            ("575", "576"),
            ("9001", "9000"),
            ("0", "576"),
            ("70000", "9000"),
            ("01420", "leading"),
        ] {
            let r = reason(input.parse::<Mtu>());
            assert!(r.starts_with("mtu: ") && r.contains(want), "{input:?}: {r}");
        }
        assert!(reason(Mtu::new(100)).contains("576"));
        assert!(reason("1279".parse::<Mtu>().unwrap().check_ipv6("server.mtu")).contains("1280"));
        assert!(Mtu::new(1280).unwrap().check_ipv6("server.mtu").is_ok());

        assert_eq!("0".parse::<Keepalive>().unwrap(), Keepalive::OFF);
        assert_eq!("off".parse::<Keepalive>().unwrap(), Keepalive::OFF);
        assert!(Keepalive::OFF.is_off());
        assert_eq!("65535".parse::<Keepalive>().unwrap().get(), 65535);
        assert_eq!(Keepalive::default().get(), 25);
        for (input, want) in [
            ("65536", "65535"),
            ("-1", "digits"),
            ("25s", "digits"),
            ("Off", "digits"),
            ("", "empty"),
        ] {
            let r = reason(input.parse::<Keepalive>());
            assert!(
                r.starts_with("persistent_keepalive: ") && r.contains(want),
                "{input:?}: {r}"
            );
        }

        assert_eq!("off".parse::<FwMark>().unwrap(), FwMark::OFF);
        assert_eq!("0".parse::<FwMark>().unwrap(), FwMark::OFF);
        assert_eq!("4294967295".parse::<FwMark>().unwrap().get(), u32::MAX);
        assert_eq!("0xffffffff".parse::<FwMark>().unwrap().get(), u32::MAX);
        assert_eq!("0x00000000ca6c".parse::<FwMark>().unwrap().get(), 0xca6c);
        assert_eq!("0xCA6C".parse::<FwMark>().unwrap().get(), 0xca6c);
        assert_eq!(FwMark::new(0xca6c).unwrap().to_string(), "0xca6c");
        assert_eq!(FwMark::OFF.to_string(), "0x0");
        for (input, want) in [
            ("4294967296", "4294967295"),
            ("0x100000000", "0xffffffff"),
            ("0x", "hex digits"),
            ("0xg", "hex digits"),
            ("0X10", "hex digits"),
            ("-1", "hex digits"),
            (" 1", "hex digits"),
            ("010", "leading zeros"),
            ("", "empty"),
        ] {
            let r = reason(input.parse::<FwMark>());
            assert!(
                r.starts_with("fwmark: ") && r.contains(want),
                "{input:?}: {r}"
            );
        }
    }

    #[test]
    fn number_serde_is_the_bare_number_and_validates() {
        assert_eq!(
            serde_json::to_string(&ListenPort::new(51820).unwrap()).unwrap(),
            "51820"
        );
        assert_eq!(
            serde_json::from_str::<ListenPort>("51820").unwrap().get(),
            51820
        );
        assert!(serde_json::from_str::<ListenPort>("0").is_err());
        assert!(serde_json::from_str::<ListenPort>("70000").is_err());
        assert!(serde_json::from_str::<ListenPort>("\"51820\"").is_err());
        assert!(serde_json::from_str::<Mtu>("1000").is_ok());
        assert!(serde_json::from_str::<Mtu>("100").is_err());
        assert_eq!(serde_json::to_string(&Keepalive::default()).unwrap(), "25");
        assert!(serde_json::from_str::<Keepalive>("65536").is_err());
        assert_eq!(
            serde_json::from_str::<FwMark>("4294967295").unwrap().get(),
            u32::MAX
        );
        assert!(serde_json::from_str::<FwMark>("4294967296").is_err());
        let e = serde_json::from_str::<Mtu>("100").unwrap_err().to_string();
        assert!(e.contains("mtu"), "{e}");
    }

    #[test]
    fn dns_entries() {
        for (input, shown) in [
            ("1.1.1.1", "1.1.1.1"),
            ("fd00::53", "fd00::53"),
            ("2606:4700:4700::1111", "2606:4700:4700::1111"),
            ("corp.example", "corp.example"),
            ("Corp.Example", "corp.example"),
            ("lan", "lan"),
            ("127.0.0.53", "127.0.0.53"),
        ] {
            let d: DnsEntry = input.parse().unwrap();
            assert_eq!(d.to_string(), shown);
            assert_eq!(shown.parse::<DnsEntry>().unwrap(), d);
        }
        for (input, want) in [
            ("10.0.53", "short forms"),
            ("010.0.0.53", "leading zeros"),
            ("fe80::53%eth0", "zone id"),
            ("::ffff:1.1.1.1", "IPv4-mapped"),
            ("0.0.0.0", "unspecified"),
            ("ff02::fb", "multicast"),
            ("", "empty"),
            ("corp example", "A-Z"),
            ("corp.example.", "empty labels"),
            ("-corp", "'-'"),
            ("0x0a.0.0.1", "numeric"),
            ("1.1.1.1, 8.8.8.8", "A-Z"),
        ] {
            let r = reason(DnsEntry::parse(input, "server.dns"));
            assert!(
                r.starts_with("server.dns: ") && r.contains(want),
                "{input:?}: {r}"
            );
        }
        let json = serde_json::to_string(&DnsEntry::SearchDomain("lan".into())).unwrap();
        assert_eq!(json, "\"lan\"");
        assert!(serde_json::from_str::<DnsEntry>("\"1.2.3\"").is_err());
    }

    #[test]
    fn dns_lists_are_limited_in_length_unique_and_canonical() {
        let field_of = |e: Error| match e {
            Error::InvalidInput { field, reason } => (field.into_owned(), reason.into_owned()),
            other => panic!("{other:?}"),
        };
        let entry = |i: usize| {
            DnsEntry::Addr(IpAddr::V6(Ipv6Addr::new(
                0xfd00,
                0,
                0,
                0,
                0,
                0,
                0,
                0x53 + i as u16,
            )))
        };
        let full: Vec<DnsEntry> = (0..MAX_DNS_ENTRIES).map(entry).collect();
        check_dns_list(&full, "server.dns").unwrap();
        check_dns_list(&[], "server.dns").unwrap();
        let mut over = full.clone();
        over.push(entry(99));
        let (f, r) = field_of(check_dns_list(&over, "server.dns").unwrap_err());
        assert_eq!(f, "server.dns");
        assert!(r.contains("16"), "{r}");
        // Duplicates, by value: an address, and a search domain whatever its case.
        let list: Vec<DnsEntry> = ["1.1.1.1", "lan", "fd00::53", "LAN"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let (f, r) = field_of(check_dns_list(&list, "server.dns").unwrap_err());
        assert_eq!(
            (f.as_str(), r.contains("repeats entry 1")),
            ("server.dns[3]", true),
            "{r}"
        );
        let list: Vec<DnsEntry> = ["fd00::53", "1.1.1.1", "fd00:0::53"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let (f, _) = field_of(check_dns_list(&list, "t.dns").unwrap_err());
        assert_eq!(f, "t.dns[2]");
        // Entries built directly are held to the parser's rules.
        for (bad, want) in [
            (DnsEntry::SearchDomain("Corp.example".into()), "lowercase"),
            (DnsEntry::SearchDomain("a".repeat(64)), "63"),
            (
                DnsEntry::SearchDomain(format!("{}.example", vec!["a".repeat(60); 5].join("."))),
                "253",
            ),
            (DnsEntry::SearchDomain("evil\nPostUp = id".into()), "A-Z"),
            (DnsEntry::SearchDomain(String::new()), "empty"),
            (DnsEntry::SearchDomain("10.0.0.1".into()), "lowercase"),
            (
                DnsEntry::Addr("::ffff:1.1.1.1".parse().unwrap()),
                "IPv4-mapped",
            ),
            (DnsEntry::Addr("ff02::1".parse().unwrap()), "multicast"),
        ] {
            let list = vec![entry(0), bad];
            let (f, r) = field_of(check_dns_list(&list, "server.dns").unwrap_err());
            assert_eq!(f, "server.dns[1]");
            assert!(r.contains(want), "{r}");
        }
    }

    #[test]
    fn errors_never_repeat_the_input() {
        let secret = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=";
        let errors = [
            parse_ip(secret, "f").unwrap_err(),
            parse_network(secret, "f").unwrap_err(),
            parse_allowed_ip(secret, "f").unwrap_err(),
            Endpoint::parse(secret, "f").unwrap_err(),
            Endpoint::parse(&format!("{secret}:1"), "f").unwrap_err(),
            DnsEntry::parse(secret, "f").unwrap_err(),
            ListenPort::parse(secret, "f").unwrap_err(),
            FwMark::parse(secret, "f").unwrap_err(),
        ];
        for e in errors {
            assert!(!e.to_string().contains("dwdtCnMY"), "{e}");
        }
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from).prop_filter(
                "not mapped",
                |a| matches!(a, IpAddr::V6(v) if v.to_ipv4_mapped().is_none())
            ),
        ]
    }

    fn any_host() -> impl Strategy<Value = String> {
        proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", 1..5)
            .prop_map(|labels| labels.join("."))
            .prop_filter("last label not numeric", |h| {
                !h.rsplit('.')
                    .next()
                    .unwrap_or("")
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
    }

    proptest! {
        #[test]
        fn ip_display_parses_back(a in any_ip()) {
            prop_assert_eq!(parse_ip(&a.to_string(), "f").unwrap(), a);
        }

        #[test]
        fn networks_display_parse_back(a in any_ip(), p in 0u8..=128) {
            let max = if a.is_ipv4() { 32 } else { 128 };
            let net = IpNet::new(a, p % (max + 1)).unwrap();
            prop_assert_eq!(parse_interface_address(&net.to_string(), "f").unwrap(), net);
            let trunc = net.trunc();
            prop_assert_eq!(parse_network(&trunc.to_string(), "f").unwrap(), trunc);
            prop_assert_eq!(parse_allowed_ip(&trunc.to_string(), "f").unwrap(), trunc);
            prop_assert_eq!(parse_allowed_ip(&a.to_string(), "f").unwrap(), IpNet::from(a));
        }

        #[test]
        fn endpoints_display_parse_back(a in any_ip(), host in any_host(), port in 1u16..) {
            if endpoint_addr(a).is_ok() {
                let e = Endpoint::Addr(SocketAddr::new(a, port));
                prop_assert_eq!(e.to_string().parse::<Endpoint>().unwrap(), e);
            }
            let h = Endpoint::Host { host, port };
            prop_assert_eq!(h.to_string().parse::<Endpoint>().unwrap(), h);
        }

        #[test]
        fn numbers_display_parse_back(p in 1u16.., m in 576u16..=9000, k: u16, f: u32) {
            let port = ListenPort::new(p).unwrap();
            prop_assert_eq!(port.to_string().parse::<ListenPort>().unwrap(), port);
            let mtu = Mtu::new(m).unwrap();
            prop_assert_eq!(mtu.to_string().parse::<Mtu>().unwrap(), mtu);
            let ka = Keepalive::new(k).unwrap();
            prop_assert_eq!(ka.to_string().parse::<Keepalive>().unwrap(), ka);
            let mark = FwMark::new(f).unwrap();
            prop_assert_eq!(mark.to_string().parse::<FwMark>().unwrap(), mark);
            prop_assert_eq!(f.to_string().parse::<FwMark>().unwrap(), mark);
        }

        #[test]
        fn dns_display_parses_back(a in any_ip(), host in any_host()) {
            let d = DnsEntry::Addr(a);
            if dns_entry(&a.to_string()).is_ok() {
                prop_assert_eq!(d.to_string().parse::<DnsEntry>().unwrap(), d);
            }
            let s = DnsEntry::SearchDomain(host);
            prop_assert_eq!(s.to_string().parse::<DnsEntry>().unwrap(), s);
        }

        #[test]
        fn any_text_is_judged_without_panic(s in "\\PC{0,60}|[0-9a-fA-Fx.:/%\\[\\]]{0,45}") {
            let _ = parse_ip(&s, "f");
            let _ = parse_network(&s, "f");
            let _ = parse_interface_address(&s, "f");
            let _ = parse_allowed_ip(&s, "f");
            if let Ok(e) = Endpoint::parse(&s, "f") {
                prop_assert_eq!(e.to_string().parse::<Endpoint>().unwrap(), e);
            }
            if let Ok(d) = DnsEntry::parse(&s, "f") {
                prop_assert_eq!(d.to_string().parse::<DnsEntry>().unwrap(), d);
            }
            let _ = s.parse::<ListenPort>();
            let _ = s.parse::<Mtu>();
            let _ = s.parse::<Keepalive>();
            let _ = s.parse::<FwMark>();
        }
    }
}
