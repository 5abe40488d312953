//! Tamper evidence of the audit log and of the revisions: the keyed chain.
//!
//! Every audit record links to its predecessor with an HMAC-SHA256 under the store's
//! [`AuditKey`], over the previous link, its sequence number and the canonical JSON of
//! its entry; every revision carries an HMAC-SHA256 under the same key (another domain)
//! over its server, number, author, time, summary and changes. Someone who can write the
//! database but does not hold the master key cannot open the audit key, so cannot
//! compute a link or a MAC: an edited, inserted or forged record or revision shows. The
//! stored head of the log ([`AuditHead`], the `audit_head` of a store) catches records
//! deleted from the end; an [`AuditHead`] exported earlier catches a rewrite of both.
//!
//! The audit key is random, made once per store, and kept in the store sealed with the
//! master key ([`StoredAuditKey`], [`SecretKind::AuditKey`]); rotating the master key
//! re-seals it and leaves it unchanged, so old links keep verifying.
//!
//! ## Records written before the key
//!
//! A store written by a version without the key holds unkeyed records (SHA-256 links)
//! and revisions without a MAC. When the key is created, what existed is recorded as the
//! [`LegacyBound`] — the sequence number and link of the last audit record, and each
//! server's head revision — and the bound is part of the sealed key's associated data, so
//! moving it makes the key fail to open. Records up to the bound are accepted unkeyed
//! (and counted as such by [`ChainVerifier`]); anything after it must be keyed. The last
//! unkeyed link is pinned by the bound, so the unkeyed prefix cannot be rewritten either.
//! A store created by this version has an empty bound and no unkeyed record.
//!
//! ```
//! use wgm_core::integrity::{AuditKey, ChainVerifier, LegacyBound};
//! use wgm_core::model::*;
//!
//! let key = AuditKey::generate();
//! let entry = AuditEntry {
//!     at: time::OffsetDateTime::UNIX_EPOCH,
//!     actor: Actor { user_id: None, label: "local:root".into() },
//!     action: AuditAction::ServerCreate, object: "server/x".into(),
//!     server_id: None, revision: None, outcome: AuditOutcome::Success,
//!     details: serde_json::Value::Null,
//! };
//! let r1 = AuditRecord::chain(1, AUDIT_GENESIS, entry.clone(), &key);
//! let r2 = AuditRecord::chain(2, &r1.hash, entry, &key);
//! let legacy = LegacyBound::empty();
//! let mut v = ChainVerifier::new(Some((&key, &legacy)), None);
//! v.push(&r1)?;
//! v.push(&r2)?;
//! let report = v.finish(&r2.head())?;
//! assert_eq!((report.records, report.legacy_records), (2, 0));
//!
//! // Without the key, a link cannot be recomputed: another key does not verify.
//! let other = AuditKey::generate();
//! let mut v = ChainVerifier::new(Some((&other, &legacy)), None);
//! assert!(v.push(&r1).is_err());
//! # Ok::<(), wgm_core::Error>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::digest::Update;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{AuditBreak, ConflictKind};
use crate::model::{
    Actor, AuditEntry, AuditRecord, Change, RevisionNo, RevisionRecord, ServerId, AUDIT_GENESIS,
};
use crate::seal::{SealedSecret, Sealer, SecretKind};
use crate::{Error, Result};

/// Length of an [`AuditKey`] in bytes.
pub const AUDIT_KEY_LEN: usize = 32;
/// Domain separation of the key fingerprint.
const KEY_ID_DOMAIN: &[u8] = b"wgm audit key id v1\0";
/// Domain of the keyed audit links.
const AUDIT_DOMAIN: &[u8] = b"wgm-audit-v2\0";
/// Domain of the unkeyed audit links written before the key existed.
const LEGACY_AUDIT_DOMAIN: &[u8] = b"wgm-audit-v1\0";
/// Domain of the revisions' MACs.
const REVISION_DOMAIN: &[u8] = b"wgm-revision-v1\0";
/// Domain of the legacy bound's digest in the sealed key's associated data.
const BOUND_DOMAIN: &[u8] = b"wgm audit key bound v1\0";

type HmacSha256 = Hmac<Sha256>;

/// The key of a store's audit chain and of its revisions' MACs: 32 random bytes, made
/// once per store and kept in it sealed with the master key ([`StoredAuditKey`]).
///
/// Zeroized on drop; `Debug` shows only a fingerprint ([`AuditKey::id`]).
///
/// ```
/// use wgm_core::integrity::AuditKey;
/// let key = AuditKey::from_bytes([7; 32]);
/// assert_eq!(format!("{key:?}"), format!("AuditKey({}, redacted)", key.id()));
/// assert!(!format!("{key:?}").contains("0707"));
/// ```
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AuditKey {
    bytes: [u8; AUDIT_KEY_LEN],
}

impl AuditKey {
    /// A fresh random key from the operating system's RNG.
    pub fn generate() -> Self {
        Self::generate_with(&mut OsRng)
    }

    /// A fresh random key from `rng` (tests pass a seeded RNG; production uses `OsRng`).
    pub fn generate_with<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; AUDIT_KEY_LEN];
        rng.fill_bytes(&mut bytes);
        Self { bytes }
    }

    /// The key made of exactly these bytes (known-answer tests, conformance suites).
    pub fn from_bytes(bytes: [u8; AUDIT_KEY_LEN]) -> Self {
        Self { bytes }
    }

    /// The non-secret fingerprint of this key: the first 8 bytes of
    /// SHA-256(domain ‖ key), as 16 lowercase hex digits.
    pub fn id(&self) -> String {
        let digest = Sha256::new()
            .chain_update(KEY_ID_DOMAIN)
            .chain_update(self.bytes)
            .finalize();
        hex::encode(&digest[..8])
    }

    /// An HMAC-SHA256 under this key, fed with `domain` first.
    fn mac(&self, domain: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail.
        let mut m = <HmacSha256 as Mac>::new_from_slice(&self.bytes)
            .expect("HMAC accepts keys of any length");
        Mac::update(&mut m, domain);
        m
    }
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditKey({}, redacted)", self.id())
    }
}

