//! The PostgreSQL backend: tables in schema `wgm`, typed `inet` columns, unique
//! constraints as a second line of defence, row locks on the server's head, retries on
//! 40001/40P01/23505, and `NOTIFY wgm_events` on every commit.
//!
//! Transactions run at READ COMMITTED. A commit first locks its server's head row
//! (`SELECT ... FOR UPDATE`): concurrent writers of one server (allocators included)
//! queue there, and each statement after the lock sees everything the previous holder
//! committed. Audit appends lock the single audit-head row, always as the last lock a
//! transaction takes, so lock order is fixed and the chain stays linear.

use std::collections::HashMap;
use std::str::FromStr;

use futures::stream::{BoxStream, StreamExt};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;
use wgm_core::integrity::{AuditKey, StoredAuditKey};
use wgm_core::model::{
    ApiTokenRecord, AuditEntry, AuditQuery, AuditRecord, Commit, Committed, IdentityChange, Page,
    Peer, PeerId, PeerStats, RevisionNo, RevisionRecord, Server, ServerId, ServerState,
    ServerSummary, TokenId, User, UserId,
};
use wgm_core::names::{RoleName, ServerName, UserName};
use wgm_core::rbac::Role;
use wgm_core::seal::SealedSecret;
use wgm_core::store::rules::{self, Probe, Transaction, UserClash};
use wgm_core::store::SealAuditKey;
use wgm_core::Error;

use crate::codec::{int, ns, peer_body, peer_from, retrying, to_json};
use crate::common;
use crate::error::SqlError;
use crate::{migrate, SqlOptions};

const S: &str = "postgres";

/// The LISTEN/NOTIFY channel; payload `<server id>:<revision>`.
pub(crate) const CHANNEL: &str = "wgm_events";

/// Key of the advisory lock held while migrating (`wgm` in ASCII, as an `i64`).
const MIGRATION_LOCK: i64 = 0x0077_676d;

/// Rows per `INSERT ... SELECT FROM UNNEST(...)`.
const INSERT_CHUNK: usize = 2000;

fn db(e: sqlx::Error) -> SqlError {
    SqlError::Db {
        store: S,
        source: e,
    }
}

/// How an id column comes back: as a `uuid`.
type Id = Uuid;

/// An id (its UUID) as a parameter: a `uuid`.
fn bind_id(id: &Uuid) -> Uuid {
    *id
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "the signature the shared reads expect (SQLite parses its ids)"
)]
fn server_id(id: &Uuid) -> Result<ServerId, SqlError> {
    Ok(ServerId(*id))
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "the signature the shared reads expect (SQLite parses its ids)"
)]
fn peer_id(id: &Uuid) -> Result<PeerId, SqlError> {
    Ok(PeerId(*id))
}

/// The error of a server that gave no connection within `waited`, with the reason one
/// direct attempt gives (a refused connection fails at once there; the pool hid it
/// behind its retries). The reason is the driver's message, which never holds the URL.
async fn unreachable(connect: &PgConnectOptions, waited: std::time::Duration) -> SqlError {
    use sqlx::ConnectOptions as _;
    let probe = std::time::Duration::from_secs(2);
    let cause = match tokio::time::timeout(probe, connect.connect()).await {
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(conn)) => {
            let _ = sqlx::Connection::close(conn).await;
            "the server answered only after the wait".to_owned()
        }
        Err(_) => "no answer".to_owned(),
    };
    SqlError::Unreachable {
        store: S,
        waited,
        cause,
    }
}

