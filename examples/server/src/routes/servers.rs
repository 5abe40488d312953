//! Servers: list, create, import, show, change, delete, keys, export, status as the
//! agents reported it, history, diff, rollback.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;
use wgm_cli::parse as p;
use wgm_core::manager::{ImportOptions, NewServer, ServerUpdate};
use wgm_core::model::{ClientTemplate, Delegation, RevisionNo, TunnelMode};
use wgm_core::net::{FwMark, Keepalive, ListenPort, Mtu};
use wgm_core::Error;

use super::{
    check_precondition, head, json_with_etag, name_matches, no_store, precondition, server_id,
    Errors, PageArgs,
};
use crate::auth::Caller;
use crate::dto::{
    DeletedServer, DiffOut, FromRevisionIn, HistoryOut, HostPlanOut, HostStatusOut, ImportIn,
    PlanOut, RollbackIn, ServerConfigOut, ServerIn, ServerList, ServerOut, ServerPatch, StatusOut,
    StrategyIn, TemplatePatch, TunnelIn,
};
use crate::error::{at, ApiResult};
use crate::extract::{Body, Precondition, Seg, Q};
use crate::state::AppState;

/// Filters and page of the server list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServerQuery {
    /// Only servers whose name contains this (case-insensitive).
    name: Option<String>,
    /// Only servers assigned to this host.
    host: Option<String>,
    /// Page size, 1–1000 (default 100).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Items to skip (default 0).
    #[param(value_type = Option<u64>, minimum = 0, maximum = 4_294_967_295_u64)]
    offset: Option<String>,
}

fn strategy(s: StrategyIn) -> wgm_core::ipam::Strategy {
    match s {
        StrategyIn::Sequential => wgm_core::ipam::Strategy::Sequential,
        StrategyIn::Random => wgm_core::ipam::Strategy::Random,
    }
}

fn tunnel(t: TunnelIn) -> TunnelMode {
    match t {
        TunnelIn::Full => TunnelMode::Full,
        TunnelIn::Split => TunnelMode::Split,
    }
}

fn dns(list: &[String], field: &'static str) -> wgm_core::Result<Vec<wgm_core::net::DnsEntry>> {
    let v = list
        .iter()
        .enumerate()
        .map(|(i, x)| {
            wgm_core::net::DnsEntry::parse(x, field).map_err(|e| match e {
                Error::InvalidInput { reason, .. } => {
                    Error::invalid(format!("{field}[{i}]"), reason)
                }
                other => other,
            })
        })
        .collect::<wgm_core::Result<Vec<_>>>()?;
    wgm_core::net::check_dns_list(&v, field)?;
    Ok(v)
}

fn nets(list: &[String], field: &'static str) -> wgm_core::Result<Vec<ipnet::IpNet>> {
    list.iter()
        .enumerate()
        .map(|(i, x)| {
            wgm_core::net::parse_allowed_ip(x, field).map_err(|e| match e {
                Error::InvalidInput { reason, .. } => {
                    Error::invalid(format!("{field}[{i}]"), reason)
                }
                other => other,
            })
        })
        .collect()
}

/// The servers the caller may see, by name.
#[utoipa::path(get, path = "/api/v1/servers", tag = "servers", params(ServerQuery),
    responses((status = 200, description = "One page of servers", body = ServerList), Errors),
    security(("bearer" = [])))]
pub async fn list(
    State(s): State<AppState>,
    c: Caller,
    Q(q): Q<ServerQuery>,
) -> ApiResult<axum::Json<ServerList>> {
    let page = PageArgs::parse(q.limit.as_deref(), q.offset.as_deref())?;
    let all = s
        .op(
            "server.list",
            s.m.list_servers(&c.p, wgm_core::model::Page::ALL),
        )
        .await?;
    let matching: Vec<_> = all
        .into_iter()
        .filter(|x| name_matches(x.name.as_str(), q.name.as_deref()))
        .filter(|x| {
            q.host.as_deref().is_none_or(|h| {
                x.host
                    .as_ref()
                    .is_some_and(|xh| xh.as_str().eq_ignore_ascii_case(h))
            })
        })
        .collect();
    let (summaries, total, next_offset) = page.cut(matching);
    let mut items = Vec::with_capacity(summaries.len());
    for x in summaries {
        match s.op("server.get", s.m.get_server(&c.p, x.id)).await {
            Ok(v) => items.push(ServerOut::from(v)),
            // Deleted between the listing and the read.
            Err(e) if e.status == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    Ok(axum::Json(ServerList {
        items,
        total,
        offset: page.offset,
        limit: page.limit,
        next_offset,
    }))
}

/// Create a server (revision 1).
#[utoipa::path(post, path = "/api/v1/servers", tag = "servers", request_body = ServerIn,
    responses((status = 201, description = "Created", body = ServerOut, headers(("ETag" = String, description = "The server's revision"))), Errors),
    security(("bearer" = [])))]
