"""`wgm.keys`: generation, derivation, strictness, and keys never in a repr."""

from __future__ import annotations

import base64

import pytest

import wgm
import wgm.keys


def test_generate_gives_a_key_pair_whose_repr_hides_the_private_key() -> None:
    pair = wgm.keys.generate()
    assert len(pair.private_key) == 44 and len(pair.public_key) == 44
    assert len(base64.b64decode(pair.private_key)) == 32
    assert wgm.keys.public_key(pair.private_key) == pair.public_key
    for text in (repr(pair), str(pair), str(pair.to_dict())):
        assert pair.private_key not in text
    assert "<redacted>" in repr(pair)
    assert pair.to_dict() == {"public_key": pair.public_key}
    assert wgm.keys.generate() != pair


def test_preshared_keys_are_random_and_hidden() -> None:
    a, b = wgm.keys.generate_preshared(), wgm.keys.generate_preshared()
    assert a != b and len(base64.b64decode(a.key)) == 32
    assert a.key not in repr(a) and a.to_dict() == {}


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not base64",
        "AAAA",
        # 32 bytes, but not canonical base64 (the last character has spare bits set).
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=",
    ],
)
def test_a_bad_private_key_is_invalid_input_naming_the_field(bad: str) -> None:
    with pytest.raises(wgm.InvalidInput) as e:
        wgm.keys.public_key(bad)
    assert e.value.field == "private_key"
    assert e.value.code == 2
    if bad:
        assert bad not in str(e.value)
