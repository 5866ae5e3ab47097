"""``facemedia`` in a fresh interpreter, as its console script runs it, reporting the modules it
had loaded when it ended: how the start-up tests (tests/cli/test_startup.py,
tests/unit/test_cli_imports.py) see what a command imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in the child: the console entry point (pyproject's `facemedia = "worker.cli:main"`),
# then the loaded module names on stderr.
_CHILD = """
import json, sys
from worker.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
sys.exit(code)
"""


def run_facemedia(home: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """``facemedia ARGS`` on the embedded home ``home`` (no other ``FACEMEDIA_*`` setting) and
    the names of the modules it had loaded when it ended."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEMEDIA_")}
    env.update(FACEMEDIA_HOME=str(home), FACEMEDIA_LOG_LEVEL="WARNING")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    marker = [ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES ")]
    assert marker, proc.stderr[-2000:]
    return proc, set(json.loads(marker[-1].removeprefix("MODULES ")))


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` (packages included) are among ``modules``."""
    return [n for n in names if n in modules or any(m.startswith(n + ".") for m in modules)]
