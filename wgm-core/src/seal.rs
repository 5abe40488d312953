//! Sealed secrets: private keys, preshared keys and TOTP seeds encrypted at rest.
//!
//! A [`Sealer`] holds the current [`MasterKey`] (and, during a rotation, previous ones)
//! and turns plaintext into a [`SealedSecret`] with XChaCha20-Poly1305. The associated
//! data binds every ciphertext to the record it belongs to — the [`SecretKind`] and the
//! record id — and to the key id, so a sealed value copied into another row, another
//! column or another kind of record does not open. Every failure (wrong or missing master
//! key, moved, truncated or tampered ciphertext, unknown format) is an explicit
//! [`Error::Sealed`]; opening never yields garbage key material.
//!
//! The text form of a sealed value is `wgm1:<key id>:<base64url(nonce ‖ ciphertext)>`:
//! the version, the 16-hex-digit fingerprint of the master key that sealed it (so a
//! rotation knows which values still need re-sealing) and a 24-byte random nonce followed
//! by the ciphertext and its 16-byte tag.
//!
//! ```
//! use wgm_core::seal::{MasterKey, Sealer, SecretKind};
//!
//! let old = MasterKey::generate();
//! let sealer = Sealer::new(old.clone());
//! let sealed = sealer.seal(SecretKind::PeerPresharedKey, "peer-7", b"0123456789abcdef0123456789abcdef")?;
//! assert_eq!(&sealer.open(SecretKind::PeerPresharedKey, "peer-7", &sealed)?[..], b"0123456789abcdef0123456789abcdef");
//!
//! // Moved to another record: refused.
//! assert!(sealer.open(SecretKind::PeerPresharedKey, "peer-8", &sealed).is_err());
//!
//! // Rotation: a new current key, the old one kept to open what it sealed.
//! let rotated = Sealer::new(MasterKey::generate()).with_previous(old);
//! assert!(rotated.needs_reseal(&sealed));
//! let resealed = rotated.reseal(SecretKind::PeerPresharedKey, "peer-7", &sealed)?;
//! assert!(!rotated.needs_reseal(&resealed));
//! # Ok::<(), wgm_core::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

#[cfg(feature = "auth")]
use crate::auth::totp::TotpSecret;
use crate::keys::{PresharedKey, PrivateKey};
use crate::{Error, Result};

/// Length of a master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;
/// Length of the `XChaCha20` nonce in bytes.
const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag in bytes.
const TAG_LEN: usize = 16;
/// The version tag of the current sealed format.
const VERSION: &str = "wgm1";
/// Domain separation for the key fingerprint.
const KEY_ID_DOMAIN: &[u8] = b"wgm seal key id v1\0";
/// Domain separation for the associated data.
const AD_DOMAIN: &[u8] = b"wgm seal v1\0";
/// Upper bound on a record id, so associated data stays small and well-formed.
const MAX_RECORD_ID_LEN: usize = 256;
/// Upper bound on the text form accepted by [`SealedSecret::from_str`] (1 MiB).
const MAX_SEALED_TEXT_LEN: usize = 1 << 20;

/// The 256-bit master key that seals every secret at rest.
///
/// Zeroized on drop; `Debug` shows only its [`KeyId`]. It comes from an environment
/// variable or a 0600 key file read by the caller (this crate does no I/O), in the
/// canonical standard base64 form produced by [`MasterKey::expose_base64`].
///
/// ```
/// use wgm_core::seal::MasterKey;
/// let key = MasterKey::generate();
/// let text = key.expose_base64();
/// let again = MasterKey::from_base64(&text)?;
/// assert_eq!(key.key_id(), again.key_id());
/// assert!(!format!("{key:?}").contains(text.as_str()));
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    bytes: [u8; MASTER_KEY_LEN],
}

impl MasterKey {
    /// A fresh random key from the operating system's RNG.
    pub fn generate() -> Self {
        Self::generate_with(&mut OsRng)
    }

