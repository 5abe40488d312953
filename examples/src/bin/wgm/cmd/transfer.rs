//! `wgm store copy`, `wgm backup`, `wgm restore`: a whole store at once
//! ([`wgm_cli::transfer`]).

use serde_json::json;
use wgm_cli::location::{self, StoreLocation};
use wgm_cli::open::{self, KeySource};
use wgm_cli::transfer::{self, Moved};
use wgm_core::store::backup;

use crate::args::{BackupArgs, CopyArgs, Global, RestoreArgs};
use crate::error::{CliError, CliResult};
use crate::out::Out;

/// The largest backup file `wgm restore` reads (1 GiB).
const MAX_BACKUP: u64 = 1 << 30;

fn key_source(g: &Global) -> KeySource {
    match &g.master_key_file {
        Some(p) => KeySource::File(p.clone()),
        None => KeySource::Default,
    }
}

fn show(out: Out, head: &[(&str, String)], m: &Moved) -> CliResult {
    let mut pairs: Vec<(&str, String)> = head.to_vec();
    pairs.extend([
        ("servers", m.servers.to_string()),
        ("revisions", m.revisions.to_string()),
        ("users", m.users.to_string()),
        ("roles", m.roles.to_string()),
        ("tokens", m.tokens.to_string()),
        ("audit records", m.audit_records.to_string()),
        ("audit head", m.audit_head.clone()),
    ]);
    out.kv(&pairs)
}

/// `wgm store copy --from URL --to URL`.
pub async fn copy(out: Out, a: CopyArgs) -> CliResult {
    let from = StoreLocation::parse(&a.from)?.redacted();
    let to = StoreLocation::parse(&a.to)?.redacted();
    let moved = transfer::copy_store(&a.from, &a.to).await?;
    if out.json {
        return out.json(&json!({ "from": from, "to": to, "copied": moved }));
    }
    show(out, &[("from", from), ("to", to)], &moved)
}

/// `wgm backup FILE [--force]`: the store of `--store`, sealed with its master key.
pub async fn backup(g: &Global, out: Out, a: BackupArgs) -> CliResult {
    let shown = a.file.display().to_string();
    if !a.force && std::fs::symlink_metadata(&a.file).is_ok() {
        return Err(wgm_core::Error::already_exists("backup file", &shown).into());
    }
    let (store, key, location) = open::open_store_with_key(g.store.clone(), key_source(g)).await?;
    let snapshot = store.export_snapshot().await?;
    let bytes = backup::encode(&snapshot, &key)?;
    let written = if a.force {
        wgm_cli::files::write_private_atomic(&a.file, &bytes).map(|()| true)
    } else {
        wgm_cli::files::create_private_exclusive(&a.file, &bytes)
    }
    .map_err(|e| CliError::Failed(format!("cannot write {shown}: {e}")))?;
    if !written {
        return Err(wgm_core::Error::already_exists("backup file", &shown).into());
    }
    let moved = Moved::of(&snapshot);
    let (store, key_id) = (location.redacted(), key.key_id().to_string());
    if out.json {
        return out.json(&json!({
            "file": shown, "store": store, "key_id": key_id, "bytes": bytes.len(), "backed_up": moved,
        }));
    }
    show(
        out,
        &[("file", shown), ("store", store), ("key id", key_id)],
        &moved,
    )
}

/// `wgm restore FILE --to URL`: the backup opened with the master key, into an empty store.
pub async fn restore(g: &Global, out: Out, a: RestoreArgs) -> CliResult {
    let shown = a.file.display().to_string();
    let to = StoreLocation::parse(&a.to)?;
    // The key: `--master-key-file`, `WGM_MASTER_KEY`, or the default key file of the
    // `--store` location; never created here.
    let home = match &g.store {
        Some(url) => StoreLocation::parse(url)?,
        None => StoreLocation::default_sqlite(&location::data_dir()?),
    };
    let key = open::existing_master_key(key_source(g), &home)?;
    let bytes = transfer::read_backup(&a.file, MAX_BACKUP)?;
    let moved = transfer::restore(&bytes, &key, &a.to, a.force).await?;
    let to = to.redacted();
    if out.json {
        return out.json(&json!({
            "file": shown,
            "to": to,
            "replaced": a.force,
            "restored": moved
        }));
    }
    show(out, &[("file", shown), ("to", to)], &moved)
}
