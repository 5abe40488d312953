//! The operations `Native.call` runs: a name, a JSON object of arguments, a JSON
//! result. Each is one call (or a short, fixed sequence) of the manager, like a CLI
//! command; the arguments go through the CLI's own parsers (`wgm_cli::parse`), so an
//! error names the same field whichever front end was used.
//!
//! Conventions of the arguments:
//!
//! - `server`, `peer` and `user` refer to objects by name or id (a peer also by public
//!   key), resolved as the caller may see them (an object they may not see is not
//!   found).
//! - Typed values are strings as the CLI takes them (addresses, networks, endpoints,
//!   keys, RFC 3339 times); numbers may also be JSON integers. Lists are JSON arrays.
//! - In an update, a key that is absent leaves the field alone and `null` clears it.
//! - A key the operation does not take is refused (`InvalidInput` naming it), so a
//!   misspelt keyword never passes silently.
//!
//! Results are the library's serde types, as the CLI's `--json` prints them. Exports of
//! secrets (`server_export`, `peer_config`, `peer_qr`) are audited by the library like
//! every other read of a secret.

use base64::Engine as _;
use serde::Serialize;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;
use wgm_cli::host::Backend;
use wgm_cli::parse::{self, OrNone};
use wgm_cli::views;
use wgm_core::ipam::Strategy;
use wgm_core::manager::{
    ApplyOptions, Host, ImportOptions, NewPeer, NewServer, NewToken, NewUser, PeerUpdate,
    ServerUpdate, UserUpdate,
};
use wgm_core::model::{
    AuditQuery, Delegation, Page, PeerId, RevisionNo, RoleAssignment, ServerId, TokenId,
    TunnelMode, UserId,
};
use wgm_core::names::{Description, InterfaceName, RoleName};
use wgm_core::net;
use wgm_core::rbac::{Permission, Principal, Role, Scope};
use wgm_core::reconcile::{DriftPolicy, Verify};
use wgm_core::{Error, Result};
use zeroize::Zeroizing;

use crate::native::Inner;

/// The arguments of one operation: a JSON object whose keys are taken one by one;
/// [`Args::finish`] refuses what is left.
pub struct Args {
    map: Map<String, Value>,
    prefix: String,
}

