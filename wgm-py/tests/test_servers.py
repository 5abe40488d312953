"""Servers: create, read by every kind of reference, update, delete, export/import, keys."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import uuid
from pathlib import Path

import pytest

import wgm
import wgm.keys
from wgm.wgquick import Config, InterfaceSection, PeerSection


def test_create_server_returns_a_typed_immutable_view(
    manager: wgm.Manager, admin: wgm.Principal
) -> None:
    s = manager.create_server(
        admin,
        "office",
        51820,
        ipv4_pool="10.8.0.0/24",
        dns=["fd00:1::53", "10.8.0.53"],
        mtu=1380,
        strategy="random",
        fwmark=0x51,
        tunnel="split",
        keepalive=15,
        endpoint="vpn.example.org:51820",
        quarantine_secs=60,
    )
    assert isinstance(s.id, uuid.UUID)
    assert (s.name, s.interface, s.listen_port) == ("office", "office", 51820)
    # Every server has IPv6: a random RFC 4193 /64 when none is given.
    assert s.ipv6_pool.prefixlen == 64 and s.ipv6_pool.is_private
    assert s.address_v6 == next(s.ipv6_pool.hosts())
    assert s.ipv4_pool == ipaddress.IPv4Network("10.8.0.0/24")
    assert s.address_v4 == ipaddress.IPv4Address("10.8.0.1")
    assert s.dns == (ipaddress.ip_address("fd00:1::53"), ipaddress.ip_address("10.8.0.53"))
    assert (s.mtu, s.strategy, s.fwmark, s.quarantine_secs) == (1380, "random", 0x51, 60)
    assert (s.client_template.tunnel, s.client_template.keepalive) == ("split", 15)
    assert s.endpoint == "vpn.example.org:51820"
    assert s.active and s.peer_count == 0 and s.revision == 1
    assert s.created_at.tzinfo is not None and s.created_at.utcoffset() == dt.timedelta(0)
    assert len(s.public_key) == 44
    with pytest.raises(AttributeError):
        s.name = "x"  # type: ignore[misc]


def test_servers_are_found_by_name_id_uuid_and_object(
    manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server
) -> None:
    for ref in (office, office.id, str(office.id), "office", "OFFICE"):
        assert manager.get_server(admin, ref) == office
    assert manager.list_servers(admin) == (office,)
    with pytest.raises(wgm.NotFound) as e:
        manager.get_server(admin, "nope")
    assert e.value.code == 3 and e.value.details["object"] == "server"
    with pytest.raises(wgm.NotFound):
        manager.get_server(admin, uuid.uuid4())
    with pytest.raises(TypeError):
        manager.get_server(admin, 42)  # type: ignore[arg-type]


def test_update_changes_only_what_is_given_and_none_clears(
    manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server
) -> None:
    s = manager.update_server(admin, office, mtu=1280, fwmark=7, dns=["fd00:1::53"])
    assert (s.mtu, s.fwmark, s.endpoint) == (1280, 7, office.endpoint)
    assert s.revision == office.revision + 1
    s = manager.update_server(admin, office, endpoint=None, fwmark=None, dns=[])
    assert (s.endpoint, s.fwmark, s.dns, s.mtu) == (None, None, (), 1280)
    s = manager.update_server(admin, office, name="hq", active=False, tunnel="split")
    assert (s.name, s.active, s.client_template.tunnel) == ("hq", False, "split")
    assert manager.get_server(admin, "hq").id == office.id


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "bad/name", "listen_port": 51820}, "server.name"),
        ({"name": "a", "listen_port": 0}, "server.listen_port"),
        ({"name": "a", "listen_port": 51820, "ipv6_pool": "10.0.0.0/24"}, "server.ipv6_pool"),
        ({"name": "a", "listen_port": 51820, "ipv6_pool": "fd00::1/64"}, "server.ipv6_pool"),
        ({"name": "a", "listen_port": 51820, "ipv4_pool": "10.8.0.1/24"}, "server.ipv4_pool"),
        ({"name": "a", "listen_port": 51820, "mtu": 100}, "server.mtu"),
        ({"name": "a", "listen_port": 51820, "dns": ["1.2.3"]}, "server.dns"),
        ({"name": "a", "listen_port": 51820, "strategy": "fastest"}, "server.strategy"),
        ({"name": "a", "listen_port": 51820, "endpoint": "no-port"}, "server.endpoint"),
        ({"name": "a-very-long-name-x", "listen_port": 51820}, "server.interface"),
    ],
)
def test_bad_server_input_names_the_field_and_writes_nothing(
    manager: wgm.Manager, admin: wgm.Principal, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(wgm.InvalidInput) as e:
        manager.create_server(admin, **kwargs)  # type: ignore[arg-type]
    assert e.value.field == field, e.value
    assert e.value.code == 2
    assert manager.list_servers(admin) == ()


def test_a_taken_name_is_refused(
    manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server
) -> None:
    with pytest.raises(wgm.InvalidInput) as e:
        manager.create_server(admin, "Office", 51821, interface="wg9")
    assert e.value.field == "server.name"
    with pytest.raises(wgm.InvalidInput) as e:
        manager.create_server(admin, "other", 51821, interface="office")
    assert e.value.field == "server.interface"
    assert manager.list_servers(admin) == (office,)


def test_a_misspelt_keyword_never_passes_silently(
    manager: wgm.Manager, admin: wgm.Principal
) -> None:
    with pytest.raises(TypeError):
        manager.create_server(admin, "x", 51820, ipv6="fd00::/64")  # type: ignore[call-arg]


def test_delete_returns_the_revision_and_keeps_history(
    manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server
) -> None:
    manager.add_peer(admin, office, "alice")
    rev = manager.delete_server(admin, office)
    assert rev == 3
    with pytest.raises(wgm.NotFound):
        manager.get_server(admin, office.id)
    assert manager.list_servers(admin) == ()


def test_export_import_and_key_rotation(
    manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server, tmp_path: Path
) -> None:
    manager.add_peer(admin, office, "alice")
    exported = manager.export_server(admin, office)
    assert "PrivateKey" in exported.text and "<redacted>" in repr(exported)
    assert exported.to_dict() == {}
    cfg = exported.parse()
    assert wgm.keys.public_key(cfg.interface.private_key or "") == office.public_key
    out = tmp_path / "office.conf"
    exported.write(out)
    assert out.read_text() == exported.text and (os.stat(out).st_mode & 0o777) == 0o600

    rotated = manager.rotate_server_key(admin, office)
    assert rotated.public_key != office.public_key
    restored = manager.restore_server_key(admin, office, 1)
    assert restored.public_key == office.public_key

    # Import a file built in Python: one revision, peers named from `# Name =`.
    srv, a, b = wgm.keys.generate(), wgm.keys.generate(), wgm.keys.generate()
    net = ipaddress.ip_network
    new = Config(
        interface=InterfaceSection(
            private_key=srv.private_key,
            addresses=(
                ipaddress.ip_interface("fd00:2::1/64"),
                ipaddress.ip_interface("10.9.0.1/24"),
            ),
            listen_port=51830,
        ),
        peers=(
            PeerSection(
                public_key=a.public_key,
                allowed_ips=(net("fd00:2::2/128"), net("10.9.0.2/32")),
                name="a",
            ),
            PeerSection(public_key=b.public_key, allowed_ips=(net("fd00:2::3/128"),), name="b"),
        ),
    )
    imported = manager.import_server(admin, "branch", new, interface="wg-branch")
    assert (imported.public_key, imported.peer_count, imported.revision) == (srv.public_key, 2, 1)
    assert imported.ipv6_pool == ipaddress.IPv6Network("fd00:2::/64")
    peers = {p.name: p for p in manager.list_peers(admin, imported)}
    assert peers["a"].address_v4 == ipaddress.IPv4Address("10.9.0.2")
    assert not peers["a"].has_private_key
    # Hooks are refused unless allowed (and then dropped); text works as well as objects.
    hooked = exported.text.replace("[Interface]", "[Interface]\nPostUp = iptables -F", 1)
    with pytest.raises(wgm.InvalidInput):
        manager.import_server(admin, "hooked", hooked, interface="wg-h")
    with pytest.raises(wgm.ParseError) as e:
        manager.import_server(admin, "broken", "[Interface]\nListenPort = x\n", interface="wg-b")
    assert e.value.line == 2


def test_open_without_a_url_uses_the_clis_default_store(tmp_path: Path) -> None:
    m = wgm.Manager.open(local_admin=True)
    admin = m.local_admin()
    assert admin.kind == "local"
    m.create_server(admin, "office", 51820)
    data = tmp_path / "xdg-data" / "wgm"
    assert (data / "wgm.db").exists() and (data / "wgm.key").exists()
    assert (os.stat(data / "wgm.key").st_mode & 0o777) == 0o600
    again = wgm.Manager.open(local_admin=True)
    assert [s.name for s in again.list_servers(again.local_admin())] == ["office"]
    assert "wgm.db" in repr(again)


def test_master_keys_are_checked(store_url: str, key_file: Path) -> None:
    m = wgm.Manager.open(store_url, master_key_file=key_file, local_admin=True)
    m.create_server(m.local_admin("root"), "office", 51820)
    other = wgm.keys.generate_preshared().key  # any 32 random bytes in base64
    with pytest.raises(wgm.Sealed):
        wgm.Manager.open(store_url, master_key=other, local_admin=True)
    same = wgm.Manager.open(store_url, master_key=key_file.read_text().strip(), local_admin=True)
    assert len(same.list_servers(same.local_admin("root"))) == 1


def test_local_admin_needs_the_capability(store_url: str, key_file: Path) -> None:
    m = wgm.Manager.open(store_url, master_key_file=key_file)
    with pytest.raises(wgm.PermissionDenied):
        m.local_admin("root")


def test_store_url_never_shows_a_password() -> None:
    with pytest.raises(wgm.WgmError) as e:
        wgm.Manager.open(
            "postgres://u:s3cr3t-pw@127.0.0.1:1/db", master_key=wgm.keys.generate_preshared().key
        )
    assert "s3cr3t-pw" not in str(e.value) and "s3cr3t-pw" not in repr(e.value)


def test_a_server_is_assigned_to_a_host_in_a_revision(
    manager: wgm.Manager, admin: wgm.Principal
) -> None:
    s = manager.create_server(admin, "edge", 51821, host="wg-fra-1")
    assert s.host == "wg-fra-1"
    moved = manager.update_server(admin, s, host="wg-ams-1")
    assert (moved.host, moved.revision) == ("wg-ams-1", 2)
    assert manager.update_server(admin, s, host=None).host is None
    # Untouched when not given.
    assert manager.update_server(admin, s, mtu=1380).host is None
    with pytest.raises(wgm.InvalidInput) as e:
        manager.update_server(admin, s, host="two words")
    assert e.value.field == "server.host"
    assert manager.get_server(admin, s).revision == 4
    assert manager.create_server(admin, "plain", 51822).host is None
