//! Peers of a server: list, add (one, numbered, or many in one revision), show, change,
//! enable, disable, remove, keys, client config as text or QR code.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;
use wgm_cli::parse::{self as p, Relative};
use wgm_core::manager::{NewPeer, PeerUpdate, PeerView};
use wgm_core::model::{RevisionNo, ServerId, UserId};
use wgm_core::names::Description;
use wgm_core::net::Keepalive;
use wgm_core::Error;

use super::{
    check_precondition, head, json_with_etag, name_matches, no_store, peer_id, precondition,
    server_id, Errors, PageArgs,
};
use crate::auth::Caller;
use crate::dto::{
    ClientConfigOut, FromRevisionIn, PeerIn, PeerList, PeerOut, PeerPatch, PeersIn, RemovedPeer,
};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Precondition, Seg, Q};
use crate::state::AppState;

/// Filters and page of a peer list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeerQuery {
    /// Only peers whose name contains this (case-insensitive).
    name: Option<String>,
    /// Only peers in this state.
    #[param(value_type = Option<String>, pattern = "^(enabled|disabled|expired)$")]
    state: Option<String>,
    /// Only peers of this owner (user name or id).
    owner: Option<String>,
    /// Page size, 1–1000 (default 100).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Items to skip (default 0).
    #[param(value_type = Option<u64>, minimum = 0, maximum = 4_294_967_295_u64)]
    offset: Option<String>,
}

fn nets(list: &[String], field: &str) -> wgm_core::Result<Vec<ipnet::IpNet>> {
    list.iter()
        .enumerate()
        .map(|(i, x)| {
            wgm_core::net::parse_allowed_ip(x, "x").map_err(|e| match e {
                Error::InvalidInput { reason, .. } => {
                    Error::invalid(format!("{field}[{i}]"), reason)
                }
                other => other,
            })
        })
        .collect()
}

async fn owner(s: &AppState, c: &Caller, r: &str) -> ApiResult<UserId> {
    s.op("user.resolve", s.m.resolve_user(&c.p, r)).await
}

/// The library's spec of `b`; `field` prefixes errors (`peer`, `peers[3]`).
async fn spec(s: &AppState, c: &Caller, b: &PeerIn, field: &str) -> ApiResult<NewPeer> {
    let f = |e: Error| -> ApiError {
        ApiError::from(match e {
            Error::InvalidInput {
                field: inner,
                reason,
            } if field != "peer" => Error::invalid(inner.replacen("peer", field, 1), reason),
            other => other,
        })
    };
    let mut spec = NewPeer::new(p::peer_name(&b.name).map_err(f)?);
    if let Some(v) = &b.description {
        spec.description = Some(Description::new(v).map_err(|e| f(e.in_field("peer")))?);
    }
    if let Some(v) = &b.owner {
        spec.owner = Some(owner(s, c, v).await?);
    }
    if let Some(v) = &b.public_key {
        spec.public_key = Some(p::peer_public_key(v).map_err(f)?);
    }
    if let Some(v) = &b.ipv6 {
        spec.ipv6 = p::ipv6_request(v).map_err(f)?;
    }
    if let Some(v) = &b.ipv4 {
        spec.ipv4 = p::ipv4_request(v).map_err(f)?;
    }
    if let Some(v) = &b.prefix {
        spec.prefix = p::prefix_request(v).map_err(f)?;
    }
    if let Some(v) = &b.allowed_ips {
        spec.extra_allowed_ips = nets(v, &format!("{field}.allowed_ips"))?;
    }
    if let Some(v) = &b.client_allowed_ips {
        spec.client_allowed_ips = Some(nets(v, &format!("{field}.client_allowed_ips"))?);
    }
    if let Some(v) = b.keepalive {
        spec.keepalive = Some(Keepalive::new(v).map_err(|e| f(e.in_field("peer")))?);
    }
    if let Some(v) = &b.endpoint {
        spec.endpoint = Some(p::peer_endpoint(v).map_err(f)?);
    }
    if let Some(v) = &b.expires_at {
        let w = p::peer_expires(v).map_err(f)?;
        spec.expires_at = Some(w.at(s.m.now(), Relative::Future));
    }
    if let Some(v) = b.preshared_key {
        spec.preshared_key = v;
    }
    Ok(spec)
}

/// The server's revision after a peer write, for the `ETag` (none if the caller may not
/// read the server).
async fn etag_after(s: &AppState, c: &Caller, sid: ServerId) -> Option<RevisionNo> {
    head(s, c, sid).await.ok()
}

