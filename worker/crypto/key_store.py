"""The subject-key persistence port and two implementations (memory, JSON file).

The ledger implements :class:`SubjectKeyStore` in production. Contract for implementers:

* ``get`` raises :class:`KeyShreddedError` for a destroyed id and :class:`KeyNotFoundError`
  for an id never added.
* ``add`` refuses an id that exists or was destroyed (:class:`KeyStoreError`).
* ``replace`` (used by KEK rotation) must not resurrect a destroyed key: it raises
  :class:`KeyShreddedError` if the id was destroyed meanwhile, :class:`KeyNotFoundError` if unknown.
* ``destroy`` removes the wrapped key and keeps a tombstone; destroying twice, or an unknown id,
  is fine (the tombstone is recorded either way).
* ``ids`` yields live (not destroyed) ids.

Every write must be a compare-and-set against the tombstone: the check that a key is live and
the write of its new wrap happen atomically, so a destroy committed after the caller read the
key (a KEK rotation racing an erasure) wins. The ledger store does it in one ``UPDATE ... WHERE
destroyed_at IS NULL``; the two stores here check and write under one lock (a thread lock; the
file store also holds an ``flock`` and re-reads the file under it, so this holds across
processes too).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._files import InsecureFileError, atomic_write_private, file_identity, file_lock, read_private
from .errors import KeyNotFoundError, KeyShreddedError, KeyStoreError
from .keyring import KekRef, WrappedKey

__all__ = [
    "FileSubjectKeyStore",
    "InMemorySubjectKeyStore",
    "SubjectKeyStore",
    "WrappedSubjectKey",
]


@dataclass(frozen=True)
class WrappedSubjectKey:
    """A subject key id with the subject key wrapped under a KEK."""

    key_id: str
    wrapped: WrappedKey


class SubjectKeyStore(ABC):
    """Where wrapped subject keys and their tombstones are kept (see the module docstring)."""

    @abstractmethod
    def get(self, key_id: str) -> WrappedSubjectKey:
        """The wrapped key; :class:`KeyShreddedError` if destroyed, :class:`KeyNotFoundError`."""

    @abstractmethod
    def add(self, wrapped: WrappedSubjectKey) -> None:
        """Store a new wrapped key; :class:`KeyStoreError` if the id is taken or tombstoned."""

    @abstractmethod
    def replace(self, wrapped: WrappedSubjectKey) -> None:
        """Replace the wrap of a live key (KEK rotation); never resurrects a destroyed key."""

    @abstractmethod
    def destroy(self, key_id: str) -> None:
        """Delete the wrapped key and record a tombstone; idempotent."""

    @abstractmethod
    def ids(self) -> Iterator[str]:
        """The ids of live (not destroyed) keys."""

    def is_destroyed(self, key_id: str) -> bool:
        """Whether ``key_id`` has a tombstone."""
        try:
            self.get(key_id)
        except KeyShreddedError:
            return True
        except KeyNotFoundError:
            return False
        return False


class InMemorySubjectKeyStore(SubjectKeyStore):
    """A thread-safe store in a dict (tests, and single-process tools)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, WrappedSubjectKey] = {}
        self._destroyed: set[str] = set()

    def get(self, key_id: str) -> WrappedSubjectKey:
        with self._lock:
            if key_id in self._destroyed:
                raise KeyShreddedError(f"subject key {key_id!r} was destroyed")
            try:
                return self._keys[key_id]
            except KeyError:
                raise KeyNotFoundError(f"unknown subject key {key_id!r}") from None

    def add(self, wrapped: WrappedSubjectKey) -> None:
        with self._lock:
            if wrapped.key_id in self._keys or wrapped.key_id in self._destroyed:
                raise KeyStoreError(f"subject key {wrapped.key_id!r} already exists")
            self._keys[wrapped.key_id] = wrapped

    def replace(self, wrapped: WrappedSubjectKey) -> None:
        with self._lock:
            if wrapped.key_id in self._destroyed:
                raise KeyShreddedError(f"subject key {wrapped.key_id!r} was destroyed")
            if wrapped.key_id not in self._keys:
                raise KeyNotFoundError(f"unknown subject key {wrapped.key_id!r}")
            self._keys[wrapped.key_id] = wrapped

    def destroy(self, key_id: str) -> None:
        with self._lock:
            self._keys.pop(key_id, None)
            self._destroyed.add(key_id)

    def ids(self) -> Iterator[str]:
        with self._lock:
            snapshot = list(self._keys)
        return iter(snapshot)


_Cache = tuple[tuple[int, int, int, int] | None, dict[str, Any], dict[str, str]]
_FORMAT = "facemedia-subject-keys"
_FORMAT_VERSION = 1


