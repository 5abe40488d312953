"""WireGuard keys: generate key pairs and preshared keys, derive public keys.

Keys are 44-character base64 strings, exactly as ``wg genkey``/``wg pubkey`` print them
and as strict: non-canonical base64 and low-order public keys are refused.

Example::

    import wgm.keys

    pair = wgm.keys.generate()
    print(pair)                       # KeyPair(public_key='…', private_key=<redacted>)
    assert wgm.keys.public_key(pair.private_key) == pair.public_key
"""

from __future__ import annotations

from . import _wgm
from ._model import Model, model, secret

__all__ = ["KeyPair", "PresharedKey", "generate", "public_key", "generate_preshared"]


@model
class KeyPair(Model):
    """A key pair; ``private_key`` is hidden from ``repr``/``str``/``to_dict()``."""

    public_key: str
    private_key: str = secret()


@model
class PresharedKey(Model):
    """A preshared key; ``key`` (base64) is hidden from ``repr``/``str``/``to_dict()``."""

    key: str = secret()


def generate() -> KeyPair:
    """A new random key pair (from the OS random number generator)."""
    private = _wgm.generate_private_key()
    return KeyPair(public_key=_wgm.public_key(private), private_key=private)


def public_key(private_key: str) -> str:
    """The public key of a base64 private key.

    Raises `wgm.InvalidInput` (field ``private_key``) for anything but a canonical key;
    the message never repeats it.
    """
    return _wgm.public_key(private_key)


def generate_preshared() -> PresharedKey:
    """A new random preshared key."""
    return PresharedKey(key=_wgm.generate_preshared_key())
