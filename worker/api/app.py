"""``create_app(container)``: the Starlette application of ``facemedia serve``.

Starlette rather than FastAPI: the two bodies that matter (the multipart upload and the raw
``PUT``) are parsed by hand from the socket (:mod:`worker.api.upload`) and the export is a
streamed zip, so FastAPI's request models would describe none of them and its generated
document would need hand-written overrides anyway; the OpenAPI document is written out in
:mod:`worker.api.openapi` (and committed as docs/openapi.json, checked by a test), and the
server starts without FastAPI's import cost.

Middleware, outermost first: the access log (method, path without the query, status, duration;
no header value, no client address), then the request timeout (``api.request_timeout_s``: 504
``timeout`` if no answer had started by then).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.api import health, jobs, subjects
from worker.api.errors import ApiError, error_response

if TYPE_CHECKING:
    from worker.api.upload import Submission
    from worker.bootstrap import Container
    from worker.ledger.api_keys import Principal

access_log = logging.getLogger("facemedia.api.access")


class ApiState:
    """What the routes share: the container, the job client whose jobs leave the request path,
    the rate limiter, the upload threads and their count."""

    def __init__(self, container: Container) -> None:
        from worker.api.auth import PrincipalCache
        from worker.api.ratelimit import make_limiter
        from worker.api.runner import JobRunner
        from worker.jobs.client import JobClient

        self.container = container
        self.settings = container.settings
        self.runner = JobRunner(container)
        self.client = JobClient(
            container.db,
            container.records,
            container.subjects,
            enqueue=self.runner.enqueue,
            max_upload_bytes=self.settings.max_upload_bytes,
            send=self.runner.send,
        )
        self.limiter = make_limiter(self.settings.broker_url, container.db)
        self.principals = PrincipalCache()  # used with the Redis buckets only (worker.api.auth)
        self.max_uploads = self.settings.api.max_concurrent_uploads
        self.uploads = ThreadPoolExecutor(self.max_uploads, thread_name_prefix="facemedia-upload")
        self._active = 0
        self._lock = threading.Lock()

    def try_upload(self) -> bool:
        """Take an upload slot; False when ``max_concurrent_uploads`` are in progress."""
        with self._lock:
            if self._active >= self.max_uploads:
                return False
            self._active += 1
            return True

    def end_upload(self) -> None:
        """Give the slot back."""
        with self._lock:
            self._active -= 1

    @property
    def active_uploads(self) -> int:
        """Uploads in progress in this process."""
        return self._active

    def job_status_of(self, job_id: str, tenant: str) -> str:
        """The job's status (for an idempotent replay)."""
        from worker.jobs.reads import job_status_view

        return job_status_view(self.container.db, job_id, tenant=tenant).status

    def submit(
        self, media: Any, sub: Submission, principal: Principal, idempotency_key: str | None
    ) -> str:
        """:meth:`JobClient.submit` on behalf of ``principal`` (its tenant, its key id), the
        callback URL checked first (SSRF guard). Runs in an upload thread."""
        from worker.ledger.subjects import Consent
        from worker.webhooks import check_callback_url

        callback = None
        if sub.callback_url is not None:
            callback = check_callback_url(
                sub.callback_url, tuple(self.settings.api.callback_allow_hosts)
            )
        return self.client.submit(
            media,
            sub.job,
            sub.params,
            subject_id=sub.subject,
            consent=Consent(
                research=sub.research_consent, is_minor=sub.minor, guardian=sub.guardian_consent
            ),
            attributes=sub.attributes,
            tenant=principal.tenant,
            idempotency_key=idempotency_key,
            callback_url=callback,
            api_key_id=principal.key_id,
        )

    def close(self) -> None:
        """Stop the upload threads and the background job thread."""
        self.uploads.shutdown(wait=False, cancel_futures=True)
        self.runner.close(wait=False)
        closer = getattr(self.limiter, "close", None)
        if closer is not None:
            closer()


