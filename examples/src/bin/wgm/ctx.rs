//! Everything a command runs with: the store, the master key, the manager and the
//! principal it acts as.

use std::path::PathBuf;

use serde::Serialize;
use wgm_cli::location::{self, StoreLocation};
use wgm_cli::master_key;
use wgm_core::manager::Manager;
use wgm_core::model::{Change, Page, RevisionNo, ServerId};
use wgm_core::rbac::Principal;
use wgm_core::seal::{MasterKey, Sealer, SecretKind};
use wgm_core::store::Store;
use wgm_core::Error;

use crate::args::Global;
use crate::error::CliResult;
use crate::out::Out;

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
    /// A throw-away key for an in-memory store.
    Ephemeral,
}

/// A ready-to-use context.
pub struct Ctx {
    /// The manager every command goes through.
    pub m: Manager,
    /// Who we act as.
    pub p: Principal,
    /// Output settings.
    pub out: Out,
    /// The store's location (for `init` and `quickstart`).
    pub location: StoreLocation,
    /// Whether this run created the database file.
    pub store_created: bool,
    /// Where the master key came from.
    pub key_origin: KeyOrigin,
}

impl Ctx {
    /// Open the store, load (or on first use create) the master key, check that it is
    /// the store's key, build the manager and authenticate.
    pub async fn open(g: &Global, out: Out) -> CliResult<Ctx> {
        let location = match &g.store {
            Some(url) => StoreLocation::parse(url)?,
            None => StoreLocation::default_sqlite(&location::data_dir()?),
        };
        let (store, store_created) = location.open().await?;
        let (key, key_origin) = load_master_key(g, &location, store.as_ref()).await?;
        let sealer = Sealer::new(key);
        check_master_key(store.as_ref(), &sealer).await?;
        // The CLI runs on the host with the master key: without a token it is the local
        // administrator, so it takes that capability.
        // Commit retries wait on tokio's timer (the core's SystemClock only yields).
        let (m, local) = Manager::builder(store, sealer)
            .clock(std::sync::Arc::new(wgm_cli::clock::TokioClock))
            .build_with_local_admin();
        let p = match &g.token {
            Some(t) => m.authenticate_token(t).await?,
            None => local.principal(&wgm_cli::unix_user_name()),
        };
        Ok(Ctx {
            m,
            p,
            out,
            location,
            store_created,
            key_origin,
        })
    }

    /// Resolve a server by name or id.
    pub async fn server(&self, name_or_id: &str) -> CliResult<ServerId> {
        Ok(self.m.resolve_server(&self.p, name_or_id).await?)
    }
}

/// Whether the store holds nothing that could be sealed yet (no server, no user).
async fn store_is_empty(store: &dyn Store) -> wgm_core::Result<bool> {
    Ok(store.list_servers(Page::first(1)).await?.is_empty()
        && store.list_users(Page::first(1)).await?.is_empty())
}

/// The master key: `--master-key-file`/`WGM_MASTER_KEY_FILE`, else `WGM_MASTER_KEY`,
/// else the default key file. A missing key file is created only while the store is
/// still empty: a new key for a store full of secrets sealed under another one would
/// only make every secret unreadable.
async fn load_master_key(
    g: &Global,
    location: &StoreLocation,
    store: &dyn Store,
) -> CliResult<(MasterKey, KeyOrigin)> {
    let path = if let Some(p) = &g.master_key_file {
        p.clone()
    } else {
        if let Some(v) = std::env::var_os(master_key::ENV_MASTER_KEY).filter(|v| !v.is_empty()) {
            let v = zeroize::Zeroizing::new(v.into_string().map_err(|_| {
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
                    "no master key: give --master-key-file PATH or WGM_MASTER_KEY",
                )
                .into())
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
             give the key it was created with (--master-key-file or WGM_MASTER_KEY)",
            path.display()
        ))
        .into());
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
async fn check_master_key(store: &dyn Store, sealer: &Sealer) -> CliResult {
    let Some(first) = store.list_servers(Page::first(1)).await?.into_iter().next() else {
        return Ok(());
    };
    let opens = |id: &ServerId, sealed: &wgm_core::seal::SealedSecret| {
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
    })?;
    Ok(())
}
