//! Tampering with the SQL tables behind the store's back, as someone who can write the
//! database but does not hold the master key, checked through the `Manager`
//! (`verify_audit_chain`, `history`, `diff`, `rollback`): every case below must be
//! caught, and a rollback to a forged revision must write nothing. Each runs on SQLite
//! and, with `WGM_TEST_POSTGRES_URL`, on PostgreSQL (a fresh database each).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{open, Kind, TestStore};
use sqlx::Connection;
use wgm_core::error::{AuditBreak, ConflictKind};
use wgm_core::integrity::AuditHead;
use wgm_core::manager::{Manager, NewPeer, NewServer};
use wgm_core::model::{AuditQuery, AuditRecord, Change, RevisionNo, ServerId};
use wgm_core::names::{InterfaceName, PeerName, ServerName};
use wgm_core::net::ListenPort;
use wgm_core::rbac::Principal;
use wgm_core::seal::{MasterKey, Sealer};
use wgm_core::store::Store;
use wgm_core::Error;
use wgm_store_sql::SqlStore;

/// A value bound to a tampering statement.
enum Bind {
    Text(String),
    Int(u64),
}

/// Run one statement on the test's database (SQLite's text or PostgreSQL's), binding
/// `binds` in order; PostgreSQL's text casts ids and JSON itself.
async fn exec(t: &TestStore, sqlite: &str, postgres: &str, binds: Vec<Bind>) -> u64 {
    let url = t.url.as_deref().unwrap();
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        let mut q = sqlx::query(sqlite);
        for b in binds {
            q = match b {
                Bind::Text(s) => q.bind(s),
                Bind::Int(i) => q.bind(i64::try_from(i).unwrap()),
            };
        }
        let n = q.execute(&mut c).await.unwrap().rows_affected();
        c.close().await.unwrap();
        n
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        let mut q = sqlx::query(postgres);
        for b in binds {
            q = match b {
                Bind::Text(s) => q.bind(s),
                Bind::Int(i) => q.bind(i64::try_from(i).unwrap()),
            };
        }
        let n = q.execute(&mut c).await.unwrap().rows_affected();
        c.close().await.unwrap();
        n
    }
}

/// A store, a manager on it with its master key and local administrator, and a server
/// with three peers and one secret export: revisions 1..=4, audit records 1..=5.
struct World {
    t: TestStore,
    master: MasterKey,
    m: Manager,
    admin: Principal,
    sid: ServerId,
}

fn manager(store: Arc<dyn Store>, master: &MasterKey) -> (Manager, Principal) {
    let (m, local) = Manager::builder(
        store,
        Sealer::new(MasterKey::from_bytes(*master.expose_bytes())),
    )
    .build_with_local_admin();
    (m, local.principal("test"))
}

async fn world(kind: Kind) -> Option<World> {
    let t = open(kind).await?;
    let master = MasterKey::generate();
    let (m, admin) = manager(t.store.clone(), &master);
    let mut spec = NewServer::new(
        ServerName::new("tampered").unwrap(),
        InterfaceName::new("wg0").unwrap(),
        ListenPort::DEFAULT,
    );
    spec.ipv4_pool = Some("10.9.0.0/24".parse().unwrap());
    let sid = m.create_server(&admin, spec).await.unwrap().id;
    let mut first = None;
    for name in ["a", "b", "c"] {
        let p = m
            .add_peer(&admin, sid, NewPeer::new(PeerName::new(name).unwrap()))
            .await
            .unwrap();
        first.get_or_insert(p.id);
    }
    m.client_config(&admin, sid, first.unwrap()).await.unwrap();
    let v = m.verify_audit_chain(&admin, None).await.unwrap();
    assert_eq!((v.records, v.legacy_records), (5, 0));
    Some(World {
        t,
        master,
        m,
        admin,
        sid,
    })
}

impl World {
    /// A fresh manager on the same database (another process, nothing cached).
    async fn fresh(&self) -> (Manager, Principal) {
        manager(Arc::new(self.t.reopen().await), &self.master)
    }

