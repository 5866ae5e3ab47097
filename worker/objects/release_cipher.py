"""Release objects sealed under a release's own data key, in the envelope format v1 of
:mod:`worker.crypto` unchanged: the release's random data key stands where a subject key stands
(key id ``rel_<release id>``, keyring id ``release``, KEK version ``1``), each object gets its own
data key and salt, and the context ``{object_key, object_class: release, release_id}`` is
authenticated. Used by both sides (the service writes, ``research pull`` reads), so it imports
no ledger and no store. Format: docs/ENCRYPTION.md "Release objects".
"""

from __future__ import annotations

import io
from typing import Any, BinaryIO, cast

from worker.crypto import Envelope, KekRef, KeyNotFoundError, SecretKey, SubjectKeys

__all__ = ["ReleaseCipher", "object_context"]


def object_context(release_id: str, key: str) -> dict[str, str]:
    """The envelope context of a release object."""
    return {"object_key": key, "object_class": "release", "release_id": release_id}


class _ReleaseKeySource:
    """Stands in for :class:`SubjectKeys` in an :class:`Envelope`: one key id, one raw key."""

    def __init__(self, release_id: str, key: SecretKey) -> None:
        self.key_id = f"rel_{release_id}"
        self._key = key

    def load(self, key_id: str) -> tuple[SecretKey, KekRef]:
        if key_id != self.key_id:
            raise KeyNotFoundError("object was not written under this release key")
        return self._key, KekRef("release", "1")

    def __repr__(self) -> str:
        return f"_ReleaseKeySource({self.key_id!r})"


class ReleaseCipher:
    """Encrypts and decrypts a release's objects under its data key (envelope format v1)."""

    def __init__(self, release_id: str, data_key: SecretKey, segment_size: int = 65536) -> None:
        self.release_id = release_id
        self._source = _ReleaseKeySource(release_id, data_key)
        self._env = Envelope(cast(SubjectKeys, self._source), segment_size=segment_size)

    def encrypt_stream(self, key: str, src: BinaryIO) -> BinaryIO:
        """A readable ciphertext stream of ``src`` for the object ``key``."""
        return self._env.encrypt_stream(
            self._source.key_id, object_context(self.release_id, key), src
        )

    def seal(self, key: str, data: bytes) -> bytes:
        """Encrypt a small object in memory."""
        return self._env.seal(self._source.key_id, object_context(self.release_id, key), data)

    def decrypt(self, key: str, src: BinaryIO | Any, dst: BinaryIO) -> int:
        """Decrypt ``src`` into ``dst`` segment by segment."""
        return self._env.decrypt(object_context(self.release_id, key), src, dst)

    def open(self, key: str, data: bytes) -> bytes:
        """Decrypt a small object in memory."""
        out = io.BytesIO()
        self.decrypt(key, io.BytesIO(data), cast(BinaryIO, out))
        return out.getvalue()

    def __repr__(self) -> str:
        return f"ReleaseCipher(release_id={self.release_id!r})"
