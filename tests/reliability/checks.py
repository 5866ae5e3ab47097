"""Post-run checks shared by the harness: exactly-once effects, no plaintext, no personal data."""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

from tests.conftest import REGION
from tests.media_signatures import plaintext_hits

IPV4 = re.compile(rb"\b(?:\d{1,3}\.){3}\d{1,3}\b")
REPORT = os.environ.get("FACEMEDIA_TEST_REL_REPORT", "")


def report(kind: str, **figures: Any) -> None:
    """Print a figure line and append it to $FACEMEDIA_TEST_REL_REPORT (JSON lines) when set."""
    line = json.dumps({"kind": kind, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ"), **figures})
    print(line)
    if REPORT:
        with open(REPORT, "a") as fh:
            fh.write(line + "\n")


def all_versions(endpoint: str, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    found: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        found += page.get("Versions", []) + page.get("DeleteMarkers", [])
    return found


def assert_exactly_once(container: Any, job_ids: Iterable[str], endpoint: str, bucket: str) -> None:
    """Each job: one recorded output set (at least one output, each name recorded once), one
    succeeded transition, one verified receipt for its original; no version of any original
    left in the bucket."""
    from sqlalchemy import select

    from worker.ledger.models import AuditEntry, DeletionReceipt, StoredObject

    ids = list(job_ids)
    with container.db.session() as s:
        outputs = Counter(
            (o.job_id, o.name)
            for o in s.scalars(
                select(StoredObject).where(
                    StoredObject.job_id.in_(ids), StoredObject.object_class == "output"
                )
            )
        )
        originals = {
            o.id: o.job_id
            for o in s.scalars(
                select(StoredObject).where(
                    StoredObject.job_id.in_(ids), StoredObject.object_class == "original"
                )
            )
        }
        receipts = list(
            s.scalars(select(DeletionReceipt).where(DeletionReceipt.object_id.in_(originals)))
        )
        succeeded = Counter(
            e.entity
            for e in s.scalars(
                select(AuditEntry).where(
                    AuditEntry.event == "job.succeeded", AuditEntry.entity.in_(ids)
                )
            )
        )
    assert {j for j, _ in outputs} == set(ids), set(ids) - {j for j, _ in outputs}
    assert all(n == 1 for n in outputs.values()), {k: n for k, n in outputs.items() if n != 1}
    assert all(succeeded[j] == 1 for j in ids), {j: succeeded[j] for j in ids if succeeded[j] != 1}
    assert len(originals) == len(ids)
    assert sorted(r.object_id for r in receipts) == sorted(originals)  # one receipt each
    assert all(r.verified and r.versions_removed >= 1 for r in receipts)
    assert all_versions(endpoint, bucket, "v1/originals/") == []


def assert_no_plaintext(
    endpoint: str, bucket: str, inputs: list[bytes], blobs: Iterable[tuple[str, bytes]] = ()
) -> int:
    """No media signature or 32-byte run of an input in any object version or extra blob.
    Returns how many object versions were scanned."""
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    scanned = 0
    for v in all_versions(endpoint, bucket):
        if "VersionId" not in v or v.get("Size") is None:
            continue  # a delete marker has no body
        body = s3.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
        assert plaintext_hits(body, inputs) == [], v["Key"]
        scanned += 1
    for name, blob in blobs:
        hits = [h for h in plaintext_hits(blob, inputs) if h != "json-faces"]
        assert hits == [], name
    return scanned


def files_under(root: Path, since: float) -> list[Path]:
    """Regular files under ``root`` modified at or after ``since`` (best effort)."""
    found: list[Path] = []
    for dirpath, _dirs, files in os.walk(root, onerror=lambda e: None):
        for f in files:
            p = Path(dirpath) / f
            try:
                if p.is_file() and not p.is_symlink() and p.stat().st_mtime >= since:
                    found.append(p)
            except OSError:
                continue
    return found


def distinctive(data: bytes) -> bytes:
    """The middle half of an input: its coded content, without the container and encoder
    boilerplate every file of its format shares (an OpenCV JPEG's header and tables, x264's
    options string, an MP4's ``moov``). Scanning files written by other processes for runs of
    the whole input finds that boilerplate in any plaintext MP4 or JPEG, e.g. another test's."""
    return data[len(data) // 4 : 3 * len(data) // 4]


def assert_no_input_in_files(paths: Iterable[Path], inputs: list[bytes]) -> int:
    """No 32-byte run of an input in any of ``paths`` (readable ones, < 256 MiB)."""
    n = 0
    for p in paths:
        try:
            if p.stat().st_size > 256 * 1024 * 1024:
                continue
            blob = p.read_bytes()
        except OSError:
            continue
        n += 1
        hits = [h for h in plaintext_hits(blob, inputs) if h.startswith("input")]
        assert hits == [], str(p)
    return n


def assert_logs_clean(log: bytes, secrets: Iterable[str]) -> int:
    """Personal-data scan: no secret string anywhere in the log; no IPv4 address in any of the
    project's JSON log lines (Celery's own banner names the broker's address). Returns the
    number of project log lines checked."""
    for secret in secrets:
        assert secret.encode() not in log, secret
    checked = 0
    for line in log.splitlines():
        if line.startswith(b"{") and b'"event"' in line:
            checked += 1
            assert not IPV4.search(line), line[:200]
    return checked


DELIVERY_EVENTS = frozenset({"job.claimed", "job.leased_elsewhere"})


def delivery_times(log: bytes) -> dict[str, list[datetime]]:
    """job id → the times a worker logged a delivery of it (structlog JSON lines with
    ``job.claimed`` or ``job.leased_elsewhere``); other lines are ignored."""
    seen: dict[str, list[datetime]] = {}
    for line in log.splitlines():
        if not line.startswith(b"{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") in DELIVERY_EVENTS and entry.get("job_id") and entry.get("timestamp"):
            when = datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00"))
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seen.setdefault(str(entry["job_id"]), []).append(when)
    return seen
