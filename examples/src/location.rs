//! Where wgm keeps its state: the store URL (`--store`, `WGM_STORE`, or the default
//! SQLite file in the user's data directory) and the default master key file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wgm_core::store::Store;
use wgm_core::{Error, Result};

/// File name of the default database inside the data directory.
pub const DEFAULT_DB_FILE: &str = "wgm.db";

/// File name of the default master key inside the data directory.
pub const DEFAULT_KEY_FILE: &str = "wgm.key";

/// The user's data directory for wgm: `$XDG_DATA_HOME/wgm` when that is an absolute
/// path, else `$HOME/.local/share/wgm` (the same rule for root). `Store` error when
/// neither is set, so the caller can ask for `--store`.
///
/// ```
/// let d = wgm_cli::location::data_dir_from(None, Some("/home/ada".as_ref())).unwrap();
/// assert_eq!(d, std::path::Path::new("/home/ada/.local/share/wgm"));
/// let d = wgm_cli::location::data_dir_from(Some("/x".as_ref()), None).unwrap();
/// assert_eq!(d, std::path::Path::new("/x/wgm"));
/// ```
pub fn data_dir_from(xdg_data_home: Option<&Path>, home: Option<&Path>) -> Result<PathBuf> {
    // The XDG spec says relative values are invalid and must be ignored.
    if let Some(x) = xdg_data_home.filter(|p| p.is_absolute()) {
        return Ok(x.join("wgm"));
    }
    if let Some(h) = home.filter(|p| p.is_absolute()) {
        return Ok(h.join(".local/share/wgm"));
    }
    Err(Error::store(
        "sqlite",
        "neither XDG_DATA_HOME nor HOME is set to an absolute path; give --store URL",
    ))
}

/// [`data_dir_from`] with the process environment.
pub fn data_dir() -> Result<PathBuf> {
    let xdg = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from);
    let home = std::env::var_os("HOME").map(PathBuf::from);
    data_dir_from(xdg.as_deref(), home.as_deref())
}

/// A parsed store URL.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreLocation {
    /// An SQLite database file (created on first use, mode `0600`).
    SqliteFile {
        /// The database file.
        path: PathBuf,
        /// The URL handed to the SQL store.
        url: String,
    },
    /// A private in-memory SQLite database (gone when the process exits).
    SqliteMemory {
        /// The URL handed to the SQL store.
        url: String,
    },
    /// A PostgreSQL database.
    Postgres {
        /// The URL (may contain a password: never print it, use [`StoreLocation::redacted`]).
        url: String,
    },
    /// A Redis store (`wgm_store_redis`). A `namespace=NAME` query parameter selects
    /// the store's key namespace (default `wgm`); the rest of the URL goes to Redis.
    Redis {
        /// The URL (may contain a password).
        url: String,
    },
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl StoreLocation {
    /// The default store: `sqlite://<data dir>/wgm.db`.
    pub fn default_sqlite(data_dir: &Path) -> StoreLocation {
        let path = data_dir.join(DEFAULT_DB_FILE);
        StoreLocation::SqliteFile {
            url: sqlite_url(&path, None),
            path,
        }
    }

    /// Parse a store URL: `sqlite://PATH[?query]` (also `sqlite:PATH`; a relative path
    /// is taken relative to the working directory), `sqlite::memory:`,
    /// `postgres://…`/`postgresql://…`, `redis://…`/`rediss://…`. Other schemes are
    /// invalid input naming the field `store`.
    ///
    /// ```
    /// use wgm_cli::location::StoreLocation;
    /// let l = StoreLocation::parse("sqlite:///var/lib/wgm/wgm.db").unwrap();
    /// assert!(matches!(l, StoreLocation::SqliteFile { ref path, .. } if path.as_os_str() == "/var/lib/wgm/wgm.db"));
    /// assert!(StoreLocation::parse("mysql://x").is_err());
    /// let pg = StoreLocation::parse("postgres://wgm:hunter2@db/wgm").unwrap();
    /// assert!(!pg.redacted().contains("hunter2"));
    /// ```
    pub fn parse(url: &str) -> Result<StoreLocation> {
        const FIELD: &str = "store";
        if url.chars().any(char::is_control) {
            return Err(Error::invalid(FIELD, "must not contain control characters"));
        }
        if url == "sqlite::memory:" || url.starts_with("sqlite::memory:?") {
            return Ok(StoreLocation::SqliteMemory {
                url: url.to_owned(),
            });
        }
        if let Some(rest) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let (path, query) = match rest.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (rest, None),
            };
            if path.is_empty() {
                return Err(Error::invalid(FIELD, "an sqlite URL needs a file path"));
            }
            let path = PathBuf::from(path);
            return Ok(StoreLocation::SqliteFile {
                url: sqlite_url(&path, query),
                path,
            });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreLocation::Postgres {
                url: url.to_owned(),
            });
        }
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            return Ok(StoreLocation::Redis {
                url: url.to_owned(),
            });
        }
        Err(Error::invalid(
            FIELD,
            "must be sqlite://PATH, sqlite::memory:, postgres://… or redis://…",
        ))
    }

    /// The URL for display: an SQLite file as `sqlite://PATH`, other URLs with any
    /// password (and query string) replaced by `***`.
    pub fn redacted(&self) -> String {
        match self {
            StoreLocation::SqliteFile { path, .. } => format!("sqlite://{}", path.display()),
            StoreLocation::SqliteMemory { url } => url.clone(),
            StoreLocation::Postgres { url } | StoreLocation::Redis { url } => redact_url(url),
        }
    }

    /// The master key file used when none is given: beside an SQLite file (`wgm.db` →
    /// `wgm.key`, `x.sqlite` → `x.key`), else `wgm.key` in the data directory.
    pub fn default_key_file(&self, data_dir: Option<&Path>) -> Option<PathBuf> {
        match self {
            StoreLocation::SqliteFile { path, .. } => Some(path.with_extension("key")),
            _ => data_dir.map(|d| d.join(DEFAULT_KEY_FILE)),
        }
    }

    /// Open the store, creating an SQLite file (mode `0600`, in a `0700` directory when
    /// the directory is new) on first use. Returns the store and whether the database
    /// file was created now.
    pub async fn open(&self) -> Result<(Arc<dyn Store>, bool)> {
        match self {
            StoreLocation::SqliteFile { path, url } => {
                let created = prepare_sqlite_file(path)?;
                let store = wgm_store_sql::SqlStore::open(url).await?;
                Ok((Arc::new(store), created))
            }
            StoreLocation::SqliteMemory { url } | StoreLocation::Postgres { url } => {
                let store = wgm_store_sql::SqlStore::open(url).await?;
                Ok((Arc::new(store), false))
            }
            StoreLocation::Redis { url } => {
                if url.starts_with("rediss://") {
                    return Err(Error::unsupported(
                        "TLS to Redis (rediss://) is not built in; use redis:// on a trusted \
                         network, or a local TLS tunnel",
                    ));
                }
                let (url, namespace) = redis_namespace(url);
                let mut options = wgm_store_redis::RedisOptions::default();
                if let Some(ns) = namespace {
                    options = options.namespace(ns);
                }
                let store = wgm_store_redis::RedisStore::open(&url, options).await?;
                Ok((Arc::new(store), false))
            }
        }
    }
}