    async fn verify(&self, expect: Option<&AuditHead>) -> Result<u64, Error> {
        let (m, p) = self.fresh().await;
        m.verify_audit_chain(&p, expect).await.map(|v| v.records)
    }

    async fn records(&self) -> Vec<AuditRecord> {
        self.t
            .store
            .query_audit(&AuditQuery::default())
            .await
            .unwrap()
    }

    /// Rewrite a record's body (its filter columns kept consistent with it).
    async fn write_entry(&self, r: &AuditRecord) {
        let body = serde_json::to_string(&r.entry).unwrap();
        exec(
            &self.t,
            "UPDATE audit SET body = ?1, object = ?2 WHERE seq = ?3",
            "UPDATE wgm.audit SET body = $1::json, object = $2 WHERE seq = $3",
            vec![
                Bind::Text(body),
                Bind::Text(r.entry.object.clone()),
                Bind::Int(r.seq),
            ],
        )
        .await;
    }

    /// Rewrite a record's links.
    async fn write_links(&self, seq: u64, prev: &str, hash: &str) {
        exec(
            &self.t,
            "UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
            "UPDATE wgm.audit SET prev_hash = $1, hash = $2 WHERE seq = $3",
            vec![
                Bind::Text(prev.to_owned()),
                Bind::Text(hash.to_owned()),
                Bind::Int(seq),
            ],
        )
        .await;
    }

    async fn write_head(&self, seq: u64, hash: &str) {
        exec(
            &self.t,
            "UPDATE audit_head SET seq = ?1, hash = ?2",
            "UPDATE wgm.audit_head SET seq = $1, hash = $2",
            vec![Bind::Int(seq), Bind::Text(hash.to_owned())],
        )
        .await;
    }

    /// Recompute the links from record `from` on as an unkeyed SHA-256 chain (what
    /// someone without the key can do), and move the stored head to the last one.
    async fn relink_unkeyed(&self, from: u64) {
        let records = self.records().await;
        let mut prev = records
            .iter()
            .find(|r| r.seq + 1 == from)
            .map_or_else(|| AuditHead::genesis().hash, |r| r.hash.clone());
        let mut last = (0, prev.clone());
        for r in records.iter().filter(|r| r.seq >= from) {
            let hash = AuditRecord::legacy_hash(r.seq, &prev, &r.entry);
            self.write_links(r.seq, &prev, &hash).await;
            last = (r.seq, hash.clone());
            prev = hash;
        }
        self.write_head(last.0, &last.1).await;
    }

    /// Rewrite revision `rev`'s body with `f` (its columns left as they are).
    async fn edit_revision(&self, rev: u64, f: impl FnOnce(&mut serde_json::Value)) {
        let r = &self
            .t
            .store
            .revisions(self.sid, RevisionNo(rev - 1), 1)
            .await
            .unwrap()[0];
        let mut body = serde_json::to_value(r).unwrap();
        f(&mut body);
        exec(
            &self.t,
            "UPDATE revisions SET body = ?1 WHERE server_id = ?2 AND revision = ?3",
            "UPDATE wgm.revisions SET body = $1::jsonb WHERE server_id = $2::uuid AND revision = $3",
            vec![
                Bind::Text(body.to_string()),
                Bind::Text(self.sid.to_string()),
                Bind::Int(rev),
            ],
        )
        .await;
    }
}

fn broken(r: Result<u64, Error>) -> AuditBreak {
    match r {
        Err(Error::Conflict {
            kind: ConflictKind::AuditChainBroken(b),
        }) => b,
        other => panic!("not a broken chain: {other:?}"),
    }
}

fn altered<T: std::fmt::Debug>(r: Result<T, Error>) -> (u64, &'static str) {
    match r {
        Err(Error::Conflict {
            kind: ConflictKind::RevisionAltered {
                revision, reason, ..
            },
        }) => (revision, reason),
        other => panic!("not an altered revision: {other:?}"),
    }
}