/// Feeds what `serde_json` writes straight into a hash or MAC, without a buffer.
struct Feed<'a, D: Update>(&'a mut D);

impl<D: Update> std::io::Write for Feed<'_, D> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Feed the canonical JSON of `value` into `d`. Serializing the model's types cannot fail
/// (their maps have string keys); if it ever did, the bytes fed would differ from a
/// successful serialization, so the link would fail to verify rather than pass.
fn feed_json<D: Update, T: Serialize + ?Sized>(d: &mut D, value: &T) {
    if serde_json::to_writer(Feed(d), value).is_err() {
        // 0xff never occurs in JSON text (UTF-8).
        d.update(&[0xff]);
    }
}

/// Whether two hex texts are equal, in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl AuditRecord {
    /// Number and chain `entry` after a record whose link is `prev_hash`, keyed with
    /// `key`. The stores' commit rules call this inside their transaction.
    ///
    /// ```
    /// use wgm_core::integrity::AuditKey;
    /// use wgm_core::model::*;
    /// let e = AuditEntry {
    ///     at: time::OffsetDateTime::UNIX_EPOCH,
    ///     actor: Actor { user_id: None, label: "local:root".into() },
    ///     action: AuditAction::ServerCreate, object: "server/x".into(),
    ///     server_id: None, revision: None, outcome: AuditOutcome::Success,
    ///     details: serde_json::Value::Null,
    /// };
    /// let key = AuditKey::generate();
    /// let r1 = AuditRecord::chain(1, AUDIT_GENESIS, e.clone(), &key);
    /// let r2 = AuditRecord::chain(2, &r1.hash, e, &key);
    /// assert_eq!(r2.prev_hash, r1.hash);
    /// ```
    pub fn chain(seq: u64, prev_hash: &str, entry: AuditEntry, key: &AuditKey) -> AuditRecord {
        let hash = Self::keyed_hash(seq, prev_hash, &entry, key);
        AuditRecord {
            seq,
            entry,
            prev_hash: prev_hash.to_owned(),
            hash,
        }
    }

    /// The keyed link of a record: HMAC-SHA256 under `key` over the domain
    /// `wgm-audit-v2\0`, `prev_hash` (its ASCII text), `seq` (8 bytes, big-endian) and
    /// the canonical JSON of `entry`, as 64 lowercase hex digits.
    pub fn keyed_hash(seq: u64, prev_hash: &str, entry: &AuditEntry, key: &AuditKey) -> String {
        let mut m = key.mac(AUDIT_DOMAIN);
        Mac::update(&mut m, prev_hash.as_bytes());
        Mac::update(&mut m, &seq.to_be_bytes());
        feed_json(&mut m, entry);
        hex::encode(m.finalize().into_bytes())
    }

    /// The unkeyed link of records written before the store had an audit key: SHA-256
    /// over the domain `wgm-audit-v1\0`, `prev_hash`, `seq` (big-endian) and the
    /// canonical JSON of `entry`. Anyone can compute it, which is why it is accepted only
    /// for the prefix bound into the sealed key ([`LegacyBound`]).
    pub fn legacy_hash(seq: u64, prev_hash: &str, entry: &AuditEntry) -> String {
        let mut h = Sha256::new();
        Digest::update(&mut h, LEGACY_AUDIT_DOMAIN);
        Digest::update(&mut h, prev_hash.as_bytes());
        Digest::update(&mut h, seq.to_be_bytes());
        feed_json(&mut h, entry);
        hex::encode(h.finalize())
    }

    /// This record as a head of the log (`seq`, `hash`).
    pub fn head(&self) -> AuditHead {
        AuditHead {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }
}

/// The MAC of a revision as it is stored (`RevisionRecord::mac`): HMAC-SHA256 under the
/// audit key over the domain `wgm-revision-v1\0` and the canonical JSON of its server,
/// number, author, time, summary and changes (the record without its MAC), as 64
/// lowercase hex digits.
///
/// ```
/// # use wgm_core::integrity::{revision_mac, AuditKey};
/// # fn demo(r: &wgm_core::model::RevisionRecord) {
/// let key = AuditKey::generate();
/// assert_eq!(revision_mac(&key, r).len(), 64);
/// # }
/// ```
pub fn revision_mac(key: &AuditKey, r: &RevisionRecord) -> String {
    /// What the MAC covers, in this order.
    #[derive(Serialize)]
    struct Covered<'a> {
        server_id: ServerId,
        revision: RevisionNo,
        author: &'a Actor,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
        summary: &'a str,
        changes: &'a [Change],
    }
    let mut m = key.mac(REVISION_DOMAIN);
    feed_json(
        &mut m,
        &Covered {
            server_id: r.server_id,
            revision: r.revision,
            author: &r.author,
            at: r.at,
            summary: &r.summary,
            changes: &r.changes,
        },
    );
    hex::encode(m.finalize().into_bytes())
}

/// How a revision read back proved itself ([`check_revision`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevisionIntegrity {
    /// Its MAC verifies under the audit key.
    Keyed,
    /// It carries no MAC and was written before the audit key existed (within the
    /// [`LegacyBound`]): accepted, but nothing proves it unaltered.
    Legacy,
}

