"""Helpers of wgm's Python tests: the opt-in suites, stores and TOTP codes.

Opt-in suites follow the workspace's rule (``wgm-test-support``): with its switch off a
suite's tests are skipped and one ``SKIPPED`` line per suite is printed at the end of
the run; with the switch on, a missing resource fails the test. Every decision is
appended to the ledger named by ``WGM_TEST_LEDGER`` (``OUTCOME<TAB>SUITE<TAB>BINARY<TAB>TEST``),
which ``.ci/run`` counts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import shutil
import struct
import subprocess
import time
import urllib.parse
import uuid
from dataclasses import dataclass

import pytest

BINARY = "wgm-py/pytest"

#: Suites whose switch was off in this run: name -> (switch, first test).
SKIPPED: dict[str, tuple[str, str]] = {}

_SWITCHES = {"netns": "WGM_TEST_NETNS", "postgres": "WGM_TEST_POSTGRES_URL"}
_HOW = {
    "netns": "run as root with WGM_TEST_NETNS=1 (needs ip, wireguard-go and wg)",
    "postgres": "set WGM_TEST_POSTGRES_URL=postgres://USER@HOST:PORT/DB (an admin URL)",
}


def _ledger(outcome: str, suite: str, test: str) -> None:
    path = os.environ.get("WGM_TEST_LEDGER")
    if not path:
        return
    clean = test.replace("\t", " ").replace("\n", " ")
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{outcome}\t{suite}\t{BINARY}\t{clean}\n")


def switch_on(suite: str) -> bool:
    """Whether ``suite``'s switch is on (a malformed value fails, as in Rust)."""
    value = os.environ.get(_SWITCHES[suite], "")
    if suite == "netns":
        if value not in ("", "0", "1"):
            pytest.fail(f"WGM_TEST_NETNS must be 1, 0 or empty, not {value!r}")
        return value == "1"
    return value != ""


def note_skipped(suite: str, test: str) -> None:
    """Record that ``suite`` is off (its ``SKIPPED`` line and a ledger entry)."""
    SKIPPED.setdefault(suite, (_SWITCHES[suite], test))
    _ledger("skipped", suite, test)


def require(suite: str, test: str, tools: tuple[str, ...] = ()) -> str:
    """Skip ``test`` when ``suite`` is off; fail it when on and something is missing.

    Returns the switch's value (the admin URL for ``postgres``).
    """
    if not switch_on(suite):
        note_skipped(suite, test)
        pytest.skip(f"the {suite} suite is off ({_SWITCHES[suite]} is not set)")
    missing = [t for t in tools if shutil.which(t) is None]
    if suite == "netns" and os.geteuid() != 0:
        missing.append("root (network namespaces)")
    if missing:
        _ledger("missing", suite, test)
        pytest.fail(f"the {suite} suite is on but {', '.join(missing)} is missing")
    _ledger("ran", suite, test)
    return os.environ[_SWITCHES[suite]]


def skip_lines() -> list[str]:
    """The ``SKIPPED`` lines of the suites that were off."""
    return [
        f"SKIPPED: the {suite} tests of `{BINARY}` pass without running ({switch} is not "
        f"set; first: {test}). To run them, {_HOW[suite]}."
        for suite, (switch, test) in sorted(SKIPPED.items())
    ]


# --- PostgreSQL -------------------------------------------------------------------------


def with_database(url: str, db: str) -> str:
    """``url`` with its database replaced by ``db``."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{db}"))


@dataclass
class PgDatabase:
    """A uniquely named PostgreSQL database, created through the admin URL."""

    admin: str
    name: str

    @classmethod
    def create(cls, admin: str) -> PgDatabase:
        name = f"wgm_py_{os.getpid()}_{uuid.uuid4().hex[:12]}"
        psql(admin, f"CREATE DATABASE {name}")
        return cls(admin, name)

    @property
    def url(self) -> str:
        return with_database(self.admin, self.name)

    def drop(self) -> None:
        psql(self.admin, f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


def psql(url: str, sql: str) -> None:
    """Run ``sql`` through the ``psql`` binary (the suite needs it)."""
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
        check=True,
        capture_output=True,
        timeout=60,
    )


# --- TOTP (RFC 6238) ----------------------------------------------------------------------


def totp_secret(uri: str) -> bytes:
    """The seed of an ``otpauth://`` URI."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
    text = query["secret"][0].upper()
    return base64.b32decode(text + "=" * (-len(text) % 8))


def totp_code(seed: bytes, at: float | None = None, step: int = 30, digits: int = 6) -> str:
    """The TOTP code of ``seed`` at ``at`` (SHA-1, as authenticator apps use)."""
    counter = int((time.time() if at is None else at) // step)
    mac = hmac.new(seed, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)
