"""Fixtures of wgm's Python tests.

``store_url`` is parametrised over the store engines: SQLite always (a file in the
test's ``tmp_path``), PostgreSQL too when ``WGM_TEST_POSTGRES_URL`` is set (a fresh
database per test, dropped afterwards). Every fixture built on it (``manager``,
``amanager``, ``admin``, ``office``) therefore runs each test on each engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import wgm
import wgm.aio
from wgm_testing import PgDatabase, note_skipped, require, skip_lines, switch_on

ENGINES = ["sqlite", "postgres"] if switch_on("postgres") else ["sqlite"]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Note the postgres suite as skipped when it is off (its tests were not generated)."""
    if not switch_on("postgres") and session.items:
        note_skipped("postgres", session.items[0].nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One ``SKIPPED`` line per opt-in suite that was switched off."""
    for line in skip_lines():
        terminalreporter.write_line(line)


@pytest.fixture(params=ENGINES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store's URL on each engine (a new PostgreSQL database per test)."""
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'wgm.db'}"
        return
    admin = require("postgres", request.node.nodeid, ("psql",))
    db = PgDatabase.create(admin)
    try:
        yield db.url
    finally:
        db.drop()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """Where the test's master key lives (created on first open, mode 0600)."""
    return tmp_path / "wgm.key"


@pytest.fixture
def manager(store_url: str, key_file: Path) -> wgm.Manager:
    """A manager on a fresh store, opened as the local administrator."""
    return wgm.Manager.open(store_url, master_key_file=key_file, local_admin=True)


@pytest.fixture
def admin(manager: wgm.Manager) -> wgm.Principal:
    """The local administrator."""
    return manager.local_admin("root")


@pytest.fixture
def office(manager: wgm.Manager, admin: wgm.Principal) -> wgm.Server:
    """A dual-stack server ``office`` with small, known pools."""
    return manager.create_server(
        admin,
        "office",
        51820,
        ipv6_pool="fd00:1::/64",
        ipv4_pool="10.8.0.0/24",
        endpoint="vpn.example.org:51820",
    )


@pytest.fixture
async def amanager(store_url: str, key_file: Path) -> AsyncIterator[wgm.aio.Manager]:
    """The asyncio manager on a fresh store, as the local administrator."""
    yield await wgm.aio.Manager.open(store_url, master_key_file=key_file, local_admin=True)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never touch the user's own wgm store or key: no WGM_* variables, and the
    default data directory (``Manager.open()`` without a URL) is inside ``tmp_path``."""
    for var in ("WGM_STORE", "WGM_MASTER_KEY", "WGM_TOKEN", "WGM_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
