//! Keys of the `wg(8)` world: [`PrivateKey`], [`PublicKey`] and [`PresharedKey`].
//!
//! Keys are 32-byte Curve25519 values (X25519, RFC 7748). Text forms are exactly those of
//! `wg(8)`:
//!
//! - **base64**: 44 characters of canonical *standard* base64 (alphabet `A–Z a–z 0–9 + /`),
//!   the last one `=`. No whitespace, no URL-safe alphabet, no missing padding, and no
//!   non-canonical trailing bits (`…LCp=` is refused where `…LCo=` is the canonical
//!   spelling of the same bytes). This is the form of wg-quick files and of `wg genkey`.
//! - **hex**: 64 hexadecimal characters (either case on input, lowercase on output). This
//!   is the form of the UAPI protocol spoken by wireguard-go.
//!
//! Encoding and decoding are ports of `wg(8)`'s constant-time routines (`encoding.c`), so a
//! secret key's bits do not steer branches or table lookups while it is converted. The
//! `base64`/`hex` crates are only used as test oracles.
//!
//! Secrets ([`PrivateKey`], [`PresharedKey`]) are zeroized on drop, compare in constant
//! time, print as `PrivateKey(<redacted>)` with `{:?}`, have no `Display` and no serde
//! implementation: exporting one is always an explicit `expose_*` call. Error messages
//! never contain the rejected text.
//!
//! Public keys are validated on every way in: the low-order points of Curve25519 (which
//! make every Diffie–Hellman result zero) are rejected, and so are non-canonical encodings
//! (bit 255 set, or a value not reduced modulo 2^255 − 19). `x25519` ignores bit 255 and
//! reduces the value, so such a string names the same point as a canonical one; the kernel
//! compares peer keys byte-wise, so accepting both spellings would let one peer be
//! configured twice. `wg genkey | wg pubkey` never produces a non-canonical key.
//!
//! ```
//! use wgm_core::keys::{PrivateKey, PublicKey};
//!
//! let private = PrivateKey::from_base64("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=")?;
//! let public = private.public_key();
//! assert_eq!(public.to_base64(), "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=");
//! assert_eq!(format!("{private:?}"), "PrivateKey(<redacted>)");
//!
//! // Parsing is as strict as wg(8): the same bytes with non-zero trailing bits fail.
//! assert!(PrivateKey::from_base64("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCp=").is_err());
//! // The seven low-order points are not public keys.
//! assert!(PublicKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").is_err());
//! # Ok::<(), wgm_core::Error>(())
//! ```

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use rand_core::{CryptoRng, OsRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{Error, Result};

/// Length of a key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a key in base64 (`wg(8)` form, with the trailing `=`).
pub const KEY_LEN_BASE64: usize = 44;
/// Length of a key in hex (UAPI form).
pub const KEY_LEN_HEX: usize = 64;

// ---------------------------------------------------------------------------------------
// Private key
// ---------------------------------------------------------------------------------------

/// An X25519 private key, always stored clamped (RFC 7748 §5).
///
/// Zeroized on drop; `Debug` prints `PrivateKey(<redacted>)`; no `Display`, no serde.
/// Equality is constant-time. Use [`PrivateKey::expose_base64`] (wg-quick) or
/// [`PrivateKey::expose_hex`] (UAPI) to write it out.
///
/// ```
/// use wgm_core::keys::PrivateKey;
/// let a = PrivateKey::generate();
/// let b = PrivateKey::from_base64(&a.expose_base64())?;
/// assert_eq!(a, b);
/// assert_eq!(a.public_key(), b.public_key());
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone)]
pub struct PrivateKey(x25519_dalek::StaticSecret);

impl PrivateKey {
    /// A fresh key from the operating system's random number generator, clamped.
    pub fn generate() -> Self {
        Self::generate_from(&mut OsRng)
    }

