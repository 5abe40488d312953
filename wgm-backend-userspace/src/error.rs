//! The detailed errors of this crate, and their mapping into [`wgm_core::Error`].

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// The backend name used in [`wgm_core::Error::Backend`].
pub(crate) const BACKEND: &str = "userspace";

/// An `errno=N` a UAPI daemon answered with (N is negative; 0 is success).
///
/// wireguard-go answers `-EINVAL` for a line it cannot parse or apply, `-EADDRINUSE` when
/// the listen port is taken, `-EIO` for I/O trouble, `-EPROTO` for a line without `=`,
/// and `-55` for anything else; other daemons may use other codes, kept as
/// [`Errno::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Errno {
    /// `-1` (`EPERM`).
    PermissionDenied,
    /// `-2` (`ENOENT`): no such device or peer.
    NotFound,
    /// `-5` (`EIO`).
    Io,
    /// `-12` (`ENOMEM`).
    OutOfMemory,
    /// `-19` (`ENODEV`): no such device.
    NoDevice,
    /// `-22` (`EINVAL`): a line the daemon refused.
    Invalid,
    /// `-55`: wireguard-go's "unknown error".
    Unknown,
    /// `-71` (`EPROTO`): the request broke the protocol.
    Protocol,
    /// `-98` (`EADDRINUSE`): the listen port is in use.
    AddrInUse,
    /// Any other code, as sent.
    Other(i64),
}

impl Errno {
    /// The errno for the number after `errno=` (negative).
    pub fn from_code(code: i64) -> Self {
        match code {
            -1 => Errno::PermissionDenied,
            -2 => Errno::NotFound,
            -5 => Errno::Io,
            -12 => Errno::OutOfMemory,
            -19 => Errno::NoDevice,
            -22 => Errno::Invalid,
            -55 => Errno::Unknown,
            -71 => Errno::Protocol,
            -98 => Errno::AddrInUse,
            other => Errno::Other(other),
        }
    }

    /// The number as sent after `errno=`.
    pub fn code(self) -> i64 {
        match self {
            Errno::PermissionDenied => -1,
            Errno::NotFound => -2,
            Errno::Io => -5,
            Errno::OutOfMemory => -12,
            Errno::NoDevice => -19,
            Errno::Invalid => -22,
            Errno::Unknown => -55,
            Errno::Protocol => -71,
            Errno::AddrInUse => -98,
            Errno::Other(n) => n,
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Errno::PermissionDenied => "operation not permitted",
            Errno::NotFound => "not found",
            Errno::Io => "I/O error",
            Errno::OutOfMemory => "out of memory",
            Errno::NoDevice => "no such device",
            Errno::Invalid => "invalid argument",
            Errno::Unknown => "unknown error",
            Errno::Protocol => "protocol error",
            Errno::AddrInUse => "address (listen port) in use",
            Errno::Other(_) => "unrecognised error",
        };
        write!(f, "errno={} ({what})", self.code())
    }
}

/// Why there is no daemon behind a socket path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Gone {
    /// The socket file does not exist.
    NoSocket,
    /// The socket file exists but nobody listens on it (the daemon died and left it).
    Refused,
}

