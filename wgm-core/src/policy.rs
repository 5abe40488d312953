//! The policy model of the firewall: what a server lets its peers do, and what each peer
//! may reach, how fast and how much.
//!
//! Validated value types with parsers from the CLI spellings and a stable serde form
//! (they are stored inside revisions):
//!
//! | type | CLI spelling | serde |
//! |---|---|---|
//! | [`FilterRule`] | `CIDR[:tcp\|udp\|icmp[:PORT[-PORT]]]`, IPv6 as `[2001:db8::/32]:tcp:443` | the canonical string |
//! | [`Rate`] | `10mbit`, `500kbit`, `1gbit`, `100kbps`, `2mbps` | the canonical string (`10mbit`) |
//! | [`Quota`] | `10GiB/30d`, `500MB/1d`, `1TiB/7d`, `100GB/12h`, `5GiB/2w` | the canonical string |
//! | [`QuotaAction`], [`Verdict`], [`Proto`] | `drop`/`report`, `allow`/`deny`, `tcp`/`udp`/`icmp` | the same words |
//! | [`ServerPolicy`], [`PeerPolicy`] | (fields set one by one) | structs, every field defaulted |
//!
//! [`ServerPolicy`] and [`PeerPolicy`] read back as their [`Default`] from stored data
//! written before they existed (`#[serde(default)]`: an absent field is the default),
//! so adding them to a revision needs no migration.
//!
//! ```
//! use wgm_core::policy::{FilterRule, PeerPolicy, Quota, Rate};
//!
//! let rule: FilterRule = "[2001:db8::/32]:tcp:443".parse()?;
//! assert_eq!(rule.to_string(), "[2001:db8::/32]:tcp:443");
//! let policy = PeerPolicy {
//!     allow: Some(vec![rule, "10.0.0.0/8".parse()?]),
//!     rate_up: Some("10mbit".parse::<Rate>()?),
//!     quota: Some("10GiB/30d".parse::<Quota>()?),
//!     ..PeerPolicy::default()
//! };
//! policy.validate("peer.policy")?;
//! let json = serde_json::to_string(&policy)?;
//! assert_eq!(serde_json::from_str::<PeerPolicy>(&json)?, policy);
//! // Data stored before policies existed reads back as the default.
//! assert_eq!(serde_json::from_str::<PeerPolicy>("{}")?, PeerPolicy::default());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use ipnet::IpNet;

use crate::names::InterfaceName;
use crate::{Error, Result};

type Check<T = ()> = std::result::Result<T, Cow<'static, str>>;

/// At most this many [`FilterRule`]s in one peer's allow list. Each becomes one rule of
/// the peer's chain, evaluated in order for every new packet from the peer; 256 covers
/// any hand-written list while keeping the chain's cost and its revision small.
pub const MAX_FILTER_RULES: usize = 256;

/// The largest [`Rate`]: 100 Gbit/s. Anything above is a typo (a missing `k` or `m`).
pub const MAX_RATE_BITS: u64 = 100_000_000_000;

/// The largest [`Quota`]: 1 PiB per period.
pub const MAX_QUOTA_BYTES: u64 = 1 << 50;

/// The longest [`Quota`] period: 366 days.
pub const MAX_QUOTA_PERIOD_SECS: u64 = 366 * DAY;

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
const WEEK: u64 = 7 * DAY;

/// Serde as the canonical text (`Display`), parsed with `FromStr` on the way in.
macro_rules! serde_as_text {
    ($name:ident, $field:literal) => {
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(
                &self,
                serializer: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(
                deserializer: D,
            ) -> std::result::Result<Self, D::Error> {
                let s = <Cow<'de, str>>::deserialize(deserializer)?;
                $name::parse(&s, $field).map_err(serde::de::Error::custom)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                $name::parse(s, $field)
            }
        }
    };
}

// ---------------------------------------------------------------------------------------
// Filter rules
// ---------------------------------------------------------------------------------------

/// The transport protocol a [`FilterRule`] matches.
///
/// `Icmp` is matched per family: ICMP for an IPv4 destination, `ICMPv6` for an IPv6 one.
///
/// ```
/// use wgm_core::policy::Proto;
/// assert_eq!("TCP".parse::<Proto>()?, Proto::Tcp);
/// assert_eq!(Proto::Icmp.to_string(), "icmp");
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP for IPv4 destinations, `ICMPv6` for IPv6 ones. Takes no ports.
    Icmp,
}

impl Proto {
    /// The protocol word (`tcp`, `udp`, `icmp`), ASCII case-insensitively.
    pub fn parse(s: &str, field: impl Into<Cow<'static, str>>) -> Result<Self> {
        Self::word(s).ok_or_else(|| Error::invalid(field, "the protocol must be tcp, udp or icmp"))
    }

    fn word(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("tcp") {
            Some(Proto::Tcp)
        } else if s.eq_ignore_ascii_case("udp") {
            Some(Proto::Udp)
        } else if s.eq_ignore_ascii_case("icmp") {
            Some(Proto::Icmp)
        } else {
            None
        }
    }

    /// The lowercase word.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

serde_as_text!(Proto, "proto");

/// An inclusive range of TCP or UDP ports, `first..=last`, both 1–65535. A single port is
/// a range of one.
///
/// ```
/// use wgm_core::policy::PortRange;
/// let r: PortRange = "8000-8080".parse()?;
/// assert_eq!((r.first(), r.last()), (8000, 8080));
/// assert_eq!("443".parse::<PortRange>()?.to_string(), "443");
/// assert!("443-80".parse::<PortRange>().is_err()); // reversed
/// assert!("0".parse::<PortRange>().is_err());
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// The range `first..=last`; refused when a port is 0 or the range is reversed.
    pub fn new(first: u16, last: u16) -> Result<Self> {
        Self::check(first, last).map_err(|reason| Error::invalid("ports", reason))
    }

