//! The one public error type of `wgm-core`, shared by every backend and store.
//!
//! Variants are semantic: callers branch on *what* went wrong (bad input, not found,
//! conflict, denied, exhausted pool, unavailable backend) rather than on *where*.
//! Messages name the field and the rule that was broken and never contain a secret:
//! constructors take the field name and a reason written by this crate, never the
//! offending value when that value could be a key, token or password.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

/// A boxed error source, kept as a source (never flattened into a `String`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in wgm, by meaning.
///
/// ```
/// use wgm_core::Error;
/// let e = Error::invalid("peer.name", "must not contain control characters");
/// assert_eq!(e.to_string(), "invalid peer.name: must not contain control characters");
/// assert!(matches!(e, Error::InvalidInput { .. }));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value broke a validation rule. `field` names the field (dotted path),
    /// `reason` states the rule. The value itself is not repeated when it may be secret.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Dotted path of the offending field, e.g. `peer.allowed_ips[2]`.
        field: Cow<'static, str>,
        /// The rule that was broken.
        reason: Cow<'static, str>,
    },

    /// A text document (wg-quick file, UAPI reply, ...) could not be parsed.
    #[error("line {line}: invalid {field}: {reason}")]
    Parse {
        /// 1-based line number in the input.
        line: usize,
        /// The key or section that was being parsed.
        field: Cow<'static, str>,
        /// The rule that was broken.
        reason: Cow<'static, str>,
    },

    /// The object does not exist (or the caller may not know that it exists).
    #[error("{kind} not found: {id}")]
    NotFound {
        /// The kind of object: `server`, `peer`, `user`, `revision`, ...
        kind: &'static str,
        /// The identifier that was looked up (never a secret).
        id: String,
    },

    /// The object already exists (unique name, key or address taken).
    #[error("{kind} already exists: {id}")]
    AlreadyExists {
        /// The kind of object.
        kind: &'static str,
        /// The identifier that clashed (never a secret).
        id: String,
    },

    /// A concurrent change won, or the operation would contradict later history
    /// (for example a rollback to an address that was reassigned since). The
    /// [`ConflictKind`] says which: only [`ConflictKind::StaleRevision`] is a lost
    /// compare-and-swap that a retry on fresh state can cure.
    #[error("conflict: {kind}")]
    Conflict {
        /// What conflicted, naming the object (address, key, revision).
        kind: ConflictKind,
    },

    /// The principal is known but not allowed to do this.
    #[error("permission denied: {reason}")]
    PermissionDenied {
        /// The permission that was missing, e.g. `peer:update on server wg0`.
        reason: Cow<'static, str>,
    },

    /// The caller could not be authenticated (bad password, token or TOTP code).
    /// Deliberately vague about which part was wrong.
    #[error("authentication failed: {reason}")]
    Unauthenticated {
        /// A reason safe to show to the caller.
        reason: Cow<'static, str>,
    },

    /// Too many attempts; try again after the given number of seconds.
    #[error("too many attempts: retry after {retry_after_secs} s")]
    Throttled {
        /// Seconds until the next attempt is allowed.
        retry_after_secs: u64,
    },

    /// An address pool has no free address (or prefix) left.
    #[error("address pool exhausted: {pool}")]
    PoolExhausted {
        /// The pool, as CIDR text.
        pool: String,
    },

    /// The backend or store does not support this operation.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What is not supported, and by whom.
        what: Cow<'static, str>,
    },

    /// A sealed secret could not be opened (wrong or missing master key, moved or
    /// tampered ciphertext). Never yields garbage key material.
    #[error("sealed secret could not be opened: {reason}")]
    Sealed {
        /// Which record could not be opened, and why (never key material).
        reason: Cow<'static, str>,
    },

    /// A WireGuard or network backend failed.
    #[error("{backend} backend: {source}")]
    Backend {
        /// Backend name: `kernel`, `userspace`, `netlink`, `nftables`, `memory`.
        backend: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },

    /// The store failed or is unreachable. Writes fail closed.
    #[error("{store} store: {source}")]
    Store {
        /// Store name: `sqlite`, `postgres`, `redis`, `memory`.
        store: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

/// What an [`Error::Conflict`] is about. Each case displays exactly the message wgm
/// has always shown for it; callers that must act differently (retry, or report a
/// taken value) match on the case instead of the text.
///
/// The store contract ([`crate::store::ServerStore::commit`]) uses three of them:
/// [`StaleRevision`](ConflictKind::StaleRevision) is a lost compare-and-swap (retry on
/// fresh state), [`Taken`](ConflictKind::Taken) a unique value held twice (do not retry),
/// [`StaleUser`](ConflictKind::StaleUser) a lost compare-and-swap on a user record.
///
/// ```
/// use wgm_core::error::{ConflictKind, Taken};
/// let k = ConflictKind::Taken(Taken::Address("fd00::2".parse().unwrap()));
/// assert_eq!(k.to_string(), "address fd00::2 is assigned to two peers");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConflictKind {
    /// A commit was computed against a revision that is no longer the server's head:
    /// a concurrent commit won. Retrying on fresh state can succeed.
    ///
    /// The fields are the plain values of a `model::ServerId` and of `model::RevisionNo`s:
    /// `error` is the bottom layer of the crate and names no domain type (the domain
    /// types' parsers return this `Error`, so naming them here would make the two modules
    /// import each other).
    #[error("server {server} is at revision {actual}, not {expected}")]
    StaleRevision {
        /// The server (the UUID inside its `ServerId`).
        server: uuid::Uuid,
        /// The head the commit expected (a `RevisionNo`'s number).
        expected: u64,
        /// The head the store holds (a `RevisionNo`'s number).
        actual: u64,
    },
    /// A user record was updated from a version that is no longer the stored one.
    #[error("user {user} was changed concurrently")]
    StaleUser {
        /// The user's name.
        user: String,
    },
    /// A value that must be unique within a server would be held twice.
    #[error("{0}")]
    Taken(Taken),
    /// An address or prefix is still in quarantine after its release.
    #[error("{field}: {value} is quarantined until {until}")]
    Quarantined {
        /// The field that asked for it.
        field: String,
        /// The address or prefix.
        value: String,
        /// When it leaves quarantine.
        until: time::OffsetDateTime,
    },
    /// The hash chain of the audit log does not verify at record `seq`.
    #[error("{0}")]
    AuditChainBroken(AuditBreak),
    /// A stored revision is not what wgm wrote: its MAC does not verify, it carries no
    /// MAC although it was written after the audit key existed, its stored columns
    /// disagree with its body, or it is not where its number says. Nothing built on it
    /// (a history, a diff, a rollback) is returned.
    #[error("revision {revision} of server {server} was altered or forged ({reason})")]
    RevisionAltered {
        /// The server (the UUID inside its `ServerId`).
        server: uuid::Uuid,
        /// The revision's number.
        revision: u64,
        /// Which check failed.
        reason: &'static str,
    },
    /// Any other conflict, described by its reason.
    #[error("{reason}")]
    Other {
        /// What conflicted, naming the object.
        reason: Cow<'static, str>,
    },
}

