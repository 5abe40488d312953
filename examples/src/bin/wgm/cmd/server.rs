//! `wgm server …`.

use std::io::Read;
use std::path::Path;

use serde_json::json;
use wgm_core::manager::{ImportOptions, NewServer, ServerUpdate, ServerView};
use wgm_core::model::{Delegation, Page, TunnelMode};
use wgm_core::names::{InterfaceName, ServerName};

use wgm_core::Error;
use zeroize::Zeroizing;

use crate::args::{ServerCmd, ServerCreate, ServerExport, ServerImport, ServerSet};
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use crate::out::{self, Cell, Style};
use crate::parse::{List, OrNone};
use crate::progress;

/// Run a `server` subcommand.
pub async fn run(ctx: &Ctx, cmd: ServerCmd) -> CliResult {
    match cmd {
        ServerCmd::Create(a) => create(ctx, a).await,
        ServerCmd::List => list(ctx).await,
        ServerCmd::Show(a) => {
            let id = ctx.server(&a.server).await?;
            let v = ctx.m.get_server(&ctx.p, id).await?;
            show(ctx, &v)
        }
        ServerCmd::Delete(a) => {
            let id = ctx.server(&a.server).await?;
            let v = ctx.m.get_server(&ctx.p, id).await?;
            let rev = ctx.m.delete_server(&ctx.p, id).await?;
            if ctx.out.json {
                return ctx.out.json(&json!({
                    "deleted": { "id": v.id, "name": v.name, "revision": rev }
                }));
            }
            ctx.out.line(&format!(
                "deleted server {} and its {} peers (revision {rev}; the history is kept)",
                v.name, v.peer_count
            ))?;
            ctx.out.note(
                "a live interface is left as it is; to remove one, first `wgm server set NAME --active no` and `wgm apply NAME`",
            );
            Ok(())
        }
        ServerCmd::Set(a) => set(ctx, a).await,
        ServerCmd::Export(a) => export(ctx, a).await,
        ServerCmd::Import(a) => import(ctx, a).await,
        ServerCmd::RestoreKey(a) => {
            let id = ctx.server(&a.server).await?;
            let v = ctx.m.restore_server_key(&ctx.p, id, a.from).await?;
            if ctx.out.json {
                return ctx.out.json(&v);
            }
            ctx.out.line(&format!(
                "server {} has the key of revision {} again (public key {}, revision {}); every client needs its config again",
                v.name, a.from, v.public_key, v.revision
            ))
        }
        ServerCmd::RotateKey(a) => {
            let id = ctx.server(&a.server).await?;
            let v = ctx.m.rotate_server_key(&ctx.p, id).await?;
            if ctx.out.json {
                return ctx.out.json(&v);
            }
            ctx.out.line(&format!(
                "server {} has a new public key {} (revision {}); every client needs its config again",
                v.name, v.public_key, v.revision
            ))
        }
    }
}

/// The interface name: given, or the server name when that is a valid one.
pub fn interface_name(
    given: Option<InterfaceName>,
    server: &ServerName,
) -> CliResult<InterfaceName> {
    match given {
        Some(i) => Ok(i),
        None => InterfaceName::new(server.as_str()).map_err(|_| {
            Error::invalid(
                "server.interface",
                "the server name is not a valid interface name (1-15 of A-Z a-z 0-9 _ = + . -); give --interface",
            )
            .into()
        }),
    }
}

async fn create(ctx: &Ctx, a: ServerCreate) -> CliResult {
    let name = a.name;
    let interface = interface_name(a.interface, &name)?;
    let mut spec = NewServer::new(name, interface, a.listen_port);
    spec.ipv6_pool = a.ipv6;
    spec.ipv4_pool = a.ipv4.and_then(OrNone::into_option);
    spec.endpoint = a.endpoint;
    if let Some(List(d)) = a.dns {
        spec.dns = d;
    }
    spec.mtu = a.mtu;
    if let Some(s) = a.strategy {
        spec.strategy = s.into();
    }
    spec.fwmark = a.fwmark;
    spec.host = a.host;
    if let Some(t) = a.tunnel {
        spec.client_template.tunnel = t.into();
    }
    if let Some(pool) = a.delegation {
        spec.delegation = Some(Delegation {
            pool,
            prefix_len: a.delegation_len,
        });
    }
    let v = ctx.m.create_server(&ctx.p, spec).await?;
    if ctx.out.json {
        return ctx.out.json(&v);
    }
    show(ctx, &v)?;
    if v.endpoint.is_none() {
        ctx.out.note(&format!(
            "hint: clients need to know where to connect: wgm server set {} --endpoint HOST:{}",
            v.name, v.listen_port
        ));
    }
    Ok(())
}

