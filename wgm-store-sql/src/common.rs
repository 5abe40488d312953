//! Read paths both engines share: what a row of each read means, decoded once. The
//! engines differ only in the SQL text (placeholders, the `wgm.` schema, casts,
//! collations) and in how ids are bound and come back (text on SQLite, `uuid` on
//! PostgreSQL); the rows they return have the same shape, and these functions turn them
//! into the model.

use std::collections::BTreeMap;

use wgm_core::model::{
    AuditRecord, Peer, PeerId, RevisionRecord, Server, ServerState, ServerSummary,
};

use crate::codec::{from_json, rev, uint};
use crate::error::SqlError;

/// A server row (`body`, head `revision`) with its peers: a [`ServerState`].
pub(crate) fn server_state(
    store: &'static str,
    body: &str,
    revision: i64,
    peers: BTreeMap<PeerId, Peer>,
) -> Result<ServerState, SqlError> {
    Ok(ServerState {
        server: from_json(store, "server", body)?,
        peers,
        revision: rev(store, revision)?,
    })
}

/// A listing row (server `body`, head `revision`, peer `count`): a [`ServerSummary`].
pub(crate) fn summary(
    store: &'static str,
    (body, revision, count): (String, i64, i64),
) -> Result<ServerSummary, SqlError> {
    let s: Server = from_json(store, "server", &body)?;
    Ok(ServerSummary {
        id: s.id,
        name: s.name,
        interface: s.interface,
        peer_count: uint(store, "peer count", count)?,
        revision: rev(store, revision)?,
    })
}

/// An audit row (`seq`, entry `body`, `prev_hash`, `hash`): an [`AuditRecord`].
pub(crate) fn audit_record(
    store: &'static str,
    (seq, body, prev_hash, hash): (i64, String, String, String),
) -> Result<AuditRecord, SqlError> {
    Ok(AuditRecord {
        seq: uint(store, "audit sequence number", seq)?,
        entry: from_json(store, "audit entry", &body)?,
        prev_hash,
        hash,
    })
}

/// Revision rows (their JSON bodies), oldest first.
pub(crate) fn revisions(
    store: &'static str,
    bodies: &[String],
) -> Result<Vec<RevisionRecord>, SqlError> {
    bodies
        .iter()
        .map(|b| from_json(store, "revision", b))
        .collect()
}
