"""Every operation of the `Manager`, written once for both facades (private).

Each function here takes a method's arguments (all but the principal), checks their
Python types, and returns a `Call`: the native op name, its JSON arguments and the
function that turns the JSON result into wgm's types. `wgm.Manager` runs a call with the
native ``call`` and `wgm.aio.Manager` awaits ``call_async``; neither repeats any of this.
Each function's docstring is the documentation of the method of that name.

Arguments are converted here (``ipaddress`` objects and UUIDs to text, aware datetimes to
RFC 3339, objects to their ids); their *values* are checked by the library, which names
the field at fault in `wgm.InvalidInput`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import enum
import ipaddress
import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Final,
    Generic,
    TypeVar,
    Union,
)

from .errors import InvalidInput
from .models import (
    ApplyReport,
    AuditRecord,
    AuditVerification,
    Backend,
    ClientConfig,
    DiffEntry,
    NewToken,
    Peer,
    Plan,
    ReconcileReport,
    RemovedPeer,
    Revision,
    Role,
    RoleAssignment,
    Server,
    ServerConfig,
    Status,
    Strategy,
    Token,
    TotpEnrollment,
    TunnelMode,
    User,
)

if TYPE_CHECKING:
    from .wgquick import Config

T = TypeVar("T")


class Unset(enum.Enum):
    """The type of `UNSET`."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset.UNSET
"""The default of the update methods' arguments: leave the field as it is.

(``None``, where a field may be cleared, clears it.)
"""

ServerRef = Union[str, uuid.UUID, Server]
"""A server: its name, its id, or a `Server`."""
PeerRef = Union[str, uuid.UUID, Peer]
"""A peer: its name, its id, its public key, or a `Peer`."""
UserRef = Union[str, uuid.UUID, User]
"""A user: their name, their id, or a `User`."""
TokenRef = Union[str, uuid.UUID, Token]
"""An API token: its id, or a `Token`."""
Address = Union[str, ipaddress.IPv4Address, ipaddress.IPv6Address]
V6Address = Union[str, ipaddress.IPv6Address]
V4Address = Union[str, ipaddress.IPv4Address]
Network = Union[str, ipaddress.IPv4Network, ipaddress.IPv6Network]
V6Network = Union[str, ipaddress.IPv6Network]
V4Network = Union[str, ipaddress.IPv4Network]
DnsArg = Union[str, ipaddress.IPv4Address, ipaddress.IPv6Address]
Time = Union[_dt.datetime, _dt.timedelta, str]
"""An aware `datetime`, a `timedelta` counted from now, or text as the CLI takes it
(RFC 3339 ``2026-12-31T23:59:59Z``, or a duration such as ``30d``)."""
RoleArg = Union[str, RoleAssignment, "tuple[str, ServerRef | None]"]
"""A role to hold: its name (everywhere), a `RoleAssignment`, or ``(name, server)``."""


@dataclass(frozen=True)
class Call(Generic[T]):
    """One native call: ``op``, its JSON ``args``, and how to read its result."""

    op: str
    args: dict[str, Any]
    convert: Callable[[Any], T]

    def encode(self) -> str:
        """The arguments as JSON text."""
        return json.dumps(self.args, separators=(",", ":"))

    def decode(self, result: str) -> T:
        """The result JSON text as wgm's types."""
        return self.convert(json.loads(result))


# --- argument conversion ------------------------------------------------------------------


def _ref(value: object, what: str, cls: type) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, cls):
        return str(value.id)  # type: ignore[attr-defined]
    raise TypeError(f"{what} must be a name, an id or a {cls.__name__}, not {type(value).__name__}")


def server_ref(value: ServerRef) -> str:
    """The text of a server reference."""
    return _ref(value, "server", Server)


def peer_ref(value: PeerRef) -> str:
    """The text of a peer reference."""
    return _ref(value, "peer", Peer)


def user_ref(value: UserRef) -> str:
    """The text of a user reference."""
    return _ref(value, "user", User)


def _text(value: object, field: str) -> str:
    if isinstance(
        value,
        (
            str,
            ipaddress.IPv4Address,
            ipaddress.IPv6Address,
            ipaddress.IPv4Network,
            ipaddress.IPv6Network,
            ipaddress.IPv4Interface,
            ipaddress.IPv6Interface,
        ),
    ):
        return str(value)
    raise TypeError(f"{field} must be a str or an ipaddress object, not {type(value).__name__}")


def _texts(values: Iterable[object], field: str) -> list[str]:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{field} must be a list, not a single {type(values).__name__}")
    return [_text(v, field) for v in values]


def _int(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field} must be an int, not {type(value).__name__}")
    return value


