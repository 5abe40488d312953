"""`wgm.wgquick`: typed parse, render, exact round trips, errors with lines."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

import wgm
import wgm.keys
from wgm.wgquick import Config, InterfaceSection, PeerSection, parse, render


def sample() -> tuple[str, str, str, str]:
    """A server file with one peer, and the keys in it."""
    server, peer = wgm.keys.generate(), wgm.keys.generate()
    psk = wgm.keys.generate_preshared().key
    text = f"""# office
[Interface]
PrivateKey = {server.private_key}
Address = fd00:1::1/64, 10.8.0.1/24
ListenPort = 51820
MTU = 1420

[Peer]
# Name = alice
PublicKey = {peer.public_key}
PresharedKey = {psk}
AllowedIPs = fd00:1::2/128, 10.8.0.2/32
PersistentKeepalive = 25
"""
    return text, server.private_key, peer.public_key, psk


def test_parse_gives_typed_values() -> None:
    text, private, peer_key, psk = sample()
    cfg = parse(text)
    i = cfg.interface
    assert i.private_key == private
    assert i.addresses == (
        ipaddress.ip_interface("fd00:1::1/64"),
        ipaddress.ip_interface("10.8.0.1/24"),
    )
    assert (i.listen_port, i.mtu) == (51820, 1420)
    (p,) = cfg.peers
    assert (p.name, p.public_key, p.preshared_key) == ("alice", peer_key, psk)
    assert p.allowed_ips == (
        ipaddress.ip_network("fd00:1::2/128"),
        ipaddress.ip_network("10.8.0.2/32"),
    )
    assert p.persistent_keepalive == 25


def test_render_round_trips() -> None:
    text, *_ = sample()
    cfg = parse(text)
    again = parse(render(cfg))
    assert again == cfg
    assert render(again) == render(cfg)


def test_keys_never_show_in_repr_or_to_dict() -> None:
    text, private, _, psk = sample()
    cfg = parse(text)
    for shown in (repr(cfg), str(cfg), str(cfg.to_dict())):
        assert private not in shown and psk not in shown
    assert "private_key" not in cfg.to_dict()["interface"]
    assert "preshared_key" not in cfg.to_dict()["peers"][0]


def test_configs_can_be_built_from_plain_values() -> None:
    pair, peer = wgm.keys.generate(), wgm.keys.generate()
    # Typed code passes tuples of ipaddress objects; lists and text are accepted too.
    cfg = Config(
        interface=InterfaceSection(
            private_key=pair.private_key,
            addresses=["10.8.0.2/32", "fd00:1::2/128"],  # type: ignore[arg-type]
            dns=["fd00:1::1"],  # type: ignore[arg-type]
        ),
        peers=[  # type: ignore[arg-type]
            PeerSection(
                public_key=peer.public_key,
                allowed_ips=["0.0.0.0/0", "::/0"],  # type: ignore[arg-type]
                endpoint="vpn.example.org:51820",
            )
        ],
    )
    typed = Config(
        interface=InterfaceSection(
            private_key=pair.private_key,
            addresses=(
                ipaddress.ip_interface("10.8.0.2/32"),
                ipaddress.ip_interface("fd00:1::2/128"),
            ),
            dns=(ipaddress.ip_address("fd00:1::1"),),
        ),
        peers=(
            PeerSection(
                public_key=peer.public_key,
                allowed_ips=(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")),
                endpoint="vpn.example.org:51820",
            ),
        ),
    )
    assert typed == cfg
    assert isinstance(cfg.peers, tuple)
    assert cfg.interface.addresses[0] == ipaddress.ip_interface("10.8.0.2/32")
    assert cfg.interface.dns == (ipaddress.ip_address("fd00:1::1"),)
    assert parse(render(cfg)) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.interface.mtu = 1280  # type: ignore[misc]


def test_a_parse_error_names_the_line_and_never_the_key() -> None:
    text, private, _, _ = sample()
    bad = text.replace("ListenPort = 51820", "ListenPort = 70000")
    with pytest.raises(wgm.ParseError) as e:
        parse(bad)
    assert e.value.line == 5
    assert e.value.kind == "parse"
    assert private not in str(e.value)
    with pytest.raises(wgm.ParseError) as e:
        parse("[Interface]\nBogusKey = 1\n")
    assert e.value.line == 2


def test_render_refuses_what_would_not_read_back() -> None:
    peer = wgm.keys.generate()
    cfg = Config(peers=(PeerSection(public_key=peer.public_key, name="evil\nPostUp = rm -rf /"),))
    with pytest.raises(wgm.InvalidInput) as e:
        render(cfg)
    assert e.value.field
    with pytest.raises(wgm.InvalidInput) as e:
        render(Config(peers=(PeerSection(public_key="not a key"),)))
    assert e.value.field == "Peer.PublicKey"
    with pytest.raises(TypeError):
        render("[Interface]")  # type: ignore[arg-type]
