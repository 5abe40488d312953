//! Store semantics, run against `MemoryStore` (the reference), SQLite (file and memory)
//! and PostgreSQL: each check passing on all of them is what "the SQL store has the
//! semantics of the memory store" means here.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use std::sync::Arc;

use common::{add, commit, create, entry, peer, server, user, TestStore, T0};
use time::Duration;
use wgm_core::model::{
    ApiTokenRecord, AuditQuery, AuditRecord, Change, IdentityChange, Page, PeerId, PeerStats,
    RevisionNo, ServerId, TokenId,
};
use wgm_core::names::{Description, RoleName, ServerName, UserName};
use wgm_core::rbac::{Action, Permission, Resource, Role};
use wgm_core::store::Store;
use wgm_core::Error;

fn code<T: std::fmt::Debug>(r: Result<T, Error>) -> &'static str {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.code(),
    }
}

async fn audit_len(s: &dyn Store) -> usize {
    s.query_audit(&AuditQuery::default()).await.unwrap().len()
}

/// Create, load, find, list: the stored state equals what was committed, exactly.
async fn create_and_load_round_trip(t: TestStore) {
    let s = &*t.store;
    let srv = server("Office", Some("10.8.0.0/24"));
    create(s, &srv).await;
    let mut p1 = peer(&srv, "alice", 2);
    p1.description = Some(Description::new("laptop").unwrap());
    p1.expires_at = Some(T0 + Duration::days(30));
    p1.extra_allowed_ips = vec![
        "2001:db8:1::/48".parse().unwrap(),
        "192.168.7.0/24".parse().unwrap(),
    ];
    let mut p2 = peer(&srv, "bob", 3);
    p2.private_key = None;
    p2.address_v4 = None;
    p2.delegated_prefix = Some("fd99:1:2:3::/64".parse().unwrap());
    p2.stats = PeerStats {
        last_seen: Some(T0),
        rx_bytes: u64::MAX,
        tx_bytes: 7,
    };
    let rec = s
        .commit(commit(
            srv.id,
            1,
            vec![
                Change::PeerAdded {
                    peer: Box::new(p1.clone()),
                },
                Change::PeerAdded {
                    peer: Box::new(p2.clone()),
                },
            ],
        ))
        .await
        .unwrap();
    assert_eq!(rec.revision, RevisionNo(2));
    assert_eq!(rec.at, T0);

    let st = s.load_server(srv.id).await.unwrap().unwrap();
    assert_eq!(st.revision, RevisionNo(2));
    assert_eq!(st.server, srv);
    assert_eq!(st.peers.len(), 2);
    assert_eq!(st.peers[&p1.id], p1);
    assert_eq!(st.peers[&p2.id], p2);

    assert_eq!(s.head(srv.id).await.unwrap(), Some(RevisionNo(2)));
    assert_eq!(s.head(ServerId::new_random()).await.unwrap(), None);
    assert!(s
        .load_server(ServerId::new_random())
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        s.find_server(&ServerName::new("OFFICE").unwrap())
            .await
            .unwrap(),
        Some(srv.id)
    );
    assert_eq!(
        s.find_server(&ServerName::new("home").unwrap())
            .await
            .unwrap(),
        None
    );
    let list = s.list_servers(Page::ALL).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].id, list[0].peer_count, list[0].revision),
        (srv.id, 2, RevisionNo(2))
    );
    assert_eq!(list[0].name, srv.name);
}

