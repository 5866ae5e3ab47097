"""Transcoding: decode, pass every frame through a function, encode H.264 (and AAC) into a
streamable MP4 with the input's frames, timestamps and duration."""

from __future__ import annotations

import io
import mmap
import queue
import resource
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final, Generic, TypeVar, cast

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
#: Items (frames, audio packets) held between the decoding and the calling thread, and between
#: the calling and the encoding thread. The second queue is the deeper one: it keeps the encoder
#: busy while the callback spends a few frames' time on one frame (a face detection); both bound
#: the memory (a 1080p I420 frame is 3 MB, its BGR 6 MB).
_DECODED_DEPTH: Final = 4
_PROCESSED_DEPTH: Final = 16
#: glibc's thread stack when RLIMIT_STACK is unlimited, and a margin per thread for the rest of
#: its start-up (see :func:`_reserve_thread_memory`).
_DEFAULT_STACK: Final = 32 << 20
_THREAD_MARGIN: Final = 4 << 20
#: Most frames :func:`transform_video_planes` holds for its ``look`` callback (memory: a 1080p
#: I420 frame is 3 MB).
MAX_LOOKAHEAD: Final = 30
#: How often (s) a thread waiting on a queue checks whether the transcode was stopped.
_POLL_S: Final = 0.05
_In = TypeVar("_In")
_Out = TypeVar("_Out")
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

    def stage(first: _FirstFrame) -> _Stage[NDArray[np.uint8], NDArray[np.uint8]]:
        shape: tuple[int, ...] = ()

        def prepare(frame: VideoFrame) -> NDArray[np.uint8]:
            return upright_bgr(frame, first.orientation)

        def process(index: int, t: float, bgr: NDArray[np.uint8]) -> NDArray[np.uint8]:
            nonlocal shape
            shape = shape or bgr.shape
            return _check_output(fn(index, t, bgr), shape)

        def finish(result: NDArray[np.uint8]) -> VideoFrame:
            i420 = cast(NDArray[np.uint8], cv2.cvtColor(_pad_even(result), cv2.COLOR_BGR2YUV_I420))
            return VideoFrame.from_ndarray(i420, format="yuv420p")

        # OpenCV's BGR->I420 is BT.601, limited range.
        return _Stage(prepare, process, finish, _OPENCV_COLOUR)

    return _run(data, limits, stage, keep_audio, crf, preset)


