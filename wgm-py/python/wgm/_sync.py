"""`wgm.Manager`: the blocking facade (the async one is `wgm.aio.Manager`)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, TypeVar

from . import _ops
from ._model import IPAddress
from ._ops import Call
from ._wgm import Native, Principal

if TYPE_CHECKING:
    from typing_extensions import Concatenate, ParamSpec

    P = ParamSpec("P")

T = TypeVar("T")

__all__ = ["Manager"]


def _method(build: Callable[P, Call[T]]) -> Callable[Concatenate[Manager, Principal, P], T]:
    """The blocking method that runs the call ``build`` makes, as ``principal``."""

    def method(self: Manager, principal: Principal, /, *args: P.args, **kwargs: P.kwargs) -> T:
        call = build(*args, **kwargs)
        return call.decode(self._native.call(principal, call.op, call.encode()))

    _ops.describe(method, build, "wgm")
    return method


class Manager:
    """The wgm manager: servers, peers, users, history, audit and live interfaces.

    Open one with `Manager.open`, get a `wgm.Principal` (`local_admin`, `login`,
    `authenticate_token`), and pass it first to every operation: the library authorizes
    it, validates the input and commits each change as one audited revision.

    Example::

        import wgm

        manager = wgm.Manager.open(local_admin=True)       # ~/.local/share/wgm/wgm.db
        admin = manager.local_admin()
        office = manager.create_server(admin, "office", 51820, ipv4_pool="10.8.0.0/24")
        alice = manager.add_peer(admin, office, "alice")
        manager.client_config(admin, office, alice).write("alice.conf")

    Methods block while the library works, without holding the GIL, so one manager can
    be shared by many threads. `wgm.aio.Manager` has the same methods as coroutines.
    """

    __slots__ = ("_native",)

    def __init__(self, native: Native) -> None:
        """Wrap an opened native manager; use `Manager.open` instead."""
        self._native = native

    @classmethod
    def open(
        cls,
        store_url: str | None = None,
        *,
        master_key_file: str | os.PathLike[str] | None = None,
        master_key: str | None = None,
        local_admin: bool = False,
    ) -> Manager:
        """Open (creating when needed) a store and its master key.

        ``store_url`` is ``sqlite:///path/wgm.db`` or ``postgres://user@host/db``; by
        default the embedded SQLite store the ``wgm`` CLI uses
        (``~/.local/share/wgm/wgm.db``). The master key that seals private keys comes
        from ``master_key`` (base64), else ``master_key_file`` (created, mode 0600, when
        missing), else the file beside the default store. ``local_admin=True`` makes this
        process the local administrator (holding the master key, as the CLI does), so
        `local_admin` can hand out its principal; without it, callers authenticate.

        Example::

            m = wgm.Manager.open("sqlite:///tmp/w.db?mode=rwc",
                                 master_key_file="/tmp/w.key", local_admin=True)
        """
        native = Native.open(store_url, _ops.fspath_opt(master_key_file), master_key, local_admin)
        return cls(native)

    @property
    def store_url(self) -> str:
        """The store, described without any password."""
        return self._native.store_url

    def __repr__(self) -> str:
        return f"Manager(store_url={self.store_url!r})"

    # --- principals -----------------------------------------------------------------------

    def local_admin(self, name: str | None = None) -> Principal:
        """The local administrator's principal, audited as ``local:NAME``.

        ``name`` defaults to this process's user name. Raises `wgm.PermissionDenied`
        unless the manager was opened with ``local_admin=True``.
        """
        return self._native.local_admin(_ops.user_name(name))

    def authenticate_token(self, secret: str) -> Principal:
        """The principal of an API token (`wgm.Unauthenticated` if it is not valid)."""
        return self._native.authenticate_token(secret)

    def login(
        self,
        user: str,
        password: str,
        totp: str | None = None,
        *,
        source: str | IPAddress | None = None,
    ) -> Principal:
        """Log a user in with their password (and TOTP code once enrolled).

        ``source`` is the client's IP address, by which failed logins are throttled (a
        service in front of users passes it; default: the loopback address). Raises
        `wgm.Unauthenticated` for wrong credentials and `wgm.Throttled` after too many
        failures.
        """
        return self._native.login(user, password, totp, _ops.opt_text(source))

    # --- servers --------------------------------------------------------------------------

    create_server = _method(_ops.create_server)
    list_servers = _method(_ops.list_servers)
    get_server = _method(_ops.get_server)
    update_server = _method(_ops.update_server)
    delete_server = _method(_ops.delete_server)
    export_server = _method(_ops.export_server)
    import_server = _method(_ops.import_server)
    rotate_server_key = _method(_ops.rotate_server_key)
    restore_server_key = _method(_ops.restore_server_key)

    # --- peers ----------------------------------------------------------------------------

    add_peer = _method(_ops.add_peer)
    add_peers = _method(_ops.add_peers)
    list_peers = _method(_ops.list_peers)
    get_peer = _method(_ops.get_peer)
    update_peer = _method(_ops.update_peer)
    enable_peer = _method(_ops.enable_peer)
    disable_peer = _method(_ops.disable_peer)
    remove_peer = _method(_ops.remove_peer)
    rotate_peer_key = _method(_ops.rotate_peer_key)
    rotate_peer_psk = _method(_ops.rotate_peer_psk)
    restore_peer_keys = _method(_ops.restore_peer_keys)
    client_config = _method(_ops.client_config)
    client_qr = _method(_ops.client_qr)
    sweep_expired_peers = _method(_ops.sweep_expired_peers)

    # --- history and audit ----------------------------------------------------------------

    history = _method(_ops.history)
    diff = _method(_ops.diff)
    rollback = _method(_ops.rollback)
    query_audit = _method(_ops.query_audit)
    verify_audit = _method(_ops.verify_audit)

    # --- users, roles, tokens -------------------------------------------------------------

    create_user = _method(_ops.create_user)
    list_users = _method(_ops.list_users)
    get_user = _method(_ops.get_user)
    update_user = _method(_ops.update_user)
    set_password = _method(_ops.set_password)
    delete_user = _method(_ops.delete_user)
    enroll_totp = _method(_ops.enroll_totp)
    confirm_totp = _method(_ops.confirm_totp)
    list_roles = _method(_ops.list_roles)
    put_role = _method(_ops.put_role)
    delete_role = _method(_ops.delete_role)
    create_token = _method(_ops.create_token)
    list_tokens = _method(_ops.list_tokens)
    revoke_token = _method(_ops.revoke_token)

    # --- live -----------------------------------------------------------------------------

    plan = _method(_ops.plan)
    apply = _method(_ops.apply)
    status = _method(_ops.status)
    reconcile = _method(_ops.reconcile)
