"""Release build throughput (samples/s) inline and through one and two Celery workers, and the
cost of the residual-face gate as a ratio of the de-identification itself.

Set-up (all generated, nothing downloaded): ``--samples`` de-identified research samples
(scikit-image's astronaut with the face masked, 256x256 JPEG, colour variants, four quasi-
identifier classes) of as many subjects, encrypted under their subject keys; PostgreSQL (a fresh
database on the local server), a LocalStore directory shared by the processes, RabbitMQ (a fresh
vhost). A release is built with ``shard_samples`` = ``--shard``:

* inline: ``ReleaseService.create`` in this process, eager settings (planning, every shard,
  the finish), after one warm-up build;
* 1 / 2 workers: ``celery worker -Q research -c 1`` processes already running (started and
  warmed up with one build before the clock starts); the clock runs from ``create`` (planning
  here, then a group of shard tasks) to the release being ``published`` in the ledger.

Each mode is timed ``--rounds`` times, interleaved (inline, 1 worker, 2 workers, then again),
and the median reported with the minimum and the load average.

Gate: on ``--scenes`` generated 960x540 scenes with three pasted astronaut faces, the
de-identification (CenterFace detection at 0.3 + the default ``mask`` operator) against the
residual-face gate (CenterFace at 0.2 over the whole output), medians of interleaved timings.

Run: ``.venv/bin/python bench/release_bench.py`` (``--samples 512 --shard 64``; needs the local
PostgreSQL and RabbitMQ that the tests use).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_ADMIN = os.environ.get("FACEMEDIA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
AMQP = os.environ.get("FACEMEDIA_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
QUASI = [
    {"age_band": "30-39", "region": "Zhejiang", "device_family": "ios", "capture_month": "2026-11"},
    {"age_band": "30-39", "region": "Jiangsu", "device_family": "ios", "capture_month": "2026-10"},
    {
        "age_band": "20-29",
        "region": "Beijing",
        "device_family": "android",
        "capture_month": "2026-11",
    },
    {
        "age_band": "20-29",
        "region": "Hebei",
        "device_family": "android",
        "capture_month": "2026-12",
    },
]


def images(n: int) -> list[bytes]:
    from skimage import data

    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    cv2.ellipse(bgr, (225, 125), (95, 120), 0, 0, 360, (128, 128, 128), -1)
    small = cv2.resize(bgr, (256, 256), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    out = []
    for i in range(n):
        v = hsv.copy()
        v[..., 0] = (v[..., 0].astype(np.int32) + i * 7) % 180
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(v, cv2.COLOR_HSV2BGR))
        assert ok
        out.append(bytes(buf))
    return out


def populate(container: Any, n: int) -> None:
    from worker.ids import new_id
    from worker.ledger.models import ResearchSample, StoredObject
    from worker.ledger.subjects import Consent

    imgs = images(16)
    for i in range(n):
        ref = container.subjects.ensure(f"bench-{i}", Consent(research=True))
        sid, oid, t = new_id(), new_id(), datetime.now(UTC)
        key = f"research/{sid}"
        with container.db.session() as s:
            s.add(
                StoredObject(
                    id=oid, key=key, object_class="research", subject_id=ref.id, created_at=t
                )
            )
        container.vault.put(key, "research", None, ref.key_id, imgs[i % len(imgs)])
        with container.db.session() as s:
            s.add(
                ResearchSample(
                    id=sid,
                    object_id=oid,
                    subject_id=ref.id,
                    media_kind="image",
                    operator="mask",
                    params={},
                    faces=1,
                    gate={"passed": True, "residual_faces": 0, "frames_checked": 1, "reason": "ok"},
                    quasi=QUASI[i % len(QUASI)],
                    created_at=t,
                )
            )


def build(container: Any, name: str, timeout: float = 600) -> tuple[float, Any]:
    from worker.research.release import ReleaseRequest

    t0 = time.perf_counter()
    res = container.releases.create(ReleaseRequest(name=name, k=5))
    while res.status != "published":
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(name)
        time.sleep(0.05)
        res = container.releases.result(res.release_id)
    return time.perf_counter() - t0, res


def scene(seed: int) -> NDArray[np.uint8]:
    from skimage import data

    rng = np.random.default_rng(seed)
    coffee = np.ascontiguousarray(data.coffee()[:, :, ::-1])
    img = cv2.GaussianBlur(cv2.resize(coffee, (960, 540)), (0, 0), 4)
    face = np.ascontiguousarray(data.astronaut()[:, :, ::-1])[30:210, 150:300]
    for i, x in enumerate((60, 380, 700)):
        scale = float(rng.uniform(0.8, 1.1))
        patch = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        patch = patch[:, ::-1] if i % 2 else patch
        h, w = patch.shape[:2]
        y = int(rng.integers(40, 540 - h - 20))
        img[y : y + h, x : x + w] = patch
    return np.asarray(img, dtype=np.uint8)


def gate_cost(scenes: int, repeat: int) -> dict[str, float]:
    from pipelines.deid import DEFAULT_PROFILE, deidentify_image, residual_gate
    from pipelines.deid.gate import gate_detector
    from pipelines.faces import CenterFaceDetector, DetectorConfig

    detector = CenterFaceDetector.load(DetectorConfig(threshold=0.3))
    gate_det = gate_detector(detector)
    frames = [scene(i) for i in range(scenes)]
    op, params = DEFAULT_PROFILE
    detect_t: list[float] = []
    op_t: list[float] = []
    gate_t: list[float] = []
    passed = 0
    for _ in range(repeat):
        for frame in frames:
            t0 = time.perf_counter()
            faces = detector.detect(frame)
            t1 = time.perf_counter()
            out = deidentify_image(frame, faces, op, params).image
            t2 = time.perf_counter()
            verdict = residual_gate(out, gate_det, len(faces))
            t3 = time.perf_counter()
            detect_t.append(t1 - t0)
            op_t.append(t2 - t1)
            gate_t.append(t3 - t2)
            passed += verdict.passed
    med = statistics.median
    deid = med(detect_t) + med(op_t)
    return {
        "detect_ms": med(detect_t) * 1e3,
        "operator_ms": med(op_t) * 1e3,
        "gate_ms": med(gate_t) * 1e3,
        "gate_over_deid": med(gate_t) / deid,
        "gate_over_operator": med(gate_t) / med(op_t),
        "passed": passed / (scenes * repeat),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--shard", type=int, default=64)
    ap.add_argument("--scenes", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import psycopg

    from tests.workers import celery_worker
    from worker.bootstrap import Container
    from worker.settings import load_settings

    tmp = Path(tempfile.mkdtemp(prefix="release-bench-"))
    db = f"fm_bench_{uuid.uuid4().hex[:8]}"
    vhost = f"fmbench-{uuid.uuid4().hex[:8]}"
    ctl = shutil.which("rabbitmqctl") or "rabbitmqctl"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    subprocess.run([ctl, "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(
        [ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    common = {
        "home": tmp / "var",
        "database_url": f"{base}/{db}",
        "store_url": f"file://{tmp / 'store'}",
        "research__shard_samples": args.shard,
    }
    times: dict[str, list[float]] = {"inline": [], "1 worker": [], "2 workers": []}
    shards = samples = 0
    load_before = os.getloadavg()[0]
    try:
        plain = {k: v for k, v in common.items() if k != "research__shard_samples"}
        inline = Container(load_settings(**plain, research={"shard_samples": args.shard}))
        t0 = time.perf_counter()
        populate(inline, args.samples)
        print(f"populated {args.samples} samples in {time.perf_counter() - t0:.1f} s", flush=True)
        broker = AMQP.rstrip("/") + "/" + vhost
        fanned = Container(
            load_settings(**plain, broker_url=broker, research={"shard_samples": args.shard})
        )
        worker_settings = {**common, "broker_url": broker}
        build(inline, "warm-inline")  # warm-up: imports, connections, the signing key
        for r in range(args.rounds):  # interleaved rounds: a busy machine hits every mode
            secs, res = build(inline, f"inline-{r}")
            times["inline"].append(secs)
            shards, samples = res.shards, res.samples
            with contextlib.ExitStack() as workers:
                for n in (1, 2):
                    log = tmp / f"r{r}w{n}.log"
                    workers.enter_context(
                        celery_worker(worker_settings, log, "research", concurrency=1)
                    )
                    deadline = time.monotonic() + 60
                    while b"ready." not in log.read_bytes() and time.monotonic() < deadline:
                        time.sleep(0.2)
                    build(fanned, f"warm-{r}-{n}")  # warm-up of the new worker process
                    secs, _ = build(fanned, f"workers-{r}-{n}")
                    times["1 worker" if n == 1 else "2 workers"].append(secs)
            print({k: [round(x, 2) for x in v] for k, v in times.items()}, flush=True)
        inline.close()
        fanned.close()
    finally:
        subprocess.run([ctl, "delete_vhost", vhost], capture_output=True)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(
        f"{samples} samples released of {args.samples}, {shards} shards of {args.shard}, k=5, "
        f"nproc {os.cpu_count()}, {args.rounds} interleaved rounds, load average "
        f"{load_before:.1f} before / {os.getloadavg()[0]:.1f} after"
    )
    print()
    print("| build | median s | min s | samples/s (median) | vs inline |")
    print("|---|---:|---:|---:|---:|")
    base_rate = samples / statistics.median(times["inline"])
    for label, values in times.items():
        med = statistics.median(values)
        rate = samples / med
        print(f"| {label} | {med:.2f} | {min(values):.2f} | {rate:.0f} | {rate / base_rate:.2f}x |")
    g = gate_cost(args.scenes, args.repeat)
    print()
    print(f"gate on {args.scenes} scenes x {args.repeat} (960x540, 3 faces), medians:")
    print()
    print("| step | ms |")
    print("|---|---:|")
    print(f"| detection (CenterFace 0.3) | {g['detect_ms']:.1f} |")
    print(f"| mask operator | {g['operator_ms']:.2f} |")
    print(f"| residual gate (CenterFace 0.2) | {g['gate_ms']:.1f} |")
    print()
    print(
        f"gate / de-identification (detection + operator) = {g['gate_over_deid']:.2f}; "
        f"gate / operator alone = {g['gate_over_operator']:.1f}; scenes passing the gate "
        f"{g['passed']:.0%}"
    )


if __name__ == "__main__":
    main()
