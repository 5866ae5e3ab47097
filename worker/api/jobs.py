"""``POST /v1/jobs`` (multipart), ``PUT /v1/jobs`` (raw body), ``GET /v1/jobs/{id}`` and
``GET /v1/jobs/{id}/outputs/{name}``.

An upload runs in one of the app's upload threads (at most ``api.max_concurrent_uploads`` per
process; one more is answered 503 ``busy``), pulling the body from the socket
(:mod:`worker.api.upload`) into :meth:`JobClient.submit`. A job of another tenant answers 404
exactly like an unknown one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from worker.api import upload
from worker.api.auth import authorize
from worker.api.errors import ApiError, bad_params, not_found, too_large
from worker.jobs import errors as codes

if TYPE_CHECKING:
    from worker.api.app import ApiState
    from worker.ledger.api_keys import Principal

SCOPE_WRITE = "jobs:write"
SCOPE_READ = "jobs:read"
MAX_IDEMPOTENCY_KEY = 128
OUTPUT_CHUNK = 256 * 1024


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


def _accepted(job_id: str, status: str = "queued") -> JSONResponse:
    return JSONResponse(
        {"job_id": job_id, "status": status},
        202,
        headers={"Location": f"/v1/jobs/{job_id}"},
    )


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable() or not key.isascii():
        raise bad_params(f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII chars")
    return key


async def _replay(state: ApiState, principal: Principal, key: str | None) -> JSONResponse | None:
    """The answer to a retried request (same tenant and Idempotency-Key), before the body."""
    if key is None:
        return None
    found = await run_in_threadpool(state.client.find_idempotent, principal.tenant, key)
    if found is None:
        return None
    return _accepted(found, await run_in_threadpool(state.job_status_of, found, principal.tenant))


def _refusal(exc: Exception) -> ApiError:
    """The HTTP error of a refused submission."""
    if isinstance(exc, upload.UploadError):
        return exc.api_error()
    code = str(getattr(exc, "code", codes.BAD_PARAMS))
    if code == codes.TOO_LARGE:
        return ApiError(413, "too_large", str(exc))
    if code == codes.SUBJECT_ERASED:
        return ApiError(409, "subject_erased", "the subject was erased")
    if code == codes.UNSUPPORTED_FORMAT:
        return ApiError(415, "unsupported_media", str(exc))
    return ApiError(422, "bad_params", str(exc))


async def _discard_body(request: Request, state: ApiState) -> None:
    """Before an early answer (a replay, 413 from Content-Length, 422 from headers, 503 busy):
    read and discard up to :data:`upload.DRAIN_BYTES` of the body so that a client that is still
    sending reads the answer. Not when the client waits for ``100 Continue`` (curl does, for
    large bodies): it has sent nothing and gets the answer at once."""
    if request.headers.get("expect", "").lower() == "100-continue":
        return
    pump = upload.BodyPump(
        request.stream().__aiter__(),
        asyncio.get_running_loop(),
        limit=upload.DRAIN_BYTES,
        deadline=time.monotonic() + min(10.0, state.settings.api.request_timeout_s),
    )
    await pump.drain()


async def _ingest(request: Request, raw: bool) -> Response:
    """Shared by POST (multipart) and PUT (raw body)."""
    state = _state(request)
    principal = await authorize(request, SCOPE_WRITE)  # 401/403/429: the body is not read
    try:
        key = _idempotency_key(request)
        replay = await _replay(state, principal, key)
        if replay is not None:
            await _discard_body(request, state)
            return replay
        limit = state.settings.max_upload_bytes
        body_limit = limit if raw else limit + upload.MAX_FIELDS_BYTES + 64 * 1024
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise ApiError(400, "bad_request", "Content-Length is not a number")
            if int(declared) > body_limit:
                raise too_large(limit)
        boundary = None if raw else upload.boundary_of(request.headers.get("content-type", ""))
        values = upload.header_values(request.headers) if raw else None
        if values is not None:
            submission = upload.parse_submission(values)  # before the body: 422 at once
        if not state.try_upload():
            raise ApiError(
                503,
                "busy",
                "too many uploads in progress on this server; retry shortly",
                {"Retry-After": "1"},
            )
    except ApiError:
        await _discard_body(request, state)
        raise
    loop = asyncio.get_running_loop()
    pump = upload.BodyPump(
        request.stream().__aiter__(),
        loop,
        limit=body_limit,
        deadline=time.monotonic() + state.settings.api.request_timeout_s - 0.5,
    )

    def work() -> str:
        source: upload.RawBody | upload.MultipartBody
        if boundary is None:
            source = upload.RawBody(pump)
            sub = submission
        else:
            source = upload.MultipartBody(pump, boundary)
            sub = upload.parse_submission(upload.form_values(source.read_fields()))
        upload.sniff(source.peek(upload.SNIFF_BYTES))
        job_id = state.submit(source, sub, principal, key)
        source.finish()
        return job_id

    try:
        job_id = await loop.run_in_executor(state.uploads, work)
    except Exception as exc:
        pump.aborted = True
        error = exc if isinstance(exc, ApiError) else _refusal_or_raise(exc)
        await pump.drain()  # the client, still sending, then reads the answer
        raise error from None
    except BaseException:  # cancelled (the request timeout): the thread's next pull fails
        pump.aborted = True
        raise
    finally:
        state.end_upload()
    return _accepted(job_id)


def _refusal_or_raise(exc: Exception) -> ApiError:
    from worker.jobs.errors import JobError, SubmitRefused

    if isinstance(exc, SubmitRefused | upload.UploadError):
        return _refusal(exc)
    if isinstance(exc, JobError | ValueError):
        code = getattr(exc, "code", None)
        if code == "bad_callback_url":  # the SSRF guard (docs/API.md, *Webhooks*)
            return ApiError(422, "bad_callback_url", str(exc))
        if code == "bad_tenant":
            return ApiError(422, "bad_params", str(exc))
    raise exc


async def submit_multipart(request: Request) -> Response:
    """``POST /v1/jobs``: a multipart form (fields, then ``file``)."""
    return await _ingest(request, raw=False)


async def submit_raw(request: Request) -> Response:
    """``PUT /v1/jobs``: the raw media as the body, the fields as ``Facemedia-*`` headers."""
    return await _ingest(request, raw=True)


async def job_status(request: Request) -> Response:
    """``GET /v1/jobs/{job_id}``: the job's :class:`~worker.jobs.reads.JobStatusView`."""
    from worker.jobs.errors import JobNotFound
    from worker.jobs.reads import job_status_view

    state = _state(request)
    principal = await authorize(request, SCOPE_READ)
    job_id = request.path_params["job_id"]
    try:
        view = await run_in_threadpool(
            job_status_view, state.container.db, job_id, tenant=principal.tenant
        )
    except JobNotFound:
        raise not_found() from None
    return JSONResponse(view.to_json())


