//! The crate's private, detailed error and its one mapping into [`wgm_core::Error`].
//!
//! Everything that can fail inside the netlink layer produces a [`NetlinkError`]; the
//! public API converts it with the single `From` impl at the bottom of this file, so the
//! decision "which kernel answer means what to a caller" lives in one place.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

/// What went wrong talking rtnetlink, with enough context to debug it.
///
/// Never carries secrets: the network part handles link names, MTUs, addresses and
/// routes only.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NetlinkError {
    /// The kernel answered a request with a negative errno.
    #[error("{op}: kernel refused: {errno}")]
    Kernel {
        /// The operation, e.g. `add address fd00::1/64 to link wg0`.
        op: String,
        /// The link the operation was about (for `NotFound`).
        link: String,
        /// The errno the kernel returned.
        #[source]
        errno: Errno,
    },

    /// The netlink connection task has gone away (socket closed or runtime shut down).
    #[error("{op}: the netlink connection is closed")]
    ConnectionClosed {
        /// The operation that could not be sent or completed.
        op: String,
    },

    /// A dump ended without `NLMSG_DONE` (the connection broke in the middle), so the
    /// messages received so far are not the whole answer.
    #[error("{op}: the dump ended before NLMSG_DONE; the answer would be incomplete")]
    TruncatedDump {
        /// The dump that was cut short.
        op: String,
    },

    /// A dump was flagged `NLM_F_DUMP_INTR` (the table changed while it was read) on
    /// every attempt.
    #[error("{op}: the dump was interrupted by concurrent changes {attempts} times in a row")]
    DumpInterrupted {
        /// The dump that kept being interrupted.
        op: String,
        /// How many attempts were made.
        attempts: u32,
    },

    /// The socket receive buffer overflowed and the kernel dropped messages.
    #[error("{op}: netlink overrun, messages were lost")]
    Overrun {
        /// The operation during which messages were lost.
        op: String,
    },

    /// An acknowledged request got neither an ACK nor an error back.
    #[error("{op}: no acknowledgement from the kernel")]
    NoAck {
        /// The request that was not acknowledged.
        op: String,
    },

    /// The kernel sent a message of a kind the request cannot produce.
    #[error("{op}: unexpected reply from the kernel: {what}")]
    Unexpected {
        /// The operation.
        op: String,
        /// What arrived instead.
        what: String,
    },

    /// A reply could be decoded but does not make sense (a dump that names a peer twice,
    /// an allowed IP whose family and address disagree).
    #[error("{op}: malformed reply from the kernel: {reason}")]
    BadReply {
        /// The operation.
        op: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The kernel has no WireGuard: the `wireguard` generic netlink family does not
    /// resolve, or the link kind is unknown (the module is neither built in nor
    /// loadable).
    #[error("the kernel has no WireGuard: module `wireguard` is not built in and could not be loaded (modprobe wireguard); the userspace backend (wireguard-go) works without it")]
    NoWireGuard,

    /// A link message lacked an attribute every link has (`IFLA_MTU`).
    #[error("link {link}: the kernel's link message has no {attribute}")]
    MissingAttribute {
        /// The link.
        link: String,
        /// The missing attribute, e.g. `IFLA_MTU`.
        attribute: &'static str,
    },

    /// Opening the netlink socket failed.
    #[error("opening the rtnetlink socket: {0}")]
    Socket(#[source] io::Error),

    /// The constructor was called outside a Tokio runtime.
    #[error("netlink sockets need a Tokio runtime: KernelNetwork and KernelWireGuard run their connection task on it")]
    NoRuntime,

    /// The network namespace file could not be opened.
    #[error("network namespace {path}: {source}")]
    NetnsOpen {
        /// The namespace file, e.g. `/run/netns/test`.
        path: PathBuf,
        /// Why it could not be opened.
        #[source]
        source: io::Error,
    },

    /// `setns(2)` into the namespace failed.
    #[error("entering network namespace {path}: {errno}")]
    NetnsEnter {
        /// The namespace file.
        path: PathBuf,
        /// The errno of `setns(2)`.
        #[source]
        errno: Errno,
    },

    /// The helper thread that opens the socket inside a namespace could not run.
    #[error("helper thread for network namespace {path}: {reason}")]
    NetnsThread {
        /// The namespace file.
        path: PathBuf,
        /// Spawn failure or panic.
        reason: String,
    },

    /// The requested state contradicts state that the kernel holds and that this
    /// backend will not touch (another owner's route, an address with another prefix).
    #[error("{0}")]
    Conflict(String),

    /// A value in the request breaks a rule checked before anything is sent.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Dotted field name.
        field: &'static str,
        /// The rule that was broken.
        reason: String,
    },
}

