"""The keyring port: wraps and unwraps subject keys with a key-encryption key (KEK)."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from .secret import SecretKey

__all__ = ["KEY_SIZE", "KekRef", "Keyring", "WrappedKey"]

KEY_SIZE = 32
"""Size in bytes of every symmetric key in the hierarchy (AES-256)."""


@dataclass(frozen=True)
class KekRef:
    """Names one KEK version of one keyring."""

    keyring_id: str
    version: str


@dataclass(frozen=True)
class WrappedKey:
    """A key encrypted (wrapped) under the KEK named by ``kek``."""

    kek: KekRef
    blob: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"WrappedKey(kek={self.kek!r}, blob=<{len(self.blob)} bytes>)"


class Keyring(ABC):
    """A source of KEKs: wraps keys under the current KEK version, unwraps under any live one.

    ``context`` is authenticated with the wrap (AES-GCM associated data for the local keyring,
    the KMS ``EncryptionContext`` for KMS); the same context must be given to :meth:`unwrap`.
    """

    @property
    @abstractmethod
    def keyring_id(self) -> str:
        """A stable identifier of this keyring (recorded with every wrap)."""

    @property
    @abstractmethod
    def region(self) -> str | None:
        """The region the KEK lives in (KMS), or ``None`` for a local keyring."""

    @abstractmethod
    def wrap(self, key: bytes, context: Mapping[str, str]) -> WrappedKey:
        """Encrypt ``key`` under the current KEK version, binding ``context``."""

    @abstractmethod
    def unwrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
        """Decrypt a wrapped key; raise :class:`KeyringError` on any failure."""

    @abstractmethod
    def rotate(self, new_kek: str | None = None) -> KekRef:
        """Make a new current KEK version and return its reference.

        Older versions stay usable for :meth:`unwrap` until :meth:`retire`\\ d. ``new_kek`` is
        keyring specific (the KMS key to switch to); the local keyring refuses it.
        """

    @abstractmethod
    def retire(self, version: str) -> None:
        """Forget an old KEK version; refuse to retire the current one."""

    @abstractmethod
    def versions(self) -> list[str]:
        """The live KEK versions, oldest first; the last one is current."""

    @abstractmethod
    def current(self) -> KekRef:
        """The reference of the KEK version :meth:`wrap` uses now."""

    # -- KEK epochs (cryptographic erasure) ------------------------------------------------------

    def begin_epoch(self) -> KekRef:
        """Make a new current KEK whose destruction does not depend on any older one.

        An epoch change calls this, re-wraps every live key under the new version, then
        :meth:`destroy` every older version. The default is :meth:`rotate`; a keyring whose
        own rotation keeps old material (KMS) switches to another key instead.
        """
        return self.rotate()

    def destroy(self, version: str) -> None:
        """Destroy an old KEK version for good (its material, not only this process's use of it).

        Idempotent; refuses the current version. The default is :meth:`retire` (a local keyring
        removes the material from its file); KMS schedules the key's deletion.
        """
        self.retire(version)

    @property
    def destruction_delay(self) -> timedelta:
        """How long after :meth:`destroy` the material may still exist (KMS: its deletion
        window); zero when destruction is immediate."""
        return timedelta(0)

    def generate_key(self, context: Mapping[str, str]) -> tuple[SecretKey, WrappedKey]:
        """Make a fresh random 256-bit key and return it with its wrap under the current KEK."""
        key = os.urandom(KEY_SIZE)
        return SecretKey(key), self.wrap(key, context)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(keyring_id={self.keyring_id!r})"
