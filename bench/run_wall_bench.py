"""``facemedia run`` wall time on the video bench's clip (issue 16: "also report `facemedia
run` wall time"), against the raw PyAV transcode of the same clip in the same rounds.

    .venv/bin/python bench/run_wall_bench.py [--rounds 3] [--frames 150] [--json]

The clip is bench/video_bench.py's 720p30 H.264 clip with AAC audio and two faces (generated from
scikit-image's astronaut; nothing of a real person), written once to a private temp directory.
Each round, interleaved: the raw PyAV decode → libx264 transcode in this process (the video
bench's baseline: crf 23, veryfast), then ``facemedia run CLIP --job deid`` and ``facemedia run
CLIP --job ar`` (beautify + glasses) as fresh processes on a fresh embedded home (SQLite ledger,
local store, jobs inline): the whole command as a user times it — start-up, the original
encrypted into the store, the job, the output encrypted, the original deleted, the status
printed. Figures: the median over the rounds of the wall time, frames per second, and each
command's ratio to the raw transcode's fps measured in the same round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FACEMEDIA = Path(sys.executable).with_name("facemedia")
AR_PARAMS = {"effects": [{"effect": "beautify"}, {"effect": "sticker", "name": "glasses"}]}


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _run(clip: Path, home: Path, job: str, params: dict[str, Any] | None) -> float:
    """Wall seconds of one ``facemedia run`` (fails loudly unless the job succeeded)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEMEDIA_")}
    env.update(FACEMEDIA_HOME=str(home), FACEMEDIA_LOG_LEVEL="WARNING")
    cmd = [str(FACEMEDIA), "run", str(clip), "--job", job, "--json"]
    if params is not None:
        cmd += ["--params", json.dumps(params)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    status = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    if proc.returncode != 0 or status.get("status") != "succeeded":
        tail = proc.stderr[-2000:]
        raise SystemExit(f"facemedia run --job {job}: exit {proc.returncode}\n{tail}")
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from bench.video_bench import make_clip, raw_transcode
    from pipelines.faces import CenterFaceDetector

    clip = make_clip(args.frames, 1280, 720, 30, CenterFaceDetector.load())
    load_start = _load()
    walls: dict[str, list[float]] = {"raw": [], "deid": [], "ar": []}
    ratios: dict[str, list[float]] = {"deid": [], "ar": []}
    with tempfile.TemporaryDirectory(prefix="fm-run-bench-") as tmp:
        path = Path(tmp) / "clip.mp4"
        path.write_bytes(clip.data)
        for n in range(args.rounds):
            start = time.perf_counter()
            raw_transcode(clip.data, numpy_roundtrip=False)
            walls["raw"].append(time.perf_counter() - start)
            for job, params in (("deid", None), ("ar", AR_PARAMS)):
                wall = _run(path, Path(tmp) / f"home-{job}-{n}", job, params)
                walls[job].append(wall)
                ratios[job].append(walls["raw"][-1] / wall)
    rows = {
        name: {
            "wall_s": round(statistics.median(times), 3),
            "fps": round(clip.frames / statistics.median(times), 1),
            "vs_raw": None if name == "raw" else round(statistics.median(ratios[name]), 2),
            "rounds_s": [round(t, 3) for t in times],
        }
        for name, times in walls.items()
    }
    result = {"frames": clip.frames, "load_start": load_start, "load_end": _load(), "rows": rows}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{clip.frames} frames, 720p30, 2 faces; load {load_start} -> {result['load_end']}")
    print("| path | wall s (median) | fps | vs raw transcode (fps ratio) | rounds (s) |")
    print("|---|---:|---:|---:|---|")
    names = {
        "raw": "raw PyAV decode -> libx264, in-process (baseline)",
        "deid": "`facemedia run --job deid` (fresh process, embedded home)",
        "ar": "`facemedia run --job ar` beautify + glasses (fresh process)",
    }
    for name, row in rows.items():
        ratio = "1.00x" if row["vs_raw"] is None else f"{row['vs_raw']:.2f}x"
        rounds = ", ".join(f"{t:.2f}" for t in row["rounds_s"])
        print(f"| {names[name]} | {row['wall_s']:.2f} | {row['fps']} | {ratio} | {rounds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