/// A PostgreSQL-backed store. See the crate documentation.
#[derive(Debug)]
pub(crate) struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connect and migrate.
    pub(crate) async fn open(url: &str, opts: &SqlOptions) -> Result<PgStore, SqlError> {
        let connect = PgConnectOptions::from_str(url).map_err(|_| SqlError::Url {
            reason: "not a valid postgres:// URL".into(),
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(opts.acquire_timeout)
            .connect_lazy_with(connect.clone());
        // The first connection within the connect timeout, not the acquire timeout: sqlx
        // retries a refused connection until its deadline (a server starting up), which
        // would keep a CLI waiting 30 s for a server that is simply not there.
        match tokio::time::timeout(opts.connect_timeout, pool.acquire()).await {
            // Back to the pool, for the migration.
            Ok(Ok(conn)) => drop(conn),
            Ok(Err(sqlx::Error::PoolTimedOut)) | Err(_) => {
                pool.close().await;
                return Err(unreachable(&connect, opts.connect_timeout).await);
            }
            Ok(Err(e)) => return Err(db(e)),
        }
        let store = PgStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), SqlError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::raw_sql(
            "CREATE SCHEMA IF NOT EXISTS wgm;
             CREATE TABLE IF NOT EXISTS wgm.schema_migrations (
                 version bigint PRIMARY KEY, name text NOT NULL, applied_ns bigint NOT NULL
             );",
        )
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM wgm.schema_migrations")
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        for m in migrate::pending(S, migrate::POSTGRES, &applied)? {
            tracing::debug!(
                version = m.version,
                name = m.name,
                "applying postgres migration"
            );
            sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(db)?;
            sqlx::query(
                "INSERT INTO wgm.schema_migrations (version, name, applied_ns) VALUES ($1, $2, $3)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(ns(OffsetDateTime::now_utc()))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    /// Close the pool.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    /// Follow `NOTIFY wgm_events`.
    pub(crate) async fn subscribe(
        &self,
    ) -> Result<BoxStream<'static, wgm_core::Result<(ServerId, RevisionNo)>>, SqlError> {
        let mut listener = PgListener::connect_with(&self.pool).await.map_err(db)?;
        listener.listen(CHANNEL).await.map_err(db)?;
        let stream = listener.into_stream().filter_map(|item| async move {
            match item {
                Ok(n) => {
                    let parsed = parse_payload(n.payload());
                    if parsed.is_none() {
                        tracing::debug!(
                            channel = CHANNEL,
                            "ignoring a notification that is not <server>:<revision>"
                        );
                    }
                    parsed.map(Ok)
                }
                Err(e) => Some(Err(Error::store(S, e))),
            }
        });
        Ok(stream.boxed())
    }

    /// A read snapshot for `load_server`: both of its queries see one snapshot.
    async fn snapshot(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, SqlError> {
        self.pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(db)
    }

    common::store_reads!(crate::dialect::POSTGRES);

    pub(crate) async fn commit(&self, c: &Commit, key: &AuditKey) -> Result<Committed, SqlError> {
        retrying!(
            "commit",
            async {
                let mut tx = self.pool.begin().await.map_err(db)?;
                let r = rules::commit_with_rules(&mut PgTx(&mut tx), c, key).await?;
                tx.commit().await.map_err(db)?;
                Ok(r)
            }
            .await
        )
    }

    pub(crate) async fn set_applied(
        &self,
        id: ServerId,
        host: &str,
        revision: RevisionNo,
    ) -> Result<(), SqlError> {
        retrying!(
            "set_applied",
            async {
                sqlx::query(
                    "INSERT INTO wgm.applied (server_id, host, revision) VALUES ($1, $2, $3)
                     ON CONFLICT (server_id, host) DO UPDATE SET revision = excluded.revision",
                )
                .bind(id.0)
                .bind(host)
                .bind(int(revision.0))
                .execute(&self.pool)
                .await
                .map_err(db)
                .map(|_| ())
            }
            .await
        )
    }

    pub(crate) async fn update_peer_stats(
        &self,
        id: ServerId,
        stats: &[(PeerId, PeerStats)],
    ) -> Result<(), SqlError> {
        // Later entries for one peer win, as if applied in order; rows are updated in id
        // order so that concurrent batches lock them in one order.
        let last: HashMap<PeerId, &PeerStats> = stats.iter().map(|(p, s)| (*p, s)).collect();
        let mut sorted: Vec<(PeerId, &PeerStats)> = last.into_iter().collect();
        sorted.sort_by_key(|(p, _)| *p);
        let ids: Vec<Uuid> = sorted.iter().map(|(p, _)| p.0).collect();
        let bodies: Vec<String> = sorted
            .iter()
            .map(|(_, s)| to_json(S, "peer stats", s))
            .collect::<Result<_, _>>()?;
        retrying!(
            "update_peer_stats",
            async {
                let mut tx = self.pool.begin().await.map_err(db)?;
                let exists: Option<i32> =
                    sqlx::query_scalar("SELECT 1 FROM wgm.servers WHERE id = $1")
                        .bind(id.0)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db)?;
                if exists.is_none() {
                    return Err(Error::not_found("server", id).into());
                }
                sqlx::query(
                    "UPDATE wgm.peers p SET stats = s.stats::jsonb
                     FROM UNNEST($2::uuid[], $3::text[]) AS s(id, stats)
                     WHERE p.server_id = $1 AND p.id = s.id",
                )
                .bind(id.0)
                .bind(&ids)
                .bind(&bodies)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                tx.commit().await.map_err(db)
            }
            .await
        )
    }

    pub(crate) async fn commit_identity(
        &self,
        changes: &[IdentityChange],
        audit: &AuditEntry,
        key: &AuditKey,
    ) -> Result<AuditRecord, SqlError> {
        retrying!(
            "commit_identity",
            async {
                let mut tx = self.pool.begin().await.map_err(db)?;
                let r = rules::commit_identity_with_rules(&mut PgTx(&mut tx), changes, audit, key)
                    .await?;
                tx.commit().await.map_err(db)?;
                Ok(r)
            }
            .await
        )
    }

    pub(crate) async fn append_audit(
        &self,
        entry: &AuditEntry,
        key: &AuditKey,
    ) -> Result<AuditRecord, SqlError> {
        retrying!(
            "append_audit",
            async {
                let mut tx = self.pool.begin().await.map_err(db)?;
                let r =
                    rules::append_audit_with_rules(&mut PgTx(&mut tx), entry.clone(), key).await?;
                tx.commit().await.map_err(db)?;
                Ok(r)
            }
            .await
        )
    }

    pub(crate) async fn init_audit_key(
        &self,
        seal: &SealAuditKey<'_>,
    ) -> Result<(StoredAuditKey, bool), SqlError> {
        retrying!(
            "init_audit_key",
            async {
                let mut tx = self.pool.begin().await.map_err(db)?;
                let r = rules::init_audit_key_with_rules(&mut PgTx(&mut tx), seal).await?;
                tx.commit().await.map_err(db)?;
                Ok(r)
            }
            .await
        )
    }

    pub(crate) async fn reseal_audit_key(
        &self,
        expected: &SealedSecret,
        resealed: &StoredAuditKey,
    ) -> Result<(), SqlError> {
        retrying!(
            "reseal_audit_key",
            async {
                let mut tx = self.pool.begin().await.map_err(db)?;
                rules::reseal_audit_key_with_rules(&mut PgTx(&mut tx), expected, resealed).await?;
                tx.commit().await.map_err(db)
            }
            .await
        )
    }
}

/// Parse a `<server id>:<revision>` payload.
fn parse_payload(p: &str) -> Option<(ServerId, RevisionNo)> {
    let (id, rev) = p.split_once(':')?;
    Some((id.parse().ok()?, RevisionNo(rev.parse().ok()?)))
}

/// The primitives inside one READ COMMITTED transaction.
struct PgTx<'c>(&'c mut PgConnection);

impl Transaction for PgTx<'_> {
    type Error = SqlError;

    // `lock_server` locks the head row (`FOR UPDATE OF h`); `audit_tail` locks the audit
    // head: the last lock a transaction takes.
    common::tx_reads!(crate::dialect::POSTGRES);

    async fn peers_for_commit(
        &mut self,
        server: ServerId,
        ids: &[PeerId],
        probe: &Probe,
    ) -> Result<Vec<(PeerId, Peer)>, SqlError> {
        let ids: Vec<Uuid> = ids.iter().map(|p| p.0).collect();
        let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
            "SELECT id, body::text, stats::text FROM wgm.peers WHERE server_id = $1 AND id IN (
                SELECT id FROM wgm.peers WHERE server_id = $1 AND id = ANY($2)
                UNION ALL
                SELECT id FROM wgm.peers WHERE server_id = $1 AND name_key = ANY($3)
                UNION ALL
                SELECT id FROM wgm.peers WHERE server_id = $1 AND public_key = ANY($4)
                UNION ALL
                SELECT id FROM wgm.peers WHERE server_id = $1 AND address_v6 = ANY($5::text[]::inet[])
                UNION ALL
                SELECT id FROM wgm.peers WHERE server_id = $1 AND address_v4 = ANY($6::text[]::inet[])
                UNION ALL
                SELECT id FROM wgm.peers WHERE server_id = $1
                    AND delegated_prefix = ANY($7::text[]::inet[]))",
        )
        .bind(server.0)
        .bind(&ids)
        .bind(&probe.names)
        .bind(&probe.keys)
        .bind(&probe.v6)
        .bind(&probe.v4)
        .bind(&probe.prefixes)
        .fetch_all(&mut *self.0)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|(id, body, stats)| Ok((PeerId(*id), peer_from(S, body, stats)?)))
            .collect()
    }

    async fn insert_head(&mut self, id: ServerId, rev: RevisionNo) -> Result<(), SqlError> {
        // Two creators of one id race here; the loser's 23505 is retried, after which it
        // sees the winner's head and fails with Conflict.
        sqlx::query("INSERT INTO wgm.heads (server_id, revision) VALUES ($1, $2)")
            .bind(id.0)
            .bind(int(rev.0))
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn write_server(&mut self, s: &Server, exists: bool) -> Result<(), SqlError> {
        let sql = if exists {
            "UPDATE wgm.servers SET name_key = $2, interface = $3, public_key = $4, body = $5::jsonb WHERE id = $1"
        } else {
            "INSERT INTO wgm.servers (id, name_key, interface, public_key, body) VALUES ($1, $2, $3, $4, $5::jsonb)"
        };
        sqlx::query(sql)
            .bind(s.id.0)
            .bind(s.name.key())
            .bind(s.interface.as_str())
            .bind(s.public_key.to_base64())
            .bind(to_json(S, "server", s)?)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn delete_server(&mut self, id: ServerId) -> Result<(), SqlError> {
        sqlx::query("DELETE FROM wgm.peers WHERE server_id = $1")
            .bind(id.0)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        sqlx::query("DELETE FROM wgm.servers WHERE id = $1")
            .bind(id.0)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn delete_peers(&mut self, server: ServerId, ids: &[PeerId]) -> Result<(), SqlError> {
        let list: Vec<Uuid> = ids.iter().map(|p| p.0).collect();
        sqlx::query("DELETE FROM wgm.peers WHERE server_id = $1 AND id = ANY($2)")
            .bind(server.0)
            .bind(&list)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn insert_peers(
        &mut self,
        server: ServerId,
        peers: &[(PeerId, &Peer)],
    ) -> Result<(), SqlError> {
        for chunk in peers.chunks(INSERT_CHUNK) {
            let n = chunk.len();
            let (mut ids, mut names, mut keys) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            let (mut v6, mut v4, mut pfx) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            let (mut bodies, mut stats) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for (id, p) in chunk {
                ids.push(id.0);
                names.push(p.name.key());
                keys.push(p.public_key.to_base64());
                v6.push(p.address_v6.map(|a| a.to_string()));
                v4.push(p.address_v4.map(|a| a.to_string()));
                pfx.push(p.delegated_prefix.map(|a| a.to_string()));
                bodies.push(peer_body(S, p)?);
                stats.push(to_json(S, "peer stats", &p.stats)?);
            }
            sqlx::query(
                "INSERT INTO wgm.peers
                     (server_id, id, name_key, public_key, address_v6, address_v4, delegated_prefix, body, stats)
                 SELECT $1, u.id, u.name_key, u.public_key, u.v6::inet, u.v4::inet, u.pfx::inet,
                        u.body::jsonb, u.stats::jsonb
                 FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                             $8::text[], $9::text[])
                      AS u(id, name_key, public_key, v6, v4, pfx, body, stats)",
            )
            .bind(server.0)
            .bind(&ids)
            .bind(&names)
            .bind(&keys)
            .bind(&v6)
            .bind(&v4)
            .bind(&pfx)
            .bind(&bodies)
            .bind(&stats)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        }
        Ok(())
    }

    async fn finish(&mut self, r: &RevisionRecord, rec: &AuditRecord) -> Result<(), SqlError> {
        // One statement for the rest: the head, the revision, the audit record, the audit
        // head and the notification (queued; sent by PostgreSQL only if the commit lands).
        sqlx::query(
            "WITH head AS (UPDATE wgm.heads SET revision = $2 WHERE server_id = $1),
                  rev AS (
                      INSERT INTO wgm.revisions (server_id, revision, at_ns, author, summary, body)
                      VALUES ($1, $2, $3, $4, $5, $6::jsonb)),
                  audit AS (
                      INSERT INTO wgm.audit (seq, at_ns, actor, server_id, object, body, prev_hash, hash)
                      VALUES ($7, $8, $9, $10, $11, $12::json, $13, $14)),
                  audit_head AS (UPDATE wgm.audit_head SET seq = $7, hash = $14 WHERE id = 1)
             SELECT pg_notify($15, $16)",
        )
        .bind(r.server_id.0)
        .bind(int(r.revision.0))
        .bind(ns(r.at))
        .bind(&r.author.label)
        .bind(&r.summary)
        .bind(to_json(S, "revision", r)?)
        .bind(int(rec.seq))
        .bind(ns(rec.entry.at))
        .bind(&rec.entry.actor.label)
        .bind(rec.entry.server_id.map(|s| s.0))
        .bind(&rec.entry.object)
        .bind(to_json(S, "audit entry", &rec.entry)?)
        .bind(&rec.prev_hash)
        .bind(&rec.hash)
        .bind(CHANNEL)
        .bind(format!("{}:{}", r.server_id, r.revision))
        .execute(&mut *self.0)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn write_audit(&mut self, rec: &AuditRecord) -> Result<(), SqlError> {
        sqlx::query(
            "WITH audit AS (
                 INSERT INTO wgm.audit (seq, at_ns, actor, server_id, object, body, prev_hash, hash)
                 VALUES ($1, $2, $3, $4, $5, $6::json, $7, $8))
             UPDATE wgm.audit_head SET seq = $1, hash = $8 WHERE id = 1",
        )
        .bind(int(rec.seq))
        .bind(ns(rec.entry.at))
        .bind(&rec.entry.actor.label)
        .bind(rec.entry.server_id.map(|s| s.0))
        .bind(&rec.entry.object)
        .bind(to_json(S, "audit entry", &rec.entry)?)
        .bind(&rec.prev_hash)
        .bind(&rec.hash)
        .execute(&mut *self.0)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn write_audit_key(
        &mut self,
        key: &StoredAuditKey,
        exists: bool,
    ) -> Result<(), SqlError> {
        let sql = if exists {
            "UPDATE wgm.audit_key SET sealed = $1, legacy = $2::jsonb WHERE id = 1"
        } else {
            "INSERT INTO wgm.audit_key (id, sealed, legacy) VALUES (1, $1, $2::jsonb) ON CONFLICT (id) DO NOTHING"
        };
        sqlx::query(sql)
            .bind(key.sealed.as_str())
            .bind(to_json(S, "audit key bound", &key.legacy)?)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn insert_user(&mut self, user: &User) -> Result<(), SqlError> {
        sqlx::query("INSERT INTO wgm.users (id, name_key, email, version, body) VALUES ($1, $2, $3, $4, $5::jsonb)")
            .bind(user.id.0)
            .bind(user.name.key())
            .bind(user.email.as_deref())
            .bind(int(user.version))
            .bind(to_json(S, "user", user)?)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn update_user(&mut self, user: &User) -> Result<(), SqlError> {
        sqlx::query("UPDATE wgm.users SET name_key = $2, email = $3, version = $4, body = $5::jsonb WHERE id = $1")
            .bind(user.id.0)
            .bind(user.name.key())
            .bind(user.email.as_deref())
            .bind(int(user.version))
            .bind(to_json(S, "user", user)?)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn delete_user(&mut self, id: UserId) -> Result<bool, SqlError> {
        sqlx::query("DELETE FROM wgm.tokens WHERE user_id = $1")
            .bind(id.0)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        let r = sqlx::query("DELETE FROM wgm.users WHERE id = $1")
            .bind(id.0)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(r.rows_affected() > 0)
    }

    async fn put_role(&mut self, role: &Role) -> Result<(), SqlError> {
        sqlx::query(
            "INSERT INTO wgm.roles (name, body) VALUES ($1, $2::jsonb)
             ON CONFLICT (name) DO UPDATE SET body = excluded.body",
        )
        .bind(role.name.key())
        .bind(to_json(S, "role", role)?)
        .execute(&mut *self.0)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn delete_role(&mut self, name: &RoleName) -> Result<bool, SqlError> {
        let r = sqlx::query("DELETE FROM wgm.roles WHERE name = $1")
            .bind(name.key())
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(r.rows_affected() > 0)
    }

    async fn insert_token(&mut self, t: &ApiTokenRecord) -> Result<(), SqlError> {
        sqlx::query(
            "INSERT INTO wgm.tokens (id, user_id, created_ns, body) VALUES ($1, $2, $3, $4::jsonb)",
        )
        .bind(t.id.as_uuid())
        .bind(t.user_id.0)
        .bind(ns(t.created_at))
        .bind(to_json(S, "token", t)?)
        .execute(&mut *self.0)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn update_token(&mut self, t: &ApiTokenRecord) -> Result<(), SqlError> {
        sqlx::query("UPDATE wgm.tokens SET body = $2::jsonb WHERE id = $1")
            .bind(t.id.as_uuid())
            .bind(to_json(S, "token", t)?)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse() {
        let id = ServerId::new_random();
        assert_eq!(parse_payload(&format!("{id}:7")), Some((id, RevisionNo(7))));
        assert_eq!(parse_payload("nonsense"), None);
        assert_eq!(parse_payload(&format!("{id}:-1")), None);
    }
}
