//! The routes under `/api/v1` and the operational ones, with the OpenAPI document
//! built from the same annotations.
//!
//! Every handler authenticates the caller ([`Caller`]), parses its input with the
//! library's parsers, and calls the Manager: authorization and object filtering happen
//! inside the library, and what it answers (403, or 404 for what the caller may not see)
//! is what the client gets.

pub mod audit;
pub mod identity;
pub mod ops;
pub mod peers;
pub mod policy;
pub mod servers;
pub mod session;

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, ResponsesBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wgm_core::model::{PeerId, RevisionNo, ServerId};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{etag, IfMatch, Precondition};
use crate::state::AppState;

/// Every error status an operation may answer, with the [`ErrorBody`] shape.
pub struct Errors;

impl utoipa::IntoResponses for Errors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        let cases = [
            ("400", "Bad input: `field` names it"),
            ("401", "Missing or invalid credentials"),
            ("403", "Permission denied"),
            ("404", "No such object, or one the caller may not see"),
            ("409", "Conflict: taken, stale, quarantined, exhausted pool"),
            (
                "412",
                "`If-Match` names a revision that is no longer the server's",
            ),
            ("413", "The body is larger than the server accepts"),
            ("415", "The body is not JSON"),
            (
                "422",
                "Unprocessable: a wg-quick file that does not parse, or unsupported",
            ),
            ("429", "Rate limited or login throttled: see `Retry-After`"),
            (
                "503",
                "The store (or the rate limiter) is unavailable, or the request timed out",
            ),
        ];
        let mut b = ResponsesBuilder::new();
        for (code, what) in cases {
            let mut r = ResponseBuilder::new().description(what).content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            );
            if code == "429" || code == "503" {
                r = r.header(
                    "Retry-After",
                    utoipa::openapi::HeaderBuilder::new()
                        .schema(
                            utoipa::openapi::ObjectBuilder::new()
                                .schema_type(utoipa::openapi::Type::Integer),
                        )
                        .description(Some("Seconds to wait before trying again"))
                        .build(),
                );
            }
            b = b.response(code, r.build());
        }
        b.build().into()
    }
}

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A login's access token (JWT) or an API token (`wgm_…`)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document's head; the paths come from the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "wgm REST API",
        description = "IPv6-first WireGuard manager: servers, peers, users, roles, tokens, history and audit. See docs/rest.md.",
        license(name = "MIT")
    ),
    modifiers(&Security),
    components(schemas(ErrorBody)),
    tags(
        (name = "session", description = "Login, refresh, logout, the caller, TOTP"),
        (name = "servers", description = "Servers, their history, status and configs"),
        (name = "peers", description = "Peers of a server"),
        (name = "policy", description = "Firewall policy of a server and its peers"),
        (name = "users", description = "Users, roles and API tokens"),
        (name = "audit", description = "The audit log"),
        (name = "operations", description = "Health, readiness, metrics")
    )
)]
pub struct ApiDoc;

/// The router and its OpenAPI document.
pub fn router() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(session::login))
        .routes(routes!(session::refresh))
        .routes(routes!(session::logout))
        .routes(routes!(session::me))
        .routes(routes!(session::totp_enroll))
        .routes(routes!(session::totp_confirm))
        .routes(routes!(session::my_password))
        .routes(routes!(servers::list, servers::create))
        .routes(routes!(servers::import))
        .routes(routes!(servers::get, servers::update, servers::delete))
        .routes(routes!(servers::rotate_key))
        .routes(routes!(servers::restore_key))
        .routes(routes!(servers::export))
        .routes(routes!(servers::status))
        .routes(routes!(servers::plan))
        .routes(routes!(policy::get_server, policy::put_server))
        .routes(routes!(policy::put_peer))
        .routes(routes!(servers::history))
        .routes(routes!(servers::diff))
        .routes(routes!(servers::rollback))
        .routes(routes!(peers::list, peers::add))
        .routes(routes!(peers::bulk))
        .routes(routes!(peers::get, peers::update, peers::remove))
        .routes(routes!(peers::enable))
        .routes(routes!(peers::disable))
        .routes(routes!(peers::rotate_key))
        .routes(routes!(peers::rotate_psk))
        .routes(routes!(peers::restore_keys))
        .routes(routes!(peers::config))
        .routes(routes!(peers::qr))
        .routes(routes!(identity::list_users, identity::create_user))
        .routes(routes!(
            identity::get_user,
            identity::update_user,
            identity::delete_user
        ))
        .routes(routes!(identity::set_password))
        .routes(routes!(identity::list_roles))
        .routes(routes!(identity::put_role, identity::delete_role))
        .routes(routes!(identity::list_tokens, identity::create_token))
        .routes(routes!(identity::revoke_token))
        .routes(routes!(audit::query))
        .routes(routes!(audit::verify))
        .routes(routes!(ops::health))
        .routes(routes!(ops::ready))
        .routes(routes!(ops::metrics))
        .split_for_parts();
    (router, api)
}

