"""Transcoding: decode, pass every frame through a function, encode H.264 (and AAC) into a
streamable MP4 with the input's frames, timestamps and duration."""

from __future__ import annotations

import io
from collections.abc import Callable
from fractions import Fraction
from typing import Any, Final, cast

import av
import av.error
import cv2
import numpy as np
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from numpy.typing import NDArray

from pipelines.errors import BadParams, CorruptMedia, UnsupportedFormat
from pipelines.media.video.container import (
    _audio_stream,
    _decoding,
    _open,
    _out_of_memory,
    _video_stream,
)
from pipelines.media.video.decode import _Decoder
from pipelines.media.video.limits import DEFAULT_LIMITS, VideoLimits
from pipelines.media.video.mp4box import _faststart
from pipelines.media.video.probe import _Probe, _probe

FrameFn = Callable[[int, float, NDArray[np.uint8]], NDArray[np.uint8]]

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


__all__ = ["X264_PRESETS", "FrameFn", "transform_video"]
