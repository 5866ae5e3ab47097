"""``facemedia serve`` as a user starts it, for the tests and benches that drive the HTTP API
over real HTTP: a subprocess on a free loopback port, ready once ``/readyz`` answers 200,
stopped with SIGTERM (a graceful shutdown: its last audit checkpoint) and killed after a grace
period."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACEMEDIA = str(Path(sys.executable).with_name("facemedia"))


@dataclass(frozen=True)
class Served:
    """A running ``facemedia serve``: its base URL, port and process id."""

    url: str
    port: int
    pid: int


@contextlib.contextmanager
def facemedia_serve(
    env: Mapping[str, str],
    log: Path,
    *,
    workers: int = 1,
    port: int | None = None,
    ready_s: float = 60.0,
    stop_s: float = 20.0,
) -> Iterator[Served]:
    """Run ``facemedia serve --port P --workers N`` (stdout and stderr to ``log``) until the
    block ends; yields once ``/readyz`` answers 200. Raises RuntimeError, with the log's tail,
    if it exits or is not ready within ``ready_s``."""
    import httpx

    from tests.conftest import free_port

    port = port or free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [FACEMEDIA, "serve", "--port", str(port), "--workers", str(workers)],
            cwd=ROOT,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"facemedia serve exited:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"facemedia serve not ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield Served(url, port, proc.pid)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(stop_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
