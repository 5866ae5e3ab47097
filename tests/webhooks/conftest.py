"""A real HTTP receiver for webhook tests, and ended jobs to deliver."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival


@dataclass
class Receiver:
    """An ``http.server`` on 127.0.0.1: answers each request with the next scripted reply
    (an int status; ``("redirect", location)``; ``("sleep", seconds)``), then 200."""

    port: int
    received: list[Received] = field(default_factory=list)
    script: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def reset(self, *script: Any) -> None:
        with self.lock:
            self.received.clear()
            self.script[:] = list(script)

    def hits(self, path: str | None = None) -> list[Received]:
        with self.lock:
            return [r for r in self.received if path is None or r.path == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            rec = state["r"]
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with rec.lock:
                rec.received.append(
                    Received(self.path, dict(self.headers.items()), body, time.monotonic())
                )
                reply = rec.script.pop(0) if rec.script else 200
            if isinstance(reply, tuple) and reply[0] == "sleep":
                time.sleep(reply[1])
                reply = 200
            if isinstance(reply, tuple) and reply[0] == "redirect":
                self.send_response(302)
                self.send_header("Location", reply[1])
            else:
                self.send_response(int(reply))
            self.send_header("Content-Length", "2")
            try:
                self.end_headers()
                self.wfile.write(b"ok")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (the timeout test)

        do_GET = do_POST  # a followed redirect would arrive as a GET

        def log_message(self, *_: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state["r"] = Receiver(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["r"]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An embedded container (SQLite ledger, local store and keyring) shared by a module."""
    from worker.bootstrap import Container
    from worker.settings import load_settings

    container = Container(load_settings(home=tmp_path_factory.mktemp("webhooks") / "var"))
    try:
        yield container
    finally:
        container.close()


@pytest.fixture(scope="module")
def tiny_jpeg() -> bytes:
    import cv2
    import numpy as np

    ok, buf = cv2.imencode(".jpg", np.full((32, 32, 3), 128, dtype=np.uint8))
    assert ok
    return bytes(buf)


def ended_job(
    container: Any,
    media: bytes,
    *,
    callback_url: str | None,
    api_key_id: str | None,
    subject: str = "subject-u1",
) -> str:
    """A job submitted with ``callback_url`` by ``api_key_id``, then ended (failed) without
    being processed (nothing is enqueued)."""
    from worker.jobs import lifecycle
    from worker.jobs.client import JobClient

    client = JobClient(
        container.db,
        container.records,
        container.subjects,
        enqueue=lambda _job_id: None,
        max_upload_bytes=container.settings.max_upload_bytes,
    )
    job_id = client.submit(
        media,
        "detect",
        {},
        subject_id=subject,
        callback_url=callback_url,
        api_key_id=api_key_id,
    )
    with container.db.session() as s:
        assert lifecycle.fail(s, job_id, "no_face", "no face found", at=datetime.now(UTC))
    return str(job_id)


@pytest.fixture
def make_job(ledger: Any, tiny_jpeg: bytes) -> Callable[..., str]:
    def make(**kwargs: Any) -> str:
        return ended_job(ledger, tiny_jpeg, **kwargs)

    return make
