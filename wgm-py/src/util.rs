//! What needs no store: keys (`wgm.keys`) and the wg-quick format (`wgm.wgquick`).
//!
//! A parsed wg-quick config crosses to Python as JSON of this shape (every value as the
//! text wg-quick writes, so the Python layer can type it; absent values are `null`):
//!
//! ```text
//! {"comments": [..],
//!  "interface": {"name", "comments", "private_key", "listen_port", "fwmark",
//!                "addresses": [..], "dns": [..], "mtu", "table", "save_config",
//!                "hooks": {"pre_up": [..], "post_up": [..], "pre_down": [..], "post_down": [..]}},
//!  "peers": [{"name", "comments", "public_key", "preshared_key", "allowed_ips": [..],
//!             "endpoint", "persistent_keepalive"}]}
//! ```
//!
//! `wgquick_render` takes the same shape back, checks every value with the library's
//! parsers and renders with its renderer (which refuses anything that would not read
//! back as itself).

use pyo3::prelude::*;
use serde_json::{json, Map, Value};
use wgm_core::keys::{PresharedKey, PrivateKey, PublicKey};
use wgm_core::net::{self, DnsEntry, Endpoint, FwMark, Keepalive, ListenPort, Mtu};
use wgm_core::wgquick::{
    self, Hooks, InterfaceSection, ParseOptions, PeerSection, Table, WgQuickConfig,
};
use wgm_core::{Error, Result};
use zeroize::Zeroizing;

use crate::errors::raise;
use crate::ops::Args;

/// A new private key, as base64.
#[pyfunction]
pub fn generate_private_key() -> String {
    PrivateKey::generate().expose_base64().to_string()
}

/// The public key of a base64 private key.
#[pyfunction]
pub fn public_key(private_key: &str) -> PyResult<String> {
    let k = raise(PrivateKey::from_base64_field(private_key, "private_key"))?;
    Ok(k.public_key().to_base64())
}

/// A new preshared key, as base64.
#[pyfunction]
pub fn generate_preshared_key() -> String {
    PresharedKey::generate().expose_base64().to_string()
}

/// Parse wg-quick text (hooks accepted: parsing runs nothing) into the JSON shape of
/// this module.
#[pyfunction]
pub fn wgquick_parse(py: Python<'_>, text: &str) -> PyResult<String> {
    let text = Zeroizing::new(text.to_owned());
    let r = py.detach(|| -> Result<Zeroizing<String>> {
        let opts = ParseOptions {
            allow_hooks: true,
            ..ParseOptions::default()
        };
        let cfg = wgquick::parse(&text, &opts)?;
        Ok(Zeroizing::new(to_json(&cfg).to_string()))
    });
    raise(r).map(|s| s.to_string())
}

/// Render the JSON shape of this module as wg-quick text.
#[pyfunction]
pub fn wgquick_render(py: Python<'_>, config: &str) -> PyResult<String> {
    let config = Zeroizing::new(config.to_owned());
    let r = py.detach(|| -> Result<Zeroizing<String>> {
        let cfg = from_json(&config)?;
        wgquick::render(&cfg)
    });
    raise(r).map(|s| s.to_string())
}

fn strings<T: ToString>(v: &[T]) -> Vec<String> {
    v.iter().map(ToString::to_string).collect()
}

fn to_json(c: &WgQuickConfig) -> Value {
    let i = &c.interface;
    let peers: Vec<Value> = c
        .peers
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "comments": p.comments,
                "public_key": p.public_key.to_base64(),
                "preshared_key": p.preshared_key.as_ref().map(|k| k.expose_base64().to_string()),
                "allowed_ips": strings(&p.allowed_ips),
                "endpoint": p.endpoint.as_ref().map(ToString::to_string),
                "persistent_keepalive": p.persistent_keepalive.map(Keepalive::get),
            })
        })
        .collect();
    json!({
        "comments": c.comments,
        "interface": {
            "name": i.name,
            "comments": i.comments,
            "private_key": i.private_key.as_ref().map(|k| k.expose_base64().to_string()),
            "listen_port": i.listen_port.map(ListenPort::get),
            "fwmark": i.fwmark.map(FwMark::get),
            "addresses": strings(&i.addresses),
            "dns": strings(&i.dns),
            "mtu": i.mtu.map(Mtu::get),
            "table": i.table.as_ref().map(ToString::to_string),
            "save_config": i.save_config,
            "hooks": {
                "pre_up": i.hooks.pre_up,
                "post_up": i.hooks.post_up,
                "pre_down": i.hooks.pre_down,
                "post_down": i.hooks.post_down,
            },
        },
        "peers": peers,
    })
}