def time_arg(value: Time, field: str) -> str:
    """An aware datetime (or a timedelta from now) as RFC 3339 text; text passes as is."""
    if isinstance(value, str):
        return value
    if isinstance(value, _dt.timedelta):
        value = _dt.datetime.now(_dt.timezone.utc) + value
    if not isinstance(value, _dt.datetime):
        raise TypeError(f"{field} must be a datetime or a timedelta, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(
            f"invalid {field}: a naive datetime is ambiguous; give it a timezone",
            field=field,
            reason="must be timezone-aware",
        )
    return value.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _put(
    args: dict[str, Any], key: str, value: Any, convert: Callable[[Any], Any] = lambda v: v
) -> None:
    """Set ``args[key]`` unless ``value`` is `UNSET`; ``None`` stays JSON ``null``."""
    if value is UNSET:
        return
    args[key] = None if value is None else convert(value)


def _opt(
    args: dict[str, Any], key: str, value: Any, convert: Callable[[Any], Any] = lambda v: v
) -> None:
    """Set ``args[key]`` unless ``value`` is ``None`` (the library's default)."""
    if value is not None:
        args[key] = convert(value)


def _role_arg(value: RoleArg) -> dict[str, Any]:
    if isinstance(value, str):
        return {"role": value, "server": None}
    if isinstance(value, RoleAssignment):
        return {"role": value.role, "server": opt_str(value.server)}
    if isinstance(value, tuple) and len(value) == 2:
        role, server = value
        return {"role": role, "server": None if server is None else server_ref(server)}
    raise TypeError(f"a role must be a name, a RoleAssignment or (name, server), not {value!r}")


def fspath_opt(value: str | os.PathLike[str] | None) -> str | None:
    """A path argument as ``str``, or ``None``."""
    return None if value is None else os.fspath(value)


def user_name(name: str | None) -> str:
    """``name``, or this process's user name (the local administrator's default)."""
    if name is not None:
        return name
    import getpass

    return getpass.getuser()


def opt_text(value: object) -> str | None:
    """``str(value)`` of an address argument, or ``None``."""
    return None if value is None else _text(value, "source")


def opt_str(value: uuid.UUID | None) -> str | None:
    """``str(value)``, or ``None``."""
    return None if value is None else str(value)


# --- result conversion --------------------------------------------------------------------


def _list(parse: Callable[[Any], T]) -> Callable[[Any], tuple[T, ...]]:
    return lambda v: tuple(parse(x) for x in v)


def _none(_: Any) -> None:
    return None


# --- servers ------------------------------------------------------------------------------


def create_server(
    name: str,
    listen_port: int,
    *,
    interface: str | None = None,
    ipv6_pool: V6Network | None = None,
    ipv4_pool: V4Network | None = None,
    address_v6: V6Address | None = None,
    address_v4: V4Address | None = None,
    endpoint: str | None = None,
    dns: Iterable[DnsArg] | None = None,
    mtu: int | None = None,
    strategy: Strategy | None = None,
    fwmark: int | None = None,
    tunnel: TunnelMode | None = None,
    keepalive: int | None = None,
    delegation_pool: V6Network | None = None,
    delegation_len: int | None = None,
    quarantine_secs: int | None = None,
    host: str | None = None,
) -> Call[Server]:
    """Create a server (revision 1) and return it.

    Every server has an IPv6 pool (a random RFC 4193 /64 unless ``ipv6_pool`` is given);
    IPv4 is off unless ``ipv4_pool`` is given. The server takes the first address of each
    pool unless ``address_v6``/``address_v4`` say otherwise. ``interface`` defaults to
    the name; ``endpoint`` (``host:port``) is what clients dial; ``dns`` the resolvers
    (and search domains) given to clients; ``tunnel`` ``"full"`` (default) or ``"split"``;
    ``keepalive`` the clients' ``PersistentKeepalive``; ``delegation_pool`` and
    ``delegation_len`` let peers get a routed IPv6 prefix each; ``quarantine_secs`` how
    long a released address is held back; ``host`` assigns the server to the WireGuard
    host whose ``wgm-agent`` runs it. ``None`` leaves each at the library's default.

    Example::

        office = manager.create_server(
            admin, "office", 51820,
            ipv6_pool="fd00:1::/64", ipv4_pool="10.8.0.0/24",
            endpoint="vpn.example.org:51820",
        )
    """
    args: dict[str, Any] = {"name": name, "listen_port": _int(listen_port, "listen_port")}
    _opt(args, "interface", interface)
    _opt(args, "ipv6_pool", ipv6_pool, lambda v: _text(v, "ipv6_pool"))
    _opt(args, "ipv4_pool", ipv4_pool, lambda v: _text(v, "ipv4_pool"))
    _opt(args, "address_v6", address_v6, lambda v: _text(v, "address_v6"))
    _opt(args, "address_v4", address_v4, lambda v: _text(v, "address_v4"))
    _opt(args, "endpoint", endpoint)
    _opt(args, "dns", dns, lambda v: _texts(v, "dns"))
    _opt(args, "mtu", mtu)
    _opt(args, "strategy", strategy)
    _opt(args, "fwmark", fwmark)
    _opt(args, "tunnel", tunnel)
    _opt(args, "keepalive", keepalive)
    _opt(args, "delegation_pool", delegation_pool, lambda v: _text(v, "delegation_pool"))
    _opt(args, "delegation_len", delegation_len)
    _opt(args, "quarantine_secs", quarantine_secs)
    _opt(args, "host", host)
    return Call("server_create", args, Server._from_json)