def _output_row(state: ApiState, job_id: str, name: str, principal: Principal) -> Any:
    """The live output row of the tenant's job, audited as read; ApiError 404 otherwise."""
    from sqlalchemy import select

    from worker.jobs.errors import JobNotFound
    from worker.jobs.reads import job_status_view
    from worker.ledger import audit
    from worker.ledger.models import StoredObject

    try:
        job_status_view(state.container.db, job_id, tenant=principal.tenant)
    except JobNotFound:
        raise not_found() from None
    with state.container.db.session() as s:
        row = s.scalars(
            select(StoredObject).where(
                StoredObject.job_id == job_id,
                StoredObject.object_class == "output",
                StoredObject.name == name,
                StoredObject.deleted_at.is_(None),
            )
        ).first()
        if row is None:
            raise not_found("no such output")
        audit.append(
            s,
            "api.output_read",
            job_id,
            tenant=principal.tenant,
            key_id=principal.key_id,
            name=name,
        )
        return row.key, row.content_type


def _chunks(stream: Any) -> Iterator[bytes]:
    try:
        while chunk := stream.read(OUTPUT_CHUNK):
            yield chunk
    finally:
        stream.close()


async def job_output(request: Request) -> Response:
    """``GET /v1/jobs/{job_id}/outputs/{name}``: the decrypted output, streamed."""
    state = _state(request)
    principal = await authorize(request, SCOPE_READ)
    job_id, name = request.path_params["job_id"], request.path_params["name"]
    key, content_type = await run_in_threadpool(_output_row, state, job_id, name, principal)
    stream = await run_in_threadpool(state.container.vault.open, key, "output", job_id)
    return StreamingResponse(
        _chunks(stream),
        media_type=content_type or "application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )
