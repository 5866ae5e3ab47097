"""Key bytes never show in repr/str/exceptions; files appear only when complete; no import I/O."""

from __future__ import annotations

import base64
import io
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest

from worker.crypto import (
    CryptoError,
    DecryptError,
    Envelope,
    FileSubjectKeyStore,
    KekRef,
    KeyringError,
    KeyShreddedError,
    LocalKeyring,
    SecretKey,
    SubjectKeys,
    WrappedKey,
    WrappedSubjectKey,
)
from worker.crypto.keyring_local import _State

from .conftest import CTX, bio

REPO = Path(__file__).resolve().parents[2]


def forms(secret: bytes) -> list[bytes]:
    """Ways key bytes could leak into text."""
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        repr(secret).encode(),
    ]


def assert_no_leak(text: str, secrets: list[bytes]) -> None:
    encoded = text.encode("utf-8", "surrogateescape")
    for secret in secrets:
        for form in forms(secret):
            assert form not in encoded, f"{form[:12]!r}... leaked into {text[:80]!r}"
        # even an 8-byte window of the hex would be a leak
        hex_ = secret.hex()
        for i in range(0, len(hex_) - 16, 8):
            assert hex_[i : i + 16].encode() not in encoded


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    keyring = LocalKeyring(tmp_path / "keys" / "kek.json")
    keys = SubjectKeys(keyring, FileSubjectKeyStore(tmp_path / "keys" / "subjects.json"))
    env = Envelope(keys, segment_size=64)
    key_id = keys.create()
    ct = env.seal(key_id, CTX, b"plaintext face bytes " * 10)
    state = _State.from_json((tmp_path / "keys" / "kek.json").read_bytes())
    kek = state.keks[0].key
    subject_key = keys.unwrap(key_id)
    return {
        "keyring": keyring,
        "keys": keys,
        "env": env,
        "key_id": key_id,
        "ct": ct,
        "secrets": [kek, subject_key.raw()],
        "subject_key": subject_key,
        "tmp": tmp_path,
    }


def test_secret_key_never_prints(world: dict[str, Any]) -> None:
    key: SecretKey = world["subject_key"]
    raw = key.raw()
    percent = "%s" % key  # noqa: UP031
    for text in (repr(key), str(key), f"{key}", f"{key!r}", percent, repr([key])):
        assert_no_leak(text, [raw])
        assert "32 bytes" in text
    with pytest.raises(TypeError):
        pickle.dumps(key)
    with pytest.raises(TypeError):
        bytes(key)
    with pytest.raises(TypeError):
        hash(key)
    assert key == SecretKey(raw) and key != SecretKey(bytes(32))


def test_reprs_show_no_key_material(world: dict[str, Any]) -> None:
    keys: SubjectKeys = world["keys"]
    record = keys.store.get(world["key_id"])
    wrapped = record.wrapped
    objects: list[object] = [
        world["keyring"],
        keys,
        keys.store,
        world["env"],
        record,
        wrapped,
        Envelope.header_of(world["ct"]),
        WrappedKey(KekRef("kr", "v1"), world["secrets"][0]),
        WrappedSubjectKey("sk_x", WrappedKey(KekRef("kr", "v1"), world["secrets"][1])),
        _State.from_json((world["tmp"] / "keys" / "kek.json").read_bytes()),
    ]
    for obj in objects:
        assert_no_leak(repr(obj), world["secrets"] + [wrapped.blob])
        assert_no_leak(str(obj), world["secrets"] + [wrapped.blob])
    assert f"<{len(wrapped.blob)} bytes>" in repr(wrapped)


