//! JWT access and refresh tokens, verified by the rules of RFC 8725.
//!
//! - One algorithm, HS256, on a fixed allow-list: `alg: none`, other HMAC sizes and every
//!   asymmetric algorithm are refused before the signature is even looked at.
//! - The key is at least 256 bits.
//! - `exp`, `nbf`, `iat`, `iss`, `aud`, `sub`, `typ`, `ver` and `jti` are all required;
//!   `iss` and `aud` must equal the configured values; `typ` must be the kind the caller
//!   expects, so a refresh token is not accepted as an access token.
//! - Time is the caller's `now`, never the system clock: a token is refused from its `exp`
//!   on and before its `nbf`, with a configurable leeway (0 by default). A token whose
//!   lifetime is longer than the configured one for its kind is refused too.
//! - `ver` carries the user's token version; the caller compares it with the stored one,
//!   so bumping the version (password or role change) invalidates every older token.
//!
//! The verifier returns validated [`Claims`] or an [`Error::Unauthenticated`], nothing in
//! between.
//!
//! ```
//! use time::OffsetDateTime;
//! use uuid::Uuid;
//! use wgm_core::auth::jwt::{JwtIssuer, JwtKey, TokenType};
//!
//! let issuer = JwtIssuer::new(JwtKey::generate(), "https://wgm.example", "wgm-api")?;
//! let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
//! let user = Uuid::new_v4();
//! let token = issuer.issue(user, 3, TokenType::Access, now)?;
//! let claims = issuer.verify(&token, TokenType::Access, now)?;
//! assert_eq!((claims.sub, claims.ver), (user, 3));
//! // A refresh token is not an access token.
//! let refresh = issuer.issue(user, 3, TokenType::Refresh, now)?;
//! assert!(issuer.verify(&refresh, TokenType::Access, now).is_err());
//! # Ok::<(), wgm_core::Error>(())
//! ```

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};
use time::OffsetDateTime;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::{Error, Result};

/// The only signing algorithm issued or accepted.
const ALGORITHM: Algorithm = Algorithm::HS256;
/// The header `typ` of every token.
const HEADER_TYP: &str = "JWT";
/// Shortest key accepted, in bytes (256 bits, the HS256 output size).
pub const MIN_KEY_LEN: usize = 32;
/// Longest token text accepted, in bytes (ours are about 400).
pub const MAX_TOKEN_LEN: usize = 4096;
/// Default lifetime of an access token (15 minutes).
pub const DEFAULT_ACCESS_TTL: Duration = Duration::from_secs(15 * 60);
/// Default lifetime of a refresh token (7 days).
pub const DEFAULT_REFRESH_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Largest leeway that may be configured (60 seconds).
pub const MAX_LEEWAY: Duration = Duration::from_secs(60);

/// The HMAC key that signs and verifies tokens. Zeroized on drop, redacted in `Debug`.
#[derive(Clone)]
pub struct JwtKey(Zeroizing<Vec<u8>>);

impl JwtKey {
    /// A fresh 32-byte key from the operating system's RNG.
    pub fn generate() -> Self {
        Self::generate_with(&mut OsRng)
    }

    /// A fresh 32-byte key from `rng`.
    pub fn generate_with<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; MIN_KEY_LEN]);
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// A key made of these bytes: at least 32 bytes, not all equal.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(Error::invalid("jwt.key", "must be at least 32 bytes"));
        }
        if bytes.iter().all(|&b| b == bytes[0]) {
            return Err(Error::invalid(
                "jwt.key",
                "must be random, not one repeated byte",
            ));
        }
        Ok(Self(Zeroizing::new(bytes.to_vec())))
    }

    /// The raw key bytes. Handle with care.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtKey(<redacted>)")
    }
}

/// What a token may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenType {
    /// Short-lived; presented on every API call.
    Access,
    /// Longer-lived; exchanged for a new access token, nothing else.
    Refresh,
}

