"""Video in and out, entirely in memory.

Inputs are bytes. The container is sniffed from its magic (never from a file name): ISO-BMFF
(``ftyp``: MP4, MOV/QuickTime) and EBML (``1A45DFA3``: WebM, Matroska). The sniffed container
selects the FFmpeg demuxer explicitly, so FFmpeg never probes the bytes itself (no playlist,
``concat`` or image-sequence demuxer can be reached through a crafted upload). Video codecs are
allow-listed (:data:`VIDEO_CODECS`) to keep the decoder attack surface to what phones and browsers
write.

Limits (:class:`VideoLimits`) are checked before a frame is decoded: the byte size first, then,
for MP4/MOV, a pure-Python walk of the box tree (:mod:`pipelines.media.isobmff`) that refuses
sample, chunk and edit-list counts FFmpeg would allocate from before any limit could look at them
(every ``av.open`` of an input is preceded by it; WebM/Matroska are not pre-walked and are
bounded by the process's memory ceiling only), then the header values (resolution, duration,
frame count), then a demux-only pass over the video and audio packets (no decoding) that counts
frames and measures the duration even when the header has no index (browser WebM has none) and
notices truncated files (a packet cut short by the end of the data, or fewer packets than the
index lists). Only then is the first frame decoded, to
read the display rotation (PyAV exposes the stream's display matrix only on decoded frames).

Decoded frames are 8-bit BGR (``HxWx3`` ``uint8``), rotated upright according to the display
matrix (all eight orientations, the same choices as FFmpeg's ``autorotate``; a non-right-angle
rotation is snapped to the nearest quarter turn).

Output (:func:`transform_video`) is H.264 (libx264), yuv420p (BT.601 matrix, limited range,
tagged as such; the input's colour primaries and transfer tags are kept) in an MP4 whose
``moov`` box comes before ``mdat`` (streamable). FFmpeg's ``+faststart`` cannot be used: it reopens
the output by file name for its second pass, which fails for in-memory output. Fragmented MP4
(``frag_keyframe+empty_moov``) puts ``moov`` first but was measured to shift the video by the
B-frame delay (two frames at 24 fps) and to open a gap in copied AAC audio, because fragments
carry no edit list. So the output is written as a classic MP4 into a buffer and its ``moov`` is
moved in front of ``mdat`` here (:func:`_faststart`), rewriting the ``stco``/``co64`` chunk
offsets; the result is laid out as ``+faststart`` lays it out (FFmpeg's ``free`` placeholder
dropped).

Timing: every output frame keeps the pts of its input frame, in the input stream's time base, so
the frame count, the timestamps (variable frame rate included) and the duration equal the input's.
Audio (the first audio stream) is copied when it is already AAC and re-encoded to AAC otherwise,
or dropped with ``keep_audio=False``. Nothing of the input's container or stream metadata is
copied: no creation time, location, device make or model, no rotation (frames are upright).

Odd sizes: yuv420p needs even width and height, and H.264 can only crop in whole chroma samples
(two pixels), so an odd size cannot be kept exactly. The processed frame is *padded* by one
replicated row and/or column at the bottom/right (321x241 becomes 322x242): no pixel of the
processed picture is lost, and the padding copies pixels the callback already processed.

Nothing here writes a file.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import itertools
import math
import statistics
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final, Literal, cast

import av
import av.error
import cv2
import numpy as np
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from av.sidedata.sidedata import Type as SideDataType
from av.stream import Disposition
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from numpy.typing import NDArray

from pipelines.errors import BadParams, CorruptMedia, TooLarge, TooLong, UnsupportedFormat
from pipelines.media.isobmff import BmffLimits, prewalk

ContainerKind = Literal["mp4", "mov", "webm", "matroska"]
FrameFn = Callable[[int, float, NDArray[np.uint8]], NDArray[np.uint8]]

#: Video codecs accepted on input (FFmpeg decoder names).
VIDEO_CODECS: Final = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "h263", "mjpeg"})
#: x264 presets accepted by :func:`transform_video`.
X264_PRESETS: Final = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)

_DEMUXER: Final[dict[ContainerKind, str]] = {
    "mp4": "mov",
    "mov": "mov",
    "webm": "matroska",
    "matroska": "matroska",
}
# ISO-BMFF brands of still images (HEIF/AVIF photos) and audio-only files.
_IMAGE_BRANDS: Final = frozenset(
    {
        b"heic",
        b"heix",
        b"heim",
        b"heis",
        b"hevc",
        b"hevx",
        b"mif1",
        b"msf1",
        b"avif",
        b"avis",
        b"jpeg",
    }
)
_DURATION_SLACK_S: Final = 1e-3
_AVCOL_SPC_SMPTE170M: Final = 6  # BT.601 matrix, what cv2.COLOR_BGR2YUV_I420 uses
_AVCOL_RANGE_MPEG: Final = 1
_AV_TIME_BASE: Final = 1_000_000


@dataclass(frozen=True)
class VideoLimits:
    """Limits checked before any frame is decoded.

    Resolution is compared orientation-free: the long side against ``max_width`` and the short
    side against ``max_height``, so a portrait 1080x1920 clip passes the 1920x1080 default.
    """

    max_bytes: int = 200 * 1024 * 1024
    max_duration_s: float = 60.0
    max_width: int = 1920
    max_height: int = 1080
    max_frames: int = 60 * 120

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_width <= 0 or self.max_height <= 0:
            raise BadParams("video limits must be positive")
        if self.max_frames <= 0 or not self.max_duration_s > 0:
            raise BadParams("video limits must be positive")


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learned about a clip.

    ``width``/``height`` are the display size (after rotation). ``rotation`` is the clockwise
    quarter turn (0, 90, 180, 270) that makes the coded picture upright, the value of the legacy
    ``rotate`` tag (a portrait iPhone clip has 90). ``frames`` and ``duration_s`` come from the
    demuxed video packets: the span from the first frame's pts to the last frame's end.
    """

    container: ContainerKind
    codec: str
    width: int
    height: int
    rotation: int
    fps: float
    frames: int
    duration_s: float
    has_audio: bool


