//! The shapes the front ends print or return for revisions and diffs, shared by the
//! CLI's `--json` and the Python bindings.
//!
//! ```
//! let mut d: Vec<wgm_core::manager::DiffEntry> = Vec::new();
//! wgm_cli::views::sort_diff(&mut d);
//! assert!(d.is_empty());
//! ```

use serde::Serialize;
use time::OffsetDateTime;
use wgm_core::manager::DiffEntry;
use wgm_core::model::{Change, RevisionNo, RevisionRecord};

/// One revision as `wgm history --json` prints it: no sealed values, just what changed.
#[derive(Debug, Serialize)]
pub struct HistoryEntry {
    /// Revision number.
    pub revision: RevisionNo,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who (`local:root`, `user:alice`, …).
    pub author: String,
    /// One line.
    pub summary: String,
    /// The changes, by kind and object name.
    pub changes: Vec<ChangeEntry>,
}

/// One change of a revision.
#[derive(Debug, Serialize)]
pub struct ChangeEntry {
    /// `server_created`, `server_updated`, `server_deleted`, `peer_added`,
    /// `peer_updated`, `peer_removed`.
    pub kind: &'static str,
    /// `server` or `peer`.
    pub object: &'static str,
    /// The object's name (after the change).
    pub name: String,
    /// The object's id.
    pub id: String,
}

fn change_entry(c: &Change) -> ChangeEntry {
    let (object, name, id) = match c {
        Change::ServerCreated { server } | Change::ServerDeleted { server } => {
            ("server", server.name.to_string(), server.id.to_string())
        }
        Change::ServerUpdated { after, .. } => {
            ("server", after.name.to_string(), after.id.to_string())
        }
        Change::PeerAdded { peer } | Change::PeerRemoved { peer } => {
            ("peer", peer.name.to_string(), peer.id.to_string())
        }
        Change::PeerUpdated { after, .. } => ("peer", after.name.to_string(), after.id.to_string()),
        // The model may grow new kinds; show them without details.
        _ => ("other", String::new(), String::new()),
    };
    ChangeEntry {
        kind: c.kind(),
        object,
        name,
        id,
    }
}

/// The printable form of a revision.
pub fn entry(r: &RevisionRecord) -> HistoryEntry {
    HistoryEntry {
        revision: r.revision,
        at: r.at,
        author: r.author.label.clone(),
        summary: r.summary.clone(),
        changes: r.changes.iter().map(change_entry).collect(),
    }
}

/// A stable order of a diff: the server, then removed, changed and added peers, each
/// by name.
pub fn sort_diff(entries: &mut [DiffEntry]) {
    let rank = |k: &str| match k {
        "server" => 0,
        "peer_removed" => 1,
        "peer_changed" => 2,
        "peer_added" => 3,
        _ => 4,
    };
    entries.sort_by(|a, b| {
        (rank(&a.kind), a.object.to_lowercase()).cmp(&(rank(&b.kind), b.object.to_lowercase()))
    });
}
