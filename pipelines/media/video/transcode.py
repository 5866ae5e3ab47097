"""Transcoding: decode, pass every frame through a function, encode H.264 (and AAC) into a
streamable MP4 with the input's frames, timestamps and duration."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final, cast

import av
import av.error
import cv2
import numpy as np
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from av.packet import Packet
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from numpy.typing import NDArray

from pipelines.errors import BadParams, CorruptMedia, UnsupportedFormat
from pipelines.media.progress import report
from pipelines.media.video.container import (
    _audio_stream,
    _decoding,
    _open,
    _out_of_memory,
    _video_stream,
)
from pipelines.media.video.decode import _Decoder, plane_view, upright_bgr
from pipelines.media.video.limits import DEFAULT_LIMITS, VideoLimits
from pipelines.media.video.mp4box import _faststart
from pipelines.media.video.planes import Planes, YuvMatrix
from pipelines.media.video.probe import _first_frame_of, _FirstFrame, _Probe, _probe

FrameFn = Callable[[int, float, NDArray[np.uint8]], NDArray[np.uint8]]
#: ``fn(index, pts_seconds, planes)`` of :func:`transform_video_planes`; changes ``planes``.
PlaneFn = Callable[[int, float, Planes], None]

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
_AVCOL_SPC_SMPTE170M: Final = 6  # BT.601 matrix, what cv2.COLOR_BGR2YUV_I420 uses
_AVCOL_RANGE_MPEG: Final = 1


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
    limits: VideoLimits = DEFAULT_LIMITS,
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
    A callback that changes a few regions is cheaper through :func:`transform_video_planes`.
    """

    def stage(first: _FirstFrame) -> _Stage:
        shape: tuple[int, ...] = ()

        def process(index: int, t: float, frame: VideoFrame) -> VideoFrame:
            nonlocal shape
            bgr = upright_bgr(frame, first.orientation)
            shape = shape or bgr.shape
            result = _check_output(fn(index, t, bgr), shape)
            i420 = cast(NDArray[np.uint8], cv2.cvtColor(_pad_even(result), cv2.COLOR_BGR2YUV_I420))
            return VideoFrame.from_ndarray(i420, format="yuv420p")

        # OpenCV's BGR->I420 is BT.601, limited range.
        return _Stage(process, _OPENCV_COLOUR)

    return _run(data, limits, stage, keep_audio, crf, preset)


def transform_video_planes(
    data: bytes,
    fn: PlaneFn,
    limits: VideoLimits = DEFAULT_LIMITS,
    *,
    keep_audio: bool = True,
    crf: int = 23,
    preset: str = "veryfast",
) -> bytes:
    """:func:`transform_video` on the decoder's own I420 planes, with no BGR round trip.

    ``fn(index, pts_seconds, planes)`` receives each upright frame as :class:`Planes` (writable
    ``y``, ``u``, ``v`` views and the frame's matrix and range) and changes it in place; it
    converts to BGR only the rectangles it needs (:meth:`Planes.bgr`, :meth:`Planes.put_bgr`).
    The output keeps the input's matrix and range tags (the pixels untouched by ``fn`` are the
    decoder's, re-encoded). 8-bit 4:2:0 input is used as decoded; other pixel formats are
    converted to it first (same matrix and range). Everything else is as
    :func:`transform_video`.
    """

    def stage(first: _FirstFrame) -> _Stage:
        colour = YuvMatrix.of(first.colorspace, first.full_range)
        orientation = first.orientation
        rng = _AVCOL_RANGE_JPEG if colour.full_range else _AVCOL_RANGE_MPEG

        def process(index: int, t: float, frame: VideoFrame) -> VideoFrame:
            if frame.format.name not in _I420:
                frame = frame.reformat(format="yuv420p", src_color_range=rng, dst_color_range=rng)
            y, u, v = (orientation.apply(plane_view(p)) for p in frame.planes[:3])
            height, width = y.shape
            # A fresh frame: nothing of the decoded one (side data, captions) reaches the encoder.
            out = VideoFrame(width + width % 2, height + height % 2, "yuv420p")
            luma, cb, cr = (plane_view(p) for p in out.planes)
            luma[:height, :width] = y
            cb[...] = u
            cr[...] = v
            fn(index, t, Planes(luma, cb, cr, width, height, colour))
            if height % 2:  # pad by replicating the processed picture
                luma[height] = luma[height - 1]
            if width % 2:
                luma[:, width] = luma[:, width - 1]
            return out

        return _Stage(process, colour)

    return _run(data, limits, stage, keep_audio, crf, preset)


@dataclass(frozen=True)
class _Stage:
    """What a transform does to each decoded frame (``process``: a new encoder-ready I420 frame)
    and the matrix and range its output pixels are in."""

    process: Callable[[int, float, VideoFrame], VideoFrame]
    colour: YuvMatrix


_I420: Final = frozenset({"yuv420p", "yuvj420p"})
_OPENCV_COLOUR: Final = YuvMatrix()
_AVCOL_RANGE_JPEG: Final = 2
# FFmpeg's AVColorSpace for each matrix the output is tagged with (BT.601 as SMPTE 170M).
_COLORSPACE: Final = {"bt601": _AVCOL_SPC_SMPTE170M, "bt709": 1, "bt2020": 9}


