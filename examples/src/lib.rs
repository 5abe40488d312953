//! # wgm-cli
//!
//! wgm's command-line interface (package `wgm-cli` in the folder `examples/`, library
//! `wgm_cli`, binary `wgm`) and the small amount of host plumbing its binaries share:
//!
//! - `wgm` — the command-line interface (`src/bin/wgm/`): one machine, an SQLite file by
//!   default, `--json` everywhere, exit codes that mean something. See `docs/cli.md`.
//!
//! The library part holds what every binary needs before it can build a
//! [`wgm_core::manager::Manager`], and which `wgm-core` deliberately does not do because
//! it is I/O:
//!
//! - [`location`]: the store URL (`--store`, `WGM_STORE`, or the default SQLite file in
//!   the user's data directory) and opening the store;
//! - [`master_key`]: the master key file (mode `0600`, created atomically, refused when
//!   others can read it) or the `WGM_MASTER_KEY` variable;
//! - [`files`]: private files written atomically (`0600` from the first byte);
//! - [`clock`]: the manager's clock on tokio's timer, so commit retries really wait;
//! - [`open`]: all of the above put together: a `Manager` ready to use, the master key
//!   checked against the store's secrets;
//! - [`host`]: the WireGuard backend (`auto`, `kernel`, `userspace`) and this host's name;
//! - [`parse`]: values given as text (addresses, pools, times, lists) through the core's
//!   strict parsers, each error naming its field;
//! - [`views`]: revisions and diffs as the front ends show them (no sealed values);
//! - [`unix_user_name`]: who the local administrator is, for the audit log.
//!
//! ```no_run
//! # async fn demo() -> wgm_core::Result<()> {
//! use wgm_cli::{location::StoreLocation, master_key};
//! let loc = StoreLocation::default_sqlite(&wgm_cli::location::data_dir()?);
//! let (store, _created) = loc.open().await?;
//! let key_file = loc.default_key_file(None).expect("an SQLite file has a key file beside it");
//! let (key, _) = master_key::create_key_file(&key_file)?;
//! let (manager, local) = wgm_core::manager::Manager::builder(store, wgm_core::seal::Sealer::new(key))
//!     .build_with_local_admin();
//! let admin = local.principal(&wgm_cli::unix_user_name());
//! # let _ = admin; Ok(()) }
//! ```

#![warn(clippy::unwrap_used)]

pub mod agent;
pub mod clock;
pub mod files;
pub mod host;
pub mod location;
pub mod master_key;
pub mod open;
pub mod parse;
pub mod transfer;
pub mod views;

/// The name of the user running this process, for audit records (`local:<name>`): the
/// entry of the real uid in `/etc/passwd`, else `$USER`, else `uid<N>`.
pub fn unix_user_name() -> String {
    let uid = rustix::process::getuid().as_raw();
    if let Ok(passwd) = std::fs::read_to_string("/etc/passwd") {
        if let Some(name) = passwd_name(&passwd, uid) {
            return name;
        }
    }
    match std::env::var("USER") {
        Ok(u) if !u.is_empty() => u,
        _ => format!("uid{uid}"),
    }
}

/// The name of `uid` in the text of an `/etc/passwd` file.
fn passwd_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let id: u32 = f.next()?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwd_lookup() {
        let text = "root:x:0:0:root:/root:/bin/bash\n#c\nada:x:1000:1000::/home/ada:/bin/sh\n";
        assert_eq!(super::passwd_name(text, 1000).as_deref(), Some("ada"));
        assert_eq!(super::passwd_name(text, 0).as_deref(), Some("root"));
        assert_eq!(super::passwd_name(text, 7), None);
        assert!(!super::unix_user_name().is_empty());
    }
}
