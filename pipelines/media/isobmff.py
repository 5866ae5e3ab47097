"""ISO-BMFF (MP4, MOV) pre-walk: the box tree checked in pure Python before FFmpeg sees it.

FFmpeg's ``mov`` demuxer allocates its sample index from the counts a file *declares*: a 1.5 KB
MP4 whose ``stsz`` claims 80 million samples of a constant size (the tables stay one entry long)
makes ``av.open`` build an 80-million-entry index, about 5 GB, before any limit of ours can look
at the stream. Several tables (``stco``, ``stsc``, ``stss``, ``ctts``, ``elst``, ``sbgp``,
``trun``...) are allocated in full from their entry count before a byte of them is read.

:func:`prewalk` reads only box headers and counts, over the bytes already in memory, never past
the bounds of the box being read, and refuses before FFmpeg runs:

* an entry count whose table cannot fit in its box (or the file): :class:`CorruptMedia`;
* a track whose sample, chunk or time-to-sample counts exceed what the limits allow (derived from
  :class:`~pipelines.media.video.VideoLimits`: ``max_frames`` and ``max_duration_s``), the same
  for fragmented MP4 (``moof``/``traf``/``trun`` sample counts summed per file), and raw-audio
  tracks whose chunk table expands past the duration limit: :class:`TooLong`;
* more edit-list entries, tracks, boxes or nesting levels than the limits: :class:`CorruptMedia`;
* a compressed movie header (``cmov``, zlib inside ``moov``, which could hide any table):
  :class:`UnsupportedFormat`.

The walk follows FFmpeg's own reading rules (``mov_read_default``): a box larger than its parent
is clamped to the parent, a box smaller than its header ends the parent's list, size 0 means "to
the end of the parent", size 1 a 64-bit size, and a table box counts for the track opened last
wherever it sits (FFmpeg attaches it to its newest stream), so a table hidden in an unusual
parent is still seen. The ``mfra`` box that the file's last four bytes (``mfro``) point to is
walked too. Nothing is allocated in proportion to a declared count: tables that are summed (time
to sample, sample to chunk) are read only after their count has passed the limit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from pipelines.errors import CorruptMedia, TooLong, UnsupportedFormat

# Boxes FFmpeg parses as a plain list of child boxes (mov_read_default and its thin wrappers).
_CONTAINERS: Final = frozenset(
    {
        b"moov",
        b"trak",
        b"mdia",
        b"minf",
        b"stbl",
        b"edts",
        b"dinf",
        b"mvex",
        b"moof",
        b"traf",
        b"mfra",
        b"tref",
        b"udta",
        b"ilst",
        b"sinf",
        b"schi",
        b"tapt",
        b"rmra",
        b"rmda",
        b"clip",
        b"matt",
        b"imap",
        b"gmhd",
        b"iprp",
        b"ipco",
        b"wave",
    }
)
# Fixed-size-entry tables: (offset of the u32 entry count in the payload, bytes per entry).
_TABLES: Final[dict[bytes, tuple[int, int]]] = {
    b"stco": (4, 4),
    b"co64": (4, 8),
    b"stss": (4, 4),
    b"stps": (4, 4),
    b"stsc": (4, 12),
    b"stts": (4, 8),
    b"ctts": (4, 8),
    b"saio": (4, 4),  # version 1: 8 (see _table)
    b"stsd": (4, 8),  # sample descriptions are boxes of at least 8 bytes
    b"dref": (4, 8),  # data references are boxes of at least 8 bytes
}
# Tables whose count is a number of samples, chunks or time-to-sample runs of one track.
_SAMPLE_TABLES: Final = frozenset(
    {b"stco", b"co64", b"stss", b"stps", b"stsc", b"stts", b"ctts", b"sbgp", b"saio"}
)


@dataclass(frozen=True)
class BmffLimits:
    """Bounds of the pre-walk. :meth:`for_video` derives them from the video limits."""

    max_samples: int  # per track: samples, chunks, table entries, fragment samples
    max_raw_audio_samples: int  # per raw-audio track (PCM indexed by chunk): audio samples
    max_edits: int = 64  # edit-list entries per track
    max_tracks: int = 32
    max_boxes: int = 100_000  # box headers read in the whole file
    max_depth: int = 10  # FFmpeg's own nesting limit

    @classmethod
    def for_video(cls, max_frames: int, max_duration_s: float) -> BmffLimits:
        """Twice the frame limit, or 2000 samples a second of the duration limit, whichever is
        more (audio and timed-metadata tracks have more samples than frames; the exact frame
        and duration limits are applied later, on the demuxed packets); raw audio up to
        384 kHz for twice the duration."""
        per_track = 2 * max(max_frames, math.ceil(max_duration_s * 1000))
        return cls(
            max_samples=per_track,
            max_raw_audio_samples=math.ceil(2 * max_duration_s * 384_000),
        )


@dataclass(frozen=True)
class BmffSummary:
    """What the pre-walk counted (for tests and benchmarks)."""

    boxes: int
    tracks: int
    fragments: int
    samples: tuple[int, ...]  # declared samples per track (moov tables plus fragments)


@dataclass
class _Track:
    handler: bytes = b""
    track_id: int = 0
    samples: int = 0
    chunks: int = 0
    edits: int = 0
    stts_entries: int = 0
    stts_total: int = 0
    stts_unit_delta: bool = False  # one time-to-sample run of duration 1 (FFmpeg's raw audio)
    stsc: list[tuple[int, int]] = field(default_factory=list)  # (first chunk, samples/chunk)


class _Walker:
    def __init__(self, data: bytes | bytearray | memoryview, limits: BmffLimits) -> None:
        self.data = memoryview(data).cast("B")
        self.limits = limits
        self.boxes = 0
        self.fragments = 0
        self.tracks: list[_Track] = []
        self.fragment_samples: dict[int, int] = {}
        self._traf_track = 0

    # ----- reading, always inside [start, end) of the box being read ------------------------

    def u8(self, pos: int, end: int) -> int:
        if pos + 1 > end:
            raise CorruptMedia("a media box is cut short")
        return self.data[pos]

    def u16(self, pos: int, end: int) -> int:
        if pos + 2 > end:
            raise CorruptMedia("a media box is cut short")
        return int.from_bytes(self.data[pos : pos + 2], "big")

    def u32(self, pos: int, end: int) -> int:
        if pos + 4 > end:
            raise CorruptMedia("a media box is cut short")
        return int.from_bytes(self.data[pos : pos + 4], "big")

    def u64(self, pos: int, end: int) -> int:
        if pos + 8 > end:
            raise CorruptMedia("a media box is cut short")
        return int.from_bytes(self.data[pos : pos + 8], "big")

    def children(self, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
        """``(type, payload start, box end)`` of each box in ``[start, end)``, FFmpeg's way."""
        pos = start
        while end - pos >= 8:
            self.boxes += 1
            if self.boxes > self.limits.max_boxes:
                raise CorruptMedia(f"the media has more than {self.limits.max_boxes} boxes")
            size = int.from_bytes(self.data[pos : pos + 4], "big")
            kind = bytes(self.data[pos + 4 : pos + 8])
            header = 8
            if size == 1:
                if end - pos < 16:
                    return
                size = int.from_bytes(self.data[pos + 8 : pos + 16], "big")
                header = 16
            elif size == 0:
                size = end - pos
            if size < header:
                return  # FFmpeg stops reading this list
            size = min(size, end - pos)  # clamped to the parent, as FFmpeg does
            yield kind, pos + header, pos + size
            pos += size

    # ----- the walk ---------------------------------------------------------------------------

    def walk(self, start: int, end: int, depth: int, parent: bytes = b"") -> None:
        if depth > self.limits.max_depth:
            raise CorruptMedia("the media's boxes are nested too deeply")
        for kind, payload, box_end in self.children(start, end):
            if kind == b"cmov":
                raise UnsupportedFormat("compressed movie headers are not supported")
            if kind == b"trak":
                if len(self.tracks) >= self.limits.max_tracks:
                    raise CorruptMedia(f"the media has more than {self.limits.max_tracks} tracks")
                self.tracks.append(_Track())
            elif kind == b"moof":
                self.fragments += 1
            if kind in _CONTAINERS:
                self.walk(payload, box_end, depth + 1, kind)
            elif kind == b"meta":
                # ISO meta is a full box (4 bytes of version and flags); QuickTime's is not.
                skip = 0 if bytes(self.data[payload + 4 : payload + 8]) == b"hdlr" else 4
                self.walk(min(payload + skip, box_end), box_end, depth + 1, kind)
            else:
                self.leaf(kind, payload, box_end, parent)

    def current(self) -> _Track | None:
        return self.tracks[-1] if self.tracks else None

    def fits(self, count: int, entry: int, first: int, end: int, what: bytes) -> None:
        if count * entry > end - first:
            name = what.decode("latin-1")
            raise CorruptMedia(f"the {name} table declares more entries than its box holds")

    def bounded(self, count: int, what: bytes) -> None:
        if count > self.limits.max_samples:
            name = "samples" if what == b"stsz" else f"{what.decode('latin-1')} entries"
            raise TooLong(
                f"a track declares {count} {name}; the limit is {self.limits.max_samples}"
            )

    def leaf(self, kind: bytes, p: int, end: int, parent: bytes) -> None:
        track = self.current()
        if kind == b"hdlr" and parent == b"mdia" and track is not None and not track.handler:
            track.handler = bytes(self.data[p + 8 : p + 12]) if end - p >= 12 else b""
        elif kind == b"tkhd" and track is not None:
            track.track_id = self.u32(p + (20 if self.u8(p, end) == 1 else 12), end)
        elif kind in _TABLES:
            at, entry = _TABLES[kind]
            if kind == b"saio":
                flags = self.u32(p, end) & 0xFFFFFF
                at += 8 if flags & 1 else 0
                entry = 8 if self.u8(p, end) == 1 else 4
            count = self.u32(p + at, end)
            self.fits(count, entry, p + at + 4, end, kind)
            if kind in _SAMPLE_TABLES:
                self.bounded(count, kind)
            if track is None:
                return
            if kind in (b"stco", b"co64"):
                track.chunks = count
            elif kind == b"stts":
                track.stts_entries = count
                self.stts(track, p + 8, count)
            elif kind == b"stsc":
                table = np.frombuffer(self.data[p + 8 : p + 8 + 12 * count], ">u4")
                rows = table.reshape(count, 3)[:, :2].astype(np.int64)
                track.stsc = [(int(a), int(b)) for a, b in rows]
        elif kind == b"stsz":
            size, count = self.u32(p + 4, end), self.u32(p + 8, end)
            if size == 0:
                self.fits(count, 4, p + 12, end, kind)
            self.sample_count(track, count)
        elif kind == b"stz2":
            bits, count = self.u8(p + 7, end), self.u32(p + 8, end)
            if bits not in (4, 8, 16):
                raise CorruptMedia("the stz2 table has an invalid field size")
            self.fits((count * bits + 7) // 8, 1, p + 12, end, kind)
            self.sample_count(track, count)
        elif kind == b"elst":
            version, count = self.u8(p, end), self.u32(p + 4, end)
            self.fits(count, 20 if version == 1 else 12, p + 8, end, kind)
            if count > self.limits.max_edits:
                raise CorruptMedia(
                    f"an edit list has {count} entries; at most {self.limits.max_edits} "
                    "are accepted"
                )
            if track is not None:
                track.edits = count
        elif kind == b"sbgp":
            version = self.u8(p, end)
            at = p + 8 + (4 if version == 1 else 0)
            count = self.u32(at, end)
            self.fits(count, 8, at + 4, end, kind)
            self.bounded(count, kind)
        elif kind in (b"saiz", b"senc"):
            flags = self.u32(p, end) & 0xFFFFFF
            if kind == b"saiz":
                at = p + 4 + (8 if flags & 1 else 0)
                default = self.u8(at, end)
                count = self.u32(at + 1, end)
                self.fits(count, 0 if default else 1, at + 5, end, kind)
            else:
                count = self.u32(p + 4, end)
            self.bounded(count, kind)
        elif kind == b"sgpd":
            version = self.u8(p, end)
            at = p + 8 + (4 if version >= 1 else 0) + (4 if version >= 2 else 0)
            count = self.u32(at, end)
            self.fits(count, 1, at + 4, end, kind)
            self.bounded(count, kind)
        elif kind == b"tfhd":
            self._traf_track = self.u32(p + 4, end)
        elif kind == b"trun":
            self.trun(p, end)
        elif kind == b"tfra":
            version, sizes, count = self.u8(p, end), self.u32(p + 8, end), self.u32(p + 12, end)
            widths = (sizes & 3) + (sizes >> 2 & 3) + (sizes >> 4 & 3)
            entry = (16 if version == 1 else 8) + 3 + widths
            self.fits(count, entry, p + 16, end, kind)
            self.bounded(count, kind)
        elif kind == b"sidx":
            version = self.u8(p, end)
            at = p + 12 + (16 if version == 1 else 8) + 2
            count = self.u16(at, end)
            self.fits(count, 12, at + 2, end, kind)
        elif kind == b"pssh":
            version = self.u8(p, end)
            at = p + 20
            if version > 0:
                kids = self.u32(at, end)
                self.fits(kids, 16, at + 4, end, kind)
                at += 4 + 16 * kids
            self.fits(self.u32(at, end), 1, at + 4, end, kind)
        elif kind in (b"iloc", b"iinf", b"ipma"):
            version = self.u8(p, end)
            if kind == b"iloc":
                at = p + 6
                count = self.u16(at, end) if version < 2 else self.u32(at, end)
                first = at + (2 if version < 2 else 4)
            elif kind == b"iinf":
                count = self.u16(p + 4, end) if version == 0 else self.u32(p + 4, end)
                first = p + (6 if version == 0 else 8)
            else:
                count, first = self.u32(p + 4, end), p + 8
            self.fits(count, 2, first, end, kind)

    def stts(self, track: _Track, first: int, count: int) -> None:
        """Sum the time-to-sample runs (count already bounded and known to fit)."""
        table = np.frombuffer(self.data[first : first + 8 * count], ">u4").reshape(count, 2)
        total = int(table[:, 0].astype(np.int64).sum())
        track.stts_total = total
        track.stts_unit_delta = count == 1 and int(table[0, 1]) == 1

    def sample_count(self, track: _Track | None, count: int) -> None:
        if track is not None:
            track.samples = max(track.samples, count)

    def trun(self, p: int, end: int) -> None:
        flags = self.u32(p, end) & 0xFFFFFF
        count = self.u32(p + 4, end)
        first = p + 8 + (4 if flags & 0x1 else 0) + (4 if flags & 0x4 else 0)
        entry = 4 * bin(flags & 0xF00).count("1")
        self.fits(count, entry, first, end, b"trun")
        total = self.fragment_samples.get(self._traf_track, 0) + count
        self.fragment_samples[self._traf_track] = total
        self.bounded(total, b"trun")

    # ----- whole-track checks ----------------------------------------------------------------

    def finish(self) -> BmffSummary:
        limits = self.limits
        samples: list[int] = []
        for track in self.tracks:
            fragmented = self.fragment_samples.get(track.track_id, 0)
            raw_audio = track.stts_entries == 1 and track.stts_unit_delta
            entries = track.samples
            if raw_audio and track.handler in (b"", b"soun"):
                # FFmpeg indexes such a track by chunk: every chunk's samples, 1024 per entry.
                total = self._raw_samples(track)
                if total > limits.max_raw_audio_samples:
                    raise TooLong(
                        f"a raw audio track has {total} samples; the limit is "
                        f"{limits.max_raw_audio_samples}"
                    )
                entries = total // 1024 + track.chunks
            if not (raw_audio and track.handler == b"soun"):
                self.bounded(track.samples + fragmented, b"stsz")
                self.bounded(track.stts_total, b"stts")
            if track.edits * max(entries, 1) > 8 * limits.max_samples:
                raise TooLong("a track's edit list repeats more samples than the limit allows")
            samples.append(track.samples + fragmented)
        total_fragmented = sum(self.fragment_samples.values())
        if total_fragmented > limits.max_samples * max(1, len(self.tracks)):
            raise TooLong(f"the fragments declare {total_fragmented} samples")
        return BmffSummary(self.boxes, len(self.tracks), self.fragments, tuple(samples))

    def _raw_samples(self, track: _Track) -> int:
        total = 0
        runs = track.stsc
        for i, (first, per_chunk) in enumerate(runs):
            nxt = runs[i + 1][0] if i + 1 < len(runs) else track.chunks + 1
            total += max(0, nxt - first) * per_chunk
            if total > self.limits.max_raw_audio_samples:
                break
        return total


def _mfra_offset(data: memoryview) -> int | None:
    """Where the ``mfra`` box that ``mfro`` (the file's last 16 bytes) points to starts."""
    n = len(data)
    if n < 24 or bytes(data[n - 12 : n - 8]) != b"mfro":
        return None
    size = int.from_bytes(data[n - 4 : n], "big")
    start = n - size
    if size < 16 or start < 0 or bytes(data[start + 4 : start + 8]) != b"mfra":
        return None
    return start


def prewalk(data: bytes | bytearray | memoryview, limits: BmffLimits) -> BmffSummary:
    """Walk an ISO-BMFF file's boxes and refuse what would make FFmpeg allocate past the limits.

    Raises :class:`CorruptMedia` (a table larger than its box, too many boxes, tracks, edits or
    nesting levels), :class:`TooLong` (sample, chunk or table counts beyond ``limits``) or
    :class:`UnsupportedFormat` (a compressed movie header). Reads only headers and counts, plus
    the time-to-sample and sample-to-chunk tables once their counts are within the limits.
    """
    walker = _Walker(data, limits)
    walker.walk(0, len(walker.data), 0)
    start = _mfra_offset(walker.data)
    if start is not None:
        walker.walk(start, len(walker.data), 0)
    return walker.finish()


__all__ = ["BmffLimits", "BmffSummary", "prewalk"]
