"""`wgm.aio`: the same API as coroutines, errors from awaitables, cancellation."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest

import wgm
import wgm.aio


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(getattr(cls, name))
        for name in dir(cls)
        if not name.startswith("_") and callable(getattr(cls, name))
    }


def test_the_async_facade_has_every_method_with_the_same_signature() -> None:
    sync, aio = public_methods(wgm.Manager), public_methods(wgm.aio.Manager)
    assert sync.keys() == aio.keys()
    for name, sig in sync.items():
        assert aio[name].parameters == sig.parameters, name
        method = getattr(wgm.aio.Manager, name)
        assert inspect.iscoroutinefunction(method) or name == "open", name
        assert method.__doc__, name
    assert inspect.iscoroutinefunction(wgm.aio.Manager.open)
    # The signature shows what a caller passes, principal first.
    params = list(sync["add_peer"].parameters)
    assert params[:4] == ["self", "principal", "server", "name"]
    assert sync["add_peer"].return_annotation == "Peer"


async def test_the_async_manager_works_end_to_end(amanager: wgm.aio.Manager) -> None:
    admin = await amanager.local_admin("root")
    office = await amanager.create_server(admin, "office", 51820, ipv4_pool="10.8.0.0/24")
    alice = await amanager.add_peer(admin, office, "alice")
    assert await amanager.get_peer(admin, office, "alice") == alice
    cfg = await amanager.client_config(admin, office, alice)
    assert cfg.complete and cfg.peer == alice
    assert [r.revision for r in await amanager.history(admin, office)] == [1, 2]
    await amanager.create_user(admin, "bob", password="a long enough password")
    bob = await amanager.login("bob", "a long enough password")
    assert bob.kind == "human"
    new = await amanager.create_token(admin, "t", user="bob")
    assert (await amanager.authenticate_token(new.secret)).name == "bob"
    status = await amanager.status(admin, office, backend="userspace")
    assert not status.exists
    assert (await amanager.verify_audit(admin)).records > 0


async def test_errors_are_raised_from_awaitables(amanager: wgm.aio.Manager) -> None:
    admin = await amanager.local_admin("root")
    with pytest.raises(wgm.NotFound):
        await amanager.get_server(admin, "nope")
    with pytest.raises(wgm.InvalidInput) as e:
        await amanager.create_server(admin, "x", 0)
    assert e.value.field == "server.listen_port"
    with pytest.raises(wgm.Unauthenticated):
        await amanager.authenticate_token("nope")
    with pytest.raises(wgm.Unauthenticated):
        await amanager.login("nobody", "wrong password")


async def test_a_cancelled_call_never_leaves_half_a_revision(amanager: wgm.aio.Manager) -> None:
    admin = await amanager.local_admin("root")
    office = await amanager.create_server(admin, "office", 51820)
    task = asyncio.ensure_future(amanager.add_peers(admin, office, "bulk", count=500))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Cancelling stopped the waiting, not the operation: it was started as a task of the
    # runtime before the awaitable existed, so it completes in the background, whole:
    # one revision with all 500 peers (never a part of them).
    for _ in range(600):
        peers = await amanager.list_peers(admin, office)
        if peers:
            break
        await asyncio.sleep(0.05)
    assert len(peers) == 500
    revisions = [r.revision for r in await amanager.history(admin, office)]
    assert revisions == [1, 2]


async def test_open_async_refuses_a_bad_store(tmp_path: Path) -> None:
    with pytest.raises(wgm.InvalidInput) as e:
        await wgm.aio.Manager.open("mysql://x", master_key_file=tmp_path / "k")
    assert e.value.field == "store"


def test_sync_and_async_managers_share_a_store(store_url: str, key_file: Path) -> None:
    sync = wgm.Manager.open(store_url, master_key_file=key_file, local_admin=True)
    admin = sync.local_admin("root")
    sync.create_server(admin, "office", 51820)

    async def main() -> tuple[str, ...]:
        m = await wgm.aio.Manager.open(store_url, master_key_file=key_file, local_admin=True)
        return tuple(s.name for s in await m.list_servers(await m.local_admin("root")))

    assert asyncio.run(main()) == ("office",)
