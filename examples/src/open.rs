//! Opening a manager the way every front end of this package does (the CLI, the Python
//! bindings): the store at a URL (or the default SQLite file), the master key from a
//! file, a value or the defaults, a check that the key is the store's, and the manager
//! on tokio's clock.
//!
//! ```no_run
//! # async fn demo() -> wgm_core::Result<()> {
//! use wgm_cli::open::{open, KeySource, OpenOptions};
//! let opened = open(OpenOptions {
//!     store: Some("sqlite::memory:".into()),
//!     key: KeySource::Default,
//!     local_admin: true,
//!     jwt: None,
//! })
//! .await?;
//! let admin = opened.local.as_ref().expect("asked for").principal("ada");
//! let servers = opened.manager.list_servers(&admin, wgm_core::model::Page::ALL).await?;
//! # let _ = servers; Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use wgm_core::manager::{LocalAdmin, Manager};
use wgm_core::model::{Change, Page, RevisionNo, ServerId};
use wgm_core::seal::{MasterKey, SealedSecret, Sealer, SecretKind};
use wgm_core::store::Store;
use wgm_core::{Error, Result};
use zeroize::Zeroizing;

use crate::location::{self, StoreLocation};
use crate::master_key;

/// Where the master key comes from.
#[derive(Clone, Debug, Default)]
pub enum KeySource {
    /// This key file (created while the store is still empty).
    File(PathBuf),
    /// This key, as the text of a key file (base64 of 32 bytes).
    Text(Zeroizing<String>),
    /// `WGM_MASTER_KEY` when set, else the key file beside the SQLite file (created
    /// while the store is still empty), else a throw-away key for an in-memory store.
    #[default]
    Default,
}

/// Where the master key came from.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum KeyOrigin {
    /// A key file.
    File {
        /// Its path.
        path: PathBuf,
        /// Whether this run created it.
        created: bool,
    },
    /// The `WGM_MASTER_KEY` environment variable.
    Env,
    /// A key given as a value ([`KeySource::Text`]).
    Value,
    /// A throw-away key for an in-memory store.
    Ephemeral,
}

/// What to open.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Store URL (`sqlite:PATH`, `sqlite::memory:`, `postgres://…`); `None` is the default
    /// SQLite file in the user's data directory.
    pub store: Option<String>,
    /// The master key.
    pub key: KeySource,
    /// Also hand out the local-administrator capability: for a process run by whoever
    /// holds the host and the master key (the CLI, a script), never for a service that
    /// acts for other people.
    pub local_admin: bool,
    /// The issuer of the JWTs of password logins (`Manager::login`); without one, a
    /// password login is `Unsupported`.
    pub jwt: Option<wgm_core::auth::jwt::JwtIssuer>,
}

/// An open manager.
pub struct Opened {
    /// The manager.
    pub manager: Manager,
    /// The local-administrator capability, when it was asked for.
    pub local: Option<LocalAdmin>,
    /// The store's location.
    pub location: StoreLocation,
    /// Whether this run created the database file.
    pub store_created: bool,
    /// Where the master key came from.
    pub key_origin: KeyOrigin,
}

/// Open the store, load (or on first use create) the master key, check that it is the
/// store's key, and build the manager, with commit retries waiting on tokio's timer.
/// Needs a tokio runtime.
pub async fn open(o: OpenOptions) -> Result<Opened> {
    let location = match &o.store {
        Some(url) => StoreLocation::parse(url)?,
        None => StoreLocation::default_sqlite(&location::data_dir()?),
    };
    let (store, store_created) = location.open().await?;
    let (key, key_origin) = load_master_key(o.key, &location, store.as_ref()).await?;
    let sealer = Sealer::new(key);
    check_master_key(store.as_ref(), &sealer).await?;
    let mut builder = Manager::builder(store, sealer).clock(Arc::new(crate::clock::TokioClock));
    if let Some(jwt) = o.jwt {
        builder = builder.jwt(jwt);
    }
    let (manager, local) = if o.local_admin {
        let (m, l) = builder.build_with_local_admin();
        (m, Some(l))
    } else {
        (builder.build(), None)
    };
    Ok(Opened {
        manager,
        local,
        location,
        store_created,
        key_origin,
    })
}

/// Whether the store holds nothing that could be sealed yet (no server, no user).
async fn store_is_empty(store: &dyn Store) -> Result<bool> {
    Ok(store.list_servers(Page::first(1)).await?.is_empty()
        && store.list_users(Page::first(1)).await?.is_empty())
}

