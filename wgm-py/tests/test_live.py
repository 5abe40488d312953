"""plan, apply (dry run), status and reconcile without root: the device is absent."""

from __future__ import annotations

import os

import pytest

import wgm


def iface(tag: str) -> str:
    """An interface name no other test or process uses."""
    return f"wgmpy{tag}{os.getpid() % 100000}"


@pytest.fixture
def live(manager: wgm.Manager, admin: wgm.Principal) -> wgm.Server:
    s = manager.create_server(
        admin, "live", 51820, interface=iface("l"), ipv6_pool="fd00:7::/64", ipv4_pool="10.7.0.0/24"
    )
    manager.add_peer(admin, s, "alice")
    return s


def test_plan_status_and_dry_run_read_without_changing_anything(
    manager: wgm.Manager, admin: wgm.Principal, live: wgm.Server
) -> None:
    plan = manager.plan(admin, live, backend="userspace", host="h1")
    assert (plan.interface, plan.revision) == (live.interface, 2)
    ops = [i.op for i in plan.items]
    assert "create_device" in ops and "add_peer" in ops and not plan.is_empty
    add = next(i for i in plan.items if i.op == "add_peer")
    assert add.name == "alice" and add.public_key
    addresses = {str(i.address) for i in plan.items if i.op == "add_address"}
    assert addresses == {"fd00:7::1/64", "10.7.0.1/24"}

    dry = manager.apply(admin, live, backend="userspace", host="h1", dry_run=True)
    assert not dry.executed and dry.plan.items == plan.items
    assert dry.results == ()

    status = manager.status(admin, live, backend="userspace")
    assert (status.exists, status.peers, status.missing) == (False, (), ("alice",))
    assert not os.path.exists(f"/var/run/wireguard/{live.interface}.sock")
    assert manager.history(admin, live)[-1].revision == 2


def test_bad_backend_or_host_is_invalid_input(
    manager: wgm.Manager, admin: wgm.Principal, live: wgm.Server
) -> None:
    with pytest.raises(wgm.InvalidInput) as e:
        manager.plan(admin, live, backend="boringtun")  # type: ignore[arg-type]
    assert e.value.field == "backend"
    with pytest.raises(wgm.InvalidInput):
        manager.plan(admin, live, backend="userspace", host="a b")


def test_kernel_backend_without_the_module_is_unsupported(
    manager: wgm.Manager, admin: wgm.Principal, live: wgm.Server
) -> None:
    try:
        status = manager.status(admin, live, backend="kernel")
    except wgm.Unsupported as e:
        assert e.code == 6 and "wireguard" in str(e)
        # The refusal names the way out, in Python's spelling.
        assert 'backend="userspace"' in str(e)
        # auto falls back to wireguard-go, which reads an absent device.
        assert not manager.status(admin, live, backend="auto").exists
    else:  # this kernel has WireGuard: the device simply does not exist yet
        assert not status.exists
