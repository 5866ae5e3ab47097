"""Probing: the limits checked before a frame is decoded (bytes, header values, a demux-only
pass that counts frames and notices truncation), then the first frame's rotation."""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

import av.error
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from pipelines.errors import CorruptMedia, TooLarge, TooLong, UnsupportedFormat
from pipelines.media.sniff import ContainerKind, sniff_video_container
from pipelines.media.video.container import (
    _OUT_OF_MEMORY,
    _audio_stream,
    _decoding,
    _open,
    _out_of_memory,
    _video_stream,
)
from pipelines.media.video.limits import DEFAULT_LIMITS, VIDEO_CODECS, VideoInfo, VideoLimits
from pipelines.media.video.orientation import (
    _UPRIGHT,
    _display_matrix,
    _Orientation,
    _orientation,
)

_DURATION_SLACK_S: Final = 1e-3
_AV_TIME_BASE: Final = 1_000_000
_AVCOL_RANGE_JPEG: Final = 2  # full range


def _ebml_vint(data: bytes, pos: int) -> tuple[int, int, bool]:
    """An EBML variable-size integer at ``pos``: value, length in bytes, "unknown" flag."""
    if pos >= len(data) or data[pos] == 0:
        raise ValueError("bad EBML size")
    length = 9 - data[pos].bit_length()
    if pos + length > len(data):
        raise ValueError("EBML size cut short")
    value = data[pos] & ((1 << (8 - length)) - 1)
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
    return value, length, value == (1 << (7 * length)) - 1


def _matroska_truncated(data: bytes) -> bool:
    """True when the Segment declares more bytes than there are (or the headers are cut).

    Matroska indexes (cues) are usually written at the end, so a cut file has no index to
    check; the Segment's declared size is the reference. Live-written files (browser
    MediaRecorder) declare an unknown size and cannot be checked this way.
    """
    try:
        size, length, _ = _ebml_vint(data, 4)
        segment = 4 + length + size
        if data[segment : segment + 4] != b"\x18\x53\x80\x67":
            return segment + 4 > len(data)
        size, length, unknown = _ebml_vint(data, segment + 4)
    except ValueError:
        return True
    return not unknown and segment + 4 + length + size > len(data)


@dataclass(frozen=True)
class _FirstFrame:
    """What the first decoded frame says: its orientation and how its pixels are stored."""

    orientation: _Orientation = _UPRIGHT
    pix_fmt: str = "yuv420p"
    colorspace: int = 2  # AVCOL_SPC_UNSPECIFIED
    full_range: bool = False


@dataclass(frozen=True)
class _Probe:
    info: VideoInfo
    orientation: _Orientation
    coded_width: int
    coded_height: int
    frame_ticks: int  # nominal frame duration in the video stream's time base
    first: _FirstFrame | None  # None when probed without decoding (the transcoder reads it)


def _fits(width: int, height: int, limits: VideoLimits) -> bool:
    return max(width, height) <= limits.max_width and min(width, height) <= limits.max_height


def _check_resolution(width: int, height: int, limits: VideoLimits) -> None:
    if not _fits(width, height, limits):
        raise TooLarge(
            f"the video is {width}x{height}; the limit is {limits.max_width}x{limits.max_height}"
        )


def _too_long(seconds: float, limits: VideoLimits) -> TooLong:
    return TooLong(f"the video lasts {seconds:.2f} s; the limit is {limits.max_duration_s:g} s")


def _probe(data: bytes, limits: VideoLimits, *, first_frame: bool = True) -> _Probe:
    """Check and describe ``data``; with ``first_frame=False`` the first frame is not decoded
    (the orientation is then unknown: ``info`` has the coded size and no rotation)."""
    if len(data) > limits.max_bytes:
        raise TooLarge(f"the video is {len(data)} bytes; the limit is {limits.max_bytes}")
    kind = sniff_video_container(data)
    if kind in ("webm", "matroska") and _matroska_truncated(data):
        raise CorruptMedia("the media is truncated")
    with _open(data, kind, limits) as ic:
        vs = _video_stream(ic)
        codec = vs.codec_context.name if vs.codec_context is not None else ""
        if codec not in VIDEO_CODECS:
            raise UnsupportedFormat("the video codec is not supported")
        width, height = vs.codec_context.width, vs.codec_context.height
        if width <= 0 or height <= 0:
            raise CorruptMedia("the video stream has no picture size")
        _check_resolution(width, height, limits)
        time_base = vs.time_base
        if time_base is None or time_base <= 0:
            raise CorruptMedia("the video stream has no time base")
        # Header values, when present, refuse a long clip before the demux pass.
        if vs.frames > limits.max_frames:
            raise TooLong(f"the video has {vs.frames} frames; the limit is {limits.max_frames}")
        header_s = [float(vs.duration * time_base)] if vs.duration else []
        if ic.duration:
            header_s.append(ic.duration / _AV_TIME_BASE)
        if header_s and max(header_s) > limits.max_duration_s + _DURATION_SLACK_S:
            raise _too_long(max(header_s), limits)
        rate = vs.average_rate or vs.guessed_rate
        has_audio = _audio_stream(ic) is not None
        frames, start, end, frame_ticks = _scan(ic, vs, time_base, rate, limits, len(data))
    duration_s = float((end - start) * time_base)
    fps = float(rate) if rate else (frames / duration_s if duration_s > 0 else 0.0)
    first = _first_frame(data, kind, limits) if first_frame else None
    orientation = first.orientation if first is not None else _UPRIGHT
    disp_w, disp_h = (height, width) if orientation.swaps else (width, height)
    info = VideoInfo(
        container=kind,
        codec=codec,
        width=disp_w,
        height=disp_h,
        rotation=orientation.rotation,
        fps=fps,
        frames=frames,
        duration_s=duration_s,
        has_audio=has_audio,
    )
    return _Probe(info, orientation, width, height, frame_ticks, first)


