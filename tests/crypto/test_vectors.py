"""Known-answer vectors: the committed bytes decrypt, re-encrypt identically, and match the spec.

The vectors are in tests/vectors/envelope_v1.json (rebuild only on purpose with
``python -m tests.crypto.vectors``). ``reference_open`` is an independent decoder written from
docs/ENCRYPTION.md with nothing but ``cryptography`` primitives.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from worker.crypto import DecryptError, canonical_context

from .vectors import VECTORS, build, envelope_for


def load() -> list[dict[str, Any]]:
    doc = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert doc["format_version"] == 1
    vectors: list[dict[str, Any]] = doc["vectors"]
    assert len(vectors) >= 7
    return vectors


def ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in vectors]


def reference_canonical(context: dict[str, str]) -> bytes:
    items = sorted((k.encode(), v.encode()) for k, v in context.items())
    out = struct.pack(">I", len(items))
    for k, v in items:
        out += struct.pack(">I", len(k)) + k + struct.pack(">I", len(v)) + v
    return out


def reference_open(vector: dict[str, Any]) -> tuple[bytes, bytes]:
    """Decrypt a vector following the byte layout of docs/ENCRYPTION.md; return
    (plaintext, content key)."""
    ct = bytes.fromhex(vector["ciphertext"])
    assert ct[:5] == b"FMENC" and ct[5] == 1 and ct[6] == 1
    seg = int.from_bytes(ct[7:11], "big")
    o = 11
    n = ct[o]
    o += 1
    assert ct[o : o + n].decode() == vector["subject_key_id"]
    o += n
    k = ct[o]
    o += 1
    assert ct[o : o + k].decode() == vector["keyring_id"]
    o += k
    v = int.from_bytes(ct[o : o + 2], "big")
    o += 2
    assert ct[o : o + v].decode() == vector["kek_version"]
    o += v
    salt, o = ct[o : o + 32], o + 32
    prefix, o = ct[o : o + 7], o + 7
    wrap_nonce, o = ct[o : o + 12], o + 12
    data_key = AESGCM(bytes.fromhex(vector["subject_key"])).decrypt(
        wrap_nonce, ct[o : o + 48], ct[:o]
    )
    o += 48
    info = ct[:o] + reference_canonical(vector["context"])
    content_key = HKDF(SHA256(), 32, salt, b"FMENC/1 content key\x00" + info).derive(data_key)
    commitment = HKDF(SHA256(), 32, salt, b"FMENC/1 key commitment\x00" + info).derive(data_key)
    assert ct[o : o + 32] == commitment
    o += 32
    body = ct[o:]
    aead = AESGCM(content_key)
    segments = [body[i : i + seg + 16] for i in range(0, len(body), seg + 16)]
    plaintext = b""
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        nonce = prefix + struct.pack(">I", i) + (b"\x01" if last else b"\x00")
        plaintext += aead.decrypt(nonce, segment, None)
    return plaintext, content_key


VECTOR_LIST = load()


@pytest.mark.parametrize("vector", VECTOR_LIST, ids=ids(VECTOR_LIST))
def test_vector_decrypts(vector: dict[str, Any]) -> None:
    env = envelope_for(vector)
    assert env.open(vector["context"], bytes.fromhex(vector["ciphertext"])) == bytes.fromhex(
        vector["plaintext"]
    )


@pytest.mark.parametrize("vector", VECTOR_LIST, ids=ids(VECTOR_LIST))
def test_vector_reencrypts_to_the_same_bytes(vector: dict[str, Any]) -> None:
    env = envelope_for(vector)
    ct = env.seal(vector["subject_key_id"], vector["context"], bytes.fromhex(vector["plaintext"]))
    assert ct.hex() == vector["ciphertext"]
    assert ct.startswith(bytes.fromhex(vector["header"]))


@pytest.mark.parametrize("vector", VECTOR_LIST, ids=ids(VECTOR_LIST))
def test_vector_matches_the_documented_format(vector: dict[str, Any]) -> None:
    plaintext, content_key = reference_open(vector)
    assert plaintext == bytes.fromhex(vector["plaintext"])
    assert content_key.hex() == vector["content_key"]
    assert canonical_context(vector["context"]).hex() == vector["canonical_context"]
    assert reference_canonical(vector["context"]).hex() == vector["canonical_context"]


@pytest.mark.parametrize("vector", VECTOR_LIST, ids=ids(VECTOR_LIST))
def test_vector_with_wrong_context_fails(vector: dict[str, Any]) -> None:
    env = envelope_for(vector)
    with pytest.raises(DecryptError):
        env.open({**vector["context"], "job_id": "another"}, bytes.fromhex(vector["ciphertext"]))


def test_committed_vectors_are_what_the_code_builds() -> None:
    assert build() == VECTOR_LIST
