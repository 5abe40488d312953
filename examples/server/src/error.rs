//! The one error shape of the API, `{code, kind, field?, reason}`, and the HTTP status
//! of every error kind.
//!
//! `code` is the library's [`wgm_core::Error::code`] (`invalid_input`, `not_found`,
//! `conflict`, …) or one of the server's own (`precondition_failed`, `payload_too_large`,
//! `timeout`, `method_not_allowed`); `kind` says more where there is more to say (the
//! conflict's kind, the kind of object not found) and repeats `code` otherwise.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use wgm_core::error::ConflictKind;
use wgm_core::Error;

/// The body of every error response.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error class: the library's error code (`invalid_input`, `parse`, `not_found`,
    /// `already_exists`, `conflict`, `permission_denied`, `unauthenticated`, `throttled`,
    /// `pool_exhausted`, `unsupported`, `sealed`, `backend`, `store`) or the server's own
    /// (`precondition_failed`, `payload_too_large`, `unsupported_media_type`, `timeout`,
    /// `method_not_allowed`, `internal`).
    pub code: String,
    /// A finer kind: for `conflict` the conflict's kind (`stale_revision`, `stale_user`,
    /// `taken`, `quarantined`, `audit_chain_broken`, `revision_altered`, `other`), for
    /// `not_found` and `already_exists` the kind of object (`server`, `peer`, `user`, …),
    /// for `throttled` `login` (the library's login throttle) or `rate_limited`; else
    /// the same as `code`.
    pub kind: String,
    /// The offending field as a dotted path (`peer.allowed_ips[1]`), for bad input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What went wrong, in one line; never a secret.
    pub reason: String,
}

/// An error answer (boxed: it travels in every handler's `Result`).
#[derive(Clone, Debug)]
pub struct ApiError(Box<ApiErrorParts>);

impl std::ops::Deref for ApiError {
    type Target = ApiErrorParts;
    fn deref(&self) -> &ApiErrorParts {
        &self.0
    }
}

impl std::ops::DerefMut for ApiError {
    fn deref_mut(&mut self) -> &mut ApiErrorParts {
        &mut self.0
    }
}

/// What an [`ApiError`] holds: a status, the body and, for 429 and some 503s,
/// `Retry-After`.
#[derive(Clone, Debug)]
pub struct ApiErrorParts {
    /// HTTP status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: ErrorBody,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
    /// The server's current revision, for a 412 (sent as `ETag`).
    pub etag: Option<HeaderValue>,
    /// For a library's stale revision: the revision the server is at.
    pub stale_at: Option<wgm_core::model::RevisionNo>,
}

impl ApiError {
    /// An error of the server's own: `code` (also the kind), `reason`.
    pub fn new(status: StatusCode, code: &str, reason: impl Into<String>) -> ApiError {
        ApiError(Box::new(ApiErrorParts {
            status,
            body: ErrorBody {
                code: code.to_owned(),
                kind: code.to_owned(),
                field: None,
                reason: one_line(&reason.into()),
            },
            retry_after: None,
            etag: None,
            stale_at: None,
        }))
    }

    /// Bad input in `field` (400, `invalid_input`).
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", reason);
        e.body.field = Some(field.into());
        e
    }

    /// With this `kind`.
    #[must_use]
    pub fn kind(mut self, kind: &str) -> ApiError {
        kind.clone_into(&mut self.body.kind);
        self
    }

    /// 429 for a rate limit: retry after `after` (rounded up to whole seconds).
    pub fn rate_limited(scope: &str, after: Duration) -> ApiError {
        let secs = (after.as_secs() + u64::from(after.subsec_nanos() > 0)).max(1);
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "throttled",
            format!("rate limit per {scope} reached: retry after {secs} s"),
        )
        .kind("rate_limited");
        e.retry_after = Some(secs);
        e
    }
}