def list_servers() -> Call[tuple[Server, ...]]:
    """All servers the principal may read, ordered by name."""
    return Call("server_list", {}, _list(Server._from_json))


def get_server(server: ServerRef) -> Call[Server]:
    """One server, by name, id or object (`wgm.NotFound` when there is none)."""
    return Call("server_get", {"server": server_ref(server)}, Server._from_json)


def update_server(
    server: ServerRef,
    *,
    name: str | Unset = UNSET,
    listen_port: int | Unset = UNSET,
    endpoint: str | None | Unset = UNSET,
    dns: Iterable[DnsArg] | Unset = UNSET,
    mtu: int | Unset = UNSET,
    fwmark: int | None | Unset = UNSET,
    strategy: Strategy | Unset = UNSET,
    tunnel: TunnelMode | Unset = UNSET,
    keepalive: int | Unset = UNSET,
    quarantine_secs: int | Unset = UNSET,
    active: bool | Unset = UNSET,
    host: str | None | Unset = UNSET,
) -> Call[Server]:
    """Change a server's settings in one revision and return it.

    Only the arguments given change; ``endpoint=None`` and ``fwmark=None`` clear those,
    ``dns=[]`` empties the list. ``name`` renames the server; ``keepalive`` is the
    clients' keepalive; ``active=False`` makes the next `apply` remove the live interface;
    ``host`` assigns the server to the host whose ``wgm-agent`` runs it (``None``
    unassigns it).

    Example::

        manager.update_server(admin, "office", endpoint="vpn.example.org:51820", mtu=1380)
    """
    args: dict[str, Any] = {"server": server_ref(server)}
    _put(args, "name", name)
    _put(args, "listen_port", listen_port)
    _put(args, "endpoint", endpoint)
    _put(args, "dns", dns, lambda v: _texts(v, "dns"))
    _put(args, "mtu", mtu)
    _put(args, "fwmark", fwmark)
    _put(args, "strategy", strategy)
    _put(args, "tunnel", tunnel)
    _put(args, "keepalive", keepalive)
    _put(args, "quarantine_secs", quarantine_secs)
    _put(args, "active", active)
    _put(args, "host", host)
    return Call("server_update", args, Server._from_json)


def delete_server(server: ServerRef) -> Call[int]:
    """Delete a server and its peers; return the deleting revision's number.

    The history is kept. A live interface is left alone: deactivate the server
    (``update_server(..., active=False)``) and `apply` first to take it down.
    """
    return Call("server_delete", {"server": server_ref(server)}, lambda v: int(v["revision"]))


def export_server(server: ServerRef) -> Call[ServerConfig]:
    """The server's own wg-quick file **with its private key** (an audited export).

    ``.text`` is the file; ``.write(path)`` saves it with mode 0600.
    """
    return Call(
        "server_export", {"server": server_ref(server)}, lambda v: ServerConfig(text=v["config"])
    )


def import_server(
    name: str,
    config: str | Config,
    *,
    interface: str | None = None,
    allow_hooks: bool = False,
) -> Call[Server]:
    """Create a server and all its peers from a wg-quick server file, in one revision.

    ``config`` is the file's text or a `wgm.wgquick.Config`. Keys are kept (sealed); the
    interface's addresses give the pools; peers' names come from ``# Name =`` comments.
    Hooks (``PostUp`` …) are refused unless ``allow_hooks``, which accepts and drops them.
    """
    if not isinstance(config, str):
        from . import wgquick

        config = wgquick.render(config)
    args: dict[str, Any] = {"name": name, "config": config, "allow_hooks": bool(allow_hooks)}
    _opt(args, "interface", interface)
    return Call("server_import", args, Server._from_json)


def rotate_server_key(server: ServerRef) -> Call[Server]:
    """Give the server a new key pair (every client then needs its config again)."""
    return Call("server_rotate_key", {"server": server_ref(server)}, Server._from_json)


