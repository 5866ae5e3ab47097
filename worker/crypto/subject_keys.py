"""Subject keys: one random 256-bit key per data subject, stored only wrapped by a KEK.

Destroying a subject's key (crypto-shredding) makes every object encrypted for that subject -
including copies and old versions made before - unreadable: opening one raises
:class:`KeyShreddedError`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping

from .errors import KeyNotFoundError, KeyringError, KeyShreddedError, KeyStoreError
from .key_store import SubjectKeyStore, WrappedSubjectKey
from .keyring import KEY_SIZE, KekRef, Keyring
from .secret import SecretKey

__all__ = ["SubjectKeys", "subject_key_context", "valid_key_id"]

_KEY_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,255}$")


def valid_key_id(key_id: str) -> bool:
    """Whether ``key_id`` can be a subject key id (1-255 of ``A-Za-z0-9_.:-``)."""
    return isinstance(key_id, str) and bool(_KEY_ID_RE.match(key_id))


def subject_key_context(key_id: str) -> Mapping[str, str]:
    """The context a subject key is wrapped under: it binds the wrap to its id."""
    return {"facemedia:purpose": "subject-key", "facemedia:subject_key_id": key_id}


class SubjectKeys:
    """Creates, unwraps, destroys and re-wraps subject keys over a keyring and a store."""

    def __init__(self, keyring: Keyring, store: SubjectKeyStore) -> None:
        self._keyring = keyring
        self._store = store

    @property
    def keyring(self) -> Keyring:
        """The keyring holding the KEK."""
        return self._keyring

    @property
    def store(self) -> SubjectKeyStore:
        """The store holding the wrapped subject keys."""
        return self._store

    def create(self) -> str:
        """Make a new subject key, store it wrapped, and return its opaque id (``sk_`` + 32 hex).

        A KEK epoch may change the current version between the wrap and the insert (this
        process's view of the keyring was a moment old); the epoch pass may then have scanned
        for stale keys before this one was visible and go on to destroy its version. So after
        the insert the key is re-wrapped under the current version until it is under it: once
        this returns, the stored wrap is under a version that was current after the insert.
        """
        key_id = "sk_" + secrets.token_hex(16)
        context = subject_key_context(key_id)
        key, wrapped = self._keyring.generate_key(context)
        if len(key) != KEY_SIZE:
            raise KeyringError("the keyring generated a key of the wrong size")
        self._store.add(WrappedSubjectKey(key_id, wrapped))
        for _ in range(8):
            current = self._keyring.current()
            if wrapped.kek == current:
                return key_id
            wrapped = self._keyring.wrap(key.raw(), context)
            try:
                self._store.replace(WrappedSubjectKey(key_id, wrapped))
            except (KeyShreddedError, KeyNotFoundError):
                return key_id  # destroyed meanwhile: nothing left to protect
        raise KeyringError("the KEK changed under a new subject key too many times")

    def unwrap(self, key_id: str) -> SecretKey:
        """The subject key; :class:`KeyShreddedError` if it was destroyed."""
        return self.load(key_id)[0]

    def load(self, key_id: str) -> tuple[SecretKey, KekRef]:
        """The subject key and the KEK version its stored wrap is under."""
        if not valid_key_id(key_id):
            raise KeyNotFoundError("malformed subject key id")
        record = self._store.get(key_id)
        raw = self._keyring.unwrap(record.wrapped, subject_key_context(key_id))
        if len(raw) != KEY_SIZE:
            raise KeyringError("unwrapped subject key has the wrong size")
        return SecretKey(raw), record.wrapped.kek

    def destroy(self, key_id: str) -> None:
        """Shred the subject key: every object encrypted for it becomes unreadable. Idempotent."""
        self._store.destroy(key_id)

    def is_destroyed(self, key_id: str) -> bool:
        """Whether the subject key was destroyed."""
        return self._store.is_destroyed(key_id)

    def stale(self) -> list[str]:
        """Ids of live subject keys not wrapped under the current KEK version."""
        current = self._keyring.current()
        found = []
        for key_id in list(self._store.ids()):
            try:
                record = self._store.get(key_id)
            except (KeyShreddedError, KeyNotFoundError):
                continue
            if record.wrapped.kek != current:
                found.append(key_id)
        return found

    def rotate_kek(self, new_kek: str | None = None) -> int:
        """Rotate the keyring (``new_kek`` is passed on) and re-wrap every live subject key.

        Returns how many keys were re-wrapped. Objects are not touched. Safe to re-run after a
        crash: :meth:`rewrap` finishes the keys still under an old version.
        """
        self._keyring.rotate(new_kek)
        return self.rewrap(only_stale=False)

    def rewrap(self, *, only_stale: bool = True) -> int:
        """Re-wrap live subject keys under the current KEK version; return how many.

        With ``only_stale`` (default) keys already under the current version are skipped. A key
        destroyed while this runs stays destroyed.
        """
        current = self._keyring.current()
        count = 0
        for key_id in list(self._store.ids()):
            try:
                record = self._store.get(key_id)
            except (KeyShreddedError, KeyNotFoundError):
                continue
            if only_stale and record.wrapped.kek == current:
                continue
            context = subject_key_context(key_id)
            raw = self._keyring.unwrap(record.wrapped, context)
            try:
                self._store.replace(WrappedSubjectKey(key_id, self._keyring.wrap(raw, context)))
            except (KeyShreddedError, KeyNotFoundError):
                continue
            count += 1
        return count

    def retire_kek(self, version: str) -> None:
        """Retire a KEK version after checking that no live subject key is still under it."""
        keyring_id = self._keyring.keyring_id
        for key_id in self._store.ids():
            try:
                kek = self._store.get(key_id).wrapped.kek
            except (KeyShreddedError, KeyNotFoundError):
                continue
            if kek.keyring_id == keyring_id and kek.version == version:
                raise KeyStoreError(
                    f"KEK version {version!r} still wraps subject keys; run rewrap() first"
                )
        self._keyring.retire(version)

    def __repr__(self) -> str:
        return f"SubjectKeys(keyring={self._keyring!r}, store={self._store!r})"
