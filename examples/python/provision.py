#!/usr/bin/env python3
"""Provision a WireGuard server with 100 peers and write their client configs.

Usage::

    python provision.py [STORE_URL] OUT_DIR [--server NAME] [--peers N]
                        [--endpoint HOST:PORT] [--master-key-file PATH]

Without ``STORE_URL`` it uses the ``wgm`` CLI's default store
(``~/.local/share/wgm/wgm.db``, its master key beside it). It creates the server (a
dual-stack one: a random ULA IPv6 /64 and ``10.42.0.0/22``) unless it exists, adds the
missing peers ``peer-1`` … ``peer-N`` in one revision, and writes each peer's client
config to ``OUT_DIR/NAME.conf`` with mode 0600. Run it again and it only fills in what
is missing. Each config export is an audited secret export.

Then, as root, ``wgm apply NAME`` (or ``manager.apply(...)``) puts the server live.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import wgm


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("paths", nargs="+", metavar="[STORE_URL] OUT_DIR")
    p.add_argument("--server", default="office", help="server name (default: office)")
    p.add_argument("--peers", type=int, default=100, help="number of peers (default: 100)")
    p.add_argument("--listen-port", type=int, default=51820)
    p.add_argument("--endpoint", default="vpn.example.org:51820", help="what clients dial")
    p.add_argument("--master-key-file", type=Path, default=None)
    args = p.parse_args(argv)
    if len(args.paths) > 2:
        p.error("give at most a store URL and an output directory")
    return args


def provision(
    manager: wgm.Manager,
    admin: wgm.Principal,
    name: str,
    count: int,
    out_dir: Path,
    *,
    listen_port: int = 51820,
    endpoint: str | None = None,
) -> list[Path]:
    """Create server ``name`` (unless it exists) with ``count`` peers; write their configs."""
    try:
        server = manager.get_server(admin, name)
    except wgm.NotFound:
        server = manager.create_server(
            admin, name, listen_port, ipv4_pool="10.42.0.0/22", endpoint=endpoint
        )
    wanted = [f"peer-{i}" for i in range(1, count + 1)]
    have = {p.name for p in manager.list_peers(admin, server)}
    if not have.intersection(wanted):
        # One revision for all of them: peer-1 … peer-N.
        manager.add_peers(admin, server, "peer", count=count)
    else:
        for peer_name in wanted:
            if peer_name not in have:
                manager.add_peer(admin, server, peer_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for peer in manager.list_peers(admin, server):
        if peer.name not in wanted:
            continue
        path = out_dir / f"{peer.name}.conf"
        manager.client_config(admin, server, peer).write(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    store_url: str | None = args.paths[0] if len(args.paths) == 2 else None
    out_dir = Path(args.paths[-1])
    try:
        manager = wgm.Manager.open(
            store_url, master_key_file=args.master_key_file, local_admin=True
        )
        admin = manager.local_admin()
        written = provision(
            manager,
            admin,
            args.server,
            args.peers,
            out_dir,
            listen_port=args.listen_port,
            endpoint=args.endpoint,
        )
    except wgm.WgmError as e:
        where = f" ({e.field})" if e.field else ""
        print(f"error{where}: {e}", file=sys.stderr)
        return e.code
    server = manager.get_server(admin, args.server)
    print(
        f"{server.name}: {server.peer_count} peers, IPv6 {server.ipv6_pool}, "
        f"IPv4 {server.ipv4_pool}; wrote {len(written)} configs to {out_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