def _encode(wrapped: WrappedSubjectKey) -> dict[str, str]:
    return {
        "keyring_id": wrapped.wrapped.kek.keyring_id,
        "kek_version": wrapped.wrapped.kek.version,
        "blob": base64.b64encode(wrapped.wrapped.blob).decode("ascii"),
    }


def _decode(key_id: str, doc: Any) -> WrappedSubjectKey:
    kek = KekRef(str(doc["keyring_id"]), str(doc["kek_version"]))
    return WrappedSubjectKey(key_id, WrappedKey(kek, base64.b64decode(doc["blob"], validate=True)))


class FileSubjectKeyStore(SubjectKeyStore):
    """Wrapped subject keys in one JSON file (mode 0600, atomic rewrite, ``flock``-serialized).

    Meant for the embedded default and tests: every change rewrites the whole file. A destroyed
    key's wrap is gone from the current file, but not from backups or freed disk blocks; it stays
    protected by the KEK, so keep backups of this file on a bounded retention.
    """

    def __init__(self, path: Path | str) -> None:
        self._path = Path(path)
        self._lock = threading.RLock()
        self._cache: _Cache | None = None

    @property
    def path(self) -> Path:
        """The JSON file."""
        return self._path

    def get(self, key_id: str) -> WrappedSubjectKey:
        keys, destroyed = self._load()
        if key_id in destroyed:
            raise KeyShreddedError(f"subject key {key_id!r} was destroyed")
        doc = keys.get(key_id)
        if doc is None:
            raise KeyNotFoundError(f"unknown subject key {key_id!r}")
        try:
            return _decode(key_id, doc)
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise KeyStoreError(f"stored subject key {key_id!r} is malformed") from None

    def add(self, wrapped: WrappedSubjectKey) -> None:
        with self._mutate() as (keys, destroyed):
            if wrapped.key_id in keys or wrapped.key_id in destroyed:
                raise KeyStoreError(f"subject key {wrapped.key_id!r} already exists")
            keys[wrapped.key_id] = _encode(wrapped)

    def replace(self, wrapped: WrappedSubjectKey) -> None:
        with self._mutate() as (keys, destroyed):
            if wrapped.key_id in destroyed:
                raise KeyShreddedError(f"subject key {wrapped.key_id!r} was destroyed")
            if wrapped.key_id not in keys:
                raise KeyNotFoundError(f"unknown subject key {wrapped.key_id!r}")
            keys[wrapped.key_id] = _encode(wrapped)

    def destroy(self, key_id: str) -> None:
        with self._mutate() as (keys, destroyed):
            keys.pop(key_id, None)
            destroyed.setdefault(key_id, datetime.now(UTC).isoformat(timespec="seconds"))

    def ids(self) -> Iterator[str]:
        keys, _ = self._load()
        return iter(list(keys))

    # -- internals ---------------------------------------------------------------------------

    def _load(self, *, force: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
        with self._lock:
            identity = file_identity(self._path)
            if not force and self._cache is not None and self._cache[0] == identity:
                return self._cache[1], self._cache[2]
            try:
                found = read_private(self._path)
            except InsecureFileError as exc:
                raise KeyStoreError(f"refusing to use the subject-key file: {exc}") from None
            except OSError as exc:
                raise KeyStoreError(f"cannot read the subject-key file: {exc}") from None
            if found is None:
                return {}, {}
            data, identity = found
            try:
                doc = json.loads(data)
                if doc.get("format") != _FORMAT or doc.get("format_version") != _FORMAT_VERSION:
                    raise ValueError
                keys = dict(doc["keys"])
                destroyed = {str(k): str(v) for k, v in dict(doc["destroyed"]).items()}
            except (ValueError, KeyError, TypeError, AttributeError):
                raise KeyStoreError("the subject-key file is malformed") from None
            self._cache = (identity, keys, destroyed)
            return keys, destroyed

    @contextlib.contextmanager
    def _mutate(self) -> Iterator[tuple[dict[str, Any], dict[str, str]]]:
        """Read-modify-write under the thread and file locks; written only if the body succeeds."""
        with self._lock, file_lock(self._path):
            keys, destroyed = self._load(force=True)
            keys, destroyed = dict(keys), dict(destroyed)
            yield keys, destroyed
            self._write(keys, destroyed)

    def _write(self, keys: dict[str, Any], destroyed: dict[str, str]) -> None:
        doc = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "keys": keys,
            "destroyed": destroyed,
        }
        try:
            atomic_write_private(self._path, (json.dumps(doc, indent=1) + "\n").encode("utf-8"))
        except OSError as exc:
            raise KeyStoreError(f"cannot write the subject-key file: {exc}") from None
        self._cache = (file_identity(self._path), keys, destroyed)

    def __repr__(self) -> str:
        return f"FileSubjectKeyStore(path={str(self._path)!r})"