    fn check(first: u16, last: u16) -> Check<Self> {
        if first == 0 || last == 0 {
            return Err("port 0 cannot be matched; ports are 1-65535".into());
        }
        if first > last {
            return Err(format!("the port range {first}-{last} is reversed (empty)").into());
        }
        Ok(PortRange { first, last })
    }

    /// One port.
    pub fn single(port: u16) -> Result<Self> {
        Self::new(port, port)
    }

    /// `PORT` or `PORT-PORT`, naming `field` in errors.
    pub fn parse(s: &str, field: impl Into<Cow<'static, str>>) -> Result<Self> {
        Self::parse_text(s).map_err(|reason| Error::invalid(field, reason))
    }

    fn parse_text(s: &str) -> Check<Self> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        Self::check(port_number(a)?, port_number(b)?)
    }

    /// The first port.
    pub fn first(self) -> u16 {
        self.first
    }

    /// The last port (equal to [`PortRange::first`] for a single port).
    pub fn last(self) -> u16 {
        self.last
    }

    /// Whether every port of `other` is in this range.
    pub fn covers(self, other: PortRange) -> bool {
        self.first <= other.first && other.last <= self.last
    }
}

fn port_number(s: &str) -> Check<u16> {
    if s.is_empty() {
        return Err("a port must not be empty".into());
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("a port must be decimal digits only".into());
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err("a port must not have leading zeros".into());
    }
    s.parse::<u16>()
        .map_err(|_| Cow::Borrowed("a port must be 1-65535"))
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

serde_as_text!(PortRange, "ports");

/// One destination a peer may reach: a network, optionally narrowed to a protocol and, for
/// TCP and UDP, to a port range.
///
/// ## Spelling
///
/// `CIDR[:PROTO[:PORT[-PORT]]]` with `PROTO` one of `tcp`, `udp`, `icmp`
/// (case-insensitive). `CIDR` is a network without host bits, or a bare address meaning
/// the host (`/32`, `/128`). IPv6 networks contain `:`, so they are written in brackets
/// when a protocol follows: `[2001:db8::/32]:tcp:443`. Without brackets an IPv6 text is
/// split **from the right, and only at a protocol word**: `2001:db8::/32:tcp:443` and
/// `2001:db8::/32:icmp` read as a network, a protocol and ports, while `2001:db8::1:443`
/// is the address `2001:db8::1:443` (no protocol word before `443`). Protocol words are not
/// hexadecimal, so the split never cuts an address.
///
/// `icmp` means ICMP for an IPv4 network and `ICMPv6` for an IPv6 one, and takes no ports.
///
/// Refused, naming the field: host bits set (`10.0.0.1/8`), ports with `icmp`, port 0,
/// a reversed range (`443-80`), an unknown protocol, an empty part.
///
/// Displays canonically (lowercase protocol, IPv6 in brackets when a protocol follows,
/// the prefix length always written), which is also its serde form.
///
/// ```
/// use wgm_core::policy::{FilterRule, Proto};
/// let r: FilterRule = "10.1.0.0/16:TCP:80-443".parse()?;
/// assert_eq!(r.proto, Some(Proto::Tcp));
/// assert_eq!(r.to_string(), "10.1.0.0/16:tcp:80-443");
/// assert_eq!("2001:db8::/32:udp:53".parse::<FilterRule>()?.to_string(), "[2001:db8::/32]:udp:53");
/// assert_eq!("192.0.2.7".parse::<FilterRule>()?.to_string(), "192.0.2.7/32");
/// assert!("10.0.0.1/8".parse::<FilterRule>().is_err()); // host bits
/// assert!("10.0.0.0/8:icmp:1".parse::<FilterRule>().is_err()); // ports with icmp
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilterRule {
    /// The destination network (no host bits).
    pub dst: IpNet,
    /// The protocol; `None` matches every protocol.
    pub proto: Option<Proto>,
    /// The destination ports (only with TCP or UDP); `None` matches every port.
    pub ports: Option<PortRange>,
}

impl FilterRule {
    /// A rule for every protocol to `dst`; refused when `dst` has host bits.
    pub fn to_network(dst: IpNet) -> Result<Self> {
        Self::new(dst, None, None)
    }

    /// A rule from its parts, checked as [`FilterRule::parse`] checks them.
    pub fn new(dst: IpNet, proto: Option<Proto>, ports: Option<PortRange>) -> Result<Self> {
        let rule = FilterRule { dst, proto, ports };
        rule.validate("rule")?;
        Ok(rule)
    }

    /// Check the invariants (for values built field by field): no host bits, ports only
    /// with TCP or UDP.
    pub fn validate(&self, field: impl Into<Cow<'static, str>>) -> Result<()> {
        self.check().map_err(|reason| Error::invalid(field, reason))
    }

    fn check(&self) -> Check {
        if self.dst.trunc() != self.dst {
            return Err("the destination network must not have host bits set".into());
        }
        match (self.proto, self.ports) {
            (Some(Proto::Icmp), Some(_)) => {
                Err("ports cannot be given with icmp (ICMPv6 for an IPv6 destination)".into())
            }
            (None, Some(_)) => Err("ports need a protocol (tcp or udp)".into()),
            _ => Ok(()),
        }
    }

    /// Parse the CLI spelling (see the type's docs), naming `field` in errors.
    pub fn parse(s: &str, field: impl Into<Cow<'static, str>>) -> Result<Self> {
        Self::parse_text(s).map_err(|reason| Error::invalid(field, reason))
    }

    fn parse_text(s: &str) -> Check<Self> {
        if s.is_empty() {
            return Err("a rule must not be empty; write CIDR[:tcp|udp|icmp[:PORT[-PORT]]]".into());
        }
        let (net, rest): (&str, Vec<&str>) = if let Some(inner) = s.strip_prefix('[') {
            let Some((net, tail)) = inner.split_once(']') else {
                return Err("a '[' must be closed by ']'".into());
            };
            if tail.is_empty() {
                (net, Vec::new())
            } else if let Some(tail) = tail.strip_prefix(':') {
                (net, tail.split(':').collect())
            } else {
                return Err("']' must be followed by ':' and a protocol".into());
            }
        } else if s.split(':').next().is_some_and(|first| first.contains('.')) {
            // IPv4 (an IPv6 text has a ':' before any '.'): `net[:proto[:ports]]`.
            let mut parts = s.split(':');
            let net = parts.next().unwrap_or_default();
            (net, parts.collect())
        } else {
            split_unbracketed_v6(s)
        };
        let dst = parse_destination(net)?;
        let proto = match rest.first() {
            None => None,
            Some(word) => Some(
                Proto::word(word).ok_or(Cow::Borrowed("the protocol must be tcp, udp or icmp"))?,
            ),
        };
        let ports = match rest.get(1) {
            None => None,
            Some(p) => Some(PortRange::parse_text(p)?),
        };
        if rest.len() > 2 {
            return Err("too many ':' parts; write CIDR[:tcp|udp|icmp[:PORT[-PORT]]]".into());
        }
        let rule = FilterRule { dst, proto, ports };
        rule.check()?;
        Ok(rule)
    }

    /// Whether every packet this rule matches is also matched by `self`.
    ///
    /// ```
    /// use wgm_core::policy::FilterRule;
    /// let wide: FilterRule = "10.0.0.0/8".parse()?;
    /// assert!(wide.covers(&"10.1.0.0/16:tcp:443".parse()?));
    /// assert!(!wide.covers(&"192.0.2.0/24".parse()?));
    /// # Ok::<(), wgm_core::Error>(())
    /// ```
    pub fn covers(&self, other: &FilterRule) -> bool {
        if !self.dst.contains(&other.dst) {
            return false;
        }
        match (self.proto, other.proto) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) if a != b => false,
            (Some(_), Some(_)) => match (self.ports, other.ports) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(a), Some(b)) => a.covers(b),
            },
        }
    }

    /// Whether the destination is IPv6.
    pub fn is_ipv6(&self) -> bool {
        matches!(self.dst, IpNet::V6(_))
    }
}