pub async fn create(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<ServerIn>,
) -> ApiResult<Response> {
    let name = p::server_name(&b.name)?;
    let interface = match &b.interface {
        Some(i) => wgm_core::names::InterfaceName::new(i).map_err(|e| at(e, "server.interface"))?,
        None => wgm_core::names::InterfaceName::new(name.as_str()).map_err(|_| {
            Error::invalid(
                "server.interface",
                "the server name is not a valid interface name (1-15 of A-Z a-z 0-9 _ = + . -); give one",
            )
        })?,
    };
    let port = ListenPort::new(b.listen_port).map_err(|e| e.in_field("server"))?;
    let mut spec = NewServer::new(name, interface, port);
    if let Some(v) = &b.ipv6_pool {
        spec.ipv6_pool = Some(p::ipv6_pool(v)?);
    }
    if let Some(v) = &b.ipv4_pool {
        spec.ipv4_pool = p::ipv4_pool(v)?.into_option();
    }
    if let Some(v) = &b.endpoint {
        spec.endpoint = Some(p::server_endpoint(v)?);
    }
    if let Some(v) = &b.dns {
        spec.dns = dns(v, "server.dns")?;
    }
    if let Some(v) = b.mtu {
        spec.mtu = Some(Mtu::new(v).map_err(|e| e.in_field("server"))?);
    }
    if let Some(v) = b.strategy {
        spec.strategy = strategy(v);
    }
    if let Some(v) = b.fwmark {
        spec.fwmark = Some(FwMark::new(v).map_err(|e| e.in_field("server"))?);
    }
    if let Some(v) = &b.host {
        spec.host = Some(wgm_core::names::HostName::new(v).map_err(|e| at(e, "server.host"))?);
    }
    if let Some(t) = b.tunnel {
        spec.client_template.tunnel = tunnel(t);
    }
    if let Some(d) = &b.delegation {
        spec.delegation = Some(Delegation {
            pool: p::delegation_pool(&d.pool)?,
            prefix_len: d.prefix_len.unwrap_or(64),
        });
    }
    spec.quarantine_secs = b.quarantine_secs;
    let v = s.op("server.create", s.m.create_server(&c.p, spec)).await?;
    Ok(json_with_etag(
        StatusCode::CREATED,
        Some(v.revision),
        &ServerOut::from(v),
    ))
}

/// Import a wg-quick server file with all its peers and keys, in one revision.
#[utoipa::path(post, path = "/api/v1/servers/import", tag = "servers", request_body = ImportIn,
    responses((status = 201, description = "Imported", body = ServerOut), Errors),
    security(("bearer" = [])))]
pub async fn import(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<ImportIn>,
) -> ApiResult<Response> {
    let name = p::server_name(&b.name).map_err(|e| at(e, "import.name"))?;
    let interface = match &b.interface {
        Some(i) => {
            Some(wgm_core::names::InterfaceName::new(i).map_err(|e| at(e, "import.interface"))?)
        }
        None => None,
    };
    let opts = ImportOptions {
        allow_hooks: b.allow_hooks,
        interface,
    };
    let text = zeroize::Zeroizing::new(b.config);
    let v = s
        .op("server.import", s.m.import_server(&c.p, name, &text, opts))
        .await?;
    Ok(json_with_etag(
        StatusCode::CREATED,
        Some(v.revision),
        &ServerOut::from(v),
    ))
}

