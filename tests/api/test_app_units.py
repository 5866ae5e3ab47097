"""Unit cases of the API's parts: the streamed zip, the token buckets (ledger and Redis), the
request timeout, the body pump's deadline, /readyz naming what is down, the submission fields.
The HTTP behaviour as a whole is tested over real HTTP in test_app_server.py."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _get(app: Any, path: str) -> Any:
    """One GET through the ASGI app in process (httpx's ASGI transport, no lifespan)."""
    import httpx

    async def run() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.get(path)

    return asyncio.run(run())


def test_zip_stream_is_a_valid_archive_built_in_pieces() -> None:
    from worker.api.subjects import ZIP_FLUSH, zip_stream

    big = os.urandom(3 * ZIP_FLUSH + 17)
    entries = [
        ("report.json", iter([b'{"a": 1}'])),
        ("output/j1/avatar.png", (big[i : i + 65536] for i in range(0, len(big), 65536))),
    ]
    pieces = list(zip_stream(entries))
    assert len(pieces) > 3 and max(len(p) for p in pieces) < 2 * ZIP_FLUSH + 65536 * 2
    archive = zipfile.ZipFile(io.BytesIO(b"".join(pieces)))
    assert archive.namelist() == ["report.json", "output/j1/avatar.png"]
    assert archive.read("output/j1/avatar.png") == big
    assert archive.testzip() is None


def _ledger(tmp_path: Path) -> Any:
    from worker.ledger.db import Database

    db = Database(f"sqlite:///{tmp_path / 'ledger.db'}")
    db.migrate()
    return db


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.services)]
)
def test_ledger_bucket_takes_refuses_and_refills(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from worker.api.ratelimit import LedgerBuckets, retry_after
    from worker.ledger.db import Database

    if backend == "sqlite":
        db = _ledger(tmp_path)
    else:
        db = Database(request.getfixturevalue("pg_url"))
        db.migrate()
    clock = _Clock()
    buckets = LedgerBuckets(db, clock)
    assert [buckets.take("k1", 2.0, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = buckets.take("k1", 2.0, 3)
    assert 0.4 < wait <= 0.5 and retry_after(wait) == "1"
    assert buckets.take("k2", 2.0, 3) == 0.0  # another key has its own bucket
    clock.now += 0.5  # one token back
    assert buckets.take("k1", 2.0, 3) == 0.0
    assert buckets.take("k1", 2.0, 3) > 0
    clock.now += 3600  # never more than the burst
    assert [buckets.take("k1", 2.0, 3) == 0.0 for _ in range(4)] == [True, True, True, False]


def test_redis_bucket_takes_refuses_and_refills(redis_url: str) -> None:
    from worker.api.ratelimit import RedisBuckets, make_limiter

    buckets = make_limiter(redis_url, db=None)  # type: ignore[arg-type]
    assert isinstance(buckets, RedisBuckets)
    try:
        assert [buckets.take("k1", 5.0, 2) for _ in range(2)] == [0.0, 0.0]
        wait = buckets.take("k1", 5.0, 2)
        assert 0 < wait <= 0.2
        time.sleep(0.25)
        assert buckets.take("k1", 5.0, 2) == 0.0
    finally:
        buckets.close()


def test_timeout_middleware_answers_504_before_the_response_starts() -> None:
    from starlette.responses import PlainTextResponse

    from worker.api.app import Timeout

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(2)
        await PlainTextResponse("late")(scope, receive, send)

    started = time.monotonic()
    response = _get(Timeout(slow, 0.2), "/")
    assert response.status_code == 504 and response.json()["error"] == "timeout"
    assert time.monotonic() - started < 1.5


def test_body_pump_stops_at_its_deadline_and_at_its_limit() -> None:
    from worker.api.upload import BodyPump, BodyTooLarge, UploadTimeout

    async def trickle() -> AsyncIterator[bytes]:
        yield b"x" * 10
        await asyncio.sleep(5)
        yield b"y"

    async def run(limit: int, deadline: float) -> Exception | None:
        loop = asyncio.get_running_loop()
        pump = BodyPump(trickle().__aiter__(), loop, limit=limit, deadline=deadline)

        def pull_all() -> Exception | None:
            try:
                while pump.pull() is not None:
                    pass
            except Exception as exc:
                return exc
            return None

        return await loop.run_in_executor(None, pull_all)

    late = asyncio.run(run(1000, time.monotonic() + 0.3))
    assert isinstance(late, UploadTimeout) and late.status == 504
    big = asyncio.run(run(5, time.monotonic() + 3))
    assert isinstance(big, BodyTooLarge) and big.status == 413 and big.code == "too_large"


def test_submission_fields_from_headers_and_forms() -> None:
    from starlette.datastructures import Headers

    from worker.api.errors import ApiError
    from worker.api.upload import form_values, header_values, parse_submission

    headers = Headers(
        raw=[
            (b"facemedia-job", b"pta"),
            (b"facemedia-subject", b"u1"),
            (b"facemedia-research-consent", b"true"),
            (b"facemedia-attr", b"age=34"),
            (b"facemedia-attr", b"region=Beijing"),
            (b"facemedia-params", b'{"style": "toon"}'),
            (b"authorization", b"Bearer secret"),
        ]
    )
    sub = parse_submission(header_values(headers))
    assert (sub.job, sub.subject, sub.research_consent, sub.minor) == ("pta", "u1", True, False)
    assert sub.attributes == {"age": "34", "region": "Beijing"}
    assert sub.params == {"style": "toon"}
    assert "u1" not in repr(sub)
    with pytest.raises(ApiError) as twice:
        parse_submission(form_values([("job", "a"), ("job", "b"), ("subject", "u")]))
    assert twice.value.status == 422 and "job" in twice.value.message


def test_readyz_names_the_unreachable_part(make_settings: Any) -> None:
    from worker.api.app import create_app
    from worker.bootstrap import Container

    class DownStore:
        def exists(self, key: str) -> bool:
            raise ConnectionError("down")

    container = Container(make_settings())
    container.__dict__["store"] = DownStore()
    try:
        response = _get(create_app(container), "/readyz")
    finally:
        container.close()
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "not_ready" and body["message"] == "unreachable: store"
    assert body["checks"]["ledger"] == "ok"


def test_an_unhandled_error_is_a_json_500_logged_by_class_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Route

    from worker.api.app import AccessLog, _internal

    async def boom(request: Any) -> Any:
        raise RuntimeError("secret-value-in-a-message")

    app = AccessLog(
        Starlette(routes=[Route("/x", boom)], exception_handlers={Exception: _internal})
    )
    with caplog.at_level(logging.INFO):
        response = _get(app, "/x?q=1")
    assert response.status_code == 500 and response.json()["error"] == "internal_error"
    server = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_info or ''}" for r in server)
    assert "RuntimeError" in text and "GET /x 500" in text
    assert "secret-value-in-a-message" not in text and "q=1" not in text


def test_redis_bucket_refuses_a_revoked_key_in_the_same_round_trip(redis_url: str) -> None:
    from worker.api.ratelimit import RedisBuckets
    from worker.ledger.api_keys import REVOKED_SET, mark_revoked

    buckets = RedisBuckets(redis_url)
    try:
        assert buckets.take_live("k1", 5.0, 2) == 0.0
        mark_revoked(redis_url, "k1")
        assert buckets.take_live("k1", 5.0, 2) is None
        assert buckets.take("k1", 5.0, 2) == float("inf")
        assert buckets.take_live("k2", 5.0, 2) == 0.0  # another key is untouched
        import redis

        with redis.Redis.from_url(redis_url) as r:  # key ids only, never a key
            assert r.smembers(REVOKED_SET) == {b"k1"}
    finally:
        buckets.close()
    mark_revoked("amqp://guest@127.0.0.1//", "k1")  # another broker: nothing to announce


class _Keys:
    """A stand-in for ApiKeyStore.authenticate that counts its ledger reads."""

    def __init__(self, principals: dict[str, Any]) -> None:
        self.principals = principals
        self.reads = 0

    def authenticate(self, bearer: str) -> Any:
        self.reads += 1
        return self.principals.get(bearer)


class _Limiter:
    def __init__(self, checks_revocation: bool) -> None:
        self.checks_revocation = checks_revocation
        self.revoked: set[str] = set()
        self.takes = 0

    def take_live(self, key_id: str, rate: float, burst: int) -> float | None:
        self.takes += 1
        return None if key_id in self.revoked else 0.0


def _auth_state(checks_revocation: bool, clock: _Clock) -> Any:
    from types import SimpleNamespace

    from worker.api.auth import PrincipalCache
    from worker.ledger.api_keys import Principal

    principal = Principal("k1", "acme", frozenset({"jobs:write"}), 10.0, 20)
    keys = _Keys({"fmk_good": principal})
    return SimpleNamespace(
        container=SimpleNamespace(api_keys=keys),
        limiter=_Limiter(checks_revocation),
        principals=PrincipalCache(ttl=10.0, clock=clock),
    )


def test_principal_cache_skips_the_ledger_until_revoked_or_stale() -> None:
    from worker.api.auth import check_key

    clock = _Clock()
    state = _auth_state(True, clock)
    keys, limiter = state.container.api_keys, state.limiter
    assert check_key(state, "fmk_good", "jobs:write")[0] is not None
    assert check_key(state, "fmk_good", "jobs:write")[0] is not None
    assert (keys.reads, limiter.takes) == (1, 2)  # one ledger read, a token per request
    assert "fmk_good" not in repr(state.principals)
    clock.now += 10.0  # stale: the ledger is read again
    assert check_key(state, "fmk_good", "jobs:write")[0] is not None
    assert keys.reads == 2
    # a scope the cached principal lacks is asked of the ledger, no token taken
    assert check_key(state, "fmk_good", "jobs:read")[0] is not None
    assert (keys.reads, limiter.takes) == (3, 3)
    # revoked: the next request is refused and the principal forgotten
    limiter.revoked.add("k1")
    assert check_key(state, "fmk_good", "jobs:write") == (None, 0.0)
    assert len(state.principals) == 0
    assert check_key(state, "fmk_unknown", "jobs:write") == (None, 0.0)


def test_ledger_buckets_read_the_key_on_every_request() -> None:
    from worker.api.auth import check_key

    state = _auth_state(False, _Clock())
    for _ in range(3):
        assert check_key(state, "fmk_good", "jobs:write")[0] is not None
    assert state.container.api_keys.reads == 3
    assert len(state.principals) == 0
