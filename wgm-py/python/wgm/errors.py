"""The exceptions of wgm: one class per kind of library error, all under `WgmError`.

Every error the library raises is a `WgmError`. Catch the subclass for the situations
you handle and let the rest propagate::

    try:
        manager.add_peer(admin, "office", "alice")
    except wgm.AlreadyExists:
        ...                       # a peer of that name exists
    except wgm.PoolExhausted as e:
        print("full:", e.details["pool"])

Each class carries its library ``kind`` and the ``code`` the ``wgm`` command line exits
with for it (so a wrapper script can mirror the CLI). Each instance carries the message
(``str(err)``; never a secret), and where the library names them, the ``field`` that was
wrong, the ``reason`` and a ``details`` dict (never ``None``).

The native module raises these classes itself: it asks `error_class` for the class of
the library's error ``kind`` (this module's table is the only one) and constructs it as
``cls(message, field=..., reason=..., details=...)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "WgmError",
    "InvalidInput",
    "ParseError",
    "NotFound",
    "AlreadyExists",
    "Conflict",
    "PoolExhausted",
    "PermissionDenied",
    "Unauthenticated",
    "Throttled",
    "Unsupported",
    "Sealed",
    "BackendError",
    "Unavailable",
    "error_class",
]


class WgmError(Exception):
    """Base class of every error wgm raises.

    Attributes:
        kind: the library's name for this kind of error (class attribute), e.g.
            ``"invalid_input"``.
        code: the exit code of the ``wgm`` CLI for this kind (class attribute).
        field: the input field at fault (``"peer.ipv6"``), when the library names one.
        reason: why, in words, when the library gives it apart from the message.
        details: further machine-readable facts (see each subclass); never ``None``.

    Example::

        try:
            manager.get_server(admin, "nope")
        except wgm.WgmError as e:
            print(e.kind, e.code, e)      # not_found 3 server nope not found
    """

    kind: ClassVar[str] = "error"
    code: ClassVar[int] = 1

    field: str | None
    reason: str | None
    details: dict[str, Any]

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason
        self.details = dict(details) if details is not None else {}

    @property
    def message(self) -> str:
        """The message (the same as ``str(err)``)."""
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        parts = [repr(self.message)]
        if self.field is not None:
            parts.append(f"field={self.field!r}")
        if self.reason is not None:
            parts.append(f"reason={self.reason!r}")
        if self.details:
            parts.append(f"details={self.details!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only attributes survive pickling (multiprocessing, concurrent.futures).
        return (
            _rebuild,
            (type(self), self.message, self.field, self.reason, self.details),
        )


def _rebuild(
    cls: type[WgmError],
    message: str,
    field: str | None,
    reason: str | None,
    details: dict[str, Any],
) -> WgmError:
    return cls(message, field=field, reason=reason, details=details)


class InvalidInput(WgmError, ValueError):
    """An argument was refused: ``field`` names it and ``reason`` says which rule.

    Also a `ValueError`, so code that validates with ``except ValueError`` keeps working.
    """

    kind = "invalid_input"
    code = 2


class ParseError(InvalidInput):
    """A text (a wg-quick file, a key) could not be parsed.

    ``details["line"]`` (also `line`) is the 1-based line of a wg-quick file, when known.
    """

    kind = "parse"
    code = 2

    @property
    def line(self) -> int | None:
        """The 1-based line at fault, when the input is a file."""
        line = self.details.get("line")
        return line if isinstance(line, int) else None


class NotFound(WgmError):
    """The object does not exist, or the caller may not know that it does.

    ``details`` holds ``{"object": "server" | "peer" | …, "id": str}``.
    """

    kind = "not_found"
    code = 3


class AlreadyExists(WgmError):
    """An object with that name (or key) exists: ``details`` = ``{"object", "id"}``."""

    kind = "already_exists"
    code = 4


class Conflict(WgmError):
    """The change conflicts with the stored state.

    ``details["conflict"]`` says how: ``"stale_revision"`` (a lost race; the library
    already retried), ``"taken"`` (an address, prefix or key another object holds),
    ``"quarantined"``, ``"audit_chain_broken"``, ``"revision_altered"``, …
    """

    kind = "conflict"
    code = 4

    @property
    def conflict(self) -> str | None:
        """The kind of conflict (``details["conflict"]``)."""
        value = self.details.get("conflict")
        return value if isinstance(value, str) else None


class PoolExhausted(WgmError):
    """No free address or prefix is left: ``details["pool"]`` names the pool.

    Nothing is written by the refused call.
    """

    kind = "pool_exhausted"
    code = 4


class PermissionDenied(WgmError):
    """The principal may not do this (the refusal is audited)."""

    kind = "permission_denied"
    code = 5


class Unauthenticated(WgmError):
    """The credentials (token, password, TOTP code) were not accepted."""

    kind = "unauthenticated"
    code = 5


class Throttled(WgmError):
    """Too many failed logins: try again after ``details["retry_after"]`` seconds."""

    kind = "throttled"
    code = 5

    @property
    def retry_after(self) -> int | None:
        """Seconds to wait before the next attempt, when known."""
        value = self.details.get("retry_after")
        return value if isinstance(value, int) else None


class Unsupported(WgmError):
    """This build, store or host cannot do that (for example no kernel WireGuard)."""

    kind = "unsupported"
    code = 6


class Sealed(WgmError):
    """A sealed secret could not be opened: wrong or missing master key."""

    kind = "sealed"
    code = 6


class BackendError(WgmError):
    """The WireGuard or network backend failed: ``details["backend"]`` names it."""

    kind = "backend"
    code = 6


class Unavailable(WgmError):
    """The store failed or could not be reached: ``details["store"]`` names it."""

    kind = "store"
    code = 6


_BY_KIND: dict[str, type[WgmError]] = {
    cls.kind: cls
    for cls in (
        InvalidInput,
        ParseError,
        NotFound,
        AlreadyExists,
        Conflict,
        PoolExhausted,
        PermissionDenied,
        Unauthenticated,
        Throttled,
        Unsupported,
        Sealed,
        BackendError,
        Unavailable,
    )
}


def error_class(kind: str) -> type[WgmError]:
    """The exception class of a library error ``kind`` (`WgmError` for unknown kinds).

    >>> error_class("not_found").__name__
    'NotFound'
    """
    return _BY_KIND.get(kind, WgmError)