impl Args {
    /// The arguments in `text`, which must be a JSON object.
    pub fn parse(text: &str) -> Result<Args> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid("args", format!("is not JSON: {e}")))?;
        Args::object(v, "")
    }

    /// The arguments in `v`, an object found at `field`.
    pub fn object(v: Value, field: &str) -> Result<Args> {
        match v {
            Value::Object(map) => Ok(Args {
                map,
                prefix: if field.is_empty() {
                    String::new()
                } else {
                    format!("{field}.")
                },
            }),
            _ => Err(Error::invalid(
                if field.is_empty() {
                    "args".to_owned()
                } else {
                    field.to_owned()
                },
                "must be an object",
            )),
        }
    }

    fn field(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The raw value of `key` (`Some(Null)` for an explicit `null`).
    pub fn take(&mut self, key: &str) -> Result<Option<Value>> {
        Ok(self.map.remove(key))
    }

    /// The text of `key`: a string, or an integer written in decimal; `None` when absent
    /// or `null`.
    fn text(&mut self, key: &str) -> Result<Option<String>> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(Some(n.to_string())),
            Some(_) => Err(Error::invalid(
                self.field(key),
                "must be a string or an integer",
            )),
        }
    }

    /// A string; `None` when absent or `null`.
    pub fn string(&mut self, key: &str) -> Result<Option<String>> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Error::invalid(self.field(key), "must be a string")),
        }
    }

    /// A secret string (wiped when dropped).
    pub fn string_secret(&mut self, key: &str) -> Result<Option<Zeroizing<String>>> {
        Ok(self.string(key)?.map(Zeroizing::new))
    }

    /// A list of strings; `None` when absent or `null`.
    pub fn strings(&mut self, key: &str) -> Result<Option<Vec<String>>> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(Error::invalid(
                        format!("{}[{i}]", self.field(key)),
                        "must be a string",
                    )),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(_) => Err(Error::invalid(self.field(key), "must be a list of strings")),
        }
    }

    /// A non-negative integer; `None` when absent or `null`.
    pub fn u64(&mut self, key: &str) -> Result<Option<u64>> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| Error::invalid(self.field(key), "must be a non-negative integer")),
            Some(_) => Err(Error::invalid(self.field(key), "must be an integer")),
        }
    }

    /// A boolean; `None` when absent or `null`.
    pub fn bool(&mut self, key: &str) -> Result<Option<bool>> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(Error::invalid(self.field(key), "must be true or false")),
        }
    }

    /// `key` parsed by `f`; `None` when absent or `null`.
    fn get<T>(&mut self, key: &str, f: impl FnOnce(&str) -> Result<T>) -> Result<Option<T>> {
        self.text(key)?.map(|s| f(&s)).transpose()
    }

    /// `key` parsed by `f`; required.
    fn req<T>(&mut self, key: &str, f: impl FnOnce(&str) -> Result<T>) -> Result<T> {
        self.get(key, f)?
            .ok_or_else(|| Error::invalid(self.field(key), "is required"))
    }

    /// A required string.
    fn req_string(&mut self, key: &str) -> Result<String> {
        self.string(key)?
            .ok_or_else(|| Error::invalid(self.field(key), "is required"))
    }

    /// An update of `key`: absent is `None` (leave it), `null` is `Some(None)` (clear
    /// it), a value is `Some(Some(f(value)))`: the shape of the library's update
    /// structs (`ServerUpdate`, `PeerUpdate`, `UserUpdate`).
    #[allow(clippy::option_option)]
    fn update<T>(
        &mut self,
        key: &str,
        f: impl FnOnce(&str) -> Result<T>,
    ) -> Result<Option<Option<T>>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Null) => {
                self.map.remove(key);
                Ok(Some(None))
            }
            Some(_) => Ok(Some(self.get(key, f)?)),
        }
    }

    /// An update of the list at `key`: absent is `None` (leave it), `null` an empty list
    /// (clear it), a list each item parsed by `f`.
    fn update_list<T>(
        &mut self,
        key: &str,
        f: impl Fn(&str) -> Result<T>,
    ) -> Result<Option<Vec<T>>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Null) => {
                self.map.remove(key);
                Ok(Some(Vec::new()))
            }
            Some(_) => self.list(key, f),
        }
    }

    /// Each item of the list at `key` parsed by `f`; `None` when absent or `null`.
    fn list<T>(&mut self, key: &str, f: impl Fn(&str) -> Result<T>) -> Result<Option<Vec<T>>> {
        self.strings(key)?
            .map(|items| items.iter().map(|s| f(s)).collect())
            .transpose()
    }

    /// Refuse any argument that was not taken.
    pub fn finish(self) -> Result<()> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(Error::invalid(
                self.field(k),
                "is not an argument of this operation",
            )),
        }
    }
}

/// A result as JSON text.
fn out<T: Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::invalid("result", format!("cannot encode: {e}")))
}

/// An RFC 3339 time, or a duration from now (`30d`) in the direction of `dir`.
fn time_arg(
    m: &wgm_core::manager::Manager,
    s: &str,
    field: &'static str,
    dir: parse::Relative,
) -> Result<OffsetDateTime> {
    Ok(parse::when(s, field)?.at(m.now(), dir))
}

fn strategy(s: &str) -> Result<Strategy> {
    match s {
        "sequential" => Ok(Strategy::Sequential),
        "random" => Ok(Strategy::Random),
        _ => Err(Error::invalid(
            "server.strategy",
            "must be sequential or random",
        )),
    }
}

fn tunnel(s: &str) -> Result<TunnelMode> {
    match s {
        "full" => Ok(TunnelMode::Full),
        "split" => Ok(TunnelMode::Split),
        _ => Err(Error::invalid("server.tunnel", "must be full or split")),
    }
}

/// One DNS entry of a server.
fn dns_entry(s: &str) -> Result<net::DnsEntry> {
    net::DnsEntry::parse(s, "server.dns")
}

/// A server's DNS list, held to the library's list rules.
fn dns_list(entries: Vec<net::DnsEntry>) -> Result<Vec<net::DnsEntry>> {
    net::check_dns_list(&entries, "server.dns")?;
    Ok(entries)
}

