"""Errors raised by the media pipelines.

Every refusal of an input is a :class:`PipelineError` subclass whose ``code`` is one of the stable
error codes the job spine records (``unsupported_format``, ``corrupt_media``, ``too_large``,
``too_long``, ``no_face``, ``bad_params``). ``message`` is a short human sentence that never
contains personal data: no file names, no metadata values, no pixel content.
"""

from __future__ import annotations

from typing import ClassVar


class PipelineError(Exception):
    """Root of every error the pipelines raise on purpose for a bad input."""

    code: ClassVar[str] = "pipeline_error"
    default_message: ClassVar[str] = "the media could not be processed"

    def __init__(self, message: str | None = None) -> None:
        self.message: str = message if message is not None else self.default_message
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class UnsupportedFormat(PipelineError):
    """The bytes are not in a format the pipelines accept (sniffed, never from an extension)."""

    code = "unsupported_format"
    default_message = "the media format is not supported"


class CorruptMedia(PipelineError):
    """The format is recognised but the data is truncated or malformed."""

    code = "corrupt_media"
    default_message = "the media is corrupt or truncated"


class TooLarge(PipelineError):
    """The input exceeds a size limit (bytes, pixels, side length or resolution)."""

    code = "too_large"
    default_message = "the media exceeds the size limits"


class TooLong(PipelineError):
    """The input exceeds a duration or frame-count limit."""

    code = "too_long"
    default_message = "the media exceeds the duration limits"


class NoFace(PipelineError):
    """A pipeline that needs a face found none."""

    code = "no_face"
    default_message = "no face was found"


class BadParams(PipelineError):
    """The job's parameters (or a configuration value) are invalid."""

    code = "bad_params"
    default_message = "the parameters are invalid"


__all__ = [
    "BadParams",
    "CorruptMedia",
    "NoFace",
    "PipelineError",
    "TooLarge",
    "TooLong",
    "UnsupportedFormat",
]