/// The HTTP status of a library error.
pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::InvalidInput { .. } => StatusCode::BAD_REQUEST,
        Error::Parse { .. } | Error::Unsupported { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::AlreadyExists { .. } | Error::Conflict { .. } | Error::PoolExhausted { .. } => {
            StatusCode::CONFLICT
        }
        Error::PermissionDenied { .. } => StatusCode::FORBIDDEN,
        Error::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
        Error::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::Sealed { .. } | Error::Backend { .. } | Error::Store { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn conflict_kind(k: &ConflictKind) -> &'static str {
    match k {
        ConflictKind::StaleRevision { .. } => "stale_revision",
        ConflictKind::StaleUser { .. } => "stale_user",
        ConflictKind::Taken(_) => "taken",
        ConflictKind::Quarantined { .. } => "quarantined",
        ConflictKind::AuditChainBroken(_) => "audit_chain_broken",
        ConflictKind::RevisionAltered { .. } => "revision_altered",
        _ => "other",
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let status = status_of(&e);
        let code = e.code();
        let (kind, field, retry_after) = match &e {
            Error::InvalidInput { field, .. } => (code, Some(field.to_string()), None),
            Error::Parse { line, field, .. } => (code, Some(format!("line {line}: {field}")), None),
            Error::NotFound { kind, .. } | Error::AlreadyExists { kind, .. } => (*kind, None, None),
            Error::Conflict { kind } => (conflict_kind(kind), None, None),
            Error::Throttled { retry_after_secs } => {
                ("login", None, Some((*retry_after_secs).max(1)))
            }
            Error::Store { .. } => (code, None, Some(1)),
            _ => (code, None, None),
        };
        let reason = match &e {
            // The field is in `field`; the reason alone reads better.
            Error::InvalidInput { reason, .. } | Error::Parse { reason, .. } => reason.to_string(),
            other => other.to_string(),
        };
        ApiError(Box::new(ApiErrorParts {
            status,
            body: ErrorBody {
                code: code.to_owned(),
                kind: kind.to_owned(),
                field,
                reason: one_line(&reason),
            },
            retry_after,
            etag: None,
            stale_at: match &e {
                Error::Conflict {
                    kind: ConflictKind::StaleRevision { actual, .. },
                } => Some(wgm_core::model::RevisionNo(*actual)),
                _ => None,
            },
        }))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let ApiErrorParts {
            status,
            body,
            retry_after,
            etag,
            stale_at: _,
        } = *self.0;
        let mut res = (status, axum::Json(&body)).into_response();
        let h = res.headers_mut();
        if let Some(secs) = retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"wgm\""),
            );
        }
        if let Some(t) = etag {
            h.insert(header::ETAG, t);
        }
        // The handler's error, for the request log (no secrets: library messages never
        // hold one).
        res.extensions_mut().insert(LoggedError {
            code: body.code,
            reason: body.reason,
        });
        res
    }
}

/// The error of a response, for the request log.
#[derive(Clone, Debug)]
pub struct LoggedError {
    /// The error code.
    pub code: String,
    /// Its reason (logged only for server errors).
    pub reason: String,
}

/// Text in one line: control characters become spaces, runs of spaces one space.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut last_space = false;
    for c in s.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        out.push(c);
    }
    out.trim().to_owned()
}

/// `e` with its field replaced by `field` (for values whose parser names another).
pub fn at(e: Error, field: impl Into<String>) -> Error {
    match e {
        Error::InvalidInput { reason, .. } => Error::invalid(field.into(), reason),
        other => other,
    }
}

/// `Result` with an [`ApiError`].
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_by_kind() {
        let cases = [
            (Error::invalid("peer.name", "x"), 400, "invalid_input"),
            (Error::parse(3, "Address", "x"), 422, "parse"),
            (Error::not_found("peer", "a"), 404, "peer"),
            (Error::already_exists("user", "a"), 409, "user"),
            (Error::conflict("x"), 409, "other"),
            (Error::denied("x"), 403, "permission_denied"),
            (Error::unauthenticated("x"), 401, "unauthenticated"),
            (
                Error::Throttled {
                    retry_after_secs: 3,
                },
                429,
                "login",
            ),
            (
                Error::PoolExhausted {
                    pool: "10.0.0.0/30".into(),
                },
                409,
                "pool_exhausted",
            ),
            (Error::unsupported("x"), 422, "unsupported"),
            (Error::sealed("x"), 503, "sealed"),
            (Error::store("sqlite", "down"), 503, "store"),
        ];
        for (e, status, kind) in cases {
            let a = ApiError::from(e);
            assert_eq!(a.status.as_u16(), status);
            assert_eq!(a.body.kind, kind);
        }
        let a = ApiError::from(Error::invalid("peer.name", "bad"));
        assert_eq!(a.body.field.as_deref(), Some("peer.name"));
        assert_eq!(a.body.reason, "bad");
        assert_eq!(one_line("a\n\n b"), "a b");
    }
}
