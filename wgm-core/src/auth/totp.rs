//! Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP).
//!
//! [`Totp`] holds the public parameters (algorithm, digits, step, T0) and computes and
//! verifies codes for a [`TotpSecret`] at a unix time passed in by the caller.
//! Verification accepts the current step and one step either side, compares in constant
//! time, and refuses any step at or before the last one the user already used, so a
//! code cannot be replayed. The counter is 64-bit, so times past 2038 (and past 2^32
//! steps) work.
//!
//! ```
//! use wgm_core::auth::totp::{Totp, TotpAlgorithm, TotpSecret};
//!
//! let secret = TotpSecret::generate();
//! let totp = Totp::default(); // SHA-1, 6 digits, 30 s: what authenticator apps expect
//! let now = 1_700_000_000;
//! let code = totp.code_at(&secret, now);
//! let step = totp.verify(&secret, &code, now + 25, None)?; // clock skew within one step
//! // The same code again is a replay: refused.
//! assert!(totp.verify(&secret, &code, now + 25, Some(step)).is_err());
//! let uri = totp.otpauth_uri("wgm", "alice@example.org", &secret)?;
//! assert!(uri.starts_with("otpauth://totp/wgm:alice%40example.org?secret="));
//! # Ok::<(), wgm_core::Error>(())
//! ```

use std::fmt;

use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::{Error, Result};

/// Length of a generated seed in bytes (160 bits, RFC 4226's recommendation).
pub const GENERATED_SECRET_LEN: usize = 20;
/// Shortest accepted seed in bytes (128 bits, RFC 4226's minimum).
pub const MIN_SECRET_LEN: usize = 16;
/// Longest accepted seed in bytes.
pub const MAX_SECRET_LEN: usize = 128;

/// A TOTP seed. Zeroized on drop; `Debug` is redacted; no `Display`, no serde: it is
/// stored only sealed (see [`crate::seal::Sealer::seal_totp_secret`]) and shown once, at
/// enrolment, through [`Totp::otpauth_uri`] or [`TotpSecret::expose_base32`].
#[derive(Clone)]
pub struct TotpSecret {
    bytes: Zeroizing<Vec<u8>>,
}

impl TotpSecret {
    /// A fresh 20-byte seed from the operating system's RNG.
    pub fn generate() -> Self {
        Self::generate_with(&mut OsRng)
    }

    /// A fresh 20-byte seed from `rng`.
    pub fn generate_with<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; GENERATED_SECRET_LEN]);
        rng.fill_bytes(&mut bytes);
        Self { bytes }
    }

    /// A seed made of these bytes (16 to 128 bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&bytes.len()) {
            return Err(Error::invalid("totp.secret", "must be 16 to 128 bytes"));
        }
        Ok(Self {
            bytes: Zeroizing::new(bytes.to_vec()),
        })
    }

    /// Parse the RFC 4648 base32 form shown by other systems (case-insensitive, spaces
    /// ignored, `=` padding optional, canonical trailing bits required).
    pub fn from_base32(text: &str) -> Result<Self> {
        let bytes = base32_decode(text)
            .ok_or_else(|| Error::invalid("totp.secret", "must be RFC 4648 base32"))?;
        Self::from_bytes(&bytes)
    }

    /// The seed as unpadded upper-case base32, for manual entry into an authenticator.
    pub fn expose_base32(&self) -> Zeroizing<String> {
        base32_encode(&self.bytes)
    }

    /// The raw seed bytes (for sealing). Handle with care.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

/// The HMAC hash function of a TOTP.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum TotpAlgorithm {
    /// HMAC-SHA-1, what nearly every authenticator app supports.
    #[default]
    Sha1,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
}

impl TotpAlgorithm {
    /// The name used in `otpauth://` URIs.
    pub fn uri_name(self) -> &'static str {
        match self {
            TotpAlgorithm::Sha1 => "SHA1",
            TotpAlgorithm::Sha256 => "SHA256",
            TotpAlgorithm::Sha512 => "SHA512",
        }
    }
}