/// Which unique value a [`ConflictKind::Taken`] is about.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Taken {
    /// An address is assigned to two peers of a server.
    #[error("address {0} is assigned to two peers")]
    Address(IpAddr),
    /// A prefix is delegated to two peers of a server.
    #[error("prefix {0} is delegated to two peers")]
    Prefix(ipnet::Ipv6Net),
    /// A peer's public key equals the server's own.
    #[error("peer.public_key: equals the server's own public key")]
    ServerKey,
    /// A unique constraint of a database (the second line of defence) was violated.
    #[error("{kind}: unique constraint {constraint} was violated")]
    Constraint {
        /// The kind of record (`peer`, `server`, ...).
        kind: &'static str,
        /// The constraint, as the database names it.
        constraint: String,
    },
}

/// How the audit chain is broken (see [`crate::integrity::ChainVerifier`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditBreak {
    /// A record is missing: the sequence jumps.
    #[error(
        "audit chain broken: expected record {expected}, found {found} (a record was deleted)"
    )]
    Missing {
        /// The sequence number that should come next.
        expected: u64,
        /// The sequence number found.
        found: u64,
    },
    /// The record does not link to the hash of its predecessor.
    #[error("audit chain broken at record {seq}: previous hash does not match")]
    PreviousHash {
        /// The record.
        seq: u64,
    },
    /// The record's contents do not match its hash.
    #[error("audit chain broken at record {seq}: contents were altered")]
    Altered {
        /// The record.
        seq: u64,
    },
    /// A stored column of the record (one the queries filter on) disagrees with the
    /// hashed entry.
    #[error("audit chain broken at record {seq}: column {column} does not match the hashed entry")]
    Column {
        /// The record.
        seq: u64,
        /// The column (`at_ns`, `actor`, `server_id`, `object`).
        column: &'static str,
    },
    /// The record carries an unkeyed (SHA-256) link although it comes after the records
    /// that existed when the audit key was created: someone recomputed the chain
    /// without the key.
    #[error("audit chain broken at record {seq}: unkeyed link after the audit key was created")]
    Unkeyed {
        /// The record.
        seq: u64,
    },
    /// The last record of the log is not the stored head: records were deleted from the
    /// end, or the head was rewritten.
    #[error("audit chain broken: the log ends at record {found}, but the stored head is record {stored} (records deleted from the end, or the head rewritten)")]
    Head {
        /// The sequence number of the stored head.
        stored: u64,
        /// The sequence number of the last record found.
        found: u64,
    },
    /// A head exported earlier (`--expect SEQ:HASH`) is not a record of the chain with
    /// that hash: the log was truncated below it or rewritten.
    #[error("audit chain broken: the expected head, record {seq}, is not in the chain with that hash (truncated or rewritten)")]
    Expected {
        /// The expected head's sequence number.
        seq: u64,
    },
    /// The last record written before the audit key was created is missing or not the
    /// one bound into the sealed key: the unkeyed prefix was truncated or rewritten.
    #[error("audit chain broken at record {seq}: the unkeyed records written before the audit key were truncated or rewritten")]
    Legacy {
        /// The last unkeyed record's sequence number.
        seq: u64,
    },
}