/// Split an IPv6 rule without brackets from the right, at protocol words only.
fn split_unbracketed_v6(s: &str) -> (&str, Vec<&str>) {
    if let Some((head, last)) = s.rsplit_once(':') {
        if Proto::word(last).is_some() {
            return (head, vec![last]);
        }
        if let Some((net, word)) = head.rsplit_once(':') {
            if Proto::word(word).is_some() {
                return (net, vec![word, last]);
            }
        }
    }
    (s, Vec::new())
}

fn parse_destination(s: &str) -> Check<IpNet> {
    let field = "rule";
    let net = if s.contains('/') {
        crate::net::parse_interface_address(s, field)
    } else {
        crate::net::parse_ip(s, field).map(IpNet::from)
    };
    net.map_err(|e| match e {
        Error::InvalidInput { reason, .. } => reason,
        other => other.to_string().into(),
    })
}

impl fmt::Display for FilterRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.dst, self.proto) {
            (IpNet::V6(net), Some(_)) => write!(f, "[{net}]")?,
            (net, _) => write!(f, "{net}")?,
        }
        if let Some(proto) = self.proto {
            write!(f, ":{proto}")?;
        }
        if let Some(ports) = self.ports {
            write!(f, ":{ports}")?;
        }
        Ok(())
    }
}

serde_as_text!(FilterRule, "rule");

