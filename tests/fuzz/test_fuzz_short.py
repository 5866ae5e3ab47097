"""A short atheris run of each harness (tests/fuzz/harness.py): no input may make the decoders
or the envelope raise anything but their documented errors. The long run is
``.venv/bin/python bench/reliability_bench.py fuzz --seconds 600``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.reliability.checks import report

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[2]
RUNS = {"image": 400, "video": 1000, "envelope": 5000}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", sorted(RUNS))
def test_short_fuzz_run_finds_no_crash(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    t = time.monotonic()
    proc = subprocess.run(
        [
            # Through a shell that forks: Linux carries a process's peak RSS across exec, so a
            # harness started straight from a big pytest process (a pytest-xdist worker that ran
            # the mesh tests holds ~3 GB) starts with that peak and libFuzzer's -rss_limit_mb
            # reports an out-of-memory at once. The shell's child starts from the shell's.
            "/bin/sh",
            "-c",
            '"$@"; exit $?',
            "sh",
            sys.executable,
            "-m",
            "tests.fuzz.harness",
            target,
            f"-runs={RUNS[target]}",
            "-max_total_time=12",
            f"-artifact_prefix={tmp_path}/",
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=110,
    )
    out = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, out[-4000:]
    assert "Done " in out, out[-2000:]
    assert list(tmp_path.glob("crash-*")) == []
    done = [line for line in out.splitlines() if line.startswith("Done ")][-1]
    report("fuzz_short", target=target, result=done, seconds=round(time.monotonic() - t, 1))
