//! Differential test: random commits — many of them clashing on names, keys, addresses,
//! prefixes, ids or revisions — applied to `MemoryStore` (the reference) and to a SQL
//! store. Every outcome (revision, or error variant and message), every state, the history and the
//! whole audit log (down to the hashes) must be identical.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use std::sync::Arc;

use common::{commit, open, peer, pubkey, server, Kind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wgm_core::keys::PublicKey;
use wgm_core::model::{AuditQuery, Change, Peer, PeerId, RevisionNo, Server, ServerId};
use wgm_core::names::{PeerName, ServerName};
use wgm_core::store::{MemoryStore, Store};

const STEPS: usize = 400;

struct Universe {
    names: Vec<PeerName>,
    keys: Vec<PublicKey>,
}

fn random_peer(rng: &mut StdRng, u: &Universe, srv: &Server, id: PeerId) -> Peer {
    let mut p = peer(srv, "x", 2);
    p.id = id;
    p.name = u.names[rng.gen_range(0..u.names.len())].clone();
    p.public_key = u.keys[rng.gen_range(0..u.keys.len())];
    p.address_v6 = rng
        .gen_bool(0.9)
        .then(|| common::host_v6(rng.gen_range(2..8)));
    p.address_v4 = srv.ipv4_pool.and_then(|n| {
        rng.gen_bool(0.7)
            .then(|| common::host_v4(n, rng.gen_range(2..6)))
    });
    p.delegated_prefix = rng.gen_bool(0.3).then(|| {
        format!("fd55:{}::/64", rng.gen_range(1..4))
            .parse()
            .unwrap()
    });
    p.enabled = rng.gen_bool(0.8);
    p
}

fn random_changes(
    rng: &mut StdRng,
    u: &Universe,
    srv: &Server,
    current: Option<&wgm_core::model::ServerState>,
) -> Vec<Change> {
    let peers: Vec<&Peer> = current
        .map(|s| s.peers.values().collect())
        .unwrap_or_default();
    let pick = |rng: &mut StdRng| -> Option<Peer> {
        if peers.is_empty() || rng.gen_bool(0.1) {
            None
        } else {
            Some(peers[rng.gen_range(0..peers.len())].clone())
        }
    };
    let n = rng.gen_range(1..=3);
    let mut out = Vec::new();
    if current.is_none() && rng.gen_bool(0.8) {
        // Bring the deleted server back (under a name that may be taken).
        let mut s = srv.clone();
        s.name = ServerName::new(["one", "three", "TWO"][rng.gen_range(0..3)]).unwrap();
        out.push(Change::ServerCreated {
            server: Box::new(s),
        });
    }
    for _ in 0..n {
        let roll = rng.gen_range(0..100);
        let change = match roll {
            0..=44 => {
                let id = match pick(rng) {
                    Some(p) if rng.gen_bool(0.1) => p.id,
                    _ => PeerId::new_random(),
                };
                Change::PeerAdded {
                    peer: Box::new(random_peer(rng, u, srv, id)),
                }
            }
            45..=69 => {
                let before =
                    pick(rng).unwrap_or_else(|| random_peer(rng, u, srv, PeerId::new_random()));
                let mut after = random_peer(rng, u, srv, before.id);
                if rng.gen_bool(0.5) {
                    after.name = before.name.clone();
                    after.public_key = before.public_key;
                }
                Change::PeerUpdated {
                    before: Box::new(before),
                    after: Box::new(after),
                }
            }
            70..=87 => {
                let p = pick(rng).unwrap_or_else(|| random_peer(rng, u, srv, PeerId::new_random()));
                Change::PeerRemoved { peer: Box::new(p) }
            }
            88..=94 => {
                let before = current.map_or_else(|| srv.clone(), |s| s.server.clone());
                let mut after = before.clone();
                if rng.gen_bool(0.5) {
                    after.public_key = u.keys[rng.gen_range(0..u.keys.len())];
                } else {
                    after.public_key = srv.public_key;
                }
                if rng.gen_bool(0.3) {
                    after.name =
                        ServerName::new(["one", "two", "ONE"][rng.gen_range(0..3)]).unwrap();
                }
                Change::ServerUpdated {
                    before: Box::new(before),
                    after: Box::new(after),
                }
            }
            95..=96 => Change::ServerDeleted {
                server: Box::new(srv.clone()),
            },
            _ => {
                let mut s = srv.clone();
                s.name = ServerName::new(["one", "two", "three"][rng.gen_range(0..3)]).unwrap();
                Change::ServerCreated {
                    server: Box::new(s),
                }
            }
        };
        out.push(change);
    }
    out
}

async fn differential(kind: Kind, seed: u64) {
    let Some(t) = open(kind).await else { return };
    let reference: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let sql = t.store.clone();
    let mut rng = StdRng::seed_from_u64(seed);
    let u = Universe {
        names: ["a", "b", "c", "A", "d"]
            .iter()
            .map(|n| PeerName::new(*n).unwrap())
            .collect(),
        keys: (0..5).map(|_| pubkey()).collect(),
    };
    // Two servers that may collide on names; only the first is mutated at random.
    let main = server("one", Some("10.70.0.0/29"));
    let other = server("two", None);
    let mut servers: Vec<(Server, ServerId)> =
        vec![(main.clone(), main.id), (other.clone(), other.id)];
    for (s, _) in &servers {
        let c = commit(
            s.id,
            0,
            vec![Change::ServerCreated {
                server: Box::new(s.clone()),
            }],
        );
        reference.commit(c.clone(), common::key()).await.unwrap();
        sql.commit(c, common::key()).await.unwrap();
    }
    servers.truncate(1);
    let (mut oks, mut errs) = (0, std::collections::BTreeMap::<&str, usize>::new());
    for step in 0..STEPS {
        let (srv, sid) = &servers[0];
        let current = reference.load_server(*sid).await.unwrap();
        let head = reference
            .revisions(*sid, RevisionNo::NONE, u64::MAX)
            .await
            .unwrap()
            .last()
            .map_or(0, |r| r.revision.0);
        let expected = if rng.gen_bool(0.1) {
            head.saturating_sub(1) + u64::from(rng.gen_bool(0.5)) * 2
        } else {
            head
        };
        let changes = random_changes(&mut rng, &u, srv, current.as_ref());
        let c = commit(*sid, expected, changes);
        let want = reference
            .commit(c.clone(), common::key())
            .await
            .map(|r| r.record.revision)
            .map_err(|e| (e.code(), e.to_string()));
        let got = sql
            .commit(c.clone(), common::key())
            .await
            .map(|r| r.record.revision)
            .map_err(|e| (e.code(), e.to_string()));
        assert_eq!(
            got,
            want,
            "step {step}: outcomes differ for {:?}",
            c.changes.iter().map(Change::kind).collect::<Vec<_>>()
        );
        match want {
            Ok(_) => oks += 1,
            Err((code, _)) => *errs.entry(code).or_default() += 1,
        }
        assert_eq!(
            sql.load_server(*sid).await.unwrap(),
            reference.load_server(*sid).await.unwrap(),
            "step {step}: states differ"
        );
        assert_eq!(
            sql.head(*sid).await.unwrap(),
            reference.head(*sid).await.unwrap()
        );
    }
    for id in [main.id, other.id] {
        assert_eq!(
            sql.revisions(id, RevisionNo::NONE, u64::MAX).await.unwrap(),
            reference
                .revisions(id, RevisionNo::NONE, u64::MAX)
                .await
                .unwrap()
        );
        assert_eq!(
            sql.load_server(id).await.unwrap(),
            reference.load_server(id).await.unwrap()
        );
    }
    assert_eq!(
        sql.list_servers(wgm_core::model::Page::ALL).await.unwrap(),
        reference
            .list_servers(wgm_core::model::Page::ALL)
            .await
            .unwrap()
    );
    let q = AuditQuery::default();
    assert_eq!(
        sql.query_audit(&q).await.unwrap(),
        reference.query_audit(&q).await.unwrap()
    );
    eprintln!(
        "{} differential: {oks} commits landed, errors {errs:?}",
        sql.name()
    );
    // The mix must exercise both outcomes and every kind of refusal.
    assert!(oks > STEPS / 10, "too few commits landed: {oks}");
    for code in ["conflict", "already_exists", "not_found"] {
        assert!(
            errs.get(code).copied().unwrap_or(0) > 5,
            "too few {code} outcomes: {errs:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_commits_match_memory_store_on_sqlite() {
    for seed in [1, 2, 3] {
        differential(Kind::SqliteFile, seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_commits_match_memory_store_on_postgres() {
    for seed in [4, 5] {
        differential(Kind::Postgres, seed).await;
    }
}