/// Check a peer's allow list: at most [`MAX_FILTER_RULES`] rules, each valid, none a
/// duplicate of another and none made redundant by another (covered by it, see
/// [`FilterRule::covers`]). Errors name `field[i]`.
///
/// ```
/// use wgm_core::policy::{check_filter_rules, FilterRule};
/// let rules: Vec<FilterRule> = vec!["10.0.0.0/8".parse()?, "10.1.0.0/16:tcp:22".parse()?];
/// let e = check_filter_rules(&rules, "peer.allow").unwrap_err();
/// assert_eq!(e.to_string(), "invalid peer.allow[1]: is already allowed by peer.allow[0] (10.0.0.0/8)");
/// # Ok::<(), wgm_core::Error>(())
/// ```
pub fn check_filter_rules(rules: &[FilterRule], field: &str) -> Result<()> {
    if rules.len() > MAX_FILTER_RULES {
        return Err(Error::invalid(
            field.to_owned(),
            format!("at most {MAX_FILTER_RULES} rules per peer"),
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        rule.validate(format!("{field}[{i}]"))?;
        for (j, other) in rules.iter().enumerate() {
            if i == j {
                continue;
            }
            let duplicate = other == rule;
            // Of two identical rules, the later one is the duplicate; of a covering pair,
            // the covered one is redundant.
            if (duplicate && j < i) || (!duplicate && other.covers(rule)) {
                let reason = if duplicate {
                    format!("duplicates {field}[{j}]")
                } else {
                    format!("is already allowed by {field}[{j}] ({other})")
                };
                return Err(Error::invalid(format!("{field}[{i}]"), reason));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Rates
// ---------------------------------------------------------------------------------------

/// A bandwidth, in bits per second: 8 bit/s to 100 Gbit/s ([`MAX_RATE_BITS`]), a whole
/// number of bytes per second (the kernel's limits count bytes).
///
/// ## Units (case-insensitive, decimal, no spaces, integers only)
///
/// | unit | meaning |
/// |---|---|
/// | `bit`, `kbit`, `mbit`, `gbit` | bits per second, ×1, ×1000, ×10⁶, ×10⁹ |
/// | `bps`, `kbps`, `mbps`, `gbps` | **bytes** per second (as `tc` spells them), ×8 bits, ×1000… |
///
/// Displays (and serializes) in the largest bit unit that divides it: `100kbps` is
/// `800kbit`.
///
/// ```
/// use wgm_core::policy::Rate;
/// let r: Rate = "10mbit".parse()?;
/// assert_eq!(r.bits_per_second(), 10_000_000);
/// assert_eq!(r.bytes_per_second(), 1_250_000);
/// assert_eq!("100kbps".parse::<Rate>()?.to_string(), "800kbit");
/// assert!("0mbit".parse::<Rate>().is_err());
/// assert!("200gbit".parse::<Rate>().is_err());
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rate(u64);

impl Rate {
    /// A rate of `bits` per second, checked.
    pub fn from_bits(bits: u64) -> Result<Self> {
        Self::check(bits).map_err(|reason| Error::invalid("rate", reason))
    }

    /// A rate of `bytes` per second, checked.
    pub fn from_bytes(bytes: u64) -> Result<Self> {
        let bits = bytes
            .checked_mul(8)
            .ok_or_else(|| Error::invalid("rate", "must be at most 100gbit"))?;
        Self::from_bits(bits)
    }

    fn check(bits: u64) -> Check<Self> {
        if bits == 0 {
            return Err("must not be 0 (no limit is written by leaving the rate unset)".into());
        }
        if bits > MAX_RATE_BITS {
            return Err("must be at most 100gbit".into());
        }
        if !bits.is_multiple_of(8) {
            return Err("must be a whole number of bytes per second (a multiple of 8 bits)".into());
        }
        Ok(Rate(bits))
    }

    /// Parse the text form (see the type's docs), naming `field` in errors.
    pub fn parse(s: &str, field: impl Into<Cow<'static, str>>) -> Result<Self> {
        Self::parse_text(s).map_err(|reason| Error::invalid(field, reason))
    }

    fn parse_text(s: &str) -> Check<Self> {
        let (number, unit) = split_number(s)?;
        let lower = unit.to_ascii_lowercase();
        let factor: u64 =
            match lower.as_str() {
                "bit" => 1,
                "kbit" => 1_000,
                "mbit" => 1_000_000,
                "gbit" => 1_000_000_000,
                "bps" => 8,
                "kbps" => 8_000,
                "mbps" => 8_000_000,
                "gbps" => 8_000_000_000,
                "" => return Err(
                    "a rate needs a unit: bit, kbit, mbit, gbit, or bps, kbps, mbps, gbps (bytes)"
                        .into(),
                ),
                _ => {
                    return Err(
                        "the unit must be bit, kbit, mbit, gbit, or bps, kbps, mbps, gbps (bytes)"
                            .into(),
                    )
                }
            };
        let bits = number
            .checked_mul(factor)
            .ok_or(Cow::Borrowed("must be at most 100gbit"))?;
        Self::check(bits)
    }

    /// Bits per second.
    pub fn bits_per_second(self) -> u64 {
        self.0
    }

    /// Bytes per second (exact: a rate is a whole number of bytes).
    pub fn bytes_per_second(self) -> u64 {
        self.0 / 8
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (factor, unit) in [
            (1_000_000_000, "gbit"),
            (1_000_000, "mbit"),
            (1_000, "kbit"),
        ] {
            if self.0.is_multiple_of(factor) {
                return write!(f, "{}{unit}", self.0 / factor);
            }
        }
        write!(f, "{}bit", self.0)
    }
}

serde_as_text!(Rate, "rate");

/// `123abc` into `(123, "abc")`: decimal digits, no leading zeros, then the rest.
fn split_number(s: &str) -> Check<(u64, &str)> {
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    let (digits, rest) = s.split_at(end);
    if digits.is_empty() {
        return Err("must start with a decimal number".into());
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return Err("the number must not have leading zeros".into());
    }
    let n = digits
        .parse::<u64>()
        .map_err(|_| Cow::Borrowed("the number is too large"))?;
    Ok((n, rest))
}

// ---------------------------------------------------------------------------------------
// Quotas
// ---------------------------------------------------------------------------------------

/// A traffic volume per period: `bytes` (both directions together) every `period_secs`.
///
/// ## Spelling: `SIZE/PERIOD`
///
/// `SIZE` is a whole number with a unit: `B`; `KB`, `MB`, `GB`, `TB` (×1000); `KiB`,
/// `MiB`, `GiB`, `TiB` (×1024). `PERIOD` is a whole number of hours, days or weeks: `12h`,
/// `30d`, `2w`. Units are case-insensitive. Refused: 0 bytes or a zero period, more than
/// 1 PiB ([`MAX_QUOTA_BYTES`]), a period longer than 366 days.
///
/// Displays (and serializes) with the largest unit, binary or decimal, that divides the
/// size exactly, and the largest period unit that divides the period.
///
/// ```
/// use wgm_core::policy::Quota;
/// let q: Quota = "10GiB/30d".parse()?;
/// assert_eq!(q.bytes(), 10 << 30);
/// assert_eq!(q.period_secs(), 30 * 86_400);
/// assert_eq!("500MB/1d".parse::<Quota>()?.to_string(), "500MB/1d");
/// assert_eq!("1tib/14d".parse::<Quota>()?.to_string(), "1TiB/2w");
/// assert!("0GiB/30d".parse::<Quota>().is_err());
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Quota {
    bytes: u64,
    period_secs: u64,
}

impl Quota {
    /// `bytes` every `period_secs`, checked.
    pub fn new(bytes: u64, period_secs: u64) -> Result<Self> {
        Self::check(bytes, period_secs).map_err(|reason| Error::invalid("quota", reason))
    }

    fn check(bytes: u64, period_secs: u64) -> Check<Self> {
        if bytes == 0 {
            return Err("the size must not be 0".into());
        }
        if bytes > MAX_QUOTA_BYTES {
            return Err("the size must be at most 1PiB".into());
        }
        if period_secs == 0 {
            return Err("the period must not be 0".into());
        }
        if period_secs > MAX_QUOTA_PERIOD_SECS {
            return Err("the period must be at most 366d".into());
        }
        if !period_secs.is_multiple_of(HOUR) {
            return Err("the period must be a whole number of hours".into());
        }
        Ok(Quota { bytes, period_secs })
    }

    /// Parse `SIZE/PERIOD` (see the type's docs), naming `field` in errors.
    pub fn parse(s: &str, field: impl Into<Cow<'static, str>>) -> Result<Self> {
        Self::parse_text(s).map_err(|reason| Error::invalid(field, reason))
    }

    fn parse_text(s: &str) -> Check<Self> {
        let Some((size, period)) = s.split_once('/') else {
            return Err("a quota is SIZE/PERIOD, e.g. 10GiB/30d".into());
        };
        let (n, unit) = split_number(size)?;
        let factor: u64 = match unit.to_ascii_lowercase().as_str() {
            "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            _ => {
                return Err("the size unit must be B, KB, MB, GB, TB, KiB, MiB, GiB or TiB".into())
            }
        };
        let bytes = n
            .checked_mul(factor)
            .ok_or(Cow::Borrowed("the size must be at most 1PiB"))?;
        let (p, unit) = split_number(period)?;
        let secs: u64 = match unit.to_ascii_lowercase().as_str() {
            "h" => HOUR,
            "d" => DAY,
            "w" => WEEK,
            _ => return Err("the period unit must be h, d or w".into()),
        };
        let period_secs = p
            .checked_mul(secs)
            .ok_or(Cow::Borrowed("the period must be at most 366d"))?;
        Self::check(bytes, period_secs)
    }

    /// Bytes allowed per period.
    pub fn bytes(self) -> u64 {
        self.bytes
    }

    /// The period, in seconds (a whole number of hours).
    pub fn period_secs(self) -> u64 {
        self.period_secs
    }

    /// The start (Unix seconds) of the period that contains `now`, for periods laid end to
    /// end from `start`. Before `start` the first period is counting already (it starts at
    /// `start`).
    ///
    /// ```
    /// use wgm_core::policy::Quota;
    /// let q: Quota = "1GiB/1d".parse()?;
    /// assert_eq!(q.window_start(1_000, 1_000 + 86_400 * 3 + 5), 1_000 + 86_400 * 3);
    /// assert_eq!(q.window_start(1_000, 10), 1_000);
    /// # Ok::<(), wgm_core::Error>(())
    /// ```
    pub fn window_start(self, start: u64, now: u64) -> u64 {
        if now <= start {
            return start;
        }
        start + (now - start) / self.period_secs * self.period_secs
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 8] = [
            (1 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
            (1_000_000_000_000, "TB"),
            (1_000_000_000, "GB"),
            (1_000_000, "MB"),
            (1_000, "KB"),
        ];
        let (factor, unit) = UNITS
            .iter()
            .copied()
            .filter(|(factor, _)| self.bytes.is_multiple_of(*factor))
            .max_by_key(|(factor, _)| *factor)
            .unwrap_or((1, "B"));
        write!(f, "{}{unit}/", self.bytes / factor)?;
        let (factor, unit) = [(WEEK, "w"), (DAY, "d")]
            .into_iter()
            .find(|(factor, _)| self.period_secs.is_multiple_of(*factor))
            .unwrap_or((HOUR, "h"));
        write!(f, "{}{unit}", self.period_secs / factor)
    }
}

serde_as_text!(Quota, "quota");

/// What happens to a peer's traffic once its [`Quota`] is used up, until the period ends.
///
/// ```
/// use wgm_core::policy::QuotaAction;
/// assert_eq!("report".parse::<QuotaAction>()?, QuotaAction::Report);
/// assert_eq!(QuotaAction::default(), QuotaAction::Drop);
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaAction {
    /// Drop the peer's forwarded traffic (both directions). The default.
    #[default]
    Drop,
    /// Let traffic flow; only count it (the used bytes are reported).
    Report,
}

impl QuotaAction {
    /// `drop` or `report`, naming `field` in errors.
    pub fn parse(s: &str, field: impl Into<Cow<'static, str>>) -> Result<Self> {
        if s.eq_ignore_ascii_case("drop") {
            Ok(QuotaAction::Drop)
        } else if s.eq_ignore_ascii_case("report") {
            Ok(QuotaAction::Report)
        } else {
            Err(Error::invalid(field, "must be drop or report"))
        }
    }
}

impl fmt::Display for QuotaAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuotaAction::Drop => "drop",
            QuotaAction::Report => "report",
        })
    }
}

serde_as_text!(QuotaAction, "quota_action");

/// What a server does with forwarded traffic no rule decides: a peer without an allow
/// list of its own, and new connections from elsewhere into the tunnel.
///
/// ```
/// use wgm_core::policy::Verdict;
/// assert_eq!("deny".parse::<Verdict>()?, Verdict::Deny);
/// assert_eq!(Verdict::default(), Verdict::Allow);
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// Accept. The default: a server without a policy forwards as it did before policies
    /// existed.
    #[default]
    Allow,
    /// Drop.
    Deny,
}