    /// A fresh key from `rng` (for deterministic tests), clamped.
    pub fn generate_from<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill_bytes(&mut bytes[..]);
        Self::from_bytes(*bytes)
    }

    /// The key with these bytes, clamped as RFC 7748 §5 prescribes (clear bits 0–2 and
    /// 255, set bit 254). Clamping does not change the public key.
    ///
    /// The caller's array is a copy; zeroize it if it came from a secret source.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let mut bytes = Zeroizing::new(bytes);
        clamp(&mut bytes);
        PrivateKey(x25519_dalek::StaticSecret::from(*bytes))
    }

    /// Parse the `wg(8)` base64 form (44 canonical characters). Errors name the field
    /// `private_key`.
    pub fn from_base64(s: &str) -> Result<Self> {
        Self::from_base64_field(s, "private_key")
    }

    /// [`PrivateKey::from_base64`] with the field name to use in errors
    /// (e.g. `interface.private_key`).
    pub fn from_base64_field(s: &str, field: impl Into<Cow<'static, str>>) -> Result<Self> {
        let bytes = decode_base64_key(s).map_err(|e| Error::invalid(field, e.reason()))?;
        Ok(Self::from_bytes(*bytes))
    }

    /// Parse the UAPI hex form (64 hex characters, either case). Errors name the field
    /// `private_key`.
    pub fn from_hex(s: &str) -> Result<Self> {
        Self::from_hex_field(s, "private_key")
    }

    /// [`PrivateKey::from_hex`] with the field name to use in errors.
    pub fn from_hex_field(s: &str, field: impl Into<Cow<'static, str>>) -> Result<Self> {
        let bytes = decode_hex_key(s).map_err(|e| Error::invalid(field, e.reason()))?;
        Ok(Self::from_bytes(*bytes))
    }

    /// The public key, `X25519(k, 9)`.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(*x25519_dalek::PublicKey::from(&self.0).as_bytes())
    }

    /// The key in `wg(8)` base64, in a buffer that is zeroized when dropped.
    pub fn expose_base64(&self) -> Zeroizing<String> {
        encode_base64_key(self.0.as_bytes())
    }

    /// The key in lowercase hex (UAPI), in a buffer that is zeroized when dropped.
    pub fn expose_hex(&self) -> Zeroizing<String> {
        encode_hex_key(self.0.as_bytes())
    }

    /// The clamped key bytes.
    pub fn expose_bytes(&self) -> &[u8; KEY_LEN] {
        self.0.as_bytes()
    }

    /// The X25519 shared secret with `public`. Never all-zero: [`PublicKey`] rejects the
    /// low-order points that would make it so.
    pub fn diffie_hellman(&self, public: &PublicKey) -> Zeroizing<[u8; KEY_LEN]> {
        let theirs = x25519_dalek::PublicKey::from(public.0);
        let shared = self.0.diffie_hellman(&theirs);
        Zeroizing::new(*shared.as_bytes())
    }
}

impl PartialEq for PrivateKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for PrivateKey {}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// RFC 7748 §5 clamping of an X25519 scalar.
fn clamp(bytes: &mut [u8; KEY_LEN]) {
    bytes[0] &= 0xf8;
    bytes[31] &= 127;
    bytes[31] |= 64;
}

// ---------------------------------------------------------------------------------------
// Public key
// ---------------------------------------------------------------------------------------

/// An X25519 public key: canonical, and not one of the low-order points.
///
/// `Debug` and `Display` print the base64 form; `FromStr` parses it; serde reads and
/// writes it as that string, validating on the way in. Ordering is byte-wise.
///
/// ```
/// use wgm_core::keys::PublicKey;
/// let k: PublicKey = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=".parse()?;
/// assert_eq!(k.to_string(), "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=");
/// assert_eq!(PublicKey::from_hex(&k.to_hex())?, k);
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// The public key with these bytes. Rejects the low-order points of Curve25519 and
    /// non-canonical encodings (see the module docs). Errors name the field `public_key`.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Result<Self> {
        Self::from_bytes_field(bytes, "public_key")
    }

    /// [`PublicKey::from_bytes`] with the field name to use in errors.
    pub fn from_bytes_field(
        bytes: [u8; KEY_LEN],
        field: impl Into<Cow<'static, str>>,
    ) -> Result<Self> {
        check_public(&bytes).map_err(|reason| Error::invalid(field, reason))?;
        Ok(PublicKey(bytes))
    }

    /// Parse the `wg(8)` base64 form. Errors name the field `public_key`.
    pub fn from_base64(s: &str) -> Result<Self> {
        Self::from_base64_field(s, "public_key")
    }

    /// [`PublicKey::from_base64`] with the field name to use in errors
    /// (e.g. `peer.public_key`).
    pub fn from_base64_field(s: &str, field: impl Into<Cow<'static, str>>) -> Result<Self> {
        let field = field.into();
        match decode_base64_key(s) {
            Ok(bytes) => Self::from_bytes_field(*bytes, field),
            Err(e) => Err(Error::invalid(field, e.reason())),
        }
    }

    /// Parse the UAPI hex form (64 hex characters, either case). Errors name the field
    /// `public_key`.
    pub fn from_hex(s: &str) -> Result<Self> {
        Self::from_hex_field(s, "public_key")
    }

    /// [`PublicKey::from_hex`] with the field name to use in errors.
    pub fn from_hex_field(s: &str, field: impl Into<Cow<'static, str>>) -> Result<Self> {
        let field = field.into();
        match decode_hex_key(s) {
            Ok(bytes) => Self::from_bytes_field(*bytes, field),
            Err(e) => Err(Error::invalid(field, e.reason())),
        }
    }

    /// The `wg(8)` base64 form (44 characters).
    pub fn to_base64(&self) -> String {
        // The buffer holds nothing secret; take it out of its zeroizing wrapper.
        std::mem::take(&mut *encode_base64_key(&self.0))
    }

    /// The UAPI form: 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        std::mem::take(&mut *encode_hex_key(&self.0))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl FromStr for PublicKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::from_base64(s)
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let s = <Cow<'de, str>>::deserialize(deserializer)?;
        PublicKey::from_base64(&s).map_err(serde::de::Error::custom)
    }
}