/// TOTP parameters: algorithm, number of digits (6 or 8), step in seconds, and T0.
///
/// Serialized as `{"algorithm":"SHA1","digits":6,"step":30,"t0":0}`; deserialization
/// checks the same rules as the constructors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "TotpRepr", into = "TotpRepr")]
pub struct Totp {
    algorithm: TotpAlgorithm,
    digits: u8,
    step: u64,
    t0: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TotpRepr {
    algorithm: TotpAlgorithm,
    digits: u8,
    step: u64,
    t0: u64,
}

impl TryFrom<TotpRepr> for Totp {
    type Error = Error;
    fn try_from(r: TotpRepr) -> Result<Self> {
        Totp::new(r.algorithm, r.digits)?
            .with_step(r.step)?
            .with_t0(r.t0)
    }
}

impl From<Totp> for TotpRepr {
    fn from(t: Totp) -> Self {
        TotpRepr {
            algorithm: t.algorithm,
            digits: t.digits,
            step: t.step,
            t0: t.t0,
        }
    }
}

impl Default for Totp {
    /// SHA-1, 6 digits, 30-second steps, T0 = 0.
    fn default() -> Self {
        Self {
            algorithm: TotpAlgorithm::Sha1,
            digits: 6,
            step: 30,
            t0: 0,
        }
    }
}

impl Totp {
    /// Parameters with `algorithm` and `digits` (6 or 8), 30-second steps, T0 = 0.
    pub fn new(algorithm: TotpAlgorithm, digits: u8) -> Result<Self> {
        if digits != 6 && digits != 8 {
            return Err(Error::invalid("totp.digits", "must be 6 or 8"));
        }
        Ok(Self {
            algorithm,
            digits,
            step: 30,
            t0: 0,
        })
    }

    /// Set the step length in seconds (1 to 300).
    pub fn with_step(mut self, step: u64) -> Result<Self> {
        if !(1..=300).contains(&step) {
            return Err(Error::invalid("totp.step", "must be 1 to 300 seconds"));
        }
        self.step = step;
        Ok(self)
    }

    /// Set T0, the unix time at which step 0 starts.
    pub fn with_t0(mut self, t0: u64) -> Result<Self> {
        self.t0 = t0;
        Ok(self)
    }

    /// The hash algorithm.
    pub fn algorithm(&self) -> TotpAlgorithm {
        self.algorithm
    }

    /// Number of digits in a code.
    pub fn digits(&self) -> u8 {
        self.digits
    }

    /// Step length in seconds.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// T0 in unix seconds.
    pub fn t0(&self) -> u64 {
        self.t0
    }

    /// The step (HOTP counter) that contains `unix_time`; times before T0 are step 0.
    pub fn step_at(&self, unix_time: u64) -> u64 {
        unix_time.saturating_sub(self.t0) / self.step
    }

    /// The code for `unix_time`, zero-padded to [`Totp::digits`].
    pub fn code_at(&self, secret: &TotpSecret, unix_time: u64) -> String {
        self.code_for_step(secret, self.step_at(unix_time))
    }

    /// The code for HOTP counter `step` (RFC 4226 dynamic truncation).
    pub fn code_for_step(&self, secret: &TotpSecret, step: u64) -> String {
        let value = self.hotp(secret, step);
        format!("{value:0width$}", width = usize::from(self.digits))
    }

    fn hotp(&self, secret: &TotpSecret, counter: u64) -> u32 {
        let msg = counter.to_be_bytes();
        let mac = match self.algorithm {
            TotpAlgorithm::Sha1 => hmac_bytes::<Hmac<Sha1>>(&secret.bytes, &msg),
            TotpAlgorithm::Sha256 => hmac_bytes::<Hmac<Sha256>>(&secret.bytes, &msg),
            TotpAlgorithm::Sha512 => hmac_bytes::<Hmac<Sha512>>(&secret.bytes, &msg),
        };
        // Every digest is at least 20 bytes, so offset + 3 ≤ 15 + 3 is in range.
        let offset = usize::from(mac[mac.len() - 1] & 0x0f);
        let binary = u32::from_be_bytes([
            mac[offset] & 0x7f,
            mac[offset + 1],
            mac[offset + 2],
            mac[offset + 3],
        ]);
        binary % 10u32.pow(u32::from(self.digits))
    }