/// Check a revision of `server` read back from the store: it belongs to `server`, and its
/// MAC verifies under the audit key — or it has none and lies within the legacy bound.
/// `key` is `None` while the store has no audit key (every revision must then be
/// unkeyed: a MAC without a key means the key was removed).
///
/// # Errors
///
/// [`Error::Conflict`] with [`ConflictKind::RevisionAltered`] naming the revision and
/// the check that failed.
///
/// ```
/// use wgm_core::integrity::{check_revision, AuditKey, LegacyBound, RevisionIntegrity};
/// # fn demo(mut r: wgm_core::model::RevisionRecord) {
/// let key = AuditKey::generate();
/// r.mac = Some(wgm_core::integrity::revision_mac(&key, &r));
/// let legacy = LegacyBound::empty();
/// assert_eq!(check_revision(Some((&key, &legacy)), r.server_id, &r).unwrap(), RevisionIntegrity::Keyed);
/// r.summary.push('!');
/// assert!(check_revision(Some((&key, &legacy)), r.server_id, &r).is_err());
/// # }
/// ```
pub fn check_revision(
    key: Option<(&AuditKey, &LegacyBound)>,
    server: ServerId,
    r: &RevisionRecord,
) -> Result<RevisionIntegrity> {
    let altered = |reason: &'static str| {
        Error::conflict_of(ConflictKind::RevisionAltered {
            server: r.server_id.0,
            revision: r.revision.0,
            reason,
        })
    };
    if r.server_id != server {
        return Err(Error::conflict_of(ConflictKind::RevisionAltered {
            server: server.0,
            revision: r.revision.0,
            reason: "it belongs to another server",
        }));
    }
    match (key, &r.mac) {
        (None, None) => Ok(RevisionIntegrity::Legacy),
        (None, Some(_)) => Err(altered(
            "it carries a MAC, but the store has no audit key (the key was removed)",
        )),
        (Some((_, legacy)), None) => {
            if legacy.is_legacy_revision(server, r.revision) {
                Ok(RevisionIntegrity::Legacy)
            } else {
                Err(altered(
                    "it carries no MAC although it was written after the audit key",
                ))
            }
        }
        (Some((k, _)), Some(mac)) => {
            if same(&revision_mac(k, r), mac) {
                Ok(RevisionIntegrity::Keyed)
            } else {
                Err(altered("its MAC does not verify"))
            }
        }
    }
}

/// What a store held when its audit key was created: the unkeyed prefix of the audit
/// log (up to record `audit_seq`, whose link is `audit_hash`) and, per server, the
/// revisions without a MAC (up to the head it had then). Bound into the associated data
/// of the sealed key ([`StoredAuditKey`]), so it cannot be moved without the key failing
/// to open. A store created by this version has the empty bound.
///
/// ```
/// use wgm_core::integrity::LegacyBound;
/// use wgm_core::model::{RevisionNo, ServerId};
/// let s = ServerId::new_random();
/// let mut b = LegacyBound::empty();
/// b.revisions.insert(s, RevisionNo(3));
/// assert!(b.is_legacy_revision(s, RevisionNo(3)));
/// assert!(!b.is_legacy_revision(s, RevisionNo(4)));
/// assert!(!b.is_legacy_revision(ServerId::new_random(), RevisionNo(1)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyBound {
    /// The last audit record written without the key (0: none).
    pub audit_seq: u64,
    /// Its link ([`AUDIT_GENESIS`] when there is none).
    pub audit_hash: String,
    /// Per server that existed (deleted ones included), its head revision: revisions up
    /// to it carry no MAC.
    #[serde(default)]
    pub revisions: BTreeMap<ServerId, RevisionNo>,
}

impl LegacyBound {
    /// Nothing before the key: the bound of a store created by this version.
    pub fn empty() -> LegacyBound {
        LegacyBound {
            audit_seq: 0,
            audit_hash: AUDIT_GENESIS.to_owned(),
            revisions: BTreeMap::new(),
        }
    }

    /// Whether revision `rev` of `server` was written before the key (so may lack a MAC).
    pub fn is_legacy_revision(&self, server: ServerId, rev: RevisionNo) -> bool {
        self.revisions.get(&server).is_some_and(|h| rev <= *h)
    }

    /// The record id the sealed key is bound to: `audit_key/` and the hex SHA-256 of an
    /// unambiguous encoding of the bound (every part length-prefixed or fixed-size,
    /// servers in order).
    fn record_id(&self) -> String {
        let mut h = Sha256::new();
        Digest::update(&mut h, BOUND_DOMAIN);
        Digest::update(&mut h, self.audit_seq.to_be_bytes());
        Digest::update(&mut h, (self.audit_hash.len() as u64).to_be_bytes());
        Digest::update(&mut h, self.audit_hash.as_bytes());
        Digest::update(&mut h, (self.revisions.len() as u64).to_be_bytes());
        for (s, r) in &self.revisions {
            Digest::update(&mut h, s.0.as_bytes());
            Digest::update(&mut h, r.0.to_be_bytes());
        }
        format!("audit_key/{}", hex::encode(h.finalize()))
    }
}

/// A store's audit key as the store keeps it: sealed with the master key
/// ([`SecretKind::AuditKey`]), bound to its [`LegacyBound`].
///
/// ```
/// use wgm_core::integrity::{AuditKey, LegacyBound, StoredAuditKey};
/// use wgm_core::seal::{MasterKey, Sealer};
/// let sealer = Sealer::new(MasterKey::generate());
/// let key = AuditKey::generate();
/// let stored = StoredAuditKey::seal(&sealer, &key, LegacyBound::empty())?;
/// assert_eq!(stored.open(&sealer)?.id(), key.id());
///
/// // Moving the bound (to pass forged records off as old ones) breaks the key.
/// let mut moved = stored.clone();
/// moved.legacy.audit_seq = 1000;
/// assert_eq!(moved.open(&sealer).unwrap_err().code(), "sealed");
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAuditKey {
    /// The key, sealed with the master key (associated data: kind `audit_key` and a
    /// digest of `legacy`).
    pub sealed: SealedSecret,
    /// What existed before the key.
    pub legacy: LegacyBound,
}

