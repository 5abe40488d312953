//! The typed layer: a wg-quick file as values of the domain types.

use std::fmt;
use std::str::FromStr;

use ipnet::IpNet;

use super::document::{is_forbidden_char, Document, Key, Line, LineKind, SectionKind};
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::net::{self, DnsEntry, Endpoint, FwMark, Keepalive, ListenPort, Mtu};
use crate::{Error, Result};

/// A whole wg-quick file: one `[Interface]` and its `[Peer]`s.
///
/// Built by [`parse`](super::parse) from text, or field by field by a caller, and turned
/// into text by [`render`](super::render). For every configuration `render` accepts,
/// `parse(render(x)) == x`.
///
/// ```
/// use wgm_core::keys::PrivateKey;
/// use wgm_core::wgquick::{self, PeerSection, ParseOptions, WgQuickConfig};
///
/// let mut cfg = WgQuickConfig::default();
/// cfg.interface.private_key = Some(PrivateKey::generate());
/// cfg.interface.addresses.push("fd00:1::1/64".parse().unwrap());
/// cfg.interface.listen_port = Some("51820".parse()?);
/// let mut peer = PeerSection::new(PrivateKey::generate().public_key());
/// peer.name = Some("alice".into());
/// peer.allowed_ips.push("fd00:1::2/128".parse().unwrap());
/// cfg.peers.push(peer);
///
/// let text = wgquick::render(&cfg)?;
/// assert!(text.contains("[Peer]\n# Name = alice\n"));
/// assert_eq!(wgquick::parse(&text, &ParseOptions::default())?, cfg);
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WgQuickConfig {
    /// Comments at the top of the file that belong to no section (separated from the
    /// first section by a blank line), without the `#` and surrounding spaces.
    pub comments: Vec<String>,
    /// The `[Interface]` section.
    pub interface: InterfaceSection,
    /// The `[Peer]` sections, in file order.
    pub peers: Vec<PeerSection>,
}

/// The `[Interface]` section: `wg(8)` keys and the keys only `wg-quick(8)` reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceSection {
    /// The name managers write in a comment (`# Name = ...`, see
    /// [the module docs](super#names-and-comments)).
    pub name: Option<String>,
    /// The other comments of the section, in file order, without `#`.
    pub comments: Vec<String>,
    /// `PrivateKey`. Optional: a client config rendered for "bring your own key" leaves
    /// it for the user to fill in, and `wg(8)` accepts an interface without one.
    pub private_key: Option<PrivateKey>,
    /// `ListenPort`.
    pub listen_port: Option<ListenPort>,
    /// `FwMark` (`off` reads as 0, as in `wg(8)`).
    pub fwmark: Option<FwMark>,
    /// `Address`: every address of every `Address` line, in order.
    pub addresses: Vec<IpNet>,
    /// `DNS`: servers and search domains of every `DNS` line, in order.
    pub dns: Vec<DnsEntry>,
    /// `MTU`.
    pub mtu: Option<Mtu>,
    /// `Table`.
    pub table: Option<Table>,
    /// `SaveConfig`.
    pub save_config: Option<bool>,
    /// `PreUp`/`PostUp`/`PreDown`/`PostDown`. Only present when the file was parsed with
    /// [`ParseOptions::allow_hooks`](super::ParseOptions::allow_hooks) or a caller set them.
    pub hooks: Hooks,
}

/// The `[Peer]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSection {
    /// The name managers write in a comment (`# Name = ...`).
    pub name: Option<String>,
    /// The other comments of the section, in file order, without `#`.
    pub comments: Vec<String>,
    /// `PublicKey` (required).
    pub public_key: PublicKey,
    /// `PresharedKey`.
    pub preshared_key: Option<PresharedKey>,
    /// `AllowedIPs`: every network of every `AllowedIPs` line, in order.
    pub allowed_ips: Vec<IpNet>,
    /// `Endpoint`.
    pub endpoint: Option<Endpoint>,
    /// `PersistentKeepalive` (`off` reads as 0, as in `wg(8)`).
    pub persistent_keepalive: Option<Keepalive>,
}

impl PeerSection {
    /// A peer with this public key and nothing else.
    pub fn new(public_key: PublicKey) -> Self {
        PeerSection {
            name: None,
            comments: Vec::new(),
            public_key,
            preshared_key: None,
            allowed_ips: Vec::new(),
            endpoint: None,
            persistent_keepalive: None,
        }
    }
}

