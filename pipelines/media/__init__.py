"""Media input and output: decoding and encoding in memory, with limits checked up front.

:mod:`~pipelines.media.sniff` tells formats apart, :mod:`~pipelines.media.image` and the
:mod:`~pipelines.media.video` package decode and encode, :mod:`~pipelines.media.isobmff` bounds
an MP4/MOV before FFmpeg reads it; the process memory ceiling is set here."""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterator

from pipelines.media.image import (
    ImageInfo,
    ImageLimits,
    OutputFormat,
    decode_image,
    encode_image,
    probe_image,
)
from pipelines.media.sniff import (
    ContainerKind,
    ImageFormat,
    MediaKind,
    media_kind,
    sniff_image_format,
    sniff_video_container,
)


def set_memory_ceiling(limit_mb: int) -> int | None:
    """Lower this process's ``RLIMIT_DATA`` soft limit to ``limit_mb`` MiB; 0 leaves it alone.

    ``RLIMIT_DATA`` (not ``RLIMIT_AS``) was chosen by measurement (docs/OPERATIONS.md): it
    counts the heap, anonymous mappings and thread stacks, not shared libraries, the model's
    read-only mapping or malloc's reserved arenas, so a decode that needs more fails with
    ``MemoryError`` (``too_large``) instead of the kernel killing the process. The limit is never
    raised above the current soft or hard limit, and not set at all on a process that already
    holds within 128 MiB of it (it would fail at once). Returns the previous soft limit (to restore
    with :func:`restore_memory_ceiling`), or None when nothing was changed.
    """
    if limit_mb <= 0:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    target = limit_mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        target = min(target, hard)
    if soft != resource.RLIM_INFINITY and soft <= target:
        return None
    if _data_size() + _HEADROOM > target:
        return None  # a process already this large (a test runner, say) is left alone
    resource.setrlimit(resource.RLIMIT_DATA, (target, hard))
    return soft


# A ceiling is set only on a process that holds less than the ceiling minus this.
_HEADROOM = 128 * 1024 * 1024


def _data_size() -> int:
    """This process's data size in bytes (``VmData``: what ``RLIMIT_DATA`` counts); 0 if unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def restore_memory_ceiling(previous: int | None) -> None:
    """Put back the soft limit :func:`set_memory_ceiling` replaced (None: nothing to do)."""
    if previous is None:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (previous, hard))


@contextlib.contextmanager
def memory_ceiling(limit_mb: int) -> Iterator[None]:
    """:func:`set_memory_ceiling` for the duration of a block (an inline ``facemedia run``)."""
    previous = set_memory_ceiling(limit_mb)
    try:
        yield
    finally:
        restore_memory_ceiling(previous)


__all__ = [
    "ContainerKind",
    "ImageFormat",
    "ImageInfo",
    "ImageLimits",
    "MediaKind",
    "OutputFormat",
    "decode_image",
    "encode_image",
    "media_kind",
    "memory_ceiling",
    "probe_image",
    "restore_memory_ceiling",
    "set_memory_ceiling",
    "sniff_image_format",
    "sniff_video_container",
]