# --------------------------------------------------------------------------------------------
# Sniffing and opening


def sniff_video_container(data: bytes) -> ContainerKind:
    """The container of ``data`` from its magic bytes; :class:`UnsupportedFormat` otherwise."""
    if len(data) >= 12 and data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _IMAGE_BRANDS:
            raise UnsupportedFormat("the file is a still image, not a video")
        return "mov" if brand == b"qt  " else "mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        # The EBML header's DocType element (ID 0x4282) names the flavour.
        head = data[:64]
        at = head.find(b"\x42\x82")
        if at >= 0 and head[at + 3 : at + 7] == b"webm":
            return "webm"
        return "matroska"
    raise UnsupportedFormat("the media is not an MP4, MOV, WebM or Matroska video")


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


def _open(data: bytes, kind: ContainerKind, limits: VideoLimits) -> InputContainer:
    """Open ``data`` with the demuxer of ``kind``; MP4/MOV only after :func:`prewalk` passed.

    Every ``av.open`` of an input goes through here, so FFmpeg never reads an ISO-BMFF file whose
    declared sample, chunk or edit counts would make it allocate past the limits.
    """
    if kind in ("mp4", "mov"):
        prewalk(data, BmffLimits.for_video(limits.max_frames, limits.max_duration_s))
    try:
        return av.open(io.BytesIO(data), mode="r", format=_DEMUXER[kind])
    except _OUT_OF_MEMORY as exc:
        raise TooLarge("the video is too large to open within the memory limit") from exc
    except (av.error.FFmpegError, ValueError, OSError, EOFError) as exc:
        raise CorruptMedia("the video container could not be read") from exc


# Allocation failures: MemoryError (av.error.MemoryError, FFmpeg's ENOMEM, is one too) and EAGAIN
# from opening a codec, which is a decoder thread whose stack could not be mapped.
_OUT_OF_MEMORY: Final = (MemoryError, av.error.BlockingIOError)


