//! The keyed audit chain and the revisions' MACs through the `Manager`, on the memory
//! store and its tampering hooks: truncation against the stored head and an exported
//! head, forged revisions refused before anything is written, the audit key created only
//! by writes and only opened with the master key. (The audit head in the logs:
//! `tests/audit_head_log.rs`, a binary of its own so that no other test's events race its
//! log capture.)

use std::sync::Arc;

use wgm_core::error::{AuditBreak, ConflictKind};
use wgm_core::integrity::AuditHead;
use wgm_core::manager::{Manager, NewPeer, NewServer, NewUser};
use wgm_core::model::{AuditQuery, PeerId, RevisionNo, ServerId};
use wgm_core::names::{InterfaceName, PeerName, RoleName, ServerName, UserName};
use wgm_core::net::ListenPort;
use wgm_core::rbac::Principal;
use wgm_core::seal::{MasterKey, Sealer};
use wgm_core::store::{AuditStore, MemoryStore, ServerStore};
use wgm_core::Error;

fn block<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

fn manager(store: &Arc<MemoryStore>, master: &MasterKey) -> (Manager, Principal) {
    let (m, local) = Manager::builder(
        store.clone(),
        Sealer::new(MasterKey::from_bytes(*master.expose_bytes())),
    )
    .build_with_local_admin();
    (m, local.principal("root"))
}

/// A server with peers a, b and c and one secret export: revisions 1..=4, records 1..=5.
fn world() -> (
    Arc<MemoryStore>,
    MasterKey,
    Manager,
    Principal,
    ServerId,
    PeerId,
) {
    let store = Arc::new(MemoryStore::new());
    let master = MasterKey::generate();
    let (m, admin) = manager(&store, &master);
    let (sid, pid) = block(async {
        let mut spec = NewServer::new(
            ServerName::new("s").unwrap(),
            InterfaceName::new("wg0").unwrap(),
            ListenPort::new(51820).unwrap(),
        );
        spec.ipv4_pool = Some("10.8.0.0/24".parse().unwrap());
        let sid = m.create_server(&admin, spec).await.unwrap().id;
        let mut first = None;
        for n in ["a", "b", "c"] {
            let p = m
                .add_peer(&admin, sid, NewPeer::new(PeerName::new(n).unwrap()))
                .await
                .unwrap();
            first.get_or_insert(p.id);
        }
        let pid = first.unwrap();
        m.client_config(&admin, sid, pid).await.unwrap();
        (sid, pid)
    });
    (store, master, m, admin, sid, pid)
}

fn broken<T: std::fmt::Debug>(r: Result<T, Error>) -> AuditBreak {
    match r {
        Err(Error::Conflict {
            kind: ConflictKind::AuditChainBroken(b),
        }) => b,
        other => panic!("not a broken chain: {other:?}"),
    }
}

#[test]
fn truncation_is_caught_by_the_stored_head_and_a_rewritten_head_by_an_exported_one() {
    let (store, _, m, admin, _, _) = world();
    let exported = block(m.verify_audit_chain(&admin, None)).unwrap().head;
    assert_eq!(exported.seq, 5);
    assert!(store.delete_audit_record(5));
    assert_eq!(
        broken(block(m.verify_audit_chain(&admin, None))),
        AuditBreak::Head {
            stored: 5,
            found: 4
        }
    );
    assert!(store.delete_audit_record(4) && store.delete_audit_record(3));
    assert_eq!(
        broken(block(m.verify_audit_chain(&admin, None))),
        AuditBreak::Head {
            stored: 5,
            found: 2
        }
    );
    // The head rewritten to match: only the exported head tells.
    let second = block(store.query_audit(&AuditQuery::default())).unwrap()[1].head();
    store.set_audit_head(second.clone());
    assert_eq!(
        block(m.verify_audit_chain(&admin, None)).unwrap().records,
        2
    );
    assert_eq!(
        broken(block(m.verify_audit_chain(&admin, Some(&exported)))),
        AuditBreak::Expected { seq: 5 }
    );
    assert!(block(m.verify_audit_chain(&admin, Some(&second))).is_ok());
    // Records past the stored head (inserted behind the store's back) fail too.
    let (store, _, m, admin, _, _) = world();
    let third = block(store.query_audit(&AuditQuery::default())).unwrap()[2].head();
    store.set_audit_head(third);
    assert_eq!(
        broken(block(m.verify_audit_chain(&admin, None))),
        AuditBreak::Head {
            stored: 3,
            found: 5
        }
    );
}

#[test]
fn a_forged_revision_fails_history_diff_and_rollback_before_anything_is_written() {
    let (store, _, m, admin, sid, _) = world();
    assert!(store.tamper_revision(sid, RevisionNo(2), |r| {
        if let wgm_core::model::Change::PeerAdded { peer } = &mut r.changes[0] {
            peer.extra_allowed_ips = vec!["0.0.0.0/0".parse().unwrap()];
        }
    }));
    let state = block(store.load_server(sid)).unwrap();
    let head = block(store.audit_head()).unwrap();
    let revision_altered = |e: Error| {
        matches!(
            e,
            Error::Conflict {
                kind: ConflictKind::RevisionAltered {
                    revision: 2,
                    reason: "its MAC does not verify",
                    ..
                }
            }
        )
    };
    let e = block(m.rollback(&admin, sid, RevisionNo(2))).unwrap_err();
    assert!(revision_altered(e));
    let e = block(m.diff(&admin, sid, RevisionNo(1), RevisionNo(3))).unwrap_err();
    assert!(revision_altered(e));
    let e = block(m.history(&admin, sid, RevisionNo::NONE, 10)).unwrap_err();
    assert!(revision_altered(e));
    assert_eq!(block(store.load_server(sid)).unwrap(), state);
    assert_eq!(block(store.audit_head()).unwrap(), head);
    // Moved to another server (another server's history shows it): refused.
    let (store, _, m, admin, sid, _) = world();
    let other = ServerId::new_random();
    assert!(store.tamper_revision(sid, RevisionNo(4), |r| r.server_id = other));
    let e = block(m.history(&admin, sid, RevisionNo(3), 10)).unwrap_err();
    assert!(e.to_string().contains("belongs to another server"), "{e}");
}

#[test]
fn a_wrong_master_key_opens_no_audit_key_and_reads_never_create_one() {
    let (store, _, _, _, sid, pid) = world();
    let (other, admin) = manager(&store, &MasterKey::generate());
    let e = block(other.verify_audit_chain(&admin, None)).unwrap_err();
    assert!(matches!(e, Error::Sealed { .. }), "{e}");
    assert!(e.to_string().contains("audit key"), "{e}");
    let e =
        block(other.add_peer(&admin, sid, NewPeer::new(PeerName::new("z").unwrap()))).unwrap_err();
    assert!(matches!(e, Error::Sealed { .. }), "{e}");
    let _ = pid;
    // A fresh store: verifying writes nothing, the first write creates the key.
    let store = Arc::new(MemoryStore::new());
    let (m, admin) = manager(&store, &MasterKey::generate());
    let v = block(m.verify_audit_chain(&admin, None)).unwrap();
    assert_eq!((v.records, v.head), (0, AuditHead::genesis()));
    assert!(block(store.audit_key()).unwrap().is_none());
    block(m.create_user(
        &admin,
        NewUser::new(
            UserName::new("u").unwrap(),
            RoleName::new("auditor").unwrap(),
        ),
    ))
    .unwrap();
    let key = block(store.audit_key()).unwrap().unwrap();
    assert_eq!(key.legacy, wgm_core::integrity::LegacyBound::empty());
}