def restore_server_key(server: ServerRef, revision: int) -> Call[Server]:
    """Bring back the key pair the server had at ``revision`` (audited).

    The one way to get an old key back: `rollback` never restores keys.
    """
    args = {"server": server_ref(server), "revision": _int(revision, "revision")}
    return Call("server_restore_key", args, Server._from_json)


# --- peers --------------------------------------------------------------------------------


def _new_peer(
    server: ServerRef,
    name: str,
    *,
    ipv6: V6Address,
    ipv4: V4Address | None,
    prefix: V6Network | None,
    public_key: str | None,
    allowed_ips: Iterable[Network] | None,
    keepalive: int | None,
    endpoint: str | None,
    expires_at: Time | None,
    owner: UserRef | None,
    description: str | None,
    preshared_key: bool,
) -> dict[str, Any]:
    args: dict[str, Any] = {
        "server": server_ref(server),
        "name": name,
        "ipv6": _text(ipv6, "ipv6"),
        "ipv4": "none" if ipv4 is None else _text(ipv4, "ipv4"),
        "prefix": "none" if prefix is None else _text(prefix, "prefix"),
        "preshared_key": bool(preshared_key),
    }
    _opt(args, "public_key", public_key)
    _opt(args, "allowed_ips", allowed_ips, lambda v: _texts(v, "allowed_ips"))
    _opt(args, "keepalive", keepalive)
    _opt(args, "endpoint", endpoint)
    _opt(args, "expires_at", expires_at, lambda v: time_arg(v, "peer.expires_at"))
    _opt(args, "owner", owner, user_ref)
    _opt(args, "description", description)
    return args


def add_peer(
    server: ServerRef,
    name: str,
    *,
    ipv6: V6Address = "auto",
    ipv4: V4Address | None = "auto",
    prefix: V6Network | None = None,
    public_key: str | None = None,
    allowed_ips: Iterable[Network] | None = None,
    keepalive: int | None = None,
    endpoint: str | None = None,
    expires_at: Time | None = None,
    owner: UserRef | None = None,
    description: str | None = None,
    preshared_key: bool = True,
) -> Call[Peer]:
    """Add one peer in one revision and return it.

    Addresses: ``ipv6`` is ``"auto"`` (allocate from the pool) or an address: every peer
    has one. ``ipv4`` is ``"auto"`` (allocate, when the server has an IPv4 pool), an
    address, or ``None`` for none. ``prefix`` (a delegated prefix) is ``"auto"``, a
    network, or ``None`` (the default) for none. wgm generates the key pair and a
    preshared key unless ``public_key`` is given (bring your own key: wgm never holds the
    private key) or ``preshared_key=False``.
    ``allowed_ips`` are extra networks routed to the peer (a site behind it);
    ``expires_at`` (an aware datetime, or a timedelta from now) disables it later;
    ``owner`` makes a user its owner.

    Raises `wgm.PoolExhausted` when no address is free, and `wgm.InvalidInput` naming
    the field (``peer.name``, ``peer.ipv6``, ``peer.public_key``, …) for a value refused
    or already held by another peer; nothing is written either way.

    Example::

        alice = manager.add_peer(admin, "office", "alice", expires_at=timedelta(days=30))
        print(alice.address_v6, alice.address_v4)

    To add many peers in one revision use `add_peers`.
    """
    args = _new_peer(
        server,
        name,
        ipv6=ipv6,
        ipv4=ipv4,
        prefix=prefix,
        public_key=public_key,
        allowed_ips=allowed_ips,
        keepalive=keepalive,
        endpoint=endpoint,
        expires_at=expires_at,
        owner=owner,
        description=description,
        preshared_key=preshared_key,
    )
    return Call("peer_add", args, lambda v: Peer._from_json(v[0]))


def add_peers(
    server: ServerRef,
    name: str,
    *,
    count: int,
    ipv4: V4Address | None = "auto",
    prefix: V6Network | None = None,
    keepalive: int | None = None,
    expires_at: Time | None = None,
    owner: UserRef | None = None,
    description: str | None = None,
    preshared_key: bool = True,
) -> Call[tuple[Peer, ...]]:
    """Add ``count`` peers named ``NAME-1`` … ``NAME-N`` in **one** revision.

    All or nothing: when the pool cannot hold them all, `wgm.PoolExhausted` is raised and
    none is added. The options are those of `add_peer` that may be the same for every
    peer (``ipv4`` may be ``"auto"`` or ``None``, ``prefix`` ``"auto"`` or ``None``).
    ``count`` is 1 to 100 000.

    Example::

        laptops = manager.add_peers(admin, "office", "laptop", count=50)
        assert [p.name for p in laptops][:2] == ["laptop-1", "laptop-2"]
    """
    args = _new_peer(
        server,
        name,
        ipv6="auto",
        ipv4=ipv4,
        prefix=prefix,
        public_key=None,
        allowed_ips=None,
        keepalive=keepalive,
        endpoint=None,
        expires_at=expires_at,
        owner=owner,
        description=description,
        preshared_key=preshared_key,
    )
    args["count"] = _int(count, "count")
    return Call("peer_add", args, _list(Peer._from_json))


