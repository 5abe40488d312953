//! Firewall policy: a server's (forwarding, masquerade, peer to peer, default verdict)
//! and each peer's (allow list, rates, quota). Each change is one revision under the
//! `server:policy` / `peer:policy` permissions (administrators and operators), applied
//! on the hosts by their agents with the nftables firewall.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use wgm_core::policy::PeerPolicy;

use super::{check_precondition, head, json_with_etag, peer_id, precondition, server_id, Errors};
use crate::auth::Caller;
use crate::dto::{PeerOut, PeerPolicyDoc, ServerPolicyDoc, ServerPolicyOut};
use crate::error::ApiResult;
use crate::extract::{Body, Precondition, Seg};
use crate::state::AppState;

/// A server's firewall policy.
#[utoipa::path(get, path = "/api/v1/servers/{server}/policy", tag = "policy",
    params(("server" = String, Path, description = "Server name or id")),
    responses((status = 200, description = "The policy", body = ServerPolicyOut, headers(("ETag" = String))), Errors),
    security(("bearer" = [])))]
pub async fn get_server(
    State(s): State<AppState>,
    c: Caller,
    Seg(server): Seg<String>,
) -> ApiResult<Response> {
    let id = server_id(&s, &c, &server).await?;
    let v = s.op("server.get", s.m.get_server(&c.p, id)).await?;
    Ok(json_with_etag(
        StatusCode::OK,
        Some(v.revision),
        &ServerPolicyOut {
            revision: v.revision.0,
            policy: v.policy.into(),
        },
    ))
}

/// Replace a server's firewall policy (one revision; absent fields take their defaults).
#[utoipa::path(put, path = "/api/v1/servers/{server}/policy", tag = "policy", request_body = ServerPolicyDoc,
    params(("server" = String, Path, description = "Server name or id"),
           ("If-Match" = Option<String>, Header, description = "Only if the server is still at this revision")),
    responses((status = 200, description = "The new policy", body = ServerPolicyOut, headers(("ETag" = String))), Errors),
    security(("bearer" = [])))]
pub async fn put_server(
    State(s): State<AppState>,
    c: Caller,
    Seg(server): Seg<String>,
    pre: Precondition,
    Body(b): Body<ServerPolicyDoc>,
) -> ApiResult<Response> {
    let id = server_id(&s, &c, &server).await?;
    let c = check_precondition(&s, &c, id, &pre).await?;
    let v = s
        .op("server.policy", s.m.set_server_policy(&c.p, id, b.into()))
        .await
        .map_err(precondition(&c))?;
    Ok(json_with_etag(
        StatusCode::OK,
        Some(v.revision),
        &ServerPolicyOut {
            revision: v.revision.0,
            policy: v.policy.into(),
        },
    ))
}

/// Replace a peer's firewall policy (one revision). Absent fields are unset; a quota
/// that differs from the peer's counts from now on (`quota_start` is the server's).
#[utoipa::path(put, path = "/api/v1/servers/{server}/peers/{peer}/policy", tag = "policy", request_body = PeerPolicyDoc,
    params(("server" = String, Path, description = "Server name or id"),
           ("peer" = String, Path, description = "Peer name, public key or id"),
           ("If-Match" = Option<String>, Header, description = "Only if the server is still at this revision")),
    responses((status = 200, description = "The peer", body = PeerOut, headers(("ETag" = String))), Errors),
    security(("bearer" = [])))]
pub async fn put_peer(
    State(s): State<AppState>,
    c: Caller,
    Seg((server, peer)): Seg<(String, String)>,
    pre: Precondition,
    Body(b): Body<PeerPolicyDoc>,
) -> ApiResult<Response> {
    let sid = server_id(&s, &c, &server).await?;
    let pid = peer_id(&s, &c, sid, &peer).await?;
    let c = check_precondition(&s, &c, sid, &pre).await?;
    // The quota's start depends on the policy read here: commit only at that read's
    // revision (the head first, then the peer, which is then at it or newer), and read
    // again if another write landed in between (under `If-Match`, the caller's revision
    // decides instead: no second try).
    let mut tries = 0;
    let v = loop {
        tries += 1;
        let at = head(&s, &c, sid).await?;
        let before = s.op("peer.get", s.m.get_peer(&c.p, sid, pid)).await?;
        let quota_start = if b.quota.is_some() && b.quota != before.policy.quota {
            u64::try_from(s.m.now().unix_timestamp()).unwrap_or(0)
        } else {
            before.policy.quota_start
        };
        let policy = PeerPolicy {
            allow: b.allow.clone(),
            rate_up: b.rate_up,
            rate_down: b.rate_down,
            quota: b.quota,
            quota_action: b.quota_action,
            quota_start,
        };
        let conditional = c.p.required_revisions().is_some();
        let writer = if conditional {
            c.p.clone()
        } else {
            c.p.clone().if_revision([at.0])
        };
        let r = s
            .op(
                "peer.policy",
                s.m.set_peer_policy(&writer, sid, pid, policy),
            )
            .await;
        let again = matches!(&r, Err(e) if e.stale_at.is_some() && !conditional && tries < 5);
        if !again {
            break r.map_err(precondition(&c))?;
        }
    };
    let rev = head(&s, &c, sid).await.ok();
    Ok(json_with_etag(StatusCode::OK, rev, &PeerOut::from(v)))
}
