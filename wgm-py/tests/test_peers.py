"""Peers: add (one, many), read, update, enable/disable, remove, keys, configs, QR codes."""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from typing import Any

import pytest

import wgm
import wgm.keys


def test_add_peer_allocates_dual_stack_addresses(
    manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server
) -> None:
    alice = manager.add_peer(admin, office, "alice", description="laptop")
    assert isinstance(alice, wgm.Peer) and isinstance(alice.id, uuid.UUID)
    assert alice.server_id == office.id
    assert alice.address_v6 in office.ipv6_pool and alice.address_v4 in (office.ipv4_pool or ())
    # Paired host index in both families.
    assert int(alice.address_v6 or 0) & 0xFF == int(alice.address_v4 or 0) & 0xFF
    assert set(alice.allowed_ips) == {
        ipaddress.ip_network(f"{alice.address_v6}/128"),
        ipaddress.ip_network(f"{alice.address_v4}/32"),
    }
    assert alice.has_private_key and alice.has_preshared_key and alice.enabled
    assert (alice.description, alice.disabled_by, alice.expires_at) == ("laptop", None, None)
    assert alice.stats == wgm.PeerStats(last_seen=None, rx_bytes=0, tx_bytes=0)
    bob = manager.add_peer(admin, office, "bob", ipv4=None, preshared_key=False)
    assert bob.address_v4 is None and not bob.has_preshared_key
    assert manager.get_server(admin, office).peer_count == 2


def test_fixed_addresses_prefix_and_extra_networks(
    manager: wgm.Manager, admin: wgm.Principal
) -> None:
    s = manager.create_server(
        admin,
        "site",
        51820,
        ipv6_pool="fd00:5::/64",
        ipv4_pool="10.5.0.0/24",
        delegation_pool="fd00:aa::/48",
        delegation_len=64,
    )
    p = manager.add_peer(
        admin,
        s,
        "router",
        ipv6=ipaddress.IPv6Address("fd00:5::99"),
        ipv4="10.5.0.99",
        prefix="auto",
        allowed_ips=[ipaddress.ip_network("192.168.50.0/24")],
        keepalive=10,
        endpoint="router.example.org:51820",
    )
    assert p.address_v6 == ipaddress.IPv6Address("fd00:5::99")
    assert p.address_v4 == ipaddress.IPv4Address("10.5.0.99")
    assert p.delegated_prefix is not None and p.delegated_prefix.subnet_of(
        ipaddress.IPv6Network("fd00:aa::/48")
    )
    assert p.extra_allowed_ips == (ipaddress.ip_network("192.168.50.0/24"),)
    assert (p.keepalive, p.endpoint) == (10, "router.example.org:51820")


def test_peers_are_found_by_name_id_key_and_object(
    manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server
) -> None:
    alice = manager.add_peer(admin, office, "alice")
    bob = manager.add_peer(admin, office, "bob")
    for ref in (alice, alice.id, str(alice.id), "alice", alice.public_key):
        assert manager.get_peer(admin, office, ref) == alice
    assert manager.list_peers(admin, office) == (alice, bob)
    with pytest.raises(wgm.NotFound) as e:
        manager.get_peer(admin, office, "carol")
    assert e.value.details["object"] == "peer"


def test_add_peers_adds_count_in_one_revision(
    manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server
) -> None:
    peers = manager.add_peers(admin, office, "laptop", count=5, ipv4=None)
    assert [p.name for p in peers] == [f"laptop-{i}" for i in range(1, 6)]
    assert len({p.address_v6 for p in peers}) == 5 and all(p.address_v4 is None for p in peers)
    assert manager.get_server(admin, office).revision == office.revision + 1
    with pytest.raises(wgm.InvalidInput) as e:
        manager.add_peers(admin, office, "x", count=0)
    assert e.value.field == "peer.count"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "bad/name"}, "peer.name"),
        ({"name": "a", "ipv6": "10.8.0.5"}, "peer.ipv6"),
        ({"name": "a", "ipv6": "fd00:99::5"}, "peer.ipv6"),
        ({"name": "a", "ipv4": "10.9.0.5"}, "peer.ipv4"),
        ({"name": "a", "public_key": "nope"}, "peer.public_key"),
        ({"name": "a", "keepalive": 70000}, "peer.keepalive"),
        ({"name": "a", "endpoint": "nohost"}, "peer.endpoint"),
        ({"name": "a", "allowed_ips": ["10.1.0.1/24"]}, "peer.allowed_ips"),
        ({"name": "a", "expires_at": dt.datetime(2030, 1, 1)}, "peer.expires_at"),
    ],
)
def test_bad_peer_input_names_the_field_and_writes_nothing(
    manager: wgm.Manager,
    admin: wgm.Principal,
    office: wgm.Server,
    kwargs: dict[str, object],
    field: str,
) -> None:
    before = manager.history(admin, office)
    with pytest.raises(wgm.InvalidInput) as e:
        manager.add_peer(admin, office, **kwargs)  # type: ignore[arg-type]
    assert e.value.field == field, e.value
    assert manager.list_peers(admin, office) == ()
    assert manager.history(admin, office) == before


def test_names_and_addresses_are_unique(
    manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server
) -> None:
    alice = manager.add_peer(admin, office, "alice")
    taken: list[tuple[dict[str, Any], str]] = [
        ({"name": "ALICE"}, "peer.name"),  # names compare case-insensitively
        ({"name": "bob", "ipv6": alice.address_v6 or ""}, "peer.ipv6"),
        ({"name": "bob", "ipv4": alice.address_v4}, "peer.ipv4"),
        ({"name": "bob", "public_key": alice.public_key}, "peer.public_key"),
    ]
    for kwargs, field in taken:
        with pytest.raises(wgm.InvalidInput) as e:
            manager.add_peer(admin, office, **kwargs)
        assert e.value.field == field
    with pytest.raises(wgm.NotFound):
        manager.add_peer(admin, "nowhere", "bob")
    assert manager.list_peers(admin, office) == (alice,)


