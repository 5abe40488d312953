"""History, diff, rollback, the audit log and its verification."""

from __future__ import annotations

import datetime as dt

import pytest

import wgm


def test_history_diff_and_rollback(
    manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server
) -> None:
    alice = manager.add_peer(admin, office, "alice")
    manager.update_peer(admin, office, alice, description="laptop")
    manager.update_server(admin, office, mtu=1300)
    revs = manager.history(admin, office)
    assert [r.revision for r in revs] == [1, 2, 3, 4]
    assert [c.kind for r in revs for c in r.changes] == [
        "server_created",
        "peer_added",
        "peer_updated",
        "server_updated",
    ]
    assert revs[1].changes[0] == wgm.Change(
        kind="peer_added", object="peer", name="alice", id=alice.id
    )
    assert revs[0].author == "local:root"
    assert all(r.at.tzinfo is not None for r in revs)
    assert manager.history(admin, office, after=2, limit=1) == (revs[2],)

    d = manager.diff(admin, office, 1, 4)
    kinds = {e.kind: e for e in d}
    assert set(kinds) == {"server", "peer_added"}
    assert kinds["server"].fields["mtu"] == (1420, 1300)
    assert kinds["peer_added"].object == "alice"
    changed = manager.diff(admin, office, 2)  # to the head
    assert {e.kind for e in changed} == {"server", "peer_changed"}

    back = manager.rollback(admin, office, 2)
    assert back.revision == 5
    assert manager.get_server(admin, office).mtu == 1420
    assert manager.get_peer(admin, office, alice).description is None
    with pytest.raises(wgm.NotFound):
        manager.rollback(admin, office, 99)
    with pytest.raises(wgm.InvalidInput):
        manager.diff(admin, office, -1)


def test_audit_query_and_verify(
    manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server
) -> None:
    alice = manager.add_peer(admin, office, "alice")
    manager.client_config(admin, office, alice)
    records = manager.query_audit(admin)
    actions = [r.action for r in records]
    assert actions[:3] == ["server.create", "peer.add", "secret.export"]
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert all(r.prev_hash == p.hash for p, r in zip(records, records[1:]))
    first = records[0]
    assert first.actor == wgm.Actor(user_id=first.actor.user_id, label="local:root")
    assert first.server_id == office.id and first.outcome == "success"
    assert manager.query_audit(admin, server=office, limit=1) == (first,)
    assert manager.query_audit(admin, after_seq=records[-1].seq) == ()
    assert len(manager.query_audit(admin, since=dt.timedelta(hours=1))) == len(records)
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    assert manager.query_audit(admin, since=future) == ()
    assert manager.query_audit(admin, actor="user:nobody") == ()

    v = manager.verify_audit(admin)
    assert v.records >= len(records) and v.legacy_records == 0
    assert v.head == f"{v.head_seq}:{v.head_hash}"
    assert manager.verify_audit(admin, head=v.head) == manager.verify_audit(admin)
    with pytest.raises(wgm.InvalidInput):
        manager.verify_audit(admin, head="not a head")
    wrong = f"{v.head_seq}:{'0' * 64}"
    with pytest.raises(wgm.Conflict) as e:
        manager.verify_audit(admin, head=wrong)
    assert e.value.conflict == "audit_chain_broken"
