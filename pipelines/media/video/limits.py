"""The limits a video must respect, checked before any frame is decoded, and what
:func:`~pipelines.media.video.probe_video` reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pipelines.errors import BadParams
from pipelines.media.sniff import ContainerKind

#: Video codecs accepted on input (FFmpeg decoder names).
VIDEO_CODECS: Final = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "h263", "mjpeg"})


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


#: The default limits (what a caller that passes none gets).
DEFAULT_LIMITS: Final = VideoLimits()

__all__ = ["DEFAULT_LIMITS", "VIDEO_CODECS", "VideoInfo", "VideoLimits"]
