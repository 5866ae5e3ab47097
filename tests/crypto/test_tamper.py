"""Negative tests: every modified, truncated, reordered or misdirected ciphertext is rejected."""

from __future__ import annotations

import io
import os
from typing import Any, BinaryIO, cast

import pytest

from worker.crypto import (
    DecryptError,
    Envelope,
    InMemorySubjectKeyStore,
    KeyNotFoundError,
    LocalKeyring,
    SubjectKeys,
)

from .conftest import bio

SEG = 64
CSEG = SEG + 16


def split(ct: bytes) -> tuple[bytes, list[bytes]]:
    """Header and ciphertext segments."""
    header = Envelope.header_of(ct).raw
    body = ct[len(header) :]
    return header, [body[i : i + CSEG] for i in range(0, len(body), CSEG)]


def rejected_by_all_paths(env: Envelope, ctx: dict[str, str], ct: bytes) -> None:
    """Every decryption path raises DecryptError (and only that)."""
    with pytest.raises(DecryptError):
        env.open(ctx, ct)
    with pytest.raises(DecryptError):
        env.decrypt_stream(ctx, bio(ct)).read()
    with pytest.raises(DecryptError):
        reader = env.decrypt_stream(ctx, bio(ct))
        while reader.read(7):
            pass


@pytest.fixture
def key_id(subject_keys: SubjectKeys) -> str:
    return subject_keys.create()


@pytest.fixture
def two_segment_ct(small_envelope: Envelope, key_id: str, ctx: dict[str, str]) -> bytes:
    ct = small_envelope.seal(key_id, ctx, os.urandom(SEG + 20))
    assert len(split(ct)[1]) == 2
    return ct