    /// A fresh random key from `rng` (tests pass a seeded RNG; production uses `OsRng`).
    pub fn generate_with<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; MASTER_KEY_LEN];
        rng.fill_bytes(&mut bytes);
        Self { bytes }
    }

    /// The key made of exactly these bytes.
    pub fn from_bytes(bytes: [u8; MASTER_KEY_LEN]) -> Self {
        Self { bytes }
    }

    /// Parse the canonical standard base64 form: exactly 44 characters with one `=` of
    /// padding, no whitespace (callers trim a key file's trailing newline), no URL-safe
    /// alphabet, no non-canonical trailing bits. An all-zero key is refused.
    pub fn from_base64(text: &str) -> Result<Self> {
        const FIELD: &str = "master_key";
        if text.len() != 44 {
            return Err(Error::invalid(
                FIELD,
                "must be 44 characters of standard base64 (32 bytes)",
            ));
        }
        let mut decoded = Zeroizing::new([0u8; 33]);
        let n = STANDARD
            .decode_slice(text.as_bytes(), &mut decoded[..])
            .map_err(|_| Error::invalid(FIELD, "must be canonical standard base64"))?;
        if n != MASTER_KEY_LEN {
            return Err(Error::invalid(FIELD, "must decode to exactly 32 bytes"));
        }
        let mut bytes = [0u8; MASTER_KEY_LEN];
        bytes.copy_from_slice(&decoded[..MASTER_KEY_LEN]);
        if bytes.iter().all(|&b| b == 0) {
            return Err(Error::invalid(FIELD, "must not be all zero"));
        }
        Ok(Self { bytes })
    }

    /// The key as canonical standard base64, for writing to a key file. Handle with care.
    pub fn expose_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.bytes))
    }

    /// The raw key bytes. Handle with care.
    pub fn expose_bytes(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.bytes
    }

    /// The non-secret fingerprint of this key: the first 8 bytes of
    /// SHA-256(domain ‖ key), as 16 lowercase hex digits.
    pub fn key_id(&self) -> KeyId {
        let digest = Sha256::new()
            .chain_update(KEY_ID_DOMAIN)
            .chain_update(self.bytes)
            .finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.bytes))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({}, redacted)", self.key_id())
    }
}

/// The non-secret fingerprint of a [`MasterKey`], shown in sealed values, logs and errors.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 8]);

impl KeyId {
    fn parse(text: &str) -> Option<Self> {
        if text.len() != 16 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut id = [0u8; 8];
        hex::decode_to_slice(text, &mut id).ok()?;
        Some(KeyId(id))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// What a sealed secret is; part of the associated data, so a value sealed as one kind
/// never opens as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SecretKind {
    /// A server's private key.
    ServerPrivateKey,
    /// A peer's private key (generated server-side).
    PeerPrivateKey,
    /// A peer's preshared key.
    PeerPresharedKey,
    /// A user's TOTP seed.
    TotpSecret,
    /// The store's audit key (`integrity::AuditKey`), which keys the audit chain and the
    /// revisions' MACs.
    AuditKey,
    /// Any other kind, named by a fixed label (for example `"webhook_secret"`).
    Other(&'static str),
}

impl SecretKind {
    /// The stable label of this kind, as bound into the associated data and shown in errors.
    pub fn label(self) -> &'static str {
        match self {
            SecretKind::ServerPrivateKey => "server_private_key",
            SecretKind::PeerPrivateKey => "peer_private_key",
            SecretKind::PeerPresharedKey => "peer_preshared_key",
            SecretKind::TotpSecret => "totp_secret",
            SecretKind::AuditKey => "audit_key",
            SecretKind::Other(label) => label,
        }
    }
}

impl fmt::Display for SecretKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A secret sealed under a master key, in its text form
/// `wgm1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`.
///
/// Serialized as that string. Deserialization keeps any string as it is, so one corrupt
/// row never prevents loading the records around it; the value is checked when it is
/// opened (an explicit [`Error::Sealed`]). [`SealedSecret::from_str`] checks at once.
/// `Debug` and `Display` show only the version and the key id.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SealedSecret {
    text: String,
}

/// The checked parts of a [`SealedSecret`].
struct Parsed {
    key_id: KeyId,
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
}

impl SealedSecret {
    /// The stored text form (not secret: it is ciphertext), for writing to a store.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The id of the master key that sealed this value, if the value is well-formed.
    pub fn key_id(&self) -> Option<KeyId> {
        self.parse().ok().map(|p| p.key_id)
    }