/// The hooks `wg-quick` runs through `bash` as root, one command per line.
///
/// Nothing in wgm ever fills these from user data; they exist so that an import that
/// explicitly allows hooks loses nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hooks {
    /// `PreUp` commands.
    pub pre_up: Vec<String>,
    /// `PostUp` commands.
    pub post_up: Vec<String>,
    /// `PreDown` commands.
    pub pre_down: Vec<String>,
    /// `PostDown` commands.
    pub post_down: Vec<String>,
}

impl Hooks {
    /// No hook at all.
    pub fn is_empty(&self) -> bool {
        self.pre_up.is_empty()
            && self.post_up.is_empty()
            && self.pre_down.is_empty()
            && self.post_down.is_empty()
    }

    /// The hook lists with their keys, in the order they are rendered.
    pub(crate) fn by_key(&self) -> [(Key, &Vec<String>); 4] {
        [
            (Key::PreUp, &self.pre_up),
            (Key::PostUp, &self.post_up),
            (Key::PreDown, &self.pre_down),
            (Key::PostDown, &self.post_down),
        ]
    }

    fn list_mut(&mut self, key: Key) -> Option<&mut Vec<String>> {
        match key {
            Key::PreUp => Some(&mut self.pre_up),
            Key::PostUp => Some(&mut self.post_up),
            Key::PreDown => Some(&mut self.pre_down),
            Key::PostDown => Some(&mut self.post_down),
            _ => None,
        }
    }
}

/// `Table`: where `wg-quick` puts the routes for the allowed IPs.
///
/// ```
/// use wgm_core::wgquick::Table;
/// assert_eq!("off".parse::<Table>()?, Table::Off);
/// assert_eq!("Auto".parse::<Table>()?, Table::Auto);
/// assert_eq!("1234".parse::<Table>()?, Table::Id(1234));
/// assert_eq!("main".parse::<Table>()?, Table::Named("main".into()));
/// assert!("main; reboot".parse::<Table>().is_err());
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Table {
    /// `auto` (the default): the main table, or a new one for a default route.
    Auto,
    /// `off`: no routes at all.
    Off,
    /// A numbered routing table.
    Id(u32),
    /// A table named in `/etc/iproute2/rt_tables` (`main`, `local`, ...): 1–64 characters
    /// of `A–Z a–z 0–9 _ . -`, not starting with `-`, not all digits, not `auto`/`off`.
    Named(String),
}

impl Table {
    const FIELD: &'static str = "Interface.Table";

    fn check_name(name: &str) -> Result<()> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            && !name.bytes().all(|b| b.is_ascii_digit())
            && !name.eq_ignore_ascii_case("auto")
            && !name.eq_ignore_ascii_case("off");
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(
                Self::FIELD,
                "must be auto, off, a table number (0-4294967295) or a table name of 1-64 \
                 characters A-Z a-z 0-9 _ . - not starting with -",
            ))
        }
    }
}