/// Resolve a server reference (name or id) as the caller may see it.
pub async fn server_id(s: &AppState, c: &Caller, r: &str) -> ApiResult<ServerId> {
    s.op("server.resolve", s.m.resolve_server(&c.p, r)).await
}

/// Resolve a peer reference (name, public key or id) of server `sid`.
pub async fn peer_id(s: &AppState, c: &Caller, sid: ServerId, r: &str) -> ApiResult<PeerId> {
    s.op("peer.resolve", s.m.resolve_peer(&c.p, sid, r)).await
}

/// The head revision of server `sid`, as the caller may read it.
pub async fn head(s: &AppState, c: &Caller, sid: ServerId) -> ApiResult<RevisionNo> {
    Ok(s.op("server.get", s.m.get_server(&c.p, sid))
        .await?
        .revision)
}

/// The caller of a write under `If-Match` on server `sid`: 412 (with the current `ETag`)
/// at once when the header names another revision, else the caller whose principal
/// carries the condition ([`wgm_core::rbac::Principal::if_revision`]), so that the
/// library commits only at that revision: exact across processes and copies, since it is
/// the store's own compare-and-swap. A write that loses to a concurrent one fails with a
/// stale revision, which [`precondition`] turns into the same 412.
pub async fn check_precondition(
    s: &AppState,
    c: &Caller,
    sid: ServerId,
    pre: &Precondition,
) -> ApiResult<Caller> {
    let Some(IfMatch::Revisions(want)) = &pre.0 else {
        return Ok(c.clone());
    };
    let now = head(s, c, sid).await?;
    if !pre.0.as_ref().is_some_and(|w| w.matches(now)) {
        return Err(failed_precondition(now));
    }
    let mut c = c.clone();
    c.p = c.p.if_revision(want.iter().copied());
    Ok(c)
}

/// The 412 answer: the server is at `now`.
fn failed_precondition(now: RevisionNo) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
        format!("the server is at revision {now}, not the one If-Match names; nothing was changed"),
    )
    .kind("stale_revision");
    e.etag = Some(etag(now));
    e
}

/// For the errors of a write by `c` (from [`check_precondition`]): a stale revision
/// under an `If-Match` condition is the condition failing, 412; anything else as is.
pub fn precondition(c: &Caller) -> impl Fn(ApiError) -> ApiError + '_ {
    move |e| match e.stale_at {
        Some(now) if c.p.required_revisions().is_some() => failed_precondition(now),
        _ => e,
    }
}

/// A JSON response with `status`, and the `ETag` of `rev` when known.
pub fn json_with_etag<T: Serialize>(
    status: StatusCode,
    rev: Option<RevisionNo>,
    body: &T,
) -> Response {
    let mut r = (status, Json(body)).into_response();
    if let Some(rev) = rev {
        r.headers_mut().insert(header::ETAG, etag(rev));
    }
    r
}

/// Mark a response that holds a secret as not to be stored by caches.
pub fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Page size when none is asked for.
pub const DEFAULT_LIMIT: u64 = 100;
/// Largest page.
pub const MAX_LIMIT: u64 = 1000;

/// `limit` and `offset` of a listing.
#[derive(Clone, Copy, Debug)]
pub struct PageArgs {
    /// Page size.
    pub limit: u64,
    /// Items skipped.
    pub offset: u64,
}

impl PageArgs {
    /// Parse the query's `limit` (1–1000, default 100) and `offset` (default 0).
    pub fn parse(limit: Option<&str>, offset: Option<&str>) -> ApiResult<PageArgs> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(v) => match wgm_cli::parse::number(v, "limit", MAX_LIMIT)? {
                0 => return Err(ApiError::invalid("limit", "must be at least 1")),
                n => n,
            },
        };
        let offset = match offset {
            None => 0,
            Some(v) => wgm_cli::parse::number(v, "offset", u64::from(u32::MAX))?,
        };
        Ok(PageArgs { limit, offset })
    }

    /// This page of `all`: the items, the total and the next offset.
    pub fn cut<T>(&self, all: Vec<T>) -> (Vec<T>, u64, Option<u64>) {
        let total = all.len() as u64;
        let items: Vec<T> = all
            .into_iter()
            .skip(usize::try_from(self.offset).unwrap_or(usize::MAX))
            .take(usize::try_from(self.limit).unwrap_or(usize::MAX))
            .collect();
        let next = self.offset + items.len() as u64;
        (items, total, (next < total).then_some(next))
    }
}

/// Whether `name` contains `needle`, ignoring case.
pub fn name_matches(name: &str, needle: Option<&str>) -> bool {
    needle.is_none_or(|n| name.to_lowercase().contains(&n.to_lowercase()))
}
