//! The master key that seals private keys and PSKs at rest: read from a `0600` key file
//! or from the `WGM_MASTER_KEY` environment variable, created on first use.
//!
//! Every problem here is an [`Error::Sealed`] (the CLI's exit code 6): without the right
//! key no secret can be opened, and wgm refuses to go on rather than produce garbage.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use wgm_core::seal::MasterKey;
use wgm_core::{Error, Result};
use zeroize::Zeroizing;

/// The environment variable holding a base64 master key (instead of a key file).
pub const ENV_MASTER_KEY: &str = "WGM_MASTER_KEY";

/// Largest key file accepted, bytes (a key is 44 characters and a newline).
const MAX_KEY_FILE: u64 = 1024;

/// Read the key file at `path`. `Ok(None)` when it does not exist. Refused (as
/// [`Error::Sealed`]) when it is not a regular file, is readable or writable by group or
/// others, or does not hold exactly one canonical base64 key (a trailing newline is
/// allowed).
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("wgm.key");
/// assert!(wgm_cli::master_key::read_key_file(&path).unwrap().is_none());
/// let (key, created) = wgm_cli::master_key::create_key_file(&path).unwrap();
/// assert!(created);
/// let again = wgm_cli::master_key::read_key_file(&path).unwrap().unwrap();
/// assert_eq!(again.key_id(), key.key_id());
/// ```
pub fn read_key_file(path: &Path) -> Result<Option<MasterKey>> {
    let shown = path.display();
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::sealed(format!(
                "master key file {shown} cannot be read: {e}"
            )))
        }
    };
    // Check the inode we opened, not the name (no race with a swapped file).
    let meta = file
        .metadata()
        .map_err(|e| Error::sealed(format!("master key file {shown} cannot be read: {e}")))?;
    if !meta.is_file() {
        return Err(Error::sealed(format!(
            "master key file {shown} is not a regular file"
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::sealed(format!(
            "master key file {shown} is accessible by group or others (mode {mode:04o}); run `chmod 600 {shown}`"
        )));
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(Error::sealed(format!(
            "master key file {shown} is too large to be a key"
        )));
    }
    let mut text = Zeroizing::new(String::new());
    file.read_to_string(&mut text).map_err(|_| {
        Error::sealed(format!(
            "master key file {shown} is not a valid key (must be 44 characters of base64)"
        ))
    })?;
    let trimmed = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    MasterKey::from_base64(trimmed).map(Some).map_err(|_| {
        Error::sealed(format!(
            "master key file {shown} is not a valid key (must be 44 characters of standard base64)"
        ))
    })
}

/// Create a new random key at `path` (mode `0600`, atomically, never replacing a file;
/// missing directories are created with mode `0700`). When another process created the
/// file first, that key is read and returned instead. Returns the key and whether this
/// call created it.
pub fn create_key_file(path: &Path) -> Result<(MasterKey, bool)> {
    let shown = path.display();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::files::create_private_dir_all(dir).map_err(|e| {
            Error::sealed(format!(
                "cannot create the directory of master key file {shown}: {e}"
            ))
        })?;
    }
    let key = MasterKey::generate();
    let mut text = key.expose_base64();
    text.push('\n');
    let created = crate::files::create_private_exclusive(path, text.as_bytes())
        .map_err(|e| Error::sealed(format!("cannot create master key file {shown}: {e}")))?;
    if created {
        return Ok((key, true));
    }
    let existing = read_key_file(path)?.ok_or_else(|| {
        Error::sealed(format!(
            "master key file {shown} vanished while being created"
        ))
    })?;
    Ok((existing, false))
}

/// Parse the value of [`ENV_MASTER_KEY`]. The error never repeats the value.
///
/// ```
/// let k = wgm_core::seal::MasterKey::generate();
/// let parsed = wgm_cli::master_key::key_from_env(&k.expose_base64()).unwrap();
/// assert_eq!(parsed.key_id(), k.key_id());
/// assert!(wgm_cli::master_key::key_from_env("not a key").is_err());
/// ```
pub fn key_from_env(value: &str) -> Result<MasterKey> {
    MasterKey::from_base64(value.trim_end_matches(['\n', '\r'])).map_err(|_| {
        Error::sealed(format!(
            "{ENV_MASTER_KEY} is not a valid master key (must be 44 characters of standard base64)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn refuses_group_or_world_readable_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let (key, _) = create_key_file(&p).unwrap();
        for mode in [0o640, 0o604, 0o660, 0o602] {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            let e = read_key_file(&p).unwrap_err();
            assert!(matches!(e, Error::Sealed { .. }), "{e}");
            assert!(e.to_string().contains("chmod 600"), "{e}");
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(read_key_file(&p).unwrap().unwrap().key_id(), key.key_id());
    }

    #[test]
    fn refuses_bad_contents_without_echoing_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        crate::files::write_private_atomic(&p, b"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0\n").unwrap();
        let e = read_key_file(&p).unwrap_err().to_string();
        assert!(!e.contains("c2VjcmV0"), "{e}");
        let dir2 = dir.path().join("sub");
        fs::create_dir(&dir2).unwrap();
        fs::set_permissions(&dir2, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(read_key_file(&dir2).is_err());
    }

    #[test]
    fn create_is_idempotent_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("new/dir/wgm.key");
        let (a, created_a) = create_key_file(&p).unwrap();
        let (b, created_b) = create_key_file(&p).unwrap();
        assert!(created_a && !created_b);
        assert_eq!(a.key_id(), b.key_id());
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let text = fs::read_to_string(&p).unwrap();
        assert_eq!(text.len(), 45);
    }
}