def _out_of_memory() -> TooLarge:
    return TooLarge("the video is too large to decode within the memory limit")


def _cv2_out_of_memory(exc: cv2.error) -> bool:
    """OpenCV's own allocation failure (past the memory ceiling): too_large, not a bug."""
    return "Insufficient memory" in str(exc)


@contextlib.contextmanager
def _decoding(message: str = "the video could not be decoded") -> Iterator[None]:
    """Translate a decode's failures: allocation (FFmpeg, OpenCV, Python) → :class:`TooLarge`,
    any other FFmpeg error → :class:`CorruptMedia` with ``message``."""
    try:
        yield
    except _OUT_OF_MEMORY as exc:
        raise _out_of_memory() from exc
    except cv2.error as exc:
        if _cv2_out_of_memory(exc):
            raise _out_of_memory() from exc
        raise
    except av.error.FFmpegError as exc:
        raise CorruptMedia(message) from exc


def _video_stream(ic: InputContainer) -> VideoStream:
    for stream in ic.streams.video:
        if not stream.disposition & Disposition.attached_pic:  # cover art is not video
            return stream
    raise CorruptMedia("the file has no video stream")


def _audio_stream(ic: InputContainer) -> AudioStream | None:
    return ic.streams.audio[0] if ic.streams.audio else None


# --------------------------------------------------------------------------------------------
# Orientation


@dataclass(frozen=True)
class _Orientation:
    """How to make a decoded picture upright: one of the eight symmetries of a rectangle."""

    op: Literal["none", "cw", "ccw", "180", "hflip", "vflip", "transpose", "antitranspose"]
    rotation: int  # clockwise quarter turn reported in VideoInfo

    @property
    def swaps(self) -> bool:
        return self.op in ("cw", "ccw", "transpose", "antitranspose")

    def apply(self, img: NDArray[np.uint8]) -> NDArray[np.uint8]:
        op = self.op
        if op == "none":
            return img
        if op == "cw":
            out = cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)
        elif op == "ccw":
            out = cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE)
        elif op == "180":
            out = cv2.rotate(img, cv2.ROTATE_180)
        elif op == "hflip":
            out = cv2.flip(img, 1)
        elif op == "vflip":
            out = cv2.flip(img, 0)
        elif op == "transpose":
            out = cv2.transpose(img)
        else:  # antitranspose: rotate clockwise, then flip vertically
            out = cv2.flip(cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE), 0)
        return cast(NDArray[np.uint8], out)


_UPRIGHT: Final = _Orientation("none", 0)


def _display_matrix(frame: VideoFrame) -> tuple[int, ...] | None:
    side_data = cast(Any, frame.side_data)
    for item in side_data:
        if item.type == SideDataType.DISPLAYMATRIX:
            raw = bytes(item)
            if len(raw) >= 36:
                return cast(tuple[int, ...], struct.unpack("=9i", raw[:36]))
    return None


def _orientation(matrix: tuple[int, ...] | None) -> _Orientation:
    """The upright transform for an FFmpeg display matrix (same decisions as ``autorotate``).

    The matrix's rotation (``av_display_rotation_get``) is counter-clockwise; its negation,
    normalised to [0, 360), is the clockwise turn to apply. The signs of entries 0, 3, 4 tell a
    mirrored matrix from a plain rotation, as in FFmpeg's ``fftools`` filter setup.
    """
    if matrix is None:
        return _UPRIGHT
    a, b, c, d = (v / 65536.0 for v in (matrix[0], matrix[1], matrix[3], matrix[4]))
    scale0 = math.hypot(a, c)
    scale1 = math.hypot(b, d)
    if scale0 == 0.0 or scale1 == 0.0:
        return _UPRIGHT
    ccw = -math.degrees(math.atan2(b / scale1, a / scale0))
    theta = round(-ccw / 90.0) * 90 % 360  # clockwise, snapped to a quarter turn
    if theta == 90:
        return _Orientation("transpose" if matrix[3] > 0 else "cw", 90)
    if theta == 180:
        if matrix[0] < 0 and matrix[4] < 0:
            return _Orientation("180", 180)
        if matrix[0] < 0:
            return _Orientation("hflip", 0)
        if matrix[4] < 0:
            return _Orientation("vflip", 0)
        return _Orientation("180", 180)
    if theta == 270:
        return _Orientation("antitranspose" if matrix[3] < 0 else "ccw", 270)
    if matrix[4] < 0:
        return _Orientation("vflip", 0)
    return _UPRIGHT