def list_peers(server: ServerRef) -> Call[tuple[Peer, ...]]:
    """The server's peers the principal may read, ordered by name."""
    return Call("peer_list", {"server": server_ref(server)}, _list(Peer._from_json))


def get_peer(server: ServerRef, peer: PeerRef) -> Call[Peer]:
    """One peer, by name, id, public key or object."""
    args = {"server": server_ref(server), "peer": peer_ref(peer)}
    return Call("peer_get", args, Peer._from_json)


def update_peer(
    server: ServerRef,
    peer: PeerRef,
    *,
    name: str | Unset = UNSET,
    description: str | None | Unset = UNSET,
    allowed_ips: Iterable[Network] | None | Unset = UNSET,
    keepalive: int | Unset = UNSET,
    endpoint: str | None | Unset = UNSET,
    expires_at: Time | None | Unset = UNSET,
    owner: UserRef | None | Unset = UNSET,
) -> Call[Peer]:
    """Change a peer in one revision and return it.

    Only the arguments given change. ``None`` clears ``description``, ``allowed_ips``
    (the extra routed networks), ``endpoint`` and ``owner``; ``expires_at=None`` means
    never. ``name`` renames the peer.

    Example::

        manager.update_peer(admin, "office", "alice", description="Alice's laptop",
                            expires_at=None)
    """
    args: dict[str, Any] = {"server": server_ref(server), "peer": peer_ref(peer)}
    _put(args, "name", name)
    _put(args, "description", description)
    _put(args, "allowed_ips", allowed_ips, lambda v: _texts(v, "allowed_ips"))
    _put(args, "keepalive", keepalive)
    _put(args, "endpoint", endpoint)
    _put(args, "expires_at", expires_at, lambda v: time_arg(v, "peer.expires_at"))
    _put(args, "owner", owner, user_ref)
    return Call("peer_update", args, Peer._from_json)


def _set_enabled(server: ServerRef, peer: PeerRef, enabled: bool) -> Call[Peer]:
    args = {"server": server_ref(server), "peer": peer_ref(peer), "enabled": enabled}
    return Call("peer_set_enabled", args, Peer._from_json)


def enable_peer(server: ServerRef, peer: PeerRef) -> Call[Peer]:
    """Enable a disabled peer (the next apply puts it back on the device).

    A peer disabled by an administrator or by expiry can be enabled only by someone who
    may change other users' peers.
    """
    return _set_enabled(server, peer, True)


def disable_peer(server: ServerRef, peer: PeerRef) -> Call[Peer]:
    """Disable a peer: the next apply removes it from the device; keys and addresses stay."""
    return _set_enabled(server, peer, False)


def remove_peer(server: ServerRef, peer: PeerRef) -> Call[RemovedPeer]:
    """Delete a peer; its addresses are quarantined for the server's quarantine time."""
    args = {"server": server_ref(server), "peer": peer_ref(peer)}
    return Call("peer_remove", args, lambda v: RemovedPeer._from_json(v["removed"]))


def rotate_peer_key(server: ServerRef, peer: PeerRef) -> Call[Peer]:
    """Give the peer a new key pair (it needs its client config again)."""
    args = {"server": server_ref(server), "peer": peer_ref(peer)}
    return Call("peer_rotate_key", args, Peer._from_json)


def rotate_peer_psk(server: ServerRef, peer: PeerRef) -> Call[Peer]:
    """Give the peer a new preshared key (it needs its client config again)."""
    args = {"server": server_ref(server), "peer": peer_ref(peer)}
    return Call("peer_rotate_psk", args, Peer._from_json)


def restore_peer_keys(server: ServerRef, peer: PeerRef, revision: int) -> Call[Peer]:
    """Bring back the key pair and PSK the peer had at ``revision`` (audited)."""
    args = {
        "server": server_ref(server),
        "peer": peer_ref(peer),
        "revision": _int(revision, "revision"),
    }
    return Call("peer_restore_keys", args, Peer._from_json)


def client_config(server: ServerRef, peer: PeerRef) -> Call[ClientConfig]:
    """The peer's client wg-quick file, **with its private key and PSK** (audited).

    Example::

        cfg = manager.client_config(admin, "office", "alice")
        cfg.write("/tmp/alice.conf")      # mode 0600; print(cfg) shows no key
    """
    args = {"server": server_ref(server), "peer": peer_ref(peer)}
    return Call("peer_config", args, ClientConfig._from_json)


