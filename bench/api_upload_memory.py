"""Bounded memory for a big upload (issue 17): the server's resident memory while it ingests a
500 MB ``PUT /v1/jobs`` (and a 500 MB multipart ``POST``) with the upload limit raised to 1 GiB.

    .venv/bin/python bench/api_upload_memory.py [--mb 500] [--broker URL] [--json]

``facemedia serve`` runs in its own process on a fresh embedded home (SQLite ledger, local store
in a temporary directory) with ``FACEMEDIA_MAX_UPLOAD_BYTES`` = 1 GiB. With ``--broker`` (e.g. a
Redis URL) the server only ingests; without, the embedded default runs the job afterwards on its
background thread, so sampling stops at the 202. A client (httpx, one connection) streams
``--mb`` MB: a JPEG start (so the sniffer accepts it) followed by pseudo-random bytes generated
chunk by chunk (the client holds 1 MiB at a time). The server's RSS (psutil, its whole process
tree) is sampled every 20 ms from a warmed-up baseline (one small upload first) to the 202.

Reported: baseline RSS, peak RSS during the upload, peak - baseline, upload MB/s, the stored
ciphertext size, and whether the request was answered 202. Bounded means the peak growth is a
small constant (a few segments and body chunks), not a fraction of the upload: the figure must
stay far below the upload's size (the run fails if growth exceeds 64 MiB).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.serving
FACEMEDIA = str(Path(sys.executable).with_name("facemedia"))
LIMIT = 1024 * 1024 * 1024
CHUNK = 1024 * 1024
BOUND = 64 * 1024 * 1024
JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
BOUNDARY = "facemediabenchboundary"


def _env(home: Path, broker: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEMEDIA_")}
    env.update(
        FACEMEDIA_HOME=str(home),
        FACEMEDIA_MAX_UPLOAD_BYTES=str(LIMIT),
        FACEMEDIA_BROKER_URL=broker,
        FACEMEDIA_API__REQUEST_TIMEOUT_S="1800",
        FACEMEDIA_LOG_LEVEL="WARNING",
    )
    return env


@contextlib.contextmanager
def _server(home: Path, broker: str) -> Iterator[tuple[str, Any, str]]:
    """``facemedia serve`` on a free port; (url, its psutil process, an API key)."""
    import psutil

    from tests.serving import facemedia_serve

    env = _env(home, broker)
    created = subprocess.run(
        [FACEMEDIA, "apikey", "create", "--tenant", "bench", "--scope", "jobs:write",
         "--scope", "jobs:read", "--json"],
        env=env, cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    key = json.loads(created.stdout)["key"]
    with facemedia_serve(env, home / "server.log") as served:
        yield served.url, psutil.Process(served.pid), key


def _rss(proc: Any) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(Exception):
            total += int(p.memory_info().rss)
    return total


class _Sampler(threading.Thread):
    def __init__(self, proc: Any) -> None:
        super().__init__(daemon=True)
        self.proc, self.peak, self.stop = proc, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, _rss(self.proc))
            time.sleep(0.02)


def _media(total: int) -> Iterator[bytes]:
    """``total`` bytes: a JPEG start, then pseudo-random chunks (1 MiB held at a time)."""
    import hashlib

    yield JPEG_HEAD
    sent, counter = len(JPEG_HEAD), 0
    seed = os.urandom(32)
    while sent < total:
        block = bytearray()
        while len(block) < CHUNK:
            block += hashlib.sha512(seed + counter.to_bytes(8, "big")).digest() * 64
            counter += 1
        piece = bytes(block[: min(CHUNK, total - sent)])
        sent += len(piece)
        yield piece


def _multipart(total: int) -> Iterator[bytes]:
    head = "".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{n}"\r\n\r\n{v}\r\n'
        for n, v in (("job", "detect"), ("subject", "bench-subject"))
    )
    yield (head + f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"\r\n\r\n').encode()
    yield from _media(total)
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def _measure(url: str, proc: Any, key: str, size: int, kind: str) -> dict[str, Any]:
    import httpx

    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, timeout=1800) as http:
        # warm-up: one small upload so imports and pools are in the baseline
        small = http.put(
            "/v1/jobs",
            headers={**auth, "Facemedia-Job": "detect", "Facemedia-Subject": "warm"},
            content=JPEG_HEAD + bytes(4096),
        )
        assert small.status_code == 202, small.text
        time.sleep(2.0)  # let the embedded default's background job for it finish
        baseline = _rss(proc)
        sampler = _Sampler(proc)
        sampler.start()
        started = time.monotonic()
        if kind == "put":
            response = http.put(
                "/v1/jobs",
                headers={**auth, "Facemedia-Job": "detect", "Facemedia-Subject": "bench-subject"},
                content=_media(size),
            )
        else:
            response = http.post(
                "/v1/jobs",
                headers={**auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                content=_multipart(size),
            )
        elapsed = time.monotonic() - started
        sampler.stop.set()
        sampler.join()
        if response.status_code == 202:  # the embedded default runs the job now: let it end
            job = response.json()["job_id"]
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                status = http.get(f"/v1/jobs/{job}", headers=auth).json().get("status")
                if status not in ("queued", "processing"):
                    break
                time.sleep(0.5)
    return {
        "kind": kind,
        "status": response.status_code,
        "upload_mb": round(size / 1e6, 1),
        "seconds": round(elapsed, 2),
        "mb_per_s": round(size / 1e6 / elapsed, 1),
        "baseline_rss_mib": round(baseline / 2**20, 1),
        "peak_rss_mib": round(sampler.peak / 2**20, 1),
        "growth_mib": round((sampler.peak - baseline) / 2**20, 1),
    }


def main() -> int:
    """Run the measurement and print it; exit 1 if memory grew past the bound."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=500, help="upload size, MB (10^6 bytes)")
    parser.add_argument("--broker", default="", help="broker URL (default: embedded)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    size = args.mb * 1_000_000
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fm-upload-mem-") as tmp:
        home = Path(tmp) / "var"
        with _server(home, args.broker) as (url, proc, key):
            results = [_measure(url, proc, key, size, kind) for kind in ("put", "post")]
        stored = sum(p.stat().st_size for p in (home / "store").rglob("*") if p.is_file())
    report = {
        "limit_bytes": LIMIT,
        "broker": args.broker or "embedded",
        "results": results,
        "store_bytes_after": stored,
        "loadavg": [round(x, 2) for x in load],
        "bound_mib": BOUND / 2**20,
    }
    ok = all(r["status"] == 202 and r["growth_mib"] * 2**20 < BOUND for r in results)
    if args.json:
        print(json.dumps(report))
    else:
        for r in results:
            print(
                f"{r['kind']:>4}: {r['upload_mb']} MB in {r['seconds']} s ({r['mb_per_s']} MB/s), "
                f"HTTP {r['status']}; RSS baseline {r['baseline_rss_mib']} MiB, "
                f"peak {r['peak_rss_mib']} MiB, growth {r['growth_mib']} MiB"
            )
        print(f"load average {report['loadavg']}; bound {report['bound_mib']} MiB: "
              f"{'OK' if ok else 'EXCEEDED'}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