async fn delete_newest(kind: Kind) {
    for n in [1u64, 3] {
        let Some(w) = world(kind).await else { return };
        exec(
            &w.t,
            "DELETE FROM audit WHERE seq > ?1",
            "DELETE FROM wgm.audit WHERE seq > $1",
            vec![Bind::Int(5 - n)],
        )
        .await;
        assert_eq!(
            broken(w.verify(None).await),
            AuditBreak::Head {
                stored: 5,
                found: 5 - n
            }
        );
    }
}

#[tokio::test]
async fn deleting_the_newest_records_is_detected_sqlite() {
    delete_newest(Kind::SqliteFile).await;
}

#[tokio::test]
async fn deleting_the_newest_records_is_detected_postgres() {
    delete_newest(Kind::Postgres).await;
}

async fn rewritten_head(kind: Kind) {
    let Some(w) = world(kind).await else { return };
    let exported = w.m.verify_audit_chain(&w.admin, None).await.unwrap().head;
    let third = w.records().await[2].clone();
    exec(
        &w.t,
        "DELETE FROM audit WHERE seq > 3",
        "DELETE FROM wgm.audit WHERE seq > 3",
        vec![],
    )
    .await;
    w.write_head(3, &third.hash).await;
    // Consistent again: only a head kept elsewhere tells.
    assert_eq!(w.verify(None).await.unwrap(), 3);
    assert_eq!(
        broken(w.verify(Some(&exported)).await),
        AuditBreak::Expected { seq: 5 }
    );
    // An exported head that is still there passes; one with another hash does not.
    assert_eq!(w.verify(Some(&third.head())).await.unwrap(), 3);
    let mut other = third.head();
    other.hash = "ab".repeat(32);
    assert_eq!(
        broken(w.verify(Some(&other)).await),
        AuditBreak::Expected { seq: 3 }
    );
}

#[tokio::test]
async fn a_rewritten_head_is_caught_by_an_exported_head_sqlite() {
    rewritten_head(Kind::SqliteFile).await;
}

#[tokio::test]
async fn a_rewritten_head_is_caught_by_an_exported_head_postgres() {
    rewritten_head(Kind::Postgres).await;
}

