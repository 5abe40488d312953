"""wgm — an IPv6-first WireGuard manager, from Python.

wgm manages WireGuard servers and their peers: dual-stack address allocation, users and
roles enforced inside the library, every change a revision with history, diff and
rollback, a keyed hash-chained audit log, and incremental apply to live interfaces. This
package is the Python face of the Rust library; every rule lives there.

Example::

    import wgm

    manager = wgm.Manager.open(local_admin=True)        # the CLI's SQLite store
    admin = manager.local_admin()
    office = manager.create_server(admin, "office", 51820, ipv4_pool="10.8.0.0/24")
    alice = manager.add_peer(admin, office, "alice")
    print(alice.address_v6, alice.address_v4)
    manager.client_config(admin, office, alice).write("alice.conf")

Everything acts as a `Principal`, passed first: the local administrator
(`Manager.local_admin`), a user who logged in (`Manager.login`) or an API token
(`Manager.authenticate_token`). Results are immutable objects (`wgm.models`); errors are
subclasses of `WgmError` (`wgm.errors`). `wgm.aio` has the same API for asyncio;
`wgm.keys` and `wgm.wgquick` need no store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import errors, keys, models, wgquick
from ._ops import UNSET, PeerRef, ServerRef, Time, TokenRef, Unset, UserRef
from ._sync import Manager
from ._wgm import Principal
from .errors import (
    AlreadyExists,
    BackendError,
    Conflict,
    InvalidInput,
    NotFound,
    ParseError,
    PermissionDenied,
    PoolExhausted,
    Sealed,
    Throttled,
    Unauthenticated,
    Unavailable,
    Unsupported,
    WgmError,
)
from .models import (
    Actor,
    ApplyReport,
    AuditRecord,
    AuditVerification,
    Change,
    ClientConfig,
    ClientTemplate,
    Delegation,
    DiffEntry,
    ItemResult,
    NewToken,
    Peer,
    PeerStats,
    PeerStatus,
    Plan,
    PlanItem,
    ReconcileReport,
    RemovedPeer,
    Revision,
    Role,
    RoleAssignment,
    Server,
    ServerConfig,
    Status,
    Token,
    TotpEnrollment,
    User,
)

if TYPE_CHECKING:
    from . import aio as aio

__version__ = "0.1.0"
"""The version of wgm (the Rust workspace's and the package's)."""

__all__ = [
    "__version__",
    # the manager and who acts
    "Manager",
    "Principal",
    "aio",
    "keys",
    "wgquick",
    "errors",
    "models",
    "UNSET",
    "Unset",
    "ServerRef",
    "PeerRef",
    "UserRef",
    "TokenRef",
    "Time",
    # errors
    "WgmError",
    "InvalidInput",
    "ParseError",
    "NotFound",
    "AlreadyExists",
    "Conflict",
    "PoolExhausted",
    "PermissionDenied",
    "Unauthenticated",
    "Throttled",
    "Unsupported",
    "Sealed",
    "BackendError",
    "Unavailable",
    # results
    "Server",
    "Delegation",
    "ClientTemplate",
    "Peer",
    "PeerStats",
    "RemovedPeer",
    "ClientConfig",
    "ServerConfig",
    "Revision",
    "Change",
    "DiffEntry",
    "Actor",
    "AuditRecord",
    "AuditVerification",
    "User",
    "RoleAssignment",
    "Role",
    "Token",
    "NewToken",
    "TotpEnrollment",
    "Plan",
    "PlanItem",
    "ApplyReport",
    "ReconcileReport",
    "ItemResult",
    "Status",
    "PeerStatus",
]


def __getattr__(name: str) -> Any:
    # `wgm.aio` without importing it first (it is not imported eagerly: asyncio users
    # only pay for it).
    if name == "aio":
        import importlib

        return importlib.import_module(".aio", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
