"""Opaque, time-ordered ids (UUIDv7 layout, as 32 hex characters).

The first 48 bits are the creation time in milliseconds, so the keys of old objects sort before
the keys of new ones: a retention sweep deletes a dense range of the key space, listed in a few
pages, instead of probing each key. The rest is random. An id says when a record was made and
nothing about who it belongs to.
"""

from __future__ import annotations

import os
import time


def new_id(now_ms: int | None = None) -> str:
    """A new 128-bit id: 48-bit unix milliseconds ‖ version 7 ‖ 74 random bits, in hex."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | rand
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version nibble
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return f"{value:032x}"


def id_time_ms(value: str) -> int:
    """The creation time (unix ms) encoded in an id made by :func:`new_id`."""
    return int(value[:12], 16)
