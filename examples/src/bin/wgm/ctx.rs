//! Everything a command runs with: the store, the master key, the manager and the
//! principal it acts as.

use wgm_cli::location::StoreLocation;
pub use wgm_cli::open::KeyOrigin;
use wgm_cli::open::{self, KeySource, OpenOptions};
use wgm_core::manager::Manager;
use wgm_core::model::ServerId;
use wgm_core::rbac::Principal;

use crate::args::Global;
use crate::error::CliResult;
use crate::out::Out;

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
    /// the store's key, build the manager and authenticate ([`wgm_cli::open`]).
    ///
    /// The master key: `--master-key-file`/`WGM_MASTER_KEY_FILE`, else `WGM_MASTER_KEY`,
    /// else the default key file.
    pub async fn open(g: &Global, out: Out) -> CliResult<Ctx> {
        let key = match &g.master_key_file {
            Some(p) => KeySource::File(p.clone()),
            None => KeySource::Default,
        };
        // The CLI runs on the host with the master key: without a token it is the local
        // administrator, so it takes that capability.
        let o = open::open(OpenOptions {
            store: g.store.clone(),
            key,
            local_admin: true,
            jwt: None,
        })
        .await?;
        let p = match (&g.token, &o.local) {
            (Some(t), _) => o.manager.authenticate_token(t).await?,
            (None, Some(local)) => local.principal(&wgm_cli::unix_user_name()),
            (None, None) => {
                return Err(wgm_core::Error::denied("no local-administrator capability").into())
            }
        };
        Ok(Ctx {
            m: o.manager,
            p,
            out,
            location: o.location,
            store_created: o.store_created,
            key_origin: o.key_origin,
        })
    }

    /// Resolve a server by name or id.
    pub async fn server(&self, name_or_id: &str) -> CliResult<ServerId> {
        Ok(self.m.resolve_server(&self.p, name_or_id).await?)
    }
}