/// Curve25519 points of order dividing 8, as 32-byte little-endian u-coordinates, in
/// canonical form and with bit 255 set (which `x25519` ignores). `p` and `p + 1` are the
/// non-canonical spellings of 0 and 1; with those, this is every 32-byte string that
/// `x25519` maps to a low-order point. A DH with any of them yields all zeros.
const LOW_ORDER: [[u8; KEY_LEN]; 7] = [
    // 0
    [0; 32],
    // 1
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    // 325606250916557431795983626356110631294008115727848805560023387167927233504 (order 8)
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    // 39382357235489614581723060781553021112529911719440698176882885853963445705823 (order 8)
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    // p - 1 (order 2)
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    // p (= 0)
    [
        0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    // p + 1 (= 1)
    [
        0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

/// Why a public key's bytes are refused, or `Ok` if they are a usable key.
fn check_public(bytes: &[u8; KEY_LEN]) -> std::result::Result<(), &'static str> {
    let mut masked = *bytes;
    masked[31] &= 0x7f;
    if LOW_ORDER.contains(&masked) {
        return Err("is a low-order Curve25519 point (every key exchange with it yields zero)");
    }
    if bytes[31] & 0x80 != 0 {
        return Err("is not canonical: bit 255 is set (keys from `wg pubkey` never set it)");
    }
    if !is_reduced(bytes) {
        return Err("is not canonical: not reduced modulo 2^255-19");
    }
    Ok(())
}

/// Whether the (bit-255-clear) little-endian value is below p = 2^255 − 19.
fn is_reduced(bytes: &[u8; KEY_LEN]) -> bool {
    // p = 0x7fff…ffed little-endian: [0xed, 0xff × 30, 0x7f]. A value is ≥ p exactly when
    // its top byte is 0x7f, the 30 middle bytes are 0xff and the low byte is ≥ 0xed.
    !(bytes[31] == 0x7f && bytes[1..31].iter().all(|&b| b == 0xff) && bytes[0] >= 0xed)
}

// ---------------------------------------------------------------------------------------
// Preshared key
// ---------------------------------------------------------------------------------------

/// A preshared key (`PresharedKey =` in wg-quick files): 32 random bytes, not clamped, no public counterpart.
///
/// Zeroized on drop; `Debug` prints `PresharedKey(<redacted>)`; no `Display`, no serde;
/// constant-time equality.
///
/// ```
/// use wgm_core::keys::PresharedKey;
/// let psk = PresharedKey::generate();
/// assert_eq!(PresharedKey::from_hex(&psk.expose_hex())?, psk);
/// assert_eq!(format!("{psk:?}"), "PresharedKey(<redacted>)");
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PresharedKey([u8; KEY_LEN]);

impl PresharedKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Self {
        Self::generate_from(&mut OsRng)
    }

    /// A fresh key from `rng` (for deterministic tests).
    pub fn generate_from<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut key = PresharedKey([0; KEY_LEN]);
        rng.fill_bytes(&mut key.0);
        key
    }

    /// The key with these bytes (used as is).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        PresharedKey(bytes)
    }

    /// Parse the `wg(8)` base64 form. Errors name the field `preshared_key`.
    pub fn from_base64(s: &str) -> Result<Self> {
        Self::from_base64_field(s, "preshared_key")
    }

    /// [`PresharedKey::from_base64`] with the field name to use in errors.
    pub fn from_base64_field(s: &str, field: impl Into<Cow<'static, str>>) -> Result<Self> {
        let bytes = decode_base64_key(s).map_err(|e| Error::invalid(field, e.reason()))?;
        Ok(PresharedKey(*bytes))
    }

    /// Parse the UAPI hex form. Errors name the field `preshared_key`.
    pub fn from_hex(s: &str) -> Result<Self> {
        Self::from_hex_field(s, "preshared_key")
    }

    /// [`PresharedKey::from_hex`] with the field name to use in errors.
    pub fn from_hex_field(s: &str, field: impl Into<Cow<'static, str>>) -> Result<Self> {
        let bytes = decode_hex_key(s).map_err(|e| Error::invalid(field, e.reason()))?;
        Ok(PresharedKey(*bytes))
    }

    /// The key in `wg(8)` base64, in a buffer that is zeroized when dropped.
    pub fn expose_base64(&self) -> Zeroizing<String> {
        encode_base64_key(&self.0)
    }

    /// The key in lowercase hex (UAPI), in a buffer that is zeroized when dropped.
    pub fn expose_hex(&self) -> Zeroizing<String> {
        encode_hex_key(&self.0)
    }

    /// The key bytes.
    pub fn expose_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl PartialEq for PresharedKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for PresharedKey {}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

