"""Uploads streamed from the socket into the envelope encryptor, never spooled.

The request body is an async stream on the event loop; :meth:`JobClient.submit` is sync and
reads a file-like in a worker thread. :class:`BodyPump` bridges the two by *pulling*: each
``read`` in the worker thread asks the event loop for the next body chunk
(:func:`asyncio.run_coroutine_threadsafe`) and waits for it, so at most one chunk (uvicorn reads
64 KiB at a time) plus what ``read`` asked for is in memory, and a slow store slows the socket
down (TCP backpressure) instead of filling a buffer. Nothing is written to a file.

``multipart/form-data`` is parsed with python-multipart's callback parser
(:class:`python_multipart.multipart.MultipartParser`) inside the same pulls: the small fields
(``job``, ``params``, ``subject``, ...) are kept in memory under a cap, the ``file`` part's bytes
go straight to the reader. The ``file`` part must come last (as in S3's POST uploads): the
fields decide where and under which key the media is encrypted before its first byte is read.

Every failure while reading is a :class:`~worker.jobs.errors.SubmitRefused`, so the job client
removes whatever reached the store and fails the reserved job (``JobClient._abandon``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.api.errors import ApiError, bad_params, unsupported_media
from worker.jobs import errors as codes
from worker.jobs.errors import SubmitRefused

SNIFF_BYTES = 64
"""Bytes of the media read before anything is stored, to refuse what is not an image or video."""
MAX_FIELD_BYTES = 64 * 1024
"""The largest small field (``params`` JSON included)."""
MAX_FIELDS_BYTES = 256 * 1024
"""All small fields and part headers of one multipart body together."""
MAX_FIELDS = 64
"""The most small parts (``attr`` is repeatable)."""
DRAIN_BYTES = 16 * 1024 * 1024
"""After a refusal, at most this much of the rest of the body is read (and discarded) so that the
client, still sending, receives the answer; beyond it the connection is closed."""


class UploadError(SubmitRefused):
    """Reading the upload failed; ``status`` and ``api_code`` are the HTTP answer."""

    status = 400
    api_code = "bad_request"

    def __init__(self, message: str, job_code: str = codes.BAD_PARAMS) -> None:
        super().__init__(job_code, message)

    def api_error(self) -> ApiError:
        """The HTTP error of this failure."""
        return ApiError(self.status, self.api_code, str(self))


class BadBody(UploadError):
    """The body is not the multipart form it claims to be."""

    status = 400
    api_code = "bad_request"


class FieldError(UploadError):
    """A small field is missing, repeated, too large or after the file."""

    status = 422
    api_code = "bad_params"


class BodyTooLarge(UploadError):
    """The body is over the limit (checked while it streams)."""

    status = 413
    api_code = "too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"the upload exceeds the limit of {limit} bytes", codes.TOO_LARGE)


class UploadTimeout(UploadError):
    """The request took longer than ``api.request_timeout_s``."""

    status = 504
    api_code = "timeout"

    def __init__(self) -> None:
        super().__init__("the upload took longer than the request timeout")


class ClientGone(UploadError):
    """The client disconnected before the body ended."""

    status = 400
    api_code = "bad_request"

    def __init__(self) -> None:
        super().__init__("the upload was cut short")


class BodyPump:
    """The request body, pulled chunk by chunk from the event loop by one worker thread.

    ``limit``: the most body bytes accepted (:class:`BodyTooLarge` past it); ``deadline``: a
    :func:`time.monotonic` instant (:class:`UploadTimeout` past it). ``abort`` (from the loop)
    makes the next pull fail, so a cancelled request stops its thread."""

    def __init__(
        self,
        stream: AsyncIterator[bytes],
        loop: asyncio.AbstractEventLoop,
        *,
        limit: int,
        deadline: float,
    ) -> None:
        self._stream = stream
        self._loop = loop
        self.limit = limit
        self.deadline = deadline
        self.received = 0
        self.ended = False
        self.aborted = False

    async def _next(self) -> bytes | None:
        from starlette.requests import ClientDisconnect

        try:
            while True:
                chunk = await self._stream.__anext__()
                if chunk:
                    return chunk
        except StopAsyncIteration:
            return None
        except ClientDisconnect:
            raise ClientGone() from None

    def pull(self) -> bytes | None:
        """The next chunk of the body (never empty), or None at its end. Worker thread only."""
        if self.ended:
            return None
        if self.aborted:
            raise ClientGone()
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise UploadTimeout()
        future = asyncio.run_coroutine_threadsafe(self._next(), self._loop)
        try:
            chunk = future.result(timeout=remaining)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise UploadTimeout() from None
        except concurrent.futures.CancelledError:
            raise ClientGone() from None
        if chunk is None:
            self.ended = True
            return None
        self.received += len(chunk)
        if self.received > self.limit:
            raise BodyTooLarge(self.limit)
        return chunk

    async def drain(self, budget: int = DRAIN_BYTES) -> bool:
        """On the loop, after the worker thread is done: read and discard the rest of the body
        (at most ``budget`` bytes, before the deadline). True if it ended."""
        if self.ended:
            return True
        seen = 0
        try:
            while seen <= budget and time.monotonic() < self.deadline:
                left = self.deadline - time.monotonic()
                chunk = await asyncio.wait_for(self._next(), timeout=max(left, 0.01))
                if chunk is None:
                    self.ended = True
                    return True
                seen += len(chunk)
        except (TimeoutError, UploadError, RuntimeError):
            return False
        return False


class RawBody:
    """The whole body as the media (``PUT /v1/jobs``): a sync file-like over a pump."""

    def __init__(self, pump: BodyPump) -> None:
        self._pump = pump
        self._buf = bytearray()

    def peek(self, size: int) -> bytes:
        """Up to ``size`` first bytes, kept for the next reads."""
        while len(self._buf) < size:
            chunk = self._pump.pull()
            if chunk is None:
                break
            self._buf += chunk
        return bytes(self._buf[:size])

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is left if negative); b'' at the end."""
        while size < 0 or len(self._buf) < size:
            chunk = self._pump.pull()
            if chunk is None:
                break
            self._buf += chunk
        n = len(self._buf) if size < 0 else min(size, len(self._buf))
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def finish(self) -> None:
        """Read the body to its end (what the encryptor did not read is discarded: a retried
        submission answered with its first job reads none)."""
        self._buf.clear()
        while self._pump.pull() is not None:
            pass


