"""Per-job Celery overhead: the same `detect` jobs run by a direct in-process call and by a real
`celery worker` (Redis broker, one prefork child), both on PostgreSQL and the same store: a
versioned bucket on a SeaweedFS server started for the run (``--store seaweedfs``, the default),
moto's server (``--store moto``, the figures before SeaweedFS) or the local store (``local``).

    .venv/bin/python bench/spine_bench.py [--jobs 40] [--store seaweedfs|moto|local] [--json]

Needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (as on the dev machines and CI).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/8"
REGION = "cn-north-1"
SEQ = "spine, celery worker, one job at a time"
BURST = "spine, celery worker, burst (submit overlaps work)"


def _photo() -> bytes:
    import cv2
    from skimage import data

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    assert ok
    return bytes(buf)


def _wait(container: Any, job_ids: list[str], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    pending = set(job_ids)
    while pending and time.monotonic() < deadline:
        pending = {j for j in pending if not container.service.status(j)["original_deleted"]}
        time.sleep(0.005)
    if pending:
        raise SystemExit(f"{len(pending)} jobs did not finish")


@contextlib.contextmanager
def _store(kind: str, directory: Path) -> Iterator[dict[str, Any]]:
    """Settings of the store the jobs write to, its server running meanwhile."""
    if kind == "local":
        yield {}
        return
    import boto3

    from tests.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedServer, new_bucket_name

    os.environ["AWS_ACCESS_KEY_ID"] = ACCESS_KEY  # the celery worker inherits them
    os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET_KEY
    with contextlib.ExitStack() as stack:
        if kind == "seaweedfs":
            endpoint = stack.enter_context(SeaweedServer(directory)).endpoint
        else:
            from moto.server import ThreadedMotoServer

            from tests.conftest import free_port

            port = free_port()
            moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            moto.start()
            stack.callback(moto.stop)
            endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
        bucket = new_bucket_name("bench")
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        yield {
            "store_url": f"s3://{bucket}/p",
            "s3_endpoint_url": endpoint,
            "s3_region": REGION,
            "store_region": REGION,  # SeaweedFS has no regions
        }


def main() -> None:
    """Run both paths and print a markdown table (or JSON)."""
    import psycopg
    import redis

    from tests.workers import celery_worker
    from worker.bootstrap import Container
    from worker.jobs.registry import handler
    from worker.settings import load_settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--store", choices=("seaweedfs", "moto", "local"), default="seaweedfs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from worker.logs import configure_logging

    configure_logging("WARNING")
    photo = _photo()
    db = f"fm_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    redis.Redis.from_url(REDIS).flushdb()
    results: dict[str, float] = {}
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            _store(args.store, Path(tmp) / "store") as store,
        ):
            base = {
                "home": Path(tmp) / "var",
                "database_url": f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
                "log_level": "WARNING",
                **store,
            }
            direct = Container(load_settings(**base))
            detect = handler("detect")
            params = detect.validate({})
            detect.run(photo, params, direct.tools)  # load the model once
            t0 = time.perf_counter()
            for _ in range(args.jobs):
                detect.run(photo, params, direct.tools)
            results["pipeline only (no spine)"] = (time.perf_counter() - t0) / args.jobs

            direct.client.submit(photo, "detect", subject_id="bench")  # warm
            t0 = time.perf_counter()
            for _ in range(args.jobs):
                direct.client.submit(photo, "detect", subject_id="bench")
            results["spine, direct call"] = (time.perf_counter() - t0) / args.jobs
            direct.close()

            settings = {**base, "broker_url": REDIS}
            queued = Container(load_settings(**settings))
            with celery_worker(settings, Path(tmp) / "worker.log", concurrency=1):
                warm = queued.client.submit(photo, "detect", subject_id="bench")
                _wait(queued, [warm], timeout=120)
                t0 = time.perf_counter()
                ids = []
                for _ in range(args.jobs):  # one at a time: submit, wait until it ended
                    ids.append(queued.client.submit(photo, "detect", subject_id="bench"))
                    _wait(queued, ids[-1:])
                results[SEQ] = (time.perf_counter() - t0) / args.jobs
                t0 = time.perf_counter()
                burst = [
                    queued.client.submit(photo, "detect", subject_id="bench")
                    for _ in range(args.jobs)
                ]
                _wait(queued, burst)
                results[BURST] = (time.perf_counter() - t0) / args.jobs
                deliveries = [queued.service.status(j)["deliveries"] for j in ids + burst]
                assert statistics.mean(deliveries) == 1.0  # every job ran exactly once
            queued.close()
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    base_ms = results["spine, direct call"] * 1000
    if args.json:
        print(json.dumps({"store": args.store, **{k: v * 1000 for k, v in results.items()}}))
        return
    one, five, _ = os.getloadavg()
    print(
        f"jobs per path: {args.jobs} (detect on a 512x512 JPEG; redis, 1 prefork child); "
        f"store: {args.store}; load average (1/5 min) at the end {one:.2f}/{five:.2f}\n"
    )
    print("| path | ms per job | ratio to direct call |")
    print("|---|---:|---:|")
    for name, seconds in results.items():
        print(f"| {name} | {seconds * 1000:.1f} | {seconds * 1000 / base_ms:.2f}x |")
    overhead = (results[SEQ] - results["spine, direct call"]) * 1000
    print(f"\nCelery overhead per job (one at a time, submit to ended): {overhead:.1f} ms")


if __name__ == "__main__":
    main()