/// The peers of a server the caller may see, by name.
#[utoipa::path(get, path = "/api/v1/servers/{server}/peers", tag = "peers",
    params(("server" = String, Path, description = "Server name or id"), PeerQuery),
    responses((status = 200, description = "One page of peers", body = PeerList, headers(("ETag" = String, description = "The server's revision"))), Errors),
    security(("bearer" = [])))]
pub async fn list(
    State(s): State<AppState>,
    c: Caller,
    Seg(server): Seg<String>,
    Q(q): Q<PeerQuery>,
) -> ApiResult<Response> {
    let page = PageArgs::parse(q.limit.as_deref(), q.offset.as_deref())?;
    let state = match q.state.as_deref() {
        None => None,
        Some(v @ ("enabled" | "disabled" | "expired")) => Some(v),
        Some(_) => {
            return Err(ApiError::invalid(
                "state",
                "must be enabled, disabled or expired",
            ))
        }
    };
    let sid = server_id(&s, &c, &server).await?;
    let owner_id = match &q.owner {
        Some(o) => Some(owner(&s, &c, o).await?),
        None => None,
    };
    // The revision before the read: never newer than what is listed.
    let rev = head(&s, &c, sid).await?;
    let all = s.op("peer.list", s.m.list_peers(&c.p, sid)).await?;
    let now = s.m.now();
    let matching: Vec<PeerView> = all
        .into_iter()
        .filter(|x| name_matches(x.name.as_str(), q.name.as_deref()))
        .filter(|x| owner_id.is_none_or(|o| x.owner == Some(o)))
        .filter(|x| {
            let expired = x.expires_at.is_some_and(|t| t <= now);
            match state {
                None => true,
                Some("expired") => expired,
                Some("enabled") => x.enabled && !expired,
                Some(_) => !x.enabled,
            }
        })
        .collect();
    let (items, total, next_offset) = page.cut(matching);
    Ok(json_with_etag(
        StatusCode::OK,
        Some(rev),
        &PeerList {
            items: items.into_iter().map(PeerOut::from).collect(),
            total,
            offset: page.offset,
            limit: page.limit,
            next_offset,
        },
    ))
}

/// Add a peer (one revision); with `count`, `NAME-1` … `NAME-N` in one revision, all or
/// nothing. Answers the added peers.
#[utoipa::path(post, path = "/api/v1/servers/{server}/peers", tag = "peers", request_body = PeerIn,
    params(("server" = String, Path, description = "Server name or id"),
           ("If-Match" = Option<String>, Header, description = "Only if the server is still at this revision")),
    responses((status = 201, description = "Added", body = Vec<PeerOut>, headers(("ETag" = String))), Errors),
    security(("bearer" = [])))]
pub async fn add(
    State(s): State<AppState>,
    c: Caller,
    Seg(server): Seg<String>,
    pre: Precondition,
    Body(b): Body<PeerIn>,
) -> ApiResult<Response> {
    let sid = server_id(&s, &c, &server).await?;
    let one = spec(&s, &c, &b, "peer").await?;
    let c = check_precondition(&s, &c, sid, &pre).await?;
    let views = match b.count {
        None => vec![s
            .op("peer.add", s.m.add_peer(&c.p, sid, one))
            .await
            .map_err(precondition(&c))?],
        Some(n) => {
            let specs = one.numbered(n)?;
            s.op("peer.add_many", s.m.add_peers(&c.p, sid, specs))
                .await
                .map_err(precondition(&c))?
        }
    };
    let rev = etag_after(&s, &c, sid).await;
    let out: Vec<PeerOut> = views.into_iter().map(PeerOut::from).collect();
    Ok(json_with_etag(StatusCode::CREATED, rev, &out))
}

/// Add many peers, each with its own settings, in one revision: all or nothing.
#[utoipa::path(post, path = "/api/v1/servers/{server}/peers/bulk", tag = "peers", request_body = PeersIn,
    params(("server" = String, Path, description = "Server name or id"),
           ("If-Match" = Option<String>, Header, description = "Only if the server is still at this revision")),
    responses((status = 201, description = "Added", body = Vec<PeerOut>, headers(("ETag" = String))), Errors),
    security(("bearer" = [])))]