// ---------------------------------------------------------------------------------------
// Constant-time encodings, ported from wireguard-tools `src/encoding.c`.
// ---------------------------------------------------------------------------------------

/// Why a key's text was refused. The reasons never contain the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FormatError {
    Base64Length,
    Base64LooksHex,
    Base64Padding,
    Base64Alphabet,
    Base64NonCanonical,
    HexLength,
    HexAlphabet,
}

impl FormatError {
    fn reason(self) -> &'static str {
        match self {
            FormatError::Base64Length => {
                "must be exactly 44 characters of standard base64, as printed by `wg genkey`"
            }
            FormatError::Base64LooksHex => {
                "looks like hex (64 characters); expected 44 characters of standard base64"
            }
            FormatError::Base64Padding => {
                "must end with a single '=' (44 characters of standard base64)"
            }
            FormatError::Base64Alphabet => {
                "contains a character outside the standard base64 alphabet (A-Z a-z 0-9 + /); \
                 no whitespace or URL-safe characters"
            }
            FormatError::Base64NonCanonical => {
                "is not canonical base64: the character before '=' has non-zero trailing bits"
            }
            FormatError::HexLength => "must be exactly 64 hexadecimal characters",
            FormatError::HexAlphabet => "contains a character that is not hexadecimal",
        }
    }
}

/// The 6-bit value of a base64 character, or -1, without branches on `c`.
fn b64_value(c: u8) -> i32 {
    let c = i32::from(c);
    let range = |lo: u8, hi: u8| ((i32::from(lo) - 1 - c) & (c - (i32::from(hi) + 1))) >> 8;
    -1 + (range(b'A', b'Z') & (c - 64))
        + (range(b'a', b'z') & (c - 70))
        + (range(b'0', b'9') & (c + 5))
        + (range(b'+', b'+') & 63)
        + (range(b'/', b'/') & 64)
}

/// Four characters to a 24-bit value; negative when any character is not base64.
fn b64_group(s: &[u8]) -> i32 {
    (b64_value(s[0]) << 18) | (b64_value(s[1]) << 12) | (b64_value(s[2]) << 6) | b64_value(s[3])
}