async fn server(inner: &Inner, p: &Principal, a: &mut Args) -> Result<ServerId> {
    let s = a.req_string("server")?;
    inner.manager.resolve_server(p, &s).await
}

async fn server_and_peer(inner: &Inner, p: &Principal, a: &mut Args) -> Result<(ServerId, PeerId)> {
    let sid = server(inner, p, a).await?;
    let peer = a.req_string("peer")?;
    let pid = inner.manager.resolve_peer(p, sid, &peer).await?;
    Ok((sid, pid))
}

async fn user(inner: &Inner, p: &Principal, a: &mut Args, key: &str) -> Result<Option<UserId>> {
    match a.string(key)? {
        Some(u) => Ok(Some(inner.manager.resolve_user(p, &u).await?)),
        None => Ok(None),
    }
}

/// The host of a live operation: its backends (kept by `inner`), name and drift policy.
async fn host(inner: &Inner, a: &mut Args, drift: DriftPolicy) -> Result<Host> {
    let backend = a
        .get("backend", |s| Backend::parse(s, "backend"))?
        .unwrap_or_default();
    let name = wgm_cli::host::host_name(a.string("host")?.as_deref())?;
    let wg = inner.wireguard(backend).await?;
    let net = inner.network().await?;
    Ok(Host::new(name, wg, Some(net)).with_drift(drift))
}

fn drift(remove_unmanaged: Option<bool>) -> DriftPolicy {
    if remove_unmanaged.unwrap_or(false) {
        DriftPolicy::Remove
    } else {
        DriftPolicy::Report
    }
}

/// A permission in its text form; `@server:NAME` may name the server instead of its id.
async fn permission(
    inner: &Inner,
    p: &Principal,
    text: &str,
    field: &'static str,
) -> Result<Permission> {
    let text = match text.split_once("@server:") {
        Some((body, s)) if s.parse::<ServerId>().is_err() => {
            let id = inner.manager.resolve_server(p, s).await?;
            format!("{body}@server:{id}")
        }
        _ => text.to_owned(),
    };
    text.parse::<Permission>().map_err(|e| e.in_field(field))
}