async fn list(ctx: &Ctx) -> CliResult {
    let summaries = ctx.m.list_servers(&ctx.p, Page::ALL).await?;
    let mut views = Vec::with_capacity(summaries.len());
    for s in summaries {
        match ctx.m.get_server(&ctx.p, s.id).await {
            Ok(v) => views.push(v),
            // Deleted between the listing and the read.
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if ctx.out.json {
        return ctx.out.json(&views);
    }
    let rows: Vec<Vec<Cell>> = views
        .iter()
        .map(|v| {
            vec![
                Cell::plain(v.name.as_str()),
                Cell::plain(v.interface.as_str()),
                Cell::plain(v.listen_port.to_string()),
                Cell::plain(v.ipv6_pool.to_string()),
                Cell::plain(out::opt(v.ipv4_pool)),
                Cell::plain(out::opt(v.endpoint.as_ref())),
                Cell::plain(v.peer_count.to_string()),
                Cell::plain(v.revision.to_string()),
            ]
        })
        .collect();
    ctx.out.table(
        &[
            "NAME",
            "INTERFACE",
            "PORT",
            "IPV6 POOL",
            "IPV4 POOL",
            "ENDPOINT",
            "PEERS",
            "REV",
        ],
        &rows,
        "no servers yet (create one: wgm server create NAME --listen-port 51820)",
    )
}

/// Print one server (JSON: the `ServerView`).
pub fn show(ctx: &Ctx, v: &ServerView) -> CliResult {
    if ctx.out.json {
        return ctx.out.json(v);
    }
    let tunnel = match v.client_template.tunnel {
        TunnelMode::Full => "full (all traffic)",
        TunnelMode::Split => "split (only the server's networks)",
    };
    let strategy = match v.strategy {
        wgm_core::ipam::Strategy::Sequential => "sequential",
        wgm_core::ipam::Strategy::Random => "random",
    };
    let mut pairs = vec![
        ("name", v.name.to_string()),
        ("id", v.id.to_string()),
        ("interface", v.interface.to_string()),
        ("listen port", v.listen_port.to_string()),
        ("public key", v.public_key.to_string()),
        (
            "ipv6 pool",
            format!("{} (server {})", v.ipv6_pool, v.address_v6),
        ),
        (
            "ipv4 pool",
            match (v.ipv4_pool, v.address_v4) {
                (Some(p), Some(a)) => format!("{p} (server {a})"),
                (Some(p), None) => p.to_string(),
                _ => "-".to_owned(),
            },
        ),
        ("endpoint", out::opt(v.endpoint.as_ref())),
        ("dns", out::list(&v.dns)),
        ("mtu", v.mtu.to_string()),
        ("fwmark", out::opt(v.fwmark)),
        ("allocation", strategy.to_owned()),
        ("client tunnel", tunnel.to_owned()),
        ("client keepalive", v.client_template.keepalive.to_string()),
        (
            "active",
            if v.active {
                "yes"
            } else {
                "no (apply removes the interface)"
            }
            .to_owned(),
        ),
        ("host", out::opt(v.host.as_ref())),
        ("peers", v.peer_count.to_string()),
        ("revision", v.revision.to_string()),
        ("created", out::time(v.created_at)),
        ("updated", out::time(v.updated_at)),
    ];
    if let Some(d) = &v.delegation {
        pairs.insert(
            7,
            ("delegation", format!("/{} out of {}", d.prefix_len, d.pool)),
        );
    }
    ctx.out.kv(&pairs)
}

async fn set(ctx: &Ctx, a: ServerSet) -> CliResult {
    let id = ctx.server(&a.server).await?;
    let mut u = ServerUpdate {
        name: a.rename,
        listen_port: a.listen_port,
        mtu: a.mtu,
        strategy: a.strategy.map(Into::into),
        ..ServerUpdate::default()
    };
    u.endpoint = a.endpoint.map(OrNone::into_option);
    u.dns = a.dns.map(|List(d)| d);
    u.fwmark = a.fwmark.map(OrNone::into_option);
    u.active = a.active.map(bool::from);
    u.host = a.host.map(OrNone::into_option);
    let tunnel = a.tunnel.map(wgm_core::model::TunnelMode::from);
    let keepalive = a.client_keepalive;
    if tunnel.is_some() || keepalive.is_some() {
        let mut t = ctx.m.get_server(&ctx.p, id).await?.client_template;
        if let Some(x) = tunnel {
            t.tunnel = x;
        }
        if let Some(k) = keepalive {
            t.keepalive = k;
        }
        u.client_template = Some(t);
    }
    let nothing = u.name.is_none()
        && u.listen_port.is_none()
        && u.endpoint.is_none()
        && u.dns.is_none()
        && u.mtu.is_none()
        && u.fwmark.is_none()
        && u.strategy.is_none()
        && u.active.is_none()
        && u.host.is_none()
        && u.client_template.is_none();
    if nothing {
        return Err(CliError::Usage(
            "nothing to change: give at least one option (see wgm server set --help)".into(),
        ));
    }
    let v = ctx.m.update_server(&ctx.p, id, u).await?;
    show(ctx, &v)
}

async fn export(ctx: &Ctx, a: ServerExport) -> CliResult {
    if let Some(path) = &a.out {
        check_out_path(path)?;
    }
    let id = ctx.server(&a.server).await?;
    let v = ctx.m.get_server(&ctx.p, id).await?;
    let text = ctx.m.server_config(&ctx.p, id).await?;
    if let Some(path) = &a.out {
        write_private(path, text.as_bytes())?;
        if ctx.out.json {
            return ctx
                .out
                .json(&json!({ "server": v.name, "file": path.display().to_string() }));
        }
        ctx.out
            .note(&format!("wrote {} (mode 0600)", path.display()));
        return Ok(());
    }
    if ctx.out.json {
        let doc = Zeroizing::new(
            serde_json::to_string_pretty(&json!({ "server": v.name, "config": text.as_str() }))
                .map_err(|e| CliError::Failed(format!("cannot encode JSON: {e}")))?,
        );
        return ctx.out.raw(&format!("{}\n", doc.as_str()));
    }
    ctx.out.raw(&text)
}

/// Write a file holding secrets: mode 0600, atomically, only to a new file or over an
/// existing regular file (`wgm_cli::files`).
pub fn write_private(path: &Path, data: &[u8]) -> CliResult {
    wgm_cli::files::write_private_atomic(path, data).map_err(|e| out_error(path, &e))
}

/// Refuse an `--out` path that is not a new file or a regular file before producing
/// the secret that would go there (a config export is audited; a refused path must not
/// leave a record of an export that never happened). `write_private` checks again.
pub fn check_out_path(path: &Path) -> CliResult {
    wgm_cli::files::check_output_path(path)
        .map(drop)
        .map_err(|e| out_error(path, &e))
}

fn out_error(path: &Path, e: &std::io::Error) -> CliError {
    let shown = path.display();
    CliError::Failed(match wgm_cli::files::not_regular(e) {
        Some(n) => format!(
            "cannot write {shown}: it {n}; --out writes only to a new file or an existing \
             regular file (without --out the output goes to stdout)"
        ),
        None => format!("cannot write {shown}: {e}"),
    })
}

/// Read an input file (or stdin for `-`) as UTF-8, at most `max` bytes (one more is
/// read so that the library can refuse an oversize file with its own message).
pub fn read_input(path: &Path, field: &'static str, max: usize) -> CliResult<Zeroizing<String>> {
    let mut buf = Zeroizing::new(Vec::new());
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let res = if path.as_os_str() == "-" {
        std::io::stdin().lock().take(limit).read_to_end(&mut buf)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut buf))
    };
    res.map_err(|e| Error::invalid(field, format!("cannot read {}: {e}", path.display())))?;
    let text = std::str::from_utf8(&buf).map_err(|_| Error::invalid(field, "is not UTF-8 text"))?;
    Ok(Zeroizing::new(text.to_owned()))
}

async fn import(ctx: &Ctx, a: ServerImport) -> CliResult {
    let name = a.name;
    let interface = a.interface;
    let text = read_input(&a.file, "import.file", 16 << 20)?;
    let spinner = progress::spinner(ctx.out, &format!("importing {}", a.file.display()));
    let res = ctx
        .m
        .import_server(
            &ctx.p,
            name,
            &text,
            ImportOptions {
                allow_hooks: a.allow_hooks,
                interface,
            },
        )
        .await;
    spinner.finish();
    let v = res?;
    if ctx.out.json {
        return ctx.out.json(&v);
    }
    ctx.out.note(&format!(
        "imported server {} with {} peers as revision {}",
        v.name, v.peer_count, v.revision
    ));
    show(ctx, &v)
}

/// A styled "enabled/disabled/expired" cell.
pub fn state_cell(enabled: bool, expired: bool) -> Cell {
    if expired {
        Cell::styled("expired", Style::Yellow)
    } else if enabled {
        Cell::styled("enabled", Style::Green)
    } else {
        Cell::styled("disabled", Style::Red)
    }
}
