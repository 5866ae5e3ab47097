"""Sweep throughput on a real S3 store (SeaweedFS, versioned bucket) against raw boto3 deletes
on the same server in the same run; ``--store moto`` runs the same on moto's server (the figures
before SeaweedFS, kept for comparison).

    .venv/bin/python bench/retention_bench.py [--store seaweedfs|moto] [--objects 10000]
        [--rounds 4] [--naive 500] [--listing 2000] [--parallel 4000] [--json]

(Defaults sized for SeaweedFS on a 2-core machine, where a versioned delete costs ~6 ms: a few
minutes. moto's runs in docs/BENCHMARKS.md used 100,000 objects.)

Ways to delete due objects from the same server in the same run:
- raw: a bare boto3 loop of DeleteObjects calls with 1000 keys each and ``Quiet`` (version ids
  known, no listing, no verification, no ledger) — the floor the goal is measured against;
- sweep: ``Sweeper.run()`` — claims in the ledger (PostgreSQL), deletes every recorded version,
  checks per-key errors, verifies (verify=confirmations: no error for any recorded version;
  verify=listing: also a listing after the delete), writes a receipt per object;
- raw, 2 threads: the raw loop split over two threads (the sweep keeps two batches in flight,
  so this says how much of its figure is that concurrency) — on ``--parallel`` objects;
- naive: one DeleteObject per object with its version id — on ``--naive`` objects.

Raw and sweep (verify=confirmations) each get ``--objects`` objects, deleted in ``--rounds``
interleaved rounds (raw chunk, sweep of one due group, alternating which goes first), so both
see the same machine load; each round's sweep is a whole ``Sweeper.run(as_of=...)`` timed from
outside (lock, counts and audit included). verify=listing runs on ``--listing`` objects in a
bucket of its own (moto's ListObjectVersions costs time in proportion to the whole bucket on
every call; SeaweedFS's, like real S3's, pages through the filer's sorted keys).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG = "postgresql://postgres@127.0.0.1:5432/test"
REGION = "cn-north-1"
BATCH = 1000


def _put_many(s3: Any, bucket: str, keys: list[str]) -> list[dict[str, str]]:
    """Upload small ciphertext-sized bodies concurrently; return key + version id."""

    def put(key: str) -> dict[str, str]:
        response = s3.put_object(Bucket=bucket, Key=key, Body=b"x" * 256)
        return {"Key": key, "VersionId": response["VersionId"]}

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(put, keys))


def _raw(s3: Any, bucket: str, objs: list[dict[str, str]]) -> float:
    """The floor: DeleteObjects of 1000 known versions per call, ``Quiet``; seconds taken."""
    t0 = time.perf_counter()
    for start in range(0, len(objs), BATCH):
        s3.delete_objects(
            Bucket=bucket, Delete={"Objects": objs[start : start + BATCH], "Quiet": True}
        )
    return time.perf_counter() - t0


class SweepTarget:
    """A container on its own bucket whose ledger holds due objects in ``groups`` due groups
    (group i is due at ``due[i]`` and not before), so sweeps can be interleaved with raw runs."""

    def __init__(
        self, s3: Any, bucket: str, endpoint: str, db: str, verify: str, tmp: Path
    ) -> None:
        from worker.bootstrap import Container
        from worker.settings import load_settings

        self.s3, self.bucket = s3, bucket
        self.container = Container(
            load_settings(
                home=tmp,
                database_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
                store_url=f"s3://{bucket}/p",
                s3_endpoint_url=endpoint,
                s3_region=REGION,
                store_region=REGION,  # SeaweedFS has no regions (moto: the same one)
                log_level="WARNING",
                delete_verify=verify,
            )
        )
        self.due: list[datetime] = []

    def seed(self, count: int, groups: int) -> None:
        """Store ``count`` objects and their ledger rows (version ids recorded)."""
        from worker.ids import new_id
        from worker.ledger.models import StoredObject

        keys = [f"outputs/{new_id()}/o" for _ in range(count)]
        puts = _put_many(self.s3, self.bucket, [f"p/{k}" for k in keys])
        base = datetime.now(UTC) - timedelta(days=groups + 1)
        self.due = [base + timedelta(days=i) for i in range(groups)]
        size = -(-count // groups)
        with self.container.db.session() as s:
            s.add_all(
                StoredObject(
                    id=new_id(),
                    key=k,
                    object_class="output",
                    created_at=base,
                    stored_at=base,
                    expires_at=self.due[i // size],
                    version_ids=[p["VersionId"]],
                )
                for i, (k, p) in enumerate(zip(keys, puts, strict=True))
            )

    def sweep(self, group: int) -> tuple[int, float]:
        """Sweep what is due at group ``group``'s time; (objects deleted, seconds)."""
        t0 = time.perf_counter()
        report = self.container.sweeper.run(as_of=self.due[group])
        seconds = time.perf_counter() - t0
        assert report.unverified == 0 and report.already_deleted == 0, report
        return report.deleted, seconds

    def check_empty(self) -> None:
        """No version or delete marker left in the bucket."""
        left = self.s3.list_object_versions(Bucket=self.bucket)
        assert not left.get("Versions") and not left.get("DeleteMarkers"), "versions left"

    def close(self) -> None:
        """Release the container's connections."""
        self.container.close()


@contextlib.contextmanager
def _s3_server(store: str, directory: Path) -> Iterator[str]:
    """The S3 endpoint of a server in its own process (off this process's GIL): SeaweedFS
    (master, volume, filer, S3 gateway) or moto's server."""
    from tests.conftest import free_port
    from tests.seaweed import SeaweedServer

    if store == "seaweedfs":
        with SeaweedServer(directory, volume_size_limit_mb=1024) as server:
            yield server.endpoint
        return
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.kill()  # never mask the real error behind a slow shutdown
        server.wait(timeout=30)


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