impl fmt::Display for TokenType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenType::Access => "access",
            TokenType::Refresh => "refresh",
        })
    }
}

/// The claims of a verified token. Every field is required.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// The user the token was issued to.
    pub sub: Uuid,
    /// Access or refresh.
    pub typ: TokenType,
    /// The user's token version when the token was issued.
    pub ver: u64,
    /// Issued at (unix seconds).
    pub iat: u64,
    /// Not valid before (unix seconds).
    pub nbf: u64,
    /// Not valid from this time on (unix seconds).
    pub exp: u64,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Unique token id (for revocation lists and audit).
    pub jti: Uuid,
}

/// Issues and verifies tokens for one issuer and audience with one key.
#[derive(Clone, Debug)]
pub struct JwtIssuer {
    key: JwtKey,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    refresh_ttl: Duration,
    leeway: Duration,
}

impl JwtIssuer {
    /// An issuer with default lifetimes (15 minutes access, 7 days refresh) and no leeway.
    /// `issuer` and `audience` must be 1 to 256 bytes without control characters.
    pub fn new(
        key: JwtKey,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Result<Self> {
        let issuer = issuer.into();
        let audience = audience.into();
        check_text("jwt.issuer", &issuer)?;
        check_text("jwt.audience", &audience)?;
        Ok(Self {
            key,
            issuer,
            audience,
            access_ttl: DEFAULT_ACCESS_TTL,
            refresh_ttl: DEFAULT_REFRESH_TTL,
            leeway: Duration::ZERO,
        })
    }

    /// Set the lifetimes: access 1 s to 1 day, refresh at least the access lifetime and
    /// at most 90 days.
    pub fn with_ttls(mut self, access: Duration, refresh: Duration) -> Result<Self> {
        if access < Duration::from_secs(1) || access > Duration::from_secs(24 * 3600) {
            return Err(Error::invalid(
                "jwt.access_ttl",
                "must be 1 second to 1 day",
            ));
        }
        if refresh < access || refresh > Duration::from_secs(90 * 24 * 3600) {
            return Err(Error::invalid(
                "jwt.refresh_ttl",
                "must be at least the access lifetime and at most 90 days",
            ));
        }
        self.access_ttl = Duration::from_secs(access.as_secs());
        self.refresh_ttl = Duration::from_secs(refresh.as_secs());
        Ok(self)
    }

    /// Allow this much clock skew on `exp` and `nbf` (at most 60 seconds).
    pub fn with_leeway(mut self, leeway: Duration) -> Result<Self> {
        if leeway > MAX_LEEWAY {
            return Err(Error::invalid("jwt.leeway", "must be at most 60 seconds"));
        }
        self.leeway = Duration::from_secs(leeway.as_secs());
        Ok(self)
    }

    /// The lifetime of tokens of type `typ`.
    pub fn ttl(&self, typ: TokenType) -> Duration {
        match typ {
            TokenType::Access => self.access_ttl,
            TokenType::Refresh => self.refresh_ttl,
        }
    }

    /// Issue a token of type `typ` for `user_id` at token version `ver`, valid from `now`
    /// for [`JwtIssuer::ttl`]. The text is a bearer credential: never log it.
    pub fn issue(
        &self,
        user_id: Uuid,
        ver: u64,
        typ: TokenType,
        now: OffsetDateTime,
    ) -> Result<Zeroizing<String>> {
        Ok(self.issue_claims(user_id, ver, typ, now)?.1)
    }

    /// [`JwtIssuer::issue`], also returning the claims (for the `jti` and `exp`).
    pub fn issue_claims(
        &self,
        user_id: Uuid,
        ver: u64,
        typ: TokenType,
        now: OffsetDateTime,
    ) -> Result<(Claims, Zeroizing<String>)> {
        let iat = unix(now)?;
        let exp = iat
            .checked_add(self.ttl(typ).as_secs())
            .ok_or_else(|| Error::invalid("now", "is too far in the future"))?;
        let mut jti = [0u8; 16];
        OsRng.fill_bytes(&mut jti);
        let claims = Claims {
            sub: user_id,
            typ,
            ver,
            iat,
            nbf: iat,
            exp,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: uuid::Builder::from_random_bytes(jti).into_uuid(),
        };
        let mut header = Header::new(ALGORITHM);
        header.typ = Some(HEADER_TYP.to_owned());
        let token = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(self.key.expose_bytes()),
        )
        .map_err(|_| Error::invalid("jwt", "could not encode the token"))?;
        Ok((claims, Zeroizing::new(token)))
    }

