"""wgm for asyncio: `wgm.aio.Manager` has every method of `wgm.Manager`, as coroutines.

Example::

    import asyncio
    import wgm.aio

    async def main() -> None:
        manager = await wgm.aio.Manager.open(local_admin=True)
        admin = await manager.local_admin()
        peers = await asyncio.gather(
            *(manager.add_peer(admin, "office", f"dev{i}") for i in range(10))
        )

    asyncio.run(main())

The library runs on its own runtime threads; awaiting never blocks the event loop. A
cancelled call stops being awaited, but the operation itself completes (or fails) as a
whole in the background: never half a revision. Arguments, results and errors are those
of `wgm.Manager` (this module shares its code).
"""

from __future__ import annotations

import os
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from . import _ops
from ._model import IPAddress
from ._ops import Call
from ._wgm import Native, Principal

if TYPE_CHECKING:
    from typing_extensions import Concatenate, ParamSpec

    P = ParamSpec("P")

T = TypeVar("T")

__all__ = ["Manager"]


def _method(
    build: Callable[P, Call[T]],
) -> Callable[Concatenate[Manager, Principal, P], Coroutine[Any, Any, T]]:
    """The coroutine method that awaits the call ``build`` makes, as ``principal``."""

    async def method(
        self: Manager, principal: Principal, /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        call = build(*args, **kwargs)
        return call.decode(await self._native.call_async(principal, call.op, call.encode()))

    _ops.describe(method, build, "wgm.aio")
    return method


class Manager:
    """The wgm manager for asyncio: `wgm.Manager`'s methods as coroutines.

    Example::

        manager = await wgm.aio.Manager.open(local_admin=True)
        admin = await manager.local_admin()
        peer = await manager.add_peer(admin, "office", "alice")
    """

    __slots__ = ("_native",)

    def __init__(self, native: Native) -> None:
        """Wrap an opened native manager; use `Manager.open` instead."""
        self._native = native

    @classmethod
    async def open(
        cls,
        store_url: str | None = None,
        *,
        master_key_file: str | os.PathLike[str] | None = None,
        master_key: str | None = None,
        local_admin: bool = False,
    ) -> Manager:
        """Open (creating when needed) a store and its master key; see `wgm.Manager.open`."""
        native = await Native.open_async(
            store_url, _ops.fspath_opt(master_key_file), master_key, local_admin
        )
        return cls(native)

    @property
    def store_url(self) -> str:
        """The store, described without any password."""
        return self._native.store_url

    def __repr__(self) -> str:
        return f"wgm.aio.Manager(store_url={self.store_url!r})"

    # --- principals -----------------------------------------------------------------------

    async def local_admin(self, name: str | None = None) -> Principal:
        """The local administrator's principal; see `wgm.Manager.local_admin`."""
        return self._native.local_admin(_ops.user_name(name))

    async def authenticate_token(self, secret: str) -> Principal:
        """The principal of an API token (`wgm.Unauthenticated` if it is not valid)."""
        return await self._native.authenticate_token_async(secret)

    async def login(
        self,
        user: str,
        password: str,
        totp: str | None = None,
        *,
        source: str | IPAddress | None = None,
    ) -> Principal:
        """Log a user in; see `wgm.Manager.login`."""
        return await self._native.login_async(user, password, totp, _ops.opt_text(source))

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
