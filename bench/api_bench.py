"""HTTP ingest (issue 17): ``POST /v1/jobs`` of a 1 MP JPEG against the same bytes put straight
to the store with boto3, the same number of concurrent clients, the same S3 server, in one run.

    .venv/bin/python bench/api_bench.py [--rounds 3] [--requests 480] [--clients 16,64]
        [--workers 1,2] [--no-direct] [--baseline-tree DIR] [--json]

The store is a SeaweedFS server started for the run (its own process, tests/seaweed.py), with a
versioned bucket. Each measurement sends ``--requests`` requests from ``C`` concurrent clients:

- raw: ``C`` threads sharing one boto3 client (``max_pool_connections=C``) each looping
  ``put_object`` of the JPEG's bytes under a fresh key of the same versioned bucket — no
  encryption, no ledger, no broker: the floor the goal is measured against;
- api, W workers: ``facemedia serve --workers W`` (uvicorn) on loopback with the ledger on
  PostgreSQL, the broker set (Redis, no worker consuming: the server only ingests) and the store
  on the same SeaweedFS bucket; ``C`` httpx async tasks each looping a multipart
  ``POST /v1/jobs`` (``file``, ``job=detect``, ``subject``) with a bearer key. A request counts
  when it answers 202; anything else is reported as an error;
- JobClient.submit in-process: ``C`` threads of this process calling ``JobClient.submit`` on
  the same stack (no HTTP): what the spine's ingest costs by itself, so the difference to the
  API rows is the HTTP layer (``--no-direct`` leaves it out).

Each API request sends the same multipart bytes, encoded once by httpx (:func:`multipart_body`):
the load generator shares the cores with the server, so it should not re-encode the form each
time. ``--baseline-tree DIR`` adds a 1-worker server of another source tree (the code before a
change) on the same stack, so before and after are measured in one run.

Rounds interleave every (clients, path) measurement so all paths see the same machine load; the
figures are the median over rounds of requests/s and of p50/p99 latency. With them, the CPU time
(user + system, /proc) each process spent per request (:class:`CpuMeter`): this process (the
load generator), the API server, the S3 server, the bench database's PostgreSQL backends and
Redis. On a 2-core machine where all of them share the cores, those sums bound the rates.

The API key's rate limit and the per-worker upload cap are raised for the run
(``FACEMEDIA_API__RATE_PER_SECOND``, ``FACEMEDIA_API__BURST``,
``FACEMEDIA_API__MAX_CONCURRENT_UPLOADS``) so the bench measures ingest, not the limiter's
refusals (the token bucket itself still runs on every request).
Goal: ingest >= 0.7x the raw put rate and p99 <= 1.5x the raw p99.

Needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (as on the dev machines and CI).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG = "postgresql://postgres@127.0.0.1:5432/test"
REGION = "cn-north-1"
FACEMEDIA = str(Path(sys.executable).with_name("facemedia"))
DIRECT = "JobClient.submit in-process (no HTTP)"
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class Figures:
    """One measurement: requests/s over the wall time, latency percentiles (ms), errors."""

    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    error_codes: tuple[int, ...] = ()  # distinct HTTP statuses of the errors (0: no answer)
    cpu_ms: tuple[tuple[str, float], ...] = ()  # CPU per request by process (see CpuMeter)


def _photo_1mp() -> bytes:
    """scikit-image's astronaut scaled to 1000x1000 (1 MP), JPEG quality 90, in memory."""
    import cv2
    from skimage import data

    image = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (1000, 1000))
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return bytes(buf)


def _percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class CpuMeter:
    """CPU time (user + system, from /proc) of the processes a measurement runs on: this one
    (the load generator, or the submitting threads of the in-process row), the API server and
    its workers, the S3 server, the PostgreSQL backends connected to the bench's database
    (walsender/checkpointer/WAL writer are not counted) and the Redis server. Divided by the
    requests it is the CPU each costs per request: on a 2-core machine where they all share the
    cores, what bounds the rate."""

    def __init__(self, store_pid: int | None, db: str) -> None:
        self.store_pid = store_pid
        self.db = db
        self.server_pids: list[int] = []
        self.tick = os.sysconf("SC_CLK_TCK")

    def _cpu(self, pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime

    def _tree(self, pid: int) -> list[int]:
        found = [pid]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(stat[1]) == pid:
                    found.extend(self._tree(int(entry.name)))
        return found

    def _named(self, comm: str) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if (entry / "comm").read_text().strip() == comm:
                        pids.append(int(entry.name))
        return pids

    def _backends(self) -> list[int]:
        import psycopg

        with psycopg.connect(PG) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.db,)
            ).fetchall()
        return [int(r[0]) for r in rows]

    def sample(self) -> dict[str, dict[int, float]]:
        """CPU seconds so far of every process counted, by role and pid."""
        roles: dict[str, list[int]] = {
            "client": [os.getpid()],
            "server": [p for pid in self.server_pids for p in self._tree(pid)],
            "store": [] if self.store_pid is None else [self.store_pid],
            "postgres": self._backends(),
            "redis": self._named("redis-server"),
        }
        return {role: {p: self._cpu(p) for p in pids} for role, pids in roles.items()}

    @staticmethod
    def per_request(
        before: dict[str, dict[int, float]], after: dict[str, dict[int, float]], n: int
    ) -> tuple[tuple[str, float], ...]:
        """ms of CPU per request by role (processes born meanwhile count from zero)."""
        out = []
        for role, pids in after.items():
            used = sum(t - before.get(role, {}).get(p, 0.0) for p, t in pids.items())
            out.append((role, 1000 * max(used, 0.0) / max(n, 1)))
        return tuple(out)


