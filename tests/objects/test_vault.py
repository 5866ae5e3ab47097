"""The vault translates crypto and storage errors into the objects layer's own: missing,
shredded, corrupt, too big, unavailable (transient). Real parts: a LocalStore directory, a local
KEK file, the ledger's subject-key store (SQLite), the real envelope cipher; an S3Store whose
endpoint is down for the transient fault."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from worker.crypto import CryptoError
from worker.objects.deleter import Doomed
from worker.objects.errors import (
    ObjectCorrupt,
    ObjectMissing,
    ObjectsError,
    ObjectShredded,
    ObjectTooBig,
    ObjectUnavailable,
)
from worker.objects.layout import output_key
from worker.objects.vault import Vault
from worker.storage.base import ObjectStore
from worker.storage.errors import StorageError

JOB = "0123456789abcdef0123456789abcdef"
PLAIN = bytes(range(256)) * 600  # 150 KiB: several segments at a 16 KiB segment size


@pytest.fixture
def vault(embedded: Any) -> Vault:
    """The container's vault over a small segment size (more segments to tamper with)."""
    return Vault(embedded.store, embedded.subject_keys, segment_size=16 * 1024)


@pytest.fixture
def key_id(embedded: Any) -> str:
    return str(embedded.subjects.ensure("vault-subject").key_id)


@pytest.fixture
def blob(vault: Vault, key_id: str) -> str:
    """The key of a stored output (PLAIN, sealed under the subject's key)."""
    key = output_key(JOB, "blob.bin")
    vault.put(key, "output", JOB, key_id, PLAIN)
    return key


def _tamper(embedded: Any, key: str, change: Callable[[bytearray], None]) -> None:
    """Change the stored ciphertext of ``key`` in place (the LocalStore's file)."""
    path = Path(embedded.store.root) / key
    data = bytearray(path.read_bytes())
    change(data)
    path.write_bytes(bytes(data))


def _only_ours(exc: BaseException) -> None:
    """The error is the objects layer's, not crypto's or storage's."""
    assert isinstance(exc, ObjectsError)
    assert not isinstance(exc, CryptoError | StorageError)


def test_put_then_read_round_trips_and_stores_ciphertext_only(
    embedded: Any, vault: Vault, key_id: str
) -> None:
    key = output_key(JOB, "blob.bin")
    put = vault.put(key, "output", JOB, key_id, PLAIN)
    stored = (Path(embedded.store.root) / key).read_bytes()
    assert put.size == len(stored) > len(PLAIN)
    assert PLAIN[:64] not in stored
    assert vault.read(key, "output", JOB) == PLAIN
    with vault.open(key, "output", JOB) as stream:
        assert stream.read(10) == PLAIN[:10]


def test_missing(vault: Vault) -> None:
    with pytest.raises(ObjectMissing) as info:
        vault.read(output_key(JOB, "nothing.bin"), "output", JOB)
    _only_ours(info.value)


def test_shredded_when_the_subject_key_is_destroyed(
    embedded: Any, vault: Vault, key_id: str, blob: str
) -> None:
    embedded.subject_keys.destroy(key_id)
    with pytest.raises(ObjectShredded) as info:
        vault.read(blob, "output", JOB)
    _only_ours(info.value)
    with pytest.raises(ObjectShredded):  # and nothing new is sealed under it
        vault.put(output_key(JOB, "new.bin"), "output", JOB, key_id, b"x")


