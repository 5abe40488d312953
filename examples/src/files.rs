//! Writing private files (master keys, client configs) safely, and opening files that
//! must be regular files (the master key) without following a swapped path.
//!
//! The rules, for every file wgm writes at a path a user names (`--out`, the master key
//! file):
//!
//! - **Only a new file or an existing regular file.** Whatever else is at the path — a
//!   symbolic link (even one to a regular file, and a dangling one), a FIFO, a socket, a
//!   character or block device, a directory — is refused with a [`NotRegularFile`] error
//!   that says what it is, and is left untouched. Only the final component is judged:
//!   the directories above it may be symbolic links (`/tmp` is one on some systems).
//! - **Nothing is ever written through the path.** The data goes to a new temporary file
//!   beside it (`O_CREAT | O_EXCL | O_NOFOLLOW`, mode `0600` from the first byte, checked
//!   with `fstat` after opening, synced), which is then moved into place with
//!   `rename(2)`. `rename` replaces the directory entry and never follows a symbolic link,
//!   so a swap of the path between the check and the write cannot redirect the data:
//!   the worst a racing writer of that directory gets is its own entry replaced by wgm's
//!   private file — which it could have removed itself.
//! - **An existing regular file is replaced atomically, not truncated in place.** The
//!   path is checked (`lstat`) before the temporary file is written and again just
//!   before the rename. Readers see the old file or the complete new one, never a
//!   partial one. Writing into the existing inode is avoided on purpose: it could be a
//!   hard link to another file, and another user may hold it open and read the secret.
//!   The new file is owned by the caller, mode `0600`; the old inode is left as it was.
//! - **Never blocks.** The path is judged with `lstat` before anything is opened; a FIFO
//!   is refused, not opened.
//!
//! [`open_regular`] is the reading side: `lstat`, then `open` with
//! `O_NONBLOCK | O_NOFOLLOW` (a FIFO swapped in cannot block it, a symbolic link swapped
//! in fails the open), then `fstat` of what was opened.

use std::fmt;
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

/// Mode of every private file wgm writes.
pub const PRIVATE_MODE: u32 = 0o600;

/// Mode of directories wgm creates for its data.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// What is at a path that is not a regular file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A symbolic link (whatever it points to).
    Symlink,
    /// A directory.
    Directory,
    /// A FIFO (named pipe).
    Fifo,
    /// A Unix domain socket.
    Socket,
    /// A character device (`/dev/null`, a terminal).
    CharDevice,
    /// A block device (a disk).
    BlockDevice,
    /// Anything else that is not a regular file.
    Other,
}

impl FileKind {
    /// The kind of a file type; `None` for a regular file.
    ///
    /// ```
    /// use wgm_cli::files::FileKind;
    /// let dir = tempfile::tempdir()?;
    /// let t = std::fs::symlink_metadata(dir.path())?.file_type();
    /// assert_eq!(FileKind::of(t), Some(FileKind::Directory));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn of(t: fs::FileType) -> Option<FileKind> {
        Some(if t.is_file() {
            return None;
        } else if t.is_symlink() {
            FileKind::Symlink
        } else if t.is_dir() {
            FileKind::Directory
        } else if t.is_fifo() {
            FileKind::Fifo
        } else if t.is_socket() {
            FileKind::Socket
        } else if t.is_char_device() {
            FileKind::CharDevice
        } else if t.is_block_device() {
            FileKind::BlockDevice
        } else {
            FileKind::Other
        })
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Symlink => "a symbolic link",
            FileKind::Directory => "a directory",
            FileKind::Fifo => "a FIFO (named pipe)",
            FileKind::Socket => "a socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Other => "a special file",
        })
    }
}

/// The error (inside an [`io::Error`] of kind [`io::ErrorKind::InvalidInput`]) when a
/// path holds something other than a regular file. [`not_regular`] finds it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotRegularFile {
    /// What is there.
    pub kind: FileKind,
    /// For a symbolic link that was followed: what it points to (`None`: nothing, the
    /// link dangles).
    pub target: Option<Option<FileKind>>,
}