def _figures(
    latencies: list[float], wall: float, errors: int, codes: tuple[int, ...] = ()
) -> Figures:
    return Figures(
        rate=len(latencies) / wall,
        p50_ms=_percentile(latencies, 0.50) * 1000,
        p99_ms=_percentile(latencies, 0.99) * 1000,
        errors=errors,
        error_codes=codes,
    )


def _threaded(op: Callable[[], Any], clients: int, requests: int) -> Figures:
    """``clients`` threads calling ``op`` until ``requests`` calls are done (failures counted)."""
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors = 0

    def client() -> None:
        nonlocal errors
        while next(counter) < requests:
            t0 = time.perf_counter()
            try:
                op()
            except Exception:
                with lock:
                    errors += 1
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    return _figures(latencies, time.perf_counter() - t0, errors)


def raw_puts(s3: Any, bucket: str, body: bytes, clients: int, requests: int) -> Figures:
    """``clients`` threads putting ``body`` under fresh keys until ``requests`` puts are done."""
    return _threaded(
        lambda: s3.put_object(Bucket=bucket, Key=f"raw/{uuid.uuid4().hex}", Body=body),
        clients,
        requests,
    )


def multipart_body(body: bytes) -> tuple[bytes, str]:
    """The multipart form every API request sends (``job``, ``subject``, then ``file``),
    encoded once by httpx itself, and its content type: each request then sends these bytes,
    so the load generator, which shares the machine's cores with the server, spends its CPU on
    HTTP, not on re-encoding the same form 480 times (the raw puts' boto3 likewise sends the
    same bytes each time)."""
    import httpx

    request = httpx.Request(
        "POST",
        "http://bench/v1/jobs",
        files={"file": ("photo.jpg", body, "image/jpeg")},
        data={"job": "detect", "subject": "bench-subject"},
    )
    return request.read(), request.headers["content-type"]


async def _api_posts(url: str, key: str, body: bytes, clients: int, requests: int) -> Figures:
    import httpx

    counter = itertools.count()
    latencies: list[float] = []
    errors: list[int] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    form, content_type = multipart_body(body)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": content_type}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:

        async def client() -> None:
            while next(counter) < requests:
                t0 = time.perf_counter()
                try:
                    response = await http.post("/v1/jobs", headers=headers, content=form)
                except httpx.HTTPError:
                    errors.append(0)
                    continue
                if response.status_code != 202:
                    errors.append(response.status_code)
                    continue
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - t0
    if errors and not latencies:
        raise SystemExit(f"every request failed: statuses {sorted(set(errors))}")
    return _figures(latencies, wall, len(errors), tuple(sorted(set(errors))))


def api_posts(url: str, key: str, body: bytes, clients: int, requests: int) -> Figures:
    """``clients`` httpx async tasks posting ``body`` until ``requests`` posts are done."""
    return asyncio.run(_api_posts(url, key, body, clients, requests))


def direct_submits(client: Any, body: bytes, clients: int, requests: int) -> Figures:
    """``clients`` threads calling ``JobClient.submit`` in this process (no HTTP) until
    ``requests`` jobs are submitted: the spine's own ingest cost on the same stack."""
    return _threaded(
        lambda: client.submit(body, "detect", subject_id="bench-subject", tenant="bench"),
        clients,
        requests,
    )


def _container(settings: dict[str, Any]) -> Any:
    """A container of the same stack in this process (the ``api__`` overrides left out)."""
    from worker.bootstrap import Container
    from worker.logs import configure_logging
    from worker.settings import load_settings

    configure_logging("WARNING")
    # the store's boto3 client keeps 10 connections (botocore's default): with more threads
    # urllib3 warns on every extra connection it closes
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    return Container(load_settings(**{k: v for k, v in settings.items() if "__" not in k}))