@dataclass
class _Part:
    name: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    value: bytearray = field(default_factory=bytearray)


class MultipartBody:
    """A ``multipart/form-data`` body parsed as it streams: small fields first, then ``file``,
    whose bytes are this object's :meth:`read` (a sync file-like for the encryptor)."""

    def __init__(self, pump: BodyPump, boundary: bytes, file_field: str = "file") -> None:
        from python_multipart.multipart import MultipartParser

        self._pump = pump
        self._file_field = file_field
        self.fields: list[tuple[str, str]] = []
        self._part: _Part | None = None
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._meta_bytes = 0
        self._in_file = False
        self._file_started = False
        self._file_ended = False
        self._ended = False
        self._buf = bytearray()
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    # ----- parser callbacks (run inside ``_feed``) ----------------------------------------------

    def _count(self, n: int) -> None:
        self._meta_bytes += n
        if self._meta_bytes > MAX_FIELDS_BYTES:
            raise FieldError(f"the form fields exceed {MAX_FIELDS_BYTES} bytes")

    def _on_part_begin(self) -> None:
        if self._file_started:
            raise FieldError(f"the {self._file_field} part must be the last part of the form")
        if len(self.fields) >= MAX_FIELDS:
            raise FieldError(f"more than {MAX_FIELDS} form fields")
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        assert self._part is not None
        name = bytes(self._header_name).decode("latin-1").strip().lower()
        self._part.headers[name] = bytes(self._header_value).decode("latin-1").strip()
        self._header_name.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        assert self._part is not None
        kind, options = parse_options_header(self._part.headers.get("content-disposition", ""))
        name = options.get(b"name")
        if kind != b"form-data" or not name:
            raise BadBody("a part has no form-data name")
        self._part.name = name.decode("utf-8", "replace")
        if self._part.name == self._file_field:
            self._in_file = self._file_started = True

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._buf += data[start:end]
            return
        assert self._part is not None
        self._count(end - start)
        self._part.value += data[start:end]
        if len(self._part.value) > MAX_FIELD_BYTES:
            raise FieldError(f"a form field exceeds {MAX_FIELD_BYTES} bytes")

    def _on_part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self._file_ended = True
            return
        assert self._part is not None and self._part.name is not None
        try:
            text = bytes(self._part.value).decode("utf-8")
        except UnicodeDecodeError:
            raise FieldError("a form field is not UTF-8 text") from None
        self.fields.append((self._part.name, text))
        self._part = None

    def _on_end(self) -> None:
        self._ended = True

    # ----- pulling --------------------------------------------------------------------------

    def _feed(self) -> bool:
        """Parse one more chunk; False at the end of the body."""
        from python_multipart.exceptions import MultipartParseError

        chunk = self._pump.pull()
        if chunk is None:
            return False
        try:
            self._parser.write(chunk)
        except MultipartParseError:
            raise BadBody("the multipart body is malformed") from None
        return True

    def read_fields(self) -> list[tuple[str, str]]:
        """Parse up to the start of the ``file`` part; its small fields, in order."""
        while not self._file_started:
            if not self._feed():
                raise FieldError(f"the form has no {self._file_field} part")
        return self.fields

    def peek(self, size: int) -> bytes:
        """Up to ``size`` first bytes of the file, kept for the next reads."""
        while len(self._buf) < size and not self._file_ended:
            if not self._feed():
                raise BadBody("the multipart body ends inside the file")
        return bytes(self._buf[:size])

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes of the file (the rest if negative); b'' at its end."""
        while (size < 0 or len(self._buf) < size) and not self._file_ended:
            if not self._feed():
                raise BadBody("the multipart body ends inside the file")
        n = len(self._buf) if size < 0 else min(size, len(self._buf))
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def finish(self) -> None:
        """Read to the closing boundary (file bytes the encryptor did not read are discarded:
        a retried submission answered with its first job reads none); no part may follow."""
        while not self._ended:
            self._buf.clear()
            if not self._feed():
                raise BadBody("the multipart body has no closing boundary")


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` content type; :class:`ApiError` 415 if the
    body is not a multipart form (or has no boundary)."""
    from python_multipart.multipart import parse_options_header

    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data":
        raise unsupported_media("POST /v1/jobs takes multipart/form-data (or PUT the raw media)")
    boundary = options.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise ApiError(400, "bad_request", "the multipart content type has no boundary")
    return bytes(boundary)


