"""What every part of the release service shares.

Owns: the request, result and configuration types of the façade; :class:`ReleaseContext`, the
service's dependencies with the few operations every part needs (load a release row, unwrap its
keys, build its cipher, record and put a release object, read one back, delete a prefix through
the deleter); and the per-release pseudonyms (HMAC under the release's pseudonym key).
"""

from __future__ import annotations

import hashlib
import hmac
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO, cast

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from worker.crypto import KekRef, Keyring, SecretKey, WrappedKey
from worker.ids import new_id
from worker.ledger.db import Database
from worker.ledger.models import Release, StoredObject
from worker.retention.deleter import Deleter, Doomed
from worker.storage.base import ObjectStore
from worker.storage.vault import Vault

from .errors import ReleaseError
from .format import HashingReader
from .keys import ReleaseCipher, release_key_context
from .signing import SigningKeys

__all__ = [
    "ReleaseConfig",
    "ReleaseContext",
    "ReleaseKeys",
    "ReleaseRequest",
    "ReleaseResult",
    "sample_pseudonym",
    "subject_pseudonym",
    "utcnow",
]


def utcnow() -> datetime:
    """UTC now."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class ReleaseRequest:
    """What to release: a unique name, k (None: the configured default), an operator filter."""

    name: str
    k: int | None = None
    operator: str | None = None
    max_suppression: float = 0.1


@dataclass(frozen=True)
class ReleaseResult:
    """What ``research release`` prints."""

    release_id: str
    name: str
    status: str
    samples: int
    k_achieved: int
    suppressed: int
    shards: int

    def to_json(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "release_id": self.release_id,
            "name": self.name,
            "status": self.status,
            "samples": self.samples,
            "k_achieved": self.k_achieved,
            "suppressed": self.suppressed,
            "shards": self.shards,
        }


@dataclass(frozen=True)
class ReleaseConfig:
    """Defaults from ``[research]``."""

    default_k: int = 5
    shard_samples: int = 256
    segment_size: int = 65536
    max_sample_bytes: int = 512 * 1024 * 1024


@dataclass(frozen=True)
class ReleaseKeys:
    """A release's unwrapped data and pseudonym keys."""

    data: SecretKey = field(repr=False)
    pseudonym: SecretKey = field(repr=False)


def subject_pseudonym(key: SecretKey, subject_id: str) -> str:
    """HMAC-SHA256(release pseudonym key, subject row id), hex."""
    return hmac.new(key.raw(), subject_id.encode(), hashlib.sha256).hexdigest()


def sample_pseudonym(key: SecretKey, sample_id: str) -> str:
    """The release-specific sample id: HMAC-SHA256(key, "sample:" ‖ id), 32 hex."""
    return hmac.new(key.raw(), b"sample:" + sample_id.encode(), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class ReleaseContext:
    """The release service's dependencies, and the operations every part of it shares."""

    db: Database
    store: ObjectStore
    vault: Vault
    keyring: Keyring
    signing: SigningKeys
    deleter: Deleter
    config: ReleaseConfig
    clock: Callable[[], datetime] = utcnow

    # ----- rows and keys -----------------------------------------------------------------------

    def load(self, release_id: str) -> Release:
        """The release row (detached); ``not_found`` if there is none."""
        with self.db.session() as s:
            row = s.get(Release, release_id)
            if row is None:
                raise ReleaseError("not_found", "no such release")
            s.expunge(row)
            return row

    def keys(self, row: Release) -> ReleaseKeys:
        """Unwrap the release's data and pseudonym keys."""
        kek = KekRef(row.keyring_id, row.kek_version)
        data = self.keyring.unwrap(
            WrappedKey(kek, row.wrapped_data_key), release_key_context(row.id, "data")
        )
        pseud = self.keyring.unwrap(
            WrappedKey(kek, row.wrapped_pseudonym_key), release_key_context(row.id, "pseudonym")
        )
        return ReleaseKeys(SecretKey(data), SecretKey(pseud))

    def cipher(self, release_id: str, keys: ReleaseKeys) -> ReleaseCipher:
        """The cipher of the release's objects under its data key."""
        return ReleaseCipher(release_id, keys.data, self.config.segment_size)

    # ----- objects -----------------------------------------------------------------------------

    def record(self, key: str, size: int | None, content_type: str | None = None) -> None:
        """A ``release`` object row for ``key`` (kept until the release is revoked)."""
        with self.db.session() as s:
            row = s.scalars(select(StoredObject).where(StoredObject.key == key)).first()
            t = self.clock()
            if row is None:
                try:
                    with s.begin_nested():
                        s.add(
                            StoredObject(
                                id=new_id(),
                                key=key,
                                object_class="release",
                                name=key.rsplit("/", 1)[-1][:64],
                                content_type=content_type,
                                size=size,
                                created_at=t,
                                stored_at=t,
                                expires_at=None,
                            )
                        )
                except IntegrityError:
                    pass
            else:
                row.size = size
                row.stored_at = t
                row.deleted_at = None

    def put(
        self, key: str, body: BinaryIO | bytes, content_type: str | None = None
    ) -> tuple[str, int]:
        """Record then put ``body`` (already encrypted or public); (sha256, size) of the bytes."""
        self.record(key, None, content_type)
        src = io.BytesIO(body) if isinstance(body, bytes) else body
        hashing = HashingReader(src)
        self.store.put(key, cast(BinaryIO, hashing))
        self.record(key, hashing.size, content_type)
        return hashing.sha.hexdigest(), hashing.size

    def get(self, key: str) -> bytes:
        """The stored bytes of ``key``."""
        stream = self.store.get(key)
        try:
            return stream.read()
        finally:
            stream.close()

    def delete_prefix(self, prefix: str, reason: str) -> int:
        """Delete every live object under ``prefix`` through the deleter; the count deleted."""
        with self.db.session() as s:
            rows = s.scalars(
                select(StoredObject).where(
                    StoredObject.key.like(prefix + "%"), StoredObject.deleted_at.is_(None)
                )
            )
            doomed = [Doomed.of(r) for r in rows]
        deleted = 0
        for start in range(0, len(doomed), 1000):
            deleted += self.deleter.delete(doomed[start : start + 1000], reason).deleted
        return deleted