impl NetlinkError {
    /// The errno behind this error, if the kernel returned one.
    pub(crate) fn errno(&self) -> Option<Errno> {
        match self {
            NetlinkError::Kernel { errno, .. } | NetlinkError::NetnsEnter { errno, .. } => {
                Some(*errno)
            }
            _ => None,
        }
    }
}

impl From<NetlinkError> for wgm_core::Error {
    /// The one place where kernel answers get their meaning:
    /// `ENODEV` → `NotFound { kind: "link" }`; `EPERM`/`EACCES` (missing
    /// `CAP_NET_ADMIN`/`CAP_SYS_ADMIN`) → `PermissionDenied`; a missing namespace file →
    /// `NotFound { kind: "network namespace" }`; conflicts and invalid requests keep their
    /// meaning; everything else → `Backend { backend: "netlink" }` with the detailed
    /// error as its source.
    fn from(e: NetlinkError) -> Self {
        match e {
            NetlinkError::Kernel {
                errno: Errno::ENODEV,
                link,
                ..
            } => wgm_core::Error::not_found("link", link),
            NetlinkError::Kernel {
                errno: Errno::EPERM | Errno::EACCES,
                ref op,
                ..
            } => wgm_core::Error::denied(format!(
                "{op}: the kernel requires CAP_NET_ADMIN in the link's network namespace"
            )),
            NetlinkError::NetnsEnter {
                errno: Errno::EPERM | Errno::EACCES,
                ref path,
            } => wgm_core::Error::denied(format!(
                "entering network namespace {} requires CAP_SYS_ADMIN",
                path.display()
            )),
            NetlinkError::NetnsOpen {
                ref path,
                ref source,
            } if source.kind() == io::ErrorKind::NotFound => {
                wgm_core::Error::not_found("network namespace", path.display())
            }
            NetlinkError::NetnsOpen {
                ref path,
                ref source,
            } if source.kind() == io::ErrorKind::PermissionDenied => {
                wgm_core::Error::denied(format!(
                    "opening network namespace {} is not permitted",
                    path.display()
                ))
            }
            NetlinkError::Kernel {
                errno: Errno::EADDRINUSE,
                ref op,
                ..
            } => wgm_core::Error::conflict(format!(
                "{op}: the listen port is in use by another socket"
            )),
            NetlinkError::NoWireGuard => wgm_core::Error::unsupported(e.to_string()),
            NetlinkError::Conflict(reason) => wgm_core::Error::conflict(reason),
            NetlinkError::Invalid { field, reason } => wgm_core::Error::invalid(field, reason),
            other => wgm_core::Error::backend("netlink", other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(errno: Errno) -> NetlinkError {
        NetlinkError::Kernel {
            op: "set link wg0".into(),
            link: "wg0".into(),
            errno,
        }
    }

    #[test]
    fn enodev_is_link_not_found() {
        let e: wgm_core::Error = kernel(Errno::ENODEV).into();
        assert!(
            matches!(&e, wgm_core::Error::NotFound { kind: "link", id } if id == "wg0"),
            "{e}"
        );
    }

    #[test]
    fn eperm_and_eacces_are_permission_denied() {
        for errno in [Errno::EPERM, Errno::EACCES] {
            let e: wgm_core::Error = kernel(errno).into();
            assert!(matches!(e, wgm_core::Error::PermissionDenied { .. }), "{e}");
        }
    }

    #[test]
    fn other_errnos_are_netlink_backend_errors_with_source() {
        let e: wgm_core::Error = kernel(Errno::EINVAL).into();
        match &e {
            wgm_core::Error::Backend {
                backend: "netlink",
                source,
            } => {
                assert!(source.to_string().contains("set link wg0"), "{source}");
                assert!(source.to_string().contains("EINVAL"), "{source}");
            }
            other => panic!("unexpected mapping: {other:?}"),
        }
        assert_eq!(kernel(Errno::EINVAL).errno(), Some(Errno::EINVAL));
    }

    #[test]
    fn missing_namespace_is_not_found() {
        let e: wgm_core::Error = NetlinkError::NetnsOpen {
            path: "/run/netns/nope".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        }
        .into();
        assert!(
            matches!(
                e,
                wgm_core::Error::NotFound {
                    kind: "network namespace",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn conflict_and_invalid_keep_their_meaning() {
        let e: wgm_core::Error = NetlinkError::Conflict("route 10.0.0.0/24 on wg0".into()).into();
        assert!(matches!(e, wgm_core::Error::Conflict { .. }));
        let e: wgm_core::Error = NetlinkError::Invalid {
            field: "link.mtu",
            reason: "too small".into(),
        }
        .into();
        assert!(e.to_string().contains("link.mtu"));
    }

    /// Every errno a WireGuard set or dump can bring gets its meaning, and the message
    /// names the operation and the interface.
    #[test]
    fn wireguard_errnos_are_typed_and_name_operation_and_interface() {
        let set = |errno| NetlinkError::Kernel {
            op: "set WireGuard device wg7 (message 2 of 3)".into(),
            link: "wg7".into(),
            errno,
        };
        let e: wgm_core::Error = set(Errno::EADDRINUSE).into();
        assert!(matches!(e, wgm_core::Error::Conflict { .. }), "{e}");
        assert!(
            e.to_string().contains("wg7") && e.to_string().contains("listen port"),
            "{e}"
        );
        for errno in [
            Errno::EINVAL,
            Errno::EMSGSIZE,
            Errno::ENOBUFS,
            Errno::EEXIST,
        ] {
            let e: wgm_core::Error = set(errno).into();
            assert!(
                matches!(
                    e,
                    wgm_core::Error::Backend {
                        backend: "netlink",
                        ..
                    }
                ),
                "{e}"
            );
            let source = std::error::Error::source(&e).expect("source").to_string();
            assert!(
                source.contains("wg7") && source.contains("message 2 of 3"),
                "{source}"
            );
            assert!(
                source.contains(errno.desc()) || source.contains(&format!("{errno}")),
                "{source}"
            );
        }
        let e: wgm_core::Error = NetlinkError::NoWireGuard.into();
        assert!(matches!(e, wgm_core::Error::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains("module `wireguard`"), "{e}");
        assert!(e.to_string().contains("wireguard-go"), "{e}");
        let e: wgm_core::Error = NetlinkError::BadReply {
            op: "read WireGuard device wg7".into(),
            reason: "a peer without a public key".into(),
        }
        .into();
        assert!(matches!(e, wgm_core::Error::Backend { .. }), "{e}");
    }

    #[test]
    fn transport_failures_are_backend_errors() {
        for err in [
            NetlinkError::TruncatedDump {
                op: "dump routes".into(),
            },
            NetlinkError::ConnectionClosed {
                op: "dump routes".into(),
            },
            NetlinkError::NoRuntime,
        ] {
            let e: wgm_core::Error = err.into();
            assert!(
                matches!(
                    e,
                    wgm_core::Error::Backend {
                        backend: "netlink",
                        ..
                    }
                ),
                "{e}"
            );
        }
    }
}
