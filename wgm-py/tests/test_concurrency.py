"""Many writers on one pool: threads and asyncio tasks never share an address, and a
pool smaller than the requests gives exactly its free addresses and PoolExhausted."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

import wgm
import wgm.aio


def test_eight_threads_share_one_manager(
    manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server
) -> None:
    per_thread = 25
    start = threading.Barrier(8)

    def work(t: int) -> list[wgm.Peer]:
        start.wait()
        return [manager.add_peer(admin, office, f"t{t}-{i}") for i in range(per_thread)]

    with ThreadPoolExecutor(8) as pool:
        peers = [p for chunk in pool.map(work, range(8)) for p in chunk]
    assert len(peers) == 8 * per_thread
    assert len({p.address_v6 for p in peers}) == len(peers)
    assert len({p.address_v4 for p in peers}) == len(peers)
    stored = manager.list_peers(admin, office)
    assert len(stored) == len(peers)
    assert manager.get_server(admin, office).revision == 1 + len(peers)


async def test_two_hundred_gathered_add_peers(amanager: wgm.aio.Manager) -> None:
    admin = await amanager.local_admin("root")
    s = await amanager.create_server(
        admin, "office", 51820, ipv6_pool="fd00:1::/64", ipv4_pool="10.8.0.0/23"
    )
    peers = await asyncio.gather(*(amanager.add_peer(admin, s, f"p{i}") for i in range(200)))
    assert len({p.address_v6 for p in peers}) == 200
    assert len({p.address_v4 for p in peers}) == 200
    assert len(await amanager.list_peers(admin, s)) == 200


def capacity(manager: wgm.Manager, admin: wgm.Principal, pool: str) -> int:
    """How many peers a fresh server with an IPv6 ``pool`` holds (filled one by one)."""
    s = manager.create_server(
        admin,
        f"probe{pool.replace(':', '').replace('/', '')}",
        51999,
        interface="probe",
        ipv6_pool=pool,
    )
    n = 0
    while True:
        try:
            manager.add_peer(admin, s, f"x{n}", ipv4=None)
        except wgm.PoolExhausted:
            manager.delete_server(admin, s)
            return n
        n += 1


def test_a_small_pool_fills_exactly_under_threads(
    manager: wgm.Manager, admin: wgm.Principal
) -> None:
    free = capacity(manager, admin, "fd00:9::/122")
    assert 32 < free < 64
    s = manager.create_server(admin, "small", 51820, ipv6_pool="fd00:1::/122")
    requests = free + 20

    def one(i: int) -> wgm.Peer | wgm.WgmError:
        try:
            return manager.add_peer(admin, s, f"p{i}")
        except wgm.WgmError as e:
            return e

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(requests)))
    outcomes = Counter(type(r).__name__ for r in results)
    assert outcomes == {"Peer": free, "PoolExhausted": 20}, outcomes
    peers = [r for r in results if isinstance(r, wgm.Peer)]
    assert len({p.address_v6 for p in peers}) == free
    exhausted = next(r for r in results if isinstance(r, wgm.PoolExhausted))
    assert exhausted.code == 4 and exhausted.details.get("pool")
    assert len(manager.list_peers(admin, s)) == free


async def test_a_small_pool_fills_exactly_under_gather(amanager: wgm.aio.Manager) -> None:
    admin = await amanager.local_admin("root")
    probe = await amanager.create_server(admin, "probe", 51821, ipv6_pool="fd00:9::/122")
    free = len(await amanager.add_peers(admin, probe, "x", count=1, ipv4=None))
    while True:
        try:
            await amanager.add_peer(admin, probe, f"y{free}")
        except wgm.PoolExhausted:
            break
        free += 1
    s = await amanager.create_server(admin, "small", 51820, ipv6_pool="fd00:1::/122")
    results = await asyncio.gather(
        *(amanager.add_peer(admin, s, f"p{i}") for i in range(100)), return_exceptions=True
    )
    peers = [r for r in results if isinstance(r, wgm.Peer)]
    errors = [r for r in results if not isinstance(r, wgm.Peer)]
    assert len(peers) == free and len(errors) == 100 - free
    assert all(isinstance(e, wgm.PoolExhausted) for e in errors), errors
    assert len({p.address_v6 for p in peers}) == len(peers)
    assert len(await amanager.list_peers(admin, s)) == len(peers)
    with pytest.raises(wgm.PoolExhausted):
        await amanager.add_peer(admin, s, "one-more")


def test_calls_release_the_gil(
    manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server
) -> None:
    """While one thread waits on a long call, Python code keeps running in another."""
    done = threading.Event()
    span: list[float] = []
    result: list[tuple[wgm.Peer, ...]] = []

    def bulk() -> None:
        try:
            span.append(time.perf_counter())
            result.append(manager.add_peers(admin, office, "bulk", count=3000, ipv4=None))
            span.append(time.perf_counter())
        finally:
            done.set()

    worker = threading.Thread(target=bulk)
    ticks: list[float] = []
    worker.start()
    while not done.is_set():
        ticks.append(time.perf_counter())  # pure Python, which needs the GIL
    worker.join()
    assert result and len(result[0]) == 3000
    start, end = span
    # Had the call held the GIL, no tick could fall in its middle half (3000 peers in one
    # revision take far longer than the interpreter's switch interval).
    middle = [t for t in ticks if start + (end - start) / 4 < t < end - (end - start) / 4]
    assert len(middle) > 100, (len(middle), end - start)
