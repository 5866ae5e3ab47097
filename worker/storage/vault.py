"""The one place that pairs encryption with storage: stores only ever see ciphertext.

Every object is sealed under its data subject's key with the encryption context
``{object_key, object_class, job_id}``, so a ciphertext copied to another key fails to open.
"""

from __future__ import annotations

import io
from typing import BinaryIO

from worker.crypto import Envelope
from worker.storage.base import DeleteResult, ObjectStore, PutResult, check_key
from worker.storage.errors import StorageError


def original_key(job_id: str) -> str:
    """Where a job's original lives."""
    return check_key(f"originals/{job_id}")


def output_key(job_id: str, name: str) -> str:
    """Where a job's output ``name`` lives (deterministic, so a re-run overwrites)."""
    return check_key(f"outputs/{job_id}/{name}")


def context(key: str, object_class: str, job_id: str | None) -> dict[str, str]:
    """The encryption context authenticated with every object."""
    return {"object_key": key, "object_class": object_class, "job_id": job_id or ""}


class TooBig(StorageError):
    """A decrypted object exceeds the size the caller allows."""


class Vault:
    """Encrypt-then-store and load-then-decrypt, streaming in both directions."""

    def __init__(self, store: ObjectStore, envelope: Envelope) -> None:
        self.store = store
        self.envelope = envelope

    def put(
        self,
        key: str,
        object_class: str,
        job_id: str | None,
        key_id: str,
        body: BinaryIO | bytes,
    ) -> PutResult:
        """Encrypt ``body`` under subject key ``key_id`` while uploading; return what was put."""
        src = io.BytesIO(body) if isinstance(body, bytes | bytearray | memoryview) else body
        sealed = self.envelope.encrypt_stream(key_id, context(key, object_class, job_id), src)
        return self.store.put(key, sealed)

    def open(self, key: str, object_class: str, job_id: str | None) -> BinaryIO:
        """A plaintext stream of the object, authenticated segment by segment."""
        raw = self.store.get(key)
        return self.envelope.decrypt_stream(context(key, object_class, job_id), raw)

    def read(
        self, key: str, object_class: str, job_id: str | None, max_bytes: int | None = None
    ) -> bytes:
        """Decrypt the whole object into memory (never to disk), refusing more than max_bytes."""
        stream = self.open(key, object_class, job_id)
        try:
            buf = bytearray()
            while chunk := stream.read(1024 * 1024):
                buf += chunk
                if max_bytes is not None and len(buf) > max_bytes:
                    raise TooBig("object larger than allowed")
            return bytes(buf)
        finally:
            stream.close()

    def delete(self, key: str) -> DeleteResult:
        """Delete every version of ``key``."""
        return self.store.delete(key)
