"""A store on any S3-compatible endpoint (AWS S3, SeaweedFS, MinIO, OSS/COS) through boto3."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, BinaryIO
from urllib.parse import urlparse

from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

from worker.storage.base import (
    DeleteResult,
    ObjectStore,
    PutResult,
    StoreEntry,
    StoreInfo,
    check_key,
    listed,
)
from worker.storage.errors import (
    ObjectMissing,
    RegionNotAllowed,
    StorageError,
    TransientStorageError,
)

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


#: The first buffer a part is read into; it doubles as the bytes keep coming (up to the part
#: size). A photo is a few hundred KiB: zero-filling a whole part (8 MiB) for it cost more CPU
#: than the upload itself (bench/api_bench.py, docs/BENCHMARKS.md).
FIRST_READ = 256 * 1024


def _read_full(body: BinaryIO, size: int, initial: int = FIRST_READ) -> bytearray:
    """Read ``size`` bytes (fewer only at the end of the stream) into one buffer, with
    ``readinto`` when the stream has it (no intermediate ``bytes`` copies). The buffer starts at
    ``initial`` bytes and doubles while it fills, so a small object costs a small buffer."""
    buf = bytearray(min(size, initial))
    view = memoryview(buf)
    got = 0
    readinto = getattr(body, "readinto", None)
    while got < size:
        if got == len(buf):
            view.release()  # a bytearray with a live view cannot grow
            buf.extend(bytes(min(len(buf), size - len(buf))))
            view = memoryview(buf)
        if readinto is not None:
            n = readinto(view[got:])
        else:
            chunk = body.read(len(buf) - got)
            n = len(chunk)
            view[got : got + n] = chunk
        if not n:
            break
        got += n
    view.release()
    del buf[got:]
    return buf


class S3Store(ObjectStore):
    """Objects under ``prefix/`` in ``bucket``; the client is injected (s3transfer style)."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        part_size: int = 8 * 1024 * 1024,
        verify_by_listing: bool = True,
        declared_region: str = "",
    ) -> None:
        self.client = client
        self.declared_region = declared_region
        self.verify_by_listing = verify_by_listing
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = part_size

    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _short(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def put(self, key: str, body: BinaryIO) -> PutResult:
        """Streaming upload, one part in memory at a time (PutObject up to one part, multipart
        beyond); no metadata, no tags. Returns the new version id, which the ledger keeps so a
        later delete needs no listing."""
        full = self._full(key)
        first = _read_full(body, self.part_size)
        with _translate():
            if len(first) < self.part_size:
                response = self.client.put_object(Bucket=self.bucket, Key=full, Body=first)
                return PutResult(len(first), response.get("VersionId"))
            upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=full)
        upload_id = upload["UploadId"]
        parts: list[dict[str, Any]] = []
        size = 0
        try:
            chunk = first
            while chunk:
                with _translate():
                    part = self.client.upload_part(
                        Bucket=self.bucket,
                        Key=full,
                        UploadId=upload_id,
                        PartNumber=len(parts) + 1,
                        Body=chunk,
                    )
                parts.append({"ETag": part["ETag"], "PartNumber": len(parts) + 1})
                size += len(chunk)
                chunk = _read_full(body, self.part_size, self.part_size)  # a full part is due
            with _translate():
                done = self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            with _translate():
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            raise
        return PutResult(size, done.get("VersionId"))

    def get(self, key: str) -> BinaryIO:
        """The object's streaming body."""
        with _translate():
            response = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
        body: BinaryIO = response["Body"]
        return body

    def object_lock(self) -> dict[str, Any] | None:
        """The bucket's Object Lock default retention (``{}`` if enabled with no default rule),
        or None when the bucket has no Object Lock (GetObjectLockConfiguration)."""
        if not hasattr(self, "_lock_config"):
            try:
                with _translate():
                    cfg = self.client.get_object_lock_configuration(Bucket=self.bucket)
            except StorageError:  # ObjectLockConfigurationNotFoundError, or not allowed to ask
                found: dict[str, Any] | None = None
            else:
                conf = cfg.get("ObjectLockConfiguration", {})
                enabled = conf.get("ObjectLockEnabled") == "Enabled"
                found = dict(conf.get("Rule", {}).get("DefaultRetention", {})) if enabled else None
            self._lock_config = found
        return self._lock_config

    def put_retained(self, key: str, data: bytes, retain_until: datetime) -> PutResult:
        """PutObject with Content-MD5; on an Object Lock bucket also ObjectLockMode (the
        bucket's default mode, else COMPLIANCE) and ObjectLockRetainUntilDate."""
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._full(key),
            "Body": data,
            "ContentMD5": base64.b64encode(
                hashlib.md5(data, usedforsecurity=False).digest()
            ).decode(),
        }
        lock = self.object_lock()
        if lock is not None:
            args["ObjectLockMode"] = lock.get("Mode", "COMPLIANCE")
            args["ObjectLockRetainUntilDate"] = retain_until
        with _translate():
            response = self.client.put_object(**args)
        return PutResult(len(data), response.get("VersionId"))

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

        One listing walks the key range from the first key to the last: with time-ordered ids,
        the keys due together are neighbours, so a batch of 1000 costs a few pages, not 1000
        requests. Keys whose own range is sparse fall back to a per-key listing.
        """
        wanted = {k: [] for k in fulls}  # type: dict[str, list[dict[str, str]]]
        first, last = fulls[0], fulls[-1]
        common = _common_prefix(first, last)
        paginator = self.client.get_paginator("list_object_versions")
        seen = 0
        with _translate():
            # KeyMarker starts the listing just before ``first``, so keys that sort before it
            # (older ids kept longer, a held subject's objects) are not listed on every batch.
            pages = paginator.paginate(Bucket=self.bucket, Prefix=common, KeyMarker=_before(first))
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

    def delete_many(
        self, keys: Sequence[str], versions: Mapping[str, Sequence[str]] | None = None
    ) -> dict[str, DeleteResult]:
        """Batch delete every version and delete marker; DeleteObjects takes ≤ 1000 per call.

        Keys whose version ids are known (recorded at put time) skip the listing before the
        delete. Verification: with ``verify_by_listing`` (the default) a range listing after the
        delete must show no version or marker of any key, and whatever it still finds (a version
        the ledger never heard of) is deleted in another round; without it, DeleteObjects must
        report no error for any known version, and only keys of unknown versions are listed.
        """
        if not keys:
            return {}
        known = versions or {}
        by_full = {self._full(k): k for k in keys}
        fulls = sorted(by_full)
        unknown = [f for f in fulls if not known.get(by_full[f])]
        targets = self._scan(unknown) if unknown else {}
        for full in fulls:
            if full not in targets:
                targets[full] = [{"Key": full, "VersionId": v} for v in known[by_full[full]]]
        removed: dict[str, int] = dict.fromkeys(fulls, 0)
        confirmed: set[tuple[str, str]] = set()
        requested = {f: list(v) for f, v in targets.items()}
        checked = fulls if self.verify_by_listing else unknown
        left: dict[str, list[dict[str, str]]] = {}
        for _round in range(3):
            self._delete_versions(
                [v for f in fulls for v in targets.get(f, [])], removed, confirmed
            )
            left = self._scan(checked) if checked else {}
            targets = {f: v for f, v in left.items() if v}
            if not targets:
                break
            for f, v in targets.items():
                requested[f] += v
        results = {}
        for full in fulls:
            if full in left:
                ok = not left[full]
            else:
                ok = all((full, v["VersionId"]) in confirmed for v in requested[full])
            results[by_full[full]] = DeleteResult(by_full[full], removed[full], ok)
        return results

    def _delete_versions(
        self,
        doomed: list[dict[str, str]],
        removed: dict[str, int],
        confirmed: set[tuple[str, str]],
    ) -> None:
        """DeleteObjects in calls of ≤ 1000 versions; any per-key error raises.

        ``Quiet``: S3 then reports only the entries that failed, and every entry it does not
        report was deleted. A verbose ``Deleted`` entry would prove no more (a delete of a
        version that does not exist is a success too) and costs the server an XML element per
        version (moto 5.2.5 ignores ``Quiet`` and sends them anyway).
        """
        for start in range(0, len(doomed), _MAX_DELETE):
            batch = doomed[start : start + _MAX_DELETE]
            with _translate():
                response = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            errors = response.get("Errors", [])
            if errors:
                codes = sorted({str(e.get("Code", "")) for e in errors})
                if set(codes) & _TRANSIENT_CODES:
                    raise TransientStorageError(f"delete incomplete ({', '.join(codes)})")
                raise StorageError(f"delete refused ({', '.join(codes)})")
            for entry in batch:
                removed[entry["Key"]] = removed.get(entry["Key"], 0) + 1
                confirmed.add((entry["Key"], entry["VersionId"]))

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
                        if listed(self._short(entry["Key"]), prefix):
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
            if listed(self._short(key), prefix):
                yield StoreEntry(self._short(key), when)

    def info(self) -> StoreInfo:
        """The bucket's region (see :func:`bucket_region`) and whether versioning is enabled."""
        with _translate():
            location = self.client.get_bucket_location(Bucket=self.bucket)
            versioning = self.client.get_bucket_versioning(Bucket=self.bucket)
        region, _source = bucket_region(
            location.get("LocationConstraint"),
            self.declared_region,
            aws=is_aws_endpoint(self.client.meta.endpoint_url),
        )
        return StoreInfo(
            kind="s3",
            location=f"s3://{self.bucket}/{self.prefix}",
            region=region,
            versioned=versioning.get("Status") == "Enabled",
        )


