//! The audit log: query and verify.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;
use wgm_cli::parse::{self as p, Relative};
use wgm_core::model::AuditQuery;

use super::{server_id, Errors, DEFAULT_LIMIT, MAX_LIMIT};
use crate::auth::Caller;
use crate::dto::{AuditOut, VerifyOut};
use crate::error::ApiResult;
use crate::extract::Q;
use crate::state::AppState;

/// Filters and page of the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only this server (name or id).
    server: Option<String>,
    /// Only this actor label (`user:NAME` also finds the user's tokens).
    actor: Option<String>,
    /// From this time (RFC 3339, or a duration back from now: `1h`, `7d`).
    since: Option<String>,
    /// Until this time (exclusive).
    until: Option<String>,
    /// Records after this sequence number (the cursor: `next_after_seq`).
    #[param(value_type = Option<u64>, minimum = 0)]
    after_seq: Option<String>,
    /// At most this many, 1–1000 (default 100).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// Audit records matching the filters, oldest first (auditors and administrators).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditParams),
    responses((status = 200, description = "Records", body = AuditOut), Errors),
    security(("bearer" = [])))]
pub async fn query(
    State(s): State<AppState>,
    c: Caller,
    Q(q): Q<AuditParams>,
) -> ApiResult<Json<AuditOut>> {
    let now = s.m.now();
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(v) => match p::number(v, "limit", MAX_LIMIT)? {
            0 => {
                return Err(crate::error::ApiError::invalid(
                    "limit",
                    "must be at least 1",
                ))
            }
            n => n,
        },
    };
    let mut aq = AuditQuery {
        actor: q.actor.clone(),
        since: q
            .since
            .as_deref()
            .map(|v| p::audit_since(v).map(|w| w.at(now, Relative::Past)))
            .transpose()?,
        until: q
            .until
            .as_deref()
            .map(|v| p::audit_until(v).map(|w| w.at(now, Relative::Past)))
            .transpose()?,
        after_seq: q
            .after_seq
            .as_deref()
            .map(|v| p::number(v, "after_seq", u64::MAX))
            .transpose()?,
        limit: Some(limit),
        ..AuditQuery::default()
    };
    if let Some(sv) = &q.server {
        aq.server_id = Some(server_id(&s, &c, sv).await?);
    }
    let items = s.op("audit.query", s.m.audit_log(&c.p, &aq)).await?;
    let next_after_seq = (items.len() as u64 == limit)
        .then(|| items.last().map(|r| r.seq))
        .flatten();
    Ok(Json(AuditOut {
        items,
        next_after_seq,
    }))
}

/// Verify argument.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerifyParams {
    /// A head (`SEQ:HASH`) kept from an earlier verification: it must still be in the
    /// chain.
    expect: Option<String>,
}

/// Verify the whole audit chain; a broken one is a 409 naming the first bad record.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", params(VerifyParams),
    responses((status = 200, description = "The chain holds", body = VerifyOut), Errors),
    security(("bearer" = [])))]
pub async fn verify(
    State(s): State<AppState>,
    c: Caller,
    Q(q): Q<VerifyParams>,
) -> ApiResult<Json<VerifyOut>> {
    let expect = q.expect.as_deref().map(p::audit_head).transpose()?;
    let v = s
        .op(
            "audit.verify",
            s.m.verify_audit_chain(&c.p, expect.as_ref()),
        )
        .await?;
    Ok(Json(VerifyOut {
        records: v.records,
        legacy_records: v.legacy_records,
        head_seq: v.head_seq,
        head_hash: v.head_hash,
        head: v.head.to_string(),
    }))
}