    fn parse(&self) -> Result<Parsed> {
        let mut parts = self.text.splitn(3, ':');
        let (Some(version), Some(key_id), Some(payload)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::sealed(
                "malformed sealed value: expected version:key_id:payload",
            ));
        };
        if version != VERSION {
            return Err(Error::sealed(format!(
                "unsupported sealed format version (expected {VERSION})"
            )));
        }
        let key_id = KeyId::parse(key_id).ok_or_else(|| {
            Error::sealed("malformed sealed value: key id must be 16 lowercase hex digits")
        })?;
        if payload.len() > MAX_SEALED_TEXT_LEN {
            return Err(Error::sealed("malformed sealed value: too long"));
        }
        let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| {
            Error::sealed("malformed sealed value: payload is not canonical base64url")
        })?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::sealed("malformed sealed value: truncated"));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[..NONCE_LEN]);
        Ok(Parsed {
            key_id,
            nonce,
            ciphertext: bytes[NONCE_LEN..].to_vec(),
        })
    }
}

impl FromStr for SealedSecret {
    type Err = Error;

    /// Parse and check the text form (version, key id, payload length); the
    /// authenticity of the ciphertext is only known when it is opened.
    fn from_str(text: &str) -> Result<Self> {
        let sealed = SealedSecret {
            text: text.to_owned(),
        };
        sealed.parse()?;
        Ok(sealed)
    }
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.parse() {
            Ok(p) => write!(f, "SealedSecret({VERSION}, key {})", p.key_id),
            Err(_) => f.write_str("SealedSecret(malformed)"),
        }
    }
}

impl fmt::Display for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Seals and opens secrets with the current master key; opens with previous keys too,
/// so a master-key rotation can re-seal everything while old values keep working.
///
/// `Debug` lists only key ids.
#[derive(Clone)]
pub struct Sealer {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let previous: Vec<KeyId> = self.previous.iter().map(MasterKey::key_id).collect();
        f.debug_struct("Sealer")
            .field("current", &self.current.key_id())
            .field("previous", &previous)
            .finish()
    }
}

impl Sealer {
    /// A sealer that seals and opens with `current` only.
    pub fn new(current: MasterKey) -> Self {
        Self {
            current,
            previous: Vec::new(),
        }
    }

    /// Also open values sealed with `old` (during a rotation). A key equal to the
    /// current one or already listed is ignored.
    #[must_use]
    pub fn with_previous(mut self, old: MasterKey) -> Self {
        let id = old.key_id();
        if id != self.current.key_id() && self.previous.iter().all(|k| k.key_id() != id) {
            self.previous.push(old);
        }
        self
    }

    /// The id of the key new values are sealed with.
    pub fn current_key_id(&self) -> KeyId {
        self.current.key_id()
    }

    /// Seal `plaintext` as the secret of `kind` for record `record_id`.
    pub fn seal(
        &self,
        kind: SecretKind,
        record_id: &str,
        plaintext: &[u8],
    ) -> Result<SealedSecret> {
        self.seal_with(&mut OsRng, kind, record_id, plaintext)
    }