/// Run `op` with `args` as `p`.
pub async fn call(inner: &Inner, p: &Principal, op: &str, args: &str) -> Result<String> {
    let mut a = Args::parse(args)?;
    let m = &inner.manager;
    let result = match op {
        // ------------------------------------------------------------------ servers
        "server_create" => {
            let name = a.req("name", parse::server_name)?;
            let interface = match a.get("interface", parse::interface)? {
                Some(i) => i,
                None => InterfaceName::new(name.as_str()).map_err(|_| {
                    Error::invalid(
                        "server.interface",
                        "the server name is not a valid interface name (1-15 of A-Z a-z 0-9 _ = + . -); give interface",
                    )
                })?,
            };
            let port = a.req("listen_port", parse::server_listen_port)?;
            let mut spec = NewServer::new(name, interface, port);
            spec.ipv6_pool = a.get("ipv6_pool", parse::ipv6_pool)?;
            spec.ipv4_pool = a
                .get("ipv4_pool", parse::ipv4_pool)?
                .and_then(OrNone::into_option);
            spec.address_v6 = a.get("address_v6", |s| net::parse_ipv6(s, "server.address_v6"))?;
            spec.address_v4 = a.get("address_v4", |s| net::parse_ipv4(s, "server.address_v4"))?;
            spec.endpoint = a.get("endpoint", parse::server_endpoint)?;
            if let Some(d) = a.list("dns", dns_entry)? {
                spec.dns = dns_list(d)?;
            }
            spec.mtu = a.get("mtu", parse::server_mtu)?;
            if let Some(s) = a.get("strategy", strategy)? {
                spec.strategy = s;
            }
            spec.fwmark = a.get("fwmark", parse::server_fwmark)?;
            if let Some(t) = a.get("tunnel", tunnel)? {
                spec.client_template.tunnel = t;
            }
            if let Some(k) = a.get("keepalive", parse::client_keepalive)? {
                spec.client_template.keepalive = k;
            }
            let len = a.get("delegation_len", parse::delegation_len)?;
            if let Some(pool) = a.get("delegation_pool", parse::delegation_pool)? {
                spec.delegation = Some(Delegation {
                    pool,
                    prefix_len: len.unwrap_or(64),
                });
            } else if len.is_some() {
                return Err(Error::invalid(
                    "server.delegation.prefix_len",
                    "needs delegation_pool",
                ));
            }
            spec.quarantine_secs = a.u64("quarantine_secs")?;
            spec.host = a.get("host", parse::server_host)?;
            a.finish()?;
            out(&m.create_server(p, spec).await?)
        }
        "server_list" => {
            a.finish()?;
            let mut views = Vec::new();
            for s in m.list_servers(p, Page::ALL).await? {
                match m.get_server(p, s.id).await {
                    Ok(v) => views.push(v),
                    // Deleted between the listing and the read.
                    Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            out(&views)
        }
        "server_get" => {
            let id = server(inner, p, &mut a).await?;
            a.finish()?;
            out(&m.get_server(p, id).await?)
        }
        "server_update" => {
            let id = server(inner, p, &mut a).await?;
            let mut u = ServerUpdate {
                name: a.get("name", parse::server_name)?,
                listen_port: a.get("listen_port", parse::server_listen_port)?,
                mtu: a.get("mtu", parse::server_mtu)?,
                strategy: a.get("strategy", strategy)?,
                quarantine_secs: a.u64("quarantine_secs")?,
                active: a.bool("active")?,
                ..ServerUpdate::default()
            };
            u.endpoint = a.update("endpoint", parse::server_endpoint)?;
            u.fwmark = a.update("fwmark", parse::server_fwmark)?;
            u.host = a.update("host", parse::server_host)?;
            u.dns = a.update_list("dns", dns_entry)?.map(dns_list).transpose()?;
            let t = a.get("tunnel", tunnel)?;
            let k = a.get("keepalive", parse::client_keepalive)?;
            a.finish()?;
            if t.is_some() || k.is_some() {
                let mut tpl = m.get_server(p, id).await?.client_template;
                if let Some(t) = t {
                    tpl.tunnel = t;
                }
                if let Some(k) = k {
                    tpl.keepalive = k;
                }
                u.client_template = Some(tpl);
            }
            out(&m.update_server(p, id, u).await?)
        }
        "server_delete" => {
            let id = server(inner, p, &mut a).await?;
            a.finish()?;
            let rev = m.delete_server(p, id).await?;
            out(&json!({ "revision": rev }))
        }
        "server_export" => {
            let id = server(inner, p, &mut a).await?;
            a.finish()?;
            let text = m.server_config(p, id).await?;
            out(&json!({ "config": text.as_str() }))
        }
        "server_import" => {
            let name = a.req("name", parse::server_name)?;
            let text = a
                .string_secret("config")?
                .ok_or_else(|| Error::invalid("config", "is required"))?;
            let opts = ImportOptions {
                allow_hooks: a.bool("allow_hooks")?.unwrap_or(false),
                interface: a.get("interface", parse::interface)?,
            };
            a.finish()?;
            out(&m.import_server(p, name, &text, opts).await?)
        }
        "server_rotate_key" => {
            let id = server(inner, p, &mut a).await?;
            a.finish()?;
            out(&m.rotate_server_key(p, id).await?)
        }
        "server_restore_key" => {
            let id = server(inner, p, &mut a).await?;
            let rev = a.req("revision", |s| {
                parse::revision(s, "server.restore_key.revision")
            })?;
            a.finish()?;
            out(&m.restore_server_key(p, id, rev).await?)
        }

        // -------------------------------------------------------------------- peers
        "peer_add" => {
            let sid = server(inner, p, &mut a).await?;
            let mut spec = NewPeer::new(a.req("name", parse::peer_name)?);
            let count = a.get("count", parse::peer_count)?;
            if let Some(r) = a.get("ipv6", parse::ipv6_request)? {
                spec.ipv6 = r;
            }
            if let Some(r) = a.get("ipv4", parse::ipv4_request)? {
                spec.ipv4 = r;
            }
            if let Some(r) = a.get("prefix", parse::prefix_request)? {
                spec.prefix = r;
            }
            spec.public_key = a.get("public_key", parse::peer_public_key)?;
            if let Some(ips) = a.list("allowed_ips", |s| {
                net::parse_allowed_ip(s, "peer.allowed_ips")
            })? {
                spec.extra_allowed_ips = ips;
            }
            spec.keepalive = a.get("keepalive", parse::peer_keepalive)?;
            spec.endpoint = a.get("endpoint", parse::peer_endpoint)?;
            spec.expires_at = a.get("expires_at", |s| {
                time_arg(m, s, "peer.expires_at", parse::Relative::Future)
            })?;
            spec.description = a.get("description", parse::description)?;
            spec.preshared_key = a.bool("preshared_key")?.unwrap_or(true);
            spec.owner = user(inner, p, &mut a, "owner").await?;
            a.finish()?;
            let views = match count {
                None => vec![m.add_peer(p, sid, spec).await?],
                Some(n) => m.add_peers(p, sid, spec.numbered(n)?).await?,
            };
            out(&views)
        }
        "peer_list" => {
            let sid = server(inner, p, &mut a).await?;
            a.finish()?;
            out(&m.list_peers(p, sid).await?)
        }
        "peer_get" => {
            let (sid, pid) = server_and_peer(inner, p, &mut a).await?;
            a.finish()?;
            out(&m.get_peer(p, sid, pid).await?)
        }
        "peer_update" => {
            let (sid, pid) = server_and_peer(inner, p, &mut a).await?;
            let mut u = PeerUpdate {
                name: a.get("name", parse::peer_name)?,
                keepalive: a.get("keepalive", parse::peer_keepalive)?,
                ..PeerUpdate::default()
            };
            u.description = a.update("description", parse::description)?;
            u.extra_allowed_ips = a.update_list("allowed_ips", |s| {
                net::parse_allowed_ip(s, "peer.allowed_ips")
            })?;
            u.endpoint = a.update("endpoint", parse::peer_endpoint)?;
            u.expires_at = a.update("expires_at", |s| {
                time_arg(m, s, "peer.expires_at", parse::Relative::Future)
            })?;
            u.owner = match a.take("owner")? {
                None => None,
                Some(Value::Null) => Some(None),
                Some(Value::String(o)) => Some(Some(m.resolve_user(p, &o).await?)),
                Some(_) => return Err(Error::invalid("owner", "must be a string")),
            };
            a.finish()?;
            out(&m.update_peer(p, sid, pid, u).await?)
        }
        "peer_set_enabled" => {
            let (sid, pid) = server_and_peer(inner, p, &mut a).await?;
            let enabled = a
                .bool("enabled")?
                .ok_or_else(|| Error::invalid("enabled", "is required"))?;
            a.finish()?;
            out(&m.set_peer_enabled(p, sid, pid, enabled).await?)
        }
        "peer_remove" => {
            let (sid, pid) = server_and_peer(inner, p, &mut a).await?;
            a.finish()?;
            let v = m.get_peer(p, sid, pid).await?;
            m.remove_peer(p, sid, pid).await?;
            out(&json!({ "removed": { "id": v.id, "server_id": v.server_id, "name": v.name } }))
        }
        "peer_rotate_key" => {
            let (sid, pid) = server_and_peer(inner, p, &mut a).await?;
            a.finish()?;
            out(&m.rotate_peer_key(p, sid, pid).await?)
        }
        "peer_rotate_psk" => {
            let (sid, pid) = server_and_peer(inner, p, &mut a).await?;
            a.finish()?;
            out(&m.rotate_peer_psk(p, sid, pid).await?)
        }
        "peer_restore_keys" => {
            let (sid, pid) = server_and_peer(inner, p, &mut a).await?;
            let rev = a.req("revision", |s| {
                parse::revision(s, "peer.restore_keys.revision")
            })?;
            a.finish()?;
            out(&m.restore_peer_keys(p, sid, pid, rev).await?)
        }
        "peer_config" => {
            let (sid, pid) = server_and_peer(inner, p, &mut a).await?;
            a.finish()?;
            let cfg = m.client_config(p, sid, pid).await?;
            out(&json!({ "peer": cfg.peer, "complete": cfg.complete, "config": cfg.text.as_str() }))
        }
        "peer_qr" => {
            let (sid, pid) = server_and_peer(inner, p, &mut a).await?;
            let format = a.string("format")?.unwrap_or_else(|| "svg".to_owned());
            if format != "svg" && format != "png" {
                return Err(Error::invalid("format", "must be svg or png"));
            }
            a.finish()?;
            let cfg = m.client_config(p, sid, pid).await?;
            if !cfg.complete {
                return Err(Error::invalid(
                    "peer.private_key",
                    "wgm does not hold this peer's private key (it brought its own), so a QR code could not be imported; use the text config and add the key on the device",
                ));
            }
            let data = if format == "svg" {
                wgm_core::wgquick::qr_svg(&cfg.text)?.into_bytes()
            } else {
                wgm_core::wgquick::qr_png(&cfg.text)?
            };
            let b64 = base64::engine::general_purpose::STANDARD.encode(data);
            out(&json!({ "format": format, "data_base64": b64 }))
        }
        "peer_sweep_expired" => {
            a.finish()?;
            let n = m.sweep_expired(p).await?;
            out(&json!({ "disabled": n }))
        }

        // ------------------------------------------------------------ history, audit
        "history" => {
            let sid = server(inner, p, &mut a).await?;
            let after = a.get("after", |s| parse::number(s, "history.after", u64::MAX))?;
            let limit = a.get("limit", |s| parse::number(s, "history.limit", u64::MAX))?;
            a.finish()?;
            let revs = m
                .history(
                    p,
                    sid,
                    RevisionNo(after.unwrap_or(0)),
                    limit.unwrap_or(u64::MAX),
                )
                .await?;
            let entries: Vec<views::HistoryEntry> = revs.iter().map(views::entry).collect();
            out(&entries)
        }
        "diff" => {
            let sid = server(inner, p, &mut a).await?;
            let from = a.req("from", |s| parse::number(s, "diff.from", u64::MAX))?;
            let to = match a.get("to", |s| parse::revision(s, "diff.to"))? {
                Some(t) => t,
                None => m.get_server(p, sid).await?.revision,
            };
            a.finish()?;
            let mut entries = m.diff(p, sid, RevisionNo(from), to).await?;
            views::sort_diff(&mut entries);
            out(&entries)
        }
        "rollback" => {
            let sid = server(inner, p, &mut a).await?;
            let to = a.req("revision", |s| parse::revision(s, "rollback.revision"))?;
            a.finish()?;
            let rec = m.rollback(p, sid, to).await?;
            out(&json!({ "restored": to, "revision": views::entry(&rec) }))
        }
        "audit_query" => {
            let mut q = AuditQuery {
                actor: a.string("actor")?,
                object_prefix: a.string("object_prefix")?,
                after_seq: a.get("after_seq", |s| {
                    parse::number(s, "audit.after_seq", u64::MAX)
                })?,
                limit: a.get("limit", |s| parse::number(s, "audit.limit", u64::MAX))?,
                ..AuditQuery::default()
            };
            q.since = a.get("since", |s| {
                time_arg(m, s, "audit.since", parse::Relative::Past)
            })?;
            q.until = a.get("until", |s| {
                time_arg(m, s, "audit.until", parse::Relative::Past)
            })?;
            if let Some(s) = a.string("server")? {
                q.server_id = Some(m.resolve_server(p, &s).await?);
            }
            a.finish()?;
            out(&m.audit_log(p, &q).await?)
        }
        "audit_verify" => {
            let head = a.get("head", parse::audit_head)?;
            a.finish()?;
            out(&m.verify_audit_chain(p, head.as_ref()).await?)
        }

        // ------------------------------------------------------ users, roles, tokens
        "user_create" => {
            let name = a.req("name", parse::user_name)?;
            let role = a
                .get("role", parse::role_name)?
                .map_or_else(|| RoleName::new("user"), Ok)?;
            let scope = match a.string("server")? {
                Some(s) => Scope::Server(m.resolve_server(p, &s).await?.0),
                None => Scope::Global,
            };
            let mut spec = NewUser::new(name, role.clone());
            spec.roles = vec![RoleAssignment { role, scope }];
            spec.email = a.string("email")?;
            spec.password = a.string_secret("password")?;
            spec.peer_quota = a
                .get("peer_quota", |s| {
                    parse::number(s, "user.peer_quota", u64::from(u32::MAX))
                })?
                .map(|n| n as u32);
            a.finish()?;
            out(&m.create_user(p, spec).await?)
        }
        "user_list" => {
            a.finish()?;
            out(&m.list_users(p, Page::ALL).await?)
        }
        "user_get" => {
            let id = req_user(inner, p, &mut a).await?;
            a.finish()?;
            out(&m.get_user(p, id).await?)
        }
        "user_update" => {
            let id = req_user(inner, p, &mut a).await?;
            let mut u = UserUpdate {
                email: a.update("email", |s| Ok(s.to_owned()))?,
                active: a.bool("active")?,
                peer_quota: a.update("peer_quota", |s| {
                    parse::number(s, "user.peer_quota", u64::from(u32::MAX)).map(|n| n as u32)
                })?,
                ..UserUpdate::default()
            };
            if let Some(v) = a.take("roles")? {
                let Value::Array(items) = v else {
                    return Err(Error::invalid("roles", "must be a list of {role, server}"));
                };
                let mut roles = Vec::new();
                for (i, item) in items.into_iter().enumerate() {
                    let field = format!("roles[{i}]");
                    let mut r = Args::object(item, &field)?;
                    let role = r.req("role", parse::role_name)?;
                    let scope = match r.string("server")? {
                        Some(s) => Scope::Server(m.resolve_server(p, &s).await?.0),
                        None => Scope::Global,
                    };
                    r.finish()?;
                    roles.push(RoleAssignment { role, scope });
                }
                u.roles = Some(roles);
            }
            a.finish()?;
            out(&m.update_user(p, id, u).await?)
        }
        "user_set_password" => {
            let id = req_user(inner, p, &mut a).await?;
            let new = a
                .string_secret("password")?
                .ok_or_else(|| Error::invalid("password", "is required"))?;
            let current = a.string_secret("current")?;
            a.finish()?;
            m.set_password(p, id, current.as_deref().map(String::as_str), &new)
                .await?;
            out(&json!({}))
        }
        "user_delete" => {
            let id = req_user(inner, p, &mut a).await?;
            a.finish()?;
            m.delete_user(p, id).await?;
            out(&json!({}))
        }
        "user_enroll_totp" => {
            let id = req_user(inner, p, &mut a).await?;
            let issuer = a.string("issuer")?.unwrap_or_else(|| "wgm".to_owned());
            a.finish()?;
            let uri = m.enroll_totp(p, id, &issuer).await?;
            out(&json!({ "uri": uri.as_str() }))
        }
        "user_confirm_totp" => {
            let id = req_user(inner, p, &mut a).await?;
            let code = a
                .string_secret("code")?
                .ok_or_else(|| Error::invalid("code", "is required"))?;
            a.finish()?;
            m.confirm_totp(p, id, &code).await?;
            out(&json!({}))
        }
        "role_list" => {
            a.finish()?;
            out(&m.roles(p).await?)
        }
        "role_put" => {
            let name = a.req("name", parse::role_name)?;
            let description = a
                .get("description", parse::description)?
                .map_or_else(|| Description::new(name.as_str()), Ok)?;
            let mut perms = Vec::new();
            for t in a.strings("permissions")?.unwrap_or_default() {
                perms.push(permission(inner, p, &t, "role.permissions").await?);
            }
            let quota = a
                .get("peer_quota", |s| {
                    parse::number(s, "role.peer_quota", u64::from(u32::MAX))
                })?
                .map(|n| n as u32);
            a.finish()?;
            let role = Role::custom(name, description, perms)?.with_peer_quota(quota);
            m.put_role(p, role.clone()).await?;
            out(&role)
        }
        "role_delete" => {
            let name = a.req("name", parse::role_name)?;
            a.finish()?;
            m.delete_role(p, &name).await?;
            out(&json!({}))
        }
        "token_create" => {
            let name = a.req_string("name")?;
            let owner = match user(inner, p, &mut a, "user").await? {
                Some(u) => u,
                None => UserId(p.user_id()),
            };
            let scopes = match a.strings("scopes")? {
                Some(items) => {
                    let mut out = Vec::new();
                    for t in items {
                        out.push(permission(inner, p, &t, "token.scopes").await?);
                    }
                    Some(out)
                }
                None => None,
            };
            let expires_at = a.get("expires_at", |s| {
                time_arg(m, s, "token.expires_at", parse::Relative::Future)
            })?;
            a.finish()?;
            let (view, secret) = m
                .create_token(
                    p,
                    NewToken {
                        user: owner,
                        name,
                        scopes,
                        expires_at,
                    },
                )
                .await?;
            out(&json!({ "token": view, "secret": secret.as_str() }))
        }
        "token_list" => {
            let u = user(inner, p, &mut a, "user").await?;
            a.finish()?;
            out(&m.list_tokens(p, u).await?)
        }
        "token_revoke" => {
            let id = a.req("token", |s| {
                s.parse::<TokenId>().map_err(|e| e.in_field("token"))
            })?;
            a.finish()?;
            m.revoke_token(p, id).await?;
            out(&json!({ "revoked": id }))
        }

        // --------------------------------------------------------------------- live
        "plan" => {
            let sid = server(inner, p, &mut a).await?;
            let h = host(inner, &mut a, DriftPolicy::Report).await?;
            a.finish()?;
            out(&m.plan(p, sid, &h).await?)
        }
        "apply" => {
            let sid = server(inner, p, &mut a).await?;
            let d = drift(a.bool("remove_unmanaged")?);
            let opts = ApplyOptions {
                dry_run: a.bool("dry_run")?.unwrap_or(false),
                full_resync: a.bool("full_resync")?.unwrap_or(false),
                verify: if a.bool("verify")?.unwrap_or(false) {
                    Verify::Always
                } else {
                    Verify::Auto
                },
            };
            let h = host(inner, &mut a, d).await?;
            a.finish()?;
            out(&m.apply(p, sid, &h, opts).await?)
        }
        "status" => {
            let sid = server(inner, p, &mut a).await?;
            let h = host(inner, &mut a, DriftPolicy::Report).await?;
            a.finish()?;
            out(&m.status(p, sid, &h).await?)
        }
        "reconcile" => {
            let sid = server(inner, p, &mut a).await?;
            let d = drift(a.bool("remove_unmanaged")?);
            let h = host(inner, &mut a, d).await?;
            a.finish()?;
            // As one pass of `wgm reconcile`: disable what expired (when the caller may),
            // then apply.
            let expired = match m.sweep_expired(p).await {
                Ok(n) => n,
                Err(Error::PermissionDenied { .. }) => 0,
                Err(e) => return Err(e),
            };
            let report = m.apply(p, sid, &h, ApplyOptions::default()).await?;
            out(&json!({ "expired_disabled": expired, "report": report }))
        }
        _ => Err(Error::invalid("op", "is not an operation of wgm._wgm")),
    };
    result
}

async fn req_user(inner: &Inner, p: &Principal, a: &mut Args) -> Result<UserId> {
    user(inner, p, a, "user")
        .await?
        .ok_or_else(|| Error::invalid("user", "is required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_take_typed_values_and_refuse_leftovers() {
        let mut a = Args::parse(r#"{"n": 3, "s": "x", "b": true, "l": ["a"], "z": null}"#).unwrap();
        assert_eq!(a.u64("n").unwrap(), Some(3));
        assert_eq!(a.string("s").unwrap().as_deref(), Some("x"));
        assert_eq!(a.bool("b").unwrap(), Some(true));
        assert_eq!(a.strings("l").unwrap(), Some(vec!["a".to_owned()]));
        assert_eq!(a.update("z", |s| Ok(s.to_owned())).unwrap(), Some(None));
        a.finish().unwrap();
        let mut a = Args::parse(r#"{"extra": 1}"#).unwrap();
        assert!(a.string("other").unwrap().is_none());
        let e = a.finish().unwrap_err();
        assert!(matches!(e, Error::InvalidInput { field, .. } if field == "extra"));
        assert!(Args::parse("[1]").is_err());
        let mut a = Args::parse(r#"{"n": -1}"#).unwrap();
        assert!(matches!(a.u64("n"), Err(Error::InvalidInput { field, .. }) if field == "n"));
    }
}