def test_update_changes_only_what_is_given_and_none_clears(
    manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server
) -> None:
    alice = manager.add_peer(admin, office, "alice")
    user = manager.create_user(admin, "alice-user")
    when = dt.datetime(2031, 5, 4, 3, 2, 1, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    p = manager.update_peer(
        admin,
        office,
        alice,
        description="phone",
        allowed_ips=["192.168.7.0/24"],
        keepalive=5,
        endpoint="[2001:db8::1]:51820",
        expires_at=when,
        owner=user,
    )
    assert p.description == "phone" and p.keepalive == 5
    assert p.extra_allowed_ips == (ipaddress.ip_network("192.168.7.0/24"),)
    assert p.endpoint == "[2001:db8::1]:51820" and p.owner == user.id
    assert p.expires_at == when and p.expires_at.tzinfo == dt.timezone.utc
    p = manager.update_peer(admin, office, p, name="alice2")
    assert (p.name, p.description, p.keepalive) == ("alice2", "phone", 5)
    p = manager.update_peer(
        admin,
        office,
        p,
        description=None,
        allowed_ips=None,
        endpoint=None,
        expires_at=None,
        owner=None,
    )
    assert (p.description, p.extra_allowed_ips, p.endpoint, p.expires_at, p.owner) == (
        None,
        (),
        None,
        None,
        None,
    )
    p = manager.update_peer(admin, office, p, expires_at=dt.timedelta(days=30))
    assert p.expires_at is not None
    assert (
        dt.timedelta(days=29)
        < p.expires_at - dt.datetime.now(dt.timezone.utc)
        <= dt.timedelta(days=30)
    )


def test_disable_enable_and_remove(
    manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server
) -> None:
    alice = manager.add_peer(admin, office, "alice")
    off = manager.disable_peer(admin, office, alice)
    assert (off.enabled, off.disabled_by) == (False, "administrator")
    on = manager.enable_peer(admin, office, alice)
    assert (on.enabled, on.disabled_by) == (True, None)
    removed = manager.remove_peer(admin, office, alice)
    assert removed == wgm.RemovedPeer(id=alice.id, server_id=office.id, name="alice")
    assert manager.list_peers(admin, office) == ()
    # The address is quarantined: a new peer does not get it at once.
    bob = manager.add_peer(admin, office, "bob")
    assert bob.address_v6 != alice.address_v6


def test_expired_peers_are_swept(
    manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server
) -> None:
    soon = manager.add_peer(admin, office, "soon", expires_at=dt.timedelta(seconds=1))
    manager.add_peer(admin, office, "later", expires_at=dt.timedelta(days=1))
    import time

    time.sleep(1.2)
    assert manager.sweep_expired_peers(admin) == 1
    assert manager.get_peer(admin, office, soon).disabled_by == "expiry"
    assert manager.sweep_expired_peers(admin) == 0


def test_client_configs_keys_and_qr_codes(
    manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server
) -> None:
    alice = manager.add_peer(admin, office, "alice")
    cfg = manager.client_config(admin, office, alice)
    assert cfg.complete and cfg.peer == alice
    parsed = cfg.parse()
    key = parsed.interface.private_key
    assert key is not None and wgm.keys.public_key(key) == alice.public_key
    assert parsed.peers[0].public_key == office.public_key
    assert parsed.peers[0].endpoint == "vpn.example.org:51820"
    assert parsed.peers[0].preshared_key is not None
    assert ipaddress.ip_interface(f"{alice.address_v6}/128") in parsed.interface.addresses
    assert key not in repr(cfg) and "text" not in cfg.to_dict()

    rotated = manager.rotate_peer_key(admin, office, alice)
    assert rotated.public_key != alice.public_key
    psk_rotated = manager.rotate_peer_psk(admin, office, alice)
    new_cfg = manager.client_config(admin, office, alice).parse()
    assert new_cfg.interface.private_key != key
    assert new_cfg.peers[0].preshared_key != parsed.peers[0].preshared_key
    restored = manager.restore_peer_keys(
        admin, office, alice, alice_revision(manager, admin, office)
    )
    assert restored.public_key == alice.public_key
    assert psk_rotated.public_key == rotated.public_key

    svg = manager.client_qr(admin, office, alice)
    assert b"<svg" in svg[:200]
    png = manager.client_qr(admin, office, alice, format="png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(wgm.InvalidInput) as e:
        manager.client_qr(admin, office, alice, format="gif")
    assert e.value.field == "format"


def alice_revision(manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server) -> int:
    """The revision that added alice."""
    for r in manager.history(admin, office):
        if any(c.kind == "peer_added" and c.name == "alice" for c in r.changes):
            return r.revision
    raise AssertionError("alice was never added")


def test_bring_your_own_key(manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server) -> None:
    pair = wgm.keys.generate()
    p = manager.add_peer(admin, office, "byok", public_key=pair.public_key)
    assert p.public_key == pair.public_key and not p.has_private_key
    cfg = manager.client_config(admin, office, p)
    assert not cfg.complete and "PrivateKey" not in cfg.text
    with pytest.raises(wgm.InvalidInput) as e:
        manager.client_qr(admin, office, p)
    assert e.value.field == "peer.private_key"
    with pytest.raises(wgm.InvalidInput) as e:
        manager.add_peer(admin, office, "again", public_key=pair.public_key)
    assert e.value.field == "peer.public_key"