def main() -> None:
    """Seed, delete every way, print a markdown table."""
    import boto3
    import psycopg
    from botocore.config import Config

    from tests.seaweed import ACCESS_KEY, SECRET_KEY
    from worker.ids import new_id
    from worker.logs import configure_logging

    parser = argparse.ArgumentParser()
    parser.add_argument("--store", choices=("seaweedfs", "moto"), default="seaweedfs")
    parser.add_argument("--objects", type=int, default=10_000, help="raw and sweep, each")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved raw/sweep rounds")
    parser.add_argument("--naive", type=int, default=500)
    parser.add_argument("--listing", type=int, default=2000, help="objects for verify=listing")
    parser.add_argument("--parallel", type=int, default=4000, help="objects for raw, 2 threads")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configure_logging("WARNING")
    os.environ["AWS_ACCESS_KEY_ID"] = ACCESS_KEY  # the identity SeaweedFS's gateway checks
    os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET_KEY
    tmp = tempfile.TemporaryDirectory()
    servers = contextlib.ExitStack()
    endpoint = servers.enter_context(_s3_server(args.store, Path(tmp.name) / "store"))
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name=REGION, config=Config(max_pool_connections=32)
    )
    results: dict[str, float] = {}
    rounds: list[dict[str, float]] = []
    load: dict[str, str] = {"start": _load()}
    db = f"fm_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    targets: list[SweepTarget] = []
    try:

        def bucket() -> str:
            name = f"bench-{uuid.uuid4().hex[:10]}"
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
            return name

        def seed(name: str, count: int) -> list[dict[str, str]]:
            return _put_many(s3, name, [f"p/outputs/{new_id()}/o" for _ in range(count)])

        # seeding (not timed, except to report it)
        t0 = time.perf_counter()
        raw_bucket = bucket()
        raw_objs = seed(raw_bucket, args.objects)
        seed_rate = args.objects / (time.perf_counter() - t0)
        # one home for every target: they share the ledger, whose audit key its keyring wraps
        sweep = SweepTarget(s3, bucket(), endpoint, db, "confirmations", Path(tmp.name) / "home")
        targets.append(sweep)
        sweep.seed(args.objects, args.rounds)
        load["seeded"] = _load()

        # raw and sweep, interleaved
        chunk = -(-args.objects // args.rounds)
        raw_s = sweep_s = 0.0
        swept = 0
        for r in range(args.rounds):
            objs = raw_objs[r * chunk : (r + 1) * chunk]
            if r % 2 == 0:
                raw_t = _raw(s3, raw_bucket, objs)
                n, sweep_t = sweep.sweep(r)
            else:
                n, sweep_t = sweep.sweep(r)
                raw_t = _raw(s3, raw_bucket, objs)
            raw_s, sweep_s, swept = raw_s + raw_t, sweep_s + sweep_t, swept + n
            rounds.append(
                {"raw": len(objs) / raw_t, "sweep": n / sweep_t, "ratio": raw_t / sweep_t}
            )
        assert swept == args.objects, swept
        sweep.check_empty()
        left = s3.list_object_versions(Bucket=raw_bucket)
        assert not left.get("Versions") and not left.get("DeleteMarkers")
        results["raw DeleteObjects loop (1000/call)"] = args.objects / raw_s
        results["facemedia sweep, verify=confirmations"] = args.objects / sweep_s
        load["interleaved"] = _load()

        if args.parallel:
            par_bucket = bucket()
            objs = seed(par_bucket, args.parallel)
            half = (len(objs) // 2 // BATCH + 1) * BATCH
            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=2) as pool:
                list(pool.map(lambda part: _raw(s3, par_bucket, part), [objs[:half], objs[half:]]))
            results["raw loop, 2 threads"] = args.parallel / (time.perf_counter() - t0)

        if args.naive:
            naive_bucket = bucket()
            objs = seed(naive_bucket, args.naive)
            t0 = time.perf_counter()
            for obj in objs:
                s3.delete_object(Bucket=naive_bucket, Key=obj["Key"], VersionId=obj["VersionId"])
            results["naive DeleteObject per object"] = args.naive / (time.perf_counter() - t0)

        if args.listing:
            listing = SweepTarget(s3, bucket(), endpoint, db, "listing", Path(tmp.name) / "home")
            targets.append(listing)
            listing.seed(args.listing, 1)
            n, seconds = listing.sweep(0)
            assert n == args.listing, n
            listing.check_empty()
            results["facemedia sweep, verify=listing"] = n / seconds
        load["end"] = _load()
    finally:
        for target in targets:
            target.close()
        servers.close()
        tmp.cleanup()
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    raw = results["raw DeleteObjects loop (1000/call)"]
    if args.json:
        print(json.dumps({"store": args.store, "results": results, "rounds": rounds, "load": load}))
        return
    print(
        f"store: {args.store}; objects: {args.objects} raw + {args.objects} sweep in "
        f"{args.rounds} interleaved rounds "
        f"(raw 2 threads: {args.parallel}, naive: {args.naive}, verify=listing: {args.listing}); "
        f"seeding ran at {seed_rate:.0f} puts/s; load average (1/5 min) "
        + ", ".join(f"{k} {v}" for k, v in load.items())
        + "\n"
    )
    print("| method | deletions/s | ratio to raw |")
    print("|---|---:|---:|")
    for name, rate in results.items():
        print(f"| {name} | {rate:,.0f} | {rate / raw:.2f}x |")
    print(
        "\nper round (raw/s, sweep/s, ratio): "
        + "; ".join(f"{r['raw']:,.0f}, {r['sweep']:,.0f}, {r['ratio']:.2f}x" for r in rounds)
    )


if __name__ == "__main__":
    main()