def transform_video_planes(
    data: bytes,
    fn: PlaneFn,
    limits: VideoLimits = DEFAULT_LIMITS,
    *,
    keep_audio: bool = True,
    crf: int = 23,
    preset: str = "veryfast",
    look: PlaneFn | None = None,
    lookahead: int = 0,
) -> bytes:
    """:func:`transform_video` on the decoder's own I420 planes, with no BGR round trip.

    ``fn(index, pts_seconds, planes)`` receives each upright frame as :class:`Planes` (writable
    ``y``, ``u``, ``v`` views and the frame's matrix and range) and changes it in place; it
    converts to BGR only the rectangles it needs (:meth:`Planes.bgr`, :meth:`Planes.put_bgr`).
    The output keeps the input's matrix and range tags (the pixels untouched by ``fn`` are the
    decoder's, re-encoded). 8-bit 4:2:0 input is used as decoded; other pixel formats are
    converted to it first (same matrix and range). Everything else is as
    :func:`transform_video`.

    Lookahead: ``look(index, pts_seconds, planes)``, when given, sees every frame as soon as it
    is decoded (in order, on the calling thread, before ``fn`` sees it), and ``fn`` runs on a
    frame only once ``look`` has seen the next ``lookahead`` frames (or the end of the video),
    so ``fn`` can use what ``look`` found ahead. ``look`` must not change the planes. Up to
    ``lookahead`` frames (at most :data:`MAX_LOOKAHEAD`) are held in memory for it.
    """
    if not 0 <= lookahead <= MAX_LOOKAHEAD:
        raise BadParams(f"lookahead must be between 0 and {MAX_LOOKAHEAD} frames")

    def stage(first: _FirstFrame) -> _Stage[tuple[VideoFrame, Planes], tuple[VideoFrame, Planes]]:
        colour = YuvMatrix.of(first.colorspace, first.full_range)
        orientation = first.orientation
        rng = _AVCOL_RANGE_JPEG if colour.full_range else _AVCOL_RANGE_MPEG

        def prepare(frame: VideoFrame) -> tuple[VideoFrame, Planes]:
            if frame.format.name not in _I420:
                frame = frame.reformat(format="yuv420p", src_color_range=rng, dst_color_range=rng)
            y, u, v = (orientation.apply(plane_view(p)) for p in frame.planes[:3])
            height, width = y.shape
            # A fresh frame: nothing of the decoded one (side data, captions) reaches the
            # encoder, and the decoder's own picture (a reference for later frames) is never
            # written.
            out = VideoFrame(width + width % 2, height + height % 2, "yuv420p")
            luma, cb, cr = (plane_view(p) for p in out.planes)
            luma[:height, :width] = y
            cb[...] = u
            cr[...] = v
            return out, Planes(luma, cb, cr, width, height, colour)

        def process(
            index: int, t: float, item: tuple[VideoFrame, Planes]
        ) -> tuple[VideoFrame, Planes]:
            fn(index, t, item[1])
            return item

        def peek(index: int, t: float, item: tuple[VideoFrame, Planes]) -> None:
            if look is not None:
                look(index, t, item[1])

        def finish(item: tuple[VideoFrame, Planes]) -> VideoFrame:
            out, planes = item
            luma, height, width = planes.luma, planes.height, planes.width
            if height % 2:  # pad by replicating the processed picture
                luma[height] = luma[height - 1]
            if width % 2:
                luma[:, width] = luma[:, width - 1]
            return out

        return _Stage(prepare, process, finish, colour, peek, lookahead if look else 0)

    return _run(data, limits, stage, keep_audio, crf, preset)


@dataclass(frozen=True)
class _Stage(Generic[_In, _Out]):
    """What a transform does to each decoded frame, in three steps that run on three threads
    (:class:`_Transcode`): ``prepare`` (the decoding thread: the decoded frame into what the
    callback takes), ``process`` (the calling thread: the callback, in frame order) and
    ``finish`` (the encoding thread: a new encoder-ready I420 frame); ``colour``: the matrix and
    range of the output pixels. ``look`` (the calling thread) sees each frame as soon as it is
    decoded, ``lookahead`` frames before ``process`` does."""

    prepare: Callable[[VideoFrame], _In]
    process: Callable[[int, float, _In], _Out]
    finish: Callable[[_Out], VideoFrame]
    colour: YuvMatrix
    look: Callable[[int, float, _In], None] | None = None
    lookahead: int = 0


_I420: Final = frozenset({"yuv420p", "yuvj420p"})
_OPENCV_COLOUR: Final = YuvMatrix()
_AVCOL_RANGE_JPEG: Final = 2
# FFmpeg's AVColorSpace for each matrix the output is tagged with (BT.601 as SMPTE 170M).
_COLORSPACE: Final = {"bt601": _AVCOL_SPC_SMPTE170M, "bt709": 1, "bt2020": 9}


