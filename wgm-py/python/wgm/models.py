"""The objects wgm returns: immutable, comparable, printable and convertible to dicts.

Every type here is a frozen dataclass (slotted on Python 3.10+): attributes are typed
(`uuid.UUID` ids, `ipaddress` addresses and networks, aware `datetime.datetime` times in
UTC, base64 `str` public keys), ``==`` compares every field, and ``to_dict()`` gives a
JSON-compatible dict. No private key, preshared key or token plaintext appears in the
``repr``, ``str`` or ``to_dict()`` of anything; the few objects that carry one
(`ClientConfig`, `ServerConfig`, `NewToken`, `TotpEnrollment`) show it as ``<redacted>``
and hand it out only through an attribute.

You do not build these yourself: the `wgm.Manager` methods return them.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, Union

from ._model import (
    IPAddress,
    IPInterface,
    IPNetwork,
    Model,
    frozen_map,
    model,
    opt,
    parse_dns,
    parse_iface,
    parse_net,
    parse_time,
    parse_uuid,
    parse_v4,
    parse_v6,
    secret,
)

if TYPE_CHECKING:
    from .wgquick import Config

__all__ = [
    "Model",
    "IPAddress",
    "IPNetwork",
    "IPInterface",
    "DnsEntry",
    "Strategy",
    "TunnelMode",
    "Backend",
    "Delegation",
    "ClientTemplate",
    "Server",
    "PeerStats",
    "Peer",
    "RemovedPeer",
    "ClientConfig",
    "ServerConfig",
    "Actor",
    "Change",
    "Revision",
    "DiffEntry",
    "AuditRecord",
    "AuditVerification",
    "RoleAssignment",
    "User",
    "Role",
    "Token",
    "NewToken",
    "TotpEnrollment",
    "PlanItem",
    "Plan",
    "ItemResult",
    "ApplyReport",
    "ReconcileReport",
    "PeerStatus",
    "Status",
]

Strategy = Literal["sequential", "random"]
"""How a server allocates addresses: in order, or at random within the pool."""
TunnelMode = Literal["full", "split"]
"""What client configs route through the tunnel: everything, or the server's networks."""
Backend = Literal["auto", "kernel", "userspace"]
"""The WireGuard implementation of a live device (see `wgm.Manager.apply`)."""

DnsEntry = Union[IPAddress, str]


def _tuple_of(parse: Any, values: Any) -> tuple[Any, ...]:
    return tuple(parse(v) for v in values or ())


# --- servers ------------------------------------------------------------------------------


@model
class Delegation(Model):
    """Prefix delegation of a server: peers may get a ``prefix_len`` prefix of ``pool``."""

    pool: ipaddress.IPv6Network
    prefix_len: int

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> Delegation:
        return cls(pool=ipaddress.IPv6Network(d["pool"]), prefix_len=int(d["prefix_len"]))


@model
class ClientTemplate(Model):
    """Defaults of every client config a server renders.

    ``dns``/``mtu`` of ``None`` mean "the server's own".
    """

    tunnel: TunnelMode
    extra_allowed_ips: tuple[IPNetwork, ...]
    keepalive: int
    dns: tuple[DnsEntry, ...] | None
    mtu: int | None

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> ClientTemplate:
        return cls(
            tunnel=d["tunnel"],
            extra_allowed_ips=_tuple_of(parse_net, d.get("extra_allowed_ips")),
            keepalive=int(d["keepalive"]),
            dns=opt(lambda v: _tuple_of(parse_dns, v), d.get("dns")),
            mtu=d.get("mtu"),
        )


