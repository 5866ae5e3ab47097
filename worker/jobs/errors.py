"""The jobs package's exception root and the stable error codes users see."""

from __future__ import annotations

from typing import ClassVar

# Stable codes a failed job carries (documented in docs/ARCHITECTURE.md, "Errors users see").
UNSUPPORTED_FORMAT = "unsupported_format"
CORRUPT_MEDIA = "corrupt_media"
TOO_LARGE = "too_large"
TOO_LONG = "too_long"
NO_FACE = "no_face"
RESIDUAL_FACE = "residual_face"
BAD_PARAMS = "bad_params"
ORIGINAL_MISSING = "original_missing"
SUBJECT_ERASED = "subject_erased"
WORKER_LOST = "worker_lost"
RETRIES_EXHAUSTED = "retries_exhausted"
EXPIRED = "expired"
INTERNAL_ERROR = "internal_error"

ERROR_CODES = (
    UNSUPPORTED_FORMAT,
    CORRUPT_MEDIA,
    TOO_LARGE,
    TOO_LONG,
    NO_FACE,
    RESIDUAL_FACE,
    BAD_PARAMS,
    ORIGINAL_MISSING,
    SUBJECT_ERASED,
    WORKER_LOST,
    RETRIES_EXHAUSTED,
    EXPIRED,
    INTERNAL_ERROR,
)


class JobError(Exception):
    """Root of every error the jobs package raises."""


class UnknownJobType(JobError, ValueError):
    """No handler is registered under this name."""


class JobNotFound(JobError, LookupError):
    """No job with this id."""


class SubmitRefused(JobError, ValueError):
    """The submission was refused before anything was stored."""

    code: ClassVar[str] = BAD_PARAMS

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # type: ignore[misc]


class JobFailed(JobError):
    """A permanent failure: the job ends ``failed`` with ``code`` and a human message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TransientJobError(JobError):
    """A fault worth retrying (storage throttling, connection loss); ``attempt`` counts them."""

    attempt: int = 0