impl Error {
    /// An [`Error::InvalidInput`] for `field` breaking `reason`.
    ///
    /// ```
    /// let e = wgm_core::Error::invalid("server.mtu", "must be at least 1280 with IPv6");
    /// assert!(e.to_string().contains("server.mtu"));
    /// ```
    pub fn invalid(
        field: impl Into<Cow<'static, str>>,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        Error::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Parse`] at `line` for `field` breaking `reason`.
    pub fn parse(
        line: usize,
        field: impl Into<Cow<'static, str>>,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        Error::Parse {
            line,
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::NotFound`] for an object of `kind` with identifier `id`.
    pub fn not_found(kind: &'static str, id: impl fmt::Display) -> Self {
        Error::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    /// An [`Error::AlreadyExists`] for an object of `kind` with identifier `id`.
    pub fn already_exists(kind: &'static str, id: impl fmt::Display) -> Self {
        Error::AlreadyExists {
            kind,
            id: id.to_string(),
        }
    }

    /// An [`Error::Conflict`] of kind [`ConflictKind::Other`] with the given reason: a
    /// conflict no caller needs to tell apart from others by its kind.
    ///
    /// ```
    /// let e = wgm_core::Error::conflict("the peer's owner changed concurrently");
    /// assert_eq!(e.to_string(), "conflict: the peer's owner changed concurrently");
    /// ```
    pub fn conflict(reason: impl Into<Cow<'static, str>>) -> Self {
        Error::Conflict {
            kind: ConflictKind::Other {
                reason: reason.into(),
            },
        }
    }

    /// An [`Error::Conflict`] of the given kind.
    ///
    /// ```
    /// use wgm_core::error::{ConflictKind, Taken};
    /// let e = wgm_core::Error::conflict_of(ConflictKind::Taken(Taken::ServerKey));
    /// assert_eq!(e.to_string(), "conflict: peer.public_key: equals the server's own public key");
    /// ```
    pub fn conflict_of(kind: ConflictKind) -> Self {
        Error::Conflict { kind }
    }

    /// The kind of an [`Error::Conflict`]; `None` for every other variant.
    pub fn conflict_kind(&self) -> Option<&ConflictKind> {
        match self {
            Error::Conflict { kind } => Some(kind),
            _ => None,
        }
    }

    /// Whether this is a lost compare-and-swap on a server's head revision
    /// ([`ConflictKind::StaleRevision`]): the only store error a retry on fresh state can
    /// cure.
    ///
    /// ```
    /// use wgm_core::error::ConflictKind;
    /// let e = wgm_core::Error::conflict_of(ConflictKind::StaleRevision {
    ///     server: uuid::Uuid::nil(),
    ///     expected: 1,
    ///     actual: 2,
    /// });
    /// assert!(e.is_stale_revision());
    /// assert!(!wgm_core::Error::conflict("x").is_stale_revision());
    /// ```
    pub fn is_stale_revision(&self) -> bool {
        matches!(
            self,
            Error::Conflict {
                kind: ConflictKind::StaleRevision { .. }
            }
        )
    }

    /// An [`Error::PermissionDenied`] with the given reason.
    pub fn denied(reason: impl Into<Cow<'static, str>>) -> Self {
        Error::PermissionDenied {
            reason: reason.into(),
        }
    }

    /// An [`Error::Unauthenticated`] with the given reason.
    pub fn unauthenticated(reason: impl Into<Cow<'static, str>>) -> Self {
        Error::Unauthenticated {
            reason: reason.into(),
        }
    }

    /// An [`Error::Unsupported`] naming what is not supported.
    pub fn unsupported(what: impl Into<Cow<'static, str>>) -> Self {
        Error::Unsupported { what: what.into() }
    }

    /// An [`Error::Sealed`] with the given reason.
    pub fn sealed(reason: impl Into<Cow<'static, str>>) -> Self {
        Error::Sealed {
            reason: reason.into(),
        }
    }

    /// An [`Error::Backend`] wrapping `source`.
    pub fn backend(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            backend,
            source: source.into(),
        }
    }

    /// An [`Error::Store`] wrapping `source`.
    pub fn store(store: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Store {
            store,
            source: source.into(),
        }
    }

    /// Prefix the field of an [`Error::InvalidInput`] or [`Error::Parse`] with `prefix`
    /// (`address` becomes `peer.address`); other variants are returned unchanged.
    ///
    /// ```
    /// let e = wgm_core::Error::invalid("mtu", "too small").in_field("server");
    /// assert_eq!(e.to_string(), "invalid server.mtu: too small");
    /// ```
    #[must_use]
    pub fn in_field(self, prefix: &str) -> Self {
        match self {
            Error::InvalidInput { field, reason } => Error::InvalidInput {
                field: format!("{prefix}.{field}").into(),
                reason,
            },
            Error::Parse {
                line,
                field,
                reason,
            } => Error::Parse {
                line,
                field: format!("{prefix}.{field}").into(),
                reason,
            },
            other => other,
        }
    }

    /// A stable, machine-readable code for the variant (used by the CLI's exit codes,
    /// the REST API and the Python exception hierarchy).
    ///
    /// ```
    /// assert_eq!(wgm_core::Error::conflict("x").code(), "conflict");
    /// ```
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidInput { .. } => "invalid_input",
            Error::Parse { .. } => "parse",
            Error::NotFound { .. } => "not_found",
            Error::AlreadyExists { .. } => "already_exists",
            Error::Conflict { .. } => "conflict",
            Error::PermissionDenied { .. } => "permission_denied",
            Error::Unauthenticated { .. } => "unauthenticated",
            Error::Throttled { .. } => "throttled",
            Error::PoolExhausted { .. } => "pool_exhausted",
            Error::Unsupported { .. } => "unsupported",
            Error::Sealed { .. } => "sealed",
            Error::Backend { .. } => "backend",
            Error::Store { .. } => "store",
        }
    }
}