/// One server; its `ETag` is its head revision.
#[utoipa::path(get, path = "/api/v1/servers/{server}", tag = "servers",
    params(("server" = String, Path, description = "Server name or id")),
    responses((status = 200, description = "The server", body = ServerOut, headers(("ETag" = String, description = "The server's revision"))), Errors),
    security(("bearer" = [])))]
pub async fn get(
    State(s): State<AppState>,
    c: Caller,
    Seg(server): Seg<String>,
) -> ApiResult<Response> {
    let id = server_id(&s, &c, &server).await?;
    let v = s.op("server.get", s.m.get_server(&c.p, id)).await?;
    Ok(json_with_etag(
        StatusCode::OK,
        Some(v.revision),
        &ServerOut::from(v),
    ))
}

fn template(before: &ClientTemplate, t: &TemplatePatch) -> wgm_core::Result<ClientTemplate> {
    let mut out = before.clone();
    if let Some(v) = t.tunnel {
        out.tunnel = tunnel(v);
    }
    if let Some(v) = &t.extra_allowed_ips {
        out.extra_allowed_ips = nets(v, "server.client_template.extra_allowed_ips")?;
    }
    if let Some(v) = t.keepalive {
        out.keepalive = Keepalive::new(v).map_err(|e| e.in_field("server.client_template"))?;
    }
    if let Some(v) = &t.dns {
        out.dns = match v {
            Some(list) => Some(dns(list, "server.client_template.dns")?),
            None => None,
        };
    }
    if let Some(v) = t.mtu {
        out.mtu = match v {
            Some(m) => Some(Mtu::new(m).map_err(|e| e.in_field("server.client_template"))?),
            None => None,
        };
    }
    Ok(out)
}

/// Change a server's settings (one revision). `If-Match` makes it conditional.
#[utoipa::path(patch, path = "/api/v1/servers/{server}", tag = "servers", request_body = ServerPatch,
    params(("server" = String, Path, description = "Server name or id"),
           ("If-Match" = Option<String>, Header, description = "Only if the server is still at this revision (its ETag)")),
    responses((status = 200, description = "Changed", body = ServerOut, headers(("ETag" = String))), Errors),
    security(("bearer" = [])))]
pub async fn update(
    State(s): State<AppState>,
    c: Caller,
    Seg(server): Seg<String>,
    pre: Precondition,
    Body(b): Body<ServerPatch>,
) -> ApiResult<Response> {
    let id = server_id(&s, &c, &server).await?;
    let mut u = ServerUpdate::default();
    if let Some(v) = &b.name {
        u.name = Some(p::server_name(v)?);
    }
    if let Some(v) = b.listen_port {
        u.listen_port = Some(ListenPort::new(v).map_err(|e| e.in_field("server"))?);
    }
    if let Some(v) = &b.endpoint {
        u.endpoint = Some(match v {
            Some(e) => Some(p::server_endpoint(e)?),
            None => None,
        });
    }
    if let Some(v) = &b.dns {
        u.dns = Some(dns(v, "server.dns")?);
    }
    if let Some(v) = b.mtu {
        u.mtu = Some(Mtu::new(v).map_err(|e| e.in_field("server"))?);
    }
    if let Some(v) = b.fwmark {
        u.fwmark = Some(match v {
            Some(f) => Some(FwMark::new(f).map_err(|e| e.in_field("server"))?),
            None => None,
        });
    }
    u.strategy = b.strategy.map(strategy);
    u.quarantine_secs = b.quarantine_secs;
    u.active = b.active;
    if let Some(v) = &b.config_path {
        if let Some(path) = v {
            wgm_core::names::check_path_text(path, "server.config_path")?;
        }
        u.config_path = Some(v.clone());
    }
    if let Some(v) = &b.host {
        u.host = Some(match v {
            Some(h) => Some(wgm_core::names::HostName::new(h).map_err(|e| at(e, "server.host"))?),
            None => None,
        });
    }
    let c = check_precondition(&s, &c, id, &pre).await?;
    // A template patch merges into the template read here: the write then commits only
    // at that read's revision (a concurrent change is a 409, not a lost update).
    let mut writer = c.p.clone();
    if let Some(t) = &b.client_template {
        let before = s.op("server.get", s.m.get_server(&c.p, id)).await?;
        u.client_template = Some(template(&before.client_template, t)?);
        if c.p.required_revisions().is_none() {
            writer = writer.if_revision([before.revision.0]);
        }
    }
    let v = s
        .op("server.update", s.m.update_server(&writer, id, u))
        .await
        .map_err(precondition(&c))?;
    Ok(json_with_etag(
        StatusCode::OK,
        Some(v.revision),
        &ServerOut::from(v),
    ))
}

