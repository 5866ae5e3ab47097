"""Job types: one handler per file under worker/jobs/types, registered by name in
:data:`JOB_TYPES` (a :class:`pipelines.registry.Registry`, the type effects and de-identification
operators use too). A handler validates its params (with :class:`pipelines.params.Params`,
wording :data:`pipelines.params.JOB`) before it runs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from pipelines.faces import FaceDetector
from pipelines.faces.tracking import TrackerConfig
from pipelines.media import ImageLimits
from pipelines.media.video import VideoLimits
from pipelines.registry import Registry
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


H = TypeVar("H", bound=type[JobHandler])


def _unknown_job_type(name: object, known: str) -> UnknownJobType:
    return UnknownJobType(f"unknown job type {name!r}; known: {known}")


#: The job types by name (classes; :func:`handler` hands out a fresh instance).
JOB_TYPES: Registry[type[JobHandler]] = Registry("job type", "worker.jobs.types", _unknown_job_type)


def register(cls: H) -> H:
    """Class decorator: make a handler available under ``cls.name``."""
    JOB_TYPES.register(cls)
    return cls


def handler(name: str) -> JobHandler:
    """A fresh handler for job type ``name``; UnknownJobType if none."""
    return JOB_TYPES.get(name)()


def names() -> list[str]:
    """Every registered job type."""
    return list(JOB_TYPES.names())