pub async fn bulk(
    State(s): State<AppState>,
    c: Caller,
    Seg(server): Seg<String>,
    pre: Precondition,
    Body(b): Body<PeersIn>,
) -> ApiResult<Response> {
    let sid = server_id(&s, &c, &server).await?;
    let mut specs = Vec::with_capacity(b.peers.len());
    for (i, x) in b.peers.iter().enumerate() {
        if x.count.is_some() {
            return Err(ApiError::invalid(
                format!("peers[{i}].count"),
                "give each peer of a bulk add on its own",
            ));
        }
        specs.push(spec(&s, &c, x, &format!("peers[{i}]")).await?);
    }
    let c = check_precondition(&s, &c, sid, &pre).await?;
    let views = s
        .op("peer.add_many", s.m.add_peers(&c.p, sid, specs))
        .await
        .map_err(precondition(&c))?;
    let rev = etag_after(&s, &c, sid).await;
    let out: Vec<PeerOut> = views.into_iter().map(PeerOut::from).collect();
    Ok(json_with_etag(StatusCode::CREATED, rev, &out))
}

/// One peer.
#[utoipa::path(get, path = "/api/v1/servers/{server}/peers/{peer}", tag = "peers",
    params(("server" = String, Path, description = "Server name or id"),
           ("peer" = String, Path, description = "Peer name, public key or id")),
    responses((status = 200, description = "The peer", body = PeerOut, headers(("ETag" = String))), Errors),
    security(("bearer" = [])))]
pub async fn get(
    State(s): State<AppState>,
    c: Caller,
    Seg((server, peer)): Seg<(String, String)>,
) -> ApiResult<Response> {
    let sid = server_id(&s, &c, &server).await?;
    let pid = peer_id(&s, &c, sid, &peer).await?;
    let rev = etag_after(&s, &c, sid).await;
    let v = s.op("peer.get", s.m.get_peer(&c.p, sid, pid)).await?;
    Ok(json_with_etag(StatusCode::OK, rev, &PeerOut::from(v)))
}

/// Change a peer (one revision).
#[utoipa::path(patch, path = "/api/v1/servers/{server}/peers/{peer}", tag = "peers", request_body = PeerPatch,
    params(("server" = String, Path, description = "Server name or id"),
           ("peer" = String, Path, description = "Peer name, public key or id"),
           ("If-Match" = Option<String>, Header, description = "Only if the server is still at this revision")),
    responses((status = 200, description = "Changed", body = PeerOut, headers(("ETag" = String))), Errors),
    security(("bearer" = [])))]
pub async fn update(
    State(s): State<AppState>,
    c: Caller,
    Seg((server, peer)): Seg<(String, String)>,
    pre: Precondition,
    Body(b): Body<PeerPatch>,
) -> ApiResult<Response> {
    let sid = server_id(&s, &c, &server).await?;
    let pid = peer_id(&s, &c, sid, &peer).await?;
    let mut u = PeerUpdate::default();
    if let Some(v) = &b.name {
        u.name = Some(p::peer_name(v)?);
    }
    if let Some(v) = &b.description {
        u.description = Some(match v {
            Some(d) => Some(Description::new(d).map_err(|e| e.in_field("peer"))?),
            None => None,
        });
    }
    if let Some(v) = &b.owner {
        u.owner = Some(match v {
            Some(o) => Some(owner(&s, &c, o).await?),
            None => None,
        });
    }
    if let Some(v) = &b.allowed_ips {
        u.extra_allowed_ips = Some(nets(v, "peer.allowed_ips")?);
    }
    if let Some(v) = &b.client_allowed_ips {
        u.client_allowed_ips = Some(match v {
            Some(list) => Some(nets(list, "peer.client_allowed_ips")?),
            None => None,
        });
    }
    if let Some(v) = b.keepalive {
        u.keepalive = Some(Keepalive::new(v).map_err(|e| e.in_field("peer"))?);
    }
    if let Some(v) = &b.endpoint {
        u.endpoint = Some(match v {
            Some(e) => Some(p::peer_endpoint(e)?),
            None => None,
        });
    }
    if let Some(v) = &b.expires_at {
        u.expires_at = Some(match v {
            Some(t) => Some(p::peer_expires(t)?.at(s.m.now(), Relative::Future)),
            None => None,
        });
    }
    u.enabled = b.enabled;
    let c = check_precondition(&s, &c, sid, &pre).await?;
    let v = s
        .op("peer.update", s.m.update_peer(&c.p, sid, pid, u))
        .await
        .map_err(precondition(&c))?;
    let rev = etag_after(&s, &c, sid).await;
    Ok(json_with_etag(StatusCode::OK, rev, &PeerOut::from(v)))
}

