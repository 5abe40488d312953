"""The wg-quick file format: `parse` text into a typed, immutable `Config`, `render` it back.

The parser and renderer are the library's: as strict as wgm is everywhere (canonical
keys, addresses without leading zeros, no duplicate keys), and the renderer refuses
anything that would not read back as itself (a newline in a name, say), so
``parse(render(config)) == config``. Keys in a `Config` never show in its ``repr`` or
``to_dict()``.

Example::

    import wgm.wgquick

    cfg = wgm.wgquick.parse(open("wg0.conf").read())
    print(cfg.interface.addresses, [p.public_key for p in cfg.peers])
    text = wgm.wgquick.render(cfg)

Build one with `dataclasses.replace` or the constructors; lists are stored as tuples and
address text is parsed::

    iface = InterfaceSection(private_key=pair.private_key, addresses=["10.8.0.2/32"])
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

from . import _wgm
from ._model import (
    IPInterface,
    IPNetwork,
    Model,
    model,
    parse_dns,
    parse_iface,
    parse_net,
    secret,
)
from .models import DnsEntry

__all__ = ["Config", "InterfaceSection", "PeerSection", "parse", "render"]


def _tuple(value: Iterable[Any], parse: Any = None) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)):
        raise TypeError(f"expected a list, not a single {type(value).__name__}")
    return tuple(parse(v) if parse is not None and isinstance(v, str) else v for v in value)


def _normalise(obj: Any, **parsers: Any) -> None:
    # Frozen dataclass: lists given to the constructor become tuples (text parsed).
    for name, parse in parsers.items():
        object.__setattr__(obj, name, _tuple(getattr(obj, name), parse))


@model
class InterfaceSection(Model):
    """The ``[Interface]`` section.

    ``addresses`` are interface addresses with their prefix (``10.8.0.1/24``), ``dns``
    resolver addresses or search domains, ``table`` ``"auto"``, ``"off"``, a number or a
    name, ``pre_up`` … ``post_down`` the hook commands (wgm never runs them), ``name``
    the ``# Name =`` comment and ``comments`` the other comment lines of the section.
    ``private_key`` is hidden from ``repr`` and ``to_dict()``.
    """

    private_key: str | None = secret(default=None)
    addresses: tuple[IPInterface, ...] = ()
    listen_port: int | None = None
    fwmark: int | None = None
    dns: tuple[DnsEntry, ...] = ()
    mtu: int | None = None
    table: str | None = None
    save_config: bool | None = None
    pre_up: tuple[str, ...] = ()
    post_up: tuple[str, ...] = ()
    pre_down: tuple[str, ...] = ()
    post_down: tuple[str, ...] = ()
    name: str | None = None
    comments: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _normalise(
            self,
            addresses=parse_iface,
            dns=parse_dns,
            pre_up=None,
            post_up=None,
            pre_down=None,
            post_down=None,
            comments=None,
        )

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> InterfaceSection:
        hooks = d.get("hooks") or {}
        return cls(
            private_key=d.get("private_key"),
            addresses=tuple(parse_iface(a) for a in d.get("addresses") or ()),
            listen_port=d.get("listen_port"),
            fwmark=d.get("fwmark"),
            dns=tuple(parse_dns(a) for a in d.get("dns") or ()),
            mtu=d.get("mtu"),
            table=d.get("table"),
            save_config=d.get("save_config"),
            pre_up=tuple(hooks.get("pre_up") or ()),
            post_up=tuple(hooks.get("post_up") or ()),
            pre_down=tuple(hooks.get("pre_down") or ()),
            post_down=tuple(hooks.get("post_down") or ()),
            name=d.get("name"),
            comments=tuple(d.get("comments") or ()),
        )

    def _to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "comments": list(self.comments),
            "private_key": self.private_key,
            "listen_port": self.listen_port,
            "fwmark": self.fwmark,
            "addresses": [str(a) for a in self.addresses],
            "dns": [str(a) for a in self.dns],
            "mtu": self.mtu,
            "table": self.table,
            "save_config": self.save_config,
            "hooks": {
                "pre_up": list(self.pre_up),
                "post_up": list(self.post_up),
                "pre_down": list(self.pre_down),
                "post_down": list(self.post_down),
            },
        }


@model
class PeerSection(Model):
    """A ``[Peer]`` section; ``preshared_key`` is hidden from ``repr`` and ``to_dict()``.

    ``allowed_ips`` are networks (``fd00::2/128``), ``endpoint`` is ``host:port``.
    """

    public_key: str
    preshared_key: str | None = secret(default=None)
    allowed_ips: tuple[IPNetwork, ...] = ()
    endpoint: str | None = None
    persistent_keepalive: int | None = None
    name: str | None = None
    comments: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _normalise(self, allowed_ips=parse_net, comments=None)

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> PeerSection:
        return cls(
            public_key=d["public_key"],
            preshared_key=d.get("preshared_key"),
            allowed_ips=tuple(parse_net(a) for a in d.get("allowed_ips") or ()),
            endpoint=d.get("endpoint"),
            persistent_keepalive=d.get("persistent_keepalive"),
            name=d.get("name"),
            comments=tuple(d.get("comments") or ()),
        )

    def _to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "comments": list(self.comments),
            "public_key": self.public_key,
            "preshared_key": self.preshared_key,
            "allowed_ips": [str(a) for a in self.allowed_ips],
            "endpoint": self.endpoint,
            "persistent_keepalive": self.persistent_keepalive,
        }


@model
class Config(Model):
    """A wg-quick file: its ``[Interface]``, its ``[Peer]`` sections, and the comment
    lines before the first section."""

    interface: InterfaceSection = dataclasses.field(default_factory=InterfaceSection)
    peers: tuple[PeerSection, ...] = ()
    comments: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _normalise(self, peers=None, comments=None)

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> Config:
        return cls(
            interface=InterfaceSection._from_json(d.get("interface") or {}),
            peers=tuple(PeerSection._from_json(p) for p in d.get("peers") or ()),
            comments=tuple(d.get("comments") or ()),
        )

    def _to_json(self) -> dict[str, Any]:
        return {
            "comments": list(self.comments),
            "interface": self.interface._to_json(),
            "peers": [p._to_json() for p in self.peers],
        }


def parse(text: str) -> Config:
    """Parse wg-quick text.

    Hooks are accepted (parsing runs nothing). Raises `wgm.ParseError` with the line
    (``err.line``) and field of the first problem; the message never repeats a key.

    >>> cfg = parse("[Interface]\\nAddress = 10.8.0.2/32\\n")   # doctest: +SKIP
    >>> cfg.interface.addresses                                    # doctest: +SKIP
    (IPv4Interface('10.8.0.2/32'),)
    """
    return Config._from_json(json.loads(_wgm.wgquick_parse(text)))


def render(config: Config) -> str:
    """Render a `Config` as wg-quick text (``parse`` of the result gives it back).

    Raises `wgm.InvalidInput` naming the field (``Interface.Address``, …) for a value
    the library refuses or that would not read back as itself.
    """
    if not isinstance(config, Config):
        raise TypeError(f"config must be a wgm.wgquick.Config, not {type(config).__name__}")
    return _wgm.wgquick_render(json.dumps(config._to_json()))
