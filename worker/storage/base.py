"""The object-store port: stores see only ciphertext and opaque keys."""

from __future__ import annotations

import io
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from worker.storage.errors import InvalidKey

# Opaque ids only: lower-case letters, digits, '-', '_', '.', separated by '/'.
_KEY = re.compile(r"^[a-z0-9_\-]+(/[a-z0-9_\-.]+)*$")


#: Key prefixes a listing returns only when asked for by name: audit checkpoints are never
#: deleted, so no bulk listing (the orphan sweep, a wipe of the data keys) ever sees them.
CHECKPOINT_PREFIX = "checkpoints/"
RESERVED_PREFIXES: tuple[str, ...] = (CHECKPOINT_PREFIX,)


def listed(key: str, prefix: str) -> bool:
    """Whether a listing under ``prefix`` shows ``key`` (reserved keys only under their own
    prefix)."""
    return not key.startswith(RESERVED_PREFIXES) or prefix.startswith(RESERVED_PREFIXES)


def check_key(key: str) -> str:
    """Refuse keys that could carry a path trick or anything but opaque ids."""
    if len(key) > 512 or not _KEY.match(key) or ".." in key:
        raise InvalidKey("object key has a disallowed shape")
    return key


@dataclass(frozen=True)
class DeleteResult:
    """What a delete removed: every version and delete marker of one key, verified gone."""

    key: str
    versions_removed: int
    verified: bool


@dataclass(frozen=True)
class PutResult:
    """What a put wrote: ciphertext bytes and, on a versioned store, the new version's id."""

    size: int
    version_id: str | None = None


@dataclass(frozen=True)
class StoreEntry:
    """One key in the store and when its newest version was written (for orphan sweeps)."""

    key: str
    modified: datetime


@dataclass(frozen=True)
class StoreInfo:
    """Facts about a store the worker checks before it starts."""

    kind: str
    location: str
    region: str | None
    versioned: bool


class ObjectStore(ABC):
    """A place for ciphertext objects under opaque keys."""

    @abstractmethod
    def put(self, key: str, body: BinaryIO) -> PutResult:
        """Stream ``body`` to ``key`` (replacing it); return the size and version written."""

    @abstractmethod
    def get(self, key: str) -> BinaryIO:
        """A readable stream of the current version; raises ObjectMissing."""

    @abstractmethod
    def delete(self, key: str) -> DeleteResult:
        """Remove every version and delete marker of ``key`` and verify none remains."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """True while any version of ``key`` remains."""

    @abstractmethod
    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every key (with any version left) under ``prefix``; reserved prefixes
        (``checkpoints/``) only when ``prefix`` names them."""

    @abstractmethod
    def info(self) -> StoreInfo:
        """Kind, location, region and versioning of the store."""

    @abstractmethod
    def entries(self, prefix: str = "") -> Iterator[StoreEntry]:
        """Every key under ``prefix`` with the time of its newest version; reserved prefixes
        (``checkpoints/``) only when ``prefix`` names them (as :meth:`keys`)."""

    def put_retained(self, key: str, data: bytes, retain_until: datetime) -> PutResult:
        """Write a small object that is never to be deleted (audit checkpoints). A store with a
        retention lock (S3 Object Lock) locks it until ``retain_until``; others just write it."""
        return self.put(key, io.BytesIO(data))

    def delete_many(
        self, keys: Sequence[str], versions: Mapping[str, Sequence[str]] | None = None
    ) -> dict[str, DeleteResult]:
        """Delete every version of each key; ``versions`` names the known version ids of some
        keys (so a versioned store can skip listing them). Stores that batch override this."""
        return {key: self.delete(key) for key in keys}
