"""One webhook delivery attempt of an ended job, its backoff and the state it leaves.

The body is the job's :class:`~worker.jobs.reads.JobStatusView` JSON (no subject id; the
``webhook`` field itself is left out), compact with sorted keys, signed with the job's API key's
webhook secret (:func:`worker.webhooks.signing.sign`). The URL is checked again
(:func:`worker.webhooks.guard.resolve_target`) and the connection goes to the checked address
(DNS rebinding), with a short timeout and no redirect followed.

The ledger keeps ``webhook_state`` (``None`` → ``pending`` → ``delivered`` | ``dead``),
``webhook_attempts`` and ``webhook_error`` (a code, never a response body); once ``delivered``
or ``dead`` the job's ``callback_url`` is cleared (data minimisation). Each attempt is
recorded by one compare-and-set on ``webhook_attempts``; a message delivered again after the
state is final does nothing. A 2xx answer is delivered; anything else is retried with
exponential backoff (:meth:`WebhookService.backoff`) up to ``max_attempts``, then ``dead``. A
refused address, a malformed URL or a missing secret is ``dead`` at once (retrying cannot help).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import structlog
from sqlalchemy import CursorResult, and_, func, or_, update

from worker.dispatch import names
from worker.jobs.lifecycle import ENDED, EXPIRED
from worker.jobs.reads import job_status_view
from worker.ledger.db import Database
from worker.ledger.models import Job
from worker.webhooks.guard import BadCallbackUrl, Resolver, Target, Unresolvable, resolve_target
from worker.webhooks.signing import HEADER, sign

log = structlog.get_logger("facemedia.webhooks")

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
#: Error codes recorded in ``webhook_error`` (besides ``http_<status>``).
TIMEOUT, REFUSED, BLOCKED = "timeout", "refused", "blocked_address"
CONNECT_ERROR, TLS_ERROR, BAD_RESPONSE = "connect_error", "tls_error", "bad_response"
UNRESOLVABLE, BAD_URL, NO_SECRET = "unresolvable", "bad_callback_url", "no_secret"
#: Codes that end delivery at once: retrying cannot change them.
PERMANENT = frozenset({BLOCKED, BAD_URL, NO_SECRET})
USER_AGENT = "facemedia-webhooks/1"
#: The whole exchange (connect, send, answer) is cut after this many socket timeouts.
TOTAL_TIMEOUT_FACTOR = 3


@dataclass(frozen=True)
class WebhookConfig:
    """Delivery policy: attempts, backoff (``backoff_s * 2**(n-1)``, capped, ±20 % jitter),
    the per-operation socket timeout and the allow-listed hosts."""

    max_attempts: int = 8
    backoff_s: float = 30.0
    max_backoff_s: float = 3600.0
    timeout_s: float = 10.0
    allow_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Attempt:
    """What one attempt did: the job's ``state`` after it (``None``: nothing to deliver — no
    callback, no key, or the job has not ended), ``attempts`` so far, ``error`` (a code) and
    ``retry_in`` (seconds until the next attempt, or None)."""

    job_id: str
    state: str | None
    attempts: int
    error: str | None
    retry_in: float | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "job_id": self.job_id,
            "state": self.state,
            "attempts": self.attempts,
            "error": self.error,
            "retry_in": self.retry_in,
        }


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to ``address`` (already checked) for ``host``."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.address, target.port, timeout=timeout)
        self._target = target

    def connect(self) -> None:
        self.sock = socket.create_connection((self._target.address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPS(_PinnedHTTP):
    """TLS to ``address``, with ``host`` as the server name (SNI and certificate check)."""

    def __init__(self, target: Target, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(target, timeout)
        self._context = context

    def connect(self) -> None:
        super().connect()
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._target.host)


def post_pinned(
    target: Target,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float,
    *,
    context: ssl.SSLContext | None = None,
) -> int:
    """POST ``body`` to ``target`` over a connection to its checked address; return the status
    code (a redirect is returned, not followed). HTTPS verifies the certificate against the
    host name (``context``: default, the system's trust store). Raises ``OSError``/
    ``HTTPException`` on network and protocol errors. Reads at most 64 KiB of the answer, and
    keeps none of it."""
    conn: _PinnedHTTP
    if target.scheme == "https":
        conn = _PinnedHTTPS(target, timeout, context or ssl.create_default_context())
    else:
        conn = _PinnedHTTP(target, timeout)
    # ``timeout`` bounds each socket operation; this bounds the whole exchange (a server that
    # drips its answer a byte at a time would otherwise hold the worker for as long as it likes)
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(timeout * TOTAL_TIMEOUT_FACTOR, cut)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.putrequest("POST", target.target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", target.host_header)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        response.read(65536)
        status = int(response.status)
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set():
            raise TimeoutError("the exchange took too long") from exc
        raise
    finally:
        watchdog.cancel()
        conn.close()
    if expired.is_set():
        raise TimeoutError("the exchange took too long")
    return status


def error_code(exc: BaseException) -> str:
    """The ``webhook_error`` code of a failed POST."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return TIMEOUT
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return TLS_ERROR
    if isinstance(exc, http.client.HTTPException):
        return BAD_RESPONSE
    return CONNECT_ERROR


Poster = Callable[[Target, bytes, Mapping[str, str], float], int]


class WebhookService:
    """Schedules and makes webhook deliveries (see the module docstring).

    ``secret_of(api_key_id)`` returns the key's webhook secret (``ApiKeyStore.webhook_secret``);
    ``send(task, args, queue)`` is the dispatch port's send (``None``: :meth:`schedule` does
    nothing); ``ssl_context`` the trust for HTTPS callbacks (default: the system's)."""

    def __init__(
        self,
        db: Database,
        secret_of: Callable[[str], bytes],
        config: WebhookConfig,
        *,
        send: Callable[[str, Sequence[Any], str], None] | None = None,
        post: Poster | None = None,
        resolver: Resolver = socket.getaddrinfo,
        clock: Callable[[], float] = time.time,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.db = db
        self.secret_of = secret_of
        self.config = config
        self.send = send
        self.post: Poster = post or partial(post_pinned, context=ssl_context)
        self.resolver = resolver
        self.clock = clock

    def schedule(self, job_id: str) -> None:
        """Send ``facemedia.webhooks.deliver(job_id)`` (call it after a job ended, outside any
        transaction; a job without a callback is skipped by the task). Never raises: a failure
        to send is logged, and the job's end stands."""
        if self.send is None:
            return
        try:
            self.send(names.DELIVER_WEBHOOK, [job_id], names.WEBHOOKS)
        except Exception as exc:  # the job ended; its webhook must not undo that
            log.warning("webhook_schedule_failed", job_id=job_id, exc_type=type(exc).__name__)

    def rescue(self, *, grace_s: float = 600.0, limit: int = 200) -> int:
        """Send again the deliveries of ended jobs whose webhook is still ``pending`` and whose
        next attempt is overdue: never attempted ``grace_s`` after the job ended (an end that
        scheduled nothing — an erasure's cancellation — or a lost message), or attempted ``n``
        times and still pending ``grace_s`` after the latest moment its retry could have come
        (:meth:`overdue_after`: a retry message was lost). A job the sweep expired is sent at
        once, with no grace: nothing but this rescue ever sends its delivery. At most
        ``limit``, oldest first. Returns how many were sent (beat's
        ``facemedia.webhooks.rescue``, and the embedded server's schedule). A retry that was
        only late is then attempted twice; receivers see the same signed summary again
        (deliveries are at least once)."""
        from datetime import UTC, datetime, timedelta

        from sqlalchemy import select

        now = datetime.now(UTC)
        before = now - timedelta(seconds=grace_s)
        # an expiry schedules no delivery (the sweep ends the job): never attempted, it is due
        unsent_expiry = and_(
            Job.status == EXPIRED.value, func.coalesce(Job.webhook_attempts, 0) == 0
        )
        with self.db.session() as s:
            rows = list(
                s.execute(
                    select(Job.id, Job.webhook_attempts, Job.finished_at, unsent_expiry)
                    .where(
                        Job.webhook_state == PENDING,
                        Job.callback_url.is_not(None),
                        Job.api_key_id.is_not(None),
                        or_(Job.finished_at < before, and_(Job.finished_at < now, unsent_expiry)),
                    )
                    .order_by(Job.finished_at)
                    .limit(limit)
                )
            )
        ids = [
            job_id
            for job_id, attempts, finished_at, expiry in rows
            if finished_at is not None  # the query asked for ended jobs
            and (
                bool(expiry)
                or finished_at + timedelta(seconds=self.overdue_after(int(attempts or 0))) < before
            )
        ]
        for job_id in ids:
            self.schedule(job_id)
        if ids:
            log.info("webhook_rescued", count=len(ids))
        return len(ids)

    def overdue_after(self, attempts: int) -> float:
        """The latest a job's attempt ``attempts + 1`` can come after its end, in seconds: every
        earlier attempt at its overall cut and every backoff at the top of its jitter."""
        cut = TOTAL_TIMEOUT_FACTOR * self.config.timeout_s
        waits = (
            1.2 * min(self.config.max_backoff_s, self.config.backoff_s * 2 ** max(0, k - 1))
            for k in range(1, attempts + 1)
        )
        return float(sum(cut + wait for wait in waits))

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``: ``backoff_s * 2**(attempts-1)``, capped at
        ``max_backoff_s``, with ±20 % jitter."""
        base = min(self.config.max_backoff_s, self.config.backoff_s * 2 ** max(0, attempts - 1))
        return float(round(base * random.uniform(0.8, 1.2), 3))  # jitter, not a secret

    def attempt(self, job_id: str) -> Attempt:
        """One delivery attempt (the body of ``facemedia.webhooks.deliver``)."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                return Attempt(job_id, None, 0, None)
            seen = int(job.webhook_attempts or 0)
            if job.webhook_state in (DELIVERED, DEAD):  # final (its URL is forgotten)
                return Attempt(job_id, job.webhook_state, seen, job.webhook_error)
            if not job.callback_url or not job.api_key_id or job.status not in ENDED:
                return Attempt(job_id, None, seen, None)
            url, key_id = str(job.callback_url), str(job.api_key_id)
        error = self._post(job_id, url, key_id, seen + 1)
        return self._record(job_id, seen, error)

    def _post(self, job_id: str, url: str, key_id: str, attempt: int) -> str | None:
        """POST the signed summary; the error code, or None when answered 2xx."""
        try:
            secret = self.secret_of(key_id)
        except Exception as exc:  # revoked or unknown key: nothing can sign
            log.warning("webhook_no_secret", job_id=job_id, exc_type=type(exc).__name__)
            return NO_SECRET
        if not secret:
            return NO_SECRET
        try:
            target = resolve_target(url, self.config.allow_hosts, resolver=self.resolver)
        except Unresolvable:
            return UNRESOLVABLE
        except BadCallbackUrl as exc:
            return BLOCKED if exc.reason == "blocked_address" else BAD_URL
        data = job_status_view(self.db, job_id).to_json()
        data.pop("webhook", None)
        body = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            HEADER: sign(secret, body, int(self.clock())),
            "X-Facemedia-Event": "job.ended",
            "X-Facemedia-Attempt": str(attempt),
        }
        try:
            status = self.post(target, body, headers, self.config.timeout_s)
        except (OSError, http.client.HTTPException) as exc:
            return error_code(exc)
        return None if 200 <= status < 300 else f"http_{status}"

    def _record(self, job_id: str, seen: int, error: str | None) -> Attempt:
        """Record attempt ``seen + 1`` (compare-and-set on the count: a concurrent attempt that
        recorded first wins, and this one reports the ledger's state)."""
        attempts = seen + 1
        if error is None:
            state, retry_in = DELIVERED, None
        elif error in PERMANENT or attempts >= self.config.max_attempts:
            state, retry_in = DEAD, None
        else:
            state, retry_in = PENDING, self.backoff(attempts)
        with self.db.session() as s:
            stmt = (
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.webhook_attempts == seen,
                    or_(Job.webhook_state.is_(None), Job.webhook_state == PENDING),
                )
                .values(
                    webhook_attempts=attempts,
                    webhook_state=state,
                    webhook_error=error,
                    # a final webhook needs its URL no more (it may carry the caller's ids)
                    **({"callback_url": None} if state != PENDING else {}),
                )
            )
            won = int(cast(CursorResult[Any], s.execute(stmt)).rowcount) == 1
            if not won:
                job = s.get(Job, job_id)
                if job is None:
                    return Attempt(job_id, None, 0, None)
                return Attempt(
                    job_id, job.webhook_state, int(job.webhook_attempts or 0), job.webhook_error
                )
        log.info(
            f"webhook_{state}",
            job_id=job_id,
            attempt=attempts,
            error_code=error,
            status=state,
        )
        return Attempt(job_id, state, attempts, error, retry_in)