def _env(settings: dict[str, Any]) -> dict[str, str]:
    from tests.workers import settings_env

    return settings_env(settings)


def _create_key(settings: dict[str, Any]) -> str:
    """An API key of tenant ``bench`` with ``jobs:write``, made by the CLI as an operator would."""
    done = subprocess.run(
        [FACEMEDIA, "apikey", "create", "--tenant", "bench", "--scope", "jobs:write", "--json"],
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise SystemExit(f"apikey create failed: {done.stdout}{done.stderr}")
    return str(json.loads(done.stdout.strip().splitlines()[-1])["key"])


def _prepare(settings: dict[str, Any]) -> str:
    """Migrate the ledger and create the bench's API key; return the key."""
    done = subprocess.run(
        [FACEMEDIA, "db", "upgrade", "--json"], env=_env(settings), capture_output=True
    )
    if done.returncode != 0:
        raise SystemExit(f"db upgrade failed: {done.stdout!r}{done.stderr!r}")
    return _create_key(settings)


def main() -> None:
    """Run every measurement in interleaved rounds and print a markdown table (or JSON)."""
    import boto3
    import psycopg
    import redis
    from botocore.config import Config

    from tests.conftest import lease_redis_db, release_redis_db
    from tests.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedServer, new_bucket_name
    from tests.serving import facemedia_serve

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=480, help="per measurement")
    parser.add_argument("--clients", default="16,64")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument(
        "--no-direct", dest="direct", action="store_false", help="skip the in-process submits"
    )
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        default=None,
        help="also measure a 1-worker server of another source tree (a directory holding its "
        "worker/ and pipelines/, e.g. `git archive HEAD worker pipelines | tar -x -C DIR`), "
        "started with PYTHONPATH=DIR on the same ledger, broker and bucket: before and after "
        "in one run",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    client_counts = [int(c) for c in args.clients.split(",")]
    worker_counts = [int(w) for w in args.workers.split(",") if w]  # "": the raw puts only
    photo = _photo_1mp()
    load_start = os.getloadavg()
    os.environ["AWS_ACCESS_KEY_ID"] = ACCESS_KEY  # `facemedia serve` inherits them
    os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET_KEY
    broker_url = lease_redis_db()  # a database no test run uses meanwhile
    if broker_url is None:
        raise SystemExit("every Redis database the tests may use is leased")
    broker = redis.Redis.from_url(broker_url)
    db = f"fm_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    samples: dict[tuple[str, int], list[Figures]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
            seaweed = stack.enter_context(SeaweedServer(Path(tmp) / "store"))
            endpoint = seaweed.endpoint
            meter = CpuMeter(None if seaweed.process is None else seaweed.process.pid, db)
            s3 = boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name=REGION,
                config=Config(max_pool_connections=max(client_counts)),
            )
            bucket = new_bucket_name("bench")
            s3.create_bucket(Bucket=bucket)
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
            big = 10 * max(client_counts)
            settings: dict[str, Any] = {
                "home": Path(tmp) / "var",
                "database_url": f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
                "broker_url": broker_url,
                "store_url": f"s3://{bucket}/v1",
                "s3_endpoint_url": endpoint,
                "s3_region": REGION,
                "store_region": REGION,  # SeaweedFS has no regions
                "api__rate_per_second": 1_000_000,
                "api__burst": 1_000_000,
                "api__max_concurrent_uploads": big,
            }
            key = _prepare(settings) if worker_counts else ""
            served = {
                w: stack.enter_context(
                    facemedia_serve(
                        _env(settings),
                        Path(tmp) / f"serve-{w}.log",
                        workers=w,
                        ready_s=START_TIMEOUT,
                    )
                )
                for w in worker_counts
            }
            names = {w: f"POST /v1/jobs, {w} worker{'s' if w > 1 else ''}" for w in served}
            if args.baseline_tree is not None and worker_counts:
                env = dict(_env(settings), PYTHONPATH=str(args.baseline_tree.resolve()))
                served[0] = stack.enter_context(
                    facemedia_serve(env, Path(tmp) / "serve-baseline.log", ready_s=START_TIMEOUT)
                )
                names[0] = "POST /v1/jobs, 1 worker, baseline tree"
            urls = {w: one.url for w, one in served.items()}
            paths: list[tuple[str, Any]] = [
                ("raw put (boto3)", lambda c, n: raw_puts(s3, bucket, photo, c, n))
            ]
            if args.direct and worker_counts:
                direct = _container(settings)
                stack.callback(direct.close)
                paths.append(
                    (DIRECT, lambda c, n: direct_submits(direct.client, photo, c, n)),
                )
            for w, url in urls.items():
                paths.append((names[w], lambda c, n, url=url: api_posts(url, key, photo, c, n)))
            for _, run in paths:  # warm: connections, imports, the subject's row
                for c in client_counts:
                    run(c, 2 * c)
            server_of = {names[w]: one.pid for w, one in served.items()}
            for r in range(args.rounds):
                order = paths if r % 2 == 0 else paths[::-1]
                for c in client_counts:
                    for name, run in order:
                        meter.server_pids = [server_of[name]] if name in server_of else []
                        before = meter.sample()
                        figures = run(c, args.requests)
                        cpu = CpuMeter.per_request(before, meter.sample(), args.requests)
                        samples.setdefault((name, c), []).append(
                            dataclasses.replace(figures, cpu_ms=cpu)
                        )
            queued = broker.llen("media")
    finally:
        release_redis_db(broker_url)
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    load_end = os.getloadavg()
    report(samples, args, photo, queued, load_start, load_end)