# --------------------------------------------------------------------------------------------
# Probing


@dataclass(frozen=True)
class _Probe:
    info: VideoInfo
    orientation: _Orientation
    coded_width: int
    coded_height: int
    frame_ticks: int  # nominal frame duration in the video stream's time base


def _fits(width: int, height: int, limits: VideoLimits) -> bool:
    return max(width, height) <= limits.max_width and min(width, height) <= limits.max_height


def _check_resolution(width: int, height: int, limits: VideoLimits) -> None:
    if not _fits(width, height, limits):
        raise TooLarge(
            f"the video is {width}x{height}; the limit is {limits.max_width}x{limits.max_height}"
        )


def _too_long(seconds: float, limits: VideoLimits) -> TooLong:
    return TooLong(f"the video lasts {seconds:.2f} s; the limit is {limits.max_duration_s:g} s")


def _probe(data: bytes, limits: VideoLimits) -> _Probe:
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
    orientation = _first_frame_orientation(data, kind, limits)
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
    return _Probe(info, orientation, width, height, frame_ticks)


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


def _first_frame_orientation(data: bytes, kind: ContainerKind, limits: VideoLimits) -> _Orientation:
    with _open(data, kind, limits) as ic:
        vs = _video_stream(ic)
        with _decoding():
            for frame in ic.decode(vs):
                _check_resolution(frame.width, frame.height, limits)
                return _orientation(_display_matrix(frame))
    raise CorruptMedia("no video frame could be decoded")


def probe_video(data: bytes, limits: VideoLimits = VideoLimits()) -> VideoInfo:
    """Describe the clip in ``data`` and check it against ``limits`` without decoding it whole.

    Raises :class:`UnsupportedFormat` (not MP4/MOV/WebM/Matroska, unsupported codec, a still
    image), :class:`CorruptMedia` (unreadable, truncated, no video stream, no frames),
    :class:`TooLarge` (bytes or resolution) or :class:`TooLong` (duration or frame count).
    Only the first frame is decoded (to read the rotation), after every limit has passed.
    """
    return _probe(data, limits).info


# --------------------------------------------------------------------------------------------
# Decoding


class _Decoder:
    """Turns decoded frames into upright BGR arrays, enforcing the limits as it goes."""

    def __init__(self, probe: _Probe, time_base: Fraction, limits: VideoLimits) -> None:
        self.probe = probe
        self.time_base = time_base
        self.limits = limits
        self.index = 0
        self.last_pts: int | None = None
        self.first_pts: int | None = None

    def convert(self, frame: VideoFrame) -> tuple[int, int, int, NDArray[np.uint8]]:
        """``(index, pts_ticks, duration_ticks, bgr)`` of one decoded frame."""
        probe = self.probe
        if (frame.width, frame.height) != (probe.coded_width, probe.coded_height):
            _check_resolution(frame.width, frame.height, self.limits)
            raise UnsupportedFormat("the video changes resolution mid-stream")
        if self.index >= self.limits.max_frames:
            raise TooLong(f"the video has more than {self.limits.max_frames} frames")
        pts = frame.pts
        if pts is None:
            pts = 0 if self.last_pts is None else self.last_pts + probe.frame_ticks
        elif self.last_pts is not None and pts <= self.last_pts:
            pts = self.last_pts + 1  # keep timestamps strictly increasing
        if self.first_pts is None:
            self.first_pts = pts
        if (pts - self.first_pts) * self.time_base > self.limits.max_duration_s:
            raise _too_long(float((pts - self.first_pts) * self.time_base), self.limits)
        duration = frame.duration if frame.duration and frame.duration > 0 else probe.frame_ticks
        bgr = cast(NDArray[np.uint8], frame.to_ndarray(format="bgr24"))
        bgr = np.ascontiguousarray(probe.orientation.apply(bgr))
        index = self.index
        self.index += 1
        self.last_pts = pts
        return index, pts, duration, bgr