impl Verdict {
    /// `allow` or `deny`, naming `field` in errors.
    pub fn parse(s: &str, field: impl Into<Cow<'static, str>>) -> Result<Self> {
        if s.eq_ignore_ascii_case("allow") {
            Ok(Verdict::Allow)
        } else if s.eq_ignore_ascii_case("deny") {
            Ok(Verdict::Deny)
        } else {
            Err(Error::invalid(field, "must be allow or deny"))
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        })
    }
}

serde_as_text!(Verdict, "default_verdict");

// ---------------------------------------------------------------------------------------
// Server and peer policies
// ---------------------------------------------------------------------------------------

/// A server's firewall policy: whether its peers' traffic is forwarded at all, source NAT
/// towards the outside per family, peer-to-peer traffic, and the default verdict.
///
/// The default (and what stored servers without a policy read back as) forwards, allows
/// by default, masquerades nothing and **refuses peer-to-peer traffic**.
///
/// ```
/// use wgm_core::names::InterfaceName;
/// use wgm_core::policy::{ServerPolicy, Verdict};
/// let p = ServerPolicy {
///     masquerade4: Some(InterfaceName::new("eth0")?),
///     default_verdict: Verdict::Deny,
///     ..ServerPolicy::default()
/// };
/// assert!(p.forwarding && !p.peer_to_peer);
/// let back: ServerPolicy = serde_json::from_str(&serde_json::to_string(&p)?)?;
/// assert_eq!(back, p);
/// assert_eq!(serde_json::from_str::<ServerPolicy>("{}")?, ServerPolicy::default());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ServerPolicy {
    /// Forward the peers' traffic to other interfaces and back (default `true`). When
    /// `false` only peer-to-peer traffic (if allowed) is forwarded. Turning the kernel's
    /// forwarding on (`net.ipv4.ip_forward`) is the host's business, not the firewall's.
    pub forwarding: bool,
    /// Masquerade the peers' IPv4 traffic leaving through this interface.
    pub masquerade4: Option<InterfaceName>,
    /// Masquerade the peers' IPv6 traffic leaving through this interface.
    pub masquerade6: Option<InterfaceName>,
    /// Let peers reach each other through the server (default `false`). A peer with an
    /// allow list ([`PeerPolicy::allow`]) still reaches only what its list names, other
    /// peers included; peers without one reach every peer, whatever the default verdict.
    pub peer_to_peer: bool,
    /// The verdict for traffic nothing else decides (default [`Verdict::Allow`]).
    pub default_verdict: Verdict,
}

