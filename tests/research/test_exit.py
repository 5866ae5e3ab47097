"""``research pull`` and ``research verify`` exit cleanly, every time.

Once, under load, a complete pull ended with ``terminate called without an active exception``
(exit 134): a native thread still alive when the interpreter exits is destroyed while joinable.
The pull's one native-threaded library is pyarrow (the manifest): its read must start no thread
of Arrow's pools. Checked directly (threads of this process before and after), and by running
the commands as a person would, in subprocesses, several times.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.research.test_release import populate, researcher
from tests.workers import CELERY, ROOT, settings_env
from worker.research.release import ReleaseRequest

FACEMEDIA = str(Path(CELERY).with_name("facemedia"))
RUNS = 6

_THREADS = """
import os, sys
sys.path.insert(0, {root!r})
from tests.research.test_artifacts import _records
from worker.research.release.artifacts import manifest_parquet, read_manifest
import pyarrow, pyarrow.parquet  # their own threads (jemalloc's, ...) are not the question
data = manifest_parquet(*_records(40, 3))
before = len(os.listdir("/proc/self/task"))
{read}
print(before, len(os.listdir("/proc/self/task")))
"""


def _threads(read: str) -> tuple[int, int, int]:
    """Threads before and after ``read`` in a fresh interpreter, and its exit code."""
    code = _THREADS.format(root=str(ROOT), read=read)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    before, after = proc.stdout.split()
    return int(before), int(after), proc.returncode


def test_reading_the_manifest_starts_no_native_thread() -> None:
    before, after, code = _threads("rows = read_manifest(data)")
    assert after == before and code == 0
    # the check sees threads: pyarrow's default read starts its pool's (and that process may
    # even die at exit with "terminate called without an active exception": the abort seen)
    before, after, code = _threads(
        "import io; pyarrow.parquet.read_table(io.BytesIO(data)).to_pylist()"
    )
    assert after > before, code


def test_pull_and_verify_exit_cleanly_every_time(
    make_settings: Any, sample_images: list[bytes], tmp_path: Path
) -> None:
    from worker.bootstrap import Container

    home = tmp_path / "var"
    container = Container(make_settings(home=home))
    try:
        populate(container, sample_images, n_ok=8, tag="exit")
        release = container.releases.create(ReleaseRequest(name="exit-1", k=2))
        _priv, pub = researcher(tmp_path, "erin")
        container.releases.grant(release.release_id, pub)
        signer = tmp_path / "signer.pub"
        signer.write_bytes(container.releases.signing.public_pem())
    finally:
        container.close()
    env = settings_env({"home": home}) | {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    key = tmp_path / "erin" / "researcher.key"
    for i in range(RUNS):
        out = tmp_path / f"pulled-{i % 2}"  # every other run resumes a complete pull
        for args in (
            [
                "research",
                "pull",
                "exit-1",
                "--key",
                str(key),
                "--out",
                str(out),
                "--signer",
                str(signer),
                "--json",
            ],
            ["research", "verify", str(out), "--signer", str(signer), "--json"],
        ):
            proc = subprocess.run(
                [FACEMEDIA, *args],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert proc.returncode == 0, (i, args[1], proc.returncode, proc.stderr[-2000:])
            assert "terminate called" not in proc.stderr, proc.stderr
            assert json.loads(proc.stdout.strip().splitlines()[-1])["samples"] == 9
