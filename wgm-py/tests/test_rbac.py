"""Authorization through a token principal: refusals, hiding, and nothing written."""

from __future__ import annotations

from typing import Callable

import pytest

import wgm

Denied = (wgm.PermissionDenied, wgm.NotFound)


@pytest.fixture
def uma(manager: wgm.Manager, admin: wgm.Principal) -> wgm.Principal:
    """A user with the built-in ``user`` role, acting through an API token."""
    manager.create_user(admin, "uma", role="user")
    return manager.authenticate_token(manager.create_token(admin, "uma-cli", user="uma").secret)


def test_a_user_token_is_refused_admin_operations_and_nothing_is_written(
    manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server, uma: wgm.Principal
) -> None:
    alice = manager.add_peer(admin, office, "alice")
    assert (uma.kind, uma.roles, uma.is_admin) == ("api_token", ["user"], False)
    history = manager.history(admin, office)
    peers = manager.list_peers(admin, office)
    users = manager.list_users(admin)
    server = manager.get_server(admin, office)
    audit_before = manager.query_audit(admin)

    refused: list[tuple[str, Callable[[], object], tuple[type[wgm.WgmError], ...]]] = [
        (
            "create_server",
            lambda: manager.create_server(uma, "mine", 51900),
            (wgm.PermissionDenied,),
        ),
        ("update_server", lambda: manager.update_server(uma, office, mtu=1280), Denied),
        ("delete_server", lambda: manager.delete_server(uma, office), Denied),
        ("export_server", lambda: manager.export_server(uma, office), Denied),
        ("rotate_server_key", lambda: manager.rotate_server_key(uma, office), Denied),
        ("get_peer", lambda: manager.get_peer(uma, office, alice), Denied),
        (
            "update_peer",
            lambda: manager.update_peer(uma, office, alice, description="mine"),
            Denied,
        ),
        ("disable_peer", lambda: manager.disable_peer(uma, office, alice), Denied),
        ("remove_peer", lambda: manager.remove_peer(uma, office, alice), Denied),
        ("rotate_peer_key", lambda: manager.rotate_peer_key(uma, office, alice), Denied),
        ("client_config", lambda: manager.client_config(uma, office, alice), Denied),
        ("client_qr", lambda: manager.client_qr(uma, office, alice), Denied),
        ("rollback", lambda: manager.rollback(uma, office, 1), Denied),
        (
            "create_user",
            lambda: manager.create_user(uma, "mallory", role="admin"),
            (wgm.PermissionDenied,),
        ),
        ("update_user", lambda: manager.update_user(uma, "uma", roles=["admin"]), Denied),
        ("delete_user", lambda: manager.delete_user(uma, "root"), Denied),
        (
            "put_role",
            lambda: manager.put_role(uma, "mine", ["server:create"]),
            (wgm.PermissionDenied,),
        ),
        ("create_token", lambda: manager.create_token(uma, "x", user="root"), Denied),
        ("query_audit", lambda: manager.query_audit(uma), (wgm.PermissionDenied,)),
        ("verify_audit", lambda: manager.verify_audit(uma), (wgm.PermissionDenied,)),
        ("apply", lambda: manager.apply(uma, office, backend="userspace", dry_run=True), Denied),
        ("plan", lambda: manager.plan(uma, office, backend="userspace"), Denied),
    ]
    for name, call, expected in refused:
        with pytest.raises(expected) as e:
            call()
        assert e.value.code in (3, 5), name

    # What a user may read holds nothing of anyone else.
    assert [u.name for u in manager.list_users(uma)] == ["uma"]
    assert manager.list_peers(uma, office) == ()
    assert manager.history(admin, office) == history
    assert manager.list_peers(admin, office) == peers
    assert manager.list_users(admin) == users
    assert manager.get_server(admin, office) == server
    # Refusals are audited (outcome "denied"), and nothing else was written.
    new = manager.query_audit(admin, after_seq=audit_before[-1].seq)
    assert new and all(r.outcome == "denied" for r in new), [(r.action, r.outcome) for r in new]
    assert all(r.actor.label.startswith("user:uma") for r in new)
    manager.verify_audit(admin)


def test_a_user_manages_only_their_own_peers(
    manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server, uma: wgm.Principal
) -> None:
    alice = manager.add_peer(admin, office, "alice")
    mine = manager.add_peer(uma, office, "uma-phone")
    assert mine.owner == manager.get_user(admin, "uma").id
    assert manager.list_peers(uma, office) == (mine,)
    assert manager.client_config(uma, office, mine).complete
    assert manager.update_peer(uma, office, mine, description="phone").description == "phone"
    # Routing networks to a peer is its own permission, which `user` does not hold.
    with pytest.raises(wgm.PermissionDenied):
        manager.update_peer(uma, office, mine, allowed_ips=["192.168.1.0/24"])
    with pytest.raises(wgm.PermissionDenied):
        manager.add_peer(uma, office, "router", allowed_ips=["192.168.2.0/24"])
    # Another user's peer is hidden, even by its public key.
    with pytest.raises(Denied):
        manager.get_peer(uma, office, alice.public_key)
    # An administrator's disable cannot be undone by the owner.
    manager.disable_peer(admin, office, mine)
    with pytest.raises(wgm.PermissionDenied):
        manager.enable_peer(uma, office, mine)
    status = manager.status(uma, office, backend="userspace")
    assert {p.name for p in status.peers} <= {"uma-phone"}
    assert "alice" not in status.missing
    assert manager.list_peers(admin, office) == (alice, manager.get_peer(admin, office, mine))


def test_a_scoped_token_is_narrower_than_its_user(
    manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server
) -> None:
    manager.create_user(admin, "reader", role="operator")
    new = manager.create_token(admin, "ro", user="reader", scopes=["peer:read", "server:read"])
    reader = manager.authenticate_token(new.secret)
    assert manager.list_peers(reader, office) == ()
    with pytest.raises(wgm.PermissionDenied):
        manager.add_peer(reader, office, "nope")
    assert manager.list_peers(admin, office) == ()
