"""Round trips through every encryption and decryption form, at boundary and random sizes."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any, BinaryIO, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.crypto import DecryptError, Envelope, SubjectKeys

from .conftest import bio

SEG = 64


def sizes(seg: int) -> list[int]:
    return [0, 1, seg - 1, seg, seg + 1, 2 * seg, 3 * seg + 7]


class ReadOnly:
    """Like botocore's StreamingBody: only ``read(n)``, and short reads."""

    def __init__(self, data: bytes, max_chunk: int = 5) -> None:
        self._buf = io.BytesIO(data)
        self._max = max_chunk

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self._buf.read()
        return self._buf.read(min(n, self._max))


class Trickle(io.RawIOBase):
    """A raw stream whose ``readinto`` returns at most a few bytes (like a pipe)."""

    def __init__(self, data: bytes, step: int = 3) -> None:
        self._buf = io.BytesIO(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b)[: self._step]
        return self._buf.readinto(view)


class PartialWriter(io.RawIOBase):
    """A raw sink that accepts at most 10 bytes per write (like a non-blocking socket)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        chunk = bytes(memoryview(b)[:10])
        self.data += chunk
        return len(chunk)


def drain(reader: BinaryIO, read_size: int) -> bytes:
    out = bytearray()
    while chunk := reader.read(read_size):
        assert len(chunk) <= read_size
        out += chunk
    return bytes(out)


def drain_into(reader: Any, size: int) -> bytes:
    out = bytearray()
    buf = bytearray(size)
    while n := reader.readinto(buf):
        out += buf[:n]
    return bytes(out)


def encrypt_forms(
    env: Envelope, key_id: str, ctx: dict[str, str]
) -> dict[str, Callable[[bytes], bytes]]:
    def writer(pt: bytes) -> bytes:
        out = io.BytesIO()
        n = env.encrypt(key_id, ctx, bio(pt), cast(BinaryIO, out))
        assert n == len(out.getvalue())
        return out.getvalue()

    def reader_all(pt: bytes) -> bytes:
        return env.encrypt_stream(key_id, ctx, bio(pt)).read()

    def reader_odd(pt: bytes) -> bytes:
        return drain(env.encrypt_stream(key_id, ctx, bio(pt)), 7)

    def reader_readinto(pt: bytes) -> bytes:
        return drain_into(env.encrypt_stream(key_id, ctx, bio(pt)), env.segment_size + 3)

    def write_side(pt: bytes) -> bytes:
        out = io.BytesIO()
        with env.encrypt_writer(key_id, ctx, cast(BinaryIO, out)) as w:
            for i in range(0, len(pt), 13):
                w.write(pt[i : i + 13])
        return out.getvalue()

    def write_side_big(pt: bytes) -> bytes:
        out = io.BytesIO()
        with env.encrypt_writer(key_id, ctx, cast(BinaryIO, out)) as w:
            w.write(pt)
        return out.getvalue()

    def from_read_only(pt: bytes) -> bytes:
        return env.seal(key_id, ctx, pt)

    def from_trickle(pt: bytes) -> bytes:
        out = io.BytesIO()
        env.encrypt(key_id, ctx, cast(BinaryIO, Trickle(pt)), cast(BinaryIO, out))
        return out.getvalue()

    def to_partial_writer(pt: bytes) -> bytes:
        out = PartialWriter()
        env.encrypt(key_id, ctx, bio(pt), cast(BinaryIO, out))
        return bytes(out.data)

    return {
        "writer": writer,
        "reader_all": reader_all,
        "reader_read7": reader_odd,
        "reader_readinto": reader_readinto,
        "encrypt_writer_13": write_side,
        "encrypt_writer_whole": write_side_big,
        "seal": from_read_only,
        "trickle_source": from_trickle,
        "partial_writes": to_partial_writer,
    }


def decrypt_forms(env: Envelope, ctx: dict[str, str]) -> dict[str, Callable[[bytes], bytes]]:
    seg = env.segment_size

    def writer(ct: bytes) -> bytes:
        out = io.BytesIO()
        n = env.decrypt(ctx, bio(ct), cast(BinaryIO, out))
        assert n == len(out.getvalue())
        return out.getvalue()

    def stream(read_size: int) -> Callable[[bytes], bytes]:
        return lambda ct: drain(env.decrypt_stream(ctx, bio(ct)), read_size)

    return {
        "open": lambda ct: env.open(ctx, ct),
        "writer": writer,
        "read_all": lambda ct: env.decrypt_stream(ctx, bio(ct)).read(),
        "read_1": stream(1),
        "read_7": stream(7),
        "read_seg+3": stream(seg + 3),
        "readinto_seg": lambda ct: drain_into(env.decrypt_stream(ctx, bio(ct)), seg),
        "readinto_5": lambda ct: drain_into(env.decrypt_stream(ctx, bio(ct)), 5),
        "streaming_body": lambda ct: env.decrypt_stream(ctx, ReadOnly(ct)).read(),
        "trickle": lambda ct: drain(env.decrypt_stream(ctx, Trickle(ct)), 11),
        "partial_writes": lambda ct: _decrypt_partial(env, ctx, ct),
    }


def _decrypt_partial(env: Envelope, ctx: dict[str, str], ct: bytes) -> bytes:
    out = PartialWriter()
    env.decrypt(ctx, bio(ct), cast(BinaryIO, out))
    return bytes(out.data)


@pytest.mark.parametrize("size", sizes(SEG))
def test_every_form_round_trips_at_boundaries(
    small_envelope: Envelope, subject_keys: SubjectKeys, ctx: dict[str, str], size: int
) -> None:
    key_id = subject_keys.create()
    pt = os.urandom(size)
    expected_len = None
    for enc_name, enc in encrypt_forms(small_envelope, key_id, ctx).items():
        ct = enc(pt)
        header_len = len(Envelope.header_of(ct).raw)
        if expected_len is None:
            expected_len = Envelope.ciphertext_length(header_len, size, SEG)
        assert len(ct) == expected_len, enc_name
        for dec_name, dec in decrypt_forms(small_envelope, ctx).items():
            assert dec(ct) == pt, (enc_name, dec_name)


@pytest.mark.parametrize("size", sizes(65536))
def test_default_segment_size_round_trips(
    envelope: Envelope, subject_keys: SubjectKeys, ctx: dict[str, str], size: int
) -> None:
    key_id = subject_keys.create()
    pt = os.urandom(size)
    ct = envelope.seal(key_id, ctx, pt)
    assert envelope.open(ctx, ct) == pt
    assert drain(envelope.decrypt_stream(ctx, bio(ct)), 65536 + 3) == pt
    assert drain(envelope.encrypt_stream(key_id, ctx, bio(pt)), 7777) != b""
    segments = max(1, -(-size // 65536))
    assert len(ct) == len(Envelope.header_of(ct).raw) + size + 16 * segments


def test_ciphertext_is_fresh_each_time(
    small_envelope: Envelope, subject_keys: SubjectKeys, ctx: dict[str, str]
) -> None:
    key_id = subject_keys.create()
    a = small_envelope.seal(key_id, ctx, b"same plaintext")
    b = small_envelope.seal(key_id, ctx, b"same plaintext")
    assert a != b
    assert b"same plaintext" not in a


def test_header_names_subject_key_and_kek(
    small_envelope: Envelope, subject_keys: SubjectKeys, ctx: dict[str, str]
) -> None:
    key_id = subject_keys.create()
    ct = small_envelope.seal(key_id, ctx, b"x" * 100)
    header = Envelope.header_of(ct)
    assert header.subject_key_id == key_id
    assert header.keyring_id == subject_keys.keyring.keyring_id
    assert header.kek_version == subject_keys.keyring.current().version
    assert header.segment_size == SEG
    assert Envelope.key_id_of(ct) == key_id
    # the context is authenticated, not stored
    for value in ctx.values():
        assert value.encode() not in ct
    stream = io.BytesIO(ct)
    stream.seek(3)
    with pytest.raises(DecryptError):
        Envelope.key_id_of(cast(BinaryIO, stream))
    assert stream.tell() == 3
    stream.seek(0)
    assert Envelope.key_id_of(cast(BinaryIO, stream)) == key_id
    assert stream.tell() == 0  # seekable streams are rewound


def test_context_order_does_not_matter(
    small_envelope: Envelope, subject_keys: SubjectKeys, ctx: dict[str, str]
) -> None:
    key_id = subject_keys.create()
    ct = small_envelope.seal(key_id, ctx, b"data")
    reordered = dict(reversed(list(ctx.items())))
    assert small_envelope.open(reordered, ct) == b"data"


def test_decrypt_stream_tell_and_close(
    small_envelope: Envelope, subject_keys: SubjectKeys, ctx: dict[str, str]
) -> None:
    key_id = subject_keys.create()
    pt = os.urandom(300)
    reader = small_envelope.decrypt_stream(ctx, bio(small_envelope.seal(key_id, ctx, pt)))
    assert reader.readable()
    assert reader.read(10) == pt[:10]
    assert reader.tell() == 10
    assert reader.read(0) == b""
    reader.close()
    with pytest.raises(ValueError):
        reader.read(1)


def test_encrypt_writer_abort_on_exception_leaves_undecryptable_output(
    small_envelope: Envelope, subject_keys: SubjectKeys, ctx: dict[str, str]
) -> None:
    key_id = subject_keys.create()
    out = io.BytesIO()
    with (
        pytest.raises(RuntimeError),
        small_envelope.encrypt_writer(key_id, ctx, cast(BinaryIO, out)) as w,
    ):
        w.write(b"a" * 200)
        raise RuntimeError("producer failed")
    with pytest.raises(DecryptError):
        small_envelope.open(ctx, out.getvalue())


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    data=st.binary(min_size=0, max_size=2000),
    segment_size=st.integers(min_value=1, max_value=300),
    read_size=st.integers(min_value=1, max_value=700),
    write_size=st.integers(min_value=1, max_value=700),
)
def test_random_sizes_round_trip(
    subject_keys: SubjectKeys,
    ctx: dict[str, str],
    data: bytes,
    segment_size: int,
    read_size: int,
    write_size: int,
) -> None:
    env = Envelope(subject_keys, segment_size=segment_size)
    key_id = subject_keys.create()
    ct = drain(env.encrypt_stream(key_id, ctx, bio(data)), read_size)
    assert env.open(ctx, ct) == data
    assert drain(env.decrypt_stream(ctx, bio(ct)), read_size) == data
    out = io.BytesIO()
    with env.encrypt_writer(key_id, ctx, cast(BinaryIO, out)) as w:
        for i in range(0, len(data), write_size):
            w.write(data[i : i + write_size])
    assert len(out.getvalue()) == len(ct)
    assert env.open(ctx, out.getvalue()) == data


def test_invalid_segment_size_is_refused(subject_keys: SubjectKeys) -> None:
    for bad in (0, -1, 16 * 1024 * 1024 + 1):
        with pytest.raises(ValueError):
            Envelope(subject_keys, segment_size=bad)