def _scan(
    ic: InputContainer,
    vs: VideoStream,
    time_base: Fraction,
    rate: Fraction | None,
    limits: VideoLimits,
    size: int,
) -> tuple[int, int, int, int]:
    """Demux (never decode) the packets: video frame count, first pts, end pts, frame ticks.

    The audio stream's packets are read too, only to notice a truncated or damaged file: a
    packet cut short by the end of the data, or an index entry (MP4 sample table, Matroska cues)
    pointing past the ``size`` bytes there are. The index is the reference, not the header's
    sample count: an edit list can legitimately leave samples out of the index.
    """
    audio = _audio_stream(ic)
    streams = (vs, audio) if audio is not None else (vs,)
    max_ticks = (limits.max_duration_s + _DURATION_SLACK_S) / time_base
    nominal = round(1 / (rate * time_base)) if rate else 0
    count = 0
    start: int | None = None
    end: int | None = None
    stamps: list[int] = []
    try:
        for packet in ic.demux(*streams):
            if packet.size == 0:  # the flush packets PyAV yields at the end
                continue
            if packet.is_corrupt:
                raise CorruptMedia("the media data is truncated or damaged")
            if packet.stream is not vs:
                continue
            if packet.is_discard:  # trimmed by an edit list: decoded, never shown
                continue
            count += 1
            if count > limits.max_frames:
                raise TooLong(f"the video has more than {limits.max_frames} frames")
            pts = packet.pts if packet.pts is not None else packet.dts
            if pts is None:
                continue
            stamps.append(pts)
            stop = pts + (packet.duration or 0)
            start = pts if start is None else min(start, pts)
            end = stop if end is None else max(end, stop)
            if end - start > max_ticks:
                raise _too_long(float((end - start) * time_base), limits)
    except _OUT_OF_MEMORY as exc:
        raise _out_of_memory() from exc
    except av.error.FFmpegError as exc:
        raise CorruptMedia("the video data could not be demuxed") from exc
    if count == 0 or start is None or end is None:
        raise CorruptMedia("the video stream has no frames")
    if any(entry.pos + entry.size > size for s in streams for entry in s.index_entries):
        raise CorruptMedia("the media is truncated")
    stamps.sort()
    deltas = [b - a for a, b in itertools.pairwise(stamps) if b > a]
    frame_ticks = nominal or (round(statistics.median(deltas)) if deltas else 1)
    end = max(end, stamps[-1] + frame_ticks) if end <= stamps[-1] else end
    if end - start > max_ticks:
        raise _too_long(float((end - start) * time_base), limits)
    return count, start, end, max(1, frame_ticks)


def _first_frame(data: bytes, kind: ContainerKind, limits: VideoLimits) -> _FirstFrame:
    with _open(data, kind, limits) as ic:
        vs = _video_stream(ic)
        with _decoding():
            for frame in ic.decode(vs):
                _check_resolution(frame.width, frame.height, limits)
                return _first_frame_of(frame)
    raise CorruptMedia("no video frame could be decoded")


def _first_frame_of(frame: VideoFrame) -> _FirstFrame:
    """Orientation and pixel storage of a decoded frame."""
    pix_fmt = frame.format.name
    return _FirstFrame(
        _orientation(_display_matrix(frame)),
        pix_fmt,
        int(frame.colorspace),
        pix_fmt.startswith("yuvj") or int(frame.color_range) == _AVCOL_RANGE_JPEG,
    )


def probe_video(data: bytes, limits: VideoLimits = DEFAULT_LIMITS) -> VideoInfo:
    """Describe the clip in ``data`` and check it against ``limits`` without decoding it whole.

    Raises :class:`UnsupportedFormat` (not MP4/MOV/WebM/Matroska, unsupported codec, a still
    image), :class:`CorruptMedia` (unreadable, truncated, no video stream, no frames),
    :class:`TooLarge` (bytes or resolution) or :class:`TooLong` (duration or frame count).
    Only the first frame is decoded (to read the rotation), after every limit has passed.
    """
    return _probe(data, limits).info