impl Default for ServerPolicy {
    fn default() -> Self {
        ServerPolicy {
            forwarding: true,
            masquerade4: None,
            masquerade6: None,
            peer_to_peer: false,
            default_verdict: Verdict::Allow,
        }
    }
}

/// One peer's firewall policy: what it may reach, its rates and its quota.
///
/// The peer's traffic is everything from or to any address it may send from: its tunnel
/// addresses, its delegated prefix and the networks routed to it (its server-side
/// allowed IPs; see [`crate::reconcile::desired_firewall`]). So a host behind the peer
/// is held to the peer's allow list, rates and quota, and counted in its counters.
///
/// `allow: None` leaves the peer to the server's [`ServerPolicy::default_verdict`];
/// `Some(rules)` allows exactly those destinations (and replies to them) and drops the
/// rest, `Some(vec![])` included. Rates and the quota are unset by default.
///
/// The quota counts both directions together, in periods of [`Quota::period_secs`] laid
/// end to end from `quota_start` (Unix seconds); see [`PeerPolicy::quota_window`].
///
/// ```
/// use wgm_core::policy::{PeerPolicy, QuotaAction};
/// let p = PeerPolicy { quota: Some("1GiB/1d".parse()?), quota_start: 86_400, ..PeerPolicy::default() };
/// assert_eq!(p.quota_action, QuotaAction::Drop);
/// assert_eq!(p.quota_window(86_400 * 5 + 7), Some(86_400 * 5));
/// assert_eq!(PeerPolicy::default().quota_window(0), None);
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PeerPolicy {
    /// Destinations the peer may reach; `None` follows the server's default.
    pub allow: Option<Vec<FilterRule>>,
    /// The most the peer may send (through the server), if limited.
    pub rate_up: Option<Rate>,
    /// The most the peer may receive (through the server), if limited.
    pub rate_down: Option<Rate>,
    /// The traffic volume per period, if limited.
    pub quota: Option<Quota>,
    /// What happens once the quota is used up.
    pub quota_action: QuotaAction,
    /// When the first quota period starts (Unix seconds).
    pub quota_start: u64,
}

impl PeerPolicy {
    /// Check the allow list ([`check_filter_rules`]), naming `field.allow[i]`.
    pub fn validate(&self, field: &str) -> Result<()> {
        if let Some(rules) = &self.allow {
            check_filter_rules(rules, &format!("{field}.allow"))?;
        }
        Ok(())
    }

    /// The start of the quota period that contains `now` (Unix seconds), or `None` without
    /// a quota.
    pub fn quota_window(&self, now: u64) -> Option<u64> {
        self.quota.map(|q| q.window_start(self.quota_start, now))
    }

