"""MP4 box rewriting: ``moov`` moved in front of ``mdat`` in memory ("faststart"), with the
``stco``/``co64`` chunk offsets rewritten."""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

_CONTAINER_BOXES: Final = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl"})


@dataclass(frozen=True)
class _Box:
    kind: bytes
    start: int
    payload: int
    end: int


def _boxes(buf: bytes | bytearray, start: int, end: int) -> list[_Box]:
    boxes: list[_Box] = []
    pos = start
    while pos < end:
        if end - pos < 8:
            raise ValueError("trailing bytes after the last box")
        size = int.from_bytes(buf[pos : pos + 4], "big")
        kind = bytes(buf[pos + 4 : pos + 8])
        header = 8
        if size == 1:
            size = int.from_bytes(buf[pos + 8 : pos + 16], "big")
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError(f"box {kind!r} overruns its parent")
        boxes.append(_Box(kind, pos, pos + header, pos + size))
        pos += size
    return boxes


def _faststart(mp4: bytes) -> bytes:
    """Move ``moov`` in front of the first ``mdat`` and fix the chunk offsets.

    ``free`` boxes before ``mdat`` (FFmpeg's placeholder) are dropped. Raises ``ValueError`` for
    a layout it cannot handle (no ``moov``, an offset outside the moved boxes, a 32-bit offset
    overflow).
    """
    top = _boxes(mp4, 0, len(mp4))
    moov = next((b for b in top if b.kind == b"moov"), None)
    first_mdat = next((i for i, b in enumerate(top) if b.kind == b"mdat"), None)
    if moov is None:
        raise ValueError("no moov box")
    if first_mdat is None or top.index(moov) < first_mdat:
        return mp4
    head = [b for b in top[:first_mdat] if b.kind != b"free"]
    tail = [b for b in top[first_mdat:] if b is not moov]
    moov_size = moov.end - moov.start
    old_starts: list[int] = []
    new_starts: list[int] = []
    ends: list[int] = []
    pos = sum(b.end - b.start for b in head) + moov_size
    for b in tail:
        old_starts.append(b.start)
        new_starts.append(pos)
        ends.append(b.end)
        pos += b.end - b.start

    def shift(offset: int) -> int:
        i = bisect.bisect_right(old_starts, offset) - 1
        if i < 0 or offset >= ends[i]:
            raise ValueError("a chunk offset points outside the media boxes")
        return offset - old_starts[i] + new_starts[i]

    box = bytearray(mp4[moov.start : moov.end])
    _patch_offsets(box, 0, len(box), shift)
    return b"".join(
        [*(mp4[b.start : b.end] for b in head), bytes(box)] + [mp4[b.start : b.end] for b in tail]
    )


def _patch_offsets(buf: bytearray, start: int, end: int, shift: Callable[[int], int]) -> None:
    for box in _boxes(buf, start, end):
        if box.kind in _CONTAINER_BOXES:
            _patch_offsets(buf, box.payload, box.end, shift)
            continue
        if box.kind in (b"stco", b"co64"):
            wide = box.kind == b"co64"
            count = int.from_bytes(buf[box.payload + 4 : box.payload + 8], "big")
            width = 8 if wide else 4
            first = box.payload + 8
            if first + count * width > box.end:
                raise ValueError("chunk offset table overruns its box")
            fmt = f">{count}{'Q' if wide else 'I'}"
            offsets = [shift(v) for v in struct.unpack_from(fmt, buf, first)]
            if not wide and offsets and max(offsets) > 0xFFFFFFFF:
                raise ValueError("a 32-bit chunk offset overflows after moving moov")
            struct.pack_into(fmt, buf, first, *offsets)
