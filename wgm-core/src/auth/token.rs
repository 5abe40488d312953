//! API tokens: 256 bits from the OS RNG, shown once, stored only as a SHA-256 hash.
//!
//! The plaintext a client keeps is `wgm_<id>_<secret>`: the token id as 32 lowercase hex
//! digits (so the store can look the token up without scanning) and the 32-byte secret as
//! 43 characters of unpadded base64url. The store keeps the id and the [`TokenHash`]
//! (SHA-256 of the secret) — a leaked database does not yield usable tokens, and because
//! the secret has 256 bits of entropy a fast hash is enough. Comparison is constant-time.
//!
//! ```
//! use wgm_core::auth::token::{generate_token, parse_token, verify_token};
//!
//! let new = generate_token();
//! // Give `new.plaintext` to the client once; store `new.id` and `new.hash`.
//! let (id, secret) = parse_token(&new.plaintext)?;
//! assert_eq!(id, new.id);
//! assert!(verify_token(&secret, &new.hash));
//! assert!(!format!("{new:?}").contains(new.plaintext.as_str()));
//! # Ok::<(), wgm_core::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::{Error, Result};

/// The prefix of every API token (lets secret scanners recognise leaked tokens).
pub const TOKEN_PREFIX: &str = "wgm_";
/// Length of the secret part in bytes (256 bits).
pub const SECRET_LEN: usize = 32;
/// Length of a token's text form: prefix, 32 hex digits, `_`, 43 base64url characters.
pub const TOKEN_TEXT_LEN: usize = TOKEN_PREFIX.len() + 32 + 1 + 43;

/// The public identifier of an API token (a random UUID).
///
/// Serialized and displayed as a hyphenated UUID; written as 32 hex digits inside the
/// token text.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct TokenId(Uuid);

impl TokenId {
    /// A fresh random id from the operating system's RNG.
    pub fn generate() -> Self {
        Self::generate_with(&mut OsRng)
    }

    /// A fresh random (version 4) id from `rng`.
    pub fn generate_with<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        Self(uuid::Builder::from_random_bytes(bytes).into_uuid())
    }

    /// The id wrapping `uuid`.
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for TokenId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| Error::invalid("token.id", "must be a UUID"))
    }
}

/// The secret part of an API token. Zeroized on drop, redacted in `Debug`.
pub struct ApiTokenSecret(Zeroizing<[u8; SECRET_LEN]>);

impl ApiTokenSecret {
    /// The raw secret bytes. Handle with care.
    pub fn expose_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// The hash to store for this secret.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(self)
    }
}

impl fmt::Debug for ApiTokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiTokenSecret(<redacted>)")
    }
}

/// SHA-256 of a token's secret: what the store keeps. Serialized as 64 lowercase hex
/// digits. Not secret on its own (the secret has 256 bits of entropy), but still not
/// something to print: `Debug` shows only the first 8 hex digits.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash of `secret`.
    pub fn of(secret: &ApiTokenSecret) -> Self {
        Self(Sha256::digest(secret.expose_bytes()).into())
    }

    /// Parse the stored form: exactly 64 lowercase hex digits.
    pub fn from_hex(text: &str) -> Result<Self> {
        let mut bytes = [0u8; 32];
        if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::invalid(
                "token.hash",
                "must be 64 lowercase hex digits",
            ));
        }
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| Error::invalid("token.hash", "must be 64 lowercase hex digits"))?;
        Ok(Self(bytes))
    }

    /// The stored form: 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", &hex::encode(&self.0[..4]))
    }
}

impl serde::Serialize for TokenHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for TokenHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        TokenHash::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

/// A freshly generated token: the plaintext to hand to the client once, and the id and
/// hash to store. `Debug` omits the plaintext.
pub struct NewApiToken {
    /// The token's id (store it; it is also inside the plaintext).
    pub id: TokenId,
    /// `wgm_<id>_<secret>`: give it to the client once, never store or log it.
    pub plaintext: Zeroizing<String>,
    /// What to store to recognise the token later.
    pub hash: TokenHash,
}

impl fmt::Debug for NewApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewApiToken")
            .field("id", &self.id)
            .field("plaintext", &"<redacted>")
            .field("hash", &self.hash)
            .finish()
    }
}

/// A new token with a random id and 256-bit secret from the operating system's RNG.
pub fn generate_token() -> NewApiToken {
    generate_token_with(&mut OsRng)
}

/// A new token drawn from `rng`.
pub fn generate_token_with<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> NewApiToken {
    let id = TokenId::generate_with(rng);
    let mut bytes = Zeroizing::new([0u8; SECRET_LEN]);
    rng.fill_bytes(&mut bytes[..]);
    let secret = ApiTokenSecret(bytes);
    let encoded = Zeroizing::new(URL_SAFE_NO_PAD.encode(secret.expose_bytes()));
    let mut plaintext = Zeroizing::new(String::with_capacity(TOKEN_TEXT_LEN));
    plaintext.push_str(TOKEN_PREFIX);
    plaintext.push_str(&id.0.simple().to_string());
    plaintext.push('_');
    plaintext.push_str(&encoded);
    NewApiToken {
        id,
        plaintext,
        hash: secret.hash(),
    }
}