impl StoredAuditKey {
    /// Seal `key` with `legacy` bound to it.
    ///
    /// # Errors
    ///
    /// [`Error::Sealed`] if sealing fails.
    pub fn seal(sealer: &Sealer, key: &AuditKey, legacy: LegacyBound) -> Result<StoredAuditKey> {
        let sealed = sealer.seal(SecretKind::AuditKey, &legacy.record_id(), &key.bytes)?;
        Ok(StoredAuditKey { sealed, legacy })
    }

    /// Open the key.
    ///
    /// # Errors
    ///
    /// [`Error::Sealed`] when the master key is wrong or missing, or the sealed value or
    /// its bound was changed.
    pub fn open(&self, sealer: &Sealer) -> Result<AuditKey> {
        let plain = sealer.open(SecretKind::AuditKey, &self.legacy.record_id(), &self.sealed)?;
        if plain.len() != AUDIT_KEY_LEN {
            return Err(Error::sealed(
                "audit_key: opened value has the wrong length for a key",
            ));
        }
        let mut bytes = Zeroizing::new([0u8; AUDIT_KEY_LEN]);
        bytes.copy_from_slice(&plain);
        Ok(AuditKey::from_bytes(*bytes))
    }

    /// The same key and bound sealed with the sealer's current master key (master-key
    /// rotation): the key itself does not change, so every link keeps verifying.
    ///
    /// # Errors
    ///
    /// As [`StoredAuditKey::open`].
    pub fn reseal(&self, sealer: &Sealer) -> Result<StoredAuditKey> {
        let key = self.open(sealer)?;
        Self::seal(sealer, &key, self.legacy.clone())
    }
}

/// A head of the audit log: the sequence number and link of its last record, written
/// `SEQ:HASH` (`0:000…0` for an empty log). Exported (printed by `wgm audit --verify`,
/// logged after every commit), it lets a later verification prove that the log still
/// holds that record unchanged ([`ChainVerifier::new`]'s `expect`).
///
/// ```
/// use wgm_core::integrity::AuditHead;
/// let h: AuditHead = format!("12:{}", "ab".repeat(32)).parse()?;
/// assert_eq!(h.seq, 12);
/// assert_eq!(h.to_string(), format!("12:{}", "ab".repeat(32)));
/// assert!("12".parse::<AuditHead>().is_err());
/// assert!("x:00".parse::<AuditHead>().is_err());
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AuditHead {
    /// The last record's sequence number (0: the log is empty).
    pub seq: u64,
    /// Its link (64 lowercase hex digits; [`AUDIT_GENESIS`] for an empty log).
    pub hash: String,
}

impl AuditHead {
    /// The head of an empty log.
    pub fn genesis() -> AuditHead {
        AuditHead {
            seq: 0,
            hash: AUDIT_GENESIS.to_owned(),
        }
    }
}

impl fmt::Display for AuditHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

impl FromStr for AuditHead {
    type Err = Error;

    /// Parse `SEQ:HASH`: a decimal sequence number, a colon, 64 lowercase hex digits.
    fn from_str(s: &str) -> Result<AuditHead> {
        const FIELD: &str = "audit.head";
        const RULE: &str = "must be SEQ:HASH as `wgm audit --verify` prints it (a decimal number, ':', 64 lowercase hex digits)";
        let (seq, hash) = s.split_once(':').ok_or(Error::invalid(FIELD, RULE))?;
        // Digits only (`u64::from_str` would take a sign); empty and too large are
        // refused by the parse below.
        if !seq.bytes().all(|b| b.is_ascii_digit())
            || hash.len() != 64
            || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(Error::invalid(FIELD, RULE));
        }
        let seq = seq.parse().map_err(|_| Error::invalid(FIELD, RULE))?;
        Ok(AuditHead {
            seq,
            hash: hash.to_owned(),
        })
    }
}

impl Serialize for AuditHead {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AuditHead {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The result of verifying the audit chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerification {
    /// Number of records checked.
    pub records: u64,
    /// How many of them are unkeyed: written before the store had an audit key, accepted
    /// as the prefix bound into the sealed key (0 for a store created by this version).
    pub legacy_records: u64,
    /// Sequence number of the last record (0 for an empty log).
    pub head_seq: u64,
    /// Link of the last record (export it, with `head_seq`, to detect a later rewrite).
    pub head_hash: String,
    /// The head as `SEQ:HASH`, as `wgm audit --verify --expect` takes it.
    pub head: AuditHead,
}

/// Verifies an audit log record by record, oldest first, then against the stored head.
///
/// For each record: its sequence number follows the previous one, its `prev_hash` is the
/// previous link, and its own link verifies — keyed (HMAC under the audit key) after the
/// [`LegacyBound`], unkeyed (SHA-256) up to it, the last unkeyed link being the one the
/// bound pins. Without a key (a store that never had one) every link must be unkeyed.
/// Then [`finish`](ChainVerifier::finish): the last record must be the stored head, the
/// log must reach the bound, and an `expect`ed head must have been met with its hash.
///
/// ```
/// # use wgm_core::integrity::*;
/// # use wgm_core::model::*;
/// # let e = AuditEntry { at: time::OffsetDateTime::UNIX_EPOCH, actor: Actor { user_id: None, label: "local:root".into() },
/// #     action: AuditAction::ServerCreate, object: "x".into(), server_id: None, revision: None,
/// #     outcome: AuditOutcome::Success, details: serde_json::Value::Null };
/// let key = AuditKey::generate();
/// let legacy = LegacyBound::empty();
/// let r1 = AuditRecord::chain(1, AUDIT_GENESIS, e.clone(), &key);
/// let r2 = AuditRecord::chain(2, &r1.hash, e, &key);
/// // Record 2 deleted, the stored head still says 2: caught.
/// let mut v = ChainVerifier::new(Some((&key, &legacy)), None);
/// v.push(&r1)?;
/// assert!(v.finish(&r2.head()).is_err());
/// // The head rewritten too: only an exported head catches it.
/// let mut v = ChainVerifier::new(Some((&key, &legacy)), Some(r2.head()));
/// v.push(&r1)?;
/// assert!(v.finish(&r1.head()).is_err());
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Debug)]
pub struct ChainVerifier<'k> {
    key: Option<(&'k AuditKey, &'k LegacyBound)>,
    expect: Option<AuditHead>,
    expect_met: bool,
    last: AuditHead,
    records: u64,
    legacy_records: u64,
}