    /// Verify `token` as a token of type `expected` at time `now`; returns its claims.
    ///
    /// Refused (as [`Error::Unauthenticated`]): over-long or malformed text, any `alg`
    /// but HS256 (including `none`), a header with key-location or critical parameters,
    /// a bad signature, a missing claim, a wrong `iss` or `aud`, the wrong `typ`, an
    /// expired or not-yet-valid token, a lifetime longer than configured.
    /// The caller still compares `ver` with the user's current token version.
    pub fn verify(&self, token: &str, expected: TokenType, now: OffsetDateTime) -> Result<Claims> {
        let invalid = || Error::unauthenticated("invalid token");
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(invalid());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
        if header.alg != ALGORITHM
            || header.typ.as_deref() != Some(HEADER_TYP)
            || header.jku.is_some()
            || header.jwk.is_some()
            || header.x5u.is_some()
            || header.x5c.is_some()
            || header.cty.is_some()
        {
            return Err(invalid());
        }

        let mut validation = Validation::new(ALGORITHM);
        validation.algorithms = vec![ALGORITHM];
        // Time is checked below against the caller's `now`; the library must not read
        // the system clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.required_spec_claims = ["exp", "nbf", "iss", "aud", "sub"]
            .into_iter()
            .map(str::to_owned)
            .collect::<HashSet<_>>();
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        let data = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(self.key.expose_bytes()),
            &validation,
        )
        .map_err(|_| invalid())?;
        let claims = data.claims;

        // Belt and braces: the library checked these, check them again by equality.
        if claims.iss != self.issuer || claims.aud != self.audience {
            return Err(invalid());
        }
        if claims.typ != expected {
            return Err(Error::unauthenticated(format!("not an {expected} token")));
        }
        if claims.nbf > claims.exp
            || claims.iat > claims.exp
            || claims.exp - claims.nbf > self.ttl(expected).as_secs()
        {
            return Err(invalid());
        }
        let now = unix(now).map_err(|_| invalid())?;
        let leeway = self.leeway.as_secs();
        if now >= claims.exp.saturating_add(leeway) {
            return Err(Error::unauthenticated("token expired"));
        }
        if now.saturating_add(leeway) < claims.nbf {
            return Err(Error::unauthenticated("token not yet valid"));
        }
        Ok(claims)
    }
}

fn unix(t: OffsetDateTime) -> Result<u64> {
    u64::try_from(t.unix_timestamp()).map_err(|_| Error::invalid("now", "must not be before 1970"))
}