/// Split a presented token into its id and secret. Anything that is not exactly
/// `wgm_<32 lowercase hex>_<43 canonical base64url>` is [`Error::Unauthenticated`]
/// (the text is never echoed).
pub fn parse_token(text: &str) -> Result<(TokenId, ApiTokenSecret)> {
    let malformed = || Error::unauthenticated("malformed API token");
    if text.len() != TOKEN_TEXT_LEN || !text.is_ascii() {
        return Err(malformed());
    }
    let rest = text.strip_prefix(TOKEN_PREFIX).ok_or_else(malformed)?;
    let (id_hex, rest) = rest.split_at(32);
    let secret_text = rest.strip_prefix('_').ok_or_else(malformed)?;
    if !id_hex
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(malformed());
    }
    let id = Uuid::try_parse(id_hex).map_err(|_| malformed())?;
    let mut bytes = Zeroizing::new([0u8; SECRET_LEN + 3]);
    let n = URL_SAFE_NO_PAD
        .decode_slice(secret_text, &mut bytes[..])
        .map_err(|_| malformed())?;
    if n != SECRET_LEN {
        return Err(malformed());
    }
    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    secret.copy_from_slice(&bytes[..SECRET_LEN]);
    Ok((TokenId(id), ApiTokenSecret(secret)))
}

/// Whether `secret` hashes to `stored`, compared in constant time.
pub fn verify_token(secret: &ApiTokenSecret, stored: &TokenHash) -> bool {
    TokenHash::of(secret).0.ct_eq(&stored.0).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn round_trip_and_shape() {
        let t = generate_token();
        assert_eq!(t.plaintext.len(), TOKEN_TEXT_LEN);
        assert!(t.plaintext.starts_with("wgm_"));
        assert_eq!(&t.plaintext[4..36], t.id.as_uuid().simple().to_string());
        assert_eq!(t.id.as_uuid().get_version_num(), 4);
        let (id, secret) = parse_token(&t.plaintext).unwrap();
        assert_eq!(id, t.id);
        assert!(verify_token(&secret, &t.hash));
        assert_eq!(secret.hash(), t.hash);
        assert_eq!(
            t.hash.to_hex(),
            hex::encode(Sha256::digest(secret.expose_bytes()))
        );
    }

    #[test]
    fn tokens_are_distinct_and_deterministic_with_a_seeded_rng() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a.id, b.id);
        assert_ne!(a.hash, b.hash);
        let x = generate_token_with(&mut StdRng::seed_from_u64(5));
        let y = generate_token_with(&mut StdRng::seed_from_u64(5));
        assert_eq!(x.plaintext, y.plaintext);
    }

    #[test]
    fn another_tokens_secret_does_not_verify() {
        let a = generate_token();
        let b = generate_token();
        let (_, secret_b) = parse_token(&b.plaintext).unwrap();
        assert!(!verify_token(&secret_b, &a.hash));
        // Right id, wrong secret: the caller looks up a's hash by id and the check fails.
        let forged = format!("wgm_{}_{}", a.id.as_uuid().simple(), &b.plaintext[37..]);
        let (id, secret) = parse_token(&forged).unwrap();
        assert_eq!(id, a.id);
        assert!(!verify_token(&secret, &a.hash));
    }

    #[test]
    fn malformed_tokens_are_refused_without_echo() {
        let t = generate_token();
        let p = t.plaintext.as_str();
        let upper_id = format!("wgm_{}{}", p[4..36].to_uppercase(), &p[36..]);
        let mut bad = vec![
            String::new(),
            p[..p.len() - 1].to_owned(),
            format!("{p}A"),
            format!("WGM_{}", &p[4..]),
            format!("wgx_{}", &p[4..]),
            p.replacen('_', "-", 2),
            format!("{}-{}", &p[..36], &p[37..]),
            format!("{} ", &p[..p.len() - 1]),
            format!("{}=", &p[..p.len() - 1]),
            format!("{}+{}", &p[..40], &p[41..]),
            format!("{}g{}", &p[..10], &p[11..]),
        ];
        if p[4..36].bytes().any(|b| b.is_ascii_alphabetic()) {
            bad.push(upper_id);
        }
        for text in &bad {
            let e = parse_token(text).unwrap_err();
            assert!(matches!(e, Error::Unauthenticated { .. }), "{text:?}");
            assert!(!e.to_string().contains(&p[37..]));
        }
        // Non-canonical trailing bits in the last base64url character are refused.
        let last = p.as_bytes()[p.len() - 1];
        let tweaked = if last == b'A' { 'B' } else { 'A' };
        let nc = format!("{}{}", &p[..p.len() - 1], tweaked);
        // 32 bytes = 256 bits in 43 chars (258 bits): the last char has 2 unused bits.
        let decoded_last = URL_SAFE_NO_PAD.decode(&nc[37..]);
        assert_eq!(parse_token(&nc).is_ok(), decoded_last.is_ok());
    }

    #[test]
    fn hash_serde_and_debug() {
        let t = generate_token();
        let json = serde_json::to_string(&t.hash).unwrap();
        assert_eq!(json, format!("\"{}\"", t.hash.to_hex()));
        assert_eq!(serde_json::from_str::<TokenHash>(&json).unwrap(), t.hash);
        assert!(serde_json::from_str::<TokenHash>("\"abc\"").is_err());
        assert!(
            TokenHash::from_hex(&t.hash.to_hex().to_uppercase()).is_err()
                || t.hash.to_hex().bytes().all(|b| b.is_ascii_digit())
        );
        let dbg = format!("{t:?}");
        assert!(!dbg.contains(t.plaintext.as_str()));
        assert!(!dbg.contains(&t.plaintext[37..]));
        assert!(!dbg.contains(&t.hash.to_hex()));
        let (_, secret) = parse_token(&t.plaintext).unwrap();
        assert_eq!(format!("{secret:?}"), "ApiTokenSecret(<redacted>)");
        let id_json = serde_json::to_string(&t.id).unwrap();
        assert_eq!(id_json, format!("\"{}\"", t.id));
        assert_eq!(t.id.to_string().parse::<TokenId>().unwrap(), t.id);
    }
}
