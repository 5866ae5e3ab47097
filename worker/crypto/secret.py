"""A holder for key bytes that never prints them."""

from __future__ import annotations

import hmac
from typing import NoReturn

__all__ = ["SecretKey"]


class SecretKey:
    """Key material that does not show up in ``repr``, ``str``, logs or pickles.

    Use :meth:`raw` to get the bytes where a primitive needs them; do not keep the result.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray | memoryview):
            raise TypeError("SecretKey needs bytes")
        self._key = bytes(key)

    def raw(self) -> bytes:
        """Return the key bytes."""
        return self._key

    def __len__(self) -> int:
        return len(self._key)

    def __repr__(self) -> str:
        return f"SecretKey(<{len(self._key)} bytes>)"

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretKey):
            return NotImplemented
        return hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        raise TypeError("SecretKey is not hashable")

    def __reduce__(self) -> NoReturn:
        raise TypeError("SecretKey cannot be pickled")

    def __bytes__(self) -> NoReturn:
        # bytes(key) would be an easy way to leak it into a log line; force .raw().
        raise TypeError("use SecretKey.raw() to get the key bytes")
