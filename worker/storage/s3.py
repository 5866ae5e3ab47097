"""A store on any S3-compatible endpoint (AWS S3, MinIO, OSS/COS, moto) through boto3."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, BinaryIO

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

from worker.storage.base import DeleteResult, ObjectStore, StoreEntry, StoreInfo, check_key
from worker.storage.errors import ObjectMissing, StorageError, TransientStorageError

_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "503",
        "500",
    }
)
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_MAX_DELETE = 1000  # DeleteObjects takes at most 1000 keys per call


@contextmanager
def _translate() -> Iterator[None]:
    """Map botocore failures onto the store's errors (transient ones are retried upstream)."""
    try:
        yield
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _MISSING_CODES:
            raise ObjectMissing("object not found") from None
        if code in _TRANSIENT_CODES or status >= 500:
            raise TransientStorageError(f"storage unavailable ({code or status})") from exc
        raise StorageError(f"storage request refused ({code or status})") from exc
    except (ConnectionError, HTTPClientError) as exc:
        raise TransientStorageError(f"storage connection failed ({type(exc).__name__})") from exc
    except BotoCoreError as exc:
        raise StorageError(f"storage client error ({type(exc).__name__})") from exc


class _Counting:
    """Wraps a readable stream and counts the bytes read (for put's return value)."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self.count += len(data)
        return data


class S3Store(ObjectStore):
    """Objects under ``prefix/`` in ``bucket``; the client is injected (s3transfer style)."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        transfer: TransferConfig | None = None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.transfer = transfer or TransferConfig(
            multipart_threshold=8 * 1024 * 1024,
            multipart_chunksize=8 * 1024 * 1024,
            max_concurrency=2,
        )

    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _short(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def put(self, key: str, body: BinaryIO) -> int:
        """Streaming (multipart above 8 MiB) upload; no metadata, no tags: nothing but bytes."""
        counting = _Counting(body)
        with _translate():
            self.client.upload_fileobj(counting, self.bucket, self._full(key), Config=self.transfer)
        return counting.count

    def get(self, key: str) -> BinaryIO:
        """The object's streaming body."""
        with _translate():
            response = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
        body: BinaryIO = response["Body"]
        return body

    def _versions(self, full: str) -> list[dict[str, str]]:
        """Every version and delete marker of exactly ``full`` (not of longer keys)."""
        found: list[dict[str, str]] = []
        paginator = self.client.get_paginator("list_object_versions")
        with _translate():
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for entry in page.get("Versions", []) + page.get("DeleteMarkers", []):
                    if entry["Key"] == full:
                        found.append({"Key": full, "VersionId": entry["VersionId"]})
        return found

    def delete(self, key: str) -> DeleteResult:
        """Delete every version and delete marker, check per-key errors, verify by listing."""
        return self.delete_many([key])[key]

    def _scan(self, fulls: Sequence[str]) -> dict[str, list[dict[str, str]]]:
        """Every version and delete marker of each of ``fulls`` (sorted full keys).

        One listing walks the key range up to the last key: with time-ordered ids,
        the keys due together are neighbours, so a batch of 1000 costs a few pages, not 1000
        requests. Keys whose own range is sparse fall back to a per-key listing.
        """
        wanted = {k: [] for k in fulls}  # type: dict[str, list[dict[str, str]]]
        first, last = fulls[0], fulls[-1]
        common = _common_prefix(first, last)
        paginator = self.client.get_paginator("list_object_versions")
        seen = 0
        with _translate():
            # Prefix only, no KeyMarker: moto's server mishandles KeyMarker on versioned
            # listings (drops versions of the first key). Keys before ``first`` under the
            # common prefix are older ids, normally deleted already, so this costs little.
            pages = paginator.paginate(Bucket=self.bucket, Prefix=common)
            for page in pages:
                done = False
                for entry in page.get("Versions", []) + page.get("DeleteMarkers", []):
                    key = entry["Key"]
                    if key > last:
                        done = True
                        continue
                    seen += 1
                    if key < first:
                        continue
                    if key in wanted:
                        wanted[key].append({"Key": key, "VersionId": entry["VersionId"]})
                if done or seen > 20 * _MAX_DELETE:
                    break
        if seen > 20 * _MAX_DELETE:  # a sparse range: probe each key instead
            return {k: self._versions(k) for k in fulls}
        return wanted

    def delete_many(self, keys: Sequence[str]) -> dict[str, DeleteResult]:
        """Batch delete: one range listing, DeleteObjects in 1000-version calls, per-key errors
        checked, then a second listing to verify that no version or marker is left."""
        if not keys:
            return {}
        by_full = {self._full(k): k for k in keys}
        fulls = sorted(by_full)
        found = self._scan(fulls)
        versions = [v for full in fulls for v in found[full]]
        removed: dict[str, int] = dict.fromkeys(fulls, 0)
        for start in range(0, len(versions), _MAX_DELETE):
            batch = versions[start : start + _MAX_DELETE]
            with _translate():
                response = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": False}
                )
            errors = response.get("Errors", [])
            if errors:
                codes = sorted({str(e.get("Code", "")) for e in errors})
                if set(codes) & _TRANSIENT_CODES:
                    raise TransientStorageError(f"delete incomplete ({', '.join(codes)})")
                raise StorageError(f"delete refused ({', '.join(codes)})")
            for deleted in response.get("Deleted", []):
                removed[deleted["Key"]] = removed.get(deleted["Key"], 0) + 1
        left = self._scan(fulls)
        return {
            by_full[full]: DeleteResult(
                key=by_full[full], versions_removed=removed[full], verified=not left[full]
            )
            for full in fulls
        }

    def exists(self, key: str) -> bool:
        """True while any version or delete marker of the key remains."""
        return bool(self._versions(self._full(key)))

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every key with a version left under ``prefix`` (delete markers included)."""
        full_prefix = self._full(prefix.rstrip("/")) if prefix else self.prefix
        seen: set[str] = set()
        paginator = self.client.get_paginator("list_object_versions")
        with _translate():
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                for entry in page.get("Versions", []) + page.get("DeleteMarkers", []):
                    if entry["Key"] not in seen:
                        seen.add(entry["Key"])
                        yield self._short(entry["Key"])

    def entries(self, prefix: str = "") -> Iterator[StoreEntry]:
        """Every key under ``prefix`` with the time of its newest version or marker."""
        full_prefix = self._full(prefix.rstrip("/")) if prefix else self.prefix
        newest: dict[str, datetime] = {}
        paginator = self.client.get_paginator("list_object_versions")
        with _translate():
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                for entry in page.get("Versions", []) + page.get("DeleteMarkers", []):
                    key, when = entry["Key"], entry["LastModified"]
                    if key not in newest or when > newest[key]:
                        newest[key] = when
        for key, when in sorted(newest.items()):
            yield StoreEntry(self._short(key), when)

    def info(self) -> StoreInfo:
        """The bucket's region (GetBucketLocation) and whether versioning is enabled."""
        with _translate():
            location = self.client.get_bucket_location(Bucket=self.bucket)
            versioning = self.client.get_bucket_versioning(Bucket=self.bucket)
        region = location.get("LocationConstraint") or "us-east-1"
        return StoreInfo(
            kind="s3",
            location=f"s3://{self.bucket}/{self.prefix}",
            region=str(region),
            versioned=versioning.get("Status") == "Enabled",
        )


def _common_prefix(a: str, b: str) -> str:
    """The longest common prefix of two strings."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]