fn broken(b: AuditBreak) -> Error {
    Error::conflict_of(ConflictKind::AuditChainBroken(b))
}

impl<'k> ChainVerifier<'k> {
    /// A verifier with the store's opened audit key and its bound (`None` when the store
    /// has no key yet) and, optionally, a head exported earlier that must still be in the
    /// chain.
    pub fn new(key: Option<(&'k AuditKey, &'k LegacyBound)>, expect: Option<AuditHead>) -> Self {
        ChainVerifier {
            key,
            expect,
            expect_met: false,
            last: AuditHead::genesis(),
            records: 0,
            legacy_records: 0,
        }
    }

    /// Check the next record.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] with [`ConflictKind::AuditChainBroken`] naming the record and
    /// how it is broken: a gap ([`AuditBreak::Missing`]), a wrong previous link
    /// ([`AuditBreak::PreviousHash`]), a link that does not verify
    /// ([`AuditBreak::Altered`]), an unkeyed link after the bound
    /// ([`AuditBreak::Unkeyed`]), the bound's record changed ([`AuditBreak::Legacy`]) or
    /// the expected head's record with another hash ([`AuditBreak::Expected`]).
    pub fn push(&mut self, r: &AuditRecord) -> Result<()> {
        let want = self.last.seq.saturating_add(1);
        if r.seq != want {
            return Err(broken(AuditBreak::Missing {
                expected: want,
                found: r.seq,
            }));
        }
        if r.prev_hash != self.last.hash {
            return Err(broken(AuditBreak::PreviousHash { seq: r.seq }));
        }
        let legacy_link = || AuditRecord::legacy_hash(r.seq, &r.prev_hash, &r.entry);
        match self.key {
            Some((key, bound)) if r.seq > bound.audit_seq => {
                if !same(
                    &AuditRecord::keyed_hash(r.seq, &r.prev_hash, &r.entry, key),
                    &r.hash,
                ) {
                    return Err(broken(if same(&legacy_link(), &r.hash) {
                        AuditBreak::Unkeyed { seq: r.seq }
                    } else {
                        AuditBreak::Altered { seq: r.seq }
                    }));
                }
            }
            _ => {
                if !same(&legacy_link(), &r.hash) {
                    return Err(broken(AuditBreak::Altered { seq: r.seq }));
                }
                if let Some((_, bound)) = self.key {
                    if r.seq == bound.audit_seq && !same(&r.hash, &bound.audit_hash) {
                        return Err(broken(AuditBreak::Legacy { seq: r.seq }));
                    }
                }
                self.legacy_records += 1;
            }
        }
        if let Some(e) = &self.expect {
            if e.seq == r.seq {
                if !same(&e.hash, &r.hash) {
                    return Err(broken(AuditBreak::Expected { seq: e.seq }));
                }
                self.expect_met = true;
            }
        }
        self.records += 1;
        self.last = r.head();
        Ok(())
    }