@model
class Server(Model):
    """A WireGuard server (one interface) as the store holds it, without its key.

    Pass the object itself wherever a server is expected: ``manager.list_peers(p, server)``.
    """

    id: uuid.UUID
    name: str
    interface: str
    listen_port: int
    public_key: str
    ipv6_pool: ipaddress.IPv6Network
    ipv4_pool: ipaddress.IPv4Network | None
    address_v6: ipaddress.IPv6Address
    address_v4: ipaddress.IPv4Address | None
    delegation: Delegation | None
    strategy: Strategy
    quarantine_secs: int
    dns: tuple[DnsEntry, ...]
    mtu: int
    fwmark: int | None
    endpoint: str | None
    client_template: ClientTemplate
    config_path: str | None
    active: bool
    host: str | None
    peer_count: int
    revision: int
    created_at: _dt.datetime
    updated_at: _dt.datetime

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> Server:
        return cls(
            id=parse_uuid(d["id"]),
            name=d["name"],
            interface=d["interface"],
            listen_port=int(d["listen_port"]),
            public_key=d["public_key"],
            ipv6_pool=ipaddress.IPv6Network(d["ipv6_pool"]),
            ipv4_pool=opt(ipaddress.IPv4Network, d.get("ipv4_pool")),
            address_v6=parse_v6(d["address_v6"]),
            address_v4=opt(parse_v4, d.get("address_v4")),
            delegation=opt(Delegation._from_json, d.get("delegation")),
            strategy=d["strategy"],
            quarantine_secs=int(d["quarantine_secs"]),
            dns=_tuple_of(parse_dns, d.get("dns")),
            mtu=int(d["mtu"]),
            fwmark=d.get("fwmark"),
            endpoint=d.get("endpoint"),
            client_template=ClientTemplate._from_json(d["client_template"]),
            config_path=d.get("config_path"),
            host=d.get("host"),
            active=bool(d["active"]),
            peer_count=int(d["peer_count"]),
            revision=int(d["revision"]),
            created_at=parse_time(d["created_at"]),
            updated_at=parse_time(d["updated_at"]),
        )


# --- peers --------------------------------------------------------------------------------


@model
class PeerStats(Model):
    """What `wgm.Manager.status` last observed of a peer on the live device."""

    last_seen: _dt.datetime | None
    rx_bytes: int
    tx_bytes: int

    @classmethod
    def _from_json(cls, d: Mapping[str, Any] | None) -> PeerStats:
        d = d or {}
        return cls(
            last_seen=opt(parse_time, d.get("last_seen")),
            rx_bytes=int(d.get("rx_bytes", 0)),
            tx_bytes=int(d.get("tx_bytes", 0)),
        )


@model
class Peer(Model):
    """A peer (client) of a server, without its keys.

    ``has_private_key`` says whether wgm holds (sealed) the peer's private key, i.e.
    whether `wgm.Manager.client_config` can render a complete config; it is ``False`` for
    a peer added with its own ``public_key``. ``disabled_by`` is ``"owner"``,
    ``"administrator"`` or ``"expiry"`` while the peer is disabled.
    """

    id: uuid.UUID
    server_id: uuid.UUID
    name: str
    description: str | None
    owner: uuid.UUID | None
    public_key: str
    has_private_key: bool
    has_preshared_key: bool
    address_v6: ipaddress.IPv6Address | None
    address_v4: ipaddress.IPv4Address | None
    delegated_prefix: ipaddress.IPv6Network | None
    extra_allowed_ips: tuple[IPNetwork, ...]
    allowed_ips: tuple[IPNetwork, ...]
    client_allowed_ips: tuple[IPNetwork, ...] | None
    endpoint: str | None
    keepalive: int
    enabled: bool
    disabled_by: str | None
    expires_at: _dt.datetime | None
    stats: PeerStats
    created_at: _dt.datetime
    updated_at: _dt.datetime

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> Peer:
        return cls(
            id=parse_uuid(d["id"]),
            server_id=parse_uuid(d["server_id"]),
            name=d["name"],
            description=d.get("description"),
            owner=opt(parse_uuid, d.get("owner")),
            public_key=d["public_key"],
            has_private_key=bool(d["has_private_key"]),
            has_preshared_key=bool(d["has_preshared_key"]),
            address_v6=opt(parse_v6, d.get("address_v6")),
            address_v4=opt(parse_v4, d.get("address_v4")),
            delegated_prefix=opt(ipaddress.IPv6Network, d.get("delegated_prefix")),
            extra_allowed_ips=_tuple_of(parse_net, d.get("extra_allowed_ips")),
            allowed_ips=_tuple_of(parse_net, d.get("allowed_ips")),
            client_allowed_ips=opt(lambda v: _tuple_of(parse_net, v), d.get("client_allowed_ips")),
            endpoint=d.get("endpoint"),
            keepalive=int(d["keepalive"]),
            enabled=bool(d["enabled"]),
            disabled_by=d.get("disabled_by"),
            expires_at=opt(parse_time, d.get("expires_at")),
            stats=PeerStats._from_json(d.get("stats")),
            created_at=parse_time(d["created_at"]),
            updated_at=parse_time(d["updated_at"]),
        )


