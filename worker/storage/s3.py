"""A store on any S3-compatible endpoint (AWS S3, MinIO, OSS/COS, moto) through boto3."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

from worker.storage.base import DeleteResult, ObjectStore, StoreInfo, check_key
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
        full = self._full(key)
        versions = self._versions(full)
        removed = 0
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
            removed += len(response.get("Deleted", []))
        left = self._versions(full)
        return DeleteResult(key=key, versions_removed=removed, verified=not left)

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