/// Remove a peer (its addresses are quarantined).
#[utoipa::path(delete, path = "/api/v1/servers/{server}/peers/{peer}", tag = "peers",
    params(("server" = String, Path, description = "Server name or id"),
           ("peer" = String, Path, description = "Peer name, public key or id"),
           ("If-Match" = Option<String>, Header, description = "Only if the server is still at this revision")),
    responses((status = 200, description = "Removed", body = RemovedPeer, headers(("ETag" = String))), Errors),
    security(("bearer" = [])))]
pub async fn remove(
    State(s): State<AppState>,
    c: Caller,
    Seg((server, peer)): Seg<(String, String)>,
    pre: Precondition,
) -> ApiResult<Response> {
    let sid = server_id(&s, &c, &server).await?;
    let pid = peer_id(&s, &c, sid, &peer).await?;
    let c = check_precondition(&s, &c, sid, &pre).await?;
    let v = s.op("peer.get", s.m.get_peer(&c.p, sid, pid)).await?;
    s.op("peer.remove", s.m.remove_peer(&c.p, sid, pid))
        .await
        .map_err(precondition(&c))?;
    let rev = etag_after(&s, &c, sid).await;
    Ok(json_with_etag(
        StatusCode::OK,
        rev,
        &RemovedPeer {
            id: v.id,
            server_id: v.server_id,
            name: v.name,
        },
    ))
}

macro_rules! peer_action {
    ($fn:ident, $path:literal, $doc:literal, $op:literal, |$s:ident, $c:ident, $sid:ident, $pid:ident| $call:expr) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "peers",
            params(("server" = String, Path, description = "Server name or id"),
                   ("peer" = String, Path, description = "Peer name, public key or id"),
                   ("If-Match" = Option<String>, Header, description = "Only if the server is still at this revision")),
            responses((status = 200, description = "Done", body = PeerOut, headers(("ETag" = String))), Errors),
            security(("bearer" = [])))]
        pub async fn $fn(
            State($s): State<AppState>,
            $c: Caller,
            Seg((server, peer)): Seg<(String, String)>,
            pre: Precondition,
        ) -> ApiResult<Response> {
            let $sid = server_id(&$s, &$c, &server).await?;
            let $pid = peer_id(&$s, &$c, $sid, &peer).await?;
            let $c = check_precondition(&$s, &$c, $sid, &pre).await?;
            let v = $s.op($op, $call).await.map_err(precondition(&$c))?;
            let rev = etag_after(&$s, &$c, $sid).await;
            Ok(json_with_etag(StatusCode::OK, rev, &PeerOut::from(v)))
        }
    };
}

peer_action!(
    enable,
    "/api/v1/servers/{server}/peers/{peer}/enable",
    "Enable a peer.",
    "peer.enable",
    |s, c, sid, pid| s.m.set_peer_enabled(&c.p, sid, pid, true)
);
peer_action!(
    disable,
    "/api/v1/servers/{server}/peers/{peer}/disable",
    "Disable a peer: off the device, keys and addresses kept.",
    "peer.disable",
    |s, c, sid, pid| s.m.set_peer_enabled(&c.p, sid, pid, false)
);
peer_action!(
    rotate_key,
    "/api/v1/servers/{server}/peers/{peer}/rotate-key",
    "A new key pair for the peer (its config is needed again).",
    "peer.rotate_key",
    |s, c, sid, pid| s.m.rotate_peer_key(&c.p, sid, pid)
);
peer_action!(
    rotate_psk,
    "/api/v1/servers/{server}/peers/{peer}/rotate-psk",
    "A new preshared key for the peer (its config is needed again).",
    "peer.rotate_psk",
    |s, c, sid, pid| s.m.rotate_peer_psk(&c.p, sid, pid)
);

/// Bring back the keys the peer had at revision `from`.
#[utoipa::path(post, path = "/api/v1/servers/{server}/peers/{peer}/restore-keys", tag = "peers", request_body = FromRevisionIn,
    params(("server" = String, Path, description = "Server name or id"),
           ("peer" = String, Path, description = "Peer name, public key or id"),
           ("If-Match" = Option<String>, Header, description = "Only if the server is still at this revision")),
    responses((status = 200, description = "Restored", body = PeerOut, headers(("ETag" = String))), Errors),
    security(("bearer" = [])))]