def _run(
    data: bytes,
    limits: VideoLimits,
    stage: Callable[[_FirstFrame], _Stage],
    keep_audio: bool,
    crf: int,
    preset: str,
) -> bytes:
    if not 0 <= crf <= 51:
        raise BadParams("crf must be between 0 and 51")
    if preset not in X264_PRESETS:
        raise BadParams(f"preset must be one of {', '.join(X264_PRESETS)}")
    # Every limit is checked here; the orientation and pixel format are read from the first
    # frame the transcode itself decodes (no separate decode of it).
    probe = _probe(data, limits, first_frame=False)
    out = io.BytesIO()
    with _decoding(), _open(data, probe.info.container, limits) as ic:
        _Transcode(ic, probe, stage, limits, out, keep_audio, crf, preset).run()
    try:
        return _faststart(out.getvalue())
    except ValueError as exc:  # our own muxer output: a bug, not a user error
        raise RuntimeError(f"could not move the moov box: {exc}") from exc


class _Transcode:
    """One decode -> process -> encode pass. The output streams are created at the first
    decoded frame (its orientation gives the output size); audio packets demuxed before it are
    held until then (no more than the input holds)."""

    def __init__(
        self,
        ic: InputContainer,
        probe: _Probe,
        stage: Callable[[_FirstFrame], _Stage],
        limits: VideoLimits,
        out: io.BytesIO,
        keep_audio: bool,
        crf: int,
        preset: str,
    ) -> None:
        self.ic, self.probe, self.stage, self.limits = ic, probe, stage, limits
        self.out, self.crf, self.preset = out, crf, preset
        self.vs = _video_stream(ic)
        self.vs.thread_type = "AUTO"
        self.time_base = cast(Fraction, self.vs.time_base)
        self.ia = _audio_stream(ic) if keep_audio else None
        self.decoder = _Decoder(probe, self.time_base, limits)
        self.process: Callable[[int, float, VideoFrame], VideoFrame] | None = None
        self.held: list[Packet[Any]] = []

    def run(self) -> None:
        vs, ia = self.vs, self.ia
        with av.open(self.out, mode="w", format="mp4") as oc:
            self.oc = oc
            streams = (vs, ia) if ia is not None else (vs,)
            for packet in self.ic.demux(*streams):
                if packet.stream is vs:
                    for frame in cast(list[VideoFrame], packet.decode()):
                        self.encode(frame)
                elif self.process is None:
                    self.held.append(packet)
                else:
                    self.audio(packet)
            if self.decoder.index == 0:
                raise CorruptMedia("no video frame could be decoded")
            oc.mux(_encoded(self.ov, None))
            if self.oa is not None and not self.copy_audio:
                oc.mux(self.oa.encode(None))

    def encode(self, frame: VideoFrame) -> None:
        index, pts, duration = self.decoder.advance(frame)
        if self.process is None:
            self.start(frame)
        assert self.process is not None
        yuv = self.process(index, float(pts * self.time_base), frame)
        yuv.pts, yuv.time_base, yuv.duration = pts, self.time_base, duration
        self.oc.mux(_encoded(self.ov, yuv))
        report(index + 1, self.probe.info.frames or None)

    def audio(self, packet: Packet[Any]) -> None:
        if self.oa is None:
            return
        if self.copy_audio:
            if packet.size and not packet.is_discard:
                packet.stream = self.oa
                self.oc.mux(packet)
        else:
            for audio in packet.decode():
                self.oc.mux(self.oa.encode(cast(Any, audio)))

    def start(self, frame: VideoFrame) -> None:
        """Create the output streams from the first decoded frame."""
        first = _first_frame_of(frame)
        stage = self.stage(first)
        vs, oc = self.vs, self.oc
        width, height = frame.width, frame.height
        if first.orientation.swaps:
            width, height = height, width
        rate = vs.average_rate or vs.guessed_rate or Fraction(round(self.probe.info.fps or 30))
        ov = oc.add_stream(
            "libx264", rate=rate, options={"crf": str(self.crf), "preset": self.preset}
        )
        ov.width, ov.height, ov.pix_fmt = width + width % 2, height + height % 2, "yuv420p"
        ctx = ov.codec_context
        ctx.time_base = self.time_base
        # The matrix and range the output pixels are in (BT.601 limited from OpenCV's
        # BGR->I420; the input's own from the planes path); the primaries and transfer describe
        # the RGB values, which pass through unchanged, so they are the input's (BT.709 when
        # unspecified).
        ctx.colorspace = _COLORSPACE[stage.colour.matrix]
        ctx.color_range = _AVCOL_RANGE_JPEG if stage.colour.full_range else _AVCOL_RANGE_MPEG
        primaries, trc = vs.codec_context.color_primaries, vs.codec_context.color_trc
        ctx.color_primaries = primaries if primaries not in (0, 2) else 1
        ctx.color_trc = trc if trc not in (0, 2) else 1
        sar = vs.codec_context.sample_aspect_ratio
        if sar and sar != 1:
            ctx.sample_aspect_ratio = 1 / sar if first.orientation.swaps else sar
        self.ov = ov
        self.oa, self.copy_audio = _add_audio(oc, self.ia)
        self.process = stage.process
        held, self.held = self.held, []
        for packet in held:
            self.audio(packet)


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


__all__ = ["X264_PRESETS", "FrameFn", "PlaneFn", "transform_video", "transform_video_planes"]