impl fmt::Display for NotRegularFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.target {
            None => write!(f, "is {}, not a regular file", self.kind),
            Some(None) => f.write_str("is a symbolic link to nothing (dangling)"),
            Some(Some(t)) => write!(f, "is a symbolic link to {t}, not to a regular file"),
        }
    }
}

impl std::error::Error for NotRegularFile {}

fn refuse(kind: FileKind) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        NotRegularFile { kind, target: None },
    )
}

/// The [`NotRegularFile`] inside `e`, if `e` is the refusal of a path that is not a
/// regular file.
///
/// ```
/// use wgm_cli::files::{not_regular, write_private_atomic, FileKind};
/// let dir = tempfile::tempdir()?;
/// let e = write_private_atomic(dir.path(), b"x").unwrap_err();
/// assert_eq!(not_regular(&e).map(|n| n.kind), Some(FileKind::Directory));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn not_regular(e: &io::Error) -> Option<NotRegularFile> {
    e.get_ref()?.downcast_ref::<NotRegularFile>().copied()
}

/// Judge the final component of `path` without following it: `Ok(false)` when nothing
/// is there, `Ok(true)` for a regular file, a [`NotRegularFile`] refusal for anything
/// else (a symbolic link, even to a regular file; a FIFO; a socket; a device; a
/// directory). Nothing is opened. A path ending in `/` names a directory and is refused.
///
/// Call it before producing what will be written (a client config is an audited secret
/// export), so a refused path costs nothing; [`write_private_atomic`] checks again.
///
/// ```
/// use wgm_cli::files::check_output_path;
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("alice.conf");
/// assert!(!check_output_path(&path)?);
/// std::fs::write(&path, "old")?;
/// assert!(check_output_path(&path)?);
/// std::os::unix::fs::symlink(&path, dir.path().join("link"))?;
/// assert!(check_output_path(&dir.path().join("link")).is_err());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn check_output_path(path: &Path) -> io::Result<bool> {
    if path.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return Err(refuse(FileKind::Directory));
    }
    match fs::symlink_metadata(path) {
        Ok(meta) => match FileKind::of(meta.file_type()) {
            None => Ok(true),
            Some(kind) => Err(refuse(kind)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// A temporary file next to `path`, created with `O_CREAT | O_EXCL | O_NOFOLLOW` and mode
/// `0600`, checked with `fstat` to be the regular file just made, holding `data` and
/// synced to disk. The caller moves it into place.
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
        let fd = rustix::fs::open(
            &tmp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(PRIVATE_MODE),
        );
        let mut file = match fd {
            Ok(fd) => File::from(fd),
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        };
        // The umask can only remove bits; make sure no bit beyond 0600 is left either,
        // and that what was opened is the new regular file.
        let written = file
            .metadata()
            .and_then(|m| match FileKind::of(m.file_type()) {
                None => Ok(()),
                Some(kind) => Err(refuse(kind)),
            })
            .and_then(|()| file.set_permissions(fs::Permissions::from_mode(PRIVATE_MODE)))
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

/// Write `data` to `path` with mode `0600`, atomically, only if `path` is a new file or
/// an existing regular file (the rules in the [module docs](self)): the final component
/// is judged with [`check_output_path`], a temporary file beside it is written
/// (`O_EXCL`, `0600`, synced), the path is judged again, and the temporary file is
/// renamed over it. Readers see the old file or the complete new one; the data is never
/// readable by others, not even for a moment; a symbolic link, FIFO, socket, device or
/// directory at `path` is refused ([`NotRegularFile`]) and left untouched.
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
    check_output_path(path)?;
    let tmp = write_temp_beside(path, data)?;
    // Judged again after the (possibly slow) write, right before the rename; the rename
    // itself never follows what is at `path`.
    let moved = check_output_path(path).and_then(|_| fs::rename(&tmp, path));
    if let Err(e) = moved {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(parent_dir(path));
    Ok(())
}

/// Create `path` holding `data` with mode `0600`, atomically and **without ever
/// replacing** anything at the path: a complete temporary file is hard-linked into place
/// (`link(2)` fails if the name exists, and never follows a symbolic link there), then
/// the temporary name is removed. Returns `Ok(false)` when something already existed at
/// `path` (another process won the race; or a symbolic link, FIFO, ... is there, which
/// the caller's read then judges); it is left untouched.
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

/// Whether [`open_regular`] follows a symbolic link at the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Symlinks {
    /// A symbolic link at the path is refused.
    Refuse,
    /// A symbolic link at the path is followed; what it points to must be a regular file.
    Follow,
}

/// A regular file opened for reading by [`open_regular`].
#[derive(Debug)]
pub struct OpenedFile {
    /// The open file.
    pub file: File,
    /// `fstat` of the open file (not of the name: a swap of the path cannot fool it).
    pub meta: Metadata,
    /// Whether the path was a symbolic link that was followed.
    pub via_symlink: bool,
}

/// Judge `path` without opening it: `None` when nothing is there, `Some(via_symlink)`
/// for a regular file (or, with [`Symlinks::Follow`], a symbolic link to one), a
/// [`NotRegularFile`] refusal otherwise.
fn judge(path: &Path, symlinks: Symlinks) -> io::Result<Option<bool>> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match FileKind::of(meta.file_type()) {
        None => Ok(Some(false)),
        Some(FileKind::Symlink) if symlinks == Symlinks::Follow => {
            let target = match fs::metadata(path) {
                Ok(t) => FileKind::of(t.file_type()).map(Some),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Some(None),
                Err(e) => return Err(e),
            };
            match target {
                None => Ok(Some(true)),
                Some(target) => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    NotRegularFile {
                        kind: FileKind::Symlink,
                        target: Some(target),
                    },
                )),
            }
        }
        Some(kind) => Err(refuse(kind)),
    }
}

