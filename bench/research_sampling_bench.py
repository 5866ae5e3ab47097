"""Research sampling overhead per job, against the same job without sampling, in one run.

    .venv/bin/python bench/research_sampling_bench.py [--jobs 20] [--job detect] [--json]

On the embedded default (SQLite, LocalStore, eager), with the real CenterFace model: the same
photo (scikit-image's astronaut, mirrored: the default profile passes the gate on it) is
submitted ``--jobs`` times by a consenting subject to each of two containers, one with
``research.sample_rate = 0`` (the job alone; the sampler only reads the subject row and the rate)
and one with ``sample_rate = 1`` (every job de-identified, gated, encrypted and stored as a
research sample), interleaved so both see the same load. Each job is timed around
``JobService.process`` (claim → decrypt → handler → outputs → sample → commit → delete the
original); models are loaded and one job of each is run before timing. Also timed: one k-Same
batch (``--k`` subjects staged, then ``KSameBatcher.build``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _photo() -> bytes:
    import cv2
    import numpy as np
    from skimage import data

    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(bgr[:, ::-1]))
    assert ok
    return bytes(buf)


def _container(home: Path, **research: Any) -> Any:
    from worker.bootstrap import Container
    from worker.settings import load_settings

    return Container(load_settings(home=home, research=research, log_level="WARNING"))


def _time_job(c: Any, photo: bytes, job: str, subject: str) -> float:
    from worker.ledger.subjects import Consent

    queued: list[str] = []
    c.client.enqueue = queued.append
    job_id = c.client.submit(photo, job, subject_id=subject, consent=Consent(research=True))
    started = time.perf_counter()
    result = c.service.process(job_id)
    elapsed = time.perf_counter() - started
    assert result.status == "succeeded", result
    return elapsed * 1000.0


def main() -> None:
    """Run the benchmark and print the figures (``--json`` for one JSON object)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--job", default="detect")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import logging

    logging.disable(logging.INFO)
    from sqlalchemy import func, select

    from worker.ledger.models import ResearchSample
    from worker.ledger.subjects import Consent

    photo = _photo()
    with tempfile.TemporaryDirectory() as tmp:
        base = _container(Path(tmp) / "off", sample_rate=0.0)
        sampled = _container(Path(tmp) / "on", sample_rate=1.0)
        for c in (base, sampled):  # models loaded, caches warm
            _time_job(c, photo, args.job, "warmup")
        off: list[float] = []
        on: list[float] = []
        for i in range(args.jobs):
            pair = [(base, off), (sampled, on)]
            if i % 2:
                pair.reverse()
            for c, times in pair:
                times.append(_time_job(c, photo, args.job, f"s{i}"))
        with sampled.db.session() as s:
            kept = int(s.scalar(select(func.count()).select_from(ResearchSample)) or 0)

        ks = _container(Path(tmp) / "ks", sample_rate=1.0, operator="k_same", k_same_k=args.k)
        ks.client.enqueue = lambda job_id: ks.service.process(job_id)
        for i in range(args.k):
            ks.client.submit(photo, args.job, subject_id=f"k{i}", consent=Consent(research=True))
        started = time.perf_counter()
        reports = ks.ksame.build()
        batch_ms = (time.perf_counter() - started) * 1000.0
        for c in (base, sampled, ks):
            c.close()

    med_off, med_on = statistics.median(off), statistics.median(on)
    result = {
        "job": args.job,
        "jobs": args.jobs,
        "samples_kept": kept,
        "job_alone_ms_median": round(med_off, 1),
        "job_with_sample_ms_median": round(med_on, 1),
        "sampling_overhead_ms_median": round(med_on - med_off, 1),
        "ratio_median": round(med_on / med_off, 2),
        "job_alone_ms_mean": round(statistics.fmean(off), 1),
        "job_with_sample_ms_mean": round(statistics.fmean(on), 1),
        "ksame_k": args.k,
        "ksame_batch_ms": round(batch_ms, 1),
        "ksame_written": sum(r.written for r in reports),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:28} {value}")


if __name__ == "__main__":
    main()
