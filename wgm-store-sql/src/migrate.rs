//! Versioned schema migrations, embedded in the binary and applied on open.
//!
//! Hand-rolled rather than `sqlx::migrate!` so that the apply step runs inside the
//! backend's own serialization: SQLite applies under `BEGIN IMMEDIATE` (two processes
//! opening one new file cannot both create the schema), PostgreSQL in one transaction
//! under an advisory lock. Each backend records applied versions in its own
//! `schema_migrations` table; a database recorded at a version newer than this build knows
//! is refused rather than used.

/// One migration: a version (strictly increasing), a name, and its SQL script.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Version, from 1.
    pub version: i64,
    /// Short name, recorded beside the version.
    pub name: &'static str,
    /// The script (several statements).
    pub sql: &'static str,
}

/// The SQLite migrations, oldest first.
#[cfg(feature = "sqlite")]
pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../migrations/sqlite/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "audit_key",
        sql: include_str!("../migrations/sqlite/0002_audit_key.sql"),
    },
    Migration {
        version: 3,
        name: "hosts",
        sql: include_str!("../migrations/sqlite/0003_hosts.sql"),
    },
    Migration {
        version: 4,
        name: "login_throttle",
        sql: include_str!("../migrations/sqlite/0004_login_throttle.sql"),
    },
];

/// The PostgreSQL migrations, oldest first.
#[cfg(feature = "postgres")]
pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "audit_key",
        sql: include_str!("../migrations/postgres/0002_audit_key.sql"),
    },
    Migration {
        version: 3,
        name: "hosts",
        sql: include_str!("../migrations/postgres/0003_hosts.sql"),
    },
    Migration {
        version: 4,
        name: "login_throttle",
        sql: include_str!("../migrations/postgres/0004_login_throttle.sql"),
    },
];

/// The newest version in `list`.
pub(crate) fn latest(list: &[Migration]) -> i64 {
    list.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The migrations of `list` still to apply on a database that recorded `applied`, oldest
/// first; a database recorded at a version newer than this build ships is refused.
pub(crate) fn pending<'a>(
    store: &'static str,
    list: &'a [Migration],
    applied: &[i64],
) -> Result<Vec<&'a Migration>, crate::error::SqlError> {
    let known = latest(list);
    if let Some(&found) = applied.iter().max() {
        if found > known {
            return Err(crate::error::SqlError::SchemaTooNew {
                store,
                found,
                known,
            });
        }
    }
    Ok(list
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(list: &[Migration]) {
        for w in list.windows(2) {
            assert!(w[0].version < w[1].version, "versions must increase");
        }
        assert!(list.first().is_some_and(|m| m.version == 1));
    }

    #[test]
    fn versions_increase_from_one() {
        #[cfg(feature = "sqlite")]
        check(SQLITE);
        #[cfg(feature = "postgres")]
        check(POSTGRES);
        assert_eq!(latest(&[]), 0);
    }

    #[test]
    fn pending_skips_applied_and_refuses_newer_schemas() {
        const LIST: &[Migration] = &[
            Migration {
                version: 1,
                name: "a",
                sql: "",
            },
            Migration {
                version: 2,
                name: "b",
                sql: "",
            },
        ];
        let v = |p: Vec<&Migration>| p.iter().map(|m| m.version).collect::<Vec<_>>();
        assert_eq!(v(pending("sqlite", LIST, &[]).unwrap()), [1, 2]);
        assert_eq!(v(pending("sqlite", LIST, &[1]).unwrap()), [2]);
        assert!(pending("sqlite", LIST, &[1, 2]).unwrap().is_empty());
        assert!(matches!(
            pending("sqlite", LIST, &[1, 2, 3]),
            Err(crate::error::SqlError::SchemaTooNew {
                found: 3,
                known: 2,
                ..
            })
        ));
    }
}