def test_every_single_bit_flip_is_rejected(
    small_envelope: Envelope, ctx: dict[str, str], two_segment_ct: bytes
) -> None:
    ct = two_segment_ct
    failures = []
    for i in range(len(ct) * 8):
        mutated = bytearray(ct)
        mutated[i // 8] ^= 1 << (i % 8)
        for path in ("open", "stream"):
            try:
                if path == "open":
                    small_envelope.open(ctx, bytes(mutated))
                else:
                    small_envelope.decrypt_stream(ctx, bio(bytes(mutated))).read()
            except DecryptError:
                continue
            except Exception as exc:  # the wrong exception type is a failure too
                failures.append((i, path, repr(exc)))
                continue
            failures.append((i, path, "accepted"))
    assert failures == []
    assert small_envelope.open(ctx, ct)  # the original still opens


def test_every_truncation_is_rejected(
    small_envelope: Envelope, ctx: dict[str, str], two_segment_ct: bytes
) -> None:
    ct = two_segment_ct
    for cut in range(len(ct)):
        with pytest.raises(DecryptError):
            small_envelope.open(ctx, ct[:cut])
        with pytest.raises(DecryptError):
            small_envelope.decrypt_stream(ctx, bio(ct[:cut])).read()


def test_appended_bytes_are_rejected(
    small_envelope: Envelope, ctx: dict[str, str], two_segment_ct: bytes
) -> None:
    _, segs = split(two_segment_ct)
    for extra in (b"\x00", os.urandom(16), segs[-1], segs[0]):
        rejected_by_all_paths(small_envelope, ctx, two_segment_ct + extra)


def test_segment_reorder_duplicate_and_drop_are_rejected(
    small_envelope: Envelope, key_id: str, ctx: dict[str, str]
) -> None:
    ct = small_envelope.seal(key_id, ctx, os.urandom(3 * SEG + 10))
    header, segs = split(ct)
    assert len(segs) == 4
    s0, s1, s2, s3 = segs
    variants = {
        "swap 0,1": [s1, s0, s2, s3],
        "swap 1,2": [s0, s2, s1, s3],
        "last first": [s3, s0, s1, s2],
        "duplicate 0": [s0, s0, s1, s2, s3],
        "duplicate 1": [s0, s1, s1, s2, s3],
        "duplicate last": [s0, s1, s2, s3, s3],
        "drop 0": [s1, s2, s3],
        "drop 1": [s0, s2, s3],
        "drop last": [s0, s1, s2],
        "only last": [s3],
        "no segments": [],
    }
    for name, order in variants.items():
        with pytest.raises(DecryptError):
            small_envelope.open(ctx, header + b"".join(order))
        try:
            small_envelope.decrypt_stream(ctx, bio(header + b"".join(order))).read()
        except DecryptError:
            continue
        pytest.fail(f"{name} was accepted")


def test_segments_and_headers_do_not_move_between_objects(
    small_envelope: Envelope, key_id: str, ctx: dict[str, str]
) -> None:
    pt = os.urandom(2 * SEG + 5)
    a = small_envelope.seal(key_id, ctx, pt)
    b = small_envelope.seal(key_id, ctx, pt)  # same subject, context and plaintext
    ha, sa = split(a)
    hb, sb = split(b)
    for mixed in (
        ha + sb[0] + sa[1] + sa[2],
        ha + sa[0] + sb[1] + sa[2],
        ha + sa[0] + sa[1] + sb[2],
        hb + b"".join(sa),
        ha + b"".join(sb),
    ):
        rejected_by_all_paths(small_envelope, ctx, mixed)


def test_wrong_context_is_rejected(
    small_envelope: Envelope, two_segment_ct: bytes, ctx: dict[str, str]
) -> None:
    wrong = [
        {**ctx, "object_key": "originals/job-2"},  # copied to another object key
        {**ctx, "object_class": "output"},
        {**ctx, "job_id": "job-2"},
        {k: v for k, v in ctx.items() if k != "job_id"},
        {**ctx, "extra": ""},
        {},
        {"object_key": ctx["object_key"] + ctx["object_class"]},
    ]
    for context in wrong:
        rejected_by_all_paths(small_envelope, context, two_segment_ct)


def test_wrong_subject_is_rejected(
    small_envelope: Envelope, subject_keys: SubjectKeys, key_id: str, ctx: dict[str, str]
) -> None:
    other = subject_keys.create()
    ct = small_envelope.seal(key_id, ctx, b"secret face bytes")
    assert len(other) == len(key_id)
    swapped = ct.replace(key_id.encode(), other.encode())
    rejected_by_all_paths(small_envelope, ctx, swapped)
    # a subject key that does not exist at all
    unknown = ct.replace(key_id.encode(), ("sk_" + "0" * 32).encode())
    with pytest.raises(KeyNotFoundError):
        small_envelope.open(ctx, unknown)


def test_ciphertext_from_another_key_hierarchy_is_rejected(
    tmp_path: Any, small_envelope: Envelope, ctx: dict[str, str]
) -> None:
    keys = SubjectKeys(LocalKeyring(tmp_path / "other.json"), InMemorySubjectKeyStore())
    foreign = Envelope(keys, segment_size=SEG).seal(keys.create(), ctx, b"data")
    rejected_by_all_paths(small_envelope, ctx, foreign)


@pytest.mark.parametrize("data", [b"", b"FMENC", b"not an envelope at all" * 10, os.urandom(400)])
def test_garbage_is_rejected(small_envelope: Envelope, ctx: dict[str, str], data: bytes) -> None:
    rejected_by_all_paths(small_envelope, ctx, data)


def test_no_plaintext_of_a_failed_segment_is_handed_out(
    small_envelope: Envelope, key_id: str, ctx: dict[str, str]
) -> None:
    pt = bytes(range(256)) * 2  # 512 bytes: 8 segments of 64
    ct = bytearray(small_envelope.seal(key_id, ctx, pt))
    header, _ = split(bytes(ct))
    ct[len(header) + 2 * CSEG + 5] ^= 0x01  # corrupt segment 2
    reader = small_envelope.decrypt_stream(ctx, bio(bytes(ct)))
    assert reader.read(SEG) == pt[:SEG]
    assert reader.read(SEG) == pt[SEG : 2 * SEG]
    with pytest.raises(DecryptError, match="segment 2"):
        reader.read(1)
    with pytest.raises(DecryptError):  # the stream stays failed
        reader.read(1)

    # readinto straight into the caller's buffer: the failed segment's bytes are zeroed
    reader = small_envelope.decrypt_stream(ctx, bio(bytes(ct)))
    buf = bytearray(b"\xaa" * (4 * SEG))
    with pytest.raises(DecryptError):
        reader.readinto(buf)  # type: ignore[attr-defined]
    assert bytes(buf[2 * SEG : 3 * SEG]) == bytes(SEG)

    # writer form: only the authenticated prefix reaches the destination
    out = io.BytesIO()
    with pytest.raises(DecryptError):
        small_envelope.decrypt(ctx, bio(bytes(ct)), cast(BinaryIO, out))
    assert out.getvalue() == pt[: 2 * SEG]