/// Delete a server and its peers (one final revision; the history is kept).
#[utoipa::path(delete, path = "/api/v1/servers/{server}", tag = "servers",
    params(("server" = String, Path, description = "Server name or id"),
           ("If-Match" = Option<String>, Header, description = "Only if the server is still at this revision")),
    responses((status = 200, description = "Deleted", body = DeletedServer), Errors),
    security(("bearer" = [])))]
pub async fn delete(
    State(s): State<AppState>,
    c: Caller,
    Seg(server): Seg<String>,
    pre: Precondition,
) -> ApiResult<axum::Json<DeletedServer>> {
    let id = server_id(&s, &c, &server).await?;
    let c = check_precondition(&s, &c, id, &pre).await?;
    let v = s.op("server.get", s.m.get_server(&c.p, id)).await?;
    let rev = s
        .op("server.delete", s.m.delete_server(&c.p, id))
        .await
        .map_err(precondition(&c))?;
    Ok(axum::Json(DeletedServer {
        id: v.id,
        name: v.name,
        revision: rev.0,
    }))
}

/// A new key pair for the server: every client needs its config again.
#[utoipa::path(post, path = "/api/v1/servers/{server}/rotate-key", tag = "servers",
    params(("server" = String, Path, description = "Server name or id"),
           ("If-Match" = Option<String>, Header, description = "Only if the server is still at this revision")),
    responses((status = 200, description = "Rotated", body = ServerOut, headers(("ETag" = String))), Errors),
    security(("bearer" = [])))]
pub async fn rotate_key(
    State(s): State<AppState>,
    c: Caller,
    Seg(server): Seg<String>,
    pre: Precondition,
) -> ApiResult<Response> {
    let id = server_id(&s, &c, &server).await?;
    let c = check_precondition(&s, &c, id, &pre).await?;
    let v = s
        .op("server.rotate_key", s.m.rotate_server_key(&c.p, id))
        .await
        .map_err(precondition(&c))?;
    Ok(json_with_etag(
        StatusCode::OK,
        Some(v.revision),
        &ServerOut::from(v),
    ))
}

/// Bring back the key pair the server had at revision `from`.
#[utoipa::path(post, path = "/api/v1/servers/{server}/restore-key", tag = "servers", request_body = FromRevisionIn,
    params(("server" = String, Path, description = "Server name or id"),
           ("If-Match" = Option<String>, Header, description = "Only if the server is still at this revision")),
    responses((status = 200, description = "Restored", body = ServerOut, headers(("ETag" = String))), Errors),
    security(("bearer" = [])))]
pub async fn restore_key(
    State(s): State<AppState>,
    c: Caller,
    Seg(server): Seg<String>,
    pre: Precondition,
    Body(b): Body<FromRevisionIn>,
) -> ApiResult<Response> {
    let from = revision(b.from, "restore.from")?;
    let id = server_id(&s, &c, &server).await?;
    let c = check_precondition(&s, &c, id, &pre).await?;
    let v = s
        .op("server.restore_key", s.m.restore_server_key(&c.p, id, from))
        .await
        .map_err(precondition(&c))?;
    Ok(json_with_etag(
        StatusCode::OK,
        Some(v.revision),
        &ServerOut::from(v),
    ))
}

fn revision(n: u64, field: &'static str) -> wgm_core::Result<RevisionNo> {
    if n == 0 {
        return Err(Error::invalid(field, "revisions start at 1"));
    }
    Ok(RevisionNo(n))
}

/// The server's own wg-quick file, with its private key (an audited secret export).
#[utoipa::path(get, path = "/api/v1/servers/{server}/config", tag = "servers",
    params(("server" = String, Path, description = "Server name or id")),
    responses((status = 200, description = "The wg-quick file", body = ServerConfigOut), Errors),
    security(("bearer" = [])))]