impl FromStr for Table {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("auto") {
            Ok(Table::Auto)
        } else if s.eq_ignore_ascii_case("off") {
            Ok(Table::Off)
        } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse::<u32>()
                .map(Table::Id)
                .map_err(|_| Error::invalid(Self::FIELD, "table number must be at most 4294967295"))
        } else {
            Self::check_name(s)?;
            Ok(Table::Named(s.to_owned()))
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Table::Auto => f.write_str("auto"),
            Table::Off => f.write_str("off"),
            Table::Id(n) => write!(f, "{n}"),
            Table::Named(s) => f.write_str(s),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Names in comments
// ---------------------------------------------------------------------------------------

/// Comment tags that carry a peer's or interface's name, compared without ASCII case:
/// wgm and many hand-written files (`# Name = alice`), wireguard-ui (`# Name: alice`),
/// the Prometheus exporter convention (`# friendly_name = alice`), wg-portal
/// (`# -WGP- Display name: alice`) and wg-easy (`# Client: alice (id)`).
const NAME_TAGS: [&str; 4] = ["name", "friendly_name", "-WGP- Display name", "client"];

/// The name a comment declares, if it is a name tag (`Name = x`, `Name: x`, ...).
///
/// ```
/// use wgm_core::wgquick::name_from_comment;
/// assert_eq!(name_from_comment("Name = alice").as_deref(), Some("alice"));
/// assert_eq!(name_from_comment("Name:         bob").as_deref(), Some("bob"));
/// assert_eq!(name_from_comment("-WGP- Display name: carol").as_deref(), Some("carol"));
/// assert_eq!(name_from_comment("Client: dave (3f2a)").as_deref(), Some("dave"));
/// assert_eq!(name_from_comment("Name ="), None);
/// assert_eq!(name_from_comment("named after Alice"), None);
/// ```
pub fn name_from_comment(comment: &str) -> Option<String> {
    let sep = comment.find([':', '='])?;
    let tag = comment[..sep].trim_matches([' ', '\t']);
    let tag = NAME_TAGS
        .into_iter()
        .find(|t| t.eq_ignore_ascii_case(tag))?;
    let mut value = comment[sep + 1..].trim_matches([' ', '\t']);
    if tag == "client" {
        // wg-easy writes `Client: <name> (<id>)`.
        if let Some(open) = value.rfind(" (") {
            if value.ends_with(')') {
                value = value[..open].trim_end_matches([' ', '\t']);
            }
        }
    }
    (!value.is_empty()).then(|| value.to_owned())
}

// ---------------------------------------------------------------------------------------
// Document -> typed
// ---------------------------------------------------------------------------------------

/// The comments gathered for one section while walking the document.
#[derive(Default)]
struct SectionComments {
    /// Leading block, header comment, body comments and inline comments, in file order.
    all: Vec<String>,
    /// How many of `all` came from the block directly above the header.
    leading: usize,
    /// The index in `all` of the comment on the header line.
    header: Option<usize>,
}

impl SectionComments {
    /// Take the name out of the comments: the first name tag, else a lone comment line
    /// directly above the header, else the comment on the header line.
    fn into_name_and_comments(mut self) -> (Option<String>, Vec<String>) {
        if let Some(i) = self.all.iter().position(|c| name_from_comment(c).is_some()) {
            let name = name_from_comment(&self.all.remove(i));
            return (name, self.all);
        }
        let fallback = if self.leading == 1 {
            Some(0)
        } else {
            self.header
        };
        if let Some(i) = fallback {
            if !self.all[i].is_empty() {
                let name = self.all.remove(i);
                return (Some(name), self.all);
            }
        }
        (None, self.all)
    }
}

/// Turn the error of a value parser into a parse error at `line`.
fn at_line(line: usize, e: Error) -> Error {
    match e {
        Error::InvalidInput { field, reason } | Error::Parse { field, reason, .. } => {
            Error::Parse {
                line,
                field,
                reason,
            }
        }
        other => other,
    }
}

/// Split a comma list (`a, b,c`); an empty item is an error.
fn split_list(value: &str, line: usize, key: Key) -> Result<Vec<&str>> {
    value
        .split(',')
        .map(|item| {
            let item = item.trim_matches([' ', '\t']);
            if item.is_empty() {
                Err(Error::parse(
                    line,
                    key.field(),
                    "empty item in a comma-separated list",
                ))
            } else {
                Ok(item)
            }
        })
        .collect()
}

/// Lines on which the single-valued keys of one section were first set.
struct Seen([Option<usize>; Key::ALL.len()]);

impl Seen {
    fn new() -> Self {
        Seen([None; Key::ALL.len()])
    }

    fn check(&mut self, key: Key, line: usize) -> Result<()> {
        if key.is_repeatable() {
            return Ok(());
        }
        let slot = &mut self.0[key as usize];
        if let Some(first) = *slot {
            return Err(Error::parse(
                line,
                key.field(),
                format!("set twice in one section (first on line {first})"),
            ));
        }
        *slot = Some(line);
        Ok(())
    }
}

/// A `[Peer]` being filled in: the public key is required but may come on any line.
struct PeerDraft {
    header_line: usize,
    key_line: usize,
    comments: SectionComments,
    public_key: Option<PublicKey>,
    preshared_key: Option<PresharedKey>,
    allowed_ips: Vec<IpNet>,
    endpoint: Option<Endpoint>,
    persistent_keepalive: Option<Keepalive>,
    seen: Seen,
}

#[derive(Clone, Copy)]
enum Current {
    None,
    Interface,
    Peer(usize),
}

fn parse_off_or<T>(value: &str, parse: impl FnOnce(&str) -> Result<T>) -> Result<T> {
    if value.eq_ignore_ascii_case("off") {
        parse("0")
    } else {
        parse(value)
    }
}

/// One pass over a document's lines, filling the typed sections.
struct Walker {
    file_comments: Vec<String>,
    /// Comment lines not yet attached: they go to the next header if one follows
    /// directly, else to the section they are in.
    pending: Vec<String>,
    interface: InterfaceSection,
    interface_comments: Option<SectionComments>,
    interface_seen: Seen,
    mtu_line: usize,
    peers: Vec<PeerDraft>,
    current: Current,
}

impl Walker {
    fn new() -> Self {
        Walker {
            file_comments: Vec::new(),
            pending: Vec::new(),
            interface: InterfaceSection::default(),
            interface_comments: None,
            interface_seen: Seen::new(),
            mtu_line: 0,
            peers: Vec::new(),
            current: Current::None,
        }
    }

    /// The comment list of the current section (or of the file, before any section).
    fn comments_mut(&mut self) -> &mut Vec<String> {
        match self.current {
            Current::None => &mut self.file_comments,
            Current::Interface => {
                &mut self
                    .interface_comments
                    .get_or_insert_with(Default::default)
                    .all
            }
            Current::Peer(i) => &mut self.peers[i].comments.all,
        }
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            let mut pending = std::mem::take(&mut self.pending);
            self.comments_mut().append(&mut pending);
        }
    }

    fn section(&mut self, doc: &Document, line: &Line, kind: SectionKind) {
        let mut comments = SectionComments {
            leading: self.pending.len(),
            all: std::mem::take(&mut self.pending),
            header: None,
        };
        if let Some(c) = doc.comment_text(line) {
            comments.header = Some(comments.all.len());
            comments.all.push(c.to_owned());
        }
        match kind {
            SectionKind::Interface => {
                self.interface_comments = Some(comments);
                self.current = Current::Interface;
            }
            SectionKind::Peer => {
                self.peers.push(PeerDraft {
                    header_line: line.number(),
                    key_line: 0,
                    comments,
                    public_key: None,
                    preshared_key: None,
                    allowed_ips: Vec::new(),
                    endpoint: None,
                    persistent_keepalive: None,
                    seen: Seen::new(),
                });
                self.current = Current::Peer(self.peers.len() - 1);
            }
        }
    }

    fn entry(&mut self, doc: &Document, line: &Line, key: Key) -> Result<()> {
        self.flush();
        let number = line.number();
        match self.current {
            Current::Interface => {
                self.interface_seen.check(key, number)?;
                if key == Key::Mtu {
                    self.mtu_line = number;
                }
                interface_entry(&mut self.interface, doc, line, key)?;
            }
            Current::Peer(i) => {
                let peer = &mut self.peers[i];
                peer.seen.check(key, number)?;
                peer_entry(peer, doc, line, key)?;
            }
            // The document layer refuses keys outside a section.
            Current::None => {
                return Err(Error::parse(
                    number,
                    key.field(),
                    "key outside of a section",
                ));
            }
        }
        if let Some(c) = doc.comment_text(line) {
            self.comments_mut().push(c.to_owned());
        }
        Ok(())
    }

    fn finish(mut self) -> Result<WgQuickConfig> {
        self.flush();
        let Some(interface_comments) = self.interface_comments else {
            return Err(Error::parse(1, "Interface", "missing [Interface] section"));
        };
        let mut interface = self.interface;
        (interface.name, interface.comments) = interface_comments.into_name_and_comments();
        check_mtu(&interface).map_err(|e| at_line(self.mtu_line, e))?;

        let own_key = interface.private_key.as_ref().map(PrivateKey::public_key);
        let mut key_lines = std::collections::HashMap::with_capacity(self.peers.len());
        let mut peers = Vec::with_capacity(self.peers.len());
        for draft in self.peers {
            let Some(public_key) = draft.public_key else {
                return Err(Error::parse(
                    draft.header_line,
                    "Peer.PublicKey",
                    "missing: every [Peer] needs a PublicKey",
                ));
            };
            if own_key == Some(public_key) {
                return Err(Error::parse(
                    draft.key_line,
                    "Peer.PublicKey",
                    "is the interface's own public key",
                ));
            }
            if let Some(first) = key_lines.insert(public_key, draft.key_line) {
                return Err(Error::parse(
                    draft.key_line,
                    "Peer.PublicKey",
                    format!("the same public key as the peer on line {first}"),
                ));
            }
            let (name, comments) = draft.comments.into_name_and_comments();
            peers.push(PeerSection {
                name,
                comments,
                public_key,
                preshared_key: draft.preshared_key,
                allowed_ips: draft.allowed_ips,
                endpoint: draft.endpoint,
                persistent_keepalive: draft.persistent_keepalive,
            });
        }
        Ok(WgQuickConfig {
            comments: self.file_comments,
            interface,
            peers,
        })
    }
}