fn check_text(field: &'static str, text: &str) -> Result<()> {
    if text.is_empty() || text.len() > 256 || text.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            "must be 1 to 256 bytes without control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use serde_json::json;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef-wgm-test-key";
    const T0: i64 = 1_700_000_000;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(secs).unwrap()
    }

    fn issuer() -> JwtIssuer {
        JwtIssuer::new(
            JwtKey::from_bytes(KEY).unwrap(),
            "https://wgm.test",
            "wgm-api",
        )
        .unwrap()
    }

    fn valid_claims(typ: &str) -> serde_json::Value {
        json!({
            "sub": "8a4c1f4e-1f0b-4f5e-9d4a-0e0d7c5f9a11",
            "typ": typ, "ver": 1,
            "iat": T0, "nbf": T0, "exp": T0 + 900,
            "iss": "https://wgm.test", "aud": "wgm-api",
            "jti": "0b8d1f8e-0000-4000-8000-000000000001",
        })
    }

    /// Sign arbitrary claims with the right key and algorithm.
    fn sign(claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(KEY)).unwrap()
    }

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    fn assert_refused(r: Result<Claims>, what: &str) {
        match r {
            Err(Error::Unauthenticated { .. }) => {}
            other => panic!("{what}: expected Unauthenticated, got {other:?}"),
        }
    }

    #[test]
    fn issue_and_verify_round_trip() {
        let iss = issuer();
        let user = Uuid::new_v4();
        let (claims, token) = iss
            .issue_claims(user, 7, TokenType::Access, at(T0))
            .unwrap();
        assert_eq!(claims.exp, T0 as u64 + 900);
        let got = iss.verify(&token, TokenType::Access, at(T0 + 899)).unwrap();
        assert_eq!(got, claims);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(
            (header.alg, header.typ.as_deref()),
            (Algorithm::HS256, Some("JWT"))
        );
        // Two tokens for the same user and time differ (jti).
        let other = iss.issue(user, 7, TokenType::Access, at(T0)).unwrap();
        assert_ne!(*other, *token);
        // A hand-signed token with every claim is accepted (the test helper is sound).
        iss.verify(&sign(&valid_claims("access")), TokenType::Access, at(T0))
            .unwrap();
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let iss = issuer();
        let body = b64(&valid_claims("access"));
        for header in [
            json!({"alg": "none", "typ": "JWT"}),
            json!({"alg": "None", "typ": "JWT"}),
            json!({"alg": "HS384", "typ": "JWT"}),
            json!({"alg": "HS512", "typ": "JWT"}),
            json!({"alg": "RS256", "typ": "JWT"}),
            json!({"alg": "ES256", "typ": "JWT"}),
            json!({"alg": "EdDSA", "typ": "JWT"}),
            json!({"typ": "JWT"}),
        ] {
            for sig in ["", "AAAA"] {
                let token = format!("{}.{body}.{sig}", b64(&header));
                assert_refused(
                    iss.verify(&token, TokenType::Access, at(T0)),
                    &format!("{header} sig {sig:?}"),
                );
            }
        }
        // Correctly signed with the same key under HS512: still refused.
        let mut h = Header::new(Algorithm::HS512);
        h.typ = Some("JWT".into());
        let hs512 =
            jsonwebtoken::encode(&h, &valid_claims("access"), &EncodingKey::from_secret(KEY))
                .unwrap();
        assert_refused(iss.verify(&hs512, TokenType::Access, at(T0)), "HS512");
    }

    #[test]
    fn bad_signatures_and_shapes_are_refused() {
        let iss = issuer();
        let token = iss
            .issue(Uuid::new_v4(), 1, TokenType::Access, at(T0))
            .unwrap();
        let other_key = JwtIssuer::new(JwtKey::generate(), "https://wgm.test", "wgm-api").unwrap();
        assert_refused(
            other_key.verify(&token, TokenType::Access, at(T0)),
            "other key",
        );

        let parts: Vec<&str> = token.split('.').collect();
        // Payload swapped for another (more privileged) one, old signature kept.
        let mut forged = valid_claims("access");
        forged["ver"] = json!(999);
        let swapped = format!("{}.{}.{}", parts[0], b64(&forged), parts[2]);
        assert_refused(
            iss.verify(&swapped, TokenType::Access, at(T0)),
            "swapped payload",
        );
        // Signature stripped, truncated, or one character changed.
        assert_refused(
            iss.verify(
                &format!("{}.{}.", parts[0], parts[1]),
                TokenType::Access,
                at(T0),
            ),
            "no sig",
        );
        assert_refused(
            iss.verify(
                &format!("{}.{}", parts[0], parts[1]),
                TokenType::Access,
                at(T0),
            ),
            "two parts",
        );
        let mut sig = parts[2].to_owned();
        let c = if sig.starts_with('A') { "B" } else { "A" };
        sig.replace_range(0..1, c);
        assert_refused(
            iss.verify(
                &format!("{}.{}.{sig}", parts[0], parts[1]),
                TokenType::Access,
                at(T0),
            ),
            "flipped",
        );
        for junk in ["", "a.b.c", "....", &"a".repeat(MAX_TOKEN_LEN + 1)] {
            assert_refused(iss.verify(junk, TokenType::Access, at(T0)), junk);
        }
        // Header with a key location, content type or another typ: refused even if signed.
        for extra in [
            json!({"jku": "https://evil"}),
            json!({"cty": "JWT"}),
            json!({"typ": "at+jwt"}),
        ] {
            let mut header = json!({"alg": "HS256", "typ": "JWT"});
            for (k, v) in extra.as_object().unwrap() {
                header[k] = v.clone();
            }
            let msg = format!("{}.{}", b64(&header), b64(&valid_claims("access")));
            // A valid HS256 signature over this very header and payload.
            let real_sig = {
                use hmac::{Hmac, Mac};
                let mut mac = Hmac::<sha2::Sha256>::new_from_slice(KEY).unwrap();
                mac.update(msg.as_bytes());
                URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
            };
            assert_refused(
                iss.verify(&format!("{msg}.{real_sig}"), TokenType::Access, at(T0)),
                &extra.to_string(),
            );
        }
    }

    #[test]
    fn missing_or_wrong_claims_are_refused() {
        let iss = issuer();
        for missing in [
            "exp", "nbf", "iat", "iss", "aud", "sub", "typ", "ver", "jti",
        ] {
            let mut c = valid_claims("access");
            c.as_object_mut().unwrap().remove(missing);
            assert_refused(iss.verify(&sign(&c), TokenType::Access, at(T0)), missing);
        }
        for (field, value) in [
            ("iss", json!("https://evil.test")),
            ("aud", json!("other-api")),
            ("aud", json!(["wgm-api", "other"])),
            ("typ", json!("id")),
            ("sub", json!("admin")),
            ("exp", json!("soon")),
            ("exp", json!(-1)),
            ("ver", json!(-1)),
        ] {
            let mut c = valid_claims("access");
            c[field] = value.clone();
            assert_refused(
                iss.verify(&sign(&c), TokenType::Access, at(T0)),
                &format!("{field}={value}"),
            );
        }
    }

    #[test]
    fn time_is_checked_against_the_callers_now() {
        let iss = issuer();
        let token = iss
            .issue(Uuid::new_v4(), 1, TokenType::Access, at(T0))
            .unwrap();
        assert!(iss.verify(&token, TokenType::Access, at(T0)).is_ok());
        assert!(iss.verify(&token, TokenType::Access, at(T0 + 899)).is_ok());
        // exp is exclusive.
        let e = iss
            .verify(&token, TokenType::Access, at(T0 + 900))
            .unwrap_err();
        assert!(e.to_string().contains("expired"));
        // Before nbf.
        let e = iss
            .verify(&token, TokenType::Access, at(T0 - 1))
            .unwrap_err();
        assert!(e.to_string().contains("not yet valid"));
        // With leeway, a little skew either way is tolerated, and no more.
        let lenient = issuer().with_leeway(Duration::from_secs(30)).unwrap();
        assert!(lenient
            .verify(&token, TokenType::Access, at(T0 + 929))
            .is_ok());
        assert!(lenient
            .verify(&token, TokenType::Access, at(T0 + 930))
            .is_err());
        assert!(lenient
            .verify(&token, TokenType::Access, at(T0 - 30))
            .is_ok());
        assert!(lenient
            .verify(&token, TokenType::Access, at(T0 - 31))
            .is_err());
        assert!(issuer().with_leeway(Duration::from_secs(61)).is_err());
        // A token valid in the real present but expired at the caller's `now`: refused,
        // proving the system clock is not consulted (and vice versa).
        assert!(iss
            .verify(&token, TokenType::Access, at(T0 + 1_000_000))
            .is_err());
        // Times before 1970 are refused, not wrapped.
        assert!(iss.verify(&token, TokenType::Access, at(-5)).is_err());
        assert!(iss
            .issue(Uuid::new_v4(), 1, TokenType::Access, at(-5))
            .is_err());
    }

    #[test]
    fn overlong_lifetimes_and_inconsistent_times_are_refused() {
        let iss = issuer();
        let mut c = valid_claims("access");
        c["exp"] = json!(T0 + 901);
        assert_refused(
            iss.verify(&sign(&c), TokenType::Access, at(T0)),
            "lifetime 901 s",
        );
        let mut c = valid_claims("access");
        c["nbf"] = json!(T0 + 1000);
        assert_refused(
            iss.verify(&sign(&c), TokenType::Access, at(T0 + 950)),
            "nbf after exp",
        );
        let mut c = valid_claims("access");
        c["iat"] = json!(T0 + 1000);
        assert_refused(
            iss.verify(&sign(&c), TokenType::Access, at(T0)),
            "iat after exp",
        );
    }

    #[test]
    fn token_types_are_not_interchangeable() {
        let iss = issuer();
        let user = Uuid::new_v4();
        let access = iss.issue(user, 1, TokenType::Access, at(T0)).unwrap();
        let refresh = iss.issue(user, 1, TokenType::Refresh, at(T0)).unwrap();
        assert_refused(
            iss.verify(&refresh, TokenType::Access, at(T0)),
            "refresh as access",
        );
        assert_refused(
            iss.verify(&access, TokenType::Refresh, at(T0)),
            "access as refresh",
        );
        let claims = iss
            .verify(&refresh, TokenType::Refresh, at(T0 + 6 * 24 * 3600))
            .unwrap();
        assert_eq!(claims.exp - claims.iat, DEFAULT_REFRESH_TTL.as_secs());
    }

    #[test]
    fn configuration_is_checked() {
        assert!(JwtKey::from_bytes(&[1u8; 31]).is_err());
        assert!(JwtKey::from_bytes(&[0u8; 64]).is_err());
        assert!(JwtKey::from_bytes(KEY).is_ok());
        assert_eq!(
            format!("{:?}", JwtKey::from_bytes(KEY).unwrap()),
            "JwtKey(<redacted>)"
        );
        let key = || JwtKey::from_bytes(KEY).unwrap();
        assert!(JwtIssuer::new(key(), "", "aud").is_err());
        assert!(JwtIssuer::new(key(), "iss", "a\nb").is_err());
        let iss = JwtIssuer::new(key(), "iss", "aud").unwrap();
        assert!(!format!("{iss:?}").contains("0123456789abcdef"));
        assert!(iss
            .clone()
            .with_ttls(Duration::ZERO, DEFAULT_REFRESH_TTL)
            .is_err());
        assert!(iss
            .clone()
            .with_ttls(Duration::from_secs(600), Duration::from_secs(60))
            .is_err());
        assert!(iss
            .clone()
            .with_ttls(
                Duration::from_secs(600),
                Duration::from_secs(91 * 24 * 3600)
            )
            .is_err());
        let short = iss
            .with_ttls(Duration::from_secs(60), Duration::from_secs(3600))
            .unwrap();
        let t = short
            .issue(Uuid::new_v4(), 0, TokenType::Access, at(T0))
            .unwrap();
        assert!(short.verify(&t, TokenType::Access, at(T0 + 60)).is_err());
        assert!(short.verify(&t, TokenType::Access, at(T0 + 59)).is_ok());
    }
}
