"""The exception classes: the contract's table, attributes, pickling."""

from __future__ import annotations

import pickle

import pytest

import wgm
import wgm.errors
from wgm.errors import error_class

TABLE = [
    # (class, kind, code)
    (wgm.InvalidInput, "invalid_input", 2),
    (wgm.ParseError, "parse", 2),
    (wgm.NotFound, "not_found", 3),
    (wgm.AlreadyExists, "already_exists", 4),
    (wgm.Conflict, "conflict", 4),
    (wgm.PoolExhausted, "pool_exhausted", 4),
    (wgm.PermissionDenied, "permission_denied", 5),
    (wgm.Unauthenticated, "unauthenticated", 5),
    (wgm.Throttled, "throttled", 5),
    (wgm.Unsupported, "unsupported", 6),
    (wgm.Sealed, "sealed", 6),
    (wgm.BackendError, "backend", 6),
    (wgm.Unavailable, "store", 6),
]


@pytest.mark.parametrize(("cls", "kind", "code"), TABLE)
def test_each_kind_has_its_class_code_and_base(
    cls: type[wgm.WgmError], kind: str, code: int
) -> None:
    assert issubclass(cls, wgm.WgmError)
    assert cls.kind == kind
    assert cls.code == code
    assert error_class(kind) is cls
    assert getattr(wgm.errors, cls.__name__) is cls
    assert cls.__doc__


def test_the_hierarchy_is_the_contracts() -> None:
    assert issubclass(wgm.ParseError, wgm.InvalidInput)
    assert issubclass(wgm.InvalidInput, ValueError)
    assert not issubclass(wgm.PoolExhausted, wgm.Conflict)
    assert error_class("something_new") is wgm.WgmError


def test_attributes_as_the_native_module_builds_them() -> None:
    e = wgm.InvalidInput(
        "invalid peer.ipv6: outside the pool", field="peer.ipv6", reason="outside the pool"
    )
    assert str(e) == "invalid peer.ipv6: outside the pool"
    assert e.message == str(e)
    assert (e.field, e.reason, e.details) == ("peer.ipv6", "outside the pool", {})
    assert "field='peer.ipv6'" in repr(e)
    bare = wgm.NotFound("server x not found")
    assert bare.field is None and bare.reason is None and bare.details == {}
    p = wgm.ParseError("line 3: bad key", field="Peer.PublicKey", details={"line": 3})
    assert p.line == 3
    assert wgm.Throttled("wait", details={"retry_after": 30}).retry_after == 30
    assert wgm.Conflict("taken", details={"conflict": "taken"}).conflict == "taken"


@pytest.mark.parametrize(("cls", "kind", "code"), TABLE)
def test_errors_pickle_with_their_attributes(cls: type[wgm.WgmError], kind: str, code: int) -> None:
    e = cls("message", field="f", reason="r", details={"k": 1})
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is cls
    assert (str(back), back.field, back.reason, back.details) == ("message", "f", "r", {"k": 1})
