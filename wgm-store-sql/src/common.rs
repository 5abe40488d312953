//! Read paths both engines share: each read's SQL, written once as a template that
//! `dialect.rs` renders per engine ([`Reads`]); the code that runs it and decodes what
//! it returns, written once as the macros [`store_reads!`] (the `Store` reads on the pool)
//! and [`tx_reads!`] (the reads of `store::rules::Transaction`), which each engine
//! expands in its own `impl` blocks; and what a row of each read means (the functions
//! below). The engines differ only where the engines differ: in the dialect (placeholders,
//! the `wgm.` schema, casts, collations, row locks), in how ids are bound and come back
//! (text on SQLite, `uuid` on PostgreSQL) and in how a read snapshot begins. The rows
//! they return have the same shape.

use std::collections::BTreeMap;

use wgm_core::error::{AuditBreak, ConflictKind};
use wgm_core::integrity::{AuditHead, StoredAuditKey};
use wgm_core::model::{
    ApiTokenRecord, AuditEntry, AuditRecord, HostReport, Lease, Peer, PeerId, RevisionRecord,
    Server, ServerId, ServerState, ServerSummary, User,
};
use wgm_core::rbac::Role;
use wgm_core::store::{AppliedSnapshot, ServerSnapshot, Snapshot, SNAPSHOT_VERSION};
use wgm_core::Error;

use crate::codec::{from_json, ns, rev, uint};
use crate::dialect::Dialect;
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

/// A listing row (server `body`, head `revision`, peer `count`): a [`ServerSummary`]
/// (its host assignment comes from the body, which has no column for it).
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
        host: s.host,
    })
}

/// A `leases` row (`body`) read by its key (`server`, `host`): a [`Lease`] whose body
/// names the same key (else [`SqlError::BadValue`]: a row moved behind the store's back).
pub(crate) fn lease(
    store: &'static str,
    server: ServerId,
    host: &str,
    body: &str,
) -> Result<Lease, SqlError> {
    let l: Lease = from_json(store, "lease", body)?;
    if l.server_id != server || l.host.as_str() != host {
        return Err(SqlError::BadValue {
            store,
            what: "lease (its key disagrees with its body)",
        });
    }
    Ok(l)
}

/// A `host_reports` row (`host`, `body`) of server `server`: a [`HostReport`] whose body
/// names the same key (else [`SqlError::BadValue`]).
pub(crate) fn host_report(
    store: &'static str,
    server: ServerId,
    (host, body): (String, String),
) -> Result<HostReport, SqlError> {
    let r: HostReport = from_json(store, "host report", &body)?;
    if r.server_id != server || r.host.as_str() != host {
        return Err(SqlError::BadValue {
            store,
            what: "host report (its key disagrees with its body)",
        });
    }
    Ok(r)
}

/// An audit row as read: every column, so that each is checked against the entry.
pub(crate) struct AuditRow {
    pub(crate) seq: i64,
    pub(crate) at_ns: i64,
    pub(crate) actor: String,
    pub(crate) server_id: Option<ServerId>,
    pub(crate) object: String,
    pub(crate) body: String,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
}

fn audit_broken(b: AuditBreak) -> SqlError {
    Error::conflict_of(ConflictKind::AuditChainBroken(b)).into()
}

/// An audit row: an [`AuditRecord`]. The columns the queries filter on (`at_ns`,
/// `actor`, `server_id`, `object`) are outside the hashed entry (`body`), so each must
/// agree with it: a record hidden from a filter by an edited column is a broken chain
/// ([`AuditBreak::Column`]), as is a body that no longer decodes ([`AuditBreak::Altered`]).
pub(crate) fn audit_record(store: &'static str, row: AuditRow) -> Result<AuditRecord, SqlError> {
    let seq = uint(store, "audit sequence number", row.seq)?;
    let entry: AuditEntry =
        serde_json::from_str(&row.body).map_err(|_| audit_broken(AuditBreak::Altered { seq }))?;
    let column = if row.at_ns != ns(entry.at) {
        Some("at_ns")
    } else if row.actor != entry.actor.label {
        Some("actor")
    } else if row.server_id != entry.server_id {
        Some("server_id")
    } else if row.object != entry.object {
        Some("object")
    } else {
        None
    };
    if let Some(column) = column {
        return Err(audit_broken(AuditBreak::Column { seq, column }));
    }
    Ok(AuditRecord {
        seq,
        entry,
        prev_hash: row.prev_hash,
        hash: row.hash,
    })
}

/// A revision row as read: every column, so that each is checked against the body.
pub(crate) struct RevisionRow {
    pub(crate) server_id: ServerId,
    pub(crate) revision: i64,
    pub(crate) at_ns: i64,
    pub(crate) author: String,
    pub(crate) summary: String,
    pub(crate) body: String,
}

/// Revision rows, oldest first: [`RevisionRecord`]s whose columns agree with their
/// bodies (else [`ConflictKind::RevisionAltered`]; the MAC in the body is checked by the
/// caller, `wgm_core::integrity::check_revision`).
pub(crate) fn revisions(
    store: &'static str,
    rows: Vec<RevisionRow>,
) -> Result<Vec<RevisionRecord>, SqlError> {
    rows.into_iter()
        .map(|row| {
            let number = uint(store, "revision number", row.revision)?;
            let altered = |reason: &'static str| -> SqlError {
                Error::conflict_of(ConflictKind::RevisionAltered {
                    server: row.server_id.0,
                    revision: number,
                    reason,
                })
                .into()
            };
            let r: RevisionRecord =
                serde_json::from_str(&row.body).map_err(|_| altered("its body does not decode"))?;
            if r.server_id != row.server_id
                || r.revision.0 != number
                || ns(r.at) != row.at_ns
                || r.author.label != row.author
                || r.summary != row.summary
            {
                return Err(altered("a stored column disagrees with its body"));
            }
            Ok(r)
        })
        .collect()
}

/// The stored audit key (`sealed`, `legacy` JSON).
pub(crate) fn audit_key(
    store: &'static str,
    (sealed, legacy): (String, String),
) -> Result<StoredAuditKey, SqlError> {
    Ok(StoredAuditKey {
        sealed: serde_json::from_value(serde_json::Value::String(sealed)).map_err(|source| {
            SqlError::Corrupt {
                store,
                what: "sealed audit key",
                source,
            }
        })?,
        legacy: from_json(store, "audit key bound", &legacy)?,
    })
}