/// A Redis URL without its `namespace=NAME` query parameter, and that name (the last one
/// given). Other parameters stay, in their order.
fn redis_namespace(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut namespace = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.strip_prefix("namespace=") {
            Some(ns) => {
                namespace = Some(ns.to_owned());
                false
            }
            None => !kv.is_empty(),
        })
        .collect();
    if rest.is_empty() {
        (base.to_owned(), namespace)
    } else {
        (format!("{base}?{}", rest.join("&")), namespace)
    }
}

fn sqlite_url(path: &Path, query: Option<&str>) -> String {
    let query = match query {
        Some(q) if q.split('&').any(|kv| kv.starts_with("mode=")) => q.to_owned(),
        Some(q) if !q.is_empty() => format!("{q}&mode=rwc"),
        _ => "mode=rwc".to_owned(),
    };
    format!("sqlite://{}?{query}", path.display())
}

fn prepare_sqlite_file(path: &Path) -> Result<bool> {
    let io = |what: &str, e: std::io::Error| {
        Error::store("sqlite", format!("{what} {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::files::create_private_dir_all(dir)
            .map_err(|e| io("cannot create the directory of", e))?;
    }
    crate::files::touch_private(path).map_err(|e| io("cannot create", e))
}

/// `scheme://user:password@host/...` → `scheme://user:***@host/...`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    // Query strings may carry a password too (`?password=`).
    let tail = match tail.split_once('?') {
        Some((path, _)) => format!("{path}?***"),
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls() {
        let l = StoreLocation::parse("sqlite:relative/x.db").unwrap();
        let StoreLocation::SqliteFile { path, url } = l else {
            panic!("not a file")
        };
        assert_eq!(path, Path::new("relative/x.db"));
        assert_eq!(url, "sqlite://relative/x.db?mode=rwc");
        let l = StoreLocation::parse("sqlite:///a/b.db?cache=shared").unwrap();
        let StoreLocation::SqliteFile { url, .. } = &l else {
            panic!("not a file")
        };
        assert_eq!(url, "sqlite:///a/b.db?cache=shared&mode=rwc");
        assert_eq!(l.default_key_file(None).unwrap(), Path::new("/a/b.key"));
        assert!(StoreLocation::parse("sqlite://").is_err());
        assert!(matches!(
            StoreLocation::parse("sqlite::memory:").unwrap(),
            StoreLocation::SqliteMemory { .. }
        ));
    }

    #[test]
    fn default_paths() {
        let l = StoreLocation::default_sqlite(Path::new("/h/.local/share/wgm"));
        assert_eq!(
            l.default_key_file(None).unwrap(),
            Path::new("/h/.local/share/wgm/wgm.key")
        );
        let pg = StoreLocation::parse("postgres://db/wgm").unwrap();
        assert_eq!(
            pg.default_key_file(Some(Path::new("/d"))).unwrap(),
            Path::new("/d/wgm.key")
        );
        assert!(data_dir_from(Some(Path::new("rel")), None).is_err());
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db?sslmode=require"),
            "postgres://u:***@h:5432/db?***"
        );
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(
            redis_namespace("redis://h:6379/2?namespace=t1&protocol=resp3"),
            (
                "redis://h:6379/2?protocol=resp3".to_owned(),
                Some("t1".to_owned())
            )
        );
        assert_eq!(
            redis_namespace("redis://h?namespace=a&namespace=b"),
            ("redis://h".to_owned(), Some("b".to_owned()))
        );
        assert_eq!(redis_namespace("redis://h"), ("redis://h".to_owned(), None));
        assert_eq!(redact_url("redis://:pw@h"), "redis://:***@h");
        assert!(StoreLocation::parse("bogus\n").is_err());
    }
}
