"""Start-up time of the ``facemedia`` command, and of a Celery worker to ``ready``.

Run: ``.venv/bin/python bench/cli_bench.py [--runs 5] [--no-celery] [--broker URL] [--json]``
(``--tree DIR``: time ``python -m worker.cli`` from another checkout's root instead of the
installed console script, e.g. the parent commit exported with ``git archive``.)

Every figure is the wall time of a fresh process, median of ``--runs`` runs (after one warm-up
run each, so the disk cache is warm), with its CPU time (user + system, from the children's
rusage), which a loaded machine inflates much less than the wall time. The runs are
interleaved (round after round over every command) so that a burst of load on the machine hits
every command alike. The baseline is ``python -c pass`` with the same interpreter, measured in
the same rounds; each command's ratio and its time above the baseline are printed with it.

The commands run against a fresh embedded home (SQLite ledger, LocalStore, local KEK, no
broker): ``--help``; ``status JOB --json`` of a job run during setup (and without ``--json``:
the plain-text form); ``audit verify --json``;
``crypto encrypt`` of an empty file; ``research verify DIR`` of an empty directory (refused once
its signer check runs, exit 2 (1 before issue 18): the imports and the work up to there are the
start-up).
The Celery figure is ``celery -A worker.celery_app worker -Q media -c 2 -P prefork`` on a Redis
broker (default ``redis://127.0.0.1:6379/9``), from spawn until the worker logs ``ready``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TREE: Path | None = None  # --tree: the checkout whose worker.cli is timed
FACEMEDIA = Path(sys.executable).with_name("facemedia")
CELERY = Path(sys.executable).with_name("celery")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEMEDIA_")}
    env.update(FACEMEDIA_HOME=str(home), FACEMEDIA_LOG_LEVEL="WARNING", **extra)
    return env


def _command() -> list[str]:
    """The console script as installed, else ``python -m worker.cli`` (same code path)."""
    if TREE is None and FACEMEDIA.exists():
        return [str(FACEMEDIA)]
    return [sys.executable, "-m", "worker.cli"]


def _cwd() -> Path:
    return TREE if TREE is not None else ROOT


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(cmd: list[str], env: dict[str, str], expect: tuple[int, ...]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run of ``cmd``."""
    cpu = _cpu_children()
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=_cwd(), env=env, capture_output=True, timeout=120)
    elapsed = time.perf_counter() - start
    cpu = _cpu_children() - cpu
    if proc.returncode not in expect:
        raise SystemExit(
            f"{' '.join(cmd)}: exit {proc.returncode}, expected {expect}\n"
            + proc.stderr.decode(errors="replace")[-2000:]
        )
    return elapsed, cpu


