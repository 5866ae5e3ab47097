"""The ``facemedia`` commands that process no media start without the media stack: importing the
CLI and running ``status`` (and ``--help``, ``audit verify``) on an embedded home loads none of
OpenCV, SciPy or PyAV, nor Celery or boto3 (issue 14, item 6; figures in docs/BENCHMARKS.md,
*CLI start-up*). Each check runs in a fresh interpreter and reads its ``sys.modules``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cli_process import loaded, run_facemedia

MEDIA = ("cv2", "scipy", "av")
NOT_NEEDED = (*MEDIA, "celery", "boto3", "pipelines.faces")


def test_status_of_a_job_loads_no_media_stack(
    embedded: Any, astronaut_jpeg: bytes, tmp_path: Path
) -> None:
    import io

    job_id = embedded.client.submit(io.BytesIO(astronaut_jpeg), "detect", {}, subject_id="s1")
    proc, modules = run_facemedia(embedded.settings.home_dir, "status", job_id, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = json.loads(proc.stdout.strip().splitlines()[-1])
    assert status["job_id"] == job_id and status["status"] == "succeeded"
    assert loaded(modules, NOT_NEEDED) == []
    # nor structlog (configured when first imported: worker/logs.py) and the rich it pulls in
    assert loaded(modules, ("structlog", "rich")) == []


@pytest.mark.parametrize(
    ("args", "code"),
    [(("--help",), 0), (("status", "f" * 32), 2), (("audit", "verify", "--json"), 0)],
    ids=["help", "status-unknown", "audit-verify"],
)
def test_commands_that_process_no_media_load_none_of_it(
    tmp_path: Path, args: tuple[str, ...], code: int
) -> None:
    proc, modules = run_facemedia(tmp_path / "var", *args)
    assert proc.returncode == code, proc.stderr[-2000:]
    assert loaded(modules, NOT_NEEDED) == []


def test_the_media_stack_is_what_a_media_command_loads(tmp_path: Path) -> None:
    """The check can fail: a command that decodes media does load it."""
    photo = tmp_path / "in.bin"
    photo.write_bytes(b"\x00" * 16)
    proc, modules = run_facemedia(tmp_path / "var", "run", str(photo), "--json")
    assert proc.returncode == 1, proc.stderr[-2000:]  # the job ran (decoding) and failed
    assert json.loads(proc.stdout.strip().splitlines()[-1])["error_code"] == "unsupported_format"
    assert "cv2" in loaded(modules, MEDIA)


def test_a_command_that_wrote_closes_the_ledger_at_exit(tmp_path: Path) -> None:
    """The CLI skips the interpreter's final garbage collection (docs/BENCHMARKS.md): it closes
    its connections first, so SQLite folds the ``-wal`` file back and removes it."""
    home = tmp_path / "var"
    src = tmp_path / "empty.bin"
    src.write_bytes(b"")
    args = ("crypto", "encrypt", str(src), str(tmp_path / "empty.fme"), "--subject", "s1")
    proc, _ = run_facemedia(home, *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (home / "ledger.db").exists()
    assert not (home / "ledger.db-wal").exists()
