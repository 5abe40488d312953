//! Users, roles and API tokens.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;
use wgm_cli::parse::{self as p, Relative};
use wgm_core::manager::{NewToken, NewUser, UserUpdate};
use wgm_core::model::{Page, RoleAssignment, TokenId};
use wgm_core::names::{Description, RoleName, UserName};
use wgm_core::rbac::{Permission, Role, Scope};
use zeroize::Zeroizing;

use super::{name_matches, no_store, server_id, Errors, PageArgs};
use crate::auth::Caller;
use crate::dto::{
    PasswordIn, RoleIn, RoleList, RoleOut, RoleRefIn, TokenCreated, TokenIn, TokenList, TokenOut,
    UserIn, UserList, UserOut, UserPatch,
};
use crate::error::{at, ApiError, ApiResult};
use crate::extract::{Body, Seg, Q};
use crate::state::AppState;

/// Filters and page of the user list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    /// Only users whose name contains this (case-insensitive).
    name: Option<String>,
    /// Only active (`true`) or disabled (`false`) users.
    #[param(value_type = Option<bool>)]
    active: Option<String>,
    /// Page size, 1–1000 (default 100).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Items to skip (default 0).
    #[param(value_type = Option<u64>, minimum = 0, maximum = 4_294_967_295_u64)]
    offset: Option<String>,
}

fn flag(v: &str, field: &'static str) -> ApiResult<bool> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::invalid(field, "must be true or false")),
    }
}

async fn roles(
    s: &AppState,
    c: &Caller,
    list: &[RoleRefIn],
    field: &str,
) -> ApiResult<Vec<RoleAssignment>> {
    let mut out = Vec::with_capacity(list.len());
    for (i, r) in list.iter().enumerate() {
        let role = RoleName::new(&r.role).map_err(|e| at(e, format!("{field}[{i}].role")))?;
        let scope = match &r.server {
            Some(sv) => Scope::Server(server_id(s, c, sv).await?.0),
            None => Scope::Global,
        };
        out.push(RoleAssignment { role, scope });
    }
    Ok(out)
}

/// Users the caller may see, by name.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(UserQuery),
    responses((status = 200, description = "One page of users", body = UserList), Errors),
    security(("bearer" = [])))]
pub async fn list_users(
    State(s): State<AppState>,
    c: Caller,
    Q(q): Q<UserQuery>,
) -> ApiResult<Json<UserList>> {
    let page = PageArgs::parse(q.limit.as_deref(), q.offset.as_deref())?;
    let active = q.active.as_deref().map(|v| flag(v, "active")).transpose()?;
    let all = s.op("user.list", s.m.list_users(&c.p, Page::ALL)).await?;
    let matching: Vec<_> = all
        .into_iter()
        .filter(|u| name_matches(u.name.as_str(), q.name.as_deref()))
        .filter(|u| active.is_none_or(|a| u.active == a))
        .collect();
    let (items, total, next_offset) = page.cut(matching);
    Ok(Json(UserList {
        items: items.into_iter().map(UserOut::from).collect(),
        total,
        offset: page.offset,
        limit: page.limit,
        next_offset,
    }))
}

/// Create a user.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = UserIn,
    responses((status = 201, description = "Created", body = UserOut), Errors),
    security(("bearer" = [])))]
pub async fn create_user(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<UserIn>,
) -> ApiResult<Response> {
    let name = UserName::new(&b.name)?;
    let assigned = roles(&s, &c, &b.roles, "user.roles").await?;
    let spec = NewUser {
        name,
        email: b.email,
        password: b.password.map(Zeroizing::new),
        roles: assigned,
        peer_quota: b.peer_quota,
    };
    let v = s.op("user.create", s.m.create_user(&c.p, spec)).await?;
    Ok((StatusCode::CREATED, Json(UserOut::from(v))).into_response())
}

/// One user.
#[utoipa::path(get, path = "/api/v1/users/{user}", tag = "users",
    params(("user" = String, Path, description = "User name or id")),
    responses((status = 200, description = "The user", body = UserOut), Errors),
    security(("bearer" = [])))]
pub async fn get_user(
    State(s): State<AppState>,
    c: Caller,
    Seg(user): Seg<String>,
) -> ApiResult<Json<UserOut>> {
    let id = s.op("user.resolve", s.m.resolve_user(&c.p, &user)).await?;
    let v = s.op("user.get", s.m.get_user(&c.p, id)).await?;
    Ok(Json(v.into()))
}