/// The shared reads: one `String` field per template, rendered by [`Reads::render`].
macro_rules! reads {
    ($($(#[$doc:meta])* $name:ident = $template:expr;)*) => {
        /// The SQL of the shared reads in one dialect (see `dialect.rs` for the templates'
        /// notation).
        #[derive(Debug)]
        pub(crate) struct Reads {
            $($(#[$doc])* pub(crate) $name: String,)*
        }

        impl Reads {
            /// Every template, by name.
            #[cfg(test)]
            pub(crate) const TEMPLATES: &[(&str, &str)] = &[$((stringify!($name), $template),)*];

            /// Every template in `dialect`.
            pub(crate) fn render(dialect: &Dialect) -> Reads {
                Reads {
                    $($name: dialect.render($template),)*
                }
            }
        }
    };
}

reads! {
    /// A server's body and head (`load_server`).
    load_server = "SELECT s.body{::text}, h.revision FROM {wgm.}servers s
                   JOIN {wgm.}heads h ON h.server_id = s.id WHERE s.id = $1";
    /// A server's peers (`load_server`).
    load_peers = "SELECT id, body{::text}, stats{::text} FROM {wgm.}peers WHERE server_id = $1";
    /// A server's body, head and number of peers in one statement (`load_server_overview`).
    load_overview = "SELECT s.body{::text}, h.revision,
                         (SELECT count(*) FROM {wgm.}peers p WHERE p.server_id = s.id)
                     FROM {wgm.}servers s JOIN {wgm.}heads h ON h.server_id = s.id
                     WHERE s.id = $1";
    /// One peer by id (`find_peer`; the primary key).
    peer_by_id = "SELECT body{::text}, stats{::text} FROM {wgm.}peers
                  WHERE server_id = $1 AND id = $2";
    /// One peer by case-folded name (`find_peer`; the unique index on the name).
    peer_by_name = "SELECT body{::text}, stats{::text} FROM {wgm.}peers
                    WHERE server_id = $1 AND name_key = $2";
    /// One peer by public key (`find_peer`; the unique index on the key).
    peer_by_key = "SELECT body{::text}, stats{::text} FROM {wgm.}peers
                   WHERE server_id = $1 AND public_key = $2";
    find_server = "SELECT id FROM {wgm.}servers WHERE name_key = $1";
    list_servers = "SELECT s.body{::text}, h.revision,
                        (SELECT count(*) FROM {wgm.}peers p WHERE p.server_id = s.id)
                    FROM {wgm.}servers s JOIN {wgm.}heads h ON h.server_id = s.id
                    ORDER BY s.name_key{ COLLATE \"C\"}, s.id LIMIT $1 OFFSET $2";
    head = "SELECT h.revision FROM {wgm.}heads h JOIN {wgm.}servers s ON s.id = h.server_id
            WHERE h.server_id = $1";
    revisions = "SELECT server_id, revision, at_ns, author, summary, body{::text}
                 FROM {wgm.}revisions
                 WHERE server_id = $1 AND revision > $2 ORDER BY revision LIMIT $3";
    applied = "SELECT revision FROM {wgm.}applied WHERE server_id = $1 AND host = $2";
    /// A server's durable allocator state (`allocator_state`).
    allocator = "SELECT revision, body{::text} FROM {wgm.}allocators WHERE server_id = $1";
    /// The applied revision with its device part (`applied_state`): both columns or
    /// neither (`set_applied` clears them).
    applied_state = "SELECT revision, instance, verified_ns FROM {wgm.}applied
                     WHERE server_id = $1 AND host = $2 AND verified_ns IS NOT NULL";
    /// The stored lease of a server on a host, in a write transaction that already
    /// serializes on that key (SQLite's `BEGIN IMMEDIATE`, PostgreSQL's advisory lock).
    lease = "SELECT body{::text} FROM {wgm.}leases WHERE server_id = $1 AND host = $2";
    /// A server's host reports by host name in byte order (`host_reports`).
    host_reports = "SELECT host, body{::text} FROM {wgm.}host_reports WHERE server_id = $1
                    ORDER BY host{ COLLATE \"C\"}";
    get_user = "SELECT body{::text} FROM {wgm.}users WHERE id = $1";
    find_user = "SELECT body{::text} FROM {wgm.}users WHERE name_key = $1";
    list_users = "SELECT body{::text} FROM {wgm.}users ORDER BY name_key{ COLLATE \"C\"}
                  LIMIT $1 OFFSET $2";
    list_roles = "SELECT body{::text} FROM {wgm.}roles ORDER BY name{ COLLATE \"C\"}";
    get_token = "SELECT body{::text} FROM {wgm.}tokens WHERE id = $1";
    list_tokens = "SELECT body{::text} FROM {wgm.}tokens WHERE $1{::uuid} IS NULL OR user_id = $1
                   ORDER BY created_ns, id";
    query_audit = "SELECT seq, at_ns, actor, server_id, object, body{::text}, prev_hash, hash
                   FROM {wgm.}audit
                   WHERE ($1{::text} IS NULL OR actor = $1
                          OR substr(actor, 1, length($1) + 7) = $1 || ' token:')
                     AND ($2{::uuid} IS NULL OR server_id = $2)
                     AND ($3{::text} IS NULL OR substr(object, 1, length($3)) = $3)
                     AND ($4{::bigint} IS NULL OR at_ns >= $4)
                     AND ($5{::bigint} IS NULL OR at_ns < $5)
                     AND ($6{::bigint} IS NULL OR seq > $6)
                   ORDER BY seq LIMIT $7";
    /// The head (locked on PostgreSQL; SQLite's `BEGIN IMMEDIATE` already holds the
    /// write lock, so there a plain read is a locked read) and the server.
    lock_server = "SELECT h.revision, s.body{::text} FROM {wgm.}heads h
                   LEFT JOIN {wgm.}servers s ON s.id = h.server_id
                   WHERE h.server_id = $1{ FOR UPDATE OF h}";
    server_name_taken = "SELECT 1 FROM {wgm.}servers
                         WHERE name_key = $1 AND ($2{::uuid} IS NULL OR id <> $2) LIMIT 1";
    /// The stored head of the audit log (`audit_head`), unlocked.
    audit_head = "SELECT seq, hash FROM {wgm.}audit_head WHERE id = 1";
    /// The sealed audit key and its bound, unlocked.
    audit_key = "SELECT sealed, legacy{::text} FROM {wgm.}audit_key WHERE id = 1";
    /// Locks the audit head on PostgreSQL: the last lock a transaction takes.
    audit_tail = "SELECT seq, hash FROM {wgm.}audit_head WHERE id = 1{ FOR UPDATE}";
    /// The audit key in a write transaction (locked on PostgreSQL).
    tx_audit_key = "SELECT sealed, legacy{::text} FROM {wgm.}audit_key WHERE id = 1{ FOR UPDATE}";
    /// Every server's head (deleted servers keep theirs).
    server_heads = "SELECT server_id, revision FROM {wgm.}heads";
    user_version = "SELECT version FROM {wgm.}users WHERE id = $1{ FOR UPDATE}";
    user_clash = "SELECT name_key = $2 FROM {wgm.}users
                  WHERE id <> $1 AND (name_key = $2 OR ($3{::text} IS NOT NULL AND email = $3))";
    token = "SELECT body{::text} FROM {wgm.}tokens WHERE id = $1{ FOR UPDATE}";
    /// Every stored server with its head (`export_snapshot`).
    export_servers = "SELECT s.body{::text}, h.revision FROM {wgm.}servers s
                      JOIN {wgm.}heads h ON h.server_id = s.id";
    /// Every peer (`export_snapshot`).
    export_peers = "SELECT server_id, id, body{::text}, stats{::text} FROM {wgm.}peers";
    /// Every revision (`export_snapshot`).
    export_revisions = "SELECT server_id, revision, at_ns, author, summary, body{::text}
                        FROM {wgm.}revisions ORDER BY server_id, revision";
    /// Every applied revision (`export_snapshot`).
    export_applied = "SELECT server_id, host, revision, instance, verified_ns FROM {wgm.}applied";
    /// Every lease (`export_snapshot`).
    export_leases = "SELECT server_id, host, body{::text} FROM {wgm.}leases";
    /// Every host report (`export_snapshot`).
    export_reports = "SELECT server_id, host, body{::text} FROM {wgm.}host_reports";
    /// Every allocator state (`export_snapshot`).
    export_allocators = "SELECT server_id, revision, body{::text} FROM {wgm.}allocators";
    /// Every user (`export_snapshot`).
    export_users = "SELECT body{::text} FROM {wgm.}users";
    /// A live login-throttle record of a key at Unix second `$2` (`throttle_records`, and
    /// inside a swap, which already serializes on its key).
    throttle_record = "SELECT body{::text} FROM {wgm.}login_throttle
                       WHERE throttle_key = $1 AND expires_at > $2";
    /// Whether any table holds a row (`import_snapshot`; the audit head and key are
    /// checked by the rules).
    any_row = "SELECT EXISTS (SELECT 1 FROM {wgm.}heads) OR EXISTS (SELECT 1 FROM {wgm.}servers)
               OR EXISTS (SELECT 1 FROM {wgm.}peers) OR EXISTS (SELECT 1 FROM {wgm.}revisions)
               OR EXISTS (SELECT 1 FROM {wgm.}applied) OR EXISTS (SELECT 1 FROM {wgm.}leases)
               OR EXISTS (SELECT 1 FROM {wgm.}host_reports)
               OR EXISTS (SELECT 1 FROM {wgm.}allocators) OR EXISTS (SELECT 1 FROM {wgm.}users)
               OR EXISTS (SELECT 1 FROM {wgm.}roles) OR EXISTS (SELECT 1 FROM {wgm.}tokens)
               OR EXISTS (SELECT 1 FROM {wgm.}audit) OR EXISTS (SELECT 1 FROM {wgm.}audit_key)";
}

/// What a forced import ([`wgm_core::store::rules::ImportMode::Replace`]) deletes, in an
/// order the foreign keys allow; then the audit head goes back to genesis
/// ([`RESET_AUDIT_HEAD`]). The schema's version is kept.
pub(crate) const CLEAR: &[&str] = &[
    "DELETE FROM {wgm.}tokens",
    "DELETE FROM {wgm.}users",
    "DELETE FROM {wgm.}roles",
    "DELETE FROM {wgm.}peers",
    "DELETE FROM {wgm.}servers",
    "DELETE FROM {wgm.}heads",
    "DELETE FROM {wgm.}revisions",
    "DELETE FROM {wgm.}applied",
    "DELETE FROM {wgm.}leases",
    "DELETE FROM {wgm.}host_reports",
    "DELETE FROM {wgm.}allocators",
    "DELETE FROM {wgm.}audit",
    "DELETE FROM {wgm.}audit_key",
];

/// Store a login-throttle record (`$1` key, `$2` JSON body, `$3` expiry in Unix
/// seconds), replacing the key's row if there is one.
pub(crate) const PUT_THROTTLE: &str = "INSERT INTO {wgm.}login_throttle (throttle_key, body, expires_at)
     VALUES ($1, $2{::jsonb}, $3)
     ON CONFLICT (throttle_key) DO UPDATE SET body = excluded.body, expires_at = excluded.expires_at";

/// Delete the login-throttle record of key `$1`.
pub(crate) const DELETE_THROTTLE: &str = "DELETE FROM {wgm.}login_throttle WHERE throttle_key = $1";

/// Delete at most 64 login-throttle records that expired by Unix
/// second `$1` (on PostgreSQL skipping rows another transaction holds, so pruning never
/// waits or deadlocks): each swap cleans up a little, so expired rows do not pile up.
pub(crate) const PRUNE_THROTTLE: &str = "DELETE FROM {wgm.}login_throttle WHERE throttle_key IN (
     SELECT throttle_key FROM {wgm.}login_throttle WHERE expires_at <= $1
     LIMIT 64{ FOR UPDATE SKIP LOCKED})";

/// Rows per statement of a restore's multi-row inserts (at most 8 columns: far below
/// both engines' limits on parameters).
pub(crate) const RESTORE_CHUNK: usize = 500;

/// `INSERT INTO {wgm.}TABLE (COLUMNS) VALUES (…), …` for `rows` rows, one placeholder
/// per entry of `casts`, each followed by its PostgreSQL-only cast (`""` for none); in
/// the template syntax of `dialect.rs`.
pub(crate) fn insert_rows(table: &str, columns: &str, casts: &[&str], rows: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = format!("INSERT INTO {{wgm.}}{table} ({columns}) VALUES ");
    let mut n = 0;
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for (i, cast) in casts.iter().enumerate() {
            n += 1;
            let sep = if i == 0 { "" } else { ", " };
            if cast.is_empty() {
                let _ = write!(sql, "{sep}${n}");
            } else {
                let _ = write!(sql, "{sep}${n}{{{cast}}}");
            }
        }
        sql.push(')');
    }
    sql
}

/// The columns of `revisions` a restore writes, and their PostgreSQL casts.
pub(crate) const REVISION_COLUMNS: (&str, &[&str]) = (
    "server_id, revision, at_ns, author, summary, body",
    &["", "", "", "", "", "::jsonb"],
);

/// The columns of `audit` a restore writes, and their PostgreSQL casts.
pub(crate) const AUDIT_COLUMNS: (&str, &[&str]) = (
    "seq, at_ns, actor, server_id, object, body, prev_hash, hash",
    &["", "", "", "", "", "::json", "", ""],
);

/// The audit head of an empty log (`$1`: the genesis hash), after [`CLEAR`].
pub(crate) const RESET_AUDIT_HEAD: &str =
    "UPDATE {wgm.}audit_head SET seq = 0, hash = $1 WHERE id = 1";

/// An `applied` row: server, host, revision, device instance, verified time (ns).
pub(crate) type AppliedRow = (ServerId, String, i64, Option<i64>, Option<i64>);

/// Every row of a store, decoded (each engine's `export_snapshot` reads them in one read
/// transaction; [`snapshot`] assembles them).
pub(crate) struct ExportRows {
    pub(crate) heads: Vec<(ServerId, i64)>,
    pub(crate) servers: Vec<(String, i64)>,
    pub(crate) peers: Vec<(ServerId, PeerId, String, String)>,
    pub(crate) revisions: Vec<RevisionRow>,
    pub(crate) applied: Vec<AppliedRow>,
    pub(crate) leases: Vec<(ServerId, String, String)>,
    pub(crate) reports: Vec<(ServerId, String, String)>,
    pub(crate) allocators: Vec<(ServerId, i64, String)>,
    pub(crate) users: Vec<String>,
    pub(crate) roles: Vec<String>,
    pub(crate) tokens: Vec<String>,
    pub(crate) audit: Vec<AuditRow>,
    pub(crate) audit_head: (i64, String),
    pub(crate) audit_key: Option<(String, String)>,
}

/// The [`Snapshot`] of [`ExportRows`], every row checked as the store's reads check it
/// (bodies against their columns and keys). Servers by id, hosts by name in byte order,
/// users by id, roles by name key, tokens by creation time: the same on every engine.
pub(crate) fn snapshot(store: &'static str, rows: ExportRows) -> Result<Snapshot, SqlError> {
    use crate::codec::{instance_from_column, time_from_ns};
    let mut servers: BTreeMap<ServerId, ServerSnapshot> = BTreeMap::new();
    for (id, head) in rows.heads {
        servers
            .entry(id)
            .or_insert_with(|| ServerSnapshot::new(id))
            .head = Some(rev(store, head)?);
    }
    let mut peers: BTreeMap<ServerId, BTreeMap<PeerId, Peer>> = BTreeMap::new();
    for (sid, pid, body, stats) in rows.peers {
        let p = crate::codec::peer_from(store, &body, &stats)?;
        if p.id != pid || p.server_id != sid {
            return Err(SqlError::BadValue {
                store,
                what: "peer row (its body does not match its columns)",
            });
        }
        peers.entry(sid).or_default().insert(pid, p);
    }
    for (body, head) in rows.servers {
        let st = server_state(store, &body, head, BTreeMap::new())?;
        let id = st.server.id;
        let s = servers.entry(id).or_insert_with(|| ServerSnapshot::new(id));
        s.state = Some(ServerState {
            peers: peers.remove(&id).unwrap_or_default(),
            ..st
        });
    }
    if !peers.is_empty() {
        return Err(SqlError::BadValue {
            store,
            what: "peer row (of no stored server)",
        });
    }
    for r in revisions(store, rows.revisions)? {
        let id = r.server_id;
        servers
            .entry(id)
            .or_insert_with(|| ServerSnapshot::new(id))
            .revisions
            .push(r);
    }
    for (id, host, revision, instance, verified) in rows.applied {
        let revision = rev(store, revision)?;
        let state = verified
            .map(|v| {
                Ok::<_, SqlError>(wgm_core::model::AppliedState {
                    revision,
                    instance: instance.map(instance_from_column),
                    verified_at: time_from_ns(store, v)?,
                })
            })
            .transpose()?;
        servers
            .entry(id)
            .or_insert_with(|| ServerSnapshot::new(id))
            .applied
            .push(AppliedSnapshot {
                host,
                revision,
                state,
            });
    }
    for (id, host, body) in rows.leases {
        let l = lease(store, id, &host, &body)?;
        servers
            .entry(id)
            .or_insert_with(|| ServerSnapshot::new(id))
            .leases
            .push(l);
    }
    for (id, host, body) in rows.reports {
        let r = host_report(store, id, (host, body))?;
        servers
            .entry(id)
            .or_insert_with(|| ServerSnapshot::new(id))
            .reports
            .push(r);
    }
    for (id, revision, body) in rows.allocators {
        let a = (
            rev(store, revision)?,
            from_json(store, "allocator state", &body)?,
        );
        servers
            .entry(id)
            .or_insert_with(|| ServerSnapshot::new(id))
            .allocator = Some(a);
    }
    let mut servers: Vec<ServerSnapshot> = servers.into_values().collect();
    for s in &mut servers {
        s.applied.sort_by(|a, b| a.host.cmp(&b.host));
        s.leases
            .sort_by(|a, b| a.host.as_str().cmp(b.host.as_str()));
        s.reports
            .sort_by(|a, b| a.host.as_str().cmp(b.host.as_str()));
    }
    let mut users: Vec<User> = rows
        .users
        .iter()
        .map(|b| from_json(store, "user", b))
        .collect::<Result<_, _>>()?;
    users.sort_by_key(|u| u.id);
    let mut roles: Vec<Role> = rows
        .roles
        .iter()
        .map(|b| from_json(store, "role", b))
        .collect::<Result<_, _>>()?;
    roles.sort_by_cached_key(|r| r.name.key());
    let mut tokens: Vec<ApiTokenRecord> = rows
        .tokens
        .iter()
        .map(|b| from_json(store, "token", b))
        .collect::<Result<_, _>>()?;
    tokens.sort_by_key(|t| (t.created_at, t.id));
    let audit = rows
        .audit
        .into_iter()
        .map(|r| audit_record(store, r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Snapshot {
        version: SNAPSHOT_VERSION,
        servers,
        users,
        roles,
        tokens,
        audit,
        audit_head: AuditHead {
            seq: uint(store, "audit sequence number", rows.audit_head.0)?,
            hash: rows.audit_head.1,
        },
        audit_key: rows.audit_key.map(|k| audit_key(store, k)).transpose()?,
    })
}

/// `export_snapshot`, expanded inside an engine's `impl` block: every table read inside
/// the engine's read snapshot (`self.snapshot()`), then assembled by [`snapshot`]. Uses
/// the names of the engine module [`store_reads!`] uses.
macro_rules! export_reads {
    ($dialect:path) => {
        pub(crate) async fn export_snapshot(&self) -> Result<wgm_core::store::Snapshot, SqlError> {
            let q = $dialect.reads();
            let mut tx = self.snapshot().await?;
            let heads: Vec<(Id, i64)> = sqlx::query_as(&q.server_heads)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
            let servers: Vec<(String, i64)> = sqlx::query_as(&q.export_servers)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
            let peers: Vec<(Id, Id, String, String)> = sqlx::query_as(&q.export_peers)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
            let revisions: Vec<(Id, i64, i64, String, String, String)> =
                sqlx::query_as(&q.export_revisions)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db)?;
            let applied: Vec<(Id, String, i64, Option<i64>, Option<i64>)> =
                sqlx::query_as(&q.export_applied)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db)?;
            let leases: Vec<(Id, String, String)> = sqlx::query_as(&q.export_leases)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
            let reports: Vec<(Id, String, String)> = sqlx::query_as(&q.export_reports)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
            let allocators: Vec<(Id, i64, String)> = sqlx::query_as(&q.export_allocators)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
            let users: Vec<String> = sqlx::query_scalar(&q.export_users)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
            let roles: Vec<String> = sqlx::query_scalar(&q.list_roles)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
            let tokens: Vec<String> = sqlx::query_scalar(&q.list_tokens)
                .bind(None::<Id>)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
            let audit: Vec<(i64, i64, String, Option<Id>, String, String, String, String)> =
                sqlx::query_as(&q.query_audit)
                    .bind(None::<String>)
                    .bind(None::<Id>)
                    .bind(None::<String>)
                    .bind(None::<i64>)
                    .bind(None::<i64>)
                    .bind(None::<i64>)
                    .bind(i64::MAX)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db)?;
            let audit_head: (i64, String) = sqlx::query_as(&q.audit_head)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
            let audit_key: Option<(String, String)> = sqlx::query_as(&q.audit_key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
            let sid = |i: &Id| server_id(i);
            let rows = $crate::common::ExportRows {
                heads: heads
                    .iter()
                    .map(|(i, r)| Ok((sid(i)?, *r)))
                    .collect::<Result<_, SqlError>>()?,
                servers,
                peers: peers
                    .into_iter()
                    .map(|(s, p, b, st)| Ok((sid(&s)?, peer_id(&p)?, b, st)))
                    .collect::<Result<_, SqlError>>()?,
                revisions: revisions
                    .into_iter()
                    .map(|(s, revision, at_ns, author, summary, body)| {
                        Ok($crate::common::RevisionRow {
                            server_id: sid(&s)?,
                            revision,
                            at_ns,
                            author,
                            summary,
                            body,
                        })
                    })
                    .collect::<Result<_, SqlError>>()?,
                applied: applied
                    .into_iter()
                    .map(|(s, h, r, i, v)| Ok((sid(&s)?, h, r, i, v)))
                    .collect::<Result<_, SqlError>>()?,
                leases: leases
                    .into_iter()
                    .map(|(s, h, b)| Ok((sid(&s)?, h, b)))
                    .collect::<Result<_, SqlError>>()?,
                reports: reports
                    .into_iter()
                    .map(|(s, h, b)| Ok((sid(&s)?, h, b)))
                    .collect::<Result<_, SqlError>>()?,
                allocators: allocators
                    .into_iter()
                    .map(|(s, r, b)| Ok((sid(&s)?, r, b)))
                    .collect::<Result<_, SqlError>>()?,
                users,
                roles,
                tokens,
                audit: audit
                    .into_iter()
                    .map(|(seq, at_ns, actor, s, object, body, prev_hash, hash)| {
                        Ok($crate::common::AuditRow {
                            seq,
                            at_ns,
                            actor,
                            server_id: s.as_ref().map(|i| sid(i)).transpose()?,
                            object,
                            body,
                            prev_hash,
                            hash,
                        })
                    })
                    .collect::<Result<_, SqlError>>()?,
                audit_head,
                audit_key,
            };
            $crate::common::snapshot(S, rows)
        }
    };
}
pub(crate) use export_reads;

/// The `Store` reads, expanded inside an engine's `impl` block (its store has a `pool`).
/// The engine module supplies, by these names: `S` (its name in errors), `db` (its
/// `sqlx::Error` mapping), `Id` (how an id column decodes), `bind_id` (an id's UUID as
/// a parameter), `server_id` and `peer_id` (an `Id` as the model's id) and the method
/// `snapshot` (a transaction in which both queries of `load_server` read one snapshot).
macro_rules! store_reads {
    ($dialect:path) => {
        pub(crate) async fn load_server(
            &self,
            id: ServerId,
        ) -> Result<Option<ServerState>, SqlError> {
            let q = $dialect.reads();
            let mut tx = self.snapshot().await?;
            let row: Option<(String, i64)> = sqlx::query_as(&q.load_server)
                .bind(bind_id(id.as_uuid()))
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            let Some((body, revision)) = row else {
                return Ok(None);
            };
            let rows: Vec<(Id, String, String)> = sqlx::query_as(&q.load_peers)
                .bind(bind_id(id.as_uuid()))
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
            let mut peers = std::collections::BTreeMap::new();
            for (pid, body, stats) in rows {
                peers.insert(peer_id(&pid)?, $crate::codec::peer_from(S, &body, &stats)?);
            }
            $crate::common::server_state(S, &body, revision, peers).map(Some)
        }

        pub(crate) async fn load_server_settings(
            &self,
            id: ServerId,
        ) -> Result<Option<(wgm_core::model::Server, RevisionNo)>, SqlError> {
            let row: Option<(String, i64)> = sqlx::query_as(&$dialect.reads().load_server)
                .bind(bind_id(id.as_uuid()))
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
            let Some((body, revision)) = row else {
                return Ok(None);
            };
            let st = $crate::common::server_state(
                S,
                &body,
                revision,
                std::collections::BTreeMap::new(),
            )?;
            Ok(Some((st.server, st.revision)))
        }

        pub(crate) async fn load_server_overview(
            &self,
            id: ServerId,
        ) -> Result<Option<(wgm_core::model::Server, RevisionNo, u64)>, SqlError> {
            let row: Option<(String, i64, i64)> = sqlx::query_as(&$dialect.reads().load_overview)
                .bind(bind_id(id.as_uuid()))
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
            let Some((body, revision, count)) = row else {
                return Ok(None);
            };
            let st = $crate::common::server_state(
                S,
                &body,
                revision,
                std::collections::BTreeMap::new(),
            )?;
            let count = u64::try_from(count).map_err(|_| SqlError::BadValue {
                store: S,
                what: "peer count",
            })?;
            Ok(Some((st.server, st.revision, count)))
        }

        pub(crate) async fn find_peer(
            &self,
            id: ServerId,
            by: wgm_core::store::PeerLookup<'_>,
        ) -> Result<Option<wgm_core::model::Peer>, SqlError> {
            use wgm_core::store::PeerLookup;
            let q = $dialect.reads();
            let query = match by {
                PeerLookup::Id(pid) => sqlx::query_as(&q.peer_by_id)
                    .bind(bind_id(id.as_uuid()))
                    .bind(bind_id(pid.as_uuid())),
                PeerLookup::Name(n) => sqlx::query_as(&q.peer_by_name)
                    .bind(bind_id(id.as_uuid()))
                    .bind(n.key()),
                PeerLookup::Key(k) => sqlx::query_as(&q.peer_by_key)
                    .bind(bind_id(id.as_uuid()))
                    .bind(k.to_base64()),
            };
            let row: Option<(String, String)> =
                query.fetch_optional(&self.pool).await.map_err(db)?;
            let Some((body, stats)) = row else {
                return Ok(None);
            };
            let peer = $crate::codec::peer_from(S, &body, &stats)?;
            // The row answers the lookup (a body that says otherwise is not this peer).
            if peer.server_id != id || !by.matches(&peer) {
                return Err(SqlError::BadValue {
                    store: S,
                    what: "peer row (its body does not match its columns)",
                });
            }
            Ok(Some(peer))
        }

        pub(crate) async fn allocator_state(
            &self,
            id: ServerId,
        ) -> Result<Option<(RevisionNo, wgm_core::ipam::HeldRuns)>, SqlError> {
            let row: Option<(i64, String)> = sqlx::query_as(&$dialect.reads().allocator)
                .bind(bind_id(id.as_uuid()))
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
            row.map(|(revision, body)| {
                Ok((
                    $crate::codec::rev(S, revision)?,
                    $crate::codec::from_json(S, "allocator state", &body)?,
                ))
            })
            .transpose()
        }

        pub(crate) async fn find_server(
            &self,
            name: &ServerName,
        ) -> Result<Option<ServerId>, SqlError> {
            let id: Option<Id> = sqlx::query_scalar(&$dialect.reads().find_server)
                .bind(name.key())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
            id.map(|i| server_id(&i)).transpose()
        }

        pub(crate) async fn list_servers(
            &self,
            page: Page,
        ) -> Result<Vec<ServerSummary>, SqlError> {
            let rows: Vec<(String, i64, i64)> = sqlx::query_as(&$dialect.reads().list_servers)
                .bind($crate::codec::int(page.limit))
                .bind($crate::codec::int(page.offset))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
            rows.into_iter()
                .map(|r| $crate::common::summary(S, r))
                .collect()
        }

        pub(crate) async fn head(&self, id: ServerId) -> Result<Option<RevisionNo>, SqlError> {
            let r: Option<i64> = sqlx::query_scalar(&$dialect.reads().head)
                .bind(bind_id(id.as_uuid()))
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
            r.map(|v| $crate::codec::rev(S, v)).transpose()
        }

        pub(crate) async fn revisions(
            &self,
            id: ServerId,
            after: RevisionNo,
            limit: u64,
        ) -> Result<Vec<RevisionRecord>, SqlError> {
            let rows: Vec<(Id, i64, i64, String, String, String)> =
                sqlx::query_as(&$dialect.reads().revisions)
                    .bind(bind_id(id.as_uuid()))
                    .bind($crate::codec::int(after.0))
                    .bind($crate::codec::int(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db)?;
            let rows = rows
                .into_iter()
                .map(|(sid, revision, at_ns, author, summary, body)| {
                    Ok($crate::common::RevisionRow {
                        server_id: server_id(&sid)?,
                        revision,
                        at_ns,
                        author,
                        summary,
                        body,
                    })
                })
                .collect::<Result<Vec<_>, SqlError>>()?;
            $crate::common::revisions(S, rows)
        }

        pub(crate) async fn applied(
            &self,
            id: ServerId,
            host: &str,
        ) -> Result<Option<RevisionNo>, SqlError> {
            let r: Option<i64> = sqlx::query_scalar(&$dialect.reads().applied)
                .bind(bind_id(id.as_uuid()))
                .bind(host)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
            r.map(|v| $crate::codec::rev(S, v)).transpose()
        }

        pub(crate) async fn applied_state(
            &self,
            id: ServerId,
            host: &str,
        ) -> Result<Option<wgm_core::model::AppliedState>, SqlError> {
            let r: Option<(i64, Option<i64>, i64)> =
                sqlx::query_as(&$dialect.reads().applied_state)
                    .bind(bind_id(id.as_uuid()))
                    .bind(host)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db)?;
            r.map(|(revision, instance, verified)| {
                Ok(wgm_core::model::AppliedState {
                    revision: $crate::codec::rev(S, revision)?,
                    instance: instance.map($crate::codec::instance_from_column),
                    verified_at: $crate::codec::time_from_ns(S, verified)?,
                })
            })
            .transpose()
        }

        pub(crate) async fn host_reports(
            &self,
            id: ServerId,
        ) -> Result<Vec<wgm_core::model::HostReport>, SqlError> {
            let rows: Vec<(String, String)> = sqlx::query_as(&$dialect.reads().host_reports)
                .bind(bind_id(id.as_uuid()))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
            rows.into_iter()
                .map(|r| $crate::common::host_report(S, id, r))
                .collect()
        }

        pub(crate) async fn get_user(&self, id: UserId) -> Result<Option<User>, SqlError> {
            let b: Option<String> = sqlx::query_scalar(&$dialect.reads().get_user)
                .bind(bind_id(id.as_uuid()))
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
            b.map(|b| $crate::codec::from_json(S, "user", &b))
                .transpose()
        }

        pub(crate) async fn find_user(&self, name: &UserName) -> Result<Option<User>, SqlError> {
            let b: Option<String> = sqlx::query_scalar(&$dialect.reads().find_user)
                .bind(name.key())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
            b.map(|b| $crate::codec::from_json(S, "user", &b))
                .transpose()
        }

        pub(crate) async fn list_users(&self, page: Page) -> Result<Vec<User>, SqlError> {
            let rows: Vec<String> = sqlx::query_scalar(&$dialect.reads().list_users)
                .bind($crate::codec::int(page.limit))
                .bind($crate::codec::int(page.offset))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
            rows.iter()
                .map(|b| $crate::codec::from_json(S, "user", b))
                .collect()
        }

        pub(crate) async fn list_roles(&self) -> Result<Vec<Role>, SqlError> {
            let rows: Vec<String> = sqlx::query_scalar(&$dialect.reads().list_roles)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
            rows.iter()
                .map(|b| $crate::codec::from_json(S, "role", b))
                .collect()
        }

        pub(crate) async fn get_token(
            &self,
            id: TokenId,
        ) -> Result<Option<ApiTokenRecord>, SqlError> {
            let b: Option<String> = sqlx::query_scalar(&$dialect.reads().get_token)
                .bind(bind_id(&id.as_uuid()))
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
            b.map(|b| $crate::codec::from_json(S, "token", &b))
                .transpose()
        }

        pub(crate) async fn list_tokens(
            &self,
            user: Option<UserId>,
        ) -> Result<Vec<ApiTokenRecord>, SqlError> {
            let rows: Vec<String> = sqlx::query_scalar(&$dialect.reads().list_tokens)
                .bind(user.map(|u| bind_id(u.as_uuid())))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
            rows.iter()
                .map(|b| $crate::codec::from_json(S, "token", b))
                .collect()
        }

        pub(crate) async fn query_audit(
            &self,
            q: &AuditQuery,
        ) -> Result<Vec<AuditRecord>, SqlError> {
            use $crate::codec::{int, ns};
            let rows: Vec<(i64, i64, String, Option<Id>, String, String, String, String)> =
                sqlx::query_as(&$dialect.reads().query_audit)
                    .bind(q.actor.as_deref())
                    .bind(q.server_id.map(|s| bind_id(s.as_uuid())))
                    .bind(q.object_prefix.as_deref())
                    .bind(q.since.map(ns))
                    .bind(q.until.map(ns))
                    .bind(q.after_seq.map(int))
                    .bind(q.limit.map_or(i64::MAX, int))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db)?;
            rows.into_iter()
                .map(|(seq, at_ns, actor, sid, object, body, prev_hash, hash)| {
                    let row = $crate::common::AuditRow {
                        seq,
                        at_ns,
                        actor,
                        server_id: sid.as_ref().map(|i| server_id(i)).transpose()?,
                        object,
                        body,
                        prev_hash,
                        hash,
                    };
                    $crate::common::audit_record(S, row)
                })
                .collect()
        }

        pub(crate) async fn audit_head(&self) -> Result<wgm_core::integrity::AuditHead, SqlError> {
            let (seq, hash): (i64, String) = sqlx::query_as(&$dialect.reads().audit_head)
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
            Ok(wgm_core::integrity::AuditHead {
                seq: $crate::codec::uint(S, "audit sequence number", seq)?,
                hash,
            })
        }

        pub(crate) async fn audit_key(
            &self,
        ) -> Result<Option<wgm_core::integrity::StoredAuditKey>, SqlError> {
            let row: Option<(String, String)> = sqlx::query_as(&$dialect.reads().audit_key)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
            row.map(|r| $crate::common::audit_key(S, r)).transpose()
        }
    };
}
pub(crate) use store_reads;

/// The reads of `store::rules::Transaction`, expanded inside an engine's `impl` of it
/// (`self.0` is its connection). Uses the same names of the engine module as
/// [`store_reads!`] (`S`, `db`, `bind_id`, `Id`, `server_id`).
macro_rules! tx_reads {
    ($dialect:path) => {
        async fn lock_server(
            &mut self,
            id: ServerId,
        ) -> Result<(Option<RevisionNo>, Option<Server>), SqlError> {
            let row: Option<(i64, Option<String>)> = sqlx::query_as(&$dialect.reads().lock_server)
                .bind(bind_id(id.as_uuid()))
                .fetch_optional(&mut *self.0)
                .await
                .map_err(db)?;
            let Some((revision, body)) = row else {
                return Ok((None, None));
            };
            let server = body
                .map(|b| $crate::codec::from_json(S, "server", &b))
                .transpose()?;
            Ok((Some($crate::codec::rev(S, revision)?), server))
        }

        async fn server_name_taken(
            &mut self,
            name_key: &str,
            except: Option<ServerId>,
        ) -> Result<bool, SqlError> {
            let r: Option<i32> = sqlx::query_scalar(&$dialect.reads().server_name_taken)
                .bind(name_key)
                .bind(except.map(|s| bind_id(s.as_uuid())))
                .fetch_optional(&mut *self.0)
                .await
                .map_err(db)?;
            Ok(r.is_some())
        }

        async fn audit_tail(&mut self) -> Result<(u64, String), SqlError> {
            let (seq, hash): (i64, String) = sqlx::query_as(&$dialect.reads().audit_tail)
                .fetch_one(&mut *self.0)
                .await
                .map_err(db)?;
            Ok(($crate::codec::uint(S, "audit sequence number", seq)?, hash))
        }

        async fn audit_key(
            &mut self,
        ) -> Result<Option<wgm_core::integrity::StoredAuditKey>, SqlError> {
            let row: Option<(String, String)> = sqlx::query_as(&$dialect.reads().tx_audit_key)
                .fetch_optional(&mut *self.0)
                .await
                .map_err(db)?;
            row.map(|r| $crate::common::audit_key(S, r)).transpose()
        }

        async fn server_heads(
            &mut self,
        ) -> Result<std::collections::BTreeMap<ServerId, RevisionNo>, SqlError> {
            let rows: Vec<(Id, i64)> = sqlx::query_as(&$dialect.reads().server_heads)
                .fetch_all(&mut *self.0)
                .await
                .map_err(db)?;
            rows.iter()
                .map(|(id, r)| Ok((server_id(id)?, $crate::codec::rev(S, *r)?)))
                .collect()
        }

        async fn user_version(&mut self, id: UserId) -> Result<Option<u64>, SqlError> {
            let v: Option<i64> = sqlx::query_scalar(&$dialect.reads().user_version)
                .bind(bind_id(id.as_uuid()))
                .fetch_optional(&mut *self.0)
                .await
                .map_err(db)?;
            v.map(|v| $crate::codec::uint(S, "user version", v))
                .transpose()
        }

        async fn user_clash(&mut self, user: &User) -> Result<Option<UserClash>, SqlError> {
            let rows: Vec<bool> = sqlx::query_scalar(&$dialect.reads().user_clash)
                .bind(bind_id(user.id.as_uuid()))
                .bind(user.name.key())
                .bind(user.email.as_deref())
                .fetch_all(&mut *self.0)
                .await
                .map_err(db)?;
            Ok(if rows.iter().any(|n| *n) {
                Some(UserClash::Name)
            } else if rows.is_empty() {
                None
            } else {
                Some(UserClash::Email)
            })
        }

        async fn token(&mut self, id: TokenId) -> Result<Option<ApiTokenRecord>, SqlError> {
            let b: Option<String> = sqlx::query_scalar(&$dialect.reads().token)
                .bind(bind_id(&id.as_uuid()))
                .fetch_optional(&mut *self.0)
                .await
                .map_err(db)?;
            b.map(|b| $crate::codec::from_json(S, "token", &b))
                .transpose()
        }
    };
}
pub(crate) use tx_reads;

/// The writes of `store::rules::Restore` that are the same on both engines but for the
/// dialect: `clear` ([`CLEAR`], [`RESET_AUDIT_HEAD`]) and the multi-row inserts of
/// revisions and audit records. Expanded inside each engine's `impl Restore`, where
/// `S`, `db`, `bind_id`, `int`, `ns` and `to_json` are that engine's.
macro_rules! restore_writes {
    ($dialect:path) => {
        async fn clear(&mut self) -> Result<(), SqlError> {
            for statement in $crate::common::CLEAR {
                sqlx::query(&$dialect.render(statement))
                    .execute(&mut *self.0)
                    .await
                    .map_err(db)?;
            }
            sqlx::query(&$dialect.render($crate::common::RESET_AUDIT_HEAD))
                .bind(wgm_core::integrity::AuditHead::genesis().hash)
                .execute(&mut *self.0)
                .await
                .map_err(db)?;
            Ok(())
        }

        async fn insert_revisions(&mut self, records: &[RevisionRecord]) -> Result<(), SqlError> {
            let (columns, casts) = $crate::common::REVISION_COLUMNS;
            for chunk in records.chunks($crate::common::RESTORE_CHUNK) {
                let sql = $dialect.render(&$crate::common::insert_rows(
                    "revisions",
                    columns,
                    casts,
                    chunk.len(),
                ));
                let mut q = sqlx::query(&sql);
                for r in chunk {
                    q = q
                        .bind(bind_id(r.server_id.as_uuid()))
                        .bind(int(r.revision.0))
                        .bind(ns(r.at))
                        .bind(&r.author.label)
                        .bind(&r.summary)
                        .bind(to_json(S, "revision", r)?);
                }
                q.execute(&mut *self.0).await.map_err(db)?;
            }
            Ok(())
        }

        async fn insert_audit(&mut self, records: &[AuditRecord]) -> Result<(), SqlError> {
            let (columns, casts) = $crate::common::AUDIT_COLUMNS;
            for chunk in records.chunks($crate::common::RESTORE_CHUNK) {
                let sql = $dialect.render(&$crate::common::insert_rows(
                    "audit",
                    columns,
                    casts,
                    chunk.len(),
                ));
                let mut q = sqlx::query(&sql);
                for rec in chunk {
                    q = q
                        .bind(int(rec.seq))
                        .bind(ns(rec.entry.at))
                        .bind(&rec.entry.actor.label)
                        .bind(rec.entry.server_id.map(|s| bind_id(s.as_uuid())))
                        .bind(&rec.entry.object)
                        .bind(to_json(S, "audit entry", &rec.entry)?)
                        .bind(&rec.prev_hash)
                        .bind(&rec.hash);
                }
                q.execute(&mut *self.0).await.map_err(db)?;
            }
            Ok(())
        }
    };
}
pub(crate) use restore_writes;

/// The login throttle's records (`wgm_core::store::ThrottleStore`), written once for both
/// engines: reads on the pool, and a swap as one transaction that an engine's
/// `throttle_write(key)` begins already serialized on the key (SQLite: `BEGIN
/// IMMEDIATE`; PostgreSQL: the key's advisory lock). Inside it: the live record is read,
/// compared by value with the one expected, and on a match the next is written (or the
/// row deleted), then a few expired rows are pruned ([`PRUNE_THROTTLE`]).
macro_rules! throttle_methods {
    ($dialect:path) => {
        pub(crate) async fn throttle_records(
            &self,
            keys: &[wgm_core::auth::throttle::ThrottleKey],
            now: OffsetDateTime,
        ) -> Result<Vec<Option<wgm_core::auth::throttle::ThrottleState>>, SqlError> {
            let names = keys
                .iter()
                .map(wgm_core::auth::throttle::ThrottleKey::store_key)
                .collect::<Result<Vec<String>, wgm_core::Error>>()?;
            let q = &$dialect.reads().throttle_record;
            let mut out = Vec::with_capacity(names.len());
            for name in &names {
                let body: Option<String> = sqlx::query_scalar(q)
                    .bind(name)
                    .bind(now.unix_timestamp())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db)?;
                out.push(
                    body.map(|b| $crate::codec::from_json(S, "login throttle record", &b))
                        .transpose()?,
                );
            }
            Ok(out)
        }

        pub(crate) async fn swap_throttle_record(
            &self,
            key: &wgm_core::auth::throttle::ThrottleKey,
            expected: Option<&wgm_core::auth::throttle::ThrottleState>,
            new: Option<&wgm_core::store::ThrottleRecord>,
            now: OffsetDateTime,
        ) -> Result<bool, SqlError> {
            let name = key.store_key()?;
            let now = now.unix_timestamp();
            // A record that expires by now is stored as none.
            let new = match new.filter(|r| r.expires_at.unix_timestamp() > now) {
                Some(r) => Some((
                    $crate::codec::to_json(S, "login throttle record", &r.state)?,
                    r.expires_at.unix_timestamp(),
                )),
                None => None,
            };
            retrying!(
                "swap_throttle_record",
                async {
                    let (_serialized, mut tx) = self.throttle_write(&name).await?;
                    let body: Option<String> =
                        sqlx::query_scalar(&$dialect.reads().throttle_record)
                            .bind(&name)
                            .bind(now)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(db)?;
                    let current: Option<wgm_core::auth::throttle::ThrottleState> = body
                        .map(|b| $crate::codec::from_json(S, "login throttle record", &b))
                        .transpose()?;
                    if current.as_ref() != expected {
                        tx.rollback().await.map_err(db)?;
                        return Ok(false);
                    }
                    match &new {
                        Some((body, expires_at)) => {
                            sqlx::query(&$dialect.render($crate::common::PUT_THROTTLE))
                                .bind(&name)
                                .bind(body)
                                .bind(expires_at)
                                .execute(&mut *tx)
                                .await
                                .map_err(db)?;
                        }
                        None => {
                            sqlx::query(&$dialect.render($crate::common::DELETE_THROTTLE))
                                .bind(&name)
                                .execute(&mut *tx)
                                .await
                                .map_err(db)?;
                        }
                    }
                    sqlx::query(&$dialect.render($crate::common::PRUNE_THROTTLE))
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                    tx.commit().await.map_err(db)?;
                    Ok(true)
                }
                .await
            )
        }
    };
}
pub(crate) use throttle_methods;

#[cfg(test)]
mod restore_tests {
    use super::*;

    #[test]
    fn multi_row_inserts_number_every_placeholder() {
        let sql = insert_rows("t", "a, b", &["", "::jsonb"], 2);
        assert_eq!(
            sql,
            "INSERT INTO {wgm.}t (a, b) VALUES ($1, $2{::jsonb}), ($3, $4{::jsonb})"
        );
        #[cfg(feature = "sqlite")]
        assert_eq!(
            crate::dialect::SQLITE.render(&sql),
            "INSERT INTO t (a, b) VALUES (?1, ?2), (?3, ?4)"
        );
        #[cfg(feature = "postgres")]
        assert_eq!(
            crate::dialect::POSTGRES.render(&sql),
            "INSERT INTO wgm.t (a, b) VALUES ($1, $2::jsonb), ($3, $4::jsonb)"
        );
    }
}
