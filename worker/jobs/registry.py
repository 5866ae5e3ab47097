"""Job types: one handler per file under worker/jobs/types, registered by name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from pipelines.faces import FaceDetector
from pipelines.faces.tracking import TrackerConfig
from pipelines.media import ImageLimits
from pipelines.media.video import VideoLimits
from worker.jobs.errors import UnknownJobType


@dataclass(frozen=True)
class Output:
    """One output of a job: a short name (part of its object key), bytes and a media type."""

    name: str
    data: bytes = field(repr=False)
    content_type: str


@dataclass(frozen=True)
class JobOutcome:
    """What a handler returns: outputs to store and a summary (counts and ids only)."""

    outputs: tuple[Output, ...]
    faces: int
    summary: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Tools:
    """Collaborators handed to handlers: a per-process detector, the media limits and the
    video face tracker's settings."""

    detector: Callable[[], FaceDetector]
    image_limits: ImageLimits
    video_limits: VideoLimits = field(default_factory=VideoLimits)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


class JobHandler(ABC):
    """A job type: validate parameters first, then run on the decrypted original."""

    name: ClassVar[str]

    @abstractmethod
    def validate(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """Return normalised params or raise ``pipelines.errors.BadParams``."""

    @abstractmethod
    def run(self, media: bytes, params: Mapping[str, Any], tools: Tools) -> JobOutcome:
        """Process ``media`` (plaintext, in memory); raise PipelineError for bad input."""


_REGISTRY: dict[str, type[JobHandler]] = {}
H = TypeVar("H", bound=type[JobHandler])


def register(cls: H) -> H:
    """Class decorator: make a handler available under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"job type {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin() -> None:
    import worker.jobs.types  # noqa: F401  (each module registers itself)


def handler(name: str) -> JobHandler:
    """A fresh handler for job type ``name``; UnknownJobType if none."""
    _load_builtin()
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise UnknownJobType(f"unknown job type {name!r}; known: {', '.join(names())}") from None


def names() -> list[str]:
    """Every registered job type."""
    _load_builtin()
    return sorted(_REGISTRY)