/// Change a user: e-mail, roles (ends their sessions), active, peer quota.
#[utoipa::path(patch, path = "/api/v1/users/{user}", tag = "users", request_body = UserPatch,
    params(("user" = String, Path, description = "User name or id")),
    responses((status = 200, description = "Changed", body = UserOut), Errors),
    security(("bearer" = [])))]
pub async fn update_user(
    State(s): State<AppState>,
    c: Caller,
    Seg(user): Seg<String>,
    Body(b): Body<UserPatch>,
) -> ApiResult<Json<UserOut>> {
    let id = s.op("user.resolve", s.m.resolve_user(&c.p, &user)).await?;
    let mut u = UserUpdate {
        email: b.email,
        active: b.active,
        peer_quota: b.peer_quota,
        ..UserUpdate::default()
    };
    if let Some(r) = &b.roles {
        u.roles = Some(roles(&s, &c, r, "user.roles").await?);
    }
    let v = s.op("user.update", s.m.update_user(&c.p, id, u)).await?;
    Ok(Json(v.into()))
}

/// Delete a user and their tokens.
#[utoipa::path(delete, path = "/api/v1/users/{user}", tag = "users",
    params(("user" = String, Path, description = "User name or id")),
    responses((status = 204, description = "Deleted"), Errors),
    security(("bearer" = [])))]
pub async fn delete_user(
    State(s): State<AppState>,
    c: Caller,
    Seg(user): Seg<String>,
) -> ApiResult<StatusCode> {
    let id = s.op("user.resolve", s.m.resolve_user(&c.p, &user)).await?;
    s.op("user.delete", s.m.delete_user(&c.p, id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Set a user's password (their own: `current` is needed). Ends their sessions.
#[utoipa::path(put, path = "/api/v1/users/{user}/password", tag = "users", request_body = PasswordIn,
    params(("user" = String, Path, description = "User name or id")),
    responses((status = 204, description = "Set"), Errors),
    security(("bearer" = [])))]
pub async fn set_password(
    State(s): State<AppState>,
    c: Caller,
    Seg(user): Seg<String>,
    Body(b): Body<PasswordIn>,
) -> ApiResult<StatusCode> {
    let id = s.op("user.resolve", s.m.resolve_user(&c.p, &user)).await?;
    let (current, new) = (b.current.map(Zeroizing::new), Zeroizing::new(b.new));
    s.op(
        "user.set_password",
        s.m.set_password(&c.p, id, current.as_deref().map(String::as_str), &new),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every role: built-in and custom.
#[utoipa::path(get, path = "/api/v1/roles", tag = "users",
    responses((status = 200, description = "The roles", body = RoleList), Errors),
    security(("bearer" = [])))]
pub async fn list_roles(State(s): State<AppState>, c: Caller) -> ApiResult<Json<RoleList>> {
    let all = s.op("role.list", s.m.roles(&c.p)).await?;
    let total = all.len() as u64;
    Ok(Json(RoleList {
        items: all.into_iter().map(RoleOut::from).collect(),
        total,
        offset: 0,
        limit: total,
        next_offset: None,
    }))
}

/// A permission's text; `@server:NAME` may name the server instead of its id.
async fn permission(s: &AppState, c: &Caller, text: &str, field: &str) -> ApiResult<Permission> {
    let text = match text.split_once("@server:") {
        Some((body, server)) if server.parse::<wgm_core::model::ServerId>().is_err() => {
            let id = server_id(s, c, server).await?;
            format!("{body}@server:{id}")
        }
        _ => text.to_owned(),
    };
    text.parse::<Permission>().map_err(|e| match e {
        wgm_core::Error::InvalidInput { reason, .. } => ApiError::invalid(field, reason),
        other => other.into(),
    })
}

/// Create or replace a custom role (only permissions the caller holds).
#[utoipa::path(put, path = "/api/v1/roles/{role}", tag = "users", request_body = RoleIn,
    params(("role" = String, Path, description = "Role name")),
    responses((status = 200, description = "Stored", body = RoleOut), Errors),
    security(("bearer" = [])))]
