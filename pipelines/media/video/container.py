"""Opening an input and translating what FFmpeg, OpenCV and Python raise.

Every ``av.open`` of an input goes through :func:`_open`: the sniffed container selects the FFmpeg
demuxer explicitly (FFmpeg never probes the bytes itself), and an MP4/MOV is pre-walked
(:func:`pipelines.media.isobmff.prewalk`) before FFmpeg reads it. :func:`_decoding` turns an
allocation failure (past the process's memory ceiling) into :class:`TooLarge` and any other
FFmpeg error into :class:`CorruptMedia`.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Final

import av
import av.error
import cv2
from av.audio.stream import AudioStream
from av.container import InputContainer
from av.stream import Disposition
from av.video.stream import VideoStream

from pipelines.errors import CorruptMedia, TooLarge
from pipelines.media.isobmff import BmffLimits, prewalk
from pipelines.media.sniff import ContainerKind
from pipelines.media.video.limits import VideoLimits

_DEMUXER: Final[dict[ContainerKind, str]] = {
    "mp4": "mov",
    "mov": "mov",
    "webm": "matroska",
    "matroska": "matroska",
}


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
