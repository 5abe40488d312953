"""The package itself: version, exports, documentation, immutable results."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import json
import pickle
import subprocess
import sys
import types
from typing import Any

import pytest

import wgm
import wgm.aio
import wgm.errors
import wgm.keys
import wgm.models
import wgm.wgquick

MODULES: list[types.ModuleType] = [wgm, wgm.aio, wgm.errors, wgm.keys, wgm.models, wgm.wgquick]


def test_version_is_the_distributions() -> None:
    assert wgm.__version__ == importlib.metadata.version("wgm")
    assert wgm.__version__ == wgm._wgm.__version__


def test_every_export_exists_and_is_documented() -> None:
    for module in MODULES:
        assert module.__doc__, module.__name__
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj)):
                continue  # constants and type aliases
            assert inspect.getdoc(obj), f"{module.__name__}.{name}"
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr.startswith("_") or not (
                        callable(member) or isinstance(member, (property, classmethod))
                    ):
                        continue
                    assert inspect.getdoc(getattr(obj, attr)), f"{module.__name__}.{name}.{attr}"


def test_wgm_aio_is_imported_on_first_use() -> None:
    code = "import sys, wgm; assert 'wgm.aio' not in sys.modules; wgm.aio.Manager; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_results_are_frozen_comparable_and_serialisable(
    manager: wgm.Manager, admin: wgm.Principal, office: wgm.Server
) -> None:
    alice = manager.add_peer(admin, office, "alice")
    results: list[Any] = [
        office,
        alice,
        manager.history(admin, office)[0],
        manager.query_audit(admin)[0],
        manager.create_user(admin, "bob"),
        manager.list_roles(admin)[0],
        manager.plan(admin, office, backend="userspace"),
        manager.verify_audit(admin),
    ]
    for r in results:
        assert dataclasses.is_dataclass(r) and not isinstance(r, type)
        assert isinstance(r, wgm.models.Model)
        field = dataclasses.fields(r)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(r, field, None)
        if sys.version_info >= (3, 10):
            assert not hasattr(r, "__dict__"), type(r)  # slotted
        d = r.to_dict()
        json.dumps(d)
        assert set(d) <= {f.name for f in dataclasses.fields(r)}
        assert repr(r).startswith(type(r).__name__ + "(")
        assert r == dataclasses.replace(r)
    assert alice.to_dict()["address_v6"] == str(alice.address_v6)
    assert alice.to_dict()["id"] == str(alice.id)
    assert alice.to_dict()["created_at"] == alice.created_at.isoformat()
    assert hash(alice) == hash(manager.get_peer(admin, office, alice))
    assert pickle.loads(pickle.dumps(alice)) == alice
    assert alice != manager.add_peer(admin, office, "bob")


def test_every_native_operation_is_reachable() -> None:
    """Each op the native module runs is built by the Python layer, and no other."""
    import re
    from pathlib import Path

    rust = (Path(__file__).parents[1] / "src" / "ops.rs").read_text()
    native = set(re.findall(r'^\s+"([a-z_]+)" => \{', rust, re.M))
    python = set(re.findall(r'Call\(\s*"([a-z_]+)"', inspect.getsource(wgm._ops)))
    assert len(native) >= 40
    assert python == native