fn from_json(text: &str) -> Result<WgQuickConfig> {
    let mut top = Args::parse(text)?;
    let comments = top.strings("comments")?.unwrap_or_default();
    let mut i = Args::object(
        top.take("interface")?.unwrap_or(Value::Object(Map::new())),
        "interface",
    )?;
    let mut hooks = Args::object(
        i.take("hooks")?.unwrap_or(Value::Object(Map::new())),
        "interface.hooks",
    )?;
    let interface = InterfaceSection {
        name: i.string("name")?,
        comments: i.strings("comments")?.unwrap_or_default(),
        private_key: i
            .string_secret("private_key")?
            .map(|k| PrivateKey::from_base64_field(&k, "Interface.PrivateKey"))
            .transpose()?,
        listen_port: i
            .u64("listen_port")?
            .map(|v| number(v, "Interface.ListenPort").and_then(ListenPort::new))
            .transpose()?,
        fwmark: i
            .u64("fwmark")?
            .map(|v| number(v, "Interface.FwMark").and_then(FwMark::new))
            .transpose()?,
        addresses: i
            .strings("addresses")?
            .unwrap_or_default()
            .iter()
            .map(|s| net::parse_interface_address(s, "Interface.Address"))
            .collect::<Result<_>>()?,
        dns: i
            .strings("dns")?
            .unwrap_or_default()
            .iter()
            .map(|s| DnsEntry::parse(s, "Interface.DNS"))
            .collect::<Result<_>>()?,
        mtu: i
            .u64("mtu")?
            .map(|v| number(v, "Interface.MTU").and_then(Mtu::new))
            .transpose()?,
        table: i.string("table")?.map(|s| s.parse::<Table>()).transpose()?,
        save_config: i.bool("save_config")?,
        hooks: Hooks {
            pre_up: hooks.strings("pre_up")?.unwrap_or_default(),
            post_up: hooks.strings("post_up")?.unwrap_or_default(),
            pre_down: hooks.strings("pre_down")?.unwrap_or_default(),
            post_down: hooks.strings("post_down")?.unwrap_or_default(),
        },
    };
    hooks.finish()?;
    i.finish()?;
    let mut peers = Vec::new();
    if let Some(Value::Array(items)) = top.take("peers")? {
        for (n, item) in items.into_iter().enumerate() {
            let field = format!("peers[{n}]");
            let mut p = Args::object(item, &field)?;
            let key = p
                .string("public_key")?
                .ok_or_else(|| Error::invalid(format!("{field}.public_key"), "is required"))?;
            let mut s = PeerSection::new(PublicKey::from_base64_field(&key, "Peer.PublicKey")?);
            s.name = p.string("name")?;
            s.comments = p.strings("comments")?.unwrap_or_default();
            s.preshared_key = p
                .string_secret("preshared_key")?
                .map(|k| PresharedKey::from_base64_field(&k, "Peer.PresharedKey"))
                .transpose()?;
            s.allowed_ips = p
                .strings("allowed_ips")?
                .unwrap_or_default()
                .iter()
                .map(|a| net::parse_allowed_ip(a, "Peer.AllowedIPs"))
                .collect::<Result<_>>()?;
            s.endpoint = p
                .string("endpoint")?
                .map(|e| Endpoint::parse(&e, "Peer.Endpoint"))
                .transpose()?;
            s.persistent_keepalive = p
                .u64("persistent_keepalive")?
                .map(|v| number(v, "Peer.PersistentKeepalive").and_then(Keepalive::new))
                .transpose()?;
            p.finish()?;
            peers.push(s);
        }
    }
    top.finish()?;
    Ok(WgQuickConfig {
        comments,
        interface,
        peers,
    })
}

/// `v` as the integer type of a setting.
fn number<T: TryFrom<u64>>(v: u64, field: &'static str) -> Result<T> {
    T::try_from(v).map_err(|_| Error::invalid(field, "is out of range"))
}
