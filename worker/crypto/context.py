"""Canonical encoding of an encryption context (``Mapping[str, str]``).

The encoding is what gets authenticated: ``u32 count`` then, for each entry sorted by the UTF-8
bytes of its key, ``u32 len(key) ‖ key ‖ u32 len(value) ‖ value`` (lengths big-endian, strings
UTF-8). Two mappings with the same items encode identically whatever their insertion order.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from .errors import ContextError

__all__ = ["canonical_context", "length_prefixed"]

_U32 = struct.Struct(">I")


def length_prefixed(data: bytes) -> bytes:
    """Return ``u32 len(data) ‖ data``."""
    return _U32.pack(len(data)) + data


def canonical_context(context: Mapping[str, str]) -> bytes:
    """Encode ``context`` canonically (sorted, length-prefixed); see the module docstring.

    Raises :class:`ContextError` if a key or value is not a string, or a key is empty.
    """
    if not isinstance(context, Mapping):
        raise ContextError("encryption context must be a mapping of str to str")
    items: list[tuple[bytes, bytes]] = []
    for key, value in context.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ContextError("encryption context keys and values must be str")
        if not key:
            raise ContextError("encryption context keys must not be empty")
        try:
            items.append((key.encode("utf-8"), value.encode("utf-8")))
        except UnicodeEncodeError:
            raise ContextError("encryption context must be valid Unicode text") from None
    items.sort()
    parts = [_U32.pack(len(items))]
    for key_b, value_b in items:
        parts.append(length_prefixed(key_b))
        parts.append(length_prefixed(value_b))
    return b"".join(parts)