impl WgQuickConfig {
    /// Interpret a [`Document`] already checked for syntax: parse every value, check
    /// single-valued keys appear once per section, every peer has a `PublicKey`, no two
    /// peers share a key, no peer has the interface's own key, and the MTU is at least
    /// 1280 when the interface has an IPv6 address. Errors carry the line number.
    pub fn from_document(doc: &Document) -> Result<WgQuickConfig> {
        let mut walker = Walker::new();
        for line in doc.lines() {
            match line.kind() {
                LineKind::Blank => walker.flush(),
                LineKind::Comment => {
                    walker
                        .pending
                        .push(doc.comment_text(line).unwrap_or_default().to_owned());
                }
                LineKind::Section(kind) => walker.section(doc, line, kind),
                LineKind::Entry(key) => walker.entry(doc, line, key)?,
            }
        }
        walker.finish()
    }
}

/// MTU below 1280 cannot carry IPv6 (RFC 8200 §5).
pub(crate) fn check_mtu(interface: &InterfaceSection) -> Result<()> {
    if let Some(mtu) = interface.mtu {
        if mtu.get() < Mtu::MIN_IPV6
            && interface
                .addresses
                .iter()
                .any(|a| matches!(a, IpNet::V6(_)))
        {
            return Err(Error::invalid(
                "Interface.MTU",
                "must be at least 1280 when the interface has an IPv6 address",
            ));
        }
    }
    Ok(())
}