/// The master key of `source`. A missing key file is created only while the store is
/// still empty: a new key for a store full of secrets sealed under another one would
/// only make every secret unreadable.
async fn load_master_key(
    source: KeySource,
    location: &StoreLocation,
    store: &dyn Store,
) -> Result<(MasterKey, KeyOrigin)> {
    let path = match source {
        KeySource::File(p) => p,
        KeySource::Text(t) => {
            let key = MasterKey::from_base64(t.trim_end_matches(['\n', '\r'])).map_err(|_| {
                Error::sealed(
                    "the master key given is not valid (must be 44 characters of standard base64)",
                )
            })?;
            return Ok((key, KeyOrigin::Value));
        }
        KeySource::Default => {
            if let Some(v) = std::env::var_os(master_key::ENV_MASTER_KEY).filter(|v| !v.is_empty())
            {
                let v = Zeroizing::new(v.into_string().map_err(|_| {
                    Error::sealed(format!(
                        "{} is not a valid master key (not UTF-8)",
                        master_key::ENV_MASTER_KEY
                    ))
                })?);
                return Ok((master_key::key_from_env(&v)?, KeyOrigin::Env));
            }
            let data_dir = location::data_dir().ok();
            match location.default_key_file(data_dir.as_deref()) {
                Some(p) => p,
                None if matches!(location, StoreLocation::SqliteMemory { .. }) => {
                    return Ok((MasterKey::generate(), KeyOrigin::Ephemeral));
                }
                None => {
                    return Err(Error::sealed(
                        "no master key: give a master key file or WGM_MASTER_KEY",
                    ))
                }
            }
        }
    };
    if let Some(key) = master_key::read_key_file(&path)? {
        return Ok((
            key,
            KeyOrigin::File {
                path,
                created: false,
            },
        ));
    }
    if !store_is_empty(store).await? {
        return Err(Error::sealed(format!(
            "master key file {} does not exist, but the store already holds sealed secrets; \
             give the key it was created with",
            path.display()
        )));
    }
    let (key, created) = master_key::create_key_file(&path)?;
    Ok((key, KeyOrigin::File { path, created }))
}

/// Refuse a master key that is not the one the store's secrets were sealed with, before
/// anything is read or written: one sealed server key is opened as the witness. Without
/// this, a wrong key would seal new secrets under a second key and mix the store.
///
/// The witness is the key in the first server's first revision (one small record); only
/// when that does not open is the server's current state loaded and its key tried, so a
/// store whose old revisions predate a re-seal is judged by what it holds now.
pub async fn check_master_key(store: &dyn Store, sealer: &Sealer) -> Result<()> {
    let Some(first) = store.list_servers(Page::first(1)).await?.into_iter().next() else {
        return Ok(());
    };
    let opens = |id: &ServerId, sealed: &SealedSecret| {
        sealer
            .open_private_key(SecretKind::ServerPrivateKey, &id.to_string(), sealed)
            .map(drop)
    };
    let created = store.revisions(first.id, RevisionNo::NONE, 1).await?;
    let witness = created
        .iter()
        .flat_map(|r| &r.changes)
        .find_map(|c| match c {
            Change::ServerCreated { server } => Some(server.private_key.clone()),
            _ => None,
        });
    if witness.is_some_and(|w| opens(&first.id, &w).is_ok()) {
        return Ok(());
    }
    let Some(state) = store.load_server(first.id).await? else {
        return Ok(());
    };
    let s = &state.server;
    opens(&s.id, &s.private_key).map_err(|e| match e {
        Error::Sealed { .. } => Error::sealed(format!(
            "the master key does not open this store's secrets (loaded key {}; server {} was sealed with key {}): wrong master key",
            sealer.current_key_id(),
            s.name,
            s.private_key
                .key_id()
                .map_or_else(|| "?".to_owned(), |k| k.to_string()),
        )),
        other => other,
    })
}

/// The raw store at `store` (the default SQLite file when `None`) with its master key,
/// checked against the store's secrets as [`open`] checks it, for the commands that work
/// on a whole store (`wgm backup`) rather than through the manager.
pub async fn open_store_with_key(
    store: Option<String>,
    key: KeySource,
) -> Result<(Arc<dyn Store>, MasterKey, StoreLocation)> {
    let location = match &store {
        Some(url) => StoreLocation::parse(url)?,
        None => StoreLocation::default_sqlite(&location::data_dir()?),
    };
    let (store, _) = location.open().await?;
    let (key, _) = load_master_key(key, &location, store.as_ref()).await?;
    check_master_key(store.as_ref(), &Sealer::new(key.clone())).await?;
    Ok((store, key, location))
}

/// The master key `source` names, never creating one: a key file that must exist, a
/// value, or by default `WGM_MASTER_KEY`, else the default key file of `location`
/// (`wgm restore`, which needs the key a backup was sealed with).
pub fn existing_master_key(source: KeySource, location: &StoreLocation) -> Result<MasterKey> {
    let path = match source {
        KeySource::File(p) => p,
        KeySource::Text(t) => {
            return MasterKey::from_base64(t.trim_end_matches(['\n', '\r'])).map_err(|_| {
                Error::sealed(
                    "the master key given is not valid (must be 44 characters of standard base64)",
                )
            })
        }
        KeySource::Default => {
            if let Some(v) = std::env::var_os(master_key::ENV_MASTER_KEY).filter(|v| !v.is_empty())
            {
                let v = Zeroizing::new(v.into_string().map_err(|_| {
                    Error::sealed(format!(
                        "{} is not a valid master key (not UTF-8)",
                        master_key::ENV_MASTER_KEY
                    ))
                })?);
                return master_key::key_from_env(&v);
            }
            let data_dir = location::data_dir().ok();
            location
                .default_key_file(data_dir.as_deref())
                .ok_or_else(|| {
                    Error::sealed("no master key: give a master key file or WGM_MASTER_KEY")
                })?
        }
    };
    master_key::read_key_file(&path)?.ok_or_else(|| {
        Error::sealed(format!(
            "master key file {} does not exist; give the key the backup was sealed with",
            path.display()
        ))
    })
}