def _setup(home: Path, work: Path) -> dict[str, tuple[list[str], tuple[int, ...]]]:
    """A home with one finished job, an empty file and an empty directory; the commands."""
    import cv2
    import numpy as np

    photo = work / "face.jpg"
    from skimage import data

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    assert ok
    photo.write_bytes(bytes(np.asarray(buf)))
    cli = _command()
    ran = subprocess.run(
        [*cli, "run", str(photo), "--json"],
        cwd=_cwd(),
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if ran.returncode not in (0, 1):  # 1: the job ran and failed; its status reads the same
        raise SystemExit(f"facemedia run: exit {ran.returncode}\n{ran.stderr[-2000:]}")
    job_id = json.loads(ran.stdout.strip().splitlines()[-1])["job_id"]
    empty = work / "empty.bin"
    empty.write_bytes(b"")
    pulled = work / "pulled"
    pulled.mkdir()
    return {
        "python -c pass": ([sys.executable, "-c", "pass"], (0,)),
        "--help": ([*cli, "--help"], (0,)),
        "status JOB": ([*cli, "status", job_id, "--json"], (0,)),
        "status JOB (text)": ([*cli, "status", job_id], (0,)),
        "audit verify": ([*cli, "audit", "verify", "--json"], (0,)),
        "crypto encrypt (empty file)": (
            [*cli, "crypto", "encrypt", str(empty), str(work / "empty.fme"), "--subject", "s1"],
            (0,),
        ),
        # refused: no signer pinned (exit 2 since issue 18's exit codes; 1 before)
        "research verify DIR": ([*cli, "research", "verify", str(pulled), "--json"], (1, 2)),
    }


def bench_cli(runs: int) -> dict[str, Any]:
    """Median wall time per command over ``runs`` interleaved rounds (after a warm-up)."""
    with tempfile.TemporaryDirectory(prefix="fm-cli-bench-") as tmp:
        home, work = Path(tmp) / "var", Path(tmp) / "work"
        work.mkdir()
        commands = _setup(home, work)
        env = _env(home)
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        for cmd, code in commands.values():  # warm-up: disk cache, first migration
            _timed(cmd, env, code)
        for _ in range(runs):
            for name, (cmd, code) in commands.items():
                wall, cpu = _timed(cmd, env, code)
                times[name].append(wall)
                cpus[name].append(cpu)
    base = statistics.median(times["python -c pass"])
    base_cpu = statistics.median(cpus["python -c pass"])
    rows = {}
    for name, samples in times.items():
        median = statistics.median(samples)
        cpu = statistics.median(cpus[name])
        rows[name] = {
            "median_s": round(median, 3),
            "min_s": round(min(samples), 3),
            "max_s": round(max(samples), 3),
            "above_python_s": round(median - base, 3),
            "x_python": round(median / base, 1),
            "cpu_s": round(cpu, 3),
            "cpu_x_python": round(cpu / base_cpu, 1) if base_cpu else None,
        }
    return rows


def bench_celery(runs: int, broker: str) -> dict[str, Any]:
    """Spawn → ``ready`` of a media worker, median of ``runs``."""
    samples = []
    with tempfile.TemporaryDirectory(prefix="fm-celery-bench-") as tmp:
        env = _env(Path(tmp) / "var", FACEMEDIA_BROKER_URL=broker)
        for _ in range(runs + 1):  # the first is a warm-up
            cmd = [
                str(CELERY),
                "-A",
                "worker.celery_app",
                "worker",
                "-Q",
                "media",
                "-c",
                "2",
                "-P",
                "prefork",
                "-n",
                f"bench-{uuid.uuid4().hex[:8]}@%h",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
            ]
            start = time.perf_counter()
            proc = subprocess.Popen(
                cmd,
                cwd=_cwd(),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            ready = None
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    if b" ready." in line:
                        ready = time.perf_counter() - start
                        break
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            if ready is None:
                raise SystemExit("celery worker exited before it was ready")
            samples.append(ready)
    samples = samples[1:]
    return {
        "median_s": round(statistics.median(samples), 3),
        "min_s": round(min(samples), 3),
        "max_s": round(max(samples), 3),
    }


def main() -> None:
    """Measure and print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-celery", action="store_true")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--tree", type=Path, default=None)
    args = parser.parse_args()
    global TREE
    TREE = args.tree.resolve() if args.tree is not None else None
    result: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        },
        "runs": args.runs,
        "tree": str(TREE or ROOT),
        "cli": bench_cli(args.runs),
    }
    if not args.no_celery:
        result["celery_worker_ready"] = bench_celery(args.runs, args.broker)
    result["machine"]["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"runs={args.runs} (median; interleaved)  {result['machine']}")
    print(
        f"{'command':32} {'median s':>9} {'min':>7} {'max':>7} {'-python':>8} {'x python':>8} "
        f"{'cpu s':>7} {'cpu x py':>8}"
    )
    for name, row in result["cli"].items():
        print(
            f"{name:32} {row['median_s']:9.3f} {row['min_s']:7.3f} {row['max_s']:7.3f} "
            f"{row['above_python_s']:8.3f} {row['x_python']:8.1f} {row['cpu_s']:7.3f} "
            f"{row['cpu_x_python']:8.1f}"
        )
    if "celery_worker_ready" in result:
        row = result["celery_worker_ready"]
        print(
            f"{'celery worker → ready':32} {row['median_s']:9.3f} {row['min_s']:7.3f} "
            f"{row['max_s']:7.3f}"
        )


if __name__ == "__main__":
    main()
