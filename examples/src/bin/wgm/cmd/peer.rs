//! `wgm peer …`.

use serde_json::json;
use wgm_core::keys::PublicKey;
use wgm_core::manager::{NewPeer, PeerUpdate, PeerView};
use wgm_core::model::{PeerId, ServerId, UserId};
use wgm_core::policy::PeerPolicy;
use wgm_core::Error;
use zeroize::Zeroizing;

use crate::args::{PeerAdd, PeerCmd, PeerConfig, PeerRef, PeerSet};
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use crate::out::{self, Cell};
use crate::parse::{self, List, OrNone, Relative};
use crate::{cmd::server, progress};

/// Run a `peer` subcommand.
pub async fn run(ctx: &Ctx, cmd: PeerCmd) -> CliResult {
    match cmd {
        PeerCmd::Add(a) => add(ctx, a).await,
        PeerCmd::List(a) => {
            let sid = ctx.server(&a.server).await?;
            let peers = ctx.m.list_peers(&ctx.p, sid).await?;
            list(ctx, &peers)
        }
        PeerCmd::Show(a) => {
            let (sid, pid) = resolve(ctx, &a).await?;
            let v = ctx.m.get_peer(&ctx.p, sid, pid).await?;
            show(ctx, &v)
        }
        PeerCmd::Set(a) => set(ctx, a).await,
        PeerCmd::Enable(a) => set_enabled(ctx, &a, true).await,
        PeerCmd::Disable(a) => set_enabled(ctx, &a, false).await,
        PeerCmd::Remove(a) => {
            let (sid, pid) = resolve(ctx, &a).await?;
            let v = ctx.m.get_peer(&ctx.p, sid, pid).await?;
            ctx.m.remove_peer(&ctx.p, sid, pid).await?;
            if ctx.out.json {
                return ctx.out.json(&json!({
                    "removed": { "id": v.id, "server_id": v.server_id, "name": v.name }
                }));
            }
            ctx.out.line(&format!("removed peer {}", v.name))
        }
        PeerCmd::RotateKey(a) => {
            let (sid, pid) = resolve(ctx, &a).await?;
            let v = ctx.m.rotate_peer_key(&ctx.p, sid, pid).await?;
            if ctx.out.json {
                return ctx.out.json(&v);
            }
            ctx.out.line(&format!(
                "peer {} has a new public key {}; it needs its config again: wgm peer config {} {}",
                v.name, v.public_key, a.server, v.name
            ))
        }
        PeerCmd::RotatePsk(a) => {
            let (sid, pid) = resolve(ctx, &a).await?;
            let v = ctx.m.rotate_peer_psk(&ctx.p, sid, pid).await?;
            if ctx.out.json {
                return ctx.out.json(&v);
            }
            ctx.out.line(&format!(
                "peer {} has a new preshared key; it needs its config again",
                v.name
            ))
        }
        PeerCmd::RestoreKeys(a) => {
            let (sid, pid) = resolve(ctx, &a.peer).await?;
            let v = ctx.m.restore_peer_keys(&ctx.p, sid, pid, a.from).await?;
            if ctx.out.json {
                return ctx.out.json(&v);
            }
            ctx.out.line(&format!(
                "peer {} has the keys of revision {} again (public key {}); it needs its config again",
                v.name, a.from, v.public_key
            ))
        }
        PeerCmd::Config(a) => config(ctx, a).await,
    }
}

/// Enable or disable a peer.
pub async fn set_enabled(ctx: &Ctx, a: &PeerRef, enabled: bool) -> CliResult {
    let (sid, pid) = resolve(ctx, a).await?;
    let v = ctx.m.set_peer_enabled(&ctx.p, sid, pid, enabled).await?;
    if ctx.out.json {
        return ctx.out.json(&v);
    }
    ctx.out.line(&format!(
        "{} peer {}",
        if enabled { "enabled" } else { "disabled" },
        v.name
    ))
}

/// Resolve the server and the peer of a command.
pub async fn resolve(ctx: &Ctx, a: &PeerRef) -> CliResult<(ServerId, PeerId)> {
    let sid = ctx.server(&a.server).await?;
    let pid = ctx.m.resolve_peer(&ctx.p, sid, &a.peer).await?;
    Ok((sid, pid))
}

async fn owner(ctx: &Ctx, name: &str) -> CliResult<UserId> {
    Ok(ctx.m.resolve_user(&ctx.p, name).await?)
}