@pytest.mark.parametrize("where", ["header", "body", "tail", "truncated"])
def test_corrupt_when_the_stored_bytes_are_tampered_with(
    embedded: Any, vault: Vault, blob: str, where: str
) -> None:
    def change(data: bytearray) -> None:
        if where == "truncated":
            del data[-100:]
        else:
            data[{"header": 20, "body": len(data) // 2, "tail": len(data) - 5}[where]] ^= 0x01

    _tamper(embedded, blob, change)
    with pytest.raises(ObjectCorrupt) as info:
        vault.read(blob, "output", JOB)
    _only_ours(info.value)


def test_corrupt_mid_stream_is_raised_by_the_read_that_meets_it(
    embedded: Any, vault: Vault, blob: str
) -> None:
    """A streaming reader gets the first segments, then this layer's error (not crypto's)."""

    def flip_last_segment(data: bytearray) -> None:
        data[-200] ^= 0x01

    _tamper(embedded, blob, flip_last_segment)
    with vault.open(blob, "output", JOB) as stream:
        assert stream.read(16 * 1024) == PLAIN[: 16 * 1024]
        with pytest.raises(ObjectCorrupt):
            while stream.read(16 * 1024):
                pass


def test_corrupt_under_another_context(vault: Vault, blob: str) -> None:
    for object_class, job in (("original", JOB), ("output", "f" * 32)):
        with pytest.raises(ObjectCorrupt):
            vault.read(blob, object_class, job)


def test_output_opens_only_with_its_own_context(embedded: Any, astronaut_jpeg: bytes) -> None:
    """A job's real output opens under its own context only: another job id, another class,
    or the ciphertext copied to another key is corrupt (the context is authenticated)."""
    job_id = embedded.client.submit(astronaut_jpeg, "detect", subject_id="subject-b")
    key = output_key(job_id, "faces.json")
    assert embedded.vault.read(key, "output", job_id)
    with pytest.raises(ObjectCorrupt):
        embedded.vault.read(key, "output", "0" * 32)
    with pytest.raises(ObjectCorrupt):
        embedded.vault.read(key, "original", job_id)
    other = output_key("f" * 32, "faces.json")
    with embedded.store.get(key) as raw:
        embedded.store.put(other, raw)
    with pytest.raises(ObjectCorrupt):
        embedded.vault.read(other, "output", "f" * 32)


def test_too_big(vault: Vault, blob: str) -> None:
    with pytest.raises(ObjectTooBig) as info:
        vault.read(blob, "output", JOB, max_bytes=len(PLAIN) - 1)
    _only_ours(info.value)
    assert vault.read(blob, "output", JOB, max_bytes=len(PLAIN)) == PLAIN


def test_a_key_left_out_of_a_batch_reader_does_not_open(embedded: Any, key_id: str) -> None:
    """``ObjectRecords.reader``: one ledger query for a batch's keys; a destroyed key is left
    out, so its objects do not open, the others do."""
    other = str(embedded.subjects.ensure("vault-subject-2").key_id)
    a, b = output_key(JOB, "a.bin"), output_key(JOB, "b.bin")
    embedded.vault.put(a, "output", JOB, key_id, PLAIN)
    embedded.vault.put(b, "output", JOB, other, PLAIN)
    embedded.subject_keys.destroy(other)
    reader = embedded.records.reader({key_id, other})
    assert reader.read(a, "output", JOB) == PLAIN
    with pytest.raises((ObjectCorrupt, ObjectShredded)):
        reader.read(b, "output", JOB)


@pytest.fixture
def dead_s3(embedded: Any, dead_store: ObjectStore) -> Vault:
    """A vault over a store whose endpoint is down."""
    return Vault(dead_store, embedded.subject_keys)


def test_unavailable_when_the_store_is_down(dead_s3: Vault, key_id: str) -> None:
    key = output_key(JOB, "blob.bin")
    for call in (
        lambda: dead_s3.put(key, "output", JOB, key_id, PLAIN),
        lambda: dead_s3.read(key, "output", JOB),
        lambda: dead_s3.exists(key),
        lambda: dead_s3.delete(key),
    ):
        with pytest.raises(ObjectUnavailable) as info:
            call()
        _only_ours(info.value)


def test_the_deleter_raises_unavailable_too(embedded: Any, dead_s3: Vault) -> None:
    from worker.objects.deleter import Deleter

    deleter = Deleter(embedded.db, dead_s3.store, lambda: datetime.now(UTC))
    with pytest.raises(ObjectUnavailable):
        deleter.delete([Doomed("0" * 32, output_key(JOB, "x.bin"), "output")], "test")