    /// Check `code` at time `now` and return the step it belongs to, which the caller
    /// stores as the user's last used step and passes back as `last_used_step` next time.
    ///
    /// Accepts the current step and one step either side; refuses any step at or before
    /// `last_used_step` (a replay). Every candidate is computed and compared in constant
    /// time. Failures are [`Error::Unauthenticated`] with one vague reason.
    pub fn verify(
        &self,
        secret: &TotpSecret,
        code: &str,
        now: u64,
        last_used_step: Option<u64>,
    ) -> Result<u64> {
        let refused = || Error::unauthenticated("invalid or already used one-time code");
        if code.len() != usize::from(self.digits) || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refused());
        }
        let current = self.step_at(now);
        let mut accepted: Option<u64> = None;
        for step in [
            current.checked_sub(1),
            Some(current),
            current.checked_add(1),
        ]
        .into_iter()
        .flatten()
        {
            let expected = self.code_for_step(secret, step);
            let matches: bool = expected.as_bytes().ct_eq(code.as_bytes()).into();
            let fresh = last_used_step.is_none_or(|last| step > last);
            if matches && fresh {
                accepted = Some(step);
            }
        }
        accepted.ok_or_else(refused)
    }

    /// The `otpauth://totp/…` URI for enrolment (shown as a QR code). `issuer` must be
    /// non-empty text without `:` or control characters; `account` must be non-empty text
    /// without control characters. Both are percent-encoded. Contains the seed: show it
    /// once, never log it.
    pub fn otpauth_uri(
        &self,
        issuer: &str,
        account: &str,
        secret: &TotpSecret,
    ) -> Result<Zeroizing<String>> {
        check_label("totp.issuer", issuer)?;
        if issuer.contains(':') {
            return Err(Error::invalid("totp.issuer", "must not contain ':'"));
        }
        check_label("totp.account", account)?;
        let issuer_enc = percent_encode(issuer);
        let secret_b32 = secret.expose_base32();
        Ok(Zeroizing::new(format!(
            "otpauth://totp/{issuer_enc}:{}?secret={}&issuer={issuer_enc}&algorithm={}&digits={}&period={}",
            percent_encode(account),
            secret_b32.as_str(),
            self.algorithm.uri_name(),
            self.digits,
            self.step,
        )))
    }
}

fn hmac_bytes<M: Mac + hmac::digest::KeyInit>(key: &[u8], msg: &[u8]) -> Zeroizing<Vec<u8>> {
    // HMAC accepts keys of any length, so this constructor cannot fail.
    let mut mac =
        <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg);
    Zeroizing::new(mac.finalize().into_bytes().to_vec())
}

fn check_label(field: &'static str, text: &str) -> Result<()> {
    if text.is_empty() || text.len() > 256 {
        return Err(Error::invalid(field, "must be 1 to 256 bytes"));
    }
    if text.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Percent-encode everything except RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(b & 0x0f)]));
        }
    }
    out
}

const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32, upper case, no padding.
fn base32_encode(bytes: &[u8]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(bytes.len().div_ceil(5) * 8));
    let mut buffer: u16 = 0;
    let mut bits = 0u32;
    for &b in bytes {
        buffer = (buffer << 8) | u16::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(
                BASE32_ALPHABET[usize::from((buffer >> bits) & 0x1f)],
            ));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(
            BASE32_ALPHABET[usize::from((buffer << (5 - bits)) & 0x1f)],
        ));
    }
    buffer.zeroize(); // it held seed bits
    out
}