def iter_frames(
    data: bytes, limits: VideoLimits = VideoLimits()
) -> Iterator[tuple[int, float, NDArray[np.uint8]]]:
    """Decode every frame of ``data``: ``(index, pts_seconds, bgr)``, upright, in display order.

    The clip is probed first (:func:`probe_video`: format, limits, rotation), so the errors are
    the same; a decoding failure part-way raises :class:`CorruptMedia`.
    """
    probe = _probe(data, limits)
    with _open(data, probe.info.container, limits) as ic:
        vs = _video_stream(ic)
        vs.thread_type = "AUTO"
        time_base = cast(Fraction, vs.time_base)
        decoder = _Decoder(probe, time_base, limits)
        with _decoding():
            for frame in ic.decode(vs):
                index, pts, _, bgr = decoder.convert(frame)
                yield index, float(pts * time_base), bgr
    if decoder.index == 0:
        raise CorruptMedia("no video frame could be decoded")


# --------------------------------------------------------------------------------------------
# Encoding


def _pad_even(img: NDArray[np.uint8]) -> NDArray[np.uint8]:
    height, width = img.shape[:2]
    pad_h, pad_w = height % 2, width % 2
    if not pad_h and not pad_w:
        return img
    out = cv2.copyMakeBorder(img, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
    return cast(NDArray[np.uint8], out)


def _check_output(out: object, shape: tuple[int, ...]) -> NDArray[np.uint8]:
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != shape:
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"the frame function must return a uint8 array of shape {shape}, got {got}"
        )
    return cast(NDArray[np.uint8], out)


def transform_video(
    data: bytes,
    fn: FrameFn,
    limits: VideoLimits = VideoLimits(),
    *,
    keep_audio: bool = True,
    crf: int = 23,
    preset: str = "veryfast",
) -> bytes:
    """Decode ``data``, pass every frame through ``fn``, and encode a streamable H.264 MP4.

    ``fn(index, pts_seconds, bgr)`` receives each upright BGR frame and returns a frame of the
    same shape (it may modify and return its argument). The output has the same frames, the same
    timestamps and the same duration as the input, ``moov`` before ``mdat``, no rotation and no
    metadata from the input; audio is copied (AAC) or re-encoded to AAC when ``keep_audio``.
    Errors are those of :func:`probe_video`, :class:`CorruptMedia` for a failure part-way, and
    :class:`BadParams` for an invalid ``crf`` or ``preset``; exceptions of ``fn`` propagate.
    """
    if not 0 <= crf <= 51:
        raise BadParams("crf must be between 0 and 51")
    if preset not in X264_PRESETS:
        raise BadParams(f"preset must be one of {', '.join(X264_PRESETS)}")
    probe = _probe(data, limits)
    out = io.BytesIO()
    with _decoding(), _open(data, probe.info.container, limits) as ic:
        _transcode(ic, probe, fn, limits, out, keep_audio, crf, preset)
    try:
        return _faststart(out.getvalue())
    except ValueError as exc:  # our own muxer output: a bug, not a user error
        raise RuntimeError(f"could not move the moov box: {exc}") from exc