def client_qr(server: ServerRef, peer: PeerRef, *, format: str = "svg") -> Call[bytes]:
    """The client config as a QR code for the WireGuard mobile apps (audited).

    ``format`` is ``"svg"`` (an SVG document) or ``"png"``; returns the file's bytes.
    """
    args = {"server": server_ref(server), "peer": peer_ref(peer), "format": format}
    return Call("peer_qr", args, lambda v: base64.b64decode(v["data_base64"]))


def sweep_expired_peers() -> Call[int]:
    """Disable every peer whose expiry has passed; return how many were disabled."""
    return Call("peer_sweep_expired", {}, lambda v: int(v["disabled"]))


# --- history and audit --------------------------------------------------------------------


def history(
    server: ServerRef, *, after: int | None = None, limit: int | None = None
) -> Call[tuple[Revision, ...]]:
    """The server's revisions, oldest first (those after ``after``, at most ``limit``)."""
    args: dict[str, Any] = {"server": server_ref(server)}
    _opt(args, "after", after)
    _opt(args, "limit", limit)
    return Call("history", args, _list(Revision._from_json))


def diff(
    server: ServerRef, from_revision: int, to_revision: int | None = None
) -> Call[tuple[DiffEntry, ...]]:
    """What changed between two revisions (``to_revision`` defaults to the head).

    Example::

        for d in manager.diff(admin, "office", 1, 3):
            print(d.kind, d.object, dict(d.fields))
    """
    args: dict[str, Any] = {"server": server_ref(server), "from": _int(from_revision, "from")}
    _opt(args, "to", to_revision)
    return Call("diff", args, _list(DiffEntry._from_json))


def rollback(server: ServerRef, revision: int) -> Call[Revision]:
    """Restore the configuration of ``revision`` as a new revision, and return that.

    Keys are never restored (see `restore_server_key`, `restore_peer_keys`); what is
    restored is checked as new input. Apply afterwards to make it live.
    """
    args = {"server": server_ref(server), "revision": _int(revision, "revision")}
    return Call("rollback", args, _rollback_result)


def _rollback_result(v: Any) -> Revision:
    # Either the revision itself or the CLI's {"restored", "revision": …} wrapper.
    if isinstance(v, dict) and "revision" in v and isinstance(v["revision"], dict):
        v = v["revision"]
    return Revision._from_json(v)


def query_audit(
    *,
    actor: str | None = None,
    server: ServerRef | None = None,
    object_prefix: str | None = None,
    since: Time | None = None,
    until: Time | None = None,
    after_seq: int | None = None,
    limit: int | None = None,
) -> Call[tuple[AuditRecord, ...]]:
    """Audit records, oldest first, filtered by actor label (``user:alice``), server,
    object path prefix, time (aware datetimes; a timedelta or a duration such as
    ``"1h"`` counts back from now), and paged by ``after_seq``/``limit``.
    """
    args: dict[str, Any] = {}
    _opt(args, "actor", actor)
    _opt(args, "server", server, server_ref)
    _opt(args, "object_prefix", object_prefix)
    _opt(args, "since", since, lambda v: time_arg(_ago(v), "since"))
    _opt(args, "until", until, lambda v: time_arg(_ago(v), "until"))
    _opt(args, "after_seq", after_seq)
    _opt(args, "limit", limit)
    return Call("audit_query", args, _list(AuditRecord._from_json))


def _ago(value: Time) -> Time:
    # A timedelta or duration text counts back from now (the library reads a duration
    # given for since/until as "ago").
    return -value if isinstance(value, _dt.timedelta) else value


def verify_audit(*, head: str | None = None) -> Call[AuditVerification]:
    """Verify the whole audit chain; raise `wgm.Conflict` naming the first bad record.

    ``head`` (``SEQ:HASH`` from an earlier verification, kept outside the store) must
    still be in the chain with that link, which catches a rewritten log.
    """
    args: dict[str, Any] = {}
    _opt(args, "head", head)
    return Call("audit_verify", args, AuditVerification._from_json)


# --- users, roles, tokens -----------------------------------------------------------------