async fn add(ctx: &Ctx, a: PeerAdd) -> CliResult {
    let sid = ctx.server(&a.server).await?;
    let base = a.name;
    let mut spec = NewPeer::new(base.clone());
    spec.ipv6 = a.ipv6;
    spec.ipv4 = a.ipv4;
    spec.prefix = a.prefix;
    spec.public_key = a.public_key;
    if let Some(List(ips)) = a.allowed_ips {
        spec.extra_allowed_ips = ips;
    }
    spec.keepalive = a.keepalive;
    spec.endpoint = a.endpoint;
    spec.expires_at = a.expires.map(|w| w.at(ctx.m.now(), Relative::Future));
    spec.description = a.description;
    spec.preshared_key = !a.no_psk;
    if let Some(o) = &a.owner {
        spec.owner = Some(owner(ctx, o).await?);
    }
    let views = match a.count {
        None => vec![ctx.m.add_peer(&ctx.p, sid, spec).await?],
        Some(n) => {
            let specs = spec.numbered(n)?;
            let spinner = progress::spinner(ctx.out, &format!("adding {n} peers in one revision"));
            let res = ctx.m.add_peers(&ctx.p, sid, specs).await;
            spinner.finish();
            res?
        }
    };
    if ctx.out.json {
        return ctx.out.json(&views);
    }
    list(ctx, &views)?;
    if let Some(first) = views.first() {
        let what = if views.len() == 1 {
            first.name.to_string()
        } else {
            "NAME".to_owned()
        };
        ctx.out.note(&format!(
            "client config: wgm peer config {} {what}",
            a.server
        ));
    }
    Ok(())
}

fn short_key(k: &PublicKey) -> String {
    let s = k.to_base64();
    format!("{}…", &s[..10])
}

/// The peers as a table (JSON: an array of `PeerView`).
fn list(ctx: &Ctx, peers: &[PeerView]) -> CliResult {
    if ctx.out.json {
        return ctx.out.json(peers);
    }
    let now = ctx.m.now();
    let rows: Vec<Vec<Cell>> = peers
        .iter()
        .map(|v| {
            let expired = v.expires_at.is_some_and(|t| t <= now);
            vec![
                Cell::plain(v.name.as_str()),
                Cell::plain(out::opt(v.address_v6)),
                Cell::plain(out::opt(v.address_v4)),
                server::state_cell(v.enabled, expired),
                Cell::plain(short_key(&v.public_key)),
                Cell::plain(if v.has_private_key { "wgm" } else { "peer" }),
                Cell::plain(v.expires_at.map_or_else(|| "-".to_owned(), out::time)),
            ]
        })
        .collect();
    ctx.out.table(
        &[
            "NAME",
            "IPV6",
            "IPV4",
            "STATE",
            "PUBLIC KEY",
            "KEY HELD BY",
            "EXPIRES",
        ],
        &rows,
        "no peers yet (add one: wgm peer add SERVER NAME)",
    )
}

/// One peer (JSON: the `PeerView`).
fn show(ctx: &Ctx, v: &PeerView) -> CliResult {
    if ctx.out.json {
        return ctx.out.json(v);
    }
    let now = ctx.m.now();
    let expired = v.expires_at.is_some_and(|t| t <= now);
    let state = if expired {
        "expired"
    } else if v.enabled {
        "enabled"
    } else {
        "disabled"
    };
    let pairs = vec![
        ("name", v.name.to_string()),
        ("id", v.id.to_string()),
        ("state", state.to_owned()),
        ("public key", v.public_key.to_string()),
        (
            "private key",
            if v.has_private_key {
                "held by wgm (sealed)".to_owned()
            } else {
                "held by the peer only".to_owned()
            },
        ),
        (
            "preshared key",
            if v.has_preshared_key { "yes" } else { "no" }.to_owned(),
        ),
        ("ipv6", out::opt(v.address_v6)),
        ("ipv4", out::opt(v.address_v4)),
        ("prefix", out::opt(v.delegated_prefix)),
        ("allowed ips", out::list(&v.allowed_ips)),
        ("endpoint", out::opt(v.endpoint.as_ref())),
        ("keepalive", v.keepalive.to_string()),
        ("owner", out::opt(v.owner)),
        ("description", out::opt(v.description.as_ref())),
        (
            "expires",
            v.expires_at.map_or_else(|| "-".to_owned(), out::time),
        ),
        (
            "last seen",
            v.stats.last_seen.map_or_else(|| "-".to_owned(), out::time),
        ),
        (
            "transfer",
            format!(
                "{} received, {} sent",
                out::bytes(v.stats.rx_bytes),
                out::bytes(v.stats.tx_bytes)
            ),
        ),
        ("allow", policy_allow(&v.policy)),
        ("rate up", out::opt(v.policy.rate_up)),
        ("rate down", out::opt(v.policy.rate_down)),
        ("quota", policy_quota(&v.policy)),
        ("created", out::time(v.created_at)),
        ("updated", out::time(v.updated_at)),
    ];
    ctx.out.kv(&pairs)
}

/// A peer's allow list as `peer show` and `policy show` print it.
pub fn policy_allow(p: &PeerPolicy) -> String {
    match &p.allow {
        None => "(server default)".to_owned(),
        Some(rules) if rules.is_empty() => "nothing".to_owned(),
        Some(rules) => out::list(rules),
    }
}

/// A peer's quota as `peer show` and `policy show` print it.
pub fn policy_quota(p: &PeerPolicy) -> String {
    p.quota
        .map_or_else(|| "-".to_owned(), |q| format!("{q} ({})", p.quota_action))
}

