"""Sweep throughput on moto's S3 server (versioned bucket) against raw boto3 deletes.

    .venv/bin/python bench/retention_bench.py [--objects 100000] [--naive 2000] [--json]

Three ways to delete N due objects from the same server in the same run:
- raw: a bare boto3 loop of DeleteObjects calls with 1000 keys each (version ids known, no
  listing, no verification, no ledger) — the floor;
- sweep: `Sweeper.run()` — claims in the ledger (PostgreSQL), deletes every recorded version,
  verifies (DeleteObjects confirmations, or a listing after the delete), writes a receipt per
  object; verify=listing is run on --listing objects because moto's ListObjectVersions costs
  time in proportion to the whole bucket on every call (real S3 pages in constant time);
- naive: one DeleteObject per object with its version id (measured on --naive objects).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG = "postgresql://postgres@127.0.0.1:5432/test"
REGION = "cn-north-1"


def _put_many(s3: Any, bucket: str, keys: list[str]) -> list[dict[str, str]]:
    """Upload small ciphertext-sized bodies concurrently; return key + version id."""

    def put(key: str) -> dict[str, str]:
        response = s3.put_object(Bucket=bucket, Key=key, Body=b"x" * 256)
        return {"Key": key, "VersionId": response["VersionId"]}

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(put, keys))


def _sweep(s3: Any, bucket: str, endpoint: str, db: str, count: int, verify: str) -> float:
    """Seed ``count`` due objects (store + ledger, version ids recorded) and sweep them."""
    from worker.bootstrap import Container
    from worker.ids import new_id
    from worker.ledger.models import StoredObject
    from worker.settings import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        container = Container(
            load_settings(
                home=Path(tmp),
                database_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
                store_url=f"s3://{bucket}/p",
                s3_endpoint_url=endpoint,
                s3_region=REGION,
                log_level="WARNING",
                delete_verify=verify,
            )
        )
        keys = [f"outputs/{new_id()}/o" for _ in range(count)]
        puts = _put_many(s3, bucket, [f"p/{k}" for k in keys])
        past = datetime.now(UTC) - timedelta(days=1)
        with container.db.session() as s:
            s.add_all(
                StoredObject(
                    id=new_id(),
                    key=k,
                    object_class="output",
                    created_at=past,
                    stored_at=past,
                    expires_at=past,
                    version_ids=[p["VersionId"]],
                )
                for k, p in zip(keys, puts, strict=True)
            )
        report = container.sweeper.run()
        assert report.deleted == count and report.unverified == 0, report
        left = s3.list_object_versions(Bucket=bucket)
        assert not left.get("Versions") and not left.get("DeleteMarkers")
        container.close()
        return float(report.deleted / report.seconds)


def main() -> None:
    """Seed, delete three ways, print a markdown table."""
    import os

    import boto3
    import psycopg
    from botocore.config import Config

    from tests.conftest import free_port
    from worker.ids import new_id
    from worker.logs import configure_logging

    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--naive", type=int, default=2000)
    parser.add_argument("--listing", type=int, default=10000, help="objects for verify=listing")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configure_logging("WARNING")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    port = free_port()
    # moto's server in its own process, like a real S3 endpoint (and off this process's GIL)
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        config=Config(max_pool_connections=32),
    )
    results: dict[str, float] = {}
    db = f"fm_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    try:

        def bucket() -> str:
            name = f"bench-{uuid.uuid4().hex[:10]}"
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
            return name

        # raw floor
        raw_bucket = bucket()
        t0 = time.perf_counter()
        objs = _put_many(s3, raw_bucket, [f"p/outputs/{new_id()}/o" for _ in range(args.objects)])
        seed_rate = args.objects / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for start in range(0, len(objs), 1000):
            s3.delete_objects(
                Bucket=raw_bucket, Delete={"Objects": objs[start : start + 1000], "Quiet": True}
            )
        results["raw DeleteObjects loop (1000/call)"] = args.objects / (time.perf_counter() - t0)

        # naive per-object
        naive_bucket = bucket()
        objs = _put_many(s3, naive_bucket, [f"p/outputs/{new_id()}/o" for _ in range(args.naive)])
        t0 = time.perf_counter()
        for obj in objs:
            s3.delete_object(Bucket=naive_bucket, Key=obj["Key"], VersionId=obj["VersionId"])
        results["naive DeleteObject per object"] = args.naive / (time.perf_counter() - t0)

        for verify in ("confirmations", "listing"):
            count = args.objects if verify == "confirmations" else args.listing
            results[f"facemedia sweep, verify={verify}"] = _sweep(
                s3, bucket(), endpoint, db, count, verify
            )
    finally:
        server.kill()  # never mask the real error behind a slow shutdown
        server.wait(timeout=30)
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    raw = results["raw DeleteObjects loop (1000/call)"]
    if args.json:
        print(json.dumps(results))
        return
    print(
        f"objects: {args.objects} (naive: {args.naive}, verify=listing: {args.listing}); "
        f"seeding ran at {seed_rate:.0f} puts/s\n"
    )
    print("| method | deletions/s | ratio to raw |")
    print("|---|---:|---:|")
    for name, rate in results.items():
        print(f"| {name} | {rate:,.0f} | {rate / raw:.2f}x |")


if __name__ == "__main__":
    main()
