"""The long reliability runs; figures go to docs/RELIABILITY.md.

    .venv/bin/python bench/reliability_bench.py crash      # 52 SIGKILLs per broker
    .venv/bin/python bench/reliability_bench.py load       # 1,000 jobs, two worker processes
    .venv/bin/python bench/reliability_bench.py faults     # 200 jobs through the fault proxy
    .venv/bin/python bench/reliability_bench.py restarts   # broker and ledger restarts
    .venv/bin/python bench/reliability_bench.py fuzz --seconds 300   # atheris, each harness
    .venv/bin/python bench/reliability_bench.py all

Each run prints its figures as JSON lines (also appended to --report, default
bench/reliability-figures.jsonl). With no argument (``make bench``) it runs only a quick fuzz.
``restarts`` stops and restarts the local Redis, RabbitMQ and PostgreSQL: never run it against
shared services in use.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = {
    "crash": ["tests/reliability/test_crash.py", "tests/reliability/test_poison.py"],
    "load": ["tests/reliability/test_load.py"],
    "faults": ["tests/reliability/test_fault_proxy.py"],
    "restarts": ["tests/reliability/test_restarts.py"],
    "hostile": ["tests/reliability/test_hostile.py"],
}


def run_pytest(paths: list[str], report: Path) -> int:
    env = dict(os.environ, FACEMEDIA_TEST_LONG="1", FACEMEDIA_TEST_REL_REPORT=str(report))
    if any("restarts" in p for p in paths):
        env["FACEMEDIA_TEST_RESTART_SERVICES"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-s", *paths]
    return subprocess.call(cmd, cwd=ROOT, env=env)


def run_fuzz(seconds: int, report: Path) -> int:
    worst = 0
    for target in ("image", "video", "envelope"):
        t = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.fuzz.harness",
                target,
                f"-max_total_time={seconds}",
                f"-artifact_prefix={ROOT}/bench/fuzz-{target}-",
            ],
            cwd=ROOT,
            capture_output=True,
        )
        out = (proc.stdout + proc.stderr).decode(errors="replace")
        done = [line for line in out.splitlines() if line.startswith("Done ")]
        line = (
            f'{{"kind": "fuzz_long", "target": "{target}", "rc": {proc.returncode}, '
            f'"result": "{done[-1] if done else "no Done line"}", '
            f'"seconds": {time.monotonic() - t:.0f}}}'
        )
        print(line, flush=True)
        with report.open("a") as fh:
            fh.write(line + "\n")
        worst = max(worst, proc.returncode)
        if proc.returncode:
            print(out[-4000:], file=sys.stderr)
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description="facemedia reliability runs")
    parser.add_argument(
        "what", nargs="?", default="quick", choices=[*TESTS, "fuzz", "all", "quick"]
    )
    parser.add_argument("--seconds", type=int, default=300, help="fuzzing time per harness")
    parser.add_argument("--report", type=Path, default=ROOT / "bench" / "reliability-figures.jsonl")
    args = parser.parse_args()
    if args.what == "quick":
        return run_fuzz(10, args.report)
    if args.what == "fuzz":
        return run_fuzz(args.seconds, args.report)
    names = list(TESTS) if args.what == "all" else [args.what]
    rc = 0
    for name in names:
        rc = max(rc, run_pytest(TESTS[name], args.report))
    if args.what == "all":
        rc = max(rc, run_fuzz(args.seconds, args.report))
    return rc


if __name__ == "__main__":
    sys.exit(main())