/// Open `path` for reading only if it is a regular file, never blocking: `Ok(None)`
/// when nothing is there. The final component is judged with `lstat` before anything
/// is opened (a FIFO, socket, device or directory is refused, a symbolic link too unless
/// `symlinks` is [`Symlinks::Follow`], and then what it points to is judged with
/// `stat`); the open uses `O_NONBLOCK` (a FIFO swapped in cannot make it wait) and
/// `O_NOFOLLOW` unless a link is being followed; the opened file is judged again with
/// `fstat`.
///
/// ```
/// use wgm_cli::files::{open_regular, Symlinks};
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("k");
/// assert!(open_regular(&path, Symlinks::Refuse)?.is_none());
/// std::fs::write(&path, "x")?;
/// assert_eq!(open_regular(&path, Symlinks::Refuse)?.unwrap().meta.len(), 1);
/// assert!(open_regular(dir.path(), Symlinks::Follow).is_err());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn open_regular(path: &Path, symlinks: Symlinks) -> io::Result<Option<OpenedFile>> {
    let Some(via_symlink) = judge(path, symlinks)? else {
        return Ok(None);
    };
    let mut flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    if !via_symlink {
        flags |= OFlags::NOFOLLOW;
    }
    let file = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        // O_NOFOLLOW met a symbolic link swapped in since the lstat.
        Err(rustix::io::Errno::LOOP) if !via_symlink => return Err(refuse(FileKind::Symlink)),
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    if let Some(kind) = FileKind::of(meta.file_type()) {
        return Err(refuse(kind));
    }
    Ok(Some(OpenedFile {
        file,
        meta,
        via_symlink,
    }))
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
/// about to be initialised). Returns whether it was created. What is already there must
/// be a regular file or a symbolic link to one (SQLite follows links, and a database
/// kept elsewhere and linked in is ordinary); a FIFO, socket, device, directory or
/// dangling link is refused ([`NotRegularFile`]) rather than handed to SQLite, which
/// would block on a FIFO or create the dangling link's target.
pub fn touch_private(path: &Path) -> io::Result<bool> {
    // `create_new` is `O_CREAT | O_EXCL`: it never follows a link at the path.
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_MODE)
        .open(path)
    {
        Ok(_) => Ok(true),
        // Judged without opening it: closing a descriptor of a database file would drop
        // this process's SQLite locks on it.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            judge(path, Symlinks::Follow)?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// Run `f` on another thread; fail (instead of hanging the test run) when it has
    /// not returned within a generous time — a write or read that blocks on a FIFO.
    fn promptly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("blocked: the call did not return (a FIFO opened for I/O?)")
    }

    fn mkfifo(p: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    fn kind_of(e: &io::Error) -> FileKind {
        not_regular(e)
            .unwrap_or_else(|| panic!("not a NotRegularFile refusal: {e:?}"))
            .kind
    }

    /// Only the temporary-free listing of `dir`: the names in it, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_write_refuses_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let e = write_private_atomic(dir.path(), b"x").unwrap_err();
        assert_eq!(kind_of(&e), FileKind::Directory);
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let e = write_private_atomic(&sub, b"x").unwrap_err();
        assert_eq!(kind_of(&e), FileKind::Directory);
        assert!(sub.is_dir());
        // A name ending in '/' names a directory, even when nothing is there yet.
        let e = write_private_atomic(&dir.path().join("new/"), b"x").unwrap_err();
        assert_eq!(kind_of(&e), FileKind::Directory);
        assert_eq!(names(dir.path()), ["sub"]);
    }

    #[test]
    fn atomic_write_refuses_a_symlink_to_a_regular_file_and_leaves_both() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, "kept").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = write_private_atomic(&link, b"SECRET").unwrap_err();
        assert_eq!(kind_of(&e), FileKind::Symlink);
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_link(&link).unwrap(), target);
        assert_eq!(fs::read_to_string(&target).unwrap(), "kept");
        assert_eq!(names(dir.path()), ["link", "target"], "no temporary left");
    }

    #[test]
    fn atomic_write_refuses_a_dangling_symlink_and_creates_no_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("nothing-here");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = write_private_atomic(&link, b"SECRET").unwrap_err();
        assert_eq!(kind_of(&e), FileKind::Symlink);
        assert!(!target.exists());
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(names(dir.path()), ["link"]);
    }

    #[test]
    fn atomic_write_refuses_a_fifo_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let p = fifo.clone();
        let e = promptly(move || write_private_atomic(&p, b"SECRET")).unwrap_err();
        assert_eq!(kind_of(&e), FileKind::Fifo);
        assert!(e.to_string().contains("FIFO"), "{e}");
        assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
        assert_eq!(names(dir.path()), ["fifo"]);
    }

    #[test]
    fn atomic_write_refuses_a_socket_and_a_device() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let e = write_private_atomic(&sock, b"SECRET").unwrap_err();
        assert_eq!(kind_of(&e), FileKind::Socket);
        assert!(fs::symlink_metadata(&sock).unwrap().file_type().is_socket());
        // A character device like /dev/null (1, 3), made in the temporary directory so
        // that a broken check could only ever replace this copy. Making one needs
        // CAP_MKNOD; without it that half is skipped, visibly.
        let dev = dir.path().join("null");
        match rustix::fs::mknodat(
            rustix::fs::CWD,
            &dev,
            rustix::fs::FileType::CharacterDevice,
            Mode::from_raw_mode(0o600),
            rustix::fs::makedev(1, 3),
        ) {
            Ok(()) => {
                let e = write_private_atomic(&dev, b"SECRET").unwrap_err();
                assert_eq!(kind_of(&e), FileKind::CharDevice);
                assert!(fs::symlink_metadata(&dev)
                    .unwrap()
                    .file_type()
                    .is_char_device());
            }
            Err(e) => eprintln!("skipped the device node case: cannot mknod here ({e})"),
        }
    }

    #[test]
    fn atomic_write_replaces_a_regular_file_by_rename_not_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.conf");
        fs::write(&p, "old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        // A second name of the old inode (another user's hard link, say) keeps the old
        // bytes and mode: the secret goes to a new inode only.
        let other = dir.path().join("other-name");
        fs::hard_link(&p, &other).unwrap();
        write_private_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(mode(&p), 0o600);
        assert_eq!(fs::read_to_string(&other).unwrap(), "old");
        assert_eq!(mode(&other), 0o644);
        assert_eq!(names(dir.path()), ["c.conf", "other-name"]);
    }

    #[test]
    fn atomic_write_creates_a_new_file_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("new.conf");
        write_private_atomic(&p, b"[Interface]\n").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "[Interface]\n");
        assert_eq!(mode(&p), 0o600);
        assert!(fs::symlink_metadata(&p).unwrap().file_type().is_file());
        assert_eq!(names(dir.path()), ["new.conf"]);
    }

    #[test]
    fn atomic_write_through_a_symlinked_directory_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(&real, &linked).unwrap();
        write_private_atomic(&linked.join("a.conf"), b"x").unwrap();
        assert_eq!(fs::read_to_string(real.join("a.conf")).unwrap(), "x");
    }

    #[test]
    fn open_regular_refuses_what_is_not_a_regular_file_and_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        for symlinks in [Symlinks::Refuse, Symlinks::Follow] {
            let p = fifo.clone();
            let e = promptly(move || open_regular(&p, symlinks)).unwrap_err();
            assert_eq!(kind_of(&e), FileKind::Fifo);
        }
        let file = dir.path().join("file");
        fs::write(&file, "k").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(
            kind_of(&open_regular(&link, Symlinks::Refuse).unwrap_err()),
            FileKind::Symlink
        );
        let opened = open_regular(&link, Symlinks::Follow).unwrap().unwrap();
        assert!(opened.via_symlink && opened.meta.is_file());
        assert!(
            !open_regular(&file, Symlinks::Refuse)
                .unwrap()
                .unwrap()
                .via_symlink
        );
        // A link to a FIFO: refused by what it points to, without blocking.
        let to_fifo = dir.path().join("to-fifo");
        std::os::unix::fs::symlink(&fifo, &to_fifo).unwrap();
        let p = to_fifo.clone();
        let e = promptly(move || open_regular(&p, Symlinks::Follow)).unwrap_err();
        assert_eq!(not_regular(&e).unwrap().target, Some(Some(FileKind::Fifo)));
        // A dangling link is not "nothing there".
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("gone"), &dangling).unwrap();
        let e = open_regular(&dangling, Symlinks::Follow).unwrap_err();
        assert_eq!(not_regular(&e).unwrap().target, Some(None));
        assert!(e.to_string().contains("dangling"), "{e}");
        assert!(open_regular(&dir.path().join("absent"), Symlinks::Follow)
            .unwrap()
            .is_none());
    }

    #[test]
    fn touch_refuses_a_fifo_and_a_dangling_link() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.db");
        mkfifo(&fifo);
        let p = fifo.clone();
        let e = promptly(move || touch_private(&p)).unwrap_err();
        assert_eq!(kind_of(&e), FileKind::Fifo);
        let dangling = dir.path().join("dangling.db");
        std::os::unix::fs::symlink(dir.path().join("gone.db"), &dangling).unwrap();
        assert!(touch_private(&dangling).is_err());
        assert!(!dir.path().join("gone.db").exists());
        let real = dir.path().join("real.db");
        assert!(touch_private(&real).unwrap());
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(
            !touch_private(&link).unwrap(),
            "a link to a database is fine"
        );
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
