//! `wgm init` and `wgm quickstart`.

use serde_json::json;
use wgm_core::manager::{NewPeer, NewServer};
use wgm_core::names::PeerName;
use wgm_core::net::{Endpoint, ListenPort};
use zeroize::Zeroizing;

use crate::args::QuickstartArgs;
use crate::cmd::server;
use crate::ctx::{Ctx, KeyOrigin};
use crate::error::{CliError, CliResult};
use crate::out::Style;
use crate::parse;

/// The peers `quickstart` creates.
const QUICKSTART_PEERS: [&str; 3] = ["laptop", "phone", "tablet"];

fn key_text(origin: &KeyOrigin) -> String {
    match origin {
        KeyOrigin::File { path, created } => format!(
            "{} ({})",
            path.display(),
            if *created {
                "created, mode 0600"
            } else {
                "existing"
            }
        ),
        KeyOrigin::Env => "from WGM_MASTER_KEY".to_owned(),
        KeyOrigin::Value => "given as a value".to_owned(),
        KeyOrigin::Ephemeral => "ephemeral (in-memory store)".to_owned(),
    }
}

/// `wgm init`: everything happened in [`Ctx::open`]; say what.
pub fn init(ctx: &Ctx) -> CliResult {
    if ctx.out.json {
        return ctx.out.json(&json!({
            "store": ctx.location.redacted(),
            "store_created": ctx.store_created,
            "master_key": ctx.key_origin,
        }));
    }
    ctx.out.kv(&[
        (
            "store",
            format!(
                "{} ({})",
                ctx.location.redacted(),
                if ctx.store_created {
                    "created"
                } else {
                    "existing"
                }
            ),
        ),
        ("master key", key_text(&ctx.key_origin)),
    ])?;
    if matches!(ctx.key_origin, KeyOrigin::File { created: true, .. }) {
        ctx.out.note(
            "back up the master key file: without it no private key in the store can be opened",
        );
    }
    ctx.out.note("next: wgm server create NAME --listen-port 51820 [--ipv4 10.8.0.0/24] [--endpoint HOST:51820]");
    Ok(())
}

/// `wgm quickstart`: a dual-stack server with three peers, through the same calls as
/// `server create`, `peer add` and `peer config`.
pub async fn quickstart(ctx: &Ctx, a: QuickstartArgs) -> CliResult {
    let name = a.name;
    // Running the quick start again is normal: the README says so. An existing server
    // of that name is reported (exit 0) and left as it is, whatever the other options.
    match ctx.m.resolve_server(&ctx.p, name.as_str()).await {
        Ok(id) => return quickstart_exists(ctx, id).await,
        Err(wgm_core::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let given = a.interface.as_deref().map(parse::interface).transpose()?;
    let interface = server::interface_name(given, &name)?;
    let port = ListenPort::parse(&a.listen_port, "server.listen_port")?;
    let mut spec = NewServer::new(name, interface, port);
    spec.ipv6_pool = a.ipv6.as_deref().map(parse::ipv6_pool).transpose()?;
    spec.ipv4_pool = parse::ipv4_pool(&a.ipv4)?.into_option();
    spec.endpoint = a
        .endpoint
        .as_deref()
        .map(|s| Endpoint::parse(s, "server.endpoint"))
        .transpose()?;
    let names = QUICKSTART_PEERS
        .iter()
        .map(|n| PeerName::new(*n))
        .collect::<Result<Vec<_>, _>>()?;
    let v = ctx.m.create_server(&ctx.p, spec).await?;
    let mut peers = Vec::with_capacity(names.len());
    for n in names {
        let peer = ctx.m.add_peer(&ctx.p, v.id, NewPeer::new(n)).await?;
        let cfg = ctx.m.client_config(&ctx.p, v.id, peer.id).await?;
        peers.push(cfg);
    }
    let v = ctx.m.get_server(&ctx.p, v.id).await?;
    if ctx.out.json {
        let list: Vec<_> = peers
            .iter()
            .map(|c| json!({ "peer": c.peer, "config": c.text.as_str() }))
            .collect();
        let doc = Zeroizing::new(
            serde_json::to_string_pretty(&json!({
                "store": ctx.location.redacted(),
                "master_key": ctx.key_origin,
                "server": v,
                "created": true,
                "peers": list,
            }))
            .map_err(|e| CliError::Failed(format!("cannot encode JSON: {e}")))?,
        );
        return ctx.out.raw(&format!("{}\n", doc.as_str()));
    }
    ctx.out.kv(&[
        ("store", ctx.location.redacted()),
        ("master key", key_text(&ctx.key_origin)),
        (
            "server",
            format!(
                "{} (interface {}, port {}, revision {})",
                v.name, v.interface, v.listen_port, v.revision
            ),
        ),
        (
            "ipv6 pool",
            format!("{} (server {})", v.ipv6_pool, v.address_v6),
        ),
        (
            "ipv4 pool",
            match (v.ipv4_pool, v.address_v4) {
                (Some(p), Some(a)) => format!("{p} (server {a})"),
                _ => "-".to_owned(),
            },
        ),
    ])?;
    for c in &peers {
        let addrs: Vec<String> = c
            .peer
            .address_v6
            .map(|a| a.to_string())
            .into_iter()
            .chain(c.peer.address_v4.map(|a| a.to_string()))
            .collect();
        ctx.out.line("")?;
        ctx.out.line(&ctx.out.paint(
            &format!("## client config of {} ({})", c.peer.name, addrs.join(", ")),
            Style::Bold,
        ))?;
        ctx.out.raw(&c.text)?;
        if a.qr {
            ctx.out.raw(&wgm_core::wgquick::qr_terminal(&c.text)?)?;
        }
    }
    ctx.out.line("")?;
    if v.endpoint.is_none() {
        ctx.out.note(&format!(
            "the configs have no Endpoint yet: wgm server set {} --endpoint YOUR-HOST:{}",
            v.name, v.listen_port
        ));
    }
    ctx.out.note(&format!(
        "next: wgm peer list {0}; wgm peer config {0} laptop --qr; as root: wgm apply {0}",
        v.name
    ));
    Ok(())
}

/// `wgm quickstart` when its server exists already: say so, and how to see its peers.
async fn quickstart_exists(ctx: &Ctx, id: wgm_core::model::ServerId) -> CliResult {
    let v = ctx.m.get_server(&ctx.p, id).await?;
    if ctx.out.json {
        return ctx.out.json(&json!({
            "store": ctx.location.redacted(),
            "master_key": ctx.key_origin,
            "server": v,
            "created": false,
        }));
    }
    ctx.out.line(&format!(
        "server {} exists (interface {}, port {}, {} peers, revision {}); nothing changed",
        v.name, v.interface, v.listen_port, v.peer_count, v.revision
    ))?;
    ctx.out.note(&format!(
        "its peers: wgm peer list {0}; a client config: wgm peer config {0} PEER [--qr]; \
         a fresh demo: wgm quickstart OTHER-NAME",
        v.name
    ));
    Ok(())
}