def _run(
    data: bytes,
    limits: VideoLimits,
    stage: Callable[[_FirstFrame], _Stage[Any, Any]],
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


class _Stopped(Exception):
    """A thread of the transcode failed or the transcode is being abandoned (the cause is
    recorded in :attr:`_Transcode.errors` or raised by the calling thread)."""


#: An item marking the end of the stream in a :class:`_Pipe`.
_END: Final = object()


class _Pipe:
    """A bounded queue between two threads of one transcode. Every wait gives up (raising
    :class:`_Stopped`) once the transcode is stopped, so no thread outlives a failure."""

    def __init__(self, stop: threading.Event, depth: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(depth)
        self._stop = stop

    def put(self, item: Any) -> None:
        """Hand ``item`` on, waiting while the queue is full."""
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def get(self) -> Any:
        """The next item, waiting while the queue is empty."""
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                return self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue


class _Transcode:
    """One decode -> process -> encode pass on three threads joined by bounded queues
    (:data:`_DECODED_DEPTH`, :data:`_PROCESSED_DEPTH`): a decoding thread (demux, decode, the
    stage's ``prepare``), the calling thread (limits, the stage's ``process``: the callback, in
    frame order) and an encoding thread (the stage's ``finish``, libx264, the muxer). FFmpeg and
    OpenCV release the GIL, so the three overlap. Audio packets travel through the same queues,
    in demux order. The output streams are created at the first decoded frame (its orientation
    gives the output size); audio packets demuxed before it are held until then (no more than
    the input holds). The first error of any thread stops the others and is raised here."""

    def __init__(
        self,
        ic: InputContainer,
        probe: _Probe,
        stage: Callable[[_FirstFrame], _Stage[Any, Any]],
        limits: VideoLimits,
        out: io.BytesIO,
        keep_audio: bool,
        crf: int,
        preset: str,
    ) -> None:
        self.ic, self.probe, self.make_stage, self.limits = ic, probe, stage, limits
        self.out, self.crf, self.preset = out, crf, preset
        self.vs = _video_stream(ic)
        self.vs.thread_type = "AUTO"
        self.time_base = cast(Fraction, self.vs.time_base)
        self.ia = _audio_stream(ic) if keep_audio else None
        self.decoder = _Decoder(probe, self.time_base, limits)
        self.stage: _Stage[Any, Any] | None = None
        self.first: _FirstFrame | None = None
        self.started = False
        self.held: list[Packet[Any]] = []
        # Frames seen by the stage's ``look`` and not yet processed, with the audio packets
        # demuxed among them (kept in order): (index, t, prepared, pts, duration) or a packet.
        self.window: deque[Any] = deque()
        self.waiting = 0  # frames in the window
        self.stop = threading.Event()
        self.go = threading.Event()
        self.errors: list[BaseException] = []
        self.decoded = _Pipe(self.stop, _DECODED_DEPTH)
        self.processed = _Pipe(self.stop, _PROCESSED_DEPTH)
        self.threads: list[threading.Thread] = []

    def run(self) -> None:
        with av.open(self.out, mode="w", format="mp4") as oc:
            self.oc = oc
            try:
                _reserve_thread_memory(2)
                self._spawn(self._read, "video-decode")
                self._spawn(self._write, "video-encode")
                self.go.set()
                self._process()
            except _Stopped:
                pass  # a thread failed: its error is raised below
            except BaseException:
                self.stop.set()  # the other threads give up at their next wait
                raise
            finally:
                for thread in self.threads:
                    thread.join()
            if self.errors:
                raise self.errors[0]
            if self.stop.is_set():
                raise RuntimeError("the transcode stopped without an error")

    def _spawn(self, body: Callable[[], None], name: str) -> None:
        def guarded() -> None:
            try:
                body()
            except _Stopped:
                pass
            except BaseException as exc:  # re-raised by the calling thread
                self.errors.append(exc)
                self.stop.set()

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # no memory left for the thread's stack
            raise _out_of_memory() from exc
        self.threads.append(thread)

    def _read(self) -> None:
        """The decoding thread: every video frame (prepared) and audio packet, in demux order."""
        vs, ia = self.vs, self.ia
        streams = (vs, ia) if ia is not None else (vs,)
        while not self.go.wait(_POLL_S):  # until every thread has started (see run)
            if self.stop.is_set():
                return
        for packet in self.ic.demux(*streams):
            if packet.stream is not vs:
                self.decoded.put(packet)
                continue
            for frame in cast(list[VideoFrame], packet.decode()):
                if self.stage is None:
                    self.first = _first_frame_of(frame)
                    self.stage = self.make_stage(self.first)
                self.decoded.put((frame, self.stage.prepare(frame)))
        self.decoded.put(_END)

    def _process(self) -> None:
        """The calling thread: limits, output streams, the callback; then the end of stream."""
        while (item := self.decoded.get()) is not _END:
            if isinstance(item, tuple):
                self._frame(*item)
            elif not self.started:
                self.held.append(item)
            elif self.waiting:
                self.window.append(item)
            else:
                self.processed.put(item)
        if self.decoder.index == 0:
            raise CorruptMedia("no video frame could be decoded")
        self._release(0)
        self.processed.put(_END)
        self.threads[-1].join()  # the encoding thread flushes the encoders

    def _frame(self, frame: VideoFrame, prepared: Any) -> None:
        index, pts, duration = self.decoder.advance(frame)
        if not self.started:
            self._start(frame)
        stage = self.stage
        assert stage is not None
        t = float(pts * self.time_base)
        if stage.look is None or not stage.lookahead:
            self._emit(index, t, prepared, pts, duration)
            return
        stage.look(index, t, prepared)
        self.window.append((index, t, prepared, pts, duration))
        self.waiting += 1
        self._release(stage.lookahead)

    def _release(self, keep: int) -> None:
        """Process the oldest frames of the lookahead window (and the audio packets among them)
        until ``keep`` frames are left in it."""
        while self.window and self.waiting > keep:
            item = self.window.popleft()
            if isinstance(item, tuple):
                self.waiting -= 1
                self._emit(*item)
            else:
                self.processed.put(item)
        while self.window and not isinstance(self.window[0], tuple):
            self.processed.put(self.window.popleft())

    def _emit(self, index: int, t: float, prepared: Any, pts: Any, duration: Any) -> None:
        assert self.stage is not None
        result = self.stage.process(index, t, prepared)
        self.processed.put((result, pts, duration))
        report(index + 1, self.probe.info.frames or None)

    def _write(self) -> None:
        """The encoding thread: finish and encode every frame, mux every packet, flush. (The
        output streams exist once the first item arrives: :meth:`_start` precedes it.)"""
        while (item := self.processed.get()) is not _END:
            if isinstance(item, tuple):
                result, pts, duration = item
                assert self.stage is not None
                yuv = self.stage.finish(result)
                yuv.pts, yuv.time_base, yuv.duration = pts, self.time_base, duration
                self.oc.mux(_encoded(self.ov, yuv))
            else:
                self._audio(item)
        self.oc.mux(_encoded(self.ov, None))
        if self.oa is not None and not self.copy_audio:
            self.oc.mux(self.oa.encode(None))

    def _audio(self, packet: Packet[Any]) -> None:
        if self.oa is None:
            return
        if self.copy_audio:
            if packet.size and not packet.is_discard:
                packet.stream = self.oa
                self.oc.mux(packet)
        else:
            for audio in packet.decode():
                self.oc.mux(self.oa.encode(cast(Any, audio)))

    def _start(self, frame: VideoFrame) -> None:
        """Create the output streams from the first decoded frame."""
        first, stage = self.first, self.stage
        assert first is not None and stage is not None
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
        self.started = True
        held, self.held = self.held, []
        for packet in held:
            self.processed.put(packet)


def _reserve_thread_memory(count: int) -> None:
    """:class:`TooLarge` when the memory ceiling leaves no room for ``count`` more threads.

    A thread whose start-up inside CPython runs out of memory is never reported: its
    ``Thread.start()`` waits forever. So the stacks (and a margin for the interpreter's
    per-thread state) are mapped and released first, and the threads start while nothing else
    of the transcode allocates.
    """
    stack = threading.stack_size()
    if not stack:
        soft = resource.getrlimit(resource.RLIMIT_STACK)[0]
        stack = soft if 0 < soft < _DEFAULT_STACK else _DEFAULT_STACK
    try:
        mmap.mmap(-1, count * (stack + _THREAD_MARGIN), flags=mmap.MAP_PRIVATE).close()
    except (OSError, MemoryError) as exc:
        raise _out_of_memory() from exc


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