async fn set(ctx: &Ctx, a: PeerSet) -> CliResult {
    let (sid, pid) = resolve(
        ctx,
        &PeerRef {
            server: a.server.clone(),
            peer: a.peer.clone(),
        },
    )
    .await?;
    let mut u = PeerUpdate {
        name: a.rename,
        keepalive: a.keepalive,
        ..PeerUpdate::default()
    };
    u.description = a.description.map(OrNone::into_option);
    u.extra_allowed_ips = a.allowed_ips.map(|List(ips)| ips);
    u.endpoint = a.endpoint.map(OrNone::into_option);
    u.expires_at = a
        .expires
        .map(|w| w.into_option().map(|w| w.at(ctx.m.now(), Relative::Future)));
    if let Some(o) = &a.owner {
        u.owner = Some(if parse::is_none_word(o) {
            None
        } else {
            Some(owner(ctx, o).await?)
        });
    }
    let settings = !(u.name.is_none()
        && u.description.is_none()
        && u.owner.is_none()
        && u.extra_allowed_ips.is_none()
        && u.keepalive.is_none()
        && u.endpoint.is_none()
        && u.expires_at.is_none());
    let policy = a.allow.is_some()
        || a.rate_up.is_some()
        || a.rate_down.is_some()
        || a.quota.is_some()
        || a.quota_action.is_some();
    if !settings && !policy {
        return Err(CliError::Usage(
            "nothing to change: give at least one option (see wgm peer set --help)".into(),
        ));
    }
    if settings && policy {
        // Two revisions under two permissions: together they could half succeed.
        return Err(CliError::Usage(
            "the firewall options (--allow, --rate-up, --rate-down, --quota, --quota-action) \
             change the peer's policy, a revision of its own: give them in a `peer set` \
             without other settings"
                .into(),
        ));
    }
    // The head before the peer: a policy merged into the peer read here commits only at
    // that revision (a concurrent change is a conflict, never overwritten).
    let at = ctx.m.get_server(&ctx.p, sid).await?.revision;
    let mut v = if settings {
        ctx.m.update_peer(&ctx.p, sid, pid, u).await?
    } else {
        ctx.m.get_peer(&ctx.p, sid, pid).await?
    };
    if policy {
        // The policy is a revision of its own, under its own permission (peer:policy).
        let mut pol = v.policy.clone();
        if let Some(x) = a.allow {
            pol.allow = x.into_option();
        }
        if let Some(x) = a.rate_up {
            pol.rate_up = x.into_option();
        }
        if let Some(x) = a.rate_down {
            pol.rate_down = x.into_option();
        }
        if let Some(x) = a.quota {
            let q = x.into_option();
            if q.is_some() && q != pol.quota {
                // A new quota counts from now on.
                pol.quota_start = u64::try_from(ctx.m.now().unix_timestamp()).unwrap_or(0);
            }
            pol.quota = q;
        }
        if let Some(x) = a.quota_action {
            pol.quota_action = x;
        }
        let writer = ctx.p.clone().if_revision([at.0]);
        v = ctx.m.set_peer_policy(&writer, sid, pid, pol).await?;
    }
    show(ctx, &v)
}

async fn config(ctx: &Ctx, a: PeerConfig) -> CliResult {
    if let Some(path) = &a.out {
        server::check_out_path(path)?;
    }
    let (sid, pid) = resolve(
        ctx,
        &PeerRef {
            server: a.server.clone(),
            peer: a.peer.clone(),
        },
    )
    .await?;
    let cfg = ctx.m.client_config(&ctx.p, sid, pid).await?;
    if a.qr && !cfg.complete {
        return Err(Error::invalid(
            "peer.private_key",
            "wgm does not hold this peer's private key (it brought its own), so a QR code could not be imported; use the text config and add the key on the device",
        )
        .into());
    }
    if !cfg.complete {
        ctx.out.warn(&format!(
            "peer {} brought its own key: add `PrivateKey = <its private key>` to [Interface] on the device",
            cfg.peer.name
        ));
    }
    if let Some(path) = &a.out {
        server::write_private(path, cfg.text.as_bytes())?;
        if ctx.out.json {
            return ctx.out.json(&json!({
                "peer": cfg.peer,
                "complete": cfg.complete,
                "file": path.display().to_string(),
            }));
        }
        ctx.out
            .note(&format!("wrote {} (mode 0600)", path.display()));
        if a.qr {
            ctx.out.raw(&wgm_core::wgquick::qr_terminal(&cfg.text)?)?;
        }
        return Ok(());
    }
    if ctx.out.json {
        let doc = Zeroizing::new(
            serde_json::to_string_pretty(&json!({
                "peer": cfg.peer,
                "complete": cfg.complete,
                "config": cfg.text.as_str(),
            }))
            .map_err(|e| CliError::Failed(format!("cannot encode JSON: {e}")))?,
        );
        return ctx.out.raw(&format!("{}\n", doc.as_str()));
    }
    if a.qr {
        return ctx.out.raw(&wgm_core::wgquick::qr_terminal(&cfg.text)?);
    }
    ctx.out.raw(&cfg.text)
}
