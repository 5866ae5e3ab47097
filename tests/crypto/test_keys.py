"""Keyrings, subject-key stores, shredding and rotation."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from worker.crypto import (
    DecryptError,
    Envelope,
    FileSubjectKeyStore,
    InMemorySubjectKeyStore,
    KekRef,
    KeyNotFoundError,
    KeyringError,
    KeyShreddedError,
    KeyStoreError,
    LocalKeyring,
    SubjectKeys,
    SubjectKeyStore,
    WrappedKey,
    WrappedSubjectKey,
)

CTX = {"object_key": "outputs/j/avatar.png", "object_class": "output", "job_id": "j"}


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- LocalKeyring -----------------------------------------------------------------------------


def test_local_keyring_file_is_created_0600_in_a_0700_dir_on_first_use(tmp_path: Path) -> None:
    path = tmp_path / "home" / "keys" / "kek.json"
    keyring = LocalKeyring(path)
    assert not path.exists()  # no I/O in the constructor
    wrapped = keyring.wrap(b"k" * 32, {"a": "b"})
    assert path.exists()
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert wrapped.kek == KekRef(keyring.keyring_id, "v1")
    assert keyring.keyring_id.startswith("local-")
    assert keyring.region is None
    assert keyring.versions() == ["v1"]
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_local_keyring_wrap_is_bound_to_context_and_version(tmp_path: Path) -> None:
    keyring = LocalKeyring(tmp_path / "kek.json")
    wrapped = keyring.wrap(b"\x01" * 32, {"purpose": "x"})
    assert keyring.unwrap(wrapped, {"purpose": "x"}) == b"\x01" * 32
    with pytest.raises(KeyringError):
        keyring.unwrap(wrapped, {"purpose": "y"})
    with pytest.raises(KeyringError):
        keyring.unwrap(WrappedKey(KekRef(keyring.keyring_id, "v9"), wrapped.blob), {"purpose": "x"})
    with pytest.raises(KeyringError):
        keyring.unwrap(WrappedKey(KekRef("local-other", "v1"), wrapped.blob), {"purpose": "x"})
    tampered = bytearray(wrapped.blob)
    tampered[-1] ^= 1
    with pytest.raises(KeyringError):
        keyring.unwrap(WrappedKey(wrapped.kek, bytes(tampered)), {"purpose": "x"})
    with pytest.raises(KeyringError):
        keyring.wrap(b"short", {})


def test_local_keyring_rotate_and_retire(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    keyring = LocalKeyring(path)
    old = keyring.wrap(b"\x02" * 32, CTX)
    ref = keyring.rotate()
    assert ref.version == "v2" and keyring.current() == ref
    new = keyring.wrap(b"\x02" * 32, CTX)
    assert new.kek.version == "v2"
    assert keyring.unwrap(old, CTX) == b"\x02" * 32
    with pytest.raises(KeyringError):
        keyring.retire("v2")  # current
    with pytest.raises(KeyringError):
        keyring.retire("v77")  # unknown
    with pytest.raises(KeyringError):
        keyring.rotate("some-kms-key")
    keyring.retire("v1")
    keyring.retire("v1")  # idempotent
    assert keyring.versions() == ["v2"]
    with pytest.raises(KeyringError, match="retired"):
        keyring.unwrap(old, CTX)
    assert keyring.rotate().version == "v3"  # versions are never reused
    doc = json.loads(path.read_text())
    assert [k["version"] for k in doc["keks"]] == ["v2", "v3"]
    assert [r["version"] for r in doc["retired"]] == ["v1"]
    assert mode(path) == 0o600


def test_local_keyring_sees_changes_made_by_another_instance(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    a, b = LocalKeyring(path), LocalKeyring(path)
    wrapped = a.wrap(b"\x03" * 32, CTX)
    assert b.unwrap(wrapped, CTX) == b"\x03" * 32
    assert b.rotate().version == "v2"
    assert a.current().version == "v2"  # a notices the replaced file
    assert a.wrap(b"\x03" * 32, CTX).kek.version == "v2"
    b.retire("v1")
    with pytest.raises(KeyringError):
        a.unwrap(wrapped, CTX)


def test_local_keyring_does_not_recreate_a_vanished_file(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    keyring = LocalKeyring(path)
    wrapped = keyring.wrap(b"\x04" * 32, CTX)
    path.unlink()
    with pytest.raises(KeyringError, match="disappeared"):
        keyring.unwrap(wrapped, CTX)
    with pytest.raises(KeyringError, match="disappeared"):
        keyring.wrap(b"\x04" * 32, CTX)
    assert not path.exists()
    # a new instance on an empty location starts a new keyring, which refuses the old wraps
    fresh = LocalKeyring(path)
    with pytest.raises(KeyringError, match="not by this one"):
        fresh.unwrap(wrapped, CTX)


def _rotate_many(path: str, times: int) -> None:
    keyring = LocalKeyring(Path(path))
    for _ in range(times):
        keyring.rotate()


def test_concurrent_rotations_in_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    LocalKeyring(path).current()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_rotate_many, args=(str(path), 5)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert LocalKeyring(path).versions() == [f"v{i}" for i in range(1, 12)]


def test_local_keyring_refuses_a_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    LocalKeyring(path).current()
    os.chmod(path, 0o644)
    with pytest.raises(KeyringError, match="0600"):
        LocalKeyring(path).current()


def test_local_keyring_refuses_a_malformed_file(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    path.write_text('{"format": "facemedia-local-keyring", "format_version": 1}')
    os.chmod(path, 0o600)
    with pytest.raises(KeyringError, match="malformed"):
        LocalKeyring(path).current()


# -- subject-key stores ----------------------------------------------------------------------


def stores(tmp_path: Path) -> list[SubjectKeyStore]:
    return [InMemorySubjectKeyStore(), FileSubjectKeyStore(tmp_path / "keys" / "subjects.json")]


@pytest.mark.parametrize("kind", [0, 1], ids=["memory", "file"])
def test_store_contract(tmp_path: Path, kind: int) -> None:
    store = stores(tmp_path)[kind]
    w1 = WrappedSubjectKey("sk_1", WrappedKey(KekRef("kr", "v1"), b"blob-1"))
    w2 = WrappedSubjectKey("sk_2", WrappedKey(KekRef("kr", "v1"), b"blob-2"))
    store.add(w1)
    store.add(w2)
    assert store.get("sk_1") == w1
    assert sorted(store.ids()) == ["sk_1", "sk_2"]
    with pytest.raises(KeyStoreError):
        store.add(w1)
    with pytest.raises(KeyNotFoundError):
        store.get("sk_3")
    with pytest.raises(KeyNotFoundError):
        store.replace(WrappedSubjectKey("sk_3", w1.wrapped))
    rewrapped = WrappedSubjectKey("sk_1", WrappedKey(KekRef("kr", "v2"), b"blob-1b"))
    store.replace(rewrapped)
    assert store.get("sk_1") == rewrapped
    store.destroy("sk_1")
    store.destroy("sk_1")  # idempotent
    with pytest.raises(KeyShreddedError):
        store.get("sk_1")
    with pytest.raises(KeyShreddedError):
        store.replace(rewrapped)  # rotation never resurrects
    with pytest.raises(KeyStoreError):
        store.add(w1)  # nor does a new add under the same id
    assert list(store.ids()) == ["sk_2"]
    assert store.is_destroyed("sk_1") and not store.is_destroyed("sk_2")
    assert not store.is_destroyed("never")


def test_file_store_persists_and_keeps_no_wrap_of_destroyed_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "subjects.json"
    store = FileSubjectKeyStore(path)
    store.add(WrappedSubjectKey("sk_a", WrappedKey(KekRef("kr", "v1"), b"\x00wrapped-a\xff")))
    store.add(WrappedSubjectKey("sk_b", WrappedKey(KekRef("kr", "v1"), b"wrapped-b")))
    assert mode(path) == 0o600
    reopened = FileSubjectKeyStore(path)
    assert reopened.get("sk_a").wrapped.blob == b"\x00wrapped-a\xff"
    reopened.destroy("sk_a")
    assert b"d3JhcHBlZC1h" not in path.read_bytes()  # base64 of the wrap is gone
    with pytest.raises(KeyShreddedError):
        store.get("sk_a")  # the first instance sees the other's change
    os.chmod(path, 0o640)
    with pytest.raises(KeyStoreError, match="0600"):
        FileSubjectKeyStore(path).get("sk_b")


# -- SubjectKeys: shredding and rotation ------------------------------------------------------


@pytest.fixture
def file_keys(tmp_path: Path) -> SubjectKeys:
    return SubjectKeys(
        LocalKeyring(tmp_path / "keys" / "kek.json"),
        FileSubjectKeyStore(tmp_path / "keys" / "subjects.json"),
    )


def test_subject_key_ids_are_opaque_and_keys_random(file_keys: SubjectKeys) -> None:
    a, b = file_keys.create(), file_keys.create()
    assert a != b and a.startswith("sk_") and len(a) == 35
    assert file_keys.unwrap(a) != file_keys.unwrap(b)
    assert len(file_keys.unwrap(a)) == 32
    assert file_keys.unwrap(a) == file_keys.unwrap(a)


def test_shredding_makes_every_copy_unreadable(file_keys: SubjectKeys, tmp_path: Path) -> None:
    env = Envelope(file_keys, segment_size=128)
    subject = file_keys.create()
    bystander = file_keys.create()
    ct = env.seal(subject, CTX, b"face" * 100)
    other = env.seal(bystander, CTX, b"someone else")
    copy = tmp_path / "backup.bin"
    copy.write_bytes(ct)  # e.g. an old object version or a backup
    assert env.open(CTX, copy.read_bytes()) == b"face" * 100

    file_keys.destroy(subject)

    with pytest.raises(KeyShreddedError):
        env.open(CTX, copy.read_bytes())
    with pytest.raises(KeyShreddedError):
        env.decrypt_stream(CTX, copy.open("rb"))
    with pytest.raises(KeyShreddedError):
        file_keys.unwrap(subject)
    with pytest.raises(KeyShreddedError):
        env.seal(subject, CTX, b"new data for an erased subject")
    assert isinstance(KeyShreddedError("x"), DecryptError)
    assert file_keys.is_destroyed(subject)
    # a fresh process (new instances over the same files) agrees
    reopened = SubjectKeys(
        LocalKeyring(tmp_path / "keys" / "kek.json"),
        FileSubjectKeyStore(tmp_path / "keys" / "subjects.json"),
    )
    with pytest.raises(KeyShreddedError):
        Envelope(reopened).open(CTX, ct)
    assert Envelope(reopened).open(CTX, other) == b"someone else"


def test_rotation_rewraps_subject_keys_and_old_objects_still_open(
    file_keys: SubjectKeys, tmp_path: Path
) -> None:
    env = Envelope(file_keys, segment_size=128)
    subjects = [file_keys.create() for _ in range(3)]
    objects = {s: env.seal(s, CTX, s.encode() * 10) for s in subjects}
    destroyed = file_keys.create()
    file_keys.destroy(destroyed)
    before = {s: file_keys.store.get(s).wrapped for s in subjects}

    assert file_keys.rotate_kek() == 3

    keyring = file_keys.keyring
    assert keyring.versions() == ["v1", "v2"]
    for s in subjects:
        after = file_keys.store.get(s).wrapped
        assert after.kek.version == "v2" and after.blob != before[s].blob
    with pytest.raises(KeyShreddedError):
        file_keys.store.get(destroyed)  # not resurrected
    for s, ct in objects.items():
        assert env.open(CTX, ct) == s.encode() * 10  # objects untouched, still open

    file_keys.retire_kek("v1")
    assert keyring.versions() == ["v2"]
    for s, ct in objects.items():
        assert env.open(CTX, ct) == s.encode() * 10
    # old wraps are dead for good
    with pytest.raises(KeyringError):
        keyring.unwrap(
            before[subjects[0]],
            {"facemedia:purpose": "subject-key", "facemedia:subject_key_id": subjects[0]},
        )
    assert file_keys.rewrap() == 0  # nothing stale


def test_retire_refuses_while_subject_keys_still_use_the_version(file_keys: SubjectKeys) -> None:
    key_id = file_keys.create()
    file_keys.keyring.rotate()  # rotated, but not re-wrapped (e.g. a crash in between)
    with pytest.raises(KeyStoreError, match="rewrap"):
        file_keys.retire_kek("v1")
    assert file_keys.rewrap() == 1
    assert file_keys.rewrap() == 0
    file_keys.retire_kek("v1")
    assert len(file_keys.unwrap(key_id)) == 32


def test_subject_key_wrap_is_bound_to_its_id(file_keys: SubjectKeys) -> None:
    a, b = file_keys.create(), file_keys.create()
    store = file_keys.store
    # put a's wrap under b's id: unwrapping must fail, not hand out a's key as b's
    store.replace(WrappedSubjectKey(b, store.get(a).wrapped))
    with pytest.raises(KeyringError):
        file_keys.unwrap(b)


def test_malformed_key_ids_are_refused(file_keys: SubjectKeys) -> None:
    for bad in ("", "has space", "x" * 256, "é"):
        with pytest.raises(KeyNotFoundError):
            file_keys.unwrap(bad)
