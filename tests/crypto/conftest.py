"""Fixtures for the worker.crypto tests."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from worker.crypto import (
    Envelope,
    InMemorySubjectKeyStore,
    KekRef,
    Keyring,
    LocalKeyring,
    SubjectKeys,
    WrappedKey,
)

CTX: dict[str, str] = {
    "object_key": "originals/job-1",
    "object_class": "original",
    "job_id": "job-1",
}


class StaticKeyring(Keyring):
    """A test keyring whose 'wrap' is the identity: known-answer vectors need fixed keys."""

    def __init__(self, keyring_id: str = "kr-test", version: str = "v7") -> None:
        self._ref = KekRef(keyring_id, version)

    @property
    def keyring_id(self) -> str:
        return self._ref.keyring_id

    @property
    def region(self) -> str | None:
        return None

    def wrap(self, key: bytes, context: Mapping[str, str]) -> WrappedKey:
        return WrappedKey(self._ref, bytes(key))

    def unwrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
        return wrapped.blob

    def rotate(self, new_kek: str | None = None) -> KekRef:
        raise NotImplementedError

    def retire(self, version: str) -> None:
        raise NotImplementedError

    def versions(self) -> list[str]:
        return [self._ref.version]

    def current(self) -> KekRef:
        return self._ref


def bio(data: bytes = b"") -> BinaryIO:
    """A BytesIO typed as BinaryIO."""
    return cast(BinaryIO, io.BytesIO(data))


@pytest.fixture
def keyring(tmp_path: Path) -> LocalKeyring:
    return LocalKeyring(tmp_path / "keys" / "kek.json")


@pytest.fixture
def subject_keys(keyring: LocalKeyring) -> SubjectKeys:
    return SubjectKeys(keyring, InMemorySubjectKeyStore())


@pytest.fixture
def envelope(subject_keys: SubjectKeys) -> Envelope:
    return Envelope(subject_keys)


@pytest.fixture
def small_envelope(subject_keys: SubjectKeys) -> Envelope:
    """64-byte segments, so multi-segment ciphertexts stay small."""
    return Envelope(subject_keys, segment_size=64)


@pytest.fixture
def ctx() -> dict[str, str]:
    return dict(CTX)
