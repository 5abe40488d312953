"""The machinery of wgm's result types (private): frozen slotted dataclasses with a
secret-aware ``repr``/``to_dict``, and the parsers of the JSON the native module returns.

Every public result type is declared with `model` and derives from `Model`. A field
declared with `secret()` is left out of ``repr``, ``str`` and ``to_dict()`` (shown as
``<redacted>`` in the ``repr``); it is still an attribute for whoever asked for it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import ipaddress
import re
import socket
import sys
import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, TypeVar, Union, cast

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_kwargs: Any) -> Callable[[Any], Any]:
        return lambda f: f


_C = TypeVar("_C", bound=type)
_T = TypeVar("_T")

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPInterface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]

_SECRET = MappingProxyType({"wgm_secret": True})
_SLOTS: dict[str, bool] = {"slots": True} if sys.version_info >= (3, 10) else {}


def secret(*, default: Any = dataclasses.MISSING) -> Any:
    """A field holding a secret, never shown by ``repr``/``to_dict`` (``<redacted>``)."""
    return dataclasses.field(default=default, metadata=_SECRET)


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, secret))
def model(cls: _C) -> _C:
    """Make ``cls`` a frozen (and, on Python 3.10+, slotted) dataclass.

    ``repr`` comes from `Model` (secrets redacted); ``==`` and ``hash`` compare fields.
    """
    return cast(_C, dataclasses.dataclass(frozen=True, repr=False, **_SLOTS)(cls))


class Model:
    """Base of wgm's immutable result types: ``repr``, ``==`` and `to_dict`."""

    __slots__ = ()

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.metadata.get("wgm_secret"):
                parts.append(f"{f.name}=<redacted>")
            else:
                value = getattr(self, f.name)
                if isinstance(value, MappingProxyType):
                    value = dict(value)
                parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def to_dict(self) -> dict[str, Any]:
        """The object as a JSON-compatible ``dict`` keyed by attribute name.

        Addresses, networks and ids become strings, times RFC 3339 strings, nested
        objects dicts and tuples lists, so ``json.dumps(obj.to_dict())`` works. Secret
        fields (private keys, preshared keys, token plaintexts, config texts holding
        keys) are left out.
        """
        return {
            f.name: jsonable(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if not f.metadata.get("wgm_secret")
        }


def jsonable(value: Any) -> Any:
    """``value`` with wgm's Python types turned into JSON-compatible ones."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Model):
        return value.to_dict()
    if isinstance(value, _dt.datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    # UUID, ipaddress objects.
    return str(value)


# ---------------------------------------------------------------------------------------
# Parsers of the native module's JSON (trusted: it is the library's own serde output).

_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|z|[+-]\d\d:\d\d)$"
)


def parse_time(text: str) -> _dt.datetime:
    """An RFC 3339 time as an aware `datetime` in UTC (sub-microseconds dropped)."""
    # The library writes UTC times as `YYYY-MM-DDTHH:MM:SS[.fraction]Z`: the fast path
    # hands `fromisoformat` (C) the same time with exactly six fraction digits, which
    # every supported Python accepts. Anything else goes through the regex.
    if len(text) >= 20 and text[-1] == "Z" and text[10] == "T":
        body = text[:-1]
        dot = body.find(".", 19)
        if dot == -1:
            iso = body + ".000000+00:00"
        else:
            iso = body[:dot] + "." + body[dot + 1 : dot + 7].ljust(6, "0") + "+00:00"
        try:
            return _dt.datetime.fromisoformat(iso)
        except ValueError:
            pass
    m = _RFC3339.match(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, sec, frac, zone = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    if zone in ("Z", "z"):
        tz = _dt.timezone.utc
    else:
        sign = 1 if zone[0] == "+" else -1
        tz = _dt.timezone(sign * _dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    t = _dt.datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(sec), micro, tzinfo=tz
    )
    return t.astimezone(_dt.timezone.utc)


def opt(parse: Callable[[Any], _T], value: Any) -> _T | None:
    """``parse(value)``, or ``None`` when ``value`` is ``None``."""
    return None if value is None else parse(value)


def parse_dns(text: str) -> IPAddress | str:
    """A DNS entry: a resolver address, or a search domain as text."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return text


def parse_uuid(text: str) -> uuid.UUID:
    """An id."""
    return uuid.UUID(text)


# Addresses are read with the C parser (`inet_pton`) and built from their integer value,
# several times faster than `ipaddress` parsing the text (results of thousands of peers
# are read this way); text `inet_pton` refuses falls back to `ipaddress`, which raises.


def _int6(text: str) -> int:
    return int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")


def _int4(text: str) -> int:
    return int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")


def parse_v6(text: str) -> ipaddress.IPv6Address:
    """An IPv6 address."""
    try:
        return ipaddress.IPv6Address(_int6(text))
    except (OSError, ValueError):
        return ipaddress.IPv6Address(text)


def parse_v4(text: str) -> ipaddress.IPv4Address:
    """An IPv4 address."""
    try:
        return ipaddress.IPv4Address(_int4(text))
    except (OSError, ValueError):
        return ipaddress.IPv4Address(text)


def parse_addr(text: str) -> IPAddress:
    """An IPv4 or IPv6 address."""
    return parse_v6(text) if ":" in text else parse_v4(text)


def parse_net(text: str) -> IPNetwork:
    """An IPv4 or IPv6 network (no host bits: the library refuses them)."""
    addr, slash, prefix = text.partition("/")
    if slash and prefix.isdigit():
        try:
            if ":" in addr:
                return ipaddress.IPv6Network((_int6(addr), int(prefix)))
            return ipaddress.IPv4Network((_int4(addr), int(prefix)))
        except (OSError, ValueError):
            pass
    return ipaddress.ip_network(text)


def parse_iface(text: str) -> IPInterface:
    """An address with its prefix length (host bits allowed), e.g. ``fd00::1/64``."""
    return ipaddress.ip_interface(text)


def frozen_map(value: Any) -> Mapping[str, Any]:
    """A read-only view of a JSON object (``{}`` for ``null``)."""
    return MappingProxyType(dict(value or {}))
