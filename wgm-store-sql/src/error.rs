//! The crate's private detailed error, mapped into [`wgm_core::Error`] in one `From` impl.

use std::borrow::Cow;

use sqlx::error::{DatabaseError, ErrorKind};

/// What went wrong inside the SQL store, in detail. Never leaves the crate: every public
/// function returns [`wgm_core::Error`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum SqlError {
    /// A semantic outcome decided by the commit rules (`wgm_core::store::rules`):
    /// conflict, not found, ...
    #[error(transparent)]
    Core(#[from] wgm_core::Error),

    /// The database (or the connection to it) failed.
    #[error("{source}")]
    Db {
        /// `sqlite` or `postgres`.
        store: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },

    /// A stored JSON body does not decode into the model (a corrupt or foreign row).
    #[error("a stored {what} does not decode: {source}")]
    Corrupt {
        /// `sqlite` or `postgres`.
        store: &'static str,
        /// The kind of row.
        what: &'static str,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },

    /// A value could not be encoded to JSON (cannot happen for the model's own types).
    #[error("cannot encode a {what}: {source}")]
    Encode {
        /// `sqlite` or `postgres`.
        store: &'static str,
        /// The kind of value.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },

    /// A stored value is outside its domain (a negative revision, an unparsable id).
    #[error("a stored {what} is invalid")]
    BadValue {
        /// `sqlite` or `postgres`.
        store: &'static str,
        /// What was invalid.
        what: &'static str,
    },

    /// The database was migrated by a newer wgm than this one.
    #[error(
        "the database schema is at version {found}, newer than this build of wgm knows ({known})"
    )]
    SchemaTooNew {
        /// `sqlite` or `postgres`.
        store: &'static str,
        /// The newest version recorded in the database.
        found: i64,
        /// The newest version this build ships.
        known: i64,
    },

    /// No connection to the database could be opened within `waited`.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    #[error("cannot connect within {} s: {cause}", waited.as_secs_f32())]
    Unreachable {
        /// `postgres`.
        store: &'static str,
        /// How long the open waited.
        waited: std::time::Duration,
        /// Why, as one direct attempt told (never the URL: it may hold a password).
        cause: String,
    },

    /// The URL names no backend this build supports.
    #[error("{reason}")]
    Url {
        /// Why the URL was refused (never the URL itself: it may hold a password).
        reason: Cow<'static, str>,
    },
}

impl SqlError {
    /// The database error inside, if any.
    fn database(&self) -> Option<&(dyn DatabaseError + 'static)> {
        match self {
            SqlError::Db {
                source: sqlx::Error::Database(e),
                ..
            } => Some(&**e),
            _ => None,
        }
    }

    /// Whether the whole transaction may be retried: PostgreSQL serialization failures
    /// (40001), deadlocks (40P01) and unique violations (23505, "picked a free value after
    /// reading" races; the retry then sees the winner and fails cleanly); SQLite
    /// `SQLITE_BUSY`/`SQLITE_LOCKED` that outlasted the busy timeout.
    pub(crate) fn is_retryable(&self) -> bool {
        let Some(db) = self.database() else {
            return false;
        };
        let Some(code) = db.code() else { return false };
        match self {
            SqlError::Db {
                store: "postgres", ..
            } => matches!(&*code, "40001" | "40P01" | "23505"),
            SqlError::Db {
                store: "sqlite", ..
            } => {
                // Extended result codes carry the primary code in the low byte.
                code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
            }
            _ => false,
        }
    }
}

/// The kind of object a constraint protects, and whether a clash is an "already exists"
/// (names, ids, keys) or a conflict (addresses, prefixes).
fn constraint_meaning(constraint: &str) -> (&'static str, bool) {
    let c = constraint.to_ascii_lowercase();
    let kind = if c.contains("peers") {
        "peer"
    } else if c.contains("servers") || c.contains("heads") {
        "server"
    } else if c.contains("users") {
        "user"
    } else if c.contains("tokens") {
        "token"
    } else if c.contains("roles") {
        "role"
    } else {
        "record"
    };
    let is_address = c.contains("address") || c.contains("prefix");
    (kind, !is_address)
}

impl From<SqlError> for wgm_core::Error {
    fn from(e: SqlError) -> Self {
        use wgm_core::Error;
        if let Some(db) = e.database() {
            if db.kind() == ErrorKind::UniqueViolation {
                // PostgreSQL names the constraint; SQLite names the columns in its message
                // ("UNIQUE constraint failed: peers.server_id, peers.address_v6").
                let what = db.constraint().unwrap_or_else(|| db.message()).to_owned();
                let (kind, exists) = constraint_meaning(&what);
                return if exists {
                    Error::already_exists(kind, format!("(unique constraint {what})"))
                } else {
                    Error::conflict_of(wgm_core::error::ConflictKind::Taken(
                        wgm_core::error::Taken::Constraint {
                            kind,
                            constraint: what,
                        },
                    ))
                };
            }
            if db.kind() == ErrorKind::ForeignKeyViolation {
                return Error::conflict(format!(
                    "a referenced record was removed concurrently ({})",
                    db.constraint().unwrap_or("foreign key")
                ));
            }
        }
        match e {
            SqlError::Core(e) => e,
            SqlError::Url { reason } => Error::invalid("store.url", reason),
            SqlError::Db { store, source } => Error::store(store, source),
            other @ (SqlError::Corrupt { store, .. }
            | SqlError::Encode { store, .. }
            | SqlError::BadValue { store, .. }
            | SqlError::SchemaTooNew { store, .. }
            | SqlError::Unreachable { store, .. }) => Error::store(store, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraint_names_map_to_meanings() {
        assert_eq!(
            constraint_meaning("peers_address_v6_unique"),
            ("peer", false)
        );
        assert_eq!(
            constraint_meaning("UNIQUE constraint failed: peers.server_id, peers.name_key"),
            ("peer", true)
        );
        assert_eq!(constraint_meaning("servers_name_unique"), ("server", true));
        assert_eq!(constraint_meaning("heads_pkey"), ("server", true));
        assert_eq!(constraint_meaning("users_email_unique"), ("user", true));
        assert_eq!(constraint_meaning("peers_prefix_unique"), ("peer", false));
    }

    #[test]
    fn core_errors_pass_through_and_urls_are_invalid_input() {
        let e: wgm_core::Error = SqlError::Core(wgm_core::Error::conflict("x")).into();
        assert_eq!(e.code(), "conflict");
        let e: wgm_core::Error = SqlError::Url {
            reason: "unknown scheme".into(),
        }
        .into();
        assert_eq!(e.code(), "invalid_input");
        let e: wgm_core::Error = SqlError::BadValue {
            store: "sqlite",
            what: "revision",
        }
        .into();
        assert_eq!(e.code(), "store");
        assert!(!SqlError::BadValue {
            store: "sqlite",
            what: "x"
        }
        .is_retryable());
    }
}