pub async fn put_role(
    State(s): State<AppState>,
    c: Caller,
    Seg(role): Seg<String>,
    Body(b): Body<RoleIn>,
) -> ApiResult<Json<RoleOut>> {
    let name = RoleName::new(&role)?;
    let description = Description::new(&b.description).map_err(|e| e.in_field("role"))?;
    let mut perms = Vec::with_capacity(b.permissions.len());
    for (i, t) in b.permissions.iter().enumerate() {
        perms.push(permission(&s, &c, t, &format!("role.permissions[{i}]")).await?);
    }
    let r = Role::custom(name, description, perms)?.with_peer_quota(b.peer_quota);
    s.op("role.put", s.m.put_role(&c.p, r.clone())).await?;
    Ok(Json(r.into()))
}

/// Delete a custom role no user holds.
#[utoipa::path(delete, path = "/api/v1/roles/{role}", tag = "users",
    params(("role" = String, Path, description = "Role name")),
    responses((status = 204, description = "Deleted"), Errors),
    security(("bearer" = [])))]
pub async fn delete_role(
    State(s): State<AppState>,
    c: Caller,
    Seg(role): Seg<String>,
) -> ApiResult<StatusCode> {
    let name = RoleName::new(&role)?;
    s.op("role.delete", s.m.delete_role(&c.p, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Filters of the token list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// Only this user's tokens (name or id).
    user: Option<String>,
    /// Page size, 1–1000 (default 100).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Items to skip (default 0).
    #[param(value_type = Option<u64>, minimum = 0, maximum = 4_294_967_295_u64)]
    offset: Option<String>,
}

/// API tokens the caller may see (their own, or everyone's with `token:read`).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "users", params(TokenQuery),
    responses((status = 200, description = "One page of tokens", body = TokenList), Errors),
    security(("bearer" = [])))]
pub async fn list_tokens(
    State(s): State<AppState>,
    c: Caller,
    Q(q): Q<TokenQuery>,
) -> ApiResult<Json<TokenList>> {
    let page = PageArgs::parse(q.limit.as_deref(), q.offset.as_deref())?;
    let user = match &q.user {
        Some(u) => Some(s.op("user.resolve", s.m.resolve_user(&c.p, u)).await?),
        None => None,
    };
    let all = s.op("token.list", s.m.list_tokens(&c.p, user)).await?;
    let (items, total, next_offset) = page.cut(all);
    Ok(Json(TokenList {
        items: items.into_iter().map(TokenOut::from).collect(),
        total,
        offset: page.offset,
        limit: page.limit,
        next_offset,
    }))
}

/// Create an API token: the secret is in this answer only.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "users", request_body = TokenIn,
    responses((status = 201, description = "Created", body = TokenCreated), Errors),
    security(("bearer" = [])))]
pub async fn create_token(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<TokenIn>,
) -> ApiResult<Response> {
    let user = match &b.user {
        Some(u) => s.op("user.resolve", s.m.resolve_user(&c.p, u)).await?,
        None => c.user_id(),
    };
    let scopes = match &b.scopes {
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for (i, t) in list.iter().enumerate() {
                out.push(permission(&s, &c, t, &format!("token.scopes[{i}]")).await?);
            }
            Some(out)
        }
        None => None,
    };
    let expires_at = match &b.expires_at {
        Some(t) => Some(p::token_expires(t)?.at(s.m.now(), Relative::Future)),
        None => None,
    };
    let (view, secret) = s
        .op(
            "token.create",
            s.m.create_token(
                &c.p,
                NewToken {
                    user,
                    name: b.name,
                    scopes,
                    expires_at,
                },
            ),
        )
        .await?;
    Ok(no_store(
        (
            StatusCode::CREATED,
            Json(TokenCreated {
                token: view.into(),
                secret: secret.as_str().to_owned(),
            }),
        )
            .into_response(),
    ))
}

/// Revoke an API token.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "users",
    params(("id" = uuid::Uuid, Path, description = "Token id")),
    responses((status = 204, description = "Revoked"), Errors),
    security(("bearer" = [])))]
pub async fn revoke_token(
    State(s): State<AppState>,
    c: Caller,
    Seg(id): Seg<String>,
) -> ApiResult<StatusCode> {
    let id: TokenId = id
        .parse()
        .map_err(|_| ApiError::invalid("id", "must be a token id (UUID)"))?;
    s.op("token.revoke", s.m.revoke_token(&c.p, id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
