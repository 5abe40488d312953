//! Login, refresh, logout, the caller's own record, TOTP enrolment, own password.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use wgm_core::auth::jwt::TokenType;

use super::{no_store, Errors};
use crate::auth::Caller;
use crate::dto::{
    LoginIn, LoginOut, LogoutIn, PasswordIn, RefreshIn, RefreshOut, TotpConfirmIn, TotpOut, UserOut,
};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, ClientAddr};
use crate::state::{address_key, AppState};

/// Log in with a user name, password and, when enrolled, a TOTP code. Throttled per
/// account and per source by the library, and per client address here.
#[utoipa::path(post, path = "/api/v1/login", tag = "session", request_body = LoginIn,
    responses((status = 200, description = "Logged in", body = LoginOut), Errors))]
pub async fn login(
    State(s): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Body(b): Body<LoginIn>,
) -> ApiResult<Response> {
    let key = format!("login:{}", address_key(addr));
    s.limit("login", &key, s.limits.login_per_address.as_ref())
        .await?;
    let out = s
        .op(
            "user.login",
            s.m.login(&b.user, &b.password, b.totp.as_deref(), addr),
        )
        .await?;
    Ok(no_store(
        Json(LoginOut {
            user_id: out.user_id,
            access_token: out.access_token.as_str().to_owned(),
            refresh_token: out.refresh_token.as_str().to_owned(),
            token_type: "Bearer".to_owned(),
            expires_in: s.access_ttl.as_secs(),
        })
        .into_response(),
    ))
}

/// Exchange a refresh token for a new access token.
#[utoipa::path(post, path = "/api/v1/refresh", tag = "session", request_body = RefreshIn,
    responses((status = 200, description = "A new access token", body = RefreshOut), Errors))]
pub async fn refresh(
    State(s): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Body(b): Body<RefreshIn>,
) -> ApiResult<Response> {
    let key = format!("login:{}", address_key(addr));
    s.limit("login", &key, s.limits.login_per_address.as_ref())
        .await?;
    let access = s.op("user.refresh", s.m.refresh(&b.refresh_token)).await?;
    Ok(no_store(
        Json(RefreshOut {
            access_token: access.as_str().to_owned(),
            token_type: "Bearer".to_owned(),
            expires_in: s.access_ttl.as_secs(),
        })
        .into_response(),
    ))
}

/// End the caller's login session: its access token and, when given, its refresh token
/// stop working, on every copy of the server (the library records it in the store).
#[utoipa::path(post, path = "/api/v1/logout", tag = "session", request_body(content = LogoutIn, description = "The session's refresh token, to end it too"),
    responses((status = 204, description = "Logged out"), Errors), security(("bearer" = [])))]
pub async fn logout(
    State(s): State<AppState>,
    c: Caller,
    headers: axum::http::HeaderMap,
    Body(b): Body<LogoutIn>,
) -> ApiResult<StatusCode> {
    let Some(session) = c.session else {
        return Err(ApiError::invalid(
            "Authorization",
            "an API token has no session to end; revoke it with DELETE /api/v1/tokens/{id}",
        ));
    };
    if let Some(rt) = &b.refresh_token {
        let claims = s
            .jwt
            .verify(rt, TokenType::Refresh, s.m.now())
            .map_err(|_| {
                ApiError::invalid("logout.refresh_token", "is not a valid refresh token")
            })?;
        if claims.sub != c.p.user_id() {
            return Err(ApiError::invalid(
                "logout.refresh_token",
                "belongs to another user",
            ));
        }
        s.op("user.logout", s.m.logout(rt)).await?;
    }
    // The library records the ended session in the store: every copy refuses it.
    let _ = session;
    let access = crate::auth::bearer(&headers)?;
    s.op("user.logout", s.m.logout(access)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's own user record.
#[utoipa::path(get, path = "/api/v1/me", tag = "session",
    responses((status = 200, description = "The caller", body = UserOut), Errors), security(("bearer" = [])))]
pub async fn me(State(s): State<AppState>, c: Caller) -> ApiResult<Json<UserOut>> {
    let v = s.op("user.get", s.m.get_user(&c.p, c.user_id())).await?;
    Ok(Json(v.into()))
}

/// Start TOTP enrolment: the provisioning URI and its QR code (SVG). Takes effect once
/// confirmed with a first code.
#[utoipa::path(post, path = "/api/v1/me/totp", tag = "session",
    responses((status = 200, description = "Scan it, then confirm with a code", body = TotpOut), Errors), security(("bearer" = [])))]
pub async fn totp_enroll(State(s): State<AppState>, c: Caller) -> ApiResult<Response> {
    let uri = s
        .op(
            "user.totp_enroll",
            s.m.enroll_totp(&c.p, c.user_id(), &s.totp_issuer),
        )
        .await?;
    let qr_svg = wgm_core::wgquick::qr_svg(&uri)?;
    Ok(no_store(
        Json(TotpOut {
            uri: uri.as_str().to_owned(),
            qr_svg,
        })
        .into_response(),
    ))
}

/// Confirm TOTP enrolment with a valid code; from then on login needs a code.
#[utoipa::path(post, path = "/api/v1/me/totp/confirm", tag = "session", request_body = TotpConfirmIn,
    responses((status = 204, description = "Enrolled"), Errors), security(("bearer" = [])))]
pub async fn totp_confirm(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<TotpConfirmIn>,
) -> ApiResult<StatusCode> {
    s.op(
        "user.totp_confirm",
        s.m.confirm_totp(&c.p, c.user_id(), &b.code),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change one's own password (the current one is needed). Ends every session of the
/// user.
#[utoipa::path(put, path = "/api/v1/me/password", tag = "session", request_body = PasswordIn,
    responses((status = 204, description = "Changed"), Errors), security(("bearer" = [])))]
pub async fn my_password(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<PasswordIn>,
) -> ApiResult<StatusCode> {
    s.op(
        "user.set_password",
        s.m.set_password(&c.p, c.user_id(), b.current.as_deref(), &b.new),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
