"""The example and the benchmark run (the benchmark with a small count)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import wgm

ROOT = Path(__file__).resolve().parents[2]


def test_provision_writes_a_hundred_private_configs(tmp_path: Path) -> None:
    store = f"sqlite://{tmp_path / 'p.db'}"
    out = tmp_path / "configs"
    cmd = [
        sys.executable,
        str(ROOT / "examples/python/provision.py"),
        store,
        str(out),
        "--master-key-file",
        str(tmp_path / "p.key"),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    files = sorted(out.glob("*.conf"))
    assert len(files) == 100
    assert all((os.stat(f).st_mode & 0o777) == 0o600 for f in files)
    cfg = wgm.wgquick.parse((out / "peer-7.conf").read_text())
    assert cfg.interface.private_key and cfg.peers[0].endpoint == "vpn.example.org:51820"
    # Again: nothing to add, the same configs.
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0 and "100 peers" in r.stdout, r.stdout + r.stderr
    m = wgm.Manager.open(store, master_key_file=tmp_path / "p.key", local_admin=True)
    assert len(m.history(m.local_admin(), "office")) == 2
    # Errors exit with the CLI's code.
    bad = subprocess.run(cmd[:4] + ["--server", "bad/name"], capture_output=True, text=True)
    assert bad.returncode == 2 and "server.name" in bad.stderr


def test_the_benchmark_runs_and_prints_json() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "benches/python/bench_add_peer.py"), "--count", "50", "--json"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["count"] == 50 and result["peers_per_s"] > 0
    assert (
        result["import_ms_median"] > 0 and result["ms_per_call_p99"] >= result["ms_per_call_median"]
    )


def test_the_readmes_python_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's snippet, on the default store (inside this test's data directory)."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```python", readme.index("### From Python")) + len("```python")
    code = readme[start : readme.index("```", start)]
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "[Interface]" in out and "PrivateKey" in out


def test_every_python_block_of_docs_python_md_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/python.md promises that its ``python`` blocks run as written."""
    monkeypatch.chdir(tmp_path)
    doc = (ROOT / "docs" / "python.md").read_text()
    blocks = doc.split("```python\n")[1:]
    assert len(blocks) >= 3
    for n, block in enumerate(blocks):
        code = block[: block.index("```")]
        exec(compile(code, f"docs/python.md block {n + 1}", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert "fd00:1::2 10.8.0.2" in out
