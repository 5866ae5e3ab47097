"""What every part of the release service shares.

Owns: the request, result and configuration types of the façade; :class:`ReleaseContext`, the
service's dependencies with the few operations every part needs (load a release row, unwrap its
keys, build its cipher, record and put a release object, read one back, delete a prefix through
the deleter); and the per-release pseudonyms (HMAC under the release's pseudonym key). The
vault, the records helper and the deleter are the container's (:mod:`worker.objects`): the
release service builds no vault or key store of its own.
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

from worker.crypto.keyring import KekRef, Keyring, WrappedKey
from worker.crypto.secret import SecretKey
from worker.ledger.db import Database
from worker.ledger.models import Release, StoredObject
from worker.objects.deleter import Deleter, Doomed
from worker.objects.records import ObjectRecords, ObjectSpec
from worker.objects.release_cipher import ReleaseCipher
from worker.objects.vault import Vault

from .errors import ReleaseError
from .format import HashingReader
from .keys import release_key_context
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
    """What to release: a unique name, k (None: the configured default), an operator filter,
    a tenant filter (None: every tenant's samples; the tenant appears nowhere in the release)."""

    name: str
    k: int | None = None
    operator: str | None = None
    max_suppression: float = 0.1
    tenant: str | None = None


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
    # where the candidates went (:func:`worker.research.funnel.release_funnel`)
    funnel: dict[str, Any] = field(default_factory=dict)

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
            "funnel": self.funnel,
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
    records: ObjectRecords
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

    @property
    def vault(self) -> Vault:
        """The container's vault (research samples are read through it; release files are
        put and read as they are)."""
        return self.records.vault

    def record(self, key: str, size: int | None, content_type: str | None = None) -> None:
        """A ``release`` object row for ``key`` (kept until the release is revoked)."""
        self.records.record_key(_release_object(key, content_type), size)

    def put(
        self, key: str, body: BinaryIO | bytes, content_type: str | None = None
    ) -> tuple[str, int]:
        """Record then put ``body`` (already encrypted or public); (sha256, size) of the bytes."""
        src = io.BytesIO(body) if isinstance(body, bytes) else body
        hashing = HashingReader(src)
        self.records.put_sealed(_release_object(key, content_type), cast(BinaryIO, hashing))
        return hashing.sha.hexdigest(), hashing.size

    def get(self, key: str) -> bytes:
        """The stored bytes of ``key``."""
        return self.vault.get_raw(key)

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


def _release_object(key: str, content_type: str | None) -> ObjectSpec:
    """A release file: class ``release``, named after the key's last part."""
    return ObjectSpec(key, "release", name=key.rsplit("/", 1)[-1][:64], content_type=content_type)