pub async fn export(
    State(s): State<AppState>,
    c: Caller,
    Seg(server): Seg<String>,
) -> ApiResult<Response> {
    let id = server_id(&s, &c, &server).await?;
    let rev = head(&s, &c, id).await?;
    let text = s.op("server.export", s.m.server_config(&c.p, id)).await?;
    let v = s.op("server.get", s.m.get_server(&c.p, id)).await?;
    Ok(no_store(json_with_etag(
        StatusCode::OK,
        Some(rev),
        &ServerConfigOut {
            server: v.name.to_string(),
            config: text.as_str().to_owned(),
        },
    )))
}

/// What each host's agent last reported of the server (`wgm status --reported`): no
/// device is touched.
#[utoipa::path(get, path = "/api/v1/servers/{server}/status", tag = "servers",
    params(("server" = String, Path, description = "Server name or id")),
    responses((status = 200, description = "The hosts' reports", body = StatusOut), Errors),
    security(("bearer" = [])))]
pub async fn status(
    State(s): State<AppState>,
    c: Caller,
    Seg(server): Seg<String>,
) -> ApiResult<Response> {
    let id = server_id(&s, &c, &server).await?;
    let rev = head(&s, &c, id).await?;
    let reports = s
        .op("server.host_reports", s.m.host_reports(&c.p, id))
        .await?;
    let now = s.m.now();
    let hosts = reports
        .into_iter()
        .map(|r| HostStatusOut {
            host: r.host.to_string(),
            agent: r.agent,
            applied: r.applied.map(|a| a.0),
            behind: r.applied.map_or(rev.0, |a| rev.0.saturating_sub(a.0)),
            instance: r.instance,
            converged: r.converged,
            peers: r.peers,
            error: r.error,
            heartbeat: r
                .heartbeat
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            age_secs: (now - r.heartbeat).whole_seconds().max(0),
        })
        .collect();
    Ok(json_with_etag(
        StatusCode::OK,
        Some(rev),
        &StatusOut {
            revision: rev.0,
            hosts,
        },
    ))
}

/// What each host still has to do: for every host an agent reported, the changes from
/// the revision it applied to the head (what its next apply does to the device, the
/// link and the firewall), as a diff by name. Nothing touches a device; a host that
/// applied nothing yet has everything to do (`pending` is null). Needs what `status`
/// and `diff` need.
#[utoipa::path(get, path = "/api/v1/servers/{server}/plan", tag = "servers",
    params(("server" = String, Path, description = "Server name or id")),
    responses((status = 200, description = "Pending changes per host", body = PlanOut, headers(("ETag" = String))), Errors),
    security(("bearer" = [])))]
pub async fn plan(
    State(s): State<AppState>,
    c: Caller,
    Seg(server): Seg<String>,
) -> ApiResult<Response> {
    let id = server_id(&s, &c, &server).await?;
    let rev = head(&s, &c, id).await?;
    let reports = s
        .op("server.host_reports", s.m.host_reports(&c.p, id))
        .await?;
    let mut hosts = Vec::with_capacity(reports.len());
    // Hosts at one revision have one diff to the head: read it once.
    let mut diffs: std::collections::HashMap<RevisionNo, Vec<wgm_core::manager::DiffEntry>> =
        std::collections::HashMap::new();
    for r in reports {
        let pending = match r.applied {
            None => None,
            Some(a) if a >= rev => Some(Vec::new()),
            Some(a) => {
                if let Some(known) = diffs.get(&a) {
                    Some(known.clone())
                } else {
                    let mut entries = s.op("server.diff", s.m.diff(&c.p, id, a, rev)).await?;
                    wgm_cli::views::sort_diff(&mut entries);
                    diffs.insert(a, entries.clone());
                    Some(entries)
                }
            }
        };
        hosts.push(HostPlanOut {
            host: r.host.to_string(),
            applied: r.applied.map(|a| a.0),
            converged: r.converged && r.applied == Some(rev),
            pending,
        });
    }
    Ok(json_with_etag(
        StatusCode::OK,
        Some(rev),
        &PlanOut {
            revision: rev.0,
            hosts,
        },
    ))
}

