"""A keyring whose versioned KEKs live in a local JSON file (the embedded default).

File layout (JSON, mode 0600, parent directory created 0700, replaced atomically)::

    {
      "format": "facemedia-local-keyring",
      "format_version": 1,
      "keyring_id": "local-<16 hex>",
      "current": "v2",
      "next_version": 3,
      "keks": [{"version": "v1", "key": "<base64 of 32 bytes>", "created_at": "<ISO 8601>"}, ...],
      "retired": [{"version": "v0", "retired_at": "<ISO 8601>"}]
    }

A wrap is ``nonce(12) ‖ AES-256-GCM(KEK, nonce, key, ad)`` with
``ad = "facemedia-local-wrap/1" ‖ 0x00 ‖ lp(keyring_id) ‖ lp(version) ‖ canonical(context)``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._files import (
    InsecureFileError,
    atomic_write_private,
    file_identity,
    file_lock,
    read_private,
)
from .context import canonical_context, length_prefixed
from .errors import KeyringError
from .keyring import KEY_SIZE, KekRef, Keyring, WrappedKey

__all__ = ["LocalKeyring"]

_FORMAT = "facemedia-local-keyring"
_FORMAT_VERSION = 1
_WRAP_LABEL = b"facemedia-local-wrap/1\x00"
_NONCE_SIZE = 12
_VERSION_RE = re.compile(r"^v([1-9][0-9]*)$")


@dataclass(frozen=True)
class _Kek:
    version: str
    key: bytes
    created_at: str

    def __repr__(self) -> str:
        return f"_Kek(version={self.version!r}, key=<{len(self.key)} bytes>)"


@dataclass(frozen=True)
class _State:
    keyring_id: str
    current: str
    next_version: int
    keks: tuple[_Kek, ...]
    retired: tuple[tuple[str, str], ...]

    def kek(self, version: str) -> _Kek | None:
        for kek in self.keks:
            if kek.version == version:
                return kek
        return None

    def to_json(self) -> bytes:
        doc = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "keyring_id": self.keyring_id,
            "current": self.current,
            "next_version": self.next_version,
            "keks": [
                {
                    "version": k.version,
                    "key": base64.b64encode(k.key).decode("ascii"),
                    "created_at": k.created_at,
                }
                for k in self.keks
            ],
            "retired": [{"version": v, "retired_at": at} for v, at in self.retired],
        }
        return (json.dumps(doc, indent=2) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> _State:
        try:
            doc: Any = json.loads(data)
            if doc.get("format") != _FORMAT or doc.get("format_version") != _FORMAT_VERSION:
                raise ValueError("unknown keyring file format")
            keks = tuple(
                _Kek(
                    version=str(k["version"]),
                    key=base64.b64decode(k["key"], validate=True),
                    created_at=str(k.get("created_at", "")),
                )
                for k in doc["keks"]
            )
            state = cls(
                keyring_id=str(doc["keyring_id"]),
                current=str(doc["current"]),
                next_version=int(doc["next_version"]),
                keks=keks,
                retired=tuple((str(r["version"]), str(r["retired_at"])) for r in doc["retired"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            # No detail: the parser's message could quote key material.
            raise KeyringError("local keyring file is malformed") from None
        if any(len(k.key) != KEY_SIZE for k in state.keks) or state.kek(state.current) is None:
            raise KeyringError("local keyring file is malformed")
        return state


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class LocalKeyring(Keyring):
    """Versioned KEKs in a JSON file, created mode 0600 on first use.

    Safe to share between processes: rotations and retirements take a file lock and rewrite the
    file atomically, and every operation notices a file replaced by another process.
    """

    def __init__(self, path: Path | str) -> None:
        self._path = Path(path)
        self._lock = threading.RLock()
        self._state: _State | None = None
        self._identity: tuple[int, int, int, int] | None = None

    @property
    def path(self) -> Path:
        """The keyring file."""
        return self._path

    @property
    def keyring_id(self) -> str:
        return self._fresh().keyring_id

    @property
    def region(self) -> str | None:
        return None

    def current(self) -> KekRef:
        state = self._fresh()
        return KekRef(state.keyring_id, state.current)

    def versions(self) -> list[str]:
        return [k.version for k in self._fresh().keks]

    def wrap(self, key: bytes, context: Mapping[str, str]) -> WrappedKey:
        if len(key) != KEY_SIZE:
            raise KeyringError(f"only {KEY_SIZE}-byte keys can be wrapped")
        state = self._fresh()
        kek = state.kek(state.current)
        assert kek is not None  # checked by _State.from_json
        nonce = os.urandom(_NONCE_SIZE)
        ad = self._ad(state.keyring_id, kek.version, context)
        blob = nonce + AESGCM(kek.key).encrypt(nonce, bytes(key), ad)
        return WrappedKey(KekRef(state.keyring_id, kek.version), blob)

    def unwrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
        state = self._fresh()
        if wrapped.kek.keyring_id != state.keyring_id:
            raise KeyringError(
                f"key was wrapped by keyring {wrapped.kek.keyring_id!r}, "
                f"not by this one ({state.keyring_id!r})"
            )
        kek = state.kek(wrapped.kek.version)
        if kek is None:
            raise KeyringError(f"KEK version {wrapped.kek.version!r} is unknown or retired")
        blob = wrapped.blob
        if len(blob) != _NONCE_SIZE + KEY_SIZE + 16:
            raise KeyringError("wrapped key has the wrong length")
        ad = self._ad(state.keyring_id, kek.version, context)
        try:
            return AESGCM(kek.key).decrypt(blob[:_NONCE_SIZE], blob[_NONCE_SIZE:], ad)
        except InvalidTag:
            raise KeyringError(
                "wrapped key does not open under its KEK (wrong context or tampered)"
            ) from None

    def rotate(self, new_kek: str | None = None) -> KekRef:
        if new_kek is not None:
            raise KeyringError("LocalKeyring.rotate() generates its KEK; it takes no argument")
        with self._lock, file_lock(self._path):
            state = self._load_or_create()
            version = f"v{state.next_version}"
            kek = _Kek(version, os.urandom(KEY_SIZE), _now())
            new = _State(
                keyring_id=state.keyring_id,
                current=version,
                next_version=state.next_version + 1,
                keks=(*state.keks, kek),
                retired=state.retired,
            )
            self._write(new)
            return KekRef(new.keyring_id, version)

    def retire(self, version: str) -> None:
        with self._lock, file_lock(self._path):
            state = self._load_or_create()
            if version == state.current:
                raise KeyringError(f"KEK version {version!r} is current; rotate before retiring")
            if state.kek(version) is None:
                if any(v == version for v, _ in state.retired):
                    return
                raise KeyringError(f"KEK version {version!r} is unknown")
            new = _State(
                keyring_id=state.keyring_id,
                current=state.current,
                next_version=state.next_version,
                keks=tuple(k for k in state.keks if k.version != version),
                retired=(*state.retired, (version, _now())),
            )
            self._write(new)

    # -- internals ---------------------------------------------------------------------------

    @staticmethod
    def _ad(keyring_id: str, version: str, context: Mapping[str, str]) -> bytes:
        return b"".join(
            (
                _WRAP_LABEL,
                length_prefixed(keyring_id.encode("utf-8")),
                length_prefixed(version.encode("utf-8")),
                canonical_context(context),
            )
        )

    def _fresh(self) -> _State:
        """The state, re-read if the file changed since we last read it; created if absent."""
        with self._lock:
            if self._state is not None and file_identity(self._path) == self._identity:
                return self._state
            state = self._read()
            if state is not None:
                return state
            if self._state is not None:
                # Never replace a keyring we have used with a fresh one: that would silently
                # orphan every key it wrapped (a wrong mount, a deleted directory).
                raise KeyringError(f"the keyring file {self._path} disappeared")
            with file_lock(self._path):
                return self._load_or_create()

    def _load_or_create(self) -> _State:
        """Read the file, creating it with a first KEK if absent (caller holds the file lock)."""
        state = self._read()
        if state is not None:
            return state
        state = _State(
            keyring_id="local-" + secrets.token_hex(8),
            current="v1",
            next_version=2,
            keks=(_Kek("v1", os.urandom(KEY_SIZE), _now()),),
            retired=(),
        )
        self._write(state)
        return state

    def _read(self) -> _State | None:
        """Read the file into the cache; ``None`` if it does not exist."""
        try:
            found = read_private(self._path)
        except InsecureFileError as exc:
            raise KeyringError(f"refusing to use the keyring file: {exc}") from None
        except OSError as exc:
            raise KeyringError(f"cannot read the keyring file {self._path}: {exc}") from None
        if found is None:
            return None
        data, identity = found
        state = _State.from_json(data)
        self._state, self._identity = state, identity
        return state

    def _write(self, state: _State) -> None:
        try:
            atomic_write_private(self._path, state.to_json())
        except OSError as exc:
            raise KeyringError(f"cannot write the keyring file {self._path}: {exc}") from None
        self._state, self._identity = state, file_identity(self._path)

    def __repr__(self) -> str:
        return f"LocalKeyring(path={str(self._path)!r})"
