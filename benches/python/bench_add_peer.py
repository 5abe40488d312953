#!/usr/bin/env python3
"""Benchmark: ``add_peer`` from Python, one call at a time, on a fresh SQLite store.

Usage::

    python bench_add_peer.py [--count 10000] [--store URL] [--json]

Measures

- ``import wgm``: the wall time of importing the package in a fresh interpreter (the
  median of several runs), and the three slowest modules of ``python -X importtime``;
- ``add_peer``: ``--count`` sequential calls (each one revision: authorize, allocate
  both families, seal the keys, commit, audit) on a dual-stack server, as peers per
  second and milliseconds per call (mean, median, 99th percentile).

The store is a new SQLite file in a temporary directory unless ``--store`` names one
(which must be empty). Prints a table, or one JSON object with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

IMPORT_RUNS = 7


def import_time(runs: int = IMPORT_RUNS) -> dict[str, Any]:
    """The median wall time of ``import wgm`` in a fresh interpreter, and its slowest
    modules according to ``-X importtime`` (cumulative microseconds).

    Measured as installed packages run: with compiled bytecode (cached in a temporary
    ``PYTHONPYCACHEPREFIX``, after one warm-up import), even where the environment sets
    ``PYTHONDONTWRITEBYTECODE``.
    """
    code = "import time; t = time.perf_counter(); import wgm; print(time.perf_counter() - t)"
    with tempfile.TemporaryDirectory(prefix="wgm-pycache-") as cache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = cache

        def run(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, *argv], capture_output=True, text=True, check=True, env=env
            )

        run("-c", "import wgm, wgm.aio")  # compile once
        times = [float(run("-c", code).stdout) for _ in range(runs)]
        trace = run("-X", "importtime", "-c", "import wgm").stderr
    modules = []
    for line in trace.splitlines():
        # "import time: self [us] | cumulative | imported package"
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[1].isdigit():
            modules.append((int(parts[1]), parts[2]))
    slowest = sorted(m for m in modules if m[1].lstrip().startswith("wgm"))[-3:][::-1]
    return {
        "import_ms_median": statistics.median(times) * 1e3,
        "import_ms_min": min(times) * 1e3,
        "slowest_wgm_modules_us": {name.strip(): us for us, name in slowest},
    }


def bench_add_peer(count: int, store_url: str | None) -> dict[str, Any]:
    """Time ``count`` sequential ``add_peer`` calls on a fresh dual-stack server."""
    import wgm

    with tempfile.TemporaryDirectory(prefix="wgm-bench-") as tmp:
        url = store_url or f"sqlite://{os.path.join(tmp, 'wgm.db')}"
        t0 = time.perf_counter()
        manager = wgm.Manager.open(
            url, master_key_file=os.path.join(tmp, "wgm.key"), local_admin=True
        )
        open_ms = (time.perf_counter() - t0) * 1e3
        admin = manager.local_admin("bench")
        server = manager.create_server(
            admin, "bench", 51820, ipv6_pool="fd00:b::/64", ipv4_pool="10.64.0.0/16"
        )
        per_call = []
        cpu_start = time.process_time()
        start = time.perf_counter()
        for i in range(count):
            t = time.perf_counter()
            manager.add_peer(admin, server, f"p{i}")
            per_call.append(time.perf_counter() - t)
        total = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        assert manager.get_server(admin, server).peer_count == count
    per_call.sort()
    return {
        "count": count,
        "store": "sqlite (temporary file)" if store_url is None else manager.store_url,
        "open_ms": open_ms,
        "total_s": total,
        "peers_per_s": count / total,
        "ms_per_call_mean": total / count * 1e3,
        "ms_per_call_median": statistics.median(per_call) * 1e3,
        "ms_per_call_p99": per_call[min(count - 1, int(count * 0.99))] * 1e3,
        "cpu_ms_per_call": cpu / count * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Time add_peer from Python.")
    p.add_argument("--count", type=int, default=10_000, help="add_peer calls (default 10000)")
    p.add_argument(
        "--store", default=None, help="an empty store URL (default: a temporary SQLite file)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if args.count < 1:
        p.error("--count must be at least 1")
    result = {
        "python": sys.version.split()[0],
        **import_time(),
        **bench_add_peer(args.count, args.store),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"import wgm           {result['import_ms_median']:8.1f} ms (median of {IMPORT_RUNS})")
    for name, us in result["slowest_wgm_modules_us"].items():
        print(f"  {name:<18} {us / 1e3:8.1f} ms cumulative")
    print(f"open store           {result['open_ms']:8.1f} ms")
    print(f"add_peer x{result['count']:<9} {result['total_s']:8.2f} s")
    print(f"  peers/s            {result['peers_per_s']:8.0f}")
    print(
        f"  ms per call        {result['ms_per_call_mean']:8.3f} mean, "
        f"{result['ms_per_call_median']:.3f} median, {result['ms_per_call_p99']:.3f} p99"
    )
    print(f"  CPU ms per call    {result['cpu_ms_per_call']:8.3f} (all threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