/// History page arguments.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Revisions after this one (default 0: from the first).
    #[param(value_type = Option<u64>, minimum = 0)]
    after: Option<String>,
    /// At most this many, 1–1000 (default 100).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// The server's revisions, oldest first.
#[utoipa::path(get, path = "/api/v1/servers/{server}/history", tag = "servers",
    params(("server" = String, Path, description = "Server name or id"), HistoryQuery),
    responses((status = 200, description = "Revisions", body = HistoryOut), Errors),
    security(("bearer" = [])))]
pub async fn history(
    State(s): State<AppState>,
    c: Caller,
    Seg(server): Seg<String>,
    Q(q): Q<HistoryQuery>,
) -> ApiResult<axum::Json<HistoryOut>> {
    let after = match q.after.as_deref() {
        None => RevisionNo::NONE,
        Some(v) => RevisionNo(p::number(v, "after", u64::MAX)?),
    };
    let page = PageArgs::parse(q.limit.as_deref(), None)?;
    let id = server_id(&s, &c, &server).await?;
    let revs = s
        .op("server.history", s.m.history(&c.p, id, after, page.limit))
        .await?;
    let next_after = (revs.len() as u64 == page.limit)
        .then(|| revs.last().map(|r| r.revision.0))
        .flatten();
    Ok(axum::Json(HistoryOut {
        items: revs.iter().map(wgm_cli::views::entry).collect(),
        next_after,
    }))
}

/// Diff arguments.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// From this revision.
    #[param(value_type = u64, minimum = 1)]
    from: Option<String>,
    /// To this revision.
    #[param(value_type = u64, minimum = 1)]
    to: Option<String>,
}

/// What changed between two revisions (secrets only as `<changed>`).
#[utoipa::path(get, path = "/api/v1/servers/{server}/diff", tag = "servers",
    params(("server" = String, Path, description = "Server name or id"), DiffQuery),
    responses((status = 200, description = "The differences", body = DiffOut), Errors),
    security(("bearer" = [])))]
pub async fn diff(
    State(s): State<AppState>,
    c: Caller,
    Seg(server): Seg<String>,
    Q(q): Q<DiffQuery>,
) -> ApiResult<axum::Json<DiffOut>> {
    let need = |v: &Option<String>, field: &'static str| -> wgm_core::Result<RevisionNo> {
        match v {
            Some(v) => p::revision(v, field),
            None => Err(Error::invalid(field, "is required")),
        }
    };
    let from = need(&q.from, "from")?;
    let to = need(&q.to, "to")?;
    let id = server_id(&s, &c, &server).await?;
    let mut entries = s.op("server.diff", s.m.diff(&c.p, id, from, to)).await?;
    wgm_cli::views::sort_diff(&mut entries);
    Ok(axum::Json(DiffOut {
        from: from.0,
        to: to.0,
        entries,
    }))
}

/// Restore the configuration of a revision as a new revision (keys are kept).
#[utoipa::path(post, path = "/api/v1/servers/{server}/rollback", tag = "servers", request_body = RollbackIn,
    params(("server" = String, Path, description = "Server name or id"),
           ("If-Match" = Option<String>, Header, description = "Only if the server is still at this revision")),
    responses((status = 200, description = "Rolled back", body = crate::dto::RollbackOut, headers(("ETag" = String))), Errors),
    security(("bearer" = [])))]
pub async fn rollback(
    State(s): State<AppState>,
    c: Caller,
    Seg(server): Seg<String>,
    pre: Precondition,
    Body(b): Body<RollbackIn>,
) -> ApiResult<Response> {
    let to = revision(b.revision, "rollback.revision")?;
    let id = server_id(&s, &c, &server).await?;
    let c = check_precondition(&s, &c, id, &pre).await?;
    let rec = s
        .op("server.rollback", s.m.rollback(&c.p, id, to))
        .await
        .map_err(precondition(&c))?;
    Ok(json_with_etag(
        StatusCode::OK,
        Some(rec.revision),
        &crate::dto::RollbackOut {
            restored: to.0,
            revision: wgm_cli::views::entry(&rec),
        },
    ))
}