    /// Finish after the last record: it must be `stored`, the head the store keeps; the
    /// log must reach the legacy bound; an expected head must have been met.
    ///
    /// # Errors
    ///
    /// [`AuditBreak::Head`], [`AuditBreak::Legacy`] or [`AuditBreak::Expected`] (in
    /// [`ConflictKind::AuditChainBroken`]).
    pub fn finish(self, stored: &AuditHead) -> Result<AuditVerification> {
        if self.last.seq != stored.seq || !same(&self.last.hash, &stored.hash) {
            return Err(broken(AuditBreak::Head {
                stored: stored.seq,
                found: self.last.seq,
            }));
        }
        if let Some((_, bound)) = self.key {
            if self.last.seq < bound.audit_seq {
                return Err(broken(AuditBreak::Legacy {
                    seq: bound.audit_seq,
                }));
            }
        }
        if let Some(e) = &self.expect {
            let genesis = e.seq == 0 && same(&e.hash, AUDIT_GENESIS);
            if !self.expect_met && !genesis {
                return Err(broken(AuditBreak::Expected { seq: e.seq }));
            }
        }
        Ok(AuditVerification {
            records: self.records,
            legacy_records: self.legacy_records,
            head_seq: self.last.seq,
            head_hash: self.last.hash.clone(),
            head: self.last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditAction;
    use crate::model::{AuditOutcome, UserId};
    use crate::seal::MasterKey;

    fn entry(n: u32) -> AuditEntry {
        AuditEntry {
            at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            actor: Actor {
                user_id: Some(UserId(uuid::Uuid::from_u128(7))),
                label: "user:alice".into(),
            },
            action: AuditAction::PeerAdd,
            object: format!("server/s/peer/{n}"),
            server_id: Some(ServerId(uuid::Uuid::from_u128(1))),
            revision: Some(RevisionNo(u64::from(n))),
            outcome: AuditOutcome::Success,
            details: serde_json::json!({ "n": n }),
        }
    }

    fn key() -> AuditKey {
        AuditKey::from_bytes(*b"0123456789abcdef0123456789abcdef")
    }

    fn keyed(n: u64, k: &AuditKey) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 1..=n {
            let prev = out
                .last()
                .map_or(AUDIT_GENESIS, |r| r.hash.as_str())
                .to_owned();
            out.push(AuditRecord::chain(i, &prev, entry(i as u32), k));
        }
        out
    }

    fn legacy(n: u64) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 1..=n {
            let prev = out
                .last()
                .map_or(AUDIT_GENESIS, |r| r.hash.as_str())
                .to_owned();
            let e = entry(i as u32);
            let hash = AuditRecord::legacy_hash(i, &prev, &e);
            out.push(AuditRecord {
                seq: i,
                entry: e,
                prev_hash: prev,
                hash,
            });
        }
        out
    }

    fn verify(
        key: Option<(&AuditKey, &LegacyBound)>,
        expect: Option<AuditHead>,
        records: &[AuditRecord],
        stored: &AuditHead,
    ) -> Result<AuditVerification> {
        let mut v = ChainVerifier::new(key, expect);
        for r in records {
            v.push(r)?;
        }
        v.finish(stored)
    }

    fn brk(r: Result<AuditVerification>) -> AuditBreak {
        match r {
            Err(Error::Conflict {
                kind: ConflictKind::AuditChainBroken(b),
            }) => b,
            other => panic!("not a broken chain: {other:?}"),
        }
    }

    /// Known answers: a change to the link's layout, domain, key use or entry encoding
    /// changes these, and would make every stored chain unverifiable.
    #[test]
    fn known_answer_links() {
        let e = entry(1);
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"at":"2023-11-14T22:13:20Z","actor":{"user_id":"00000000-0000-0000-0000-000000000007","label":"user:alice"},"action":"peer.add","object":"server/s/peer/1","server_id":"00000000-0000-0000-0000-000000000001","revision":1,"outcome":"success","details":{"n":1}}"#
        );
        // Computed independently (Python's hmac and hashlib over the same bytes).
        let k = key();
        assert_eq!(
            AuditRecord::keyed_hash(1, AUDIT_GENESIS, &e, &k),
            "6e030bd85b395665208180d32656bdf8eb5c3846153e05b36ec9f9055016b6e4"
        );
        // The unkeyed link of older versions, unchanged (their logs must still verify).
        assert_eq!(
            AuditRecord::legacy_hash(1, AUDIT_GENESIS, &e),
            "425b4b1a01c831db1ce7900af3679497155ce9e9137e0e44b5b9f47891e5e8c9"
        );
        assert_eq!(k.id(), "995a796ccc33668e");
        let r = RevisionRecord {
            server_id: ServerId(uuid::Uuid::from_u128(1)),
            revision: RevisionNo(2),
            author: Actor {
                user_id: None,
                label: "local:root".into(),
            },
            at: e.at,
            summary: "add peer a".into(),
            changes: Vec::new(),
            mac: Some("ignored: the MAC does not cover itself".into()),
        };
        assert_eq!(
            revision_mac(&k, &r),
            "f1cc57fde434b62be5a6a056186448f83c2268d2c0db8616ee74e84ee401716a"
        );
    }

    /// The keyed link is an HMAC as specified: recomputed here with the `hmac` crate
    /// from the documented layout.
    #[test]
    fn keyed_link_is_hmac_sha256_of_the_documented_layout() {
        let e = entry(3);
        let prev = "ab".repeat(32);
        let mut m = HmacSha256::new_from_slice(b"0123456789abcdef0123456789abcdef").unwrap();
        Mac::update(&mut m, b"wgm-audit-v2\0");
        Mac::update(&mut m, prev.as_bytes());
        Mac::update(&mut m, &3u64.to_be_bytes());
        Mac::update(&mut m, serde_json::to_string(&e).unwrap().as_bytes());
        assert_eq!(
            AuditRecord::keyed_hash(3, &prev, &e, &key()),
            hex::encode(m.finalize().into_bytes())
        );
        // Each input matters.
        let base = AuditRecord::keyed_hash(3, &prev, &e, &key());
        assert_ne!(AuditRecord::keyed_hash(4, &prev, &e, &key()), base);
        assert_ne!(AuditRecord::keyed_hash(3, AUDIT_GENESIS, &e, &key()), base);
        assert_ne!(AuditRecord::keyed_hash(3, &prev, &entry(4), &key()), base);
        assert_ne!(
            AuditRecord::keyed_hash(3, &prev, &e, &AuditKey::from_bytes([1; 32])),
            base
        );
        assert_ne!(AuditRecord::legacy_hash(3, &prev, &e), base);
    }

    #[test]
    fn a_keyed_chain_verifies_and_reports_its_head() {
        let k = key();
        let b = LegacyBound::empty();
        let rs = keyed(5, &k);
        let v = verify(Some((&k, &b)), Some(rs[2].head()), &rs, &rs[4].head()).unwrap();
        assert_eq!((v.records, v.legacy_records, v.head_seq), (5, 0, 5));
        assert_eq!(v.head, rs[4].head());
        assert_eq!(v.head_hash, rs[4].hash);
        // An empty log.
        let v = verify(Some((&k, &b)), None, &[], &AuditHead::genesis()).unwrap();
        assert_eq!((v.records, v.head), (0, AuditHead::genesis()));
    }

    #[test]
    fn every_kind_of_tampering_is_named() {
        let k = key();
        let b = LegacyBound::empty();
        let some = Some((&k, &b));
        let rs = keyed(5, &k);
        let head = rs[4].head();
        // Altered entry.
        let mut t = rs.clone();
        t[1].entry.actor.label = "user:mallory".into();
        assert_eq!(
            brk(verify(some, None, &t, &head)),
            AuditBreak::Altered { seq: 2 }
        );
        // Deleted in the middle.
        let mut t = rs.clone();
        t.remove(2);
        assert_eq!(
            brk(verify(some, None, &t, &head)),
            AuditBreak::Missing {
                expected: 3,
                found: 4
            }
        );
        // Relinked.
        let mut t = rs.clone();
        t[3].prev_hash = rs[1].hash.clone();
        assert_eq!(
            brk(verify(some, None, &t, &head)),
            AuditBreak::PreviousHash { seq: 4 }
        );
        // The newest 1 and 3 deleted: the stored head says 5.
        for n in [4, 2] {
            assert_eq!(
                brk(verify(some, None, &rs[..n], &head)),
                AuditBreak::Head {
                    stored: 5,
                    found: n as u64
                }
            );
        }
        // The stored head's link rewritten (same number).
        let mut forged = head.clone();
        forged.hash = "cd".repeat(32);
        assert_eq!(
            brk(verify(some, None, &rs, &forged)),
            AuditBreak::Head {
                stored: 5,
                found: 5
            }
        );
        // Deleted and the head rewritten: passes, but not against an exported head.
        assert!(verify(some, None, &rs[..2], &rs[1].head()).is_ok());
        assert_eq!(
            brk(verify(some, Some(head.clone()), &rs[..2], &rs[1].head())),
            AuditBreak::Expected { seq: 5 }
        );
        // An exported head whose record was rewritten (another hash at that seq).
        let mut other = rs[2].head();
        other.hash = "cd".repeat(32);
        assert_eq!(
            brk(verify(some, Some(other), &rs, &head)),
            AuditBreak::Expected { seq: 3 }
        );
        // The genesis head is always in the chain.
        assert!(verify(some, Some(AuditHead::genesis()), &rs, &head).is_ok());
        let mut g = AuditHead::genesis();
        g.hash = "cd".repeat(32);
        assert!(verify(some, Some(g), &rs, &head).is_err());
        // Recomputed without the key, as an unkeyed chain after an edit.
        let mut t = legacy(5);
        t[0].entry.object = "elsewhere".into();
        let mut prev = AUDIT_GENESIS.to_owned();
        for r in &mut t {
            r.prev_hash = prev.clone();
            r.hash = AuditRecord::legacy_hash(r.seq, &prev, &r.entry);
            prev = r.hash.clone();
        }
        assert_eq!(
            brk(verify(some, None, &t, &t[4].head())),
            AuditBreak::Unkeyed { seq: 1 }
        );
        // Recomputed with another key.
        let t = keyed(5, &AuditKey::from_bytes([9; 32]));
        assert_eq!(
            brk(verify(some, None, &t, &t[4].head())),
            AuditBreak::Altered { seq: 1 }
        );
    }

    /// A store upgraded from a version without the key: its unkeyed records are accepted
    /// as the prefix the bound names, and only that prefix.
    #[test]
    fn the_legacy_prefix_rule() {
        let k = key();
        let mut rs = legacy(3);
        let bound = LegacyBound {
            audit_seq: 3,
            audit_hash: rs[2].hash.clone(),
            revisions: BTreeMap::new(),
        };
        let some = Some((&k, &bound));
        // Keyed records after the prefix.
        for i in 4..=5 {
            let prev = rs.last().unwrap().hash.clone();
            rs.push(AuditRecord::chain(i, &prev, entry(i as u32), &k));
        }
        let head = rs[4].head();
        let v = verify(some, None, &rs, &head).unwrap();
        assert_eq!((v.records, v.legacy_records), (5, 3));

        // No key at all (a store that never had one): unkeyed records only.
        let v = verify(None, None, &rs[..3], &rs[2].head()).unwrap();
        assert_eq!(v.legacy_records, 3);
        assert_eq!(
            brk(verify(None, None, &rs, &head)),
            AuditBreak::Altered { seq: 4 }
        );

        // An unkeyed record after a keyed one (past the bound).
        let mut t = rs.clone();
        t[4].hash = AuditRecord::legacy_hash(5, &t[4].prev_hash, &t[4].entry);
        assert_eq!(
            brk(verify(some, None, &t, &t[4].head())),
            AuditBreak::Unkeyed { seq: 5 }
        );

        // The unkeyed prefix rewritten (recomputed from an edited record 2 through 3):
        // record 3's link is no longer the one the bound pins.
        let mut t = rs.clone();
        t[1].entry.object = "elsewhere".into();
        t[1].hash = AuditRecord::legacy_hash(2, &t[1].prev_hash, &t[1].entry);
        t[2].prev_hash = t[1].hash.clone();
        t[2].hash = AuditRecord::legacy_hash(3, &t[2].prev_hash, &t[2].entry);
        assert_eq!(
            brk(verify(some, None, &t[..3], &t[2].head())),
            AuditBreak::Legacy { seq: 3 }
        );

        // The log truncated into the prefix, head rewritten to match.
        assert_eq!(
            brk(verify(some, None, &rs[..2], &rs[1].head())),
            AuditBreak::Legacy { seq: 3 }
        );

        // A bound moved forward (to pass forged unkeyed records off as old) does not
        // open: see `a_moved_bound_does_not_open`.
    }

    fn reason(r: Result<RevisionIntegrity>) -> &'static str {
        match r {
            Err(Error::Conflict {
                kind: ConflictKind::RevisionAltered { reason, .. },
            }) => reason,
            other => panic!("not an altered revision: {other:?}"),
        }
    }

    /// Revisions: keyed after the bound, unkeyed within it, never moved between servers.
    #[test]
    fn revisions_are_checked_by_the_same_prefix_rule() {
        let k = key();
        let s = ServerId(uuid::Uuid::from_u128(1));
        let rev = |n: u64| RevisionRecord {
            server_id: s,
            revision: RevisionNo(n),
            author: Actor {
                user_id: None,
                label: "local:root".into(),
            },
            at: OffsetDateTime::UNIX_EPOCH,
            summary: format!("revision {n}"),
            changes: Vec::new(),
            mac: None,
        };
        let keyed = |n: u64| {
            let mut r = rev(n);
            r.mac = Some(revision_mac(&k, &r));
            r
        };
        let mut bound = LegacyBound::empty();
        bound.revisions.insert(s, RevisionNo(2));
        let some = Some((&k, &bound));
        assert_eq!(
            check_revision(some, s, &keyed(3)).unwrap(),
            RevisionIntegrity::Keyed
        );
        assert_eq!(
            check_revision(some, s, &rev(2)).unwrap(),
            RevisionIntegrity::Legacy
        );
        assert_eq!(
            check_revision(some, s, &rev(1)).unwrap(),
            RevisionIntegrity::Legacy
        );
        // A keyed one within the bound is fine too (it verifies).
        assert_eq!(
            check_revision(some, s, &keyed(1)).unwrap(),
            RevisionIntegrity::Keyed
        );
        assert_eq!(
            reason(check_revision(some, s, &rev(3))),
            "it carries no MAC although it was written after the audit key"
        );
        // Another server's bound does not cover this one's revisions.
        let other = ServerId(uuid::Uuid::from_u128(2));
        let mut r = rev(1);
        r.server_id = other;
        assert_eq!(
            reason(check_revision(some, other, &r)),
            "it carries no MAC although it was written after the audit key"
        );
        // Each covered field matters.
        // (The changes are covered too: the known answer and the SQL tests.)
        let edits: [fn(&mut RevisionRecord); 4] = [
            |r| r.revision = RevisionNo(4),
            |r| r.author.label = "user:mallory".into(),
            |r| r.at += time::Duration::nanoseconds(1),
            |r| r.summary.push('!'),
        ];
        for edit in edits {
            let mut r = keyed(3);
            edit(&mut r);
            assert_eq!(
                reason(check_revision(some, s, &r)),
                "its MAC does not verify"
            );
        }
        // Moved to another server, MAC and all.
        assert_eq!(
            reason(check_revision(some, other, &keyed(3))),
            "it belongs to another server"
        );
        // Another key.
        let k2 = AuditKey::from_bytes([3; 32]);
        assert_eq!(
            reason(check_revision(Some((&k2, &bound)), s, &keyed(3))),
            "its MAC does not verify"
        );
        // No key in the store: unkeyed revisions only.
        assert_eq!(
            check_revision(None, s, &rev(7)).unwrap(),
            RevisionIntegrity::Legacy
        );
        assert_eq!(
            reason(check_revision(None, s, &keyed(3))),
            "it carries a MAC, but the store has no audit key (the key was removed)"
        );
    }

    #[test]
    fn a_moved_bound_does_not_open() {
        let sealer = Sealer::new(MasterKey::generate());
        let k = key();
        let mut b = LegacyBound::empty();
        b.revisions
            .insert(ServerId(uuid::Uuid::from_u128(1)), RevisionNo(2));
        let stored = StoredAuditKey::seal(&sealer, &k, b.clone()).unwrap();
        assert_eq!(stored.open(&sealer).unwrap().id(), k.id());
        let moves: [fn(&mut LegacyBound); 4] = [
            |b| b.audit_seq += 1,
            |b| b.audit_hash = "cd".repeat(32),
            |b| {
                b.revisions
                    .insert(ServerId(uuid::Uuid::from_u128(1)), RevisionNo(3));
            },
            |b| {
                b.revisions
                    .insert(ServerId(uuid::Uuid::from_u128(2)), RevisionNo(1));
            },
        ];
        for m in moves {
            let mut moved = stored.clone();
            m(&mut moved.legacy);
            assert_eq!(moved.open(&sealer).unwrap_err().code(), "sealed");
        }
        // Another master key does not open it; a rotation re-seals it unchanged.
        let other = Sealer::new(MasterKey::generate());
        assert_eq!(stored.open(&other).unwrap_err().code(), "sealed");
        let old = MasterKey::generate();
        let s1 = Sealer::new(old.clone());
        let stored = StoredAuditKey::seal(&s1, &k, b).unwrap();
        let rotated = Sealer::new(MasterKey::generate()).with_previous(old);
        let resealed = stored.reseal(&rotated).unwrap();
        assert!(!rotated.needs_reseal(&resealed.sealed));
        assert_eq!(resealed.legacy, stored.legacy);
        assert_eq!(resealed.open(&rotated).unwrap().id(), k.id());
    }

    #[test]
    fn the_key_never_shows() {
        let k = AuditKey::from_bytes([0xab; 32]);
        let d = format!("{k:?}");
        assert!(!d.contains("abab") && !d.contains("171"), "{d}");
        assert!(d.contains(&k.id()));
        let sealer = Sealer::new(MasterKey::generate());
        let stored = StoredAuditKey::seal(&sealer, &k, LegacyBound::empty()).unwrap();
        let d = format!("{stored:?}");
        assert!(!d.contains("abab"), "{d}");
    }

    #[test]
    fn heads_parse_strictly() {
        let h = "ab".repeat(32);
        assert_eq!(
            format!("7:{h}").parse::<AuditHead>().unwrap(),
            AuditHead {
                seq: 7,
                hash: h.clone()
            }
        );
        for bad in [
            String::new(),
            "7".to_owned(),
            format!(":{h}"),
            format!("-7:{h}"),
            format!("+7:{h}"),
            format!("7:{}", h.to_uppercase()),
            format!("7:{}", &h[1..]),
            format!("7:{h}0"),
            format!("7: {h}"),
            format!("99999999999999999999:{h}"),
        ] {
            let e = bad.parse::<AuditHead>().unwrap_err();
            assert!(e.to_string().contains("audit.head"), "{bad}: {e}");
        }
        let max = format!("{}:{h}", u64::MAX);
        assert_eq!(max.parse::<AuditHead>().unwrap().seq, u64::MAX);
        let v: AuditHead = serde_json::from_str(&format!("\"3:{h}\"")).unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), format!("\"3:{h}\""));
    }
}