    /// Whether the peer's destinations are restricted by an allow list of its own.
    pub fn has_allow_list(&self) -> bool {
        self.allow.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> FilterRule {
        s.parse().unwrap()
    }

    fn err(s: &str) -> String {
        s.parse::<FilterRule>().unwrap_err().to_string()
    }

    #[test]
    fn filter_rules_parse_and_print_canonically() {
        for (input, canonical) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.0.0.0/8:tcp", "10.0.0.0/8:tcp"),
            ("10.0.0.0/8:Udp:53", "10.0.0.0/8:udp:53"),
            ("10.0.0.0/8:tcp:80-443", "10.0.0.0/8:tcp:80-443"),
            ("10.0.0.0/8:tcp:443-443", "10.0.0.0/8:tcp:443"),
            ("192.0.2.7", "192.0.2.7/32"),
            ("0.0.0.0/0:icmp", "0.0.0.0/0:icmp"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("[2001:db8::/32]", "2001:db8::/32"),
            ("[2001:db8::/32]:tcp:443", "[2001:db8::/32]:tcp:443"),
            ("2001:db8::/32:tcp:443", "[2001:db8::/32]:tcp:443"),
            ("2001:db8::/32:icmp", "[2001:db8::/32]:icmp"),
            ("::/0:udp", "[::/0]:udp"),
            ("2001:db8::1:443", "2001:db8::1:443/128"),
            ("fd00::1", "fd00::1/128"),
        ] {
            let r = rule(input);
            assert_eq!(r.to_string(), canonical, "{input}");
            assert_eq!(rule(canonical), r, "{canonical} reads back");
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<FilterRule>(&json).unwrap(), r);
        }
        let r = rule("2001:db8::/32:icmp");
        assert!(r.is_ipv6());
        assert_eq!(r.proto, Some(Proto::Icmp));
    }

    #[test]
    fn filter_rules_refuse_with_the_field_and_rule() {
        assert_eq!(
            FilterRule::parse("10.0.0.1/8", "peer.allow[3]")
                .unwrap_err()
                .to_string(),
            "invalid peer.allow[3]: the destination network must not have host bits set"
        );
        for (input, needle) in [
            ("", "must not be empty"),
            ("10.0.0.0/8:icmp:1", "ports cannot be given with icmp"),
            ("[2001:db8::/32]:icmp:1", "ports cannot be given with icmp"),
            ("10.0.0.0/8:tcp:0", "port 0"),
            ("10.0.0.0/8:tcp:443-80", "reversed"),
            ("10.0.0.0/8:tcp:65536", "1-65535"),
            ("10.0.0.0/8:tcp:", "must not be empty"),
            ("10.0.0.0/8:sctp", "tcp, udp or icmp"),
            ("10.0.0.0/8:tcp:1:2", "too many"),
            ("[2001:db8::/32", "closed"),
            ("[2001:db8::/32]tcp", "followed by ':'"),
            ("2001:db8::1/32:tcp", "host bits"),
            ("010.0.0.0/8", "leading zero"),
            ("10.0.0.0/33", "at most 32"),
            ("10.0.0.0/8:tcp:08", "leading zeros"),
        ] {
            let e = err(input);
            assert!(e.contains(needle), "{input:?}: {e}");
            assert!(e.starts_with("invalid rule: "), "{e}");
        }
    }

    #[test]
    fn rule_lists_refuse_duplicates_redundancy_and_excess() {
        let ok = vec![
            rule("10.0.0.0/8:tcp:443"),
            rule("10.0.0.0/8:udp:53"),
            rule("fd00::/8"),
        ];
        check_filter_rules(&ok, "p.allow").unwrap();
        let dup = vec![
            rule("10.0.0.0/8:tcp:443"),
            rule("fd00::/8"),
            rule("10.0.0.0/8:tcp:443"),
        ];
        assert_eq!(
            check_filter_rules(&dup, "p.allow").unwrap_err().to_string(),
            "invalid p.allow[2]: duplicates p.allow[0]"
        );
        let covered = vec![rule("10.1.0.0/16:tcp:22"), rule("10.0.0.0/8:tcp")];
        assert_eq!(
            check_filter_rules(&covered, "p.allow")
                .unwrap_err()
                .to_string(),
            "invalid p.allow[0]: is already allowed by p.allow[1] (10.0.0.0/8:tcp)"
        );
        // Different families and protocols never cover each other.
        let mixed = vec![
            rule("0.0.0.0/0:tcp"),
            rule("::/0:tcp"),
            rule("0.0.0.0/0:icmp"),
        ];
        check_filter_rules(&mixed, "p.allow").unwrap();
        let many: Vec<FilterRule> = (0..=MAX_FILTER_RULES)
            .map(|i| rule(&format!("10.{}.{}.0/24", i / 256, i % 256)))
            .collect();
        assert!(check_filter_rules(&many, "p.allow")
            .unwrap_err()
            .to_string()
            .contains("at most 256"));
        check_filter_rules(&many[..MAX_FILTER_RULES], "p.allow").unwrap();
        let bad = FilterRule {
            dst: "10.0.0.1/8".parse().unwrap(),
            proto: None,
            ports: None,
        };
        assert!(check_filter_rules(&[bad], "p.allow")
            .unwrap_err()
            .to_string()
            .starts_with("invalid p.allow[0]: "));
    }