def sniff(head: bytes) -> str:
    """``image`` or ``video`` from the first bytes (:mod:`pipelines.media.sniff`, the project's
    one sniffer); :class:`UploadError` 415 otherwise. Nothing is stored before this passes."""
    from pipelines.errors import UnsupportedFormat
    from pipelines.media.sniff import media_kind

    try:
        return media_kind(head)
    except UnsupportedFormat as exc:
        err = UploadError(str(exc), codes.UNSUPPORTED_FORMAT)
        err.status, err.api_code = 415, "unsupported_media"
        raise err from None


# ----- the submission's fields ------------------------------------------------------------------

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True)
class Submission:
    """What a client submits besides the media (the same for POST fields and PUT headers)."""

    job: str
    subject: str
    params: dict[str, Any]
    research_consent: bool = False
    minor: bool = False
    guardian_consent: bool = False
    attributes: dict[str, str] | None = None
    callback_url: str | None = None

    def __repr__(self) -> str:  # the subject id and attributes are personal data
        return f"Submission(job={self.job!r}, subject=<hidden>)"


def _flag(name: str, value: str) -> bool:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise bad_params(f"{name} must be true or false")


def parse_submission(values: Mapping[str, list[str]]) -> Submission:
    """Build a :class:`Submission` from named values (form fields or ``Facemedia-*``
    headers, names normalised to ``job``, ``subject``, ``params``, ``research_consent``,
    ``minor``, ``guardian_consent``, ``attr``, ``callback_url``); :class:`ApiError` 422 for a
    missing, repeated or invalid one. Values are never echoed."""
    known = {
        "job",
        "subject",
        "params",
        "research_consent",
        "minor",
        "guardian_consent",
        "attr",
        "callback_url",
    }
    unknown = sorted(set(values) - known)
    if unknown:
        raise bad_params(f"unknown field {unknown[0]!r}")

    def one(name: str, required: bool = False) -> str | None:
        got = values.get(name, [])
        if len(got) > 1:
            raise bad_params(f"{name} is given more than once")
        if not got or not got[0].strip():
            if required:
                raise bad_params(f"{name} is required")
            return None
        return got[0].strip()

    job = one("job", required=True)
    subject = one("subject", required=True)
    assert job is not None and subject is not None
    if len(subject) > 256:
        raise bad_params("subject is longer than 256 characters")
    raw_params = one("params")
    params: Any = {}
    if raw_params is not None:
        try:
            params = json.loads(raw_params)
        except json.JSONDecodeError as exc:
            raise bad_params(f"params is not valid JSON ({exc.msg})") from None
        if not isinstance(params, dict):
            raise bad_params("params must be a JSON object")
    attributes: dict[str, str] | None = None
    for item in values.get("attr", []):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise bad_params("attr takes KEY=VALUE (keys: age, region, device)")
        attributes = attributes or {}
        attributes[key.strip()] = value.strip()
    flags = {name: _flag(name, one(name) or "") for name in ("research_consent", "minor")}
    flags["guardian_consent"] = _flag("guardian_consent", one("guardian_consent") or "")
    return Submission(
        job=job,
        subject=subject,
        params=params,
        attributes=attributes,
        callback_url=one("callback_url"),
        **flags,
    )


HEADER_PREFIX = "facemedia-"


def header_values(headers: Any) -> dict[str, list[str]]:
    """``Facemedia-*`` request headers as submission values (``Facemedia-Research-Consent`` →
    ``research_consent``; ``Facemedia-Attr`` repeatable)."""
    found: dict[str, list[str]] = {}
    for raw_name, raw_value in headers.raw:
        name = raw_name.decode("latin-1").lower()
        if not name.startswith(HEADER_PREFIX):
            continue
        key = name[len(HEADER_PREFIX) :].replace("-", "_")
        found.setdefault(key, []).append(raw_value.decode("utf-8", "replace"))
    return found


def form_values(fields: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Multipart fields as submission values, in order."""
    found: dict[str, list[str]] = {}
    for name, value in fields:
        found.setdefault(name, []).append(value)
    return found
