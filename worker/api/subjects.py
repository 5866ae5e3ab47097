"""Subjects' rights over HTTP: erase, withdraw consent, export (a streamed zip), hold and
release. The subject id travels in the JSON body only (never in a URL, so never in an access
log), is resolved in the caller's tenant (another tenant's subject is unknown: 404) and is never
echoed back.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from worker.api.auth import authorize
from worker.api.errors import ApiError, bad_params, not_found

if TYPE_CHECKING:
    from worker.api.app import ApiState
    from worker.ledger.api_keys import Principal

SCOPE = "subjects:manage"
MAX_BODY = 16 * 1024
ZIP_FLUSH = 256 * 1024


async def _body(request: Request, allowed: frozenset[str]) -> dict[str, Any]:
    """The JSON object of the request (at most 16 KiB), with a non-empty ``subject``."""
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise ApiError(415, "unsupported_media", "the body must be application/json")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise ApiError(413, "too_large", f"the body exceeds {MAX_BODY} bytes")
    try:
        data = json.loads(bytes(raw))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad_params("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise bad_params("the body must be a JSON object")
    unknown = sorted(set(data) - allowed - {"subject"})
    if unknown:
        raise bad_params(f"unknown field {unknown[0]!r}")
    subject = data.get("subject")
    if not isinstance(subject, str) or not subject.strip() or len(subject) > 256:
        raise bad_params("subject must be a non-empty string of at most 256 characters")
    return data


def _ref(state: ApiState, subject: str, principal: Principal) -> str:
    ref = state.client.subject_ref(subject.strip(), tenant=principal.tenant)
    if ref is None:
        raise not_found("no such subject")
    return str(ref)


def _rights_json(result: Any) -> dict[str, Any]:
    data = dict(result.to_json())
    data.pop("subject", None)  # the ledger's opaque id: the caller has no use for it
    return data


async def _call(request: Request, allowed: frozenset[str], action: Any) -> Response:
    from worker.ledger.errors import NotFound

    state: ApiState = request.app.state.api
    principal = await authorize(request, SCOPE)
    data = await _body(request, allowed)

    def run() -> dict[str, Any]:
        try:
            return dict(action(state, _ref(state, data["subject"], principal), principal, data))
        except NotFound:
            raise not_found("no such subject") from None

    return JSONResponse(await run_in_threadpool(run))


async def erase(request: Request) -> Response:
    """``POST /v1/subjects/erase`` ``{"subject"}``: erase everything held about the subject."""
    return await _call(
        request,
        frozenset(),
        lambda st, ref, p, _d: _rights_json(st.container.rights.erase(ref, tenant=p.tenant)),
    )


async def withdraw_consent(request: Request) -> Response:
    """``POST /v1/subjects/consent/withdraw`` ``{"subject"}``: research consent withdrawn."""
    return await _call(
        request,
        frozenset(),
        lambda st, ref, p, _d: _rights_json(
            st.container.rights.withdraw_consent(ref, tenant=p.tenant)
        ),
    )


def _hold(state: ApiState, ref: str, principal: Principal, data: dict[str, Any]) -> dict[str, Any]:
    from worker.crypto import CryptoError
    from worker.retention.holds import HoldNoteTooLong, UnknownHoldReason

    reason, note = data.get("reason"), data.get("note")
    if not isinstance(reason, str) or (note is not None and not isinstance(note, str)):
        raise bad_params("reason must be a hold reason code; note, if given, a string")
    try:
        result = state.container.rights.hold(
            subject_id=ref, reason=reason, note=note, tenant=principal.tenant
        )
    except (UnknownHoldReason, HoldNoteTooLong) as exc:
        raise bad_params(str(exc)) from None
    except CryptoError:
        raise ApiError(409, "subject_erased", "the subject was erased") from None
    return _hold_json(result)


def _hold_json(result: dict[str, Any]) -> dict[str, Any]:
    return {"held": result["held"], "reason": result["reason"], "note": result["note"]}


async def hold(request: Request) -> Response:
    """``POST /v1/subjects/hold`` ``{"subject", "reason", "note"?}``: a legal hold."""
    return await _call(request, frozenset({"reason", "note"}), _hold)


async def release_hold(request: Request) -> Response:
    """``POST /v1/subjects/hold/release`` ``{"subject"}``: the legal hold released."""
    return await _call(
        request,
        frozenset(),
        lambda st, ref, p, _d: _hold_json(
            st.container.rights.release_hold(subject_id=ref, tenant=p.tenant)
        ),
    )


class _Sink:
    """An unseekable writer collecting what :mod:`zipfile` writes, handed out in pieces."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        """Nothing to flush: :meth:`take` hands the bytes out."""

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        self.size = 0
        return out


def zip_stream(entries: Iterable[tuple[str, Iterable[bytes]]]) -> Iterator[bytes]:
    """A zip archive of ``entries`` (name, chunks), produced as it is written: members are
    deflated as their chunks arrive, on an unseekable writer (data descriptors, ZIP64), so
    neither the archive nor a member is ever whole in memory or on disk."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:  # type: ignore[call-overload]
        for name, chunks in entries:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                for chunk in chunks:
                    member.write(chunk)
                    if sink.size >= ZIP_FLUSH:
                        yield sink.take()
            if sink.size:
                yield sink.take()
    tail = sink.take()
    if tail:
        yield tail


async def export(request: Request) -> Response:
    """``POST /v1/subjects/export`` ``{"subject"}``: a zip of everything held about the subject
    (``report.json`` first, then each decrypted output and research sample), streamed."""
    from worker.ledger.errors import NotFound

    state: ApiState = request.app.state.api
    principal = await authorize(request, SCOPE)
    data = await _body(request, frozenset())

    def start() -> Iterator[tuple[str, Iterator[bytes]]]:
        try:
            ref = _ref(state, data["subject"], principal)
            return state.container.rights.export_entries(ref, tenant=principal.tenant)
        except NotFound:
            raise not_found("no such subject") from None

    entries = await run_in_threadpool(start)
    return StreamingResponse(
        zip_stream(entries),
        media_type="application/zip",
        headers={
            "Content-Disposition": 'attachment; filename="export.zip"',
            "Cache-Control": "no-store",
        },
    )
