//! The backup file format: a [`Snapshot`] sealed with the master key.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "WGMBACK\n"
//!      8     2  format version, big-endian (BACKUP_FORMAT_VERSION)
//!     10     4  schema version: the snapshot layout, big-endian (SNAPSHOT_VERSION)
//!     14     8  the sealing master key's id (its non-secret fingerprint)
//!     22    24  nonce
//!     46     …  XChaCha20-Poly1305 ciphertext of the snapshot's JSON, raw-deflate
//!               compressed (format 2; format 1, which this build still reads, did
//!               not compress), with its 16-byte tag
//! ```
//!
//! The header (the first 46 bytes) is plain, so a reader can tell what a file is and
//! which key sealed it without the key, and it is the associated data of the ciphertext:
//! a changed header, a changed or missing byte of the body and a file sealed with another
//! key are all refused. The cipher key is derived from the master key
//! (HMAC-SHA256 under the master key of `wgm backup v1`), so it is never the key that seals
//! the store's secrets. Sealed values inside the snapshot stay sealed: a backup opens
//! with the master key, and the store it restores needs the same master key.
//!
//! The JSON is compressed before it is sealed because revision bodies repeat whole peers
//! (before and after each change): a 10 000-peer, 50 000-revision store shrinks several
//! times over. Compressing before encrypting leaks nothing here: the only secrets inside
//! are already sealed (incompressible ciphertext), and the body is authenticated before
//! it is decompressed, so only the holder of the master key can make a file that
//! decompresses at all; its decompressed size is bounded anyway ([`MAX_SNAPSHOT_JSON`]).
//! Only encoding and decoding live here; writing the bytes to a file is the caller's.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{Snapshot, SNAPSHOT_VERSION};
use crate::seal::MasterKey;
use crate::{Error, Result};

/// The first bytes of every backup file.
pub const BACKUP_MAGIC: &[u8; 8] = b"WGMBACK\n";
/// The version of the file format this build writes (it also reads version 1).
pub const BACKUP_FORMAT_VERSION: u16 = 2;
/// The oldest file format version this build reads (uncompressed JSON).
const FIRST_FORMAT_VERSION: u16 = 1;
/// The largest snapshot JSON a backup may decompress to (16 GiB).
pub const MAX_SNAPSHOT_JSON: u64 = 16 << 30;

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 8 + 2 + 4 + 8 + NONCE_LEN;

/// What a backup's plain header says ([`inspect`]): readable without the key.
///
/// ```
/// use wgm_core::seal::MasterKey;
/// use wgm_core::store::backup::{encode, inspect};
/// use wgm_core::store::Snapshot;
/// let key = MasterKey::generate();
/// let bytes = encode(&Snapshot::empty(), &key)?;
/// let h = inspect(&bytes)?;
/// assert_eq!(h.key_id, key.key_id().to_string());
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupHeader {
    /// The format version ([`BACKUP_FORMAT_VERSION`]).
    pub format_version: u16,
    /// The snapshot layout's version ([`SNAPSHOT_VERSION`]).
    pub schema_version: u32,
    /// The id of the master key that sealed it (16 hex digits).
    pub key_id: String,
}

fn cipher(key: &MasterKey) -> Result<XChaCha20Poly1305> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose_bytes())
        .map_err(|_| Error::sealed("the backup key could not be derived"))?;
    mac.update(b"wgm backup v1");
    let derived = Zeroizing::new(<[u8; 32]>::from(mac.finalize().into_bytes()));
    Ok(XChaCha20Poly1305::new(Key::from_slice(&derived[..])))
}