def _transcode(
    ic: InputContainer,
    probe: _Probe,
    fn: FrameFn,
    limits: VideoLimits,
    out: io.BytesIO,
    keep_audio: bool,
    crf: int,
    preset: str,
) -> None:
    vs = _video_stream(ic)
    vs.thread_type = "AUTO"
    time_base = cast(Fraction, vs.time_base)
    ia = _audio_stream(ic) if keep_audio else None
    info = probe.info
    shape = (info.height, info.width, 3)
    out_w, out_h = info.width + info.width % 2, info.height + info.height % 2

    oc = av.open(out, mode="w", format="mp4")
    with oc:
        rate = vs.average_rate or vs.guessed_rate or Fraction(round(info.fps or 30))
        ov = oc.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": preset})
        ov.width, ov.height, ov.pix_fmt = out_w, out_h, "yuv420p"
        ov.codec_context.time_base = time_base
        # Pixels are converted with OpenCV's BGR->I420 (BT.601 matrix, limited range: ~15x
        # faster than swscale's bgr24 path); the primaries and transfer describe the RGB values,
        # which pass through unchanged, so they are the input's (BT.709 when unspecified).
        ov.codec_context.colorspace = _AVCOL_SPC_SMPTE170M
        ov.codec_context.color_range = _AVCOL_RANGE_MPEG
        primaries, trc = vs.codec_context.color_primaries, vs.codec_context.color_trc
        ov.codec_context.color_primaries = primaries if primaries not in (0, 2) else 1
        ov.codec_context.color_trc = trc if trc not in (0, 2) else 1
        sar = vs.codec_context.sample_aspect_ratio
        if sar and sar != 1:
            ov.codec_context.sample_aspect_ratio = 1 / sar if probe.orientation.swaps else sar
        oa, copy_audio = _add_audio(oc, ia)

        decoder = _Decoder(probe, time_base, limits)

        def encode(frame: VideoFrame) -> None:
            index, pts, duration, bgr = decoder.convert(frame)
            result = _check_output(fn(index, float(pts * time_base), bgr), shape)
            i420 = cast(NDArray[np.uint8], cv2.cvtColor(_pad_even(result), cv2.COLOR_BGR2YUV_I420))
            yuv = VideoFrame.from_ndarray(i420, format="yuv420p")
            yuv.pts, yuv.time_base, yuv.duration = pts, time_base, duration
            oc.mux(_encoded(ov, yuv))

        streams = (vs, ia) if ia is not None else (vs,)
        for packet in ic.demux(*streams):
            if packet.stream is vs:
                for frame in cast(list[VideoFrame], packet.decode()):
                    encode(frame)
            elif oa is not None:
                if copy_audio:
                    if packet.size and not packet.is_discard:
                        packet.stream = oa
                        oc.mux(packet)
                else:
                    for audio in packet.decode():
                        oc.mux(oa.encode(cast(Any, audio)))
        if decoder.index == 0:
            raise CorruptMedia("no video frame could be decoded")
        oc.mux(_encoded(ov, None))
        if oa is not None and not copy_audio:
            oc.mux(oa.encode(None))


def _encoded(ov: VideoStream, frame: VideoFrame | None) -> list[Any]:
    """Encode with libx264; its only failure on frames we built is a failed allocation."""
    try:
        return ov.encode(frame)
    except av.error.ExternalError as exc:
        raise _out_of_memory() from exc


def _add_audio(oc: OutputContainer, ia: AudioStream | None) -> tuple[AudioStream | None, bool]:
    """The output audio stream (a copy of AAC, else a new AAC encoder) and whether it copies."""
    if ia is None:
        return None, False
    if ia.codec_context is None:
        raise UnsupportedFormat("the audio codec is not supported")
    if ia.codec_context.name == "aac":
        oa = oc.add_stream_from_template(ia)
        oa.metadata.clear()
        return oa, True
    rate = ia.codec_context.sample_rate or 48000
    oa = oc.add_stream("aac", rate=rate)
    channels = ia.codec_context.channels or 2
    oa.layout = "mono" if channels == 1 else "stereo" if channels == 2 else ia.codec_context.layout
    return oa, False


# --------------------------------------------------------------------------------------------
# moov relocation ("faststart" in memory)

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


__all__ = [
    "VIDEO_CODECS",
    "X264_PRESETS",
    "ContainerKind",
    "FrameFn",
    "VideoInfo",
    "VideoLimits",
    "iter_frames",
    "probe_video",
    "sniff_video_container",
    "transform_video",
]
