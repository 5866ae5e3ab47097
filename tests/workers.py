"""Start and stop a real ``celery worker`` subprocess for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CELERY = str(Path(sys.executable).with_name("celery"))


def settings_env(settings: Mapping[str, object]) -> dict[str, str]:
    """``FACEMEDIA_*`` variables for a worker, from setting names and values."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEMEDIA_")}
    for name, value in settings.items():
        env[f"FACEMEDIA_{name.upper()}"] = (
            ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        )
    return env


@contextmanager
def celery_worker(
    settings: Mapping[str, object],
    log_path: Path,
    queues: str = "media",
    concurrency: int = 2,
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker process consuming ``queues``; stopped (TERM, then KILL) on exit."""
    name = f"test-{uuid.uuid4().hex[:8]}@%h"
    cmd = [
        CELERY,
        "-A",
        "worker.celery_app",
        "worker",
        "-Q",
        queues,
        "-c",
        str(concurrency),
        "-P",
        "prefork",
        "-n",
        name,
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        "INFO",
    ]
    log = log_path.open("wb")
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=settings_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


def wait_for(predicate: object, timeout: float, interval: float = 0.25) -> bool:
    """Poll ``predicate()`` until it is truthy or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return bool(predicate())  # type: ignore[operator]