fn interface_entry(
    iface: &mut InterfaceSection,
    doc: &Document,
    line: &Line,
    key: Key,
) -> Result<()> {
    let number = line.number();
    let value = doc.value(line).unwrap_or_default();
    let field = key.field();
    let at = |e| at_line(number, e);
    match key {
        Key::PrivateKey => {
            iface.private_key = Some(PrivateKey::from_base64_field(value, field).map_err(at)?);
        }
        Key::ListenPort => iface.listen_port = Some(ListenPort::parse(value, field).map_err(at)?),
        Key::FwMark => {
            iface.fwmark = Some(parse_off_or(value, |v| FwMark::parse(v, field)).map_err(at)?);
        }
        Key::Address => {
            for item in split_list(value, number, key)? {
                iface
                    .addresses
                    .push(net::parse_interface_address(item, field).map_err(at)?);
            }
        }
        Key::Dns => {
            // The rules of `net::check_dns_list`, over every `DNS =` line of the section.
            for item in split_list(value, number, key)? {
                let entry = DnsEntry::parse(item, field).map_err(at)?;
                if iface.dns.contains(&entry) {
                    return Err(Error::parse(
                        number,
                        field,
                        "lists the same server or search domain twice",
                    ));
                }
                if iface.dns.len() == net::MAX_DNS_ENTRIES {
                    return Err(Error::parse(number, field, "must have at most 16 entries"));
                }
                iface.dns.push(entry);
            }
        }
        Key::Mtu => iface.mtu = Some(Mtu::parse(value, field).map_err(at)?),
        Key::Table => iface.table = Some(value.parse::<Table>().map_err(at)?),
        Key::SaveConfig => {
            iface.save_config = Some(if value.eq_ignore_ascii_case("true") {
                true
            } else if value.eq_ignore_ascii_case("false") {
                false
            } else {
                return Err(Error::parse(number, field, "must be true or false"));
            });
        }
        hook => match iface.hooks.list_mut(hook) {
            Some(list) => list.push(value.to_owned()),
            None => {
                return Err(Error::parse(number, field, "not an [Interface] key"));
            }
        },
    }
    Ok(())
}

fn peer_entry(peer: &mut PeerDraft, doc: &Document, line: &Line, key: Key) -> Result<()> {
    let number = line.number();
    let value = doc.value(line).unwrap_or_default();
    let field = key.field();
    let at = |e| at_line(number, e);
    match key {
        Key::PublicKey => {
            peer.public_key = Some(PublicKey::from_base64_field(value, field).map_err(at)?);
            peer.key_line = number;
        }
        Key::PresharedKey => {
            peer.preshared_key = Some(PresharedKey::from_base64_field(value, field).map_err(at)?);
        }
        Key::AllowedIps => {
            for item in split_list(value, number, key)? {
                peer.allowed_ips
                    .push(net::parse_allowed_ip(item, field).map_err(at)?);
            }
        }
        Key::Endpoint => peer.endpoint = Some(Endpoint::parse(value, field).map_err(at)?),
        Key::PersistentKeepalive => {
            peer.persistent_keepalive =
                Some(parse_off_or(value, |v| Keepalive::parse(v, field)).map_err(at)?);
        }
        _ => return Err(Error::parse(number, field, "not a [Peer] key")),
    }
    Ok(())
}

/// Whether `s` can be written after `# ` or `Key = ` and read back unchanged: no
/// control or formatting characters and no leading or trailing blanks.
pub(crate) fn is_single_line_text(s: &str) -> bool {
    !s.chars().any(is_forbidden_char) && s.trim_matches([' ', '\t']).len() == s.len()
}
