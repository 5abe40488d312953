"""Apply a server to wireguard-go from Python, in a private network namespace.

Opt-in: ``WGM_TEST_NETNS=1`` (root, ``ip``, ``wireguard-go``, ``wg``). The test makes its
own uniquely named namespace, runs the applies in a Python subprocess inside it
(``ip netns exec``), and removes everything on every exit path: the UAPI sockets of its
interfaces, processes left in its namespace (by process id), and the namespace.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import wgm
from wgm_testing import require

SCRIPT = r"""
import json, sys
import wgm

store, key, action = sys.argv[1:4]
m = wgm.Manager.open(store, master_key_file=key, local_admin=True)
admin = m.local_admin("root")
out = {}
if action == "apply":
    r = m.apply(admin, "office", backend="userspace", host="test-host")
    out["report"] = r.to_dict()
    again = m.plan(admin, "office", backend="userspace", host="test-host")
    out["plan_after"] = again.to_dict()
    out["empty_after"] = again.is_empty
elif action == "reconcile":
    out["report"] = m.reconcile(admin, "office", backend="userspace", host="test-host").to_dict()
out["status"] = m.status(admin, "office", backend="userspace", host="test-host").to_dict()
print(json.dumps(out))
"""


class Netns:
    """A uniquely named network namespace, removed with everything in it by `close`."""

    def __init__(self) -> None:
        self.name = f"wgm-py-{os.getpid()}-{secrets.token_hex(3)}"
        self.sockets: list[Path] = []
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        try:
            subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
        except BaseException:
            self.close()
            raise

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def pids(self) -> list[str]:
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        return out.stdout.split()

    def close(self) -> None:
        # wireguard-go exits when its UAPI socket goes; anything left in the namespace
        # was started by this test, and is ended by its process id.
        for sock in self.sockets:
            sock.unlink(missing_ok=True)
        deadline = time.monotonic() + 5
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self.pids():
            subprocess.run(["kill", pid], check=False)
        subprocess.run(["ip", "netns", "del", self.name], check=False)


@pytest.fixture
def netns(request: pytest.FixtureRequest) -> Iterator[Netns]:
    require("netns", request.node.nodeid, ("ip", "wireguard-go", "wg"))
    ns = Netns()
    try:
        yield ns
    finally:
        ns.close()


def in_ns(ns: Netns, tmp_path: Path, store: str, key: Path, action: str) -> dict[str, Any]:
    script = tmp_path / "live.py"
    script.write_text(SCRIPT)
    r = ns.run(sys.executable, str(script), store, str(key), action)
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def test_apply_status_and_reconcile_drive_wireguard_go(netns: Netns, tmp_path: Path) -> None:
    store, key = f"sqlite://{tmp_path / 'wgm.db'}", tmp_path / "wgm.key"
    iface = f"wgmpy{os.getpid() % 100000}"
    netns.sockets.append(Path(f"/var/run/wireguard/{iface}.sock"))
    m = wgm.Manager.open(store, master_key_file=key, local_admin=True)
    admin = m.local_admin("root")
    office = m.create_server(
        admin,
        "office",
        51820,
        interface=iface,
        ipv6_pool="fd12:3456:789a:1::/64",
        ipv4_pool="10.8.0.0/24",
    )
    alice = m.add_peer(admin, office, "alice")
    m.add_peer(admin, office, "bob")

    out = in_ns(netns, tmp_path, store, key, "apply")
    report = out["report"]
    assert report["converged"] and report["executed"], report
    assert out["empty_after"], out["plan_after"]
    status = out["status"]
    assert status["exists"] and status["listen_port"] == 51820
    assert sorted(p["name"] for p in status["peers"]) == ["alice", "bob"]
    assert status["missing"] == []
    wg = netns.run("wg", "show", iface, "peers")
    assert sorted(wg.stdout.split()) == sorted(p.public_key for p in m.list_peers(admin, office))
    assert netns.sockets[0].exists()

    # Incremental: adding a peer touches only that peer.
    m.add_peer(admin, office, "carol")
    m.disable_peer(admin, office, alice)
    out = in_ns(netns, tmp_path, store, key, "apply")
    ops = sorted(i["item"]["op"] for i in out["report"]["results"])
    assert ops == ["add_peer", "remove_peer"], out["report"]
    assert sorted(p["name"] for p in out["status"]["peers"]) == ["bob", "carol"]

    # Drift made behind wgm's back is repaired by reconcile.
    netns.run("wg", "set", iface, "peer", m.get_peer(admin, office, "bob").public_key, "remove")
    out = in_ns(netns, tmp_path, store, key, "reconcile")
    assert out["report"]["converged"], out["report"]
    assert sorted(p["name"] for p in out["status"]["peers"]) == ["bob", "carol"]

    # An inactive server's device is removed, daemon and all.
    m.update_server(admin, office, active=False)
    out = in_ns(netns, tmp_path, store, key, "apply")
    assert out["report"]["converged"] and not out["status"]["exists"]
    deadline = time.monotonic() + 5
    while netns.sockets[0].exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not netns.sockets[0].exists()