/// RFC 4648 base32: case-insensitive, ASCII spaces ignored, optional `=` padding only at
/// the end, unused trailing bits must be zero. `None` on any other input.
fn base32_decode(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() * 5 / 8));
    let mut buffer: u16 = 0;
    let mut bits = 0u32;
    let mut symbols = 0usize;
    let mut padding = false;
    for c in text.bytes() {
        let value = match c {
            b' ' => continue,
            b'=' => {
                padding = true;
                continue;
            }
            _ if padding => return None,
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        symbols += 1;
        buffer = (buffer << 5) | u16::from(value);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    // Valid unpadded lengths leave 0, 2, 4, 5 or 7 symbols in the last group; the
    // leftover bits must be zero (canonical).
    let ok = matches!(symbols % 8, 0 | 2 | 4 | 5 | 7) && buffer == 0;
    buffer.zeroize(); // it held seed bits
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc_seed(len: usize) -> TotpSecret {
        let seed: Vec<u8> = b"1234567890".iter().copied().cycle().take(len).collect();
        TotpSecret::from_bytes(&seed).unwrap()
    }

    /// RFC 6238 appendix B, all rows, all three algorithms (8 digits, 30 s, T0 = 0).
    #[test]
    fn rfc6238_appendix_b() {
        let cases: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1_111_111_109, "07081804", "68084774", "25091201"),
            (1_111_111_111, "14050471", "67062674", "99943326"),
            (1_234_567_890, "89005924", "91819424", "93441116"),
            (2_000_000_000, "69279037", "90698825", "38618901"),
            (20_000_000_000, "65353130", "77737706", "47863826"),
        ];
        let sha1 = Totp::new(TotpAlgorithm::Sha1, 8).unwrap();
        let sha256 = Totp::new(TotpAlgorithm::Sha256, 8).unwrap();
        let sha512 = Totp::new(TotpAlgorithm::Sha512, 8).unwrap();
        let (s20, s32, s64) = (rfc_seed(20), rfc_seed(32), rfc_seed(64));
        for (t, c1, c256, c512) in cases {
            assert_eq!(sha1.code_at(&s20, t), c1, "SHA1 t={t}");
            assert_eq!(sha256.code_at(&s32, t), c256, "SHA256 t={t}");
            assert_eq!(sha512.code_at(&s64, t), c512, "SHA512 t={t}");
        }
        // t = 20000000000 is step 666666666 > 2^29: fine; a step past 2^32 works too.
        assert_eq!(sha1.step_at(20_000_000_000), 666_666_666);
        let far = 30 * (1u64 << 33);
        assert_eq!(sha1.code_at(&s20, far).len(), 8);
    }

    /// RFC 4226 appendix D (HOTP, SHA-1, 6 digits), counters 0..9.
    #[test]
    fn rfc4226_appendix_d() {
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        let totp = Totp::default();
        let seed = rfc_seed(20);
        for (counter, code) in expected.iter().enumerate() {
            assert_eq!(totp.code_for_step(&seed, counter as u64), *code);
        }
    }

    #[test]
    fn verify_accepts_one_step_either_side_only() {
        let totp = Totp::default();
        let seed = rfc_seed(20);
        let now = 1_700_000_015; // step 56666667, 15 s into it
        let step = totp.step_at(now);
        for (delta, ok) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
            let s = step.checked_add_signed(delta).unwrap();
            let code = totp.code_for_step(&seed, s);
            let r = totp.verify(&seed, &code, now, None);
            assert_eq!(r.is_ok(), ok, "delta {delta}");
            if ok {
                assert_eq!(r.unwrap(), s);
            } else {
                assert!(matches!(r, Err(Error::Unauthenticated { .. })));
            }
        }
    }

    #[test]
    fn replay_of_a_used_step_is_refused() {
        let totp = Totp::default();
        let seed = TotpSecret::generate();
        let now = 1_700_000_000;
        let code = totp.code_at(&seed, now);
        let used = totp.verify(&seed, &code, now, None).unwrap();
        assert_eq!(used, totp.step_at(now));
        // Same code, same step, a few seconds later: refused.
        assert!(matches!(
            totp.verify(&seed, &code, now + 5, Some(used)),
            Err(Error::Unauthenticated { .. })
        ));
        // An earlier step's code (still within the window) is refused too.
        let earlier = totp.code_for_step(&seed, used - 1);
        assert!(totp.verify(&seed, &earlier, now, Some(used)).is_err());
        // The next step's code is fresh.
        let next = totp.code_for_step(&seed, used + 1);
        assert_eq!(
            totp.verify(&seed, &next, now + 30, Some(used)).unwrap(),
            used + 1
        );
    }

    #[test]
    fn malformed_codes_are_refused() {
        let totp = Totp::default();
        let seed = rfc_seed(20);
        let now = 59;
        let good = totp.code_at(&seed, now);
        assert!(totp.verify(&seed, &good, now, None).is_ok());
        for bad in [
            "",
            "12345",
            "1234567",
            "12345a",
            " 287082",
            "287082 ",
            "２８７０８２",
            "-28708",
        ] {
            assert!(totp.verify(&seed, bad, now, None).is_err(), "{bad:?}");
        }
        let eight = Totp::new(TotpAlgorithm::Sha1, 8).unwrap();
        assert!(eight.verify(&seed, &good, now, None).is_err());
        assert_eq!(eight.verify(&seed, "94287082", now, None).unwrap(), 1);
    }

    #[test]
    fn parameters_are_checked() {
        assert!(Totp::new(TotpAlgorithm::Sha1, 7).is_err());
        assert!(Totp::new(TotpAlgorithm::Sha1, 0).is_err());
        assert!(Totp::default().with_step(0).is_err());
        assert!(Totp::default().with_step(301).is_err());
        let t = Totp::new(TotpAlgorithm::Sha256, 8)
            .unwrap()
            .with_step(60)
            .unwrap()
            .with_t0(100)
            .unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(
            json,
            r#"{"algorithm":"SHA256","digits":8,"step":60,"t0":100}"#
        );
        assert_eq!(serde_json::from_str::<Totp>(&json).unwrap(), t);
        assert!(serde_json::from_str::<Totp>(
            r#"{"algorithm":"SHA1","digits":9,"step":30,"t0":0}"#
        )
        .is_err());
        assert!(
            serde_json::from_str::<Totp>(r#"{"algorithm":"MD5","digits":6,"step":30,"t0":0}"#)
                .is_err()
        );
        // Before T0: step 0.
        assert_eq!(t.step_at(50), 0);
        assert_eq!(t.step_at(160), 1);
    }

    #[test]
    fn secret_bounds_and_redaction() {
        assert!(TotpSecret::from_bytes(&[0u8; 15]).is_err());
        assert!(TotpSecret::from_bytes(&[0u8; 129]).is_err());
        assert!(TotpSecret::from_bytes(&[0u8; 16]).is_ok());
        let s = TotpSecret::generate();
        assert_eq!(s.expose_bytes().len(), GENERATED_SECRET_LEN);
        assert_ne!(s.expose_bytes(), TotpSecret::generate().expose_bytes());
        let dbg = format!("{s:?}");
        assert_eq!(dbg, "TotpSecret(<redacted>)");
        assert!(!dbg.contains(s.expose_base32().as_str()));
    }

    #[test]
    fn base32_rfc4648_vectors() {
        let vectors: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "MY"),
            (b"fo", "MZXQ"),
            (b"foo", "MZXW6"),
            (b"foob", "MZXW6YQ"),
            (b"fooba", "MZXW6YTB"),
            (b"foobar", "MZXW6YTBOI"),
        ];
        for (raw, enc) in vectors {
            assert_eq!(base32_encode(raw).as_str(), enc);
            assert_eq!(&base32_decode(enc).unwrap()[..], raw);
        }
        assert_eq!(&base32_decode("mzxw6ytboi======").unwrap()[..], b"foobar");
        assert_eq!(&base32_decode("MZXW 6YTB OI").unwrap()[..], b"foobar");
        for bad in [
            "MZXW6YTB1",
            "M",
            "MZX",
            "MZXW6YTBOJ",
            "MZ=XQ",
            "MZXQ=A",
            "MZXW6YTBO!",
        ] {
            assert!(base32_decode(bad).is_none(), "{bad}");
        }
        let seed = rfc_seed(20);
        assert_eq!(
            seed.expose_base32().as_str(),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
        let back = TotpSecret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
        assert_eq!(back.expose_bytes(), seed.expose_bytes());
        assert!(TotpSecret::from_base32("GEZDGNBV").is_err()); // 5 bytes: too short
    }

    #[test]
    fn otpauth_uri_is_encoded_and_checked() {
        let seed = rfc_seed(20);
        let totp = Totp::default();
        let uri = totp
            .otpauth_uri("ACME Co", "alice@example.org", &seed)
            .unwrap();
        assert_eq!(
            uri.as_str(),
            "otpauth://totp/ACME%20Co:alice%40example.org?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=ACME%20Co&algorithm=SHA1&digits=6&period=30"
        );
        let tricky = totp
            .otpauth_uri("wgm", "a&secret=AAAA?x#y/z", &seed)
            .unwrap();
        assert!(tricky.contains("a%26secret%3DAAAA%3Fx%23y%2Fz?secret=GEZ"));
        assert!(totp.otpauth_uri("a:b", "alice", &seed).is_err());
        assert!(totp.otpauth_uri("", "alice", &seed).is_err());
        assert!(totp.otpauth_uri("wgm", "", &seed).is_err());
        assert!(totp.otpauth_uri("wgm", "al\nice", &seed).is_err());
        let e = totp.otpauth_uri("wgm", "al\u{0085}ice", &seed).unwrap_err();
        assert!(!e.to_string().contains("GEZDGNBV"));
    }
}