/// The snapshot's JSON, raw-deflate compressed as it is written (the whole JSON is never
/// held at once).
fn compress(snapshot: &Snapshot) -> Result<Vec<u8>> {
    use std::io::Write as _;
    let z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    // serde_json writes in small pieces; the encoder is fast only on large ones.
    let mut w = std::io::BufWriter::with_capacity(1 << 16, z);
    serde_json::to_writer(&mut w, snapshot)
        .map_err(|_| Error::invalid("snapshot", "must encode as JSON"))?;
    w.flush()
        .map_err(|_| Error::invalid("snapshot", "must compress"))?;
    w.into_inner()
        .map_err(|_| Error::invalid("snapshot", "must compress"))?
        .finish()
        .map_err(|_| Error::invalid("snapshot", "must compress"))
}

/// The JSON inside a body of format `version`, at most [`MAX_SNAPSHOT_JSON`] bytes.
fn decompress(version: u16, body: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    use std::io::Read as _;
    if version == FIRST_FORMAT_VERSION {
        return Ok(Zeroizing::new(body.to_vec()));
    }
    let mut json = Zeroizing::new(Vec::new());
    flate2::read::DeflateDecoder::new(body)
        .take(MAX_SNAPSHOT_JSON + 1)
        .read_to_end(&mut json)
        .map_err(|_| Error::invalid("backup.snapshot", "must decompress"))?;
    if json.len() as u64 > MAX_SNAPSHOT_JSON {
        return Err(Error::invalid(
            "backup.snapshot",
            "decompresses to more than the largest snapshot read (16 GiB)",
        ));
    }
    Ok(json)
}

fn key_id_bytes(key: &MasterKey) -> Result<[u8; 8]> {
    let mut id = [0u8; 8];
    hex::decode_to_slice(key.key_id().to_string(), &mut id)
        .map_err(|_| Error::sealed("the master key's id is not 16 hex digits"))?;
    Ok(id)
}

/// Seal `snapshot` with `key` into the bytes of a backup file.
///
/// ```
/// use wgm_core::seal::MasterKey;
/// use wgm_core::store::backup::{decode, encode};
/// use wgm_core::store::Snapshot;
/// let key = MasterKey::generate();
/// let bytes = encode(&Snapshot::empty(), &key)?;
/// assert_eq!(decode(&bytes, &key)?, Snapshot::empty());
/// assert!(decode(&bytes, &MasterKey::generate()).is_err());
/// # Ok::<(), wgm_core::Error>(())
/// ```
pub fn encode(snapshot: &Snapshot, key: &MasterKey) -> Result<Vec<u8>> {
    snapshot.check()?;
    let plain = Zeroizing::new(compress(snapshot)?);
    seal(&plain, BACKUP_FORMAT_VERSION, snapshot.version, key)
}

/// A backup file of format `format` around the body `plain`.
fn seal(plain: &[u8], format: u16, schema: u32, key: &MasterKey) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let mut out = Vec::with_capacity(HEADER_LEN + plain.len() + TAG_LEN);
    out.extend_from_slice(BACKUP_MAGIC);
    out.extend_from_slice(&format.to_be_bytes());
    out.extend_from_slice(&schema.to_be_bytes());
    out.extend_from_slice(&key_id_bytes(key)?);
    out.extend_from_slice(&nonce);
    let sealed = cipher(key)?
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: &out[..HEADER_LEN],
            },
        )
        .map_err(|_| Error::sealed("the backup could not be sealed"))?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Read the plain header of a backup without opening it.
///
/// # Errors
///
/// [`Error::InvalidInput`] (field `backup`, `backup.format_version` or
/// `backup.schema_version`) for bytes that are not a backup this build reads or are
/// shorter than a header and a tag.
pub fn inspect(bytes: &[u8]) -> Result<BackupHeader> {
    if bytes.len() < BACKUP_MAGIC.len() || &bytes[..BACKUP_MAGIC.len()] != BACKUP_MAGIC {
        return Err(Error::invalid(
            "backup",
            "must start with the wgm backup magic (not a wgm backup file)",
        ));
    }
    if bytes.len() < HEADER_LEN + TAG_LEN {
        return Err(Error::invalid(
            "backup",
            "is truncated (shorter than its header and tag)",
        ));
    }
    let format_version = u16::from_be_bytes([bytes[8], bytes[9]]);
    if !(FIRST_FORMAT_VERSION..=BACKUP_FORMAT_VERSION).contains(&format_version) {
        return Err(Error::invalid(
            "backup.format_version",
            "must be a backup format version this build reads",
        ));
    }
    let schema_version = u32::from_be_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]);
    if schema_version != SNAPSHOT_VERSION {
        return Err(Error::invalid(
            "backup.schema_version",
            "must be a snapshot version this build reads",
        ));
    }
    Ok(BackupHeader {
        format_version,
        schema_version,
        key_id: hex::encode(&bytes[14..22]),
    })
}

