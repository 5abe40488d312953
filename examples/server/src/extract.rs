//! Request extractors whose refusals are the API's JSON errors: JSON bodies whose type
//! errors name the field, path segments, `If-Match`, the client's address.

use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use serde::de::DeserializeOwned;
use wgm_core::model::RevisionNo;

use crate::error::{ApiError, ApiResult};

/// The name a request body's fields are reported under (`peer` → `peer.keepalive`).
pub trait Root {
    /// The prefix.
    const ROOT: &'static str;
}

/// A JSON request body of type `T`. Refusals: 415 without a JSON content type, 413 over
/// the size limit, 400 naming the field whose type or value serde refused.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T, S> FromRequest<S> for Body<T>
where
    T: DeserializeOwned + Root,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> ApiResult<Body<T>> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                let m = m.trim();
                m.eq_ignore_ascii_case("application/json")
                    || (m.starts_with("application/") && m.ends_with("+json"))
            });
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body is larger than the server accepts (max_body_bytes)",
                )
            } else {
                ApiError::invalid(T::ROOT, "the request body could not be read")
            }
        })?;
        parse_json(&bytes).map(Body)
    }
}

/// Parse `bytes` as a `T`, naming the field of any error.
pub fn parse_json<T: DeserializeOwned + Root>(bytes: &[u8]) -> ApiResult<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            T::ROOT.to_owned()
        } else {
            format!("{}.{path}", T::ROOT)
        };
        ApiError::invalid(field, strip_position(&e.inner().to_string()))
    })?;
    de.end()
        .map_err(|_| ApiError::invalid(T::ROOT, "trailing characters after the JSON value"))?;
    Ok(v)
}

/// The JSON parser's message without its ` at line L column C`.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Path parameters, refused as a JSON 400 when they do not decode.
#[derive(Debug)]
pub struct Seg<T>(pub T);

impl<T, S> FromRequestParts<S> for Seg<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Seg<T>> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Seg(p.0))
            .map_err(|e| ApiError::invalid("path", e.body_text()))
    }
}

/// Query parameters (all text, parsed by the handlers with their field names), refused
/// as a JSON 400 when the query string does not decode.
#[derive(Debug)]
pub struct Q<T>(pub T);

impl<T, S> FromRequestParts<S> for Q<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Q<T>> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Q(q.0))
            .map_err(|e| ApiError::invalid("query", e.body_text()))
    }
}

/// The `If-Match` precondition of a write: the server revisions (entity tags) the
/// client expects, or any (`*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IfMatch {
    /// `If-Match: *`.
    Any,
    /// `If-Match: "7"` (or several).
    Revisions(Vec<u64>),
}

impl IfMatch {
    /// Whether the current revision `rev` satisfies the precondition.
    pub fn matches(&self, rev: RevisionNo) -> bool {
        match self {
            IfMatch::Any => true,
            IfMatch::Revisions(v) => v.contains(&rev.0),
        }
    }

    /// Parse the header's value.
    pub fn parse(v: &str) -> ApiResult<IfMatch> {
        let bad = || {
            ApiError::invalid(
                "If-Match",
                "must be * or entity tags as sent in ETag, e.g. \"7\"",
            )
        };
        if v.trim() == "*" {
            return Ok(IfMatch::Any);
        }
        let mut out = Vec::new();
        for item in v.split(',') {
            let t = item.trim();
            let t = t.strip_prefix("W/").unwrap_or(t);
            let inner = t
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .ok_or_else(bad)?;
            out.push(inner.parse::<u64>().map_err(|_| bad())?);
        }
        if out.is_empty() {
            return Err(bad());
        }
        Ok(IfMatch::Revisions(out))
    }
}

/// The optional `If-Match` header.
#[derive(Debug)]
pub struct Precondition(pub Option<IfMatch>);

impl<S: Send + Sync> FromRequestParts<S> for Precondition {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<Precondition> {
        match parts.headers.get(header::IF_MATCH) {
            None => Ok(Precondition(None)),
            Some(v) => {
                let v = v
                    .to_str()
                    .map_err(|_| ApiError::invalid("If-Match", "must be ASCII"))?;
                IfMatch::parse(v).map(|m| Precondition(Some(m)))
            }
        }
    }
}

/// The `ETag` of a server revision.
pub fn etag(rev: RevisionNo) -> HeaderValue {
    // Digits and quotes only: always a valid header value.
    HeaderValue::from_str(&format!("\"{}\"", rev.0)).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The client's address (the connection's peer, or the right-most untrusted
/// `X-Forwarded-For` entry behind a trusted proxy), set by the middleware.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<ClientAddr> {
        Ok(parts
            .extensions
            .get::<ClientAddr>()
            .copied()
            .unwrap_or(ClientAddr(IpAddr::from([0u8, 0, 0, 0]))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        a: u16,
        b: Vec<String>,
    }
    impl Root for T {
        const ROOT: &'static str = "t";
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<T>(br#"{"a": 70000, "b": []}"#).unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("t.a"));
        let e = parse_json::<T>(br#"{"a": 1, "b": ["x", 2]}"#).unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("t.b[1]"));
        let e = parse_json::<T>(br#"{"a": 1, "b": [], "c": 1}"#).unwrap_err();
        assert!(e.body.reason.contains("unknown field"), "{e:?}");
        assert!(parse_json::<T>(br#"{"a": 1, "b": []} x"#).is_err());
    }

    #[test]
    fn if_match() {
        assert_eq!(IfMatch::parse("*").unwrap(), IfMatch::Any);
        assert_eq!(
            IfMatch::parse("\"3\", W/\"4\"").unwrap(),
            IfMatch::Revisions(vec![3, 4])
        );
        assert!(IfMatch::parse("3").is_err());
    }
}
