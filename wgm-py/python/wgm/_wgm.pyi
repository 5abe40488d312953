"""The native module of wgm (Rust, pyo3). Private: use the package ``wgm``.

Operations run by name with JSON arguments and results (``Native.call``); see the crate
documentation of ``wgm-py`` (``wgm-py/src/ops.rs``) for every operation and its
arguments.
"""

from collections.abc import Awaitable
from os import PathLike
from typing import Optional, Union, final

__all__ = [
    "__version__",
    "Native",
    "Principal",
    "generate_private_key",
    "public_key",
    "generate_preshared_key",
    "wgquick_parse",
    "wgquick_render",
]

__version__: str

@final
class Principal:
    """Who a call acts as; only from ``Native.local_admin``, ``authenticate_token`` or ``login``."""

    @property
    def name(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def token_id(self) -> Optional[str]: ...
    @property
    def roles(self) -> list[str]: ...
    @property
    def is_admin(self) -> bool: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...

@final
class Native:
    """An open manager."""

    @staticmethod
    def open(
        store_url: Optional[str] = None,
        master_key_file: Optional[Union[str, PathLike[str]]] = None,
        master_key: Optional[str] = None,
        local_admin: bool = False,
    ) -> Native: ...
    @staticmethod
    def open_async(
        store_url: Optional[str] = None,
        master_key_file: Optional[Union[str, PathLike[str]]] = None,
        master_key: Optional[str] = None,
        local_admin: bool = False,
    ) -> Awaitable[Native]: ...
    @property
    def store_url(self) -> str: ...
    def local_admin(self, name: str) -> Principal: ...
    def authenticate_token(self, secret: str) -> Principal: ...
    def authenticate_token_async(self, secret: str) -> Awaitable[Principal]: ...
    def login(
        self,
        user: str,
        password: str,
        totp: Optional[str] = None,
        source: Optional[str] = None,
    ) -> Principal: ...
    def login_async(
        self,
        user: str,
        password: str,
        totp: Optional[str] = None,
        source: Optional[str] = None,
    ) -> Awaitable[Principal]: ...
    def call(self, principal: Principal, op: str, args: str) -> str: ...
    def call_async(self, principal: Principal, op: str, args: str) -> Awaitable[str]: ...

def generate_private_key() -> str: ...
def public_key(private_key: str) -> str: ...
def generate_preshared_key() -> str: ...
def wgquick_parse(text: str) -> str: ...
def wgquick_render(config: str) -> str: ...