def _median(figs: list[Figures]) -> Figures:
    return Figures(
        rate=statistics.median(f.rate for f in figs),
        p50_ms=statistics.median(f.p50_ms for f in figs),
        p99_ms=statistics.median(f.p99_ms for f in figs),
        errors=sum(f.errors for f in figs),
        error_codes=tuple(sorted({c for f in figs for c in f.error_codes})),
        cpu_ms=tuple(
            (role, statistics.median(dict(f.cpu_ms).get(role, 0.0) for f in figs))
            for role, _ in figs[0].cpu_ms
        ),
    )


def report(
    samples: dict[tuple[str, int], list[Figures]],
    args: argparse.Namespace,
    photo: bytes,
    queued: int,
    load_start: tuple[float, float, float],
    load_end: tuple[float, float, float],
) -> None:
    """Print the medians and the ratios to the raw put at the same concurrency."""
    medians = {k: _median(v) for k, v in samples.items()}
    raw = {c: f for (name, c), f in medians.items() if name.startswith("raw")}
    if args.json:
        rows = [
            {
                "path": name,
                "clients": c,
                **asdict(f),
                "rate_ratio": f.rate / raw[c].rate,
                "p99_ratio": f.p99_ms / raw[c].p99_ms,
                "rounds": [asdict(x) for x in samples[(name, c)]],
            }
            for (name, c), f in medians.items()
        ]
        print(json.dumps({"photo_bytes": len(photo), "queued": queued, "rows": rows}))
        return
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(
        f"1 MP JPEG ({len(photo):,} bytes), {args.requests} requests per measurement, "
        f"median of {args.rounds} interleaved rounds; SeaweedFS (versioned bucket), PostgreSQL "
        f"ledger, Redis broker with no consumer ({queued} jobs queued at the end).\n"
        f"load average (1/5/15 min) at start {'/'.join(f'{x:.2f}' for x in load_start)}, "
        f"at end {'/'.join(f'{x:.2f}' for x in load_end)}; uptime: {uptime}\n"
    )
    print("| path | clients | req/s | p50 ms | p99 ms | errors | rate vs raw | p99 vs raw |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for c in sorted(raw):
        for (name, cc), f in medians.items():
            if cc != c:
                continue
            codes = ", ".join(map(str, f.error_codes))
            errors = f"{f.errors} ({codes})" if f.errors else "0"
            print(
                f"| {name} | {c} | {f.rate:.1f} | {f.p50_ms:.0f} | {f.p99_ms:.0f} | {errors} "
                f"| {f.rate / raw[c].rate:.2f}x | {f.p99_ms / raw[c].p99_ms:.2f}x |"
            )
    roles = [role for role, _ in next(iter(medians.values())).cpu_ms]
    if roles:
        print("\nCPU per request (ms, median over rounds; user + system time from /proc):\n")
        print("| path | clients | " + " | ".join(roles) + " | total |")
        print("|---|---:|" + "---:|" * (len(roles) + 1))
        for (name, c), f in medians.items():
            cpu = dict(f.cpu_ms)
            cells = " | ".join(f"{cpu.get(role, 0.0):.1f}" for role in roles)
            print(f"| {name} | {c} | {cells} | {sum(cpu.values()):.1f} |")
    print("\nper round (req/s, p99 ms):")
    for (name, c), figs in samples.items():
        print(f"- {name}, {c} clients: " + ", ".join(f"{f.rate:.0f}/{f.p99_ms:.0f}" for f in figs))


if __name__ == "__main__":
    main()