/// Open a backup sealed with `key` and return its snapshot, checked
/// ([`Snapshot::check`]).
///
/// # Errors
///
/// [`inspect`]'s errors; [`Error::Sealed`] for a file sealed with another master key
/// (naming both key ids, never a key), and for a file whose header or body was altered
/// or cut short; [`Error::InvalidInput`] for a snapshot that does not decode or check.
pub fn decode(bytes: &[u8], key: &MasterKey) -> Result<Snapshot> {
    let header = inspect(bytes)?;
    let ours = key.key_id().to_string();
    if header.key_id != ours {
        return Err(Error::sealed(format!(
            "the backup was sealed with master key {}, not with this one ({ours})",
            header.key_id
        )));
    }
    let nonce = &bytes[HEADER_LEN - NONCE_LEN..HEADER_LEN];
    let plain = Zeroizing::new(
        cipher(key)?
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: &bytes[HEADER_LEN..],
                    aad: &bytes[..HEADER_LEN],
                },
            )
            .map_err(|_| Error::sealed("the backup does not open: it was altered or truncated"))?,
    );
    let json = decompress(header.format_version, &plain)?;
    let snapshot: Snapshot = serde_json::from_slice(&json)
        .map_err(|_| Error::invalid("backup.snapshot", "must decode as a snapshot"))?;
    if snapshot.version != header.schema_version {
        return Err(Error::invalid(
            "backup.schema_version",
            "must be the version of the snapshot inside",
        ));
    }
    snapshot.check()?;
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ServerSnapshot, SnapshotStore as _};

    fn sample() -> Snapshot {
        let mut s = Snapshot::empty();
        s.servers
            .push(ServerSnapshot::new(crate::model::ServerId::new_random()));
        s
    }

    #[test]
    fn format_1_without_compression_still_opens() {
        let key = MasterKey::generate();
        let snap = sample();
        let v1 = seal(&serde_json::to_vec(&snap).unwrap(), 1, snap.version, &key).unwrap();
        assert_eq!(inspect(&v1).unwrap().format_version, 1);
        assert_eq!(decode(&v1, &key).unwrap(), snap);
        // A format-2 header on an uncompressed body does not pass as a snapshot.
        let wrong = seal(&serde_json::to_vec(&snap).unwrap(), 2, snap.version, &key).unwrap();
        assert!(matches!(
            decode(&wrong, &key),
            Err(Error::InvalidInput { field, .. }) if field == "backup.snapshot"
        ));
        // Nor does any version outside 1..=2.
        for v in [0, 3] {
            let other = seal(b"{}", v, snap.version, &key).unwrap();
            assert!(matches!(
                inspect(&other),
                Err(Error::InvalidInput { field, .. }) if field == "backup.format_version"
            ));
        }
    }

    #[test]
    fn compression_shrinks_repeated_bodies() {
        let key = MasterKey::generate();
        let mut snap = sample();
        for _ in 0..200 {
            snap.servers
                .push(ServerSnapshot::new(crate::model::ServerId::new_random()));
        }
        let json = serde_json::to_vec(&snap).unwrap().len();
        let file = encode(&snap, &key).unwrap().len();
        assert!(file * 2 < json, "{file} bytes sealed for {json} of JSON");
        assert_eq!(decode(&encode(&snap, &key).unwrap(), &key).unwrap(), snap);
    }

    #[test]
    fn round_trip() {
        let key = MasterKey::generate();
        let snap = sample();
        let bytes = encode(&snap, &key).unwrap();
        assert_eq!(decode(&bytes, &key).unwrap(), snap);
        let h = inspect(&bytes).unwrap();
        assert_eq!(
            (h.format_version, h.schema_version),
            (BACKUP_FORMAT_VERSION, SNAPSHOT_VERSION)
        );
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let key = MasterKey::generate();
        let bytes = encode(&sample(), &key).unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            let e = decode(&b, &key).unwrap_err();
            assert!(
                matches!(e, Error::Sealed { .. } | Error::InvalidInput { .. }),
                "byte {i}: {e}"
            );
        }
    }

    #[test]
    fn altered_header_and_body_name_the_cause() {
        let key = MasterKey::generate();
        let bytes = encode(&sample(), &key).unwrap();
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert!(
            matches!(decode(&magic, &key), Err(Error::InvalidInput { field, .. }) if field == "backup")
        );
        let mut version = bytes.clone();
        version[9] = 9;
        assert!(
            matches!(decode(&version, &key), Err(Error::InvalidInput { field, .. }) if field == "backup.format_version")
        );
        let mut schema = bytes.clone();
        schema[13] ^= 0x40;
        assert!(
            matches!(decode(&schema, &key), Err(Error::InvalidInput { field, .. }) if field == "backup.schema_version")
        );
        let mut nonce = bytes.clone();
        nonce[30] ^= 0x80;
        assert!(decode(&nonce, &key)
            .unwrap_err()
            .to_string()
            .contains("altered or truncated"));
        let mut body = bytes.clone();
        let last = body.len() - 1;
        body[last] ^= 0x80;
        assert!(decode(&body, &key)
            .unwrap_err()
            .to_string()
            .contains("altered or truncated"));
    }

    #[test]
    fn truncated_files_are_refused() {
        let key = MasterKey::generate();
        let bytes = encode(&sample(), &key).unwrap();
        for n in [
            0,
            4,
            8,
            HEADER_LEN,
            HEADER_LEN + TAG_LEN - 1,
            bytes.len() - 1,
        ] {
            let e = decode(&bytes[..n], &key).unwrap_err();
            assert!(
                matches!(e, Error::Sealed { .. } | Error::InvalidInput { .. }),
                "{n} bytes: {e}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, &key).is_err());
    }

    #[test]
    fn another_key_is_refused_without_showing_a_key() {
        let key = MasterKey::generate();
        let other = MasterKey::generate();
        let bytes = encode(&sample(), &key).unwrap();
        let e = decode(&bytes, &other).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, Error::Sealed { .. }));
        assert!(text.contains(&key.key_id().to_string()));
        assert!(!text.contains(key.expose_base64().as_str()));
        assert!(!text.contains(other.expose_base64().as_str()));
        // The same key id forged into the header still does not open.
        let mut forged = bytes.clone();
        forged[14..22].copy_from_slice(&key_id_bytes(&other).unwrap());
        assert!(decode(&forged, &other)
            .unwrap_err()
            .to_string()
            .contains("altered or truncated"));
    }

    #[test]
    fn a_store_backup_restores_into_an_empty_store() {
        futures::executor::block_on(async {
            let key = MasterKey::generate();
            let (a, b) = (
                crate::store::MemoryStore::new(),
                crate::store::MemoryStore::new(),
            );
            let bytes = encode(&a.export_snapshot().await.unwrap(), &key).unwrap();
            b.import_snapshot(&decode(&bytes, &key).unwrap())
                .await
                .unwrap();
            assert_eq!(
                b.export_snapshot().await.unwrap(),
                a.export_snapshot().await.unwrap()
            );
        });
    }
}