    /// [`Sealer::seal`] with nonces drawn from `rng` (tests pass a seeded RNG).
    pub fn seal_with<R: RngCore + CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        kind: SecretKind,
        record_id: &str,
        plaintext: &[u8],
    ) -> Result<SealedSecret> {
        check_record_id(record_id)?;
        let key_id = self.current.key_id();
        let aad = associated_data(kind, record_id, key_id);
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let ciphertext = self
            .current
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| Error::sealed(format!("{kind} {record_id}: encryption failed")))?;
        let mut payload = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        payload.extend_from_slice(&nonce);
        payload.extend_from_slice(&ciphertext);
        Ok(SealedSecret {
            text: format!("{VERSION}:{key_id}:{}", URL_SAFE_NO_PAD.encode(payload)),
        })
    }

    /// Open the secret of `kind` for record `record_id`. Fails with [`Error::Sealed`]
    /// naming the kind and the record when the key is unknown, the value is malformed,
    /// or it does not authenticate (wrong key, moved to another record, tampered).
    pub fn open(
        &self,
        kind: SecretKind,
        record_id: &str,
        sealed: &SealedSecret,
    ) -> Result<Zeroizing<Vec<u8>>> {
        check_record_id(record_id)?;
        let parsed = sealed
            .parse()
            .map_err(|e| prefix_sealed(e, kind, record_id))?;
        let key = self.key_for(parsed.key_id).ok_or_else(|| {
            Error::sealed(format!(
                "{kind} {record_id}: sealed with master key {} which is not loaded (wrong or missing master key)",
                parsed.key_id
            ))
        })?;
        let aad = associated_data(kind, record_id, parsed.key_id);
        key.cipher()
            .decrypt(XNonce::from_slice(&parsed.nonce), Payload { msg: &parsed.ciphertext, aad: &aad })
            .map(Zeroizing::new)
            .map_err(|_| {
                Error::sealed(format!(
                    "{kind} {record_id}: authentication failed (wrong master key, value moved from another record, or tampered)"
                ))
            })
    }

    /// Open `sealed` with whichever loaded key sealed it and seal it again with the
    /// current key (master-key rotation).
    pub fn reseal(
        &self,
        kind: SecretKind,
        record_id: &str,
        sealed: &SealedSecret,
    ) -> Result<SealedSecret> {
        let plaintext = self.open(kind, record_id, sealed)?;
        self.seal(kind, record_id, &plaintext)
    }

    /// Whether `sealed` was not sealed by the current key in the current format (so a
    /// rotation should [`Sealer::reseal`] it). Malformed values count as needing it;
    /// re-sealing them then fails loudly.
    pub fn needs_reseal(&self, sealed: &SealedSecret) -> bool {
        sealed.key_id() != Some(self.current.key_id())
    }

    /// Seal a `WireGuard` private key (kind is usually [`SecretKind::ServerPrivateKey`] or
    /// [`SecretKind::PeerPrivateKey`]).
    pub fn seal_private_key(
        &self,
        key: &PrivateKey,
        kind: SecretKind,
        record_id: &str,
    ) -> Result<SealedSecret> {
        self.seal(kind, record_id, key.expose_bytes())
    }

    /// Open a `WireGuard` private key sealed by [`Sealer::seal_private_key`].
    pub fn open_private_key(
        &self,
        kind: SecretKind,
        record_id: &str,
        sealed: &SealedSecret,
    ) -> Result<PrivateKey> {
        let bytes = self.open_exact::<32>(kind, record_id, sealed)?;
        Ok(PrivateKey::from_bytes(*bytes))
    }

    /// Seal a `WireGuard` preshared key (kind is usually [`SecretKind::PeerPresharedKey`]).
    pub fn seal_preshared_key(
        &self,
        key: &PresharedKey,
        kind: SecretKind,
        record_id: &str,
    ) -> Result<SealedSecret> {
        self.seal(kind, record_id, key.expose_bytes())
    }

    /// Open a preshared key sealed by [`Sealer::seal_preshared_key`].
    pub fn open_preshared_key(
        &self,
        kind: SecretKind,
        record_id: &str,
        sealed: &SealedSecret,
    ) -> Result<PresharedKey> {
        let bytes = self.open_exact::<32>(kind, record_id, sealed)?;
        Ok(PresharedKey::from_bytes(*bytes))
    }

    /// Seal a user's TOTP seed as [`SecretKind::TotpSecret`] for record `user_id`.
    #[cfg(feature = "auth")]
    pub fn seal_totp_secret(&self, secret: &TotpSecret, user_id: &str) -> Result<SealedSecret> {
        self.seal(SecretKind::TotpSecret, user_id, secret.expose_bytes())
    }

    /// Open a TOTP seed sealed by [`Sealer::seal_totp_secret`].
    #[cfg(feature = "auth")]
    pub fn open_totp_secret(&self, user_id: &str, sealed: &SealedSecret) -> Result<TotpSecret> {
        let bytes = self.open(SecretKind::TotpSecret, user_id, sealed)?;
        TotpSecret::from_bytes(&bytes).map_err(|_| {
            Error::sealed(format!(
                "{} {user_id}: opened value is not a valid TOTP seed",
                SecretKind::TotpSecret
            ))
        })
    }

    fn open_exact<const N: usize>(
        &self,
        kind: SecretKind,
        record_id: &str,
        sealed: &SealedSecret,
    ) -> Result<Zeroizing<[u8; N]>> {
        let plain = self.open(kind, record_id, sealed)?;
        if plain.len() != N {
            return Err(Error::sealed(format!(
                "{kind} {record_id}: opened value has the wrong length for a key"
            )));
        }
        let mut out = Zeroizing::new([0u8; N]);
        out.copy_from_slice(&plain);
        Ok(out)
    }

    fn key_for(&self, id: KeyId) -> Option<&MasterKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.key_id() == id)
    }
}

