"""Run ``facemedia`` the way a person does: a fresh process, a clean environment (no
``FACEMEDIA_*`` from the caller), an embedded home of its own."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
FACEMEDIA = [sys.executable, "-m", "worker.cli"]


@dataclass(frozen=True)
class Ran:
    """One finished command: exit code, stdout, stderr."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        """The one JSON line the command printed on stdout (exactly one line is required)."""
        lines = self.stdout.splitlines()
        assert len(lines) == 1, (self.code, self.stdout, self.stderr)
        value = json.loads(lines[0])
        assert isinstance(value, dict)
        return value


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without FACEMEDIA_*, plus FACEMEDIA_HOME and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("FACEMEDIA_")}
    env["FACEMEDIA_HOME"] = str(home)
    env["FACEMEDIA_DECODE_MEMORY_LIMIT_MB"] = "0"
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


@pytest.fixture
def fm(tmp_path: Path) -> Callable[..., Ran]:
    """``fm("status", JOB, "--json", env={...}, timeout=...)`` runs the command in a subprocess
    on this test's embedded home (``tmp_path/var``)."""

    def run(
        *args: str, env: dict[str, str] | None = None, timeout: float = 300, stdin: str = ""
    ) -> Ran:
        done = subprocess.run(
            [*FACEMEDIA, *args],
            cwd=tmp_path,
            env=clean_env(tmp_path / "var", **(env or {})),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Ran(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture
def photo(tmp_path: Path, astronaut_jpeg: bytes) -> Path:
    """scikit-image's astronaut as a JPEG file."""
    path = tmp_path / "astronaut.jpg"
    path.write_bytes(astronaut_jpeg)
    return path


def on_a_terminal(
    tmp_path: Path, args: list[str], answer: str = "", env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run with stdin, stdout and stderr on a pseudo-terminal; type ``answer`` at a ``[y/N]``
    prompt; return the exit code and everything the terminal showed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*FACEMEDIA, *args],
        cwd=tmp_path,
        env=clean_env(tmp_path / "var", **(env or {})),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    seen = b""
    answered = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if answer and not answered and b"[y/N]" in seen:
                os.write(master, answer.encode() + b"\n")
                answered = True
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=60)
    os.close(master)
    return code, seen.decode(errors="replace")
