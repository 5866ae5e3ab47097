"""S3Store against a SeaweedFS server over HTTP: streaming multipart put, versions, batch delete,
the region the store reports (none) and the one the operator declares."""

from __future__ import annotations

import io
import os
from typing import Any

import boto3
import pytest

from tests.conftest import REGION
from worker.storage.errors import InvalidKey, ObjectMissing
from worker.storage.s3 import S3Store


@pytest.fixture
def store(s3_endpoint: str, s3_bucket: str) -> S3Store:
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
    return S3Store(client, s3_bucket, "pre", part_size=5 * 1024 * 1024)


class _Trickle(io.RawIOBase):
    """A non-seekable stream that hands out at most 1000 bytes per call."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), 1000, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def test_multipart_put_streams_and_returns_the_version(store: S3Store) -> None:
    data = os.urandom(12 * 1024 * 1024 + 17)  # three parts of 5 MiB
    put = store.put("outputs/a/big", _Trickle(data))
    assert put.size == len(data) and put.version_id
    with store.get("outputs/a/big") as body:
        assert body.read() == data
    small = store.put("outputs/a/small", io.BytesIO(b"tiny"))
    assert small.size == 4 and small.version_id


def test_batch_delete_with_known_and_unknown_versions(store: S3Store) -> None:
    first = store.put("outputs/b/x", io.BytesIO(b"1"))
    store.put("outputs/b/x", io.BytesIO(b"2"))  # a version the caller does not know
    store.put("outputs/b/y", io.BytesIO(b"3"))
    assert first.version_id is not None
    results = store.delete_many(["outputs/b/x", "outputs/b/y"], {"outputs/b/x": [first.version_id]})
    assert results["outputs/b/x"].verified and results["outputs/b/x"].versions_removed == 2
    assert results["outputs/b/y"].verified
    assert list(store.keys()) == []
    with pytest.raises(ObjectMissing):
        store.get("outputs/b/x")


@pytest.mark.parametrize("key", ["../etc/passwd", "outputs/../x", "/abs", "Outputs/X", "a//b", ""])
def test_keys_are_opaque_ids_only(store: S3Store, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.put(key, io.BytesIO(b"x"))


def test_a_batch_listing_starts_at_its_first_key(s3_endpoint: str, s3_bucket: str) -> None:
    """Older keys that sort before a batch (kept longer, held) are not listed for it."""
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
    store = S3Store(client, s3_bucket, "pre")
    for n in range(12):  # older ids under the same prefix, still there
        store.put(f"outputs/a{n:02d}", io.BytesIO(b"old"))
    store.put("outputs/b1", io.BytesIO(b"1"))
    store.put("outputs/c2", io.BytesIO(b"2"))  # the batch's common prefix is pre/outputs/
    listed: list[str] = []

    def record(parsed: dict[str, Any], **_: Any) -> None:
        listed.extend(
            v["Key"] for v in parsed.get("Versions", []) + parsed.get("DeleteMarkers", [])
        )

    client.meta.events.register("after-call.s3.ListObjectVersions", record)
    results = store.delete_many(["outputs/b1", "outputs/c2"])  # versions unknown: listed
    assert all(r.verified and r.versions_removed == 1 for r in results.values())
    assert listed and min(listed) >= "pre/outputs/b1", listed
    assert sorted(store.keys()) == [f"outputs/a{n:02d}" for n in range(12)]


def test_region_of_a_store_without_regions(s3_endpoint: str, s3_bucket: str) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
    assert S3Store(client, s3_bucket).info().region == "us-east-1"  # none means that on AWS
    declared = S3Store(client, s3_bucket, declared_region=REGION).info()
    assert declared.region == REGION and declared.versioned