def create_user(
    name: str,
    *,
    role: str = "user",
    server: ServerRef | None = None,
    password: str | None = None,
    email: str | None = None,
    peer_quota: int | None = None,
) -> Call[User]:
    """Create a user holding ``role`` (``admin``, ``operator``, ``auditor``, ``user`` or a
    custom role), everywhere or only on ``server``. You cannot give a role you do not
    hold yourself. Without a ``password`` the user can only use API tokens.

    Example::

        bob = manager.create_user(admin, "bob", password="correct horse battery")
    """
    args: dict[str, Any] = {"name": name, "role": role}
    _opt(args, "server", server, server_ref)
    _opt(args, "password", password)
    _opt(args, "email", email)
    _opt(args, "peer_quota", peer_quota)
    return Call("user_create", args, User._from_json)


def list_users() -> Call[tuple[User, ...]]:
    """All users."""
    return Call("user_list", {}, _list(User._from_json))


def get_user(user: UserRef) -> Call[User]:
    """One user, by name, id or object."""
    return Call("user_get", {"user": user_ref(user)}, User._from_json)


def update_user(
    user: UserRef,
    *,
    email: str | None | Unset = UNSET,
    roles: Iterable[RoleArg] | Unset = UNSET,
    active: bool | Unset = UNSET,
    peer_quota: int | None | Unset = UNSET,
) -> Call[User]:
    """Change a user. ``roles`` replaces every role (names, `RoleAssignment`s or
    ``(role, server)`` pairs); ``active=False`` disables the account; ``email=None``
    clears it; ``peer_quota=None`` falls back to the roles' quota.

    Example::

        manager.update_user(admin, "bob", roles=["user", ("operator", "office")])
    """
    args: dict[str, Any] = {"user": user_ref(user)}
    _put(args, "email", email)
    _put(args, "roles", roles, lambda v: [_role_arg(r) for r in v])
    _put(args, "active", active)
    _put(args, "peer_quota", peer_quota)
    return Call("user_update", args, User._from_json)


def set_password(user: UserRef, password: str, *, current: str | None = None) -> Call[None]:
    """Set a user's password; a user changing their own gives the ``current`` one."""
    args: dict[str, Any] = {"user": user_ref(user), "password": password}
    _opt(args, "current", current)
    return Call("user_set_password", args, _none)


def delete_user(user: UserRef) -> Call[None]:
    """Delete a user (never the last administrator)."""
    return Call("user_delete", {"user": user_ref(user)}, _none)


def enroll_totp(user: UserRef, *, issuer: str = "wgm") -> Call[TotpEnrollment]:
    """Start TOTP enrolment: returns the ``otpauth://`` URI for the user's app."""
    args = {"user": user_ref(user), "issuer": issuer}
    return Call("user_enroll_totp", args, lambda v: TotpEnrollment(uri=v["uri"]))


def confirm_totp(user: UserRef, code: str) -> Call[None]:
    """Confirm TOTP enrolment with a current ``code``; logins then need one."""
    return Call("user_confirm_totp", {"user": user_ref(user), "code": code}, _none)


def list_roles() -> Call[tuple[Role, ...]]:
    """Every role, built-in and custom."""
    return Call("role_list", {}, _list(Role._from_json))


def put_role(
    name: str,
    permissions: Iterable[str],
    *,
    description: str | None = None,
    peer_quota: int | None = None,
) -> Call[Role]:
    """Create or replace a custom role from permissions in text form.

    A permission is ``resource:action``, then ``:own`` for the holder's own objects only,
    then ``@server:NAME-or-ID`` for one server. ``peer_quota`` limits how many peers a
    holder may own through the role.

    Example::

        manager.put_role(admin, "helpdesk", ["peer:read", "peer:update:own"])
    """
    if isinstance(permissions, str):
        raise TypeError("permissions must be a list of str, not a single str")
    args: dict[str, Any] = {"name": name, "permissions": list(permissions)}
    _opt(args, "description", description)
    _opt(args, "peer_quota", peer_quota)
    return Call("role_put", args, Role._from_json)


def delete_role(name: str) -> Call[None]:
    """Delete a custom role."""
    return Call("role_delete", {"name": name}, _none)


def create_token(
    name: str,
    *,
    user: UserRef | None = None,
    scopes: Iterable[str] | None = None,
    expires_at: Time | None = None,
) -> Call[NewToken]:
    """Create an API token for ``user`` (default: the caller).

    ``scopes`` (permissions in text form) narrow what the token may do within what the
    user holds. The plaintext is in ``.secret`` of the result, this once.
    """
    args: dict[str, Any] = {"name": name}
    _opt(args, "user", user, user_ref)
    if scopes is not None:
        if isinstance(scopes, str):
            raise TypeError("scopes must be a list of str, not a single str")
        args["scopes"] = list(scopes)
    _opt(args, "expires_at", expires_at, lambda v: time_arg(v, "token.expires_at"))
    return Call(
        "token_create",
        args,
        lambda v: NewToken(token=Token._from_json(v["token"]), secret=v["secret"]),
    )


