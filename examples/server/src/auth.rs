//! Who is calling: the bearer credential of a request, authenticated by the library
//! (`Manager::authenticate_jwt` for a login's access token, `Manager::authenticate_token`
//! for an API token), then the per-principal rate limit.

use std::sync::{Arc, Mutex};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use time::OffsetDateTime;
use uuid::Uuid;
use wgm_core::auth::jwt::TokenType;
use wgm_core::model::UserId;
use wgm_core::rbac::{Principal, PrincipalKind};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The login session behind a JWT access token.
#[derive(Clone, Copy, Debug)]
pub struct Session {
    /// The access token's id.
    pub jti: Uuid,
    /// Its expiry.
    pub exp: OffsetDateTime,
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Who, as the library knows them.
    pub p: Principal,
    /// The session, when the credential is a JWT (not an API token).
    pub session: Option<Session>,
}

impl Caller {
    /// The caller's user id.
    pub fn user_id(&self) -> UserId {
        UserId(self.p.user_id())
    }
}

/// Where the request log finds the principal of a request (set by [`Caller`]).
#[derive(Clone, Debug, Default)]
pub struct PrincipalSlot(pub Arc<Mutex<Option<String>>>);

impl PrincipalSlot {
    /// The label logged, if the request was authenticated.
    pub fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, label: String) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(label);
    }
}

/// How a principal appears in logs: `user:NAME` or `user:NAME token:ID` (never a
/// credential).
pub fn label(p: &Principal) -> String {
    match p.kind() {
        PrincipalKind::ApiToken { token_id } => format!("user:{} token:{token_id}", p.username()),
        PrincipalKind::Local { unix_user } => format!("local:{unix_user}"),
        PrincipalKind::Human => format!("user:{}", p.username()),
    }
}

/// The bearer credential of `headers`.
pub fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    let unauth = |why: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", why);
    let v = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauth("missing credentials: send Authorization: Bearer TOKEN"))?;
    let v = v
        .to_str()
        .map_err(|_| unauth("the Authorization header is not ASCII"))?;
    let (scheme, token) = v
        .split_once(' ')
        .ok_or_else(|| unauth("the Authorization header must be Bearer TOKEN"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(unauth("the Authorization header must be Bearer TOKEN"));
    }
    Ok(token.trim())
}

/// Authenticate a bearer credential: an API token (`wgm_…`) or a JWT access token that
/// was not logged out.
pub async fn authenticate(s: &AppState, token: &str) -> ApiResult<Caller> {
    if token.starts_with("wgm_") {
        let p = s.op("auth.token", s.m.authenticate_token(token)).await?;
        return Ok(Caller { p, session: None });
    }
    let claims = s
        .jwt
        .verify(token, TokenType::Access, s.m.now())
        .map_err(ApiError::from)?;
    let p = s.op("auth.jwt", s.m.authenticate_jwt(token)).await?;
    let exp = i64::try_from(claims.exp)
        .ok()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .unwrap_or_else(|| s.m.now());
    Ok(Caller {
        p,
        session: Some(Session {
            jti: claims.jti,
            exp,
        }),
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> ApiResult<Caller> {
        let token = bearer(&parts.headers)?;
        let caller = authenticate(s, token).await?;
        if let Some(slot) = parts.extensions.get::<PrincipalSlot>() {
            slot.set(label(&caller.p));
        }
        let key = format!("principal:{}", caller.p.user_id());
        s.limit("principal", &key, s.limits.per_principal.as_ref())
            .await?;
        Ok(caller)
    }
}