/// Compare-and-swap on the head: a stale or future expected revision is a Conflict and
/// writes nothing (no revision, no audit record).
async fn revision_cas(t: TestStore) {
    let s = &*t.store;
    let srv = server("cas", None);
    create(s, &srv).await;
    s.commit(add(srv.id, 1, &peer(&srv, "a", 2))).await.unwrap();
    let audits = audit_len(s).await;
    assert_eq!(
        code(s.commit(add(srv.id, 1, &peer(&srv, "b", 3))).await),
        "conflict"
    );
    assert_eq!(
        code(s.commit(add(srv.id, 5, &peer(&srv, "b", 3))).await),
        "conflict"
    );
    assert_eq!(
        code(
            s.commit(commit(
                srv.id,
                0,
                vec![Change::ServerCreated {
                    server: Box::new(srv.clone())
                }]
            ))
            .await
        ),
        "conflict"
    );
    assert_eq!(s.head(srv.id).await.unwrap(), Some(RevisionNo(2)));
    assert_eq!(
        s.revisions(srv.id, RevisionNo::NONE, 100)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(audit_len(s).await, audits);
    assert_eq!(
        s.commit(add(srv.id, 2, &peer(&srv, "b", 3)))
            .await
            .unwrap()
            .revision,
        RevisionNo(3)
    );
}

/// Server-level rules: names unique case-insensitively on create and rename; ids must match.
async fn server_rules(t: TestStore) {
    let s = &*t.store;
    let a = server("Alpha", None);
    create(s, &a).await;
    let dup = server("ALPHA", None);
    let e = s
        .commit(commit(
            dup.id,
            0,
            vec![Change::ServerCreated {
                server: Box::new(dup.clone()),
            }],
        ))
        .await;
    assert_eq!(code(e), "already_exists");
    assert_eq!(s.head(dup.id).await.unwrap(), None);

    let b = server("beta", None);
    create(s, &b).await;
    let mut renamed = b.clone();
    renamed.name = ServerName::new("alpha").unwrap();
    let e = s
        .commit(commit(
            b.id,
            1,
            vec![Change::ServerUpdated {
                before: Box::new(b.clone()),
                after: Box::new(renamed),
            }],
        ))
        .await;
    assert_eq!(code(e), "already_exists");
    // Renaming to its own name in another case is fine.
    let mut own = b.clone();
    own.name = ServerName::new("BETA").unwrap();
    own.listen_port = "51900".parse().unwrap();
    s.commit(commit(
        b.id,
        1,
        vec![Change::ServerUpdated {
            before: Box::new(b.clone()),
            after: Box::new(own.clone()),
        }],
    ))
    .await
    .unwrap();
    assert_eq!(s.load_server(b.id).await.unwrap().unwrap().server, own);

    // A creation whose server id is not the commit's.
    let c = server("gamma", None);
    let e = s
        .commit(commit(
            ServerId::new_random(),
            0,
            vec![Change::ServerCreated {
                server: Box::new(c),
            }],
        ))
        .await;
    assert_eq!(code(e), "conflict");
    // An update that targets another server.
    let mut other = own.clone();
    other.id = a.id;
    other.name = ServerName::new("zeta").unwrap();
    let e = s
        .commit(commit(
            b.id,
            2,
            vec![Change::ServerUpdated {
                before: Box::new(own.clone()),
                after: Box::new(other),
            }],
        ))
        .await;
    assert_eq!(code(e), "conflict");
    // Changes to a server that does not exist.
    let ghost = server("ghost", None);
    assert_eq!(
        code(s.commit(add(ghost.id, 0, &peer(&ghost, "p", 2))).await),
        "not_found"
    );
    assert_eq!(
        code(
            s.commit(commit(
                ghost.id,
                0,
                vec![Change::ServerDeleted {
                    server: Box::new(ghost.clone())
                }]
            ))
            .await
        ),
        "not_found"
    );
}

/// Peer uniqueness per server: names (case-insensitive) and keys are `AlreadyExists`;
/// addresses, prefixes and a peer holding the server's own key are Conflict; a failed
/// commit writes nothing; the same values on another server are fine.
async fn peer_uniqueness(t: TestStore) {
    let s = &*t.store;
    let srv = server("uniq", Some("10.9.0.0/24"));
    create(s, &srv).await;
    let mut a = peer(&srv, "Alice", 2);
    a.delegated_prefix = Some("fd77::/64".parse().unwrap());
    s.commit(add(srv.id, 1, &a)).await.unwrap();
    let audits = audit_len(s).await;

    let mut same_name = peer(&srv, "ALICE", 3);
    same_name.name = wgm_core::names::PeerName::new("alice").unwrap();
    assert_eq!(
        code(s.commit(add(srv.id, 2, &same_name)).await),
        "already_exists"
    );
    let mut same_key = peer(&srv, "k", 3);
    same_key.public_key = a.public_key;
    assert_eq!(
        code(s.commit(add(srv.id, 2, &same_key)).await),
        "already_exists"
    );
    let mut same_v6 = peer(&srv, "v6", 3);
    same_v6.address_v6 = a.address_v6;
    assert_eq!(code(s.commit(add(srv.id, 2, &same_v6)).await), "conflict");
    let mut same_v4 = peer(&srv, "v4", 3);
    same_v4.address_v4 = a.address_v4;
    assert_eq!(code(s.commit(add(srv.id, 2, &same_v4)).await), "conflict");
    let mut same_pfx = peer(&srv, "pfx", 3);
    same_pfx.delegated_prefix = a.delegated_prefix;
    assert_eq!(code(s.commit(add(srv.id, 2, &same_pfx)).await), "conflict");
    let mut server_key = peer(&srv, "srvkey", 3);
    server_key.public_key = srv.public_key;
    assert_eq!(
        code(s.commit(add(srv.id, 2, &server_key)).await),
        "conflict"
    );
    // Two new peers clashing with each other in one commit.
    let b1 = peer(&srv, "b1", 4);
    let mut b2 = peer(&srv, "b2", 5);
    b2.address_v4 = b1.address_v4;
    let e = s
        .commit(commit(
            srv.id,
            2,
            vec![
                Change::PeerAdded {
                    peer: Box::new(b1.clone()),
                },
                Change::PeerAdded { peer: Box::new(b2) },
            ],
        ))
        .await;
    assert_eq!(code(e), "conflict");
    // The server's key changed to a peer's key.
    let mut srv2 = srv.clone();
    srv2.public_key = a.public_key;
    let e = s
        .commit(commit(
            srv.id,
            2,
            vec![Change::ServerUpdated {
                before: Box::new(srv.clone()),
                after: Box::new(srv2),
            }],
        ))
        .await;
    assert_eq!(code(e), "conflict");

    // Nothing of the failed commits was written.
    let st = s.load_server(srv.id).await.unwrap().unwrap();
    assert_eq!((st.revision, st.peers.len()), (RevisionNo(2), 1));
    assert_eq!(
        s.revisions(srv.id, RevisionNo::NONE, 100)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(audit_len(s).await, audits);

    // The same values on another server are fine.
    let other = server("other", Some("10.9.0.0/24"));
    create(s, &other).await;
    let mut twin = a.clone();
    twin.id = PeerId::new_random();
    twin.server_id = other.id;
    s.commit(add(other.id, 1, &twin)).await.unwrap();
}

/// Changes that only a final state can judge: swapping two peers' addresses and names in
/// one commit is valid (checked on the result, not step by step); removing a peer and
/// giving its address to a new one in one commit is valid.
async fn swaps_within_one_commit(t: TestStore) {
    let s = &*t.store;
    let srv = server("swap", Some("10.10.0.0/24"));
    create(s, &srv).await;
    let a = peer(&srv, "a", 2);
    let b = peer(&srv, "b", 3);
    s.commit(commit(
        srv.id,
        1,
        vec![
            Change::PeerAdded {
                peer: Box::new(a.clone()),
            },
            Change::PeerAdded {
                peer: Box::new(b.clone()),
            },
        ],
    ))
    .await
    .unwrap();
    let mut a2 = a.clone();
    let mut b2 = b.clone();
    std::mem::swap(&mut a2.address_v6, &mut b2.address_v6);
    std::mem::swap(&mut a2.address_v4, &mut b2.address_v4);
    std::mem::swap(&mut a2.name, &mut b2.name);
    std::mem::swap(&mut a2.public_key, &mut b2.public_key);
    s.commit(commit(
        srv.id,
        2,
        vec![
            Change::PeerUpdated {
                before: Box::new(a.clone()),
                after: Box::new(a2.clone()),
            },
            Change::PeerUpdated {
                before: Box::new(b.clone()),
                after: Box::new(b2.clone()),
            },
        ],
    ))
    .await
    .unwrap();
    let st = s.load_server(srv.id).await.unwrap().unwrap();
    assert_eq!(st.peers[&a.id], a2);
    assert_eq!(st.peers[&b.id], b2);

    let mut c = peer(&srv, "c", 9);
    c.address_v6 = a2.address_v6;
    c.address_v4 = a2.address_v4;
    c.name = a2.name.clone();
    s.commit(commit(
        srv.id,
        3,
        vec![
            Change::PeerRemoved {
                peer: Box::new(a2.clone()),
            },
            Change::PeerAdded {
                peer: Box::new(c.clone()),
            },
        ],
    ))
    .await
    .unwrap();
    let st = s.load_server(srv.id).await.unwrap().unwrap();
    assert_eq!(st.peers.len(), 2);
    assert_eq!(st.peers[&c.id], c);
    assert!(!st.peers.contains_key(&a.id));
}

/// Errors of peer changes: adding an existing id, updating or removing a missing peer.
async fn peer_change_errors(t: TestStore) {
    let s = &*t.store;
    let srv = server("errs", None);
    create(s, &srv).await;
    let a = peer(&srv, "a", 2);
    s.commit(add(srv.id, 1, &a)).await.unwrap();
    let mut again = peer(&srv, "other", 3);
    again.id = a.id;
    assert_eq!(
        code(s.commit(add(srv.id, 2, &again)).await),
        "already_exists"
    );
    let ghost = peer(&srv, "ghost", 4);
    let e = s
        .commit(commit(
            srv.id,
            2,
            vec![Change::PeerUpdated {
                before: Box::new(ghost.clone()),
                after: Box::new(ghost.clone()),
            }],
        ))
        .await;
    assert_eq!(code(e), "not_found");
    assert_eq!(
        code(
            s.commit(commit(
                srv.id,
                2,
                vec![Change::PeerRemoved {
                    peer: Box::new(ghost.clone())
                }]
            ))
            .await
        ),
        "not_found"
    );
    // Removed earlier in the same commit, then updated: not found.
    let e = s
        .commit(commit(
            srv.id,
            2,
            vec![
                Change::PeerRemoved {
                    peer: Box::new(a.clone()),
                },
                Change::PeerUpdated {
                    before: Box::new(a.clone()),
                    after: Box::new(a.clone()),
                },
            ],
        ))
        .await;
    assert_eq!(code(e), "not_found");
    // Added and removed in the same commit: nothing remains, one revision.
    let b = peer(&srv, "b", 5);
    s.commit(commit(
        srv.id,
        2,
        vec![
            Change::PeerAdded {
                peer: Box::new(b.clone()),
            },
            Change::PeerRemoved { peer: Box::new(b) },
        ],
    ))
    .await
    .unwrap();
    let st = s.load_server(srv.id).await.unwrap().unwrap();
    assert_eq!((st.revision, st.peers.len()), (RevisionNo(3), 1));
    // A peer of a server cannot be touched through another server.
    let other = server("other", None);
    create(s, &other).await;
    assert_eq!(
        code(
            s.commit(commit(
                other.id,
                1,
                vec![Change::PeerRemoved {
                    peer: Box::new(a.clone())
                }]
            ))
            .await
        ),
        "not_found"
    );
}

/// Deleting a server keeps its history; re-creating it continues the numbering.
async fn delete_and_recreate(t: TestStore) {
    let s = &*t.store;
    let srv = server("doomed", None);
    create(s, &srv).await;
    s.commit(add(srv.id, 1, &peer(&srv, "a", 2))).await.unwrap();
    s.commit(commit(
        srv.id,
        2,
        vec![Change::ServerDeleted {
            server: Box::new(srv.clone()),
        }],
    ))
    .await
    .unwrap();
    assert!(s.load_server(srv.id).await.unwrap().is_none());
    assert_eq!(s.head(srv.id).await.unwrap(), None);
    assert_eq!(s.find_server(&srv.name).await.unwrap(), None);
    assert!(s.list_servers(Page::ALL).await.unwrap().is_empty());
    assert_eq!(
        s.revisions(srv.id, RevisionNo::NONE, 10)
            .await
            .unwrap()
            .len(),
        3
    );
    // The name is free again for another server.
    let twin = server("DOOMED", None);
    create(s, &twin).await;
    s.commit(commit(
        twin.id,
        1,
        vec![Change::ServerDeleted {
            server: Box::new(twin),
        }],
    ))
    .await
    .unwrap();
    // Re-creating needs the last revision as the expected one.
    let re = commit(
        srv.id,
        0,
        vec![Change::ServerCreated {
            server: Box::new(srv.clone()),
        }],
    );
    assert_eq!(code(s.commit(re).await), "conflict");
    let rec = s
        .commit(commit(
            srv.id,
            3,
            vec![Change::ServerCreated {
                server: Box::new(srv.clone()),
            }],
        ))
        .await
        .unwrap();
    assert_eq!(rec.revision, RevisionNo(4));
    let st = s.load_server(srv.id).await.unwrap().unwrap();
    assert_eq!((st.revision, st.peers.len()), (RevisionNo(4), 0));
    // Delete and re-create in one commit drops the peers. Name checks see the committed
    // servers, so the re-created server needs a name other than its old one.
    s.commit(add(srv.id, 4, &peer(&srv, "b", 3))).await.unwrap();
    let deleted = Change::ServerDeleted {
        server: Box::new(srv.clone()),
    };
    let e = s
        .commit(commit(
            srv.id,
            5,
            vec![
                deleted.clone(),
                Change::ServerCreated {
                    server: Box::new(srv.clone()),
                },
            ],
        ))
        .await;
    assert_eq!(code(e), "already_exists");
    let mut renamed = srv.clone();
    renamed.name = ServerName::new("reborn").unwrap();
    s.commit(commit(
        srv.id,
        5,
        vec![
            deleted,
            Change::ServerCreated {
                server: Box::new(renamed.clone()),
            },
        ],
    ))
    .await
    .unwrap();
    let st = s.load_server(srv.id).await.unwrap().unwrap();
    assert_eq!(
        (st.server, st.peers.len(), st.revision),
        (renamed, 0, RevisionNo(6))
    );
}

/// Revisions: oldest first, after a number, at most a limit, equal to what was committed.
async fn revision_history(t: TestStore) {
    let s = &*t.store;
    let srv = server("hist", None);
    create(s, &srv).await;
    let mut commits = Vec::new();
    for i in 0..5u16 {
        let c = add(
            srv.id,
            u64::from(i) + 1,
            &peer(&srv, &format!("p{i}"), i + 2),
        );
        s.commit(c.clone()).await.unwrap();
        commits.push(c);
    }
    let all = s
        .revisions(srv.id, RevisionNo::NONE, u64::MAX)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|r| r.revision.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    let page = s.revisions(srv.id, RevisionNo(2), 2).await.unwrap();
    assert_eq!(
        page.iter().map(|r| r.revision.0).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert_eq!(page[0].changes, commits[1].changes);
    assert_eq!(page[0].author, commits[1].author);
    assert_eq!(page[0].summary, commits[1].summary);
    assert!(s
        .revisions(srv.id, RevisionNo(6), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .revisions(ServerId::new_random(), RevisionNo::NONE, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .revisions(srv.id, RevisionNo::NONE, 0)
        .await
        .unwrap()
        .is_empty());
}

/// Applied revisions per host.
async fn applied_per_host(t: TestStore) {
    let s = &*t.store;
    let id = ServerId::new_random();
    assert_eq!(s.applied(id, "host-a").await.unwrap(), None);
    s.set_applied(id, "host-a", RevisionNo(3)).await.unwrap();
    s.set_applied(id, "host-b", RevisionNo(1)).await.unwrap();
    s.set_applied(id, "host-a", RevisionNo(4)).await.unwrap();
    assert_eq!(s.applied(id, "host-a").await.unwrap(), Some(RevisionNo(4)));
    assert_eq!(s.applied(id, "host-b").await.unwrap(), Some(RevisionNo(1)));
    assert_eq!(
        s.applied(ServerId::new_random(), "host-a").await.unwrap(),
        None
    );
}

/// Observed statistics: updated in place, unknown peers ignored, last entry wins, never a
/// revision; an unknown server is `NotFound`.
async fn peer_statistics(t: TestStore) {
    let s = &*t.store;
    let srv = server("stats", None);
    create(s, &srv).await;
    let a = peer(&srv, "a", 2);
    let b = peer(&srv, "b", 3);
    s.commit(commit(
        srv.id,
        1,
        vec![
            Change::PeerAdded {
                peer: Box::new(a.clone()),
            },
            Change::PeerAdded {
                peer: Box::new(b.clone()),
            },
        ],
    ))
    .await
    .unwrap();
    let st1 = PeerStats {
        last_seen: Some(T0 + Duration::seconds(5)),
        rx_bytes: 10,
        tx_bytes: 20,
    };
    let st2 = PeerStats {
        last_seen: None,
        rx_bytes: 1 << 62,
        tx_bytes: 3,
    };
    let later = PeerStats {
        last_seen: Some(T0 + Duration::seconds(9)),
        rx_bytes: 11,
        tx_bytes: 21,
    };
    s.update_peer_stats(
        srv.id,
        &[
            (a.id, st1),
            (b.id, st2),
            (PeerId::new_random(), st1),
            (a.id, later),
        ],
    )
    .await
    .unwrap();
    let loaded = s.load_server(srv.id).await.unwrap().unwrap();
    assert_eq!(loaded.peers[&a.id].stats, later);
    assert_eq!(loaded.peers[&b.id].stats, st2);
    assert_eq!(loaded.revision, RevisionNo(2));
    assert_eq!(loaded.peers[&a.id].without_stats(), a);
    assert_eq!(
        code(
            s.update_peer_stats(ServerId::new_random(), &[(a.id, st1)])
                .await
        ),
        "not_found"
    );
    s.update_peer_stats(srv.id, &[]).await.unwrap();
}

/// Pagination and order of servers (by case-folded name) and users.
async fn listing_order_and_pages(t: TestStore) {
    let s = &*t.store;
    for n in ["delta", "Alpha", "charlie", "Bravo", "echo"] {
        create(s, &server(n, None)).await;
    }
    let names = |v: Vec<wgm_core::model::ServerSummary>| {
        v.into_iter()
            .map(|x| x.name.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(s.list_servers(Page::ALL).await.unwrap()),
        ["Alpha", "Bravo", "charlie", "delta", "echo"]
    );
    assert_eq!(
        names(
            s.list_servers(Page {
                offset: 1,
                limit: 2
            })
            .await
            .unwrap()
        ),
        ["Bravo", "charlie"]
    );
    assert_eq!(
        names(
            s.list_servers(Page {
                offset: 4,
                limit: 10
            })
            .await
            .unwrap()
        ),
        ["echo"]
    );
    assert!(s
        .list_servers(Page {
            offset: 5,
            limit: 10
        })
        .await
        .unwrap()
        .is_empty());
    assert!(s.list_servers(Page::first(0)).await.unwrap().is_empty());

    let changes = ["mallory", "Carol", "bob", "Dave"]
        .iter()
        .map(|n| IdentityChange::UserCreated {
            user: Box::new(user(n, None)),
        })
        .collect();
    s.commit_identity(changes, entry("user.create", "user/*"))
        .await
        .unwrap();
    let users: Vec<String> = s
        .list_users(Page::ALL)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name.as_str().to_owned())
        .collect();
    assert_eq!(users, ["bob", "Carol", "Dave", "mallory"]);
    let page: Vec<String> = s
        .list_users(Page {
            offset: 2,
            limit: 1,
        })
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name.as_str().to_owned())
        .collect();
    assert_eq!(page, ["Dave"]);
}

/// Users: unique names (case-insensitive) and e-mails, version CAS, not found, delete
/// removes tokens; a batch with one failing change writes nothing.
async fn users_versions_and_uniqueness(t: TestStore) {
    let s = &*t.store;
    let alice = user("alice", Some("alice@example.org"));
    s.commit_identity(
        vec![IdentityChange::UserCreated {
            user: Box::new(alice.clone()),
        }],
        entry("user.create", "user/a"),
    )
    .await
    .unwrap();
    assert_eq!(s.get_user(alice.id).await.unwrap().unwrap(), alice);
    assert_eq!(
        s.find_user(&UserName::new("ALICE").unwrap())
            .await
            .unwrap()
            .unwrap(),
        alice
    );
    assert!(s
        .find_user(&UserName::new("nobody").unwrap())
        .await
        .unwrap()
        .is_none());

    let audits = audit_len(s).await;
    let clash = |u| async {
        s.commit_identity(
            vec![IdentityChange::UserCreated { user: Box::new(u) }],
            entry("user.create", "user/x"),
        )
        .await
    };
    assert_eq!(code(clash(user("Alice", None)).await), "already_exists");
    assert_eq!(
        code(clash(user("alice2", Some("alice@example.org"))).await),
        "already_exists"
    );
    let mut same_id = user("alice3", None);
    same_id.id = alice.id;
    assert_eq!(code(clash(same_id).await), "already_exists");
    assert_eq!(audit_len(s).await, audits);

    // Version CAS.
    let mut v2 = alice.clone();
    v2.version = 2;
    v2.token_version = 1;
    v2.email = Some("a@example.org".into());
    let upd = |u: wgm_core::model::User| async move {
        s.commit_identity(
            vec![IdentityChange::UserUpdated { user: Box::new(u) }],
            entry("user.update", "user/a"),
        )
        .await
    };
    upd(v2.clone()).await.unwrap();
    assert_eq!(code(upd(v2.clone()).await), "conflict");
    let mut skip = v2.clone();
    skip.version = 4;
    assert_eq!(code(upd(skip).await), "conflict");
    assert_eq!(code(upd(user("ghost", None)).await), "not_found");
    assert_eq!(s.get_user(alice.id).await.unwrap().unwrap(), v2);
    // The old e-mail is free now; the new one is taken.
    clash(user("carol", Some("alice@example.org")))
        .await
        .unwrap();
    assert_eq!(
        code(clash(user("dave", Some("a@example.org"))).await),
        "already_exists"
    );
    // Two users without e-mail are fine.
    clash(user("erin", None)).await.unwrap();
    clash(user("frank", None)).await.unwrap();

    // Atomicity: the second change fails, so the first is not kept either.
    let g = user("grace", None);
    let e = s
        .commit_identity(
            vec![
                IdentityChange::UserCreated {
                    user: Box::new(g.clone()),
                },
                IdentityChange::UserDeleted {
                    id: wgm_core::model::UserId::new_random(),
                },
            ],
            entry("user.create", "user/g"),
        )
        .await;
    assert_eq!(code(e), "not_found");
    assert!(s.get_user(g.id).await.unwrap().is_none());

    // Changes in one batch see each other.
    let h = user("heidi", None);
    let mut h2 = h.clone();
    h2.version = 2;
    s.commit_identity(
        vec![
            IdentityChange::UserCreated {
                user: Box::new(h.clone()),
            },
            IdentityChange::UserUpdated {
                user: Box::new(h2.clone()),
            },
        ],
        entry("user.create", "user/h"),
    )
    .await
    .unwrap();
    assert_eq!(s.get_user(h.id).await.unwrap().unwrap(), h2);

    // Deleting a user.
    s.commit_identity(
        vec![IdentityChange::UserDeleted { id: h.id }],
        entry("user.delete", "user/h"),
    )
    .await
    .unwrap();
    assert!(s.get_user(h.id).await.unwrap().is_none());
    assert_eq!(
        code(
            s.commit_identity(
                vec![IdentityChange::UserDeleted { id: h.id }],
                entry("user.delete", "user/h")
            )
            .await
        ),
        "not_found"
    );
}

fn token(user: wgm_core::model::UserId, name: &str, created_offset: i64) -> ApiTokenRecord {
    ApiTokenRecord {
        id: TokenId::generate(),
        user_id: user,
        name: name.into(),
        secret_hash: "ab".repeat(32),
        scopes: Some(vec![Permission::new(Resource::Peer, Action::Read)]),
        created_at: T0 + Duration::seconds(created_offset),
        expires_at: Some(T0 + Duration::days(1)),
        revoked: false,
    }
}

/// Roles and tokens: put/replace/delete, create for a missing user, duplicates, revoke,
/// ordering and filtering, tokens removed with their user.
async fn roles_and_tokens(t: TestStore) {
    let s = &*t.store;
    let role = |name: &str, d: &str| {
        let perms = vec![Permission::new(Resource::Peer, Action::Read)];
        Role::custom(
            RoleName::new(name).unwrap(),
            Description::new(d).unwrap(),
            perms,
        )
        .unwrap()
    };
    s.commit_identity(
        vec![
            IdentityChange::RolePut {
                role: role("viewer", "v1"),
            },
            IdentityChange::RolePut {
                role: role("editor", "e"),
            },
        ],
        entry("role.put", "role/*"),
    )
    .await
    .unwrap();
    // The same name in another case replaces the role.
    s.commit_identity(
        vec![IdentityChange::RolePut {
            role: role("Viewer", "v2"),
        }],
        entry("role.put", "role/viewer"),
    )
    .await
    .unwrap();
    let roles = s.list_roles().await.unwrap();
    assert_eq!(roles, vec![role("editor", "e"), role("Viewer", "v2")]);
    s.commit_identity(
        vec![IdentityChange::RoleDeleted {
            name: RoleName::new("EDITOR").unwrap(),
        }],
        entry("role.delete", "role/editor"),
    )
    .await
    .unwrap();
    assert_eq!(
        code(
            s.commit_identity(
                vec![IdentityChange::RoleDeleted {
                    name: RoleName::new("EDITOR").unwrap()
                }],
                entry("role.delete", "role/editor")
            )
            .await
        ),
        "not_found"
    );
    assert_eq!(s.list_roles().await.unwrap().len(), 1);

    let u1 = user("owner1", None);
    let u2 = user("owner2", None);
    s.commit_identity(
        vec![
            IdentityChange::UserCreated {
                user: Box::new(u1.clone()),
            },
            IdentityChange::UserCreated {
                user: Box::new(u2.clone()),
            },
        ],
        entry("user.create", "user/*"),
    )
    .await
    .unwrap();
    let t_late = token(u1.id, "late", 50);
    let t_early = token(u1.id, "early", 10);
    let t_other = token(u2.id, "other", 30);
    for tk in [&t_late, &t_early, &t_other] {
        s.commit_identity(
            vec![IdentityChange::TokenCreated { token: tk.clone() }],
            entry("token.create", "token/x"),
        )
        .await
        .unwrap();
    }
    let mut dup = token(u1.id, "dup", 0);
    dup.id = t_late.id;
    assert_eq!(
        code(
            s.commit_identity(
                vec![IdentityChange::TokenCreated { token: dup }],
                entry("token.create", "t")
            )
            .await
        ),
        "already_exists"
    );
    let orphan = token(wgm_core::model::UserId::new_random(), "orphan", 0);
    assert_eq!(
        code(
            s.commit_identity(
                vec![IdentityChange::TokenCreated { token: orphan }],
                entry("token.create", "t")
            )
            .await
        ),
        "not_found"
    );

    assert_eq!(s.get_token(t_early.id).await.unwrap().unwrap(), t_early);
    assert!(s.get_token(TokenId::generate()).await.unwrap().is_none());
    let ids = |v: Vec<ApiTokenRecord>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list_tokens(None).await.unwrap()),
        vec![t_early.id, t_other.id, t_late.id]
    );
    assert_eq!(
        ids(s.list_tokens(Some(u1.id)).await.unwrap()),
        vec![t_early.id, t_late.id]
    );

    s.commit_identity(
        vec![IdentityChange::TokenRevoked { id: t_early.id }],
        entry("token.revoke", "t"),
    )
    .await
    .unwrap();
    assert!(s.get_token(t_early.id).await.unwrap().unwrap().revoked);
    assert_eq!(
        code(
            s.commit_identity(
                vec![IdentityChange::TokenRevoked {
                    id: TokenId::generate()
                }],
                entry("token.revoke", "t")
            )
            .await
        ),
        "not_found"
    );

    s.commit_identity(
        vec![IdentityChange::UserDeleted { id: u1.id }],
        entry("user.delete", "user/1"),
    )
    .await
    .unwrap();
    assert_eq!(ids(s.list_tokens(None).await.unwrap()), vec![t_other.id]);
    assert!(s.get_token(t_late.id).await.unwrap().is_none());
}

fn verify_chain(records: &[AuditRecord]) -> Result<(), Error> {
    let mut prev: Option<&AuditRecord> = None;
    for r in records {
        r.verify_link(prev)?;
        prev = Some(r);
    }
    Ok(())
}

/// The audit log: one record per commit (revision and server filled in), per identity
/// commit and per plain append, numbered from 1 without gaps, hash-chained, queryable.
async fn audit_log(t: TestStore) {
    let s = &*t.store;
    let srv = server("audited", None);
    create(s, &srv).await;
    let mut c = add(srv.id, 1, &peer(&srv, "a", 2));
    c.audit.at = T0 + Duration::seconds(10);
    s.commit(c).await.unwrap();
    let mut e = entry("secret.export", &format!("server/{}/peer/x", srv.id));
    e.actor.label = "user:alice".into();
    e.at = T0 + Duration::seconds(20);
    let rec = s.append_audit(e.clone()).await.unwrap();
    assert_eq!(rec.seq, 3);
    assert_eq!(rec.entry, e);
    let mut e2 = entry("user.create", "user/bob");
    e2.at = T0 + Duration::seconds(30);
    s.commit_identity(
        vec![IdentityChange::UserCreated {
            user: Box::new(user("bob", None)),
        }],
        e2.clone(),
    )
    .await
    .unwrap();

    let all = s.query_audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    verify_chain(&all).unwrap();
    assert_eq!(all[0].entry.revision, Some(RevisionNo(1)));
    assert_eq!(all[1].entry.revision, Some(RevisionNo(2)));
    assert_eq!(all[1].entry.server_id, Some(srv.id));
    assert_eq!(all[3].entry, e2);
    assert_eq!(all[2], rec);

    let q = |q: AuditQuery| async move {
        s.query_audit(&q)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        q(AuditQuery {
            actor: Some("user:alice".into()),
            ..Default::default()
        })
        .await,
        vec![3]
    );
    assert_eq!(
        q(AuditQuery {
            server_id: Some(srv.id),
            ..Default::default()
        })
        .await,
        vec![1, 2]
    );
    assert_eq!(
        q(AuditQuery {
            object_prefix: Some(format!("server/{}/peer/", srv.id)),
            ..Default::default()
        })
        .await,
        vec![3]
    );
    assert_eq!(
        q(AuditQuery {
            object_prefix: Some("user/".into()),
            ..Default::default()
        })
        .await,
        vec![4]
    );
    assert_eq!(
        q(AuditQuery {
            object_prefix: Some("%".into()),
            ..Default::default()
        })
        .await,
        Vec::<u64>::new()
    );
    assert_eq!(
        q(AuditQuery {
            since: Some(T0 + Duration::seconds(10)),
            ..Default::default()
        })
        .await,
        vec![2, 3, 4]
    );
    assert_eq!(
        q(AuditQuery {
            until: Some(T0 + Duration::seconds(20)),
            ..Default::default()
        })
        .await,
        vec![1, 2]
    );
    assert_eq!(
        q(AuditQuery {
            since: Some(T0 + Duration::seconds(20)),
            until: Some(T0 + Duration::seconds(20) + Duration::nanoseconds(1)),
            ..Default::default()
        })
        .await,
        vec![3]
    );
    assert_eq!(
        q(AuditQuery {
            after_seq: Some(2),
            limit: Some(1),
            ..Default::default()
        })
        .await,
        vec![3]
    );
    assert_eq!(
        q(AuditQuery {
            limit: Some(0),
            ..Default::default()
        })
        .await,
        Vec::<u64>::new()
    );
}

/// F16: many writers from the same base revision at once: exactly one wins, the others
/// get Conflict, and the history has one revision more.
async fn same_base_exactly_one_wins(t: TestStore) {
    let s = t.store.clone();
    let srv = server("race", Some("10.20.0.0/24"));
    create(&*s, &srv).await;
    let mut tasks = Vec::new();
    for i in 0..16u16 {
        let s: Arc<dyn Store> = s.clone();
        let c = add(srv.id, 1, &peer(&srv, &format!("p{i}"), i + 2));
        tasks.push(tokio::spawn(async move { s.commit(c).await }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(r) => {
                ok += 1;
                assert_eq!(r.revision, RevisionNo(2));
            }
            Err(e) => assert_eq!(e.code(), "conflict", "{e}"),
        }
    }
    assert_eq!(ok, 1);
    let st = s.load_server(srv.id).await.unwrap().unwrap();
    assert_eq!((st.revision, st.peers.len()), (RevisionNo(2), 1));
    assert_eq!(
        s.revisions(srv.id, RevisionNo::NONE, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    verify_chain(&s.query_audit(&AuditQuery::default()).await.unwrap()).unwrap();
}

/// F3: a commit that fails after its address was chosen leaves the address free: the next
/// commit can take it, and nothing of the failed one is visible.
async fn failed_commit_returns_the_address(t: TestStore) {
    let s = &*t.store;
    let srv = server("f3", Some("10.30.0.0/24"));
    create(s, &srv).await;
    let taken = peer(&srv, "taken", 2);
    s.commit(add(srv.id, 1, &taken)).await.unwrap();
    let before = (
        s.load_server(srv.id).await.unwrap().unwrap(),
        audit_len(s).await,
    );
    // The new peer got address 3, but the commit fails on its name.
    let fresh = peer(&srv, "fresh", 3);
    let mut clash = peer(&srv, "TAKEN", 4);
    clash.name = taken.name.clone();
    let e = s
        .commit(commit(
            srv.id,
            2,
            vec![
                Change::PeerAdded {
                    peer: Box::new(fresh.clone()),
                },
                Change::PeerAdded {
                    peer: Box::new(clash),
                },
            ],
        ))
        .await;
    assert_eq!(code(e), "already_exists");
    assert_eq!(
        (
            s.load_server(srv.id).await.unwrap().unwrap(),
            audit_len(s).await
        ),
        before
    );
    // Address 3 is still free.
    let mut again = peer(&srv, "again", 3);
    again.address_v4 = fresh.address_v4;
    s.commit(add(srv.id, 2, &again)).await.unwrap();
    let st = s.load_server(srv.id).await.unwrap().unwrap();
    assert_eq!(st.peers.len(), 2);
}

/// F17: rolling back past an address that was given to another peer since is a Conflict
/// naming the address (the inverse of the removal re-adds a peer whose address is taken).
async fn rollback_after_reassignment_conflicts(t: TestStore) {
    let s = &*t.store;
    let srv = server("f17", Some("10.40.0.0/24"));
    create(s, &srv).await;
    let a = peer(&srv, "a", 2);
    s.commit(add(srv.id, 1, &a)).await.unwrap();
    let removal = commit(
        srv.id,
        2,
        vec![Change::PeerRemoved {
            peer: Box::new(a.clone()),
        }],
    );
    s.commit(removal.clone()).await.unwrap();
    let mut b = peer(&srv, "b", 9);
    b.address_v4 = a.address_v4;
    s.commit(add(srv.id, 3, &b)).await.unwrap();
    // Roll back to revision 2: the inverse of revision 3's removal.
    let inverse: Vec<Change> = removal.changes.iter().rev().map(Change::inverse).collect();
    let e = s.commit(commit(srv.id, 4, inverse)).await.unwrap_err();
    assert_eq!(e.code(), "conflict");
    let addr = a.address_v4.unwrap().to_string();
    assert!(e.to_string().contains(&addr), "{e} should name {addr}");
    let st = s.load_server(srv.id).await.unwrap().unwrap();
    assert_eq!((st.revision, st.peers.len()), (RevisionNo(4), 1));
}

for_each_store!(
    create_and_load_round_trip,
    revision_cas,
    server_rules,
    peer_uniqueness,
    swaps_within_one_commit,
    peer_change_errors,
    delete_and_recreate,
    revision_history,
    applied_per_host,
    peer_statistics,
    listing_order_and_pages,
    users_versions_and_uniqueness,
    roles_and_tokens,
    audit_log,
    same_base_exactly_one_wins,
    failed_commit_returns_the_address,
    rollback_after_reassignment_conflicts,
);