/// Decode a key exactly as `wg(8)`'s `key_from_base64` does.
#[allow(
    clippy::cast_sign_loss,
    reason = "the sign bit is extracted on purpose, as in encoding.c"
)]
fn decode_base64_key(s: &str) -> std::result::Result<Zeroizing<[u8; KEY_LEN]>, FormatError> {
    let s = s.as_bytes();
    if s.len() != KEY_LEN_BASE64 {
        if s.len() == KEY_LEN_HEX && s.iter().all(u8::is_ascii_hexdigit) {
            return Err(FormatError::Base64LooksHex);
        }
        return Err(FormatError::Base64Length);
    }
    if s[KEY_LEN_BASE64 - 1] != b'=' {
        return Err(FormatError::Base64Padding);
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    let mut bad: u32 = 0;
    for i in 0..KEY_LEN / 3 {
        let val = b64_group(&s[i * 4..i * 4 + 4]);
        bad |= (val as u32) >> 31;
        key[i * 3] = (val >> 16) as u8;
        key[i * 3 + 1] = (val >> 8) as u8;
        key[i * 3 + 2] = val as u8;
    }
    let i = KEY_LEN / 3;
    let val = b64_group(&[s[i * 4], s[i * 4 + 1], s[i * 4 + 2], b'A']);
    bad |= (val as u32) >> 31;
    let trailing = (val & 0xff) as u32;
    key[i * 3] = (val >> 16) as u8;
    key[i * 3 + 1] = (val >> 8) as u8;
    if bad != 0 {
        return Err(FormatError::Base64Alphabet);
    }
    if trailing != 0 {
        return Err(FormatError::Base64NonCanonical);
    }
    Ok(key)
}

/// The base64 character for a 6-bit value, without branches or table lookups.
#[allow(clippy::cast_sign_loss, reason = "the result is always in 43..=122")]
fn b64_char(v: u8) -> char {
    let v = i32::from(v);
    let c = v + i32::from(b'A') + (((25 - v) >> 8) & 6)
        - (((51 - v) >> 8) & 0x4b)
        - (((61 - v) >> 8) & 15)
        + (((62 - v) >> 8) & 3);
    char::from(c as u8)
}

fn b64_push(out: &mut String, src: [u8; 3]) {
    out.push(b64_char((src[0] >> 2) & 63));
    out.push(b64_char(((src[0] << 4) | (src[1] >> 4)) & 63));
    out.push(b64_char(((src[1] << 2) | (src[2] >> 6)) & 63));
    out.push(b64_char(src[2] & 63));
}

/// Encode a key exactly as `wg(8)`'s `key_to_base64` does.
fn encode_base64_key(key: &[u8; KEY_LEN]) -> Zeroizing<String> {
    // Allocated once at its final size so no copy is left behind by a reallocation.
    let mut out = Zeroizing::new(String::with_capacity(KEY_LEN_BASE64));
    for i in 0..KEY_LEN / 3 {
        b64_push(&mut out, [key[i * 3], key[i * 3 + 1], key[i * 3 + 2]]);
    }
    let i = KEY_LEN / 3;
    b64_push(&mut out, [key[i * 3], key[i * 3 + 1], 0]);
    out.pop();
    out.push('=');
    out
}

/// The value of a hex digit and a mask that is 0xff when `c` is a hex digit, else 0.
fn hex_nibble(c: u8) -> (u8, u8) {
    let c = u32::from(c);
    let num = c ^ 0x30;
    let num_ok = (num.wrapping_sub(10) >> 8) as u8;
    let alpha = (c & !32).wrapping_sub(55) & 0xff;
    let alpha_ok = ((alpha.wrapping_sub(10) ^ alpha.wrapping_sub(16)) >> 8) as u8;
    let val = (num_ok & num as u8) | (alpha_ok & alpha as u8);
    (val, num_ok | alpha_ok)
}

/// Decode a key exactly as `wg(8)`'s `key_from_hex` does (either case).
fn decode_hex_key(s: &str) -> std::result::Result<Zeroizing<[u8; KEY_LEN]>, FormatError> {
    let s = s.as_bytes();
    if s.len() != KEY_LEN_HEX {
        return Err(FormatError::HexLength);
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    let mut ok: u8 = 0xff;
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let (hi, hi_ok) = hex_nibble(pair[0]);
        let (lo, lo_ok) = hex_nibble(pair[1]);
        ok &= hi_ok & lo_ok;
        key[i] = (hi << 4) | lo;
    }
    if ok != 0xff {
        return Err(FormatError::HexAlphabet);
    }
    Ok(key)
}

/// The lowercase hex digit for a nibble, without branches or table lookups.
fn hex_char(n: u8) -> char {
    let n = u32::from(n);
    char::from((87 + n + ((n.wrapping_sub(10) >> 8) & !0x26)) as u8)
}

/// Encode a key exactly as `wg(8)`'s `key_to_hex` does (lowercase).
fn encode_hex_key(key: &[u8; KEY_LEN]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(KEY_LEN_HEX));
    for &b in key {
        out.push(hex_char(b >> 4));
        out.push(hex_char(b & 0xf));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use proptest::prelude::*;
    use rand::SeedableRng as _;

    const ALICE_PRIVATE: &str = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=";
    const ALICE_PUBLIC: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";
    const BOB_PRIVATE: &str = "XasIfmJKikt54X+Lg4AO5m87sSkmGLb9HC+LJ/+I4Os=";
    const BOB_PUBLIC: &str = "3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=";
    const SHARED_HEX: &str = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";

    const LOW_ORDER_B64: [&str; 7] = [
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "4Ot6fDtBuK4WVuP68Z/EatoJjeucMrH9hmIFFl9JuAA=",
        "X5yVvKNQjCSx0LFVnIPvWwREXMRYHI6G2CJO3dCfEVc=",
        "7P///////////////////////////////////////38=",
        "7f///////////////////////////////////////38=",
        "7v///////////////////////////////////////38=",
    ];

    fn reason(e: &Error) -> String {
        match e {
            Error::InvalidInput { reason, .. } => reason.to_string(),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    fn field(e: &Error) -> String {
        match e {
            Error::InvalidInput { field, .. } => field.to_string(),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn rfc7748_alice_and_bob() {
        let alice = PrivateKey::from_base64(ALICE_PRIVATE).unwrap();
        let bob = PrivateKey::from_base64(BOB_PRIVATE).unwrap();
        assert_eq!(alice.public_key().to_base64(), ALICE_PUBLIC);
        assert_eq!(bob.public_key().to_base64(), BOB_PUBLIC);
        let alice_pub = PublicKey::from_base64(ALICE_PUBLIC).unwrap();
        let bob_pub = PublicKey::from_base64(BOB_PUBLIC).unwrap();
        assert_eq!(hex::encode(*alice.diffie_hellman(&bob_pub)), SHARED_HEX);
        assert_eq!(hex::encode(*bob.diffie_hellman(&alice_pub)), SHARED_HEX);
    }

    #[test]
    fn rfc7748_private_keys_are_given_unclamped_and_stored_clamped() {
        for text in [ALICE_PRIVATE, BOB_PRIVATE] {
            let raw: [u8; 32] = base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap()
                .try_into()
                .unwrap();
            let mut clamped = raw;
            clamp(&mut clamped);
            assert_ne!(raw, clamped, "the RFC vector is not clamped as given");
            let key = PrivateKey::from_base64(text).unwrap();
            assert_eq!(key.expose_bytes(), &clamped);
            assert_eq!(PrivateKey::from_bytes(raw), key);
        }
    }

    #[test]
    fn rfc7748_iterated() {
        let mut k = x25519_dalek::X25519_BASEPOINT_BYTES;
        let mut u = x25519_dalek::X25519_BASEPOINT_BYTES;
        for i in 1..=1000 {
            let next = x25519_dalek::x25519(k, u);
            u = k;
            k = next;
            if i == 1 {
                assert_eq!(
                    hex::encode(k),
                    "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"
                );
            }
        }
        assert_eq!(
            hex::encode(k),
            "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"
        );
    }

    #[test]
    fn clamping_vector() {
        let unclamped =
            PrivateKey::from_base64("Lm0BA4UyPilHH5qnXCfr6Lw8ynecOPor88tljLy3ALk=").unwrap();
        let clamped =
            PrivateKey::from_base64("KG0BA4UyPilHH5qnXCfr6Lw8ynecOPor88tljLy3AHk=").unwrap();
        assert_eq!(
            &*unclamped.expose_base64(),
            "KG0BA4UyPilHH5qnXCfr6Lw8ynecOPor88tljLy3AHk="
        );
        assert_eq!(unclamped, clamped);
        assert_eq!(unclamped.public_key(), clamped.public_key());
    }

    #[test]
    fn the_seven_low_order_keys_are_rejected() {
        for text in LOW_ORDER_B64 {
            let e = PublicKey::from_base64(text).unwrap_err();
            assert_eq!(field(&e), "public_key");
            assert!(reason(&e).contains("low-order"), "{text}: {e}");
            assert!(!e.to_string().contains(text));
        }
    }

    #[test]
    fn low_order_table_matches_the_known_answers_and_kills_dh() {
        let scalar = PrivateKey::generate_from(&mut rand::rngs::StdRng::seed_from_u64(7));
        for (bytes, text) in LOW_ORDER.iter().zip(LOW_ORDER_B64) {
            assert_eq!(&*encode_base64_key(bytes), text);
            for variant in [*bytes, {
                let mut b = *bytes;
                b[31] |= 0x80;
                b
            }] {
                // Any clamped scalar is a multiple of 8, so the result is the identity.
                assert_eq!(
                    x25519_dalek::x25519(*scalar.expose_bytes(), variant),
                    [0; 32]
                );
                let e = PublicKey::from_bytes(variant).unwrap_err();
                assert!(reason(&e).contains("low-order"));
                let e = PublicKey::from_hex(&hex::encode(variant)).unwrap_err();
                assert!(reason(&e).contains("low-order"));
            }
        }
    }

    #[test]
    fn non_canonical_public_keys_are_rejected() {
        let good = PublicKey::from_base64(ALICE_PUBLIC).unwrap();
        let mut high = *good.as_bytes();
        high[31] |= 0x80;
        assert!(reason(&PublicKey::from_bytes(high).unwrap_err()).contains("bit 255"));
        // p + 2 ..= 2^255 - 1 are unreduced; p - 2 is the largest reduced value not of low order.
        let mut unreduced = [0xff; 32];
        unreduced[31] = 0x7f;
        for low in [0xef, 0xf0, 0xff] {
            unreduced[0] = low;
            assert!(reason(&PublicKey::from_bytes(unreduced).unwrap_err()).contains("reduced"));
        }
        unreduced[0] = 0xeb;
        assert!(PublicKey::from_bytes(unreduced).is_ok());
    }

    #[test]
    fn base64_strictness() {
        let canonical = ALICE_PRIVATE;
        let cases: &[(&str, &str)] = &[
            (
                "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCp=",
                "non-zero trailing bits",
            ),
            (
                "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCr=",
                "non-zero trailing bits",
            ),
            ("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LC_=", "alphabet"),
            (
                "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo",
                "44 characters",
            ),
            (
                "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo==",
                "44 characters",
            ),
            (
                " dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=",
                "44 characters",
            ),
            (
                "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=\n",
                "44 characters",
            ),
            ("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkq Xf7pR25LCo=", "alphabet"),
            ("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkq\tXf7pR25LCo=", "alphabet"),
            ("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCoA", "'='"),
            ("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25L=o=", "alphabet"),
            (
                "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCé=",
                "44 characters",
            ),
            ("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25Cé=", "alphabet"),
            ("", "44 characters"),
            (SHARED_HEX, "looks like hex"),
        ];
        assert!(PrivateKey::from_base64(canonical).is_ok());
        // URL-safe alphabet: a key whose standard encoding contains '+' and '/'.
        let url_safe = BOB_PUBLIC.replace('+', "-").replace('/', "_");
        assert_ne!(url_safe, BOB_PUBLIC);
        let mut all: Vec<(String, &str)> =
            cases.iter().map(|(s, r)| ((*s).to_owned(), *r)).collect();
        all.push((url_safe, "alphabet"));
        for (text, want) in &all {
            for (e, name) in [
                (PrivateKey::from_base64(text).unwrap_err(), "private_key"),
                (
                    PresharedKey::from_base64(text).unwrap_err(),
                    "preshared_key",
                ),
                (PublicKey::from_base64(text).unwrap_err(), "public_key"),
            ] {
                assert_eq!(field(&e), name, "{text:?}");
                assert!(reason(&e).contains(want), "{text:?}: {e}");
                if !text.is_empty() {
                    assert!(
                        !e.to_string().contains(text.trim()),
                        "error echoes input: {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn hex_strictness_and_case() {
        let key = PrivateKey::from_base64(BOB_PRIVATE).unwrap();
        let lower = key.expose_hex();
        assert_eq!(&*lower, &hex::encode(key.expose_bytes()));
        assert_eq!(PrivateKey::from_hex(&lower.to_uppercase()).unwrap(), key);
        let bad = [
            (String::new(), "64"),
            (lower[..62].to_owned(), "64"),
            (format!("{}00", &*lower), "64"),
            (format!("{}g", &lower[..63]), "not hexadecimal"),
            (format!(" {}", &lower[1..]), "not hexadecimal"),
            (format!("{}:", &lower[..63]), "not hexadecimal"),
            (format!("{}@", &lower[..63]), "not hexadecimal"),
            (format!("{}`", &lower[..63]), "not hexadecimal"),
            (format!("{}G", &lower[..63]), "not hexadecimal"),
            (BOB_PRIVATE.to_owned(), "64"),
        ];
        for (text, want) in &bad {
            for e in [
                PrivateKey::from_hex(text).unwrap_err(),
                PresharedKey::from_hex(text).unwrap_err(),
                PublicKey::from_hex(text).unwrap_err(),
            ] {
                assert!(reason(&e).contains(want), "{text:?}: {e}");
            }
        }
    }

    #[test]
    fn hex_nibble_matches_the_ascii_table() {
        for c in 0..=255u8 {
            let (val, ok) = hex_nibble(c);
            match char::from(c).to_digit(16) {
                Some(d) if c.is_ascii_hexdigit() => {
                    assert_eq!((u32::from(val), ok), (d, 0xff), "{c}");
                }
                _ => assert_eq!(ok, 0, "{c}"),
            }
        }
        for n in 0..16u8 {
            assert_eq!(hex_char(n), char::from_digit(u32::from(n), 16).unwrap());
        }
    }

    #[test]
    fn b64_tables_match_the_alphabet() {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for c in 0..=255u8 {
            let want = ALPHABET
                .iter()
                .position(|&a| a == c)
                .map_or(-1, |p| i32::try_from(p).unwrap());
            assert_eq!(b64_value(c), want, "{c}");
        }
        for v in 0..64u8 {
            assert_eq!(b64_char(v), char::from(ALPHABET[usize::from(v)]));
        }
    }

    #[test]
    fn field_names_can_be_chosen() {
        let e = PublicKey::from_base64_field("nope", "peer.public_key").unwrap_err();
        assert_eq!(field(&e), "peer.public_key");
        let e = PublicKey::from_base64_field(LOW_ORDER_B64[0], format!("peers[{}].public_key", 3))
            .unwrap_err();
        assert_eq!(field(&e), "peers[3].public_key");
        let e = PrivateKey::from_hex_field("zz", "interface.private_key").unwrap_err();
        assert_eq!(field(&e), "interface.private_key");
    }

    #[test]
    fn secrets_are_redacted() {
        let key = PrivateKey::from_base64(ALICE_PRIVATE).unwrap();
        let psk = PresharedKey::from_base64(ALICE_PRIVATE).unwrap();
        let shown = format!("{key:?} {psk:?} {key:#?} {psk:#?}");
        assert_eq!(format!("{key:?}"), "PrivateKey(<redacted>)");
        assert_eq!(format!("{psk:?}"), "PresharedKey(<redacted>)");
        for secret in [
            key.expose_base64(),
            key.expose_hex(),
            psk.expose_base64(),
            psk.expose_hex(),
        ] {
            assert!(!shown.contains(secret.as_str()));
        }
        assert!(!shown.contains(ALICE_PRIVATE));
    }

    #[test]
    fn preshared_key_is_not_clamped() {
        let psk = PresharedKey::from_bytes([0xff; 32]);
        assert_eq!(psk.expose_bytes(), &[0xff; 32]);
        assert_eq!(
            &*psk.expose_base64(),
            "//////////////////////////////////////////8="
        );
        assert_ne!(PresharedKey::from_bytes([1; 32]), psk);
    }

    #[test]
    fn generation_is_clamped_and_seedable() {
        let key = PrivateKey::generate();
        let b = key.expose_bytes();
        assert_eq!((b[0] & 7, b[31] & 0x80, b[31] & 0x40), (0, 0, 0x40));
        assert_ne!(PrivateKey::generate(), key);
        assert_ne!(PresharedKey::generate(), PresharedKey::generate());
        let a = PrivateKey::generate_from(&mut rand::rngs::StdRng::seed_from_u64(1));
        let b = PrivateKey::generate_from(&mut rand::rngs::StdRng::seed_from_u64(1));
        assert_eq!(a, b);
        let c = PresharedKey::generate_from(&mut rand::rngs::StdRng::seed_from_u64(1));
        let d = PresharedKey::generate_from(&mut rand::rngs::StdRng::seed_from_u64(1));
        assert_eq!(c, d);
    }

    #[test]
    fn public_key_serde_validates() {
        let k = PublicKey::from_base64(ALICE_PUBLIC).unwrap();
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(json, format!("\"{ALICE_PUBLIC}\""));
        assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), k);
        assert!(serde_json::from_str::<PublicKey>(&format!("\"{}\"", LOW_ORDER_B64[2])).is_err());
        assert!(serde_json::from_str::<PublicKey>(
            "\"dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCp=\""
        )
        .is_err());
        assert!(serde_json::from_str::<PublicKey>("42").is_err());
        assert_eq!(format!("{k}"), ALICE_PUBLIC);
        assert_eq!(format!("{k:?}"), format!("PublicKey({ALICE_PUBLIC})"));
        assert_eq!(ALICE_PUBLIC.parse::<PublicKey>().unwrap(), k);
    }

    proptest! {
        #[test]
        fn base64_matches_the_reference_encoder(bytes in any::<[u8; 32]>()) {
            let ours = encode_base64_key(&bytes);
            prop_assert_eq!(ours.as_str(), base64::engine::general_purpose::STANDARD.encode(bytes));
            prop_assert_eq!(*decode_base64_key(&ours).unwrap(), bytes);
            let hex_text = encode_hex_key(&bytes);
            prop_assert_eq!(hex_text.as_str(), hex::encode(bytes));
            prop_assert_eq!(*decode_hex_key(&hex::encode_upper(bytes)).unwrap(), bytes);
        }

        #[test]
        fn base64_decoder_agrees_with_the_strict_reference(s in "[A-Za-z0-9+/=_ -]{43}=") {
            // The reference decoder (canonical, padded) accepts exactly what we accept.
            let reference = base64::engine::general_purpose::STANDARD.decode(&s).ok().filter(|v| v.len() == 32);
            let ours = decode_base64_key(&s).ok().map(|k| k.to_vec());
            prop_assert_eq!(ours, reference);
        }

        #[test]
        fn any_text_parses_without_panic(s in "\\PC{0,70}") {
            let _ = PrivateKey::from_base64(&s);
            let _ = PublicKey::from_base64(&s);
            let _ = PresharedKey::from_hex(&s);
            let _ = PublicKey::from_hex(&s);
        }

        #[test]
        fn private_key_round_trips(bytes in any::<[u8; 32]>()) {
            let key = PrivateKey::from_bytes(bytes);
            prop_assert_eq!(&PrivateKey::from_base64(&key.expose_base64()).unwrap(), &key);
            prop_assert_eq!(&PrivateKey::from_hex(&key.expose_hex()).unwrap(), &key);
            let public = key.public_key();
            prop_assert_eq!(PublicKey::from_base64(&public.to_base64()).unwrap(), public);
            prop_assert_eq!(PublicKey::from_hex(&public.to_hex()).unwrap(), public);
            prop_assert_eq!(PublicKey::from_bytes(*public.as_bytes()).unwrap(), public);
        }

        #[test]
        fn dh_agrees(a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            let (a, b) = (PrivateKey::from_bytes(a), PrivateKey::from_bytes(b));
            let ab = a.diffie_hellman(&b.public_key());
            prop_assert_eq!(*ab, *b.diffie_hellman(&a.public_key()));
            prop_assert_ne!(*ab, [0u8; 32]);
        }
    }
}