def collect_errors(world: dict[str, Any]) -> list[BaseException]:
    env: Envelope = world["env"]
    keys: SubjectKeys = world["keys"]
    keyring: LocalKeyring = world["keyring"]
    ct: bytes = world["ct"]
    errors: list[BaseException] = []
    attempts: list[Callable[[], object]] = [
        lambda: env.open({**CTX, "job_id": "x"}, ct),
        lambda: env.open(CTX, ct[:-1]),
        lambda: env.open(CTX, ct[:100]),
        lambda: env.open(CTX, ct[:-20] + bytes(20)),
        lambda: env.open(CTX, b"junk"),
        lambda: keyring.unwrap(keys.store.get(world["key_id"]).wrapped, {"wrong": "ctx"}),
        lambda: keyring.retire(keyring.current().version),
        lambda: keys.unwrap("sk_unknown"),
    ]
    mutated = bytearray(ct)
    mutated[len(Envelope.header_of(ct).raw) - 40] ^= 1  # inside the wrapped data key
    attempts.append(lambda: env.open(CTX, bytes(mutated)))
    for attempt in attempts:
        try:
            attempt()
        except CryptoError as exc:
            errors.append(exc)
    keys.destroy(world["key_id"])
    try:
        env.open(CTX, ct)
    except KeyShreddedError as exc:
        errors.append(exc)
    return errors


def test_exception_messages_show_no_key_material(world: dict[str, Any]) -> None:
    errors = collect_errors(world)
    assert len(errors) == 10
    assert {type(e) for e in errors} >= {DecryptError, KeyringError, KeyShreddedError}
    for exc in errors:
        assert_no_leak(str(exc), world["secrets"])
        assert_no_leak(repr(exc), world["secrets"])
        assert_no_leak(repr(exc.args), world["secrets"])
        assert "plaintext face bytes" not in str(exc)
        for value in CTX.values():
            assert value not in str(exc)


def test_decrypt_to_file_writes_0600_and_leaves_nothing_on_failure(
    world: dict[str, Any], tmp_path: Path
) -> None:
    env: Envelope = world["env"]
    ct: bytes = world["ct"]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "plain.bin"
    assert env.decrypt_to_file(CTX, bio(ct), target) == len(b"plaintext face bytes " * 10)
    assert target.read_bytes() == b"plaintext face bytes " * 10
    assert os.stat(target).st_mode & 0o777 == 0o600

    failing = [
        (CTX, ct[:-1]),  # truncated: fails after earlier segments were written
        (CTX, ct[:-30] + bytes(30)),
        ({**CTX, "job_id": "other"}, ct),  # fails at the header
    ]
    for i, (context, data) in enumerate(failing):
        dst = out_dir / f"fail-{i}.bin"
        with pytest.raises(DecryptError):
            env.decrypt_to_file(context, bio(data), dst)
        assert not dst.exists()
    # an existing file is left as it was
    with pytest.raises(DecryptError):
        env.decrypt_to_file(CTX, bio(ct[:-1]), target)
    assert target.read_bytes() == b"plaintext face bytes " * 10
    assert sorted(p.name for p in out_dir.iterdir()) == ["plain.bin"]


def test_decrypt_to_file_removes_partial_file_when_the_source_breaks(
    world: dict[str, Any], tmp_path: Path
) -> None:
    class Broken(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._buf = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            n = self._buf.readinto(memoryview(b)[:50])
            if self._buf.tell() > 300:
                raise ConnectionResetError("network went away")
            return n

    target = tmp_path / "x.bin"
    with pytest.raises(ConnectionResetError):
        world["env"].decrypt_to_file(CTX, cast(BinaryIO, Broken(world["ct"])), target)
    assert list(tmp_path.glob("*x.bin*")) == []


def test_import_does_no_io(tmp_path: Path) -> None:
    code = (
        "import os, sys; sys.path.insert(0, sys.argv[1]); before = set(os.listdir('.'));"
        "import worker.crypto; assert set(os.listdir('.')) == before; print('ok')"
    )
    env = {**os.environ, "FACEMEDIA_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [sys.executable, "-c", code, str(REPO)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "home").exists()
    assert list(tmp_path.iterdir()) == []
