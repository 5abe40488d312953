//! The master key that seals private keys and PSKs at rest: read from a `0600` key file
//! or from the `WGM_MASTER_KEY` environment variable, created on first use.
//!
//! Every problem here is an [`Error::Sealed`] (the CLI's exit code 6): without the right
//! key no secret can be opened, and wgm refuses to go on rather than produce garbage.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::files::{not_regular, open_regular, Symlinks};

use wgm_core::seal::MasterKey;
use wgm_core::{Error, Result};
use zeroize::Zeroizing;

/// The environment variable holding a base64 master key (instead of a key file).
pub const ENV_MASTER_KEY: &str = "WGM_MASTER_KEY";

/// Largest key file accepted, bytes (a key is 44 characters and a newline).
const MAX_KEY_FILE: u64 = 1024;

/// Read the key file at `path`. `Ok(None)` when nothing is there. Refused (as
/// [`Error::Sealed`]) when it is not a regular file, is not owned by the effective user
/// or root, is readable or writable by group or others, or does not hold exactly one
/// canonical base64 key (a trailing newline is allowed).
///
/// Nothing that is not a regular file is ever opened: the path is judged with `lstat`
/// first, so a FIFO, socket, device or directory is refused at once instead of blocking
/// (see [`crate::files::open_regular`]). A **symbolic link is followed** when it points
/// to a regular file (key files are often provisioned as links, for example by
/// Kubernetes secret volumes); what it points to must pass the same owner and mode
/// rules, checked with `fstat` on the opened file. A dangling link is refused, never
/// taken for a missing file.
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
    let opened = match open_regular(path, Symlinks::Follow) {
        Ok(Some(o)) => o,
        Ok(None) => return Ok(None),
        Err(e) => {
            return Err(match not_regular(&e) {
                Some(n) => Error::sealed(format!(
                    "master key file {shown} {n}; a master key must be a regular file"
                )),
                None => Error::sealed(format!("master key file {shown} cannot be read: {e}")),
            })
        }
    };
    // Judged on the inode that was opened, not on the name (no race with a swapped file).
    let (mut file, meta) = (opened.file, opened.meta);
    let owner = meta.uid();
    let me = rustix::process::geteuid().as_raw();
    if owner != me && owner != 0 {
        return Err(Error::sealed(format!(
            "master key file {shown} is owned by uid {owner}, not by you (uid {me}) or root; \
             `chown` it or use your own key file"
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
    // At most one byte over the limit, even if the file grew since the `fstat`.
    (&mut file)
        .take(MAX_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|_| {
            Error::sealed(format!(
                "master key file {shown} is not a valid key (must be 44 characters of base64)"
            ))
        })?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(Error::sealed(format!(
            "master key file {shown} is too large to be a key"
        )));
    }
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

/// Create a new random key at `path` (mode `0600`, atomically, never replacing anything
/// at the path and never writing through a symbolic link there; missing directories are
/// created with mode `0700`). When something is already at the path — another process
/// created the file first, or a link, FIFO, ... is there — it is judged and read by
/// [`read_key_file`] instead, with its rules. Returns the key and whether this call
/// created it.
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
    use std::os::unix::fs::FileTypeExt;

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

    fn mkfifo(p: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    /// `f` on another thread, failing instead of hanging when it blocks.
    fn promptly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("blocked: the key file was opened as a FIFO")
    }

    #[test]
    fn a_fifo_socket_or_directory_is_refused_before_it_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.key");
        mkfifo(&fifo);
        let p = fifo.clone();
        let e = promptly(move || read_key_file(&p).map(drop)).unwrap_err();
        assert!(matches!(e, Error::Sealed { .. }), "{e}");
        assert!(e.to_string().contains("FIFO"), "{e}");
        // Creating a key there does not replace or open the FIFO either.
        let p = fifo.clone();
        let e = promptly(move || create_key_file(&p).map(drop)).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
        let sock = dir.path().join("sock.key");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(read_key_file(&sock)
            .unwrap_err()
            .to_string()
            .contains("socket"));
        assert!(read_key_file(dir.path())
            .unwrap_err()
            .to_string()
            .contains("directory"));
    }

    #[test]
    fn a_symlink_is_followed_only_to_a_private_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.key");
        let (key, _) = create_key_file(&real).unwrap();
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(
            read_key_file(&link).unwrap().unwrap().key_id(),
            key.key_id()
        );
        // The target's mode counts, not the link's.
        fs::set_permissions(&real, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_key_file(&link)
            .unwrap_err()
            .to_string()
            .contains("chmod 600"));
        // A link to a FIFO, and a dangling link: refused, never created through.
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let to_fifo = dir.path().join("to-fifo.key");
        std::os::unix::fs::symlink(&fifo, &to_fifo).unwrap();
        let p = to_fifo.clone();
        let e = promptly(move || read_key_file(&p).map(drop)).unwrap_err();
        assert!(e.to_string().contains("symbolic link to a FIFO"), "{e}");
        let dangling = dir.path().join("dangling.key");
        let gone = dir.path().join("gone.key");
        std::os::unix::fs::symlink(&gone, &dangling).unwrap();
        let e = create_key_file(&dangling).unwrap_err();
        assert!(e.to_string().contains("dangling"), "{e}");
        assert!(!gone.exists(), "no key written through the link");
    }

    #[test]
    fn a_key_file_owned_by_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        create_key_file(&p).unwrap();
        // Only root can give a file away; as anyone else the case cannot arise.
        match rustix::fs::chown(
            &p,
            Some(rustix::fs::Uid::from_raw(64_321)),
            Some(rustix::fs::Gid::from_raw(64_321)),
        ) {
            Ok(()) => {
                let e = read_key_file(&p).unwrap_err().to_string();
                assert!(e.contains("owned by uid 64321"), "{e}");
            }
            Err(e) => eprintln!("skipped: cannot chown as this user ({e})"),
        }
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