def list_tokens(*, user: UserRef | None = None) -> Call[tuple[Token, ...]]:
    """API tokens (never their secrets), of one user or of everyone."""
    args: dict[str, Any] = {}
    _opt(args, "user", user, user_ref)
    return Call("token_list", args, _list(Token._from_json))


def revoke_token(token: TokenRef) -> Call[None]:
    """Revoke an API token (by id or object): it stops working at once."""
    if isinstance(token, Token):
        token = token.id
    if not isinstance(token, (str, uuid.UUID)):
        raise TypeError(f"token must be an id or a Token, not {type(token).__name__}")
    return Call("token_revoke", {"token": str(token)}, _none)


# --- live ---------------------------------------------------------------------------------


def _live(server: ServerRef, backend: Backend, host: str | None) -> dict[str, Any]:
    args: dict[str, Any] = {"server": server_ref(server), "backend": backend}
    _opt(args, "host", host)
    return args


def plan(server: ServerRef, *, backend: Backend = "auto", host: str | None = None) -> Call[Plan]:
    """What `apply` would change on this host's live interface (reads only).

    ``backend``: ``"kernel"`` (Linux WireGuard over netlink), ``"userspace"``
    (wireguard-go over its UAPI socket) or ``"auto"`` (the kernel's when it has
    WireGuard). ``host`` names this host in the store (default: the host name).
    """
    return Call("plan", _live(server, backend, host), Plan._from_json)


def apply(
    server: ServerRef,
    *,
    backend: Backend = "auto",
    host: str | None = None,
    dry_run: bool = False,
    remove_unmanaged: bool = False,
    full_resync: bool = False,
    verify: bool = False,
) -> Call[ApplyReport]:
    """Make the live interface match the head revision, incrementally, and verify it.

    Returns the report; check ``report.converged`` (it is false, with ``remaining`` and
    ``errors`` set, when the device did not take everything). ``dry_run`` plans only;
    ``remove_unmanaged`` removes peers the store never knew; ``full_resync`` replaces
    every peer (resets tunnels; for repairs); ``verify`` reads the device back in full.
    Needs root (``CAP_NET_ADMIN``). Backends are kept by the manager, so a long-lived
    process applies incrementally.

    Example::

        report = manager.apply(admin, "office", backend="userspace")
        assert report.converged, report.errors
    """
    args = _live(server, backend, host)
    args.update(
        dry_run=bool(dry_run),
        remove_unmanaged=bool(remove_unmanaged),
        full_resync=bool(full_resync),
        verify=bool(verify),
    )
    return Call("apply", args, ApplyReport._from_json)


def status(
    server: ServerRef, *, backend: Backend = "auto", host: str | None = None
) -> Call[Status]:
    """The live interface: each peer's endpoint, latest handshake and transfer, and the
    enabled peers missing from it. A ``user`` sees only their own peers."""
    return Call("status", _live(server, backend, host), Status._from_json)


def reconcile(
    server: ServerRef,
    *,
    backend: Backend = "auto",
    host: str | None = None,
    remove_unmanaged: bool = False,
) -> Call[ReconcileReport]:
    """One pass of ``wgm reconcile``: disable expired peers (when the principal may),
    then apply, repairing drift.

    Changes made behind wgm's back (``wg set``, a deleted link) are reverted; unknown
    peers are reported, or removed with ``remove_unmanaged``. Call it on a timer with
    the same manager: between passes it keeps what it verified.
    """
    args = _live(server, backend, host)
    args["remove_unmanaged"] = bool(remove_unmanaged)
    return Call("reconcile", args, ReconcileReport._from_json)


# --- the facades' methods -----------------------------------------------------------------


def describe(method: Callable[..., Any], build: Callable[..., Any], module: str) -> None:
    """Give the facade ``method`` made from ``build`` its name, docs and signature.

    ``help(manager.add_peer)`` and ``inspect.signature`` then show the method as if it
    were written out: ``(self, principal, server, name, *, ipv6='auto', …) -> Peer``.
    """
    import inspect

    method.__name__ = build.__name__
    method.__qualname__ = f"Manager.{build.__name__}"
    method.__module__ = module
    method.__doc__ = build.__doc__
    sig = inspect.signature(build)
    ret = sig.return_annotation
    if isinstance(ret, str) and ret.startswith("Call[") and ret.endswith("]"):
        ret = ret[len("Call[") : -1]
    positional = inspect.Parameter.POSITIONAL_ONLY
    params = [
        inspect.Parameter("self", positional),
        inspect.Parameter("principal", positional, annotation="Principal"),
        *sig.parameters.values(),
    ]
    method.__signature__ = sig.replace(parameters=params, return_annotation=ret)  # type: ignore[attr-defined]