def is_aws_endpoint(url: str | None) -> bool:
    """True for an endpoint of AWS S3 itself (``*.amazonaws.com``, ``*.amazonaws.com.cn``)."""
    host = urlparse(url or "").hostname or ""
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


def bucket_region(
    reported: str | None, declared: str = "", *, aws: bool = False
) -> tuple[str, str]:
    """The region the region guard checks, and where it comes from (for ``doctor``).

    ``reported`` is GetBucketLocation's ``LocationConstraint``. A store that reports a region
    is believed; a ``declared`` region (the ``store_region`` setting) that contradicts it is
    refused. A store that reports none is either AWS S3 in us-east-1 (that is what none means
    there, so a declaration never overrides it on an AWS endpoint) or a store without regions
    (SeaweedFS, MinIO without ``MINIO_REGION``), whose region only the operator can declare.
    """
    if reported:
        if declared and declared != reported:
            raise RegionNotAllowed(
                f"the bucket reports region {reported}, but store_region declares {declared}"
            )
        return reported, "reported by the store (GetBucketLocation)"
    if declared and not aws:
        return declared, "declared by store_region (the store reports no region)"
    return "us-east-1", "the store reports no region, which on AWS S3 means us-east-1"


def _before(key: str) -> str:
    """A KeyMarker just before ``key`` (a non-empty key of the safe shape): ListObjectVersions
    lists the keys after the marker, so the listing starts at ``key``, or at the few keys that
    extend ``key[:-1]`` with a smaller last character (which the caller skips)."""
    return key[:-1] + chr(ord(key[-1]) - 1)


def _common_prefix(a: str, b: str) -> str:
    """The longest common prefix of two strings."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]