async fn filter_columns(kind: Kind) {
    for (column, sqlite, postgres) in [
        (
            "actor",
            "UPDATE audit SET actor = 'local:nobody' WHERE seq = 2",
            "UPDATE wgm.audit SET actor = 'local:nobody' WHERE seq = 2",
        ),
        (
            "server_id",
            "UPDATE audit SET server_id = NULL WHERE seq = 2",
            "UPDATE wgm.audit SET server_id = NULL WHERE seq = 2",
        ),
        (
            "object",
            "UPDATE audit SET object = 'elsewhere' WHERE seq = 2",
            "UPDATE wgm.audit SET object = 'elsewhere' WHERE seq = 2",
        ),
        (
            "at_ns",
            "UPDATE audit SET at_ns = at_ns - 1 WHERE seq = 2",
            "UPDATE wgm.audit SET at_ns = at_ns - 1 WHERE seq = 2",
        ),
    ] {
        let Some(w) = world(kind).await else { return };
        exec(&w.t, sqlite, postgres, vec![]).await;
        assert_eq!(
            broken(w.verify(None).await),
            AuditBreak::Column { seq: 2, column },
            "{column}"
        );
    }
    // The attack it stops: a record hidden from a filtered query by its column. The
    // filtered query misses it, but verification reads every column.
    let Some(w) = world(kind).await else { return };
    let actor = w.records().await[1].entry.actor.label.clone();
    let before =
        w.m.audit_log(
            &w.admin,
            &AuditQuery {
                actor: Some(actor.clone()),
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap()
        .len();
    exec(
        &w.t,
        "UPDATE audit SET actor = 'local:nobody' WHERE seq = 2",
        "UPDATE wgm.audit SET actor = 'local:nobody' WHERE seq = 2",
        vec![],
    )
    .await;
    let after =
        w.m.audit_log(
            &w.admin,
            &AuditQuery {
                actor: Some(actor),
                ..AuditQuery::default()
            },
        )
        .await
        .unwrap()
        .len();
    assert_eq!(after, before - 1);
    assert!(w.verify(None).await.is_err());
}

#[tokio::test]
async fn edited_filter_columns_are_detected_sqlite() {
    filter_columns(Kind::SqliteFile).await;
}

#[tokio::test]
async fn edited_filter_columns_are_detected_postgres() {
    filter_columns(Kind::Postgres).await;
}

async fn unkeyed_recompute(kind: Kind) {
    let Some(w) = world(kind).await else { return };
    let mut r = w.records().await[1].clone();
    r.entry.object = format!("{} (edited)", r.entry.object);
    w.write_entry(&r).await;
    assert_eq!(broken(w.verify(None).await), AuditBreak::Altered { seq: 2 });
    // Recomputed without the key, as an unkeyed SHA-256 chain, head included.
    w.relink_unkeyed(2).await;
    assert_eq!(broken(w.verify(None).await), AuditBreak::Unkeyed { seq: 2 });
}

#[tokio::test]
async fn an_unkeyed_chain_recomputed_after_an_edit_is_detected_sqlite() {
    unkeyed_recompute(Kind::SqliteFile).await;
}

#[tokio::test]
async fn an_unkeyed_chain_recomputed_after_an_edit_is_detected_postgres() {
    unkeyed_recompute(Kind::Postgres).await;
}

async fn forged_revision(kind: Kind) {
    let Some(w) = world(kind).await else { return };
    let (m, p) = w.fresh().await;
    let state = w.t.store.load_server(w.sid).await.unwrap().unwrap();
    let audit_head = w.t.store.audit_head().await.unwrap();
    // Revision 2 added peer a: make it route everything.
    w.edit_revision(2, |body| {
        body["changes"][0]["peer"]["extra_allowed_ips"] = serde_json::json!(["0.0.0.0/0"]);
    })
    .await;
    assert_eq!(
        altered(m.rollback(&p, w.sid, RevisionNo(2)).await),
        (2, "its MAC does not verify")
    );
    assert!(m
        .diff(&p, w.sid, RevisionNo(1), RevisionNo(2))
        .await
        .is_err());
    assert!(m
        .diff(&p, w.sid, RevisionNo(3), RevisionNo(4))
        .await
        .is_err());
    assert_eq!(
        altered(m.history(&p, w.sid, RevisionNo::NONE, 10).await).0,
        2
    );
    // Revisions before it still read.
    assert_eq!(
        m.history(&p, w.sid, RevisionNo::NONE, 1)
            .await
            .unwrap()
            .len(),
        1
    );
    // Nothing was written: the same state, head and audit log.
    assert_eq!(w.t.store.load_server(w.sid).await.unwrap().unwrap(), state);
    assert_eq!(w.t.store.audit_head().await.unwrap(), audit_head);

    // Without its MAC it is refused too (written after the key existed).
    w.edit_revision(2, |body| {
        body.as_object_mut().unwrap().remove("mac");
    })
    .await;
    assert_eq!(
        altered(m.rollback(&p, w.sid, RevisionNo(2)).await),
        (
            2,
            "it carries no MAC although it was written after the audit key"
        )
    );
    // A forged extra change in an otherwise untouched revision.
    let Some(w) = world(kind).await else { return };
    let (m, p) = w.fresh().await;
    let peer = w.t.store.revisions(w.sid, RevisionNo(1), 1).await.unwrap()[0].changes[0].clone();
    let Change::PeerAdded { peer } = peer else {
        panic!("revision 2 adds a peer")
    };
    let mut forged = (*peer).clone();
    forged.id = wgm_core::model::PeerId::new_random();
    forged.name = PeerName::new("mallory").unwrap();
    forged.public_key = wgm_core::keys::PrivateKey::generate().public_key();
    forged.address_v4 = Some("10.9.0.200".parse().unwrap());
    forged.address_v6 = None;
    forged.extra_allowed_ips = vec!["0.0.0.0/0".parse().unwrap()];
    w.edit_revision(3, |body| {
        body["changes"].as_array_mut().unwrap().push(
            serde_json::to_value(Change::PeerAdded {
                peer: Box::new(forged),
            })
            .unwrap(),
        );
    })
    .await;
    assert_eq!(altered(m.rollback(&p, w.sid, RevisionNo(3)).await).0, 3);
    // Only a column edited: the body disagrees with it.
    let Some(w) = world(kind).await else { return };
    let (m, p) = w.fresh().await;
    exec(
        &w.t,
        "UPDATE revisions SET summary = 'harmless' WHERE revision = 2",
        "UPDATE wgm.revisions SET summary = 'harmless' WHERE revision = 2",
        vec![],
    )
    .await;
    assert_eq!(
        altered(m.history(&p, w.sid, RevisionNo::NONE, 10).await),
        (2, "a stored column disagrees with its body")
    );
    // A revision deleted from the middle makes a replay wrong: refused.
    let Some(w) = world(kind).await else { return };
    let (m, p) = w.fresh().await;
    exec(
        &w.t,
        "DELETE FROM revisions WHERE revision = 2",
        "DELETE FROM wgm.revisions WHERE revision = 2",
        vec![],
    )
    .await;
    assert_eq!(
        altered(m.rollback(&p, w.sid, RevisionNo(3)).await),
        (3, "the revision before it is missing")
    );
}

#[tokio::test]
async fn a_forged_revision_is_refused_and_nothing_written_sqlite() {
    forged_revision(Kind::SqliteFile).await;
}

#[tokio::test]
async fn a_forged_revision_is_refused_and_nothing_written_postgres() {
    forged_revision(Kind::Postgres).await;
}

/// Turn the world's store into one written by a version without the audit key: schema
/// version 1 (no `audit_key` table: the next open migrates), no MACs, unkeyed links.
async fn make_legacy(w: &World) {
    exec(
        &w.t,
        "DROP TABLE audit_key",
        "DROP TABLE wgm.audit_key",
        vec![],
    )
    .await;
    exec(
        &w.t,
        "DELETE FROM schema_migrations WHERE version = 2",
        "DELETE FROM wgm.schema_migrations WHERE version = 2",
        vec![],
    )
    .await;
    exec(
        &w.t,
        "UPDATE revisions SET body = json_remove(body, '$.mac')",
        "UPDATE wgm.revisions SET body = body - 'mac'",
        vec![],
    )
    .await;
    w.relink_unkeyed(1).await;
}

async fn legacy_prefix(kind: Kind) {
    let Some(w) = world(kind).await else { return };
    make_legacy(&w).await;
    // Opening the store migrates it (the `audit_key` table, empty). Read paths do not
    // create the key: everything is unkeyed, and accepted as such.
    let (m, p) = w.fresh().await;
    let v = m.verify_audit_chain(&p, None).await.unwrap();
    assert_eq!((v.records, v.legacy_records), (5, 5));
    assert_eq!(
        m.history(&p, w.sid, RevisionNo::NONE, 10)
            .await
            .unwrap()
            .len(),
        4
    );
    assert!(w.t.store.audit_key().await.unwrap().is_none());
    // The first write creates the key, bound to what exists now.
    m.add_peer(&p, w.sid, NewPeer::new(PeerName::new("d").unwrap()))
        .await
        .unwrap();
    let key = w.t.store.audit_key().await.unwrap().unwrap();
    assert_eq!(key.legacy.audit_seq, 5);
    assert_eq!(key.legacy.revisions.get(&w.sid), Some(&RevisionNo(4)));
    let v = m.verify_audit_chain(&p, None).await.unwrap();
    assert_eq!((v.records, v.legacy_records), (6, 5));
    assert_eq!(
        m.history(&p, w.sid, RevisionNo::NONE, 10)
            .await
            .unwrap()
            .len(),
        5
    );
    assert_eq!(w.verify(None).await.unwrap(), 6);

    // An unkeyed record after the prefix.
    let sixth = w.records().await[5].clone();
    w.relink_unkeyed(6).await;
    assert_eq!(broken(w.verify(None).await), AuditBreak::Unkeyed { seq: 6 });
    w.write_links(6, &sixth.prev_hash, &sixth.hash).await;
    w.write_head(6, &sixth.hash).await;
    assert_eq!(w.verify(None).await.unwrap(), 6);

    // The unkeyed prefix rewritten (and recomputed up to its end): its last link is
    // pinned by the sealed key's bound.
    let mut second = w.records().await[1].clone();
    second.entry.object = format!("{} (edited)", second.entry.object);
    w.write_entry(&second).await;
    let records = w.records().await;
    let mut prev = records[0].hash.clone();
    for r in records.iter().filter(|r| (2..=5).contains(&r.seq)) {
        let hash = AuditRecord::legacy_hash(r.seq, &prev, &r.entry);
        w.write_links(r.seq, &prev, &hash).await;
        prev = hash;
    }
    assert_eq!(broken(w.verify(None).await), AuditBreak::Legacy { seq: 5 });

    // A revision written after the key without its MAC.
    let Some(w) = world(kind).await else { return };
    make_legacy(&w).await;
    let (m, p) = w.fresh().await;
    m.add_peer(&p, w.sid, NewPeer::new(PeerName::new("d").unwrap()))
        .await
        .unwrap();
    w.edit_revision(5, |body| {
        body.as_object_mut().unwrap().remove("mac");
    })
    .await;
    assert_eq!(
        altered(m.history(&p, w.sid, RevisionNo::NONE, 10).await).0,
        5
    );

    // The bound moved forward (to pass forged unkeyed records off as old): the key no
    // longer opens, so nothing is written and verification fails loudly.
    let (sqlite, postgres) = (
        "UPDATE audit_key SET legacy = json_set(legacy, '$.audit_seq', 6)",
        "UPDATE wgm.audit_key SET legacy = jsonb_set(legacy, '{audit_seq}', '6')",
    );
    exec(&w.t, sqlite, postgres, vec![]).await;
    let (m, p) = w.fresh().await;
    let e = m.verify_audit_chain(&p, None).await.unwrap_err();
    assert!(matches!(e, Error::Sealed { .. }), "{e}");
    let e = m
        .add_peer(&p, w.sid, NewPeer::new(PeerName::new("e").unwrap()))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Sealed { .. }), "{e}");
}