    #[test]
    fn rates() {
        for (input, bits, canonical) in [
            ("10mbit", 10_000_000, "10mbit"),
            ("500kbit", 500_000, "500kbit"),
            ("1gbit", 1_000_000_000, "1gbit"),
            ("100kbps", 800_000, "800kbit"),
            ("2MBPS", 16_000_000, "16mbit"),
            ("1bps", 8, "8bit"),
            ("12500mbps", MAX_RATE_BITS, "100gbit"),
            ("1504bit", 1504, "1504bit"),
        ] {
            let r: Rate = input.parse().unwrap();
            assert_eq!(r.bits_per_second(), bits, "{input}");
            assert_eq!(r.to_string(), canonical);
            assert_eq!(canonical.parse::<Rate>().unwrap(), r);
            assert_eq!(
                serde_json::from_str::<Rate>(&serde_json::to_string(&r).unwrap()).unwrap(),
                r
            );
        }
        for bad in [
            "0mbit",
            "101gbit",
            "12501mbps",
            "10",
            "mbit",
            "10 mbit",
            "10mb",
            "1bit",
            "01mbit",
            "99999999999999999999gbit",
        ] {
            let e = Rate::parse(bad, "peer.rate_up").unwrap_err().to_string();
            assert!(e.starts_with("invalid peer.rate_up: "), "{bad}: {e}");
        }
        assert_eq!(Rate::from_bytes(125_000).unwrap().to_string(), "1mbit");
        assert!(Rate::from_bytes(u64::MAX).is_err());
    }

    #[test]
    fn quotas() {
        for (input, bytes, period, canonical) in [
            ("10GiB/30d", 10u64 << 30, 30 * DAY, "10GiB/30d"),
            ("500MB/1d", 500_000_000, DAY, "500MB/1d"),
            ("1TiB/7d", 1 << 40, WEEK, "1TiB/1w"),
            ("100gb/12h", 100_000_000_000, 12 * HOUR, "100GB/12h"),
            ("1024B/48h", 1024, 2 * DAY, "1KiB/2d"),
            ("1500B/1h", 1500, HOUR, "1500B/1h"),
            ("1024TiB/366d", MAX_QUOTA_BYTES, 366 * DAY, "1024TiB/366d"),
        ] {
            let q: Quota = input.parse().unwrap();
            assert_eq!((q.bytes(), q.period_secs()), (bytes, period), "{input}");
            assert_eq!(q.to_string(), canonical);
            assert_eq!(canonical.parse::<Quota>().unwrap(), q);
        }
        for bad in [
            "0GiB/30d",
            "1GiB/0d",
            "1GiB",
            "1GiB/30",
            "1GiB/30m",
            "1PiB/1d",
            "1025TiB/1d",
            "1GiB/367d",
            "GiB/1d",
            "1GiB/53w",
        ] {
            let e = Quota::parse(bad, "peer.quota").unwrap_err().to_string();
            assert!(e.starts_with("invalid peer.quota: "), "{bad}: {e}");
        }
        let q: Quota = "1GiB/1d".parse().unwrap();
        assert_eq!(q.window_start(100, 100), 100);
        assert_eq!(q.window_start(100, 100 + DAY - 1), 100);
        assert_eq!(q.window_start(100, 100 + DAY), 100 + DAY);
    }

    #[test]
    fn policies_default_and_round_trip() {
        let server = ServerPolicy::default();
        assert!(server.forwarding);
        assert!(!server.peer_to_peer);
        assert_eq!(server.default_verdict, Verdict::Allow);
        let partial: ServerPolicy = serde_json::from_str(r#"{"peer_to_peer":true}"#).unwrap();
        assert!(partial.peer_to_peer && partial.forwarding);

        let peer = PeerPolicy {
            allow: Some(vec![
                rule("[2001:db8::/32]:tcp:443"),
                rule("10.0.0.0/8:icmp"),
            ]),
            rate_up: Some("10mbit".parse().unwrap()),
            rate_down: Some("20mbit".parse().unwrap()),
            quota: Some("10GiB/30d".parse().unwrap()),
            quota_action: QuotaAction::Report,
            quota_start: 1_700_000_000,
        };
        let json = serde_json::to_string(&peer).unwrap();
        assert_eq!(
            json,
            r#"{"allow":["[2001:db8::/32]:tcp:443","10.0.0.0/8:icmp"],"rate_up":"10mbit","rate_down":"20mbit","quota":"10GiB/30d","quota_action":"report","quota_start":1700000000}"#
        );
        assert_eq!(serde_json::from_str::<PeerPolicy>(&json).unwrap(), peer);
        assert_eq!(
            serde_json::from_str::<PeerPolicy>("{}").unwrap(),
            PeerPolicy::default()
        );
        // Invalid stored values are refused, not silently accepted.
        assert!(serde_json::from_str::<PeerPolicy>(r#"{"rate_up":"0mbit"}"#).is_err());
        assert!(serde_json::from_str::<PeerPolicy>(r#"{"allow":["10.0.0.1/8"]}"#).is_err());
        let s = ServerPolicy {
            masquerade6: Some(InterfaceName::new("eth0").unwrap()),
            default_verdict: Verdict::Deny,
            ..ServerPolicy::default()
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"forwarding":true,"masquerade4":null,"masquerade6":"eth0","peer_to_peer":false,"default_verdict":"deny"}"#
        );
        assert_eq!(serde_json::from_str::<ServerPolicy>(&json).unwrap(), s);
    }

    #[test]
    fn words() {
        assert_eq!(QuotaAction::parse("DROP", "a").unwrap(), QuotaAction::Drop);
        assert!(QuotaAction::parse("block", "a").is_err());
        assert_eq!(Verdict::parse("Allow", "a").unwrap(), Verdict::Allow);
        assert!(Verdict::parse("reject", "a").is_err());
        assert!(Proto::parse("gre", "a").is_err());
    }
}
