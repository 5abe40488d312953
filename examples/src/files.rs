//! Writing private files (master keys, client configs) safely: mode `0600` from the
//! first byte, atomically, never through a half-written file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of every private file wgm writes.
pub const PRIVATE_MODE: u32 = 0o600;

/// Mode of directories wgm creates for its data.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// A temporary file next to `path`, created with `O_EXCL` and mode `0600`, holding
/// `data` and synced to disk. The caller moves it into place.
fn write_temp_beside(path: &Path, data: &[u8]) -> io::Result<PathBuf> {
    let dir = parent_dir(path);
    let base = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    for _ in 0..16 {
        let mut name = std::ffi::OsString::from(".");
        name.push(base);
        name.push(format!(
            ".tmp-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let tmp = dir.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE_MODE)
            .open(&tmp);
        let mut file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        // The umask can only remove bits; make sure no bit beyond 0600 is left either.
        let written = file
            .set_permissions(fs::Permissions::from_mode(PRIVATE_MODE))
            .and_then(|()| file.write_all(data))
            .and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        return Ok(tmp);
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "could not pick an unused temporary file name",
    ))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_dir(dir: &Path) {
    // Durability of the rename; a file system that cannot sync directories still renamed.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Write `data` to `path` atomically with mode `0600`: a temporary file beside it
/// (`O_EXCL`, `0600`, synced), then `rename(2)` over `path`. Readers see the old file or
/// the complete new one, never a partial one, and the data is never readable by others,
/// not even for a moment. Refuses to replace a directory.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("alice.conf");
/// wgm_cli::files::write_private_atomic(&path, b"[Interface]\n")?;
/// use std::os::unix::fs::PermissionsExt;
/// assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn write_private_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    if path.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a directory",
        ));
    }
    let tmp = write_temp_beside(path, data)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(parent_dir(path));
    Ok(())
}

/// Create `path` holding `data` with mode `0600`, atomically and **without ever
/// replacing** an existing file: a complete temporary file is hard-linked into place
/// (`link(2)` fails if the name exists), then the temporary name is removed. Returns
/// `Ok(false)` when `path` already existed (another process won the race); its contents
/// are left untouched.
pub fn create_private_exclusive(path: &Path, data: &[u8]) -> io::Result<bool> {
    let tmp = write_temp_beside(path, data)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(parent_dir(path));
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Create `dir` and its missing parents; directories created here get mode `0700`.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = fs::DirBuilder::new();
    b.recursive(true).mode(PRIVATE_DIR_MODE);
    b.create(dir)
}

/// Create an empty file at `path` with mode `0600` if none exists (an SQLite database
/// about to be initialised). Returns whether it was created.
pub fn touch_private(path: &Path) -> io::Result<bool> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_MODE)
        .open(path)
    {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn atomic_write_replaces_with_a_private_file_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.conf");
        fs::write(&p, "old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        write_private_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(mode(&p), 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn atomic_write_refuses_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_private_atomic(dir.path(), b"x").is_err());
    }

    #[test]
    fn exclusive_create_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wgm.key");
        assert!(create_private_exclusive(&p, b"first").unwrap());
        assert!(!create_private_exclusive(&p, b"second").unwrap());
        assert_eq!(fs::read_to_string(&p).unwrap(), "first");
        assert_eq!(mode(&p), 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn private_dirs_and_touch() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        create_private_dir_all(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        let f = d.join("wgm.db");
        assert!(touch_private(&f).unwrap());
        assert!(!touch_private(&f).unwrap());
        assert_eq!(mode(&f), 0o600);
    }
}