fn check_record_id(record_id: &str) -> Result<()> {
    if record_id.is_empty() || record_id.len() > MAX_RECORD_ID_LEN {
        return Err(Error::invalid("record_id", "must be 1 to 256 bytes"));
    }
    Ok(())
}

/// Put the kind and record in front of a parse error's reason.
fn prefix_sealed(e: Error, kind: SecretKind, record_id: &str) -> Error {
    match e {
        Error::Sealed { reason } => Error::sealed(format!("{kind} {record_id}: {reason}")),
        other => other,
    }
}

/// Domain ‖ version ‖ len(kind) ‖ kind ‖ len(id) ‖ id ‖ key id, lengths as u32 big-endian,
/// so no two distinct (kind, id) pairs share an encoding.
fn associated_data(kind: SecretKind, record_id: &str, key_id: KeyId) -> Vec<u8> {
    let label = kind.label().as_bytes();
    let mut ad = Vec::with_capacity(AD_DOMAIN.len() + 16 + label.len() + record_id.len() + 8);
    ad.extend_from_slice(AD_DOMAIN);
    for part in [label, record_id.as_bytes()] {
        // Both are bounded (static label, record id ≤ 256 bytes), so the length fits.
        ad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        ad.extend_from_slice(part);
    }
    ad.extend_from_slice(&key_id.0);
    ad
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn sealer() -> (MasterKey, Sealer) {
        let key = MasterKey::generate_with(&mut StdRng::seed_from_u64(1));
        (key.clone(), Sealer::new(key))
    }

    fn assert_sealed<T: fmt::Debug>(r: Result<T>, needle: &str) {
        match r {
            Err(Error::Sealed { reason }) => assert!(
                reason.contains(needle),
                "reason {reason:?} lacks {needle:?}"
            ),
            other => panic!("expected Error::Sealed, got {other:?}"),
        }
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trip_and_text_form() {
        let (key, s) = sealer();
        let sealed = s.seal(SecretKind::PeerPrivateKey, "p1", SECRET).unwrap();
        let text = sealed.as_str();
        assert!(text.starts_with(&format!("wgm1:{}:", key.key_id())));
        let payload = URL_SAFE_NO_PAD
            .decode(text.rsplit(':').next().unwrap())
            .unwrap();
        assert_eq!(payload.len(), NONCE_LEN + SECRET.len() + TAG_LEN);
        assert_eq!(
            &s.open(SecretKind::PeerPrivateKey, "p1", &sealed).unwrap()[..],
            SECRET
        );
        let parsed: SealedSecret = text.parse().unwrap();
        assert_eq!(parsed, sealed);
        // Empty plaintext is fine too.
        let empty = s.seal(SecretKind::Other("x"), "r", b"").unwrap();
        assert!(s
            .open(SecretKind::Other("x"), "r", &empty)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn nonces_are_fresh() {
        let (_, s) = sealer();
        let a = s.seal(SecretKind::TotpSecret, "u", SECRET).unwrap();
        let b = s.seal(SecretKind::TotpSecret, "u", SECRET).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn serde_is_the_text_form() {
        let (_, s) = sealer();
        let sealed = s.seal(SecretKind::PeerPresharedKey, "p", SECRET).unwrap();
        let json = serde_json::to_string(&sealed).unwrap();
        assert_eq!(json, format!("\"{}\"", sealed.as_str()));
        let back: SealedSecret = serde_json::from_str(&json).unwrap();
        assert_eq!(back, sealed);
        // A corrupt row deserializes, and fails loudly when opened.
        let junk: SealedSecret = serde_json::from_str("\"garbage\"").unwrap();
        assert_sealed(
            s.open(SecretKind::PeerPresharedKey, "p", &junk),
            "peer_preshared_key p: malformed",
        );
        assert_eq!(format!("{junk:?}"), "SealedSecret(malformed)");
    }

    #[test]
    fn wrong_master_key_fails() {
        let (_, s) = sealer();
        let sealed = s.seal(SecretKind::ServerPrivateKey, "srv", SECRET).unwrap();
        let other = Sealer::new(MasterKey::generate());
        assert_sealed(
            other.open(SecretKind::ServerPrivateKey, "srv", &sealed),
            "not loaded",
        );

        // Same key id claimed by a value sealed under another key (forged header): the
        // key id is bound into the AD and the key differs, so it fails authentication.
        let forged_key = MasterKey::generate();
        let forged = Sealer::new(forged_key)
            .seal(SecretKind::ServerPrivateKey, "srv", SECRET)
            .unwrap();
        let payload = forged.as_str().rsplit(':').next().unwrap();
        let relabelled: SealedSecret = format!("wgm1:{}:{payload}", s.current_key_id())
            .parse()
            .unwrap();
        assert_sealed(
            s.open(SecretKind::ServerPrivateKey, "srv", &relabelled),
            "authentication failed",
        );
    }

    #[test]
    fn moved_to_another_record_or_kind_fails() {
        let (_, s) = sealer();
        let sealed = s
            .seal(SecretKind::PeerPrivateKey, "peer-1", SECRET)
            .unwrap();
        assert_sealed(
            s.open(SecretKind::PeerPrivateKey, "peer-2", &sealed),
            "peer_private_key peer-2",
        );
        assert_sealed(
            s.open(SecretKind::PeerPresharedKey, "peer-1", &sealed),
            "authentication failed",
        );
        assert_sealed(
            s.open(SecretKind::ServerPrivateKey, "peer-1", &sealed),
            "authentication failed",
        );
        // Prefix ambiguity: ("ab","c") vs ("a","bc") must differ.
        let ab = s.seal(SecretKind::Other("ab"), "c", SECRET).unwrap();
        assert_sealed(
            s.open(SecretKind::Other("a"), "bc", &ab),
            "authentication failed",
        );
    }

    #[test]
    fn every_flipped_byte_fails() {
        let (_, s) = sealer();
        let sealed = s.seal(SecretKind::PeerPresharedKey, "p", SECRET).unwrap();
        let (head, payload) = sealed.as_str().rsplit_once(':').unwrap();
        let bytes = URL_SAFE_NO_PAD.decode(payload).unwrap();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= bit;
                let tampered: SealedSecret = format!("{head}:{}", URL_SAFE_NO_PAD.encode(&b))
                    .parse()
                    .unwrap();
                assert_sealed(
                    s.open(SecretKind::PeerPresharedKey, "p", &tampered),
                    "authentication failed",
                );
            }
        }
        // Flipping a character of the key id: unknown key.
        let mut text = sealed.as_str().to_owned();
        let c = if text.as_bytes()[5] == b'0' { "1" } else { "0" };
        text.replace_range(5..6, c);
        assert_sealed(
            s.open(
                SecretKind::PeerPresharedKey,
                "p",
                &serde_json::from_value(text.into()).unwrap(),
            ),
            "not loaded",
        );
    }

    #[test]
    fn truncated_and_extended_fail() {
        let (_, s) = sealer();
        let sealed = s.seal(SecretKind::PeerPresharedKey, "p", SECRET).unwrap();
        let (head, payload) = sealed.as_str().rsplit_once(':').unwrap();
        let bytes = URL_SAFE_NO_PAD.decode(payload).unwrap();
        for len in 0..bytes.len() {
            let cut = SealedSecret {
                text: format!("{head}:{}", URL_SAFE_NO_PAD.encode(&bytes[..len])),
            };
            let err = s.open(SecretKind::PeerPresharedKey, "p", &cut).unwrap_err();
            assert!(matches!(err, Error::Sealed { .. }), "len {len}: {err:?}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let ext = SealedSecret {
            text: format!("{head}:{}", URL_SAFE_NO_PAD.encode(&longer)),
        };
        assert_sealed(
            s.open(SecretKind::PeerPresharedKey, "p", &ext),
            "authentication failed",
        );
        // Truncated text (cut inside the base64) is also refused.
        let cut = SealedSecret {
            text: sealed.as_str()[..sealed.as_str().len() - 1].to_owned(),
        };
        let err = s.open(SecretKind::PeerPresharedKey, "p", &cut).unwrap_err();
        assert!(matches!(err, Error::Sealed { .. }));
    }

    #[test]
    fn malformed_text_forms_fail() {
        let (_, s) = sealer();
        let sealed = s.seal(SecretKind::PeerPresharedKey, "p", SECRET).unwrap();
        let rest = sealed.as_str().strip_prefix("wgm1:").unwrap();
        let upper = {
            let (id, p) = rest.split_once(':').unwrap();
            format!("wgm1:{}:{p}", id.to_uppercase())
        };
        let cases = [
            (format!("wgm2:{rest}"), "version"),
            (format!("WGM1:{rest}"), "version"),
            (rest.to_owned(), "version"),
            (String::new(), "malformed"),
            ("wgm1".to_owned(), "malformed"),
            ("wgm1:abcd:".to_owned(), "key id"),
            (upper, "key id"),
            (format!("{}=", sealed.as_str()), "base64url"),
            (format!("{} ", sealed.as_str()), "base64url"),
            (sealed.as_str().replace(['-', '_'], "+"), ""),
        ];
        for (text, needle) in cases {
            if text == sealed.as_str() {
                continue; // the replace found nothing to change
            }
            assert_sealed(text.parse::<SealedSecret>(), needle);
            let lenient = SealedSecret { text };
            let err = s
                .open(SecretKind::PeerPresharedKey, "p", &lenient)
                .unwrap_err();
            assert!(matches!(err, Error::Sealed { .. }), "{err:?}");
        }
    }

    #[test]
    fn rotation_reseals_with_the_current_key() {
        let (old_key, old) = sealer();
        let sealed = old.seal(SecretKind::PeerPrivateKey, "p", SECRET).unwrap();
        assert!(!old.needs_reseal(&sealed));

        let new_key = MasterKey::generate();
        let rotating = Sealer::new(new_key.clone())
            .with_previous(old_key.clone())
            .with_previous(old_key);
        assert!(format!("{rotating:?}").contains(&old.current_key_id().to_string()));
        assert!(rotating.needs_reseal(&sealed));
        assert_eq!(
            &rotating
                .open(SecretKind::PeerPrivateKey, "p", &sealed)
                .unwrap()[..],
            SECRET
        );
        let resealed = rotating
            .reseal(SecretKind::PeerPrivateKey, "p", &sealed)
            .unwrap();
        assert_eq!(resealed.key_id(), Some(new_key.key_id()));
        assert!(!rotating.needs_reseal(&resealed));

        // After the rotation the old key is dropped: the new value opens, the old does not.
        let after = Sealer::new(new_key);
        assert_eq!(
            &after
                .open(SecretKind::PeerPrivateKey, "p", &resealed)
                .unwrap()[..],
            SECRET
        );
        assert_sealed(
            after.open(SecretKind::PeerPrivateKey, "p", &sealed),
            "not loaded",
        );
        // Resealing moves nothing: the AD still names the same record.
        assert_sealed(
            after.open(SecretKind::PeerPrivateKey, "q", &resealed),
            "authentication failed",
        );
        // Malformed values need a reseal and the reseal fails loudly.
        let junk = SealedSecret {
            text: "nope".into(),
        };
        assert!(after.needs_reseal(&junk));
        assert!(matches!(
            after.reseal(SecretKind::PeerPrivateKey, "p", &junk),
            Err(Error::Sealed { .. })
        ));
    }

    #[test]
    fn master_key_parsing_is_strict() {
        let key = MasterKey::generate_with(&mut StdRng::seed_from_u64(7));
        let text = key.expose_base64();
        assert_eq!(
            MasterKey::from_base64(&text).unwrap().expose_bytes(),
            key.expose_bytes()
        );
        let bad = [
            String::new(),
            format!("{}\n", text.as_str()),
            format!(" {}", &text[1..]),
            text.replace('+', "-").replace('/', "_"),
            text[..43].to_owned(),
            "A".repeat(44),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
            // Non-canonical trailing bits (…LCp= for the canonical …LCo=).
            "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCp=".to_owned(),
        ];
        for b in &bad {
            if b.as_str() == text.as_str() {
                continue;
            }
            let err = MasterKey::from_base64(b).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidInput { field, .. } if field == "master_key"),
                "{b:?}: {err:?}"
            );
            assert!(!err.to_string().contains(b.as_str()) || b.is_empty());
        }
        assert!(MasterKey::from_base64("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=").is_ok());
    }

    #[test]
    fn key_id_is_stable_and_debug_redacts() {
        let key = MasterKey::from_bytes([7u8; 32]);
        let expected = {
            let d = Sha256::new()
                .chain_update(KEY_ID_DOMAIN)
                .chain_update([7u8; 32])
                .finalize();
            hex::encode(&d[..8])
        };
        assert_eq!(key.key_id().to_string(), expected);
        let dbg = format!("{key:?}");
        assert!(dbg.contains(&expected) && dbg.contains("redacted"));
        assert!(!dbg.contains(key.expose_base64().as_str()));
        assert!(!dbg.contains("0707"));
        let s = Sealer::new(key);
        assert!(!format!("{s:?}").contains(s.current.expose_base64().as_str()));
    }

    #[test]
    fn record_id_bounds() {
        let (_, s) = sealer();
        assert!(matches!(
            s.seal(SecretKind::TotpSecret, "", SECRET),
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            s.seal(SecretKind::TotpSecret, &"x".repeat(257), SECRET),
            Err(Error::InvalidInput { .. })
        ));
        assert!(s
            .seal(SecretKind::TotpSecret, &"x".repeat(256), SECRET)
            .is_ok());
    }

    #[test]
    #[cfg(feature = "auth")]
    fn totp_seed_round_trip() {
        let (_, s) = sealer();
        let seed = TotpSecret::generate();
        let sealed = s.seal_totp_secret(&seed, "user-1").unwrap();
        assert_eq!(
            s.open_totp_secret("user-1", &sealed)
                .unwrap()
                .expose_bytes(),
            seed.expose_bytes()
        );
        assert_sealed(s.open_totp_secret("user-2", &sealed), "totp_secret user-2");
        // A too-short value sealed as a TOTP seed is refused, not used.
        let short = s.seal(SecretKind::TotpSecret, "user-1", b"short").unwrap();
        assert_sealed(
            s.open_totp_secret("user-1", &short),
            "not a valid TOTP seed",
        );
    }

    #[test]
    fn wireguard_keys_round_trip_and_wrong_length_is_refused() {
        let (_, s) = sealer();
        let sk = PrivateKey::from_bytes([9u8; 32]);
        let sealed = s
            .seal_private_key(&sk, SecretKind::PeerPrivateKey, "p")
            .unwrap();
        let back = s
            .open_private_key(SecretKind::PeerPrivateKey, "p", &sealed)
            .unwrap();
        assert_eq!(back.expose_bytes(), sk.expose_bytes());
        assert_sealed(
            s.open_private_key(SecretKind::ServerPrivateKey, "p", &sealed),
            "authentication failed",
        );

        let psk = PresharedKey::from_bytes([3u8; 32]);
        let sealed = s
            .seal_preshared_key(&psk, SecretKind::PeerPresharedKey, "p")
            .unwrap();
        let back = s
            .open_preshared_key(SecretKind::PeerPresharedKey, "p", &sealed)
            .unwrap();
        assert_eq!(back.expose_bytes(), psk.expose_bytes());

        let wrong = s.seal(SecretKind::PeerPrivateKey, "p", &[1u8; 31]).unwrap();
        assert_sealed(
            s.open_private_key(SecretKind::PeerPrivateKey, "p", &wrong),
            "wrong length",
        );
        let wrong = s
            .seal(SecretKind::PeerPresharedKey, "p", &[1u8; 33])
            .unwrap();
        assert_sealed(
            s.open_preshared_key(SecretKind::PeerPresharedKey, "p", &wrong),
            "wrong length",
        );
    }
}