class AccessLog:
    """One line per request: method, path (no query string), status, duration. Never a header
    value, a query, a body or the client's address. Also the last guard: an exception that
    escaped the app is logged by class name only (no traceback) and answered 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        status = 500
        started = False

        async def sending(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = int(message["status"]), True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            # Starlette answered 500 and re-raised: stop it here, so that no traceback (whose
            # messages could quote a value) reaches the server's log; the class name only.
            logging.getLogger("facemedia.api").error("api.unhandled %s", type(exc).__name__)
            if status == 500 and not started:
                await error_response(500, "internal_error", "internal error")(scope, receive, send)
        finally:
            access_log.info(
                "%s %s %d %dms",
                scope.get("method", "-"),
                scope.get("path", "-"),
                status,
                int((time.monotonic() - start) * 1000),
            )


class Timeout:
    """504 ``timeout`` when no answer started within ``seconds`` (a streamed answer already
    under way is cut instead)."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            with anyio.fail_after(self.seconds):
                await self.app(scope, receive, sending)
        except TimeoutError:
            if started:
                raise
            response = error_response(504, "timeout", "the request took too long")
            await response(scope, receive, send)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = "no such endpoint" if exc.status_code == 404 else str(exc.detail)
    return error_response(exc.status_code, code, message, exc.headers)


async def _internal(request: Request, exc: Exception) -> Response:
    return error_response(500, "internal_error", "internal error")  # AccessLog logs the class


async def _openapi(request: Request) -> Response:
    from worker.api.openapi import document

    return JSONResponse(document())


def routes() -> list[Route]:
    """Every route of the API (the OpenAPI document describes the same list)."""
    return [
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/openapi.json", _openapi, methods=["GET"]),
        Route("/v1/jobs", jobs.submit_multipart, methods=["POST"]),
        Route("/v1/jobs", jobs.submit_raw, methods=["PUT"]),
        Route("/v1/jobs/{job_id}", jobs.job_status, methods=["GET"]),
        Route("/v1/jobs/{job_id}/outputs/{name}", jobs.job_output, methods=["GET"]),
        Route("/v1/subjects/erase", subjects.erase, methods=["POST"]),
        Route("/v1/subjects/consent/withdraw", subjects.withdraw_consent, methods=["POST"]),
        Route("/v1/subjects/export", subjects.export, methods=["POST"]),
        Route("/v1/subjects/hold", subjects.hold, methods=["POST"]),
        Route("/v1/subjects/hold/release", subjects.release_hold, methods=["POST"]),
    ]


CHECKPOINT_EVERY_S = 5.0
"""How often the server checkpoints the audit log's head when requests appended entries (a
submission, an output read, a right exercised): one signed checkpoint per interval rather than
one per request, so ingest does not pay a store write per upload."""


async def _checkpoints(container: Container) -> None:
    """Every :data:`CHECKPOINT_EVERY_S`: the audit checkpoint, if this process appended."""
    while True:
        await asyncio.sleep(CHECKPOINT_EVERY_S)
        await run_in_threadpool(container.checkpoint)


def create_app(container: Container) -> ASGIApp:
    """The API on ``container`` (its settings' ``[api]`` section): a Starlette app wrapped in
    the access log and the request timeout. Its state is ``app.state.api`` (:class:`ApiState`),
    closed at shutdown."""
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    state = ApiState(container)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # uvicorn's own access line carries the query string and the client's address: ours
        # (AccessLog) replaces it, whatever logging configuration ran since the server started
        logging.getLogger("uvicorn.access").disabled = True
        ticker = asyncio.create_task(_checkpoints(container))
        # no broker, so no beat: this server runs beat's schedule (sweeps, rescues) itself
        from worker.api.schedule import start_schedule

        schedule = start_schedule(state.runner)
        try:
            yield
        finally:
            ticker.cancel()
            if schedule is not None:
                await run_in_threadpool(schedule.stop)
            state.close()
            await run_in_threadpool(container.checkpoint)  # the last requests' audit entries

    app = Starlette(
        routes=routes(),
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _internal,
        },
        lifespan=lifespan,
    )
    app.state.api = state
    timed = Timeout(app, container.settings.api.request_timeout_s)
    wrapped = AccessLog(timed)
    wrapped.state = app.state  # type: ignore[attr-defined]  # tests reach the state through it
    return wrapped


def app_from_environment() -> ASGIApp:
    """The factory ``facemedia serve`` hands uvicorn (``worker.api.app:app_from_environment``,
    one call per worker process): the process's container from the settings, logging on."""
    from worker.bootstrap import get_container
    from worker.logs import configure_logging

    container = get_container()
    configure_logging(container.settings.log_level)
    return create_app(container)