@model
class RemovedPeer(Model):
    """What `wgm.Manager.remove_peer` removed."""

    id: uuid.UUID
    server_id: uuid.UUID
    name: str

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> RemovedPeer:
        return cls(id=parse_uuid(d["id"]), server_id=parse_uuid(d["server_id"]), name=d["name"])


class _ConfigText(Model):
    """A wg-quick file holding a private key: ``text`` is the file, the repr hides it."""

    __slots__ = ()
    text: str

    def parse(self) -> Config:
        """The file as a typed `wgm.wgquick.Config` (its keys hidden from ``repr``)."""
        from . import wgquick

        return wgquick.parse(self.text)

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the file to ``path`` with mode ``0600``, atomically.

        A temporary file in the same directory is written, flushed and renamed over
        ``path``, so readers never see half a file and the key is never world-readable.
        """
        import tempfile

        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".wgm-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise


@model
class ClientConfig(_ConfigText):
    """A peer's client wg-quick file, with its private key and PSK (an audited export).

    ``text`` is the file; ``repr``/``str``/``to_dict()`` never show it. ``complete`` is
    false for a peer that brought its own key (the file then has no ``PrivateKey``)::

        cfg = manager.client_config(admin, "office", "alice")
        cfg.write("alice.conf")   # mode 0600
        print(cfg)                # ClientConfig(peer=Peer(...), complete=True, text=<redacted>)
    """

    peer: Peer
    complete: bool
    text: str = secret()

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> ClientConfig:
        return cls(peer=Peer._from_json(d["peer"]), complete=bool(d["complete"]), text=d["config"])


@model
class ServerConfig(_ConfigText):
    """A server's own wg-quick file, with its private key (an audited export)."""

    text: str = secret()


# --- history and audit --------------------------------------------------------------------


@model
class Actor(Model):
    """Who did something: ``label`` is ``local:root``, ``user:alice``, ``user:alice token:ID``."""

    user_id: uuid.UUID | None
    label: str

    def __str__(self) -> str:
        return self.label

    @classmethod
    def _from_json(cls, d: Any) -> Actor:
        if isinstance(d, str):
            return cls(user_id=None, label=d)
        return cls(user_id=opt(parse_uuid, d.get("user_id")), label=d["label"])


@model
class Change(Model):
    """One change of a revision: ``kind`` (``peer_added``, ``server_updated``, …), the
    ``object`` kind (``"server"`` or ``"peer"``), its ``name`` and ``id``."""

    kind: str
    object: str
    name: str
    id: uuid.UUID | None

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> Change:
        if "object" in d:  # the summarised form
            return cls(
                kind=d["kind"],
                object=d["object"],
                name=d.get("name", ""),
                id=opt(parse_uuid, d.get("id") or None),
            )
        # The library's typed change: {"kind", "server" | "peer" | "before"/"after"}.
        kind = d["kind"]
        obj = d.get("after") or d.get("server") or d.get("peer") or {}
        return cls(
            kind=kind,
            object="server" if kind.startswith("server") else "peer",
            name=obj.get("name", ""),
            id=opt(parse_uuid, obj.get("id")),
        )


@model
class Revision(Model):
    """One committed revision of a server (creation is revision 1).

    ``author`` is the actor's label (``local:root``, ``user:alice``, …); ``changes`` name
    what changed, never a sealed value.
    """

    revision: int
    at: _dt.datetime
    author: str
    summary: str
    changes: tuple[Change, ...]

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> Revision:
        author = d["author"]
        return cls(
            revision=int(d["revision"]),
            at=parse_time(d["at"]),
            author=author if isinstance(author, str) else author["label"],
            summary=d["summary"],
            changes=_tuple_of(Change._from_json, d.get("changes")),
        )


@model
class DiffEntry(Model):
    """One difference between two revisions.

    ``kind`` is ``"server"``, ``"peer_added"``, ``"peer_removed"`` or ``"peer_changed"``;
    ``object`` the object's name; ``fields`` maps each changed field to its
    ``(before, after)`` JSON values (secrets only as ``"<changed>"``).
    """

    kind: str
    object: str
    fields: Mapping[str, tuple[Any, Any]]

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> DiffEntry:
        fields = {k: (v[0], v[1]) for k, v in (d.get("fields") or {}).items()}
        return cls(kind=d["kind"], object=d["object"], fields=frozen_map(fields))


@model
class AuditRecord(Model):
    """One record of the audit log, chained to the one before by ``prev_hash``.

    ``action`` is ``resource.verb`` (``peer.add``, ``secret.export``, …), ``object`` a
    path (``server/ID/peer/ID``), ``outcome`` ``"success"``, ``"denied"`` or ``"failed"``.
    """

    seq: int
    at: _dt.datetime
    actor: Actor
    action: str
    object: str
    server_id: uuid.UUID | None
    revision: int | None
    outcome: str
    details: Mapping[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> AuditRecord:
        e = d["entry"]
        details = e.get("details")
        return cls(
            seq=int(d["seq"]),
            at=parse_time(e["at"]),
            actor=Actor._from_json(e["actor"]),
            action=e["action"],
            object=e["object"],
            server_id=opt(parse_uuid, e.get("server_id")),
            revision=e.get("revision"),
            outcome=e["outcome"],
            details=frozen_map(details if isinstance(details, dict) else {}),
            prev_hash=d["prev_hash"],
            hash=d["hash"],
        )


@model
class AuditVerification(Model):
    """The result of verifying the audit chain.

    Keep ``head`` (``SEQ:HASH``) outside the store and pass it to a later
    `wgm.Manager.verify_audit` to catch a rewritten log.
    """

    records: int
    legacy_records: int
    head_seq: int
    head_hash: str
    head: str

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> AuditVerification:
        return cls(
            records=int(d["records"]),
            legacy_records=int(d["legacy_records"]),
            head_seq=int(d["head_seq"]),
            head_hash=d["head_hash"],
            head=d["head"],
        )


# --- users, roles, tokens -----------------------------------------------------------------


def _permission_text(p: Any) -> str:
    """A permission in its text form (``peer:read:own@server:ID``)."""
    if isinstance(p, str):
        return p
    text = f"{p['resource']}:{p['action']}"
    if p.get("own_only"):
        text += ":own"
    scope = p.get("scope", "global")
    if isinstance(scope, Mapping) and "server" in scope:
        text += f"@server:{scope['server']}"
    return text


@model
class RoleAssignment(Model):
    """A role held by a user, everywhere (``server is None``) or on one server.

    Build one to pass to `wgm.Manager.update_user`::

        RoleAssignment("operator", server=office.id)
    """

    role: str
    server: uuid.UUID | None = None

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> RoleAssignment:
        scope = d.get("scope", "global")
        server = scope.get("server") if isinstance(scope, Mapping) else None
        return cls(role=d["role"], server=opt(parse_uuid, server))


@model
class User(Model):
    """A user account (no password hash, no TOTP secret)."""

    id: uuid.UUID
    name: str
    email: str | None
    active: bool
    roles: tuple[RoleAssignment, ...]
    has_password: bool
    totp: bool
    peer_quota: int | None
    last_login: _dt.datetime | None
    created_at: _dt.datetime

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> User:
        return cls(
            id=parse_uuid(d["id"]),
            name=d["name"],
            email=d.get("email"),
            active=bool(d["active"]),
            roles=_tuple_of(RoleAssignment._from_json, d.get("roles")),
            has_password=bool(d["has_password"]),
            totp=bool(d["totp"]),
            peer_quota=d.get("peer_quota"),
            last_login=opt(parse_time, d.get("last_login")),
            created_at=parse_time(d["created_at"]),
        )


@model
class Role(Model):
    """A named set of permissions, each in text form (``peer:update:own``)."""

    name: str
    description: str
    permissions: tuple[str, ...]
    builtin: bool
    peer_quota: int | None

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> Role:
        return cls(
            name=d["name"],
            description=d.get("description") or "",
            permissions=_tuple_of(_permission_text, d.get("permissions")),
            builtin=bool(d.get("builtin", False)),
            peer_quota=d.get("peer_quota"),
        )


@model
class Token(Model):
    """An API token (never its secret). ``scopes`` of ``None``: everything the user holds."""

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    scopes: tuple[str, ...] | None
    created_at: _dt.datetime
    expires_at: _dt.datetime | None
    revoked: bool

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> Token:
        return cls(
            id=parse_uuid(d["id"]),
            user_id=parse_uuid(d["user_id"]),
            name=d["name"],
            scopes=opt(lambda v: _tuple_of(_permission_text, v), d.get("scopes")),
            created_at=parse_time(d["created_at"]),
            expires_at=opt(parse_time, d.get("expires_at")),
            revoked=bool(d["revoked"]),
        )


@model
class NewToken(Model):
    """A token just created: ``secret`` is its plaintext, shown this once.

    The store keeps only a hash, so save ``secret`` now; the ``repr`` hides it::

        new = manager.create_token(admin, "ci", user="alice")
        principal = manager.authenticate_token(new.secret)
    """

    token: Token
    secret: str = secret()


@model
class TotpEnrollment(Model):
    """A TOTP enrolment: ``uri`` (``otpauth://…``, holding the seed) for the user's app.

    Confirm it with `wgm.Manager.confirm_totp` and a code from the app.
    """

    uri: str = secret()


# --- live ---------------------------------------------------------------------------------

_REPORT_ONLY = ("unresolved_endpoint",)


@model
class PlanItem(Model):
    """One step of a plan. ``op`` says which; the other fields are set where it has them:

    ==========================================  ===========================================
    ``op``                                      fields
    ==========================================  ===========================================
    ``create_device``, ``delete_device``,
    ``set_up``                                  —
    ``set_key``                                 ``public_key``
    ``set_listen_port``, ``set_fwmark``,
    ``set_mtu``                                 ``from_``, ``to`` (0 = unset)
    ``add_peer``                                ``name``, ``public_key``
    ``update_peer``                             ``name``, ``public_key``, ``changes``
    ``remove_peer``                             ``name`` (or ``None``), ``public_key``
    ``unmanaged``                               ``public_key``, ``remove``
    ``add_address``, ``remove_address``         ``address``
    ``add_route``, ``remove_route``             ``route``
    ``unresolved_endpoint``                     ``name``
    ==========================================  ===========================================

    ``changes`` are texts such as ``"+allowed fd00::5/128"`` or ``"keepalive 0 -> 25"``
    (``"preshared key"`` for a PSK, never its value).
    """

    op: str
    name: str | None = None
    public_key: str | None = None
    from_: int | None = None
    to: int | None = None
    changes: tuple[str, ...] = ()
    remove: bool | None = None
    address: IPInterface | None = None
    route: IPNetwork | None = None

    @property
    def is_report_only(self) -> bool:
        """Whether the item only informs (nothing to execute)."""
        return self.op in _REPORT_ONLY or (self.op == "unmanaged" and not self.remove)

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> PlanItem:
        return cls(
            op=d["op"],
            name=d.get("name"),
            public_key=d.get("public_key"),
            from_=d.get("from"),
            to=d.get("to"),
            changes=tuple(d.get("changes") or ()),
            remove=d.get("remove"),
            address=opt(parse_iface, d.get("address")),
            route=opt(parse_net, d.get("route")),
        )


@model
class Plan(Model):
    """What an apply would change on the live interface, item by item.

    An empty plan (`is_empty`) means the device already holds the head ``revision``.
    """

    interface: str
    revision: int
    items: tuple[PlanItem, ...]

    @property
    def is_empty(self) -> bool:
        """Whether nothing is to be executed (only report-only items, or none)."""
        return all(i.is_report_only for i in self.items)

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> Plan:
        return cls(
            interface=d["interface"],
            revision=int(d["revision"]),
            items=_tuple_of(PlanItem._from_json, d.get("items")),
        )


@model
class ItemResult(Model):
    """Whether one executed plan item succeeded."""

    item: PlanItem
    ok: bool

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> ItemResult:
        return cls(item=PlanItem._from_json(d["item"]), ok=bool(d["ok"]))


@model
class ApplyReport(Model):
    """What an apply did.

    ``converged`` is true when the device holds the head revision (which is then
    recorded as applied on the host); otherwise ``remaining`` lists what is left and
    ``errors`` why. ``executed`` is false for a dry run; ``read_back`` says whether the
    device was read back in full or its acknowledgement was the proof.
    """

    plan: Plan
    executed: bool
    results: tuple[ItemResult, ...]
    errors: tuple[str, ...]
    converged: bool
    remaining: tuple[PlanItem, ...]
    read_back: bool

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> ApplyReport:
        return cls(
            plan=Plan._from_json(d["plan"]),
            executed=bool(d["executed"]),
            results=_tuple_of(ItemResult._from_json, d.get("results")),
            errors=tuple(str(e) for e in d.get("errors") or ()),
            converged=bool(d["converged"]),
            remaining=_tuple_of(PlanItem._from_json, d.get("remaining")),
            read_back=bool(d.get("read_back", False)),
        )


@model
class ReconcileReport(ApplyReport):
    """What one reconcile pass did: the apply, and how many expired peers it disabled."""

    expired_disabled: int = 0

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> ReconcileReport:
        report = ApplyReport._from_json(d["report"] if "report" in d else d)
        return cls(
            **{f: getattr(report, f) for f in _APPLY_FIELDS},
            expired_disabled=int(d.get("expired_disabled", 0)),
        )


_APPLY_FIELDS = ("plan", "executed", "results", "errors", "converged", "remaining", "read_back")


@model
class PeerStatus(Model):
    """One peer on the live device: handshake, endpoint and transfer counters.

    ``name`` is ``None`` and ``managed`` false for a peer the store never knew.
    """

    name: str | None
    public_key: str
    managed: bool
    endpoint: str | None
    last_handshake: _dt.datetime | None
    rx_bytes: int
    tx_bytes: int
    allowed_ips: tuple[IPNetwork, ...]

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> PeerStatus:
        hs = d.get("last_handshake")
        return cls(
            name=d.get("name"),
            public_key=d["public_key"],
            managed=bool(d["managed"]),
            endpoint=d.get("endpoint"),
            last_handshake=(
                None if hs is None else _dt.datetime.fromtimestamp(int(hs), _dt.timezone.utc)
            ),
            rx_bytes=int(d["rx_bytes"]),
            tx_bytes=int(d["tx_bytes"]),
            allowed_ips=_tuple_of(parse_net, d.get("allowed_ips")),
        )


@model
class Status(Model):
    """The live interface of a server: whether it ``exists``, its peers, and the names
    of enabled peers the store has that are ``missing`` from it."""

    interface: str
    exists: bool
    listen_port: int
    peers: tuple[PeerStatus, ...]
    missing: tuple[str, ...]

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> Status:
        return cls(
            interface=d["interface"],
            exists=bool(d["exists"]),
            listen_port=int(d["listen_port"]),
            peers=_tuple_of(PeerStatus._from_json, d.get("peers")),
            missing=tuple(d.get("missing") or ()),
        )
