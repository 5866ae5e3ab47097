"""The one place that pairs encryption with storage: stores only ever see ciphertext.

Every subject object is sealed under its data subject's key with the encryption context
``{object_key, object_class, job_id}``, so a ciphertext copied to another key fails to open.
Release objects, sealed under a release's own key by the release service, and the public
release documents go through :meth:`Vault.put_raw` / :meth:`Vault.raw`, so every store access
of the services is here.

Errors are translated into :mod:`worker.objects.errors` — the store's missing object,
transient fault and any other failure, the subject key's destruction and every other failure to
open — so callers catch this layer's errors, never the crypto or storage packages'.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, cast

from worker.crypto import (
    DEFAULT_SEGMENT_SIZE,
    CryptoError,
    Envelope,
    InMemorySubjectKeyStore,
    KeyShreddedError,
    SubjectKeys,
    WrappedSubjectKey,
)
from worker.storage import errors as storage_errors
from worker.storage.base import DeleteResult, ObjectStore, PutResult

from .errors import (
    ObjectCorrupt,
    ObjectMissing,
    ObjectsError,
    ObjectShredded,
    ObjectTooBig,
    ObjectUnavailable,
)

__all__ = ["Vault", "context", "translated"]

_CHUNK = 1024 * 1024


def context(key: str, object_class: str, job_id: str | None) -> dict[str, str]:
    """The encryption context authenticated with every subject object."""
    return {"object_key": key, "object_class": object_class, "job_id": job_id or ""}


@contextmanager
def translated() -> Iterator[None]:
    """Re-raise the crypto and storage packages' errors as this layer's (the cause chained)."""
    try:
        yield
    except storage_errors.ObjectMissing as exc:
        raise ObjectMissing("the object is not stored") from exc
    except storage_errors.TransientStorageError as exc:
        raise ObjectUnavailable(str(exc)) from exc
    except storage_errors.StorageError as exc:
        raise ObjectsError(str(exc)) from exc
    except KeyShreddedError as exc:
        raise ObjectShredded("the subject key was destroyed") from exc
    except CryptoError as exc:
        raise ObjectCorrupt(f"the object does not open: {exc}") from exc


class _TranslatedReader:
    """A plaintext (or ciphertext) stream whose read errors are this layer's."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner

    def read(self, size: int = -1) -> bytes:
        with translated():
            return self._inner.read(size)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> _TranslatedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Vault:
    """Encrypt-then-store and load-then-decrypt, streaming in both directions."""

    def __init__(
        self,
        store: ObjectStore,
        subject_keys: SubjectKeys,
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
    ) -> None:
        self.store = store
        self.subject_keys = subject_keys
        self.envelope = Envelope(subject_keys, segment_size=segment_size)

    def with_keys(self, wrapped: Iterable[WrappedSubjectKey]) -> Vault:
        """A vault over the same store and keyring that reads only the given (already fetched)
        wrapped subject keys: a batch reader fetches its keys in one ledger query instead of one
        per object. An object under a key left out does not open (:class:`ObjectCorrupt`)."""
        held = InMemorySubjectKeyStore()
        for key in wrapped:
            held.add(key)
        return Vault(
            self.store,
            SubjectKeys(self.subject_keys.keyring, held),
            segment_size=self.envelope.segment_size,
        )

    # ----- subject objects --------------------------------------------------------------------

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
        with translated():
            sealed = self.envelope.encrypt_stream(key_id, context(key, object_class, job_id), src)
            return self.store.put(key, sealed)

    def open(self, key: str, object_class: str, job_id: str | None) -> BinaryIO:
        """A plaintext stream of the object, authenticated segment by segment."""
        with translated():
            raw = self.store.get(key)
            stream = self.envelope.decrypt_stream(context(key, object_class, job_id), raw)
        return cast(BinaryIO, _TranslatedReader(stream))

    def read(
        self, key: str, object_class: str, job_id: str | None, max_bytes: int | None = None
    ) -> bytes:
        """Decrypt the whole object into memory (never to disk), refusing more than max_bytes
        (:class:`ObjectTooBig`)."""
        stream = self.open(key, object_class, job_id)
        try:
            buf = bytearray()
            while chunk := stream.read(_CHUNK):
                buf += chunk
                if max_bytes is not None and len(buf) > max_bytes:
                    raise ObjectTooBig("object larger than allowed")
            return bytes(buf)
        finally:
            stream.close()

    # ----- sealed elsewhere or public (release objects) ---------------------------------------

    def put_raw(self, key: str, body: BinaryIO | bytes | Any) -> PutResult:
        """Store bytes sealed by their owner (a release's own key) or public (a signed index)
        as they are."""
        src = io.BytesIO(body) if isinstance(body, bytes | bytearray | memoryview) else body
        with translated():
            return self.store.put(key, cast(BinaryIO, src))

    def raw(self, key: str) -> BinaryIO:
        """The stored bytes of ``key`` as a stream."""
        with translated():
            return cast(BinaryIO, _TranslatedReader(self.store.get(key)))

    def get_raw(self, key: str) -> bytes:
        """The stored bytes of ``key``."""
        stream = self.raw(key)
        try:
            return stream.read()
        finally:
            stream.close()

    # ----- keys -------------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        """True while any version of ``key`` remains."""
        with translated():
            return self.store.exists(key)

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``."""
        with translated():
            return list(self.store.keys(prefix))

    def delete(self, key: str) -> DeleteResult:
        """Delete every version of ``key`` (unrecorded objects only: recorded ones go through
        the deleter, which writes their receipts)."""
        with translated():
            return self.store.delete(key)

    def __repr__(self) -> str:
        return f"Vault(store={type(self.store).__name__})"
