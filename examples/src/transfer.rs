//! Moving a whole installation: copying a store into an empty store of any engine, and
//! sealed backup files (`wgm store copy`, `wgm backup`, `wgm restore`). The snapshot,
//! its consistency and the file format are the library's
//! ([`wgm_core::store::SnapshotStore`], [`wgm_core::store::backup`]); this module opens
//! the stores and reads and writes the file.

use std::path::Path;

use serde::Serialize;
use wgm_core::seal::MasterKey;
use wgm_core::store::{backup, Snapshot};
use wgm_core::{Error, Result};

use crate::location::StoreLocation;

/// What was moved: counts of a [`Snapshot`] and the audit head it ends at.
///
/// ```
/// let r = wgm_cli::transfer::Moved::of(&wgm_core::store::Snapshot::empty());
/// assert_eq!((r.servers, r.audit_records), (0, 0));
/// assert!(r.audit_head.starts_with("0:"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Moved {
    /// Servers, deleted ones included (their history moves too).
    pub servers: usize,
    /// Revisions of all servers.
    pub revisions: usize,
    /// Users.
    pub users: usize,
    /// Custom roles.
    pub roles: usize,
    /// API tokens.
    pub tokens: usize,
    /// Audit records.
    pub audit_records: usize,
    /// The stored audit head (`SEQ:HASH`), the same in both stores.
    pub audit_head: String,
}

impl Moved {
    /// The counts of `s`.
    pub fn of(s: &Snapshot) -> Moved {
        Moved {
            servers: s.servers.len(),
            revisions: s.servers.iter().map(|x| x.revisions.len()).sum(),
            users: s.users.len(),
            roles: s.roles.len(),
            tokens: s.tokens.len(),
            audit_records: s.audit.len(),
            audit_head: s.audit_head.to_string(),
        }
    }
}

/// Copy everything the store at `from` holds into the empty store at `to` (one
/// consistent export, one atomic import; [`wgm_core::store::copy`]). No master key is
/// needed: secrets stay sealed, so `to` opens with the master key of `from`.
///
/// ```no_run
/// # async fn demo() -> wgm_core::Result<()> {
/// let moved = wgm_cli::transfer::copy_store("sqlite:///var/lib/wgm/wgm.db", "postgres://wgm@db/wgm").await?;
/// println!("{} servers, audit head {}", moved.servers, moved.audit_head);
/// # Ok(()) }
/// ```
pub async fn copy_store(from: &str, to: &str) -> Result<Moved> {
    // The URLs as given (a redacted one drops the query, which names a Redis namespace).
    if from == to {
        return Err(Error::invalid("to", "must be another store than --from"));
    }
    let (from, to) = (StoreLocation::parse(from)?, StoreLocation::parse(to)?);
    let (source, _) = from.open().await?;
    let (target, _) = to.open().await?;
    let snapshot = wgm_core::store::copy(source.as_ref(), target.as_ref()).await?;
    Ok(Moved::of(&snapshot))
}

/// Restore the backup `bytes`, sealed with `key`, into the empty store at `to`, or with
/// `replace` in place of everything it holds (atomically:
/// [`wgm_core::store::SnapshotStore::replace_with_snapshot`]). The file is opened and
/// checked in full before the store is touched.
///
/// ```no_run
/// # async fn demo(key: wgm_core::seal::MasterKey) -> wgm_core::Result<()> {
/// let bytes = std::fs::read("wgm.backup").unwrap_or_default();
/// wgm_cli::transfer::restore(&bytes, &key, "sqlite:///tmp/restored.db", false).await?;
/// # Ok(()) }
/// ```
pub async fn restore(bytes: &[u8], key: &MasterKey, to: &str, replace: bool) -> Result<Moved> {
    let snapshot = backup::decode(bytes, key)?;
    let to = StoreLocation::parse(to)?;
    let (target, _) = to.open().await?;
    if replace {
        target.replace_with_snapshot(&snapshot).await?;
    } else {
        target.import_snapshot(&snapshot).await?;
    }
    Ok(Moved::of(&snapshot))
}

/// Read a backup file, at most `max` bytes (a larger file is refused, not read whole).
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let p = dir.path().join("b");
/// std::fs::write(&p, b"12345")?;
/// assert!(wgm_cli::transfer::read_backup(&p, 4).is_err());
/// assert_eq!(wgm_cli::transfer::read_backup(&p, 5).unwrap(), b"12345");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn read_backup(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let shown = path.display();
    let file = std::fs::File::open(path)
        .map_err(|e| Error::invalid("backup", format!("cannot read {shown}: {e}")))?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::invalid("backup", format!("cannot read {shown}: {e}")))?;
    if bytes.len() as u64 > max {
        return Err(Error::invalid(
            "backup",
            format!("{shown} is larger than the largest backup read ({max} bytes)"),
        ));
    }
    Ok(bytes)
}
