"""Frame progress of a running transcode, for whoever shows it (the CLI's progress bar).

The transcoder calls :func:`report` once per frame processed (the callback is done with it;
the encoder thread takes it next); a caller that wants the figures sets :data:`frame_progress`
around the work (a context variable: each thread and task sees its
own, so a worker's concurrent jobs never report into each other's hook). Nothing is reported
when no hook is set, which is every worker's case.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

#: ``hook(frames_done, frames_total_or_None)``.
FrameProgress = Callable[[int, int | None], None]

frame_progress: ContextVar[FrameProgress | None] = ContextVar("frame_progress", default=None)


def report(done: int, total: int | None) -> None:
    """Tell the current hook, if any, that ``done`` of ``total`` frames are processed."""
    hook = frame_progress.get()
    if hook is not None:
        hook(done, total)


__all__ = ["FrameProgress", "frame_progress", "report"]