pub async fn restore_keys(
    State(s): State<AppState>,
    c: Caller,
    Seg((server, peer)): Seg<(String, String)>,
    pre: Precondition,
    Body(b): Body<FromRevisionIn>,
) -> ApiResult<Response> {
    if b.from == 0 {
        return Err(ApiError::invalid("restore.from", "revisions start at 1"));
    }
    let sid = server_id(&s, &c, &server).await?;
    let pid = peer_id(&s, &c, sid, &peer).await?;
    let c = check_precondition(&s, &c, sid, &pre).await?;
    let v = s
        .op(
            "peer.restore_keys",
            s.m.restore_peer_keys(&c.p, sid, pid, RevisionNo(b.from)),
        )
        .await
        .map_err(precondition(&c))?;
    let rev = etag_after(&s, &c, sid).await;
    Ok(json_with_etag(StatusCode::OK, rev, &PeerOut::from(v)))
}

/// Client config format.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConfigQuery {
    /// `json` (default): the config with the peer; `text`: the wg-quick file itself.
    #[param(value_type = Option<String>, pattern = "^(json|text)$")]
    format: Option<String>,
}

/// The peer's client config (with its private key and PSK when wgm holds them): an
/// audited secret export.
#[utoipa::path(get, path = "/api/v1/servers/{server}/peers/{peer}/config", tag = "peers",
    params(("server" = String, Path, description = "Server name or id"),
           ("peer" = String, Path, description = "Peer name, public key or id"), ConfigQuery),
    responses((status = 200, description = "The client config", body = ClientConfigOut,
               content((ClientConfigOut = "application/json"), (String = "text/plain"))), Errors),
    security(("bearer" = [])))]
pub async fn config(
    State(s): State<AppState>,
    c: Caller,
    Seg((server, peer)): Seg<(String, String)>,
    Q(q): Q<ConfigQuery>,
) -> ApiResult<Response> {
    let text_format = match q.format.as_deref() {
        None | Some("json") => false,
        Some("text") => true,
        Some(_) => return Err(ApiError::invalid("format", "must be json or text")),
    };
    let sid = server_id(&s, &c, &server).await?;
    let pid = peer_id(&s, &c, sid, &peer).await?;
    let cfg = s
        .op("peer.config", s.m.client_config(&c.p, sid, pid))
        .await?;
    let r = if text_format {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            cfg.text.as_str().to_owned(),
        )
            .into_response()
    } else {
        axum::Json(ClientConfigOut {
            peer: PeerOut::from(cfg.peer),
            complete: cfg.complete,
            config: cfg.text.as_str().to_owned(),
        })
        .into_response()
    };
    Ok(no_store(r))
}

/// QR format.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QrQuery {
    /// `svg` (default) or `png`.
    #[param(value_type = Option<String>, pattern = "^(svg|png)$")]
    format: Option<String>,
}

/// The client config as a QR code for the WireGuard mobile apps (refused for a peer
/// that brought its own key).
#[utoipa::path(get, path = "/api/v1/servers/{server}/peers/{peer}/config/qr", tag = "peers",
    params(("server" = String, Path, description = "Server name or id"),
           ("peer" = String, Path, description = "Peer name, public key or id"), QrQuery),
    responses((status = 200, description = "The QR code",
               content((String = "image/svg+xml"), (Vec<u8> = "image/png"))), Errors),
    security(("bearer" = [])))]
pub async fn qr(
    State(s): State<AppState>,
    c: Caller,
    Seg((server, peer)): Seg<(String, String)>,
    Q(q): Q<QrQuery>,
) -> ApiResult<Response> {
    let png = match q.format.as_deref() {
        None | Some("svg") => false,
        Some("png") => true,
        Some(_) => return Err(ApiError::invalid("format", "must be svg or png")),
    };
    let sid = server_id(&s, &c, &server).await?;
    let pid = peer_id(&s, &c, sid, &peer).await?;
    let cfg = s
        .op("peer.config", s.m.client_config(&c.p, sid, pid))
        .await?;
    if !cfg.complete {
        return Err(Error::invalid(
            "peer.private_key",
            "wgm does not hold this peer's private key (it brought its own), so a QR code could not be imported; use the text config",
        )
        .into());
    }
    let r = if png {
        let bytes = wgm_core::wgquick::qr_png(&cfg.text)?;
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static("image/png"))],
            bytes,
        )
            .into_response()
    } else {
        let svg = wgm_core::wgquick::qr_svg(&cfg.text)?;
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/svg+xml"),
            )],
            svg,
        )
            .into_response()
    };
    Ok(no_store(r))
}