/// What this crate can fail with. Mapped into [`wgm_core::Error`] by one `From` impl;
/// the original stays reachable as the source of [`wgm_core::Error::Backend`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No daemon serves the interface: its socket is missing or refuses connections.
    #[error("no UAPI daemon for {iface} ({reason:?} at {path})", path = path.display())]
    DaemonGone {
        /// The interface.
        iface: String,
        /// The socket path that was tried.
        path: PathBuf,
        /// What was found there.
        reason: Gone,
    },
    /// An operation on the socket did not finish in time.
    #[error("timed out after {after:?} while {during} {path}", path = path.display())]
    Timeout {
        /// `connecting to`, `writing to` or `reading from`.
        during: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The timeout that expired.
        after: Duration,
    },
    /// The daemon closed or reset the connection before a complete reply (`errno=N` and
    /// a blank line) arrived: it died or restarted mid-operation, or misbehaves.
    #[error("UAPI reply truncated after {received} bytes")]
    Truncated {
        /// Bytes received before the end.
        received: usize,
    },
    /// The reply grew past the configured limit.
    #[error("UAPI reply larger than {limit} bytes")]
    ReplyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A reply line could not be understood. Never contains key material.
    #[error("UAPI reply line {line}: {key}: {reason}")]
    Malformed {
        /// 1-based line number in the reply.
        line: usize,
        /// The key of the line (`allowed_ip`), or `line` when there is none.
        key: Cow<'static, str>,
        /// What is wrong.
        reason: Cow<'static, str>,
    },
    /// The daemon refused the request.
    #[error("UAPI daemon answered {0}")]
    Errno(Errno),
    /// Socket I/O failed.
    #[error("UAPI socket {path}: {source}", path = path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The daemon could not be started.
    #[error("could not start {program}: {source}")]
    Spawn {
        /// The program (first word of the command).
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The daemon exited before its socket appeared.
    #[error("{program} for {iface} exited ({status}) before opening its UAPI socket")]
    DaemonExited {
        /// The program.
        program: String,
        /// The interface.
        iface: String,
        /// Its exit status.
        status: String,
    },
    /// The daemon did not open its socket in time (it was stopped again).
    #[error("{program} for {iface} did not open its UAPI socket within {after:?}")]
    StartTimeout {
        /// The program.
        program: String,
        /// The interface.
        iface: String,
        /// The timeout.
        after: Duration,
    },
    /// A daemon this backend did not start was asked to stop (its socket was removed) and
    /// is still running.
    #[error("the UAPI daemon of {iface} (pid {pid}) did not stop within {after:?}")]
    StopTimeout {
        /// The interface.
        iface: String,
        /// The daemon's process id.
        pid: i32,
        /// The timeout.
        after: Duration,
    },
    /// A core error (validation of a delta, a key in a reply).
    #[error(transparent)]
    Core(#[from] wgm_core::Error),
}

impl Error {
    pub(crate) fn malformed(
        line: usize,
        key: impl Into<Cow<'static, str>>,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        Error::Malformed {
            line,
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl From<Error> for wgm_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Core(core) => core,
            // The caller learns what it can act on: the device is not there.
            Error::DaemonGone { iface, .. } => wgm_core::Error::not_found("device", iface),
            Error::Errno(Errno::AddrInUse) => {
                wgm_core::Error::conflict("the listen port is already in use (errno=-98)")
            }
            Error::Malformed { line, key, reason } => {
                wgm_core::Error::parse(line, format!("uapi.{key}"), reason)
            }
            other => wgm_core::Error::backend(BACKEND, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_round_trips_and_keeps_unknown_codes() {
        for code in [-1, -2, -5, -12, -19, -22, -55, -71, -98, -4242, 0, 7] {
            assert_eq!(Errno::from_code(code).code(), code);
        }
        assert_eq!(Errno::from_code(-22), Errno::Invalid);
        assert_eq!(Errno::from_code(-4242), Errno::Other(-4242));
        assert_eq!(Errno::Invalid.to_string(), "errno=-22 (invalid argument)");
    }

    #[test]
    fn maps_into_core_semantics() {
        let gone = Error::DaemonGone {
            iface: "wg0".into(),
            path: "/x/wg0.sock".into(),
            reason: Gone::NoSocket,
        };
        assert!(matches!(
            wgm_core::Error::from(gone),
            wgm_core::Error::NotFound { kind: "device", .. }
        ));
        let busy = wgm_core::Error::from(Error::Errno(Errno::AddrInUse));
        assert_eq!(busy.code(), "conflict");
        let inval = wgm_core::Error::from(Error::Errno(Errno::Invalid));
        assert_eq!(inval.code(), "backend");
        // The detailed error stays reachable as the source.
        let wgm_core::Error::Backend { source, .. } = inval else {
            unreachable!()
        };
        assert!(matches!(
            source.downcast_ref::<Error>(),
            Some(Error::Errno(Errno::Invalid))
        ));
        let bad = wgm_core::Error::from(Error::malformed(3, "allowed_ip", "not a network"));
        assert_eq!(
            bad.to_string(),
            "line 3: invalid uapi.allowed_ip: not a network"
        );
    }
}