#[tokio::test]
async fn unkeyed_records_are_accepted_only_as_the_bound_prefix_sqlite() {
    legacy_prefix(Kind::SqliteFile).await;
}

#[tokio::test]
async fn unkeyed_records_are_accepted_only_as_the_bound_prefix_postgres() {
    legacy_prefix(Kind::Postgres).await;
}

/// Two processes opening a fresh store at once and writing: one audit key, which both use.
async fn key_race(kind: Kind) {
    let Some(t) = open(kind).await else { return };
    let master = MasterKey::generate();
    for round in 0..3 {
        let a: Arc<dyn Store> = Arc::new(t.reopen().await);
        let b: Arc<dyn Store> = Arc::new(SqlStore::open(t.url.as_deref().unwrap()).await.unwrap());
        let (ma, pa) = manager(a, &master);
        let (mb, pb) = manager(b, &master);
        // Servers of one installation may not share a listen port: one each.
        let spec = |n: &str| {
            let port = 51820 + 2 * round as u16 + u16::from(n == "b");
            NewServer::new(
                ServerName::new(format!("{n}{round}")).unwrap(),
                InterfaceName::new(format!("wg{n}{round}")).unwrap(),
                ListenPort::new(port).unwrap(),
            )
        };
        let (x, y) = tokio::join!(
            ma.create_server(&pa, spec("a")),
            mb.create_server(&pb, spec("b"))
        );
        x.unwrap();
        y.unwrap();
        let v = ma.verify_audit_chain(&pa, None).await.unwrap();
        assert_eq!((v.records, v.legacy_records), (2 * (round + 1), 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_creating_the_key_end_with_one_sqlite() {
    key_race(Kind::SqliteFile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_creating_the_key_end_with_one_postgres() {
    key_race(Kind::Postgres).await;
}
