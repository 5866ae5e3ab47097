"""Known-answer vectors for envelope format v1: the cases, and how to rebuild them.

``python -m tests.crypto.vectors`` rewrites ``tests/vectors/envelope_v1.json``. Only do that on
purpose (a new format version gets a new file); the tests compare against the committed file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from worker.crypto import (
    Envelope,
    InMemorySubjectKeyStore,
    KekRef,
    SubjectKeys,
    WrappedKey,
    WrappedSubjectKey,
    canonical_context,
)
from worker.crypto.format import derive_keys

from .conftest import StaticKeyring

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "envelope_v1.json"

CASES: list[dict[str, Any]] = [
    {"name": "empty plaintext", "segment_size": 64, "plaintext_len": 0},
    {"name": "one byte", "segment_size": 64, "plaintext_len": 1},
    {"name": "one full segment", "segment_size": 64, "plaintext_len": 64},
    {"name": "four segments, last partial", "segment_size": 64, "plaintext_len": 3 * 64 + 7},
    {"name": "default segment size", "segment_size": 65536, "plaintext_len": 100},
    {
        "name": "non-ASCII context",
        "segment_size": 16,
        "plaintext_len": 40,
        "context": {
            "object_key": "outputs/j-9/avatar-ü.png",
            "object_class": "output",
            "job_id": "j-9",
            "note": "面",
        },
    },
    {"name": "empty context", "segment_size": 32, "plaintext_len": 33, "context": {}},
]

DEFAULT_CONTEXT = {"object_key": "originals/job-42", "object_class": "original", "job_id": "job-42"}


def fixed(label: str, size: int) -> bytes:
    """Deterministic bytes for a vector field."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"facemedia-kat/{label}/{counter}".encode()).digest()
        counter += 1
    return out[:size]


def sequence(*values: bytes) -> Callable[[int], bytes]:
    """A ``randbytes`` that returns the given values in order (and checks their sizes)."""
    queue: Iterator[bytes] = iter(values)

    def randbytes(n: int) -> bytes:
        value = next(queue)
        assert len(value) == n, (len(value), n)
        return value

    return randbytes


def envelope_for(vector: dict[str, Any]) -> Envelope:
    """An Envelope whose subject key and randomness are the vector's."""
    kek = KekRef(vector["keyring_id"], vector["kek_version"])
    store = InMemorySubjectKeyStore()
    store.add(
        WrappedSubjectKey(
            vector["subject_key_id"], WrappedKey(kek, bytes.fromhex(vector["subject_key"]))
        )
    )
    keys = SubjectKeys(StaticKeyring(kek.keyring_id, kek.version), store)
    return Envelope(
        keys,
        segment_size=vector["segment_size"],
        randbytes=sequence(
            bytes.fromhex(vector["data_key"]),
            bytes.fromhex(vector["salt"]),
            bytes.fromhex(vector["nonce_prefix"]),
            bytes.fromhex(vector["wrap_nonce"]),
        ),
    )


def build() -> list[dict[str, Any]]:
    """Compute every vector with the current implementation."""
    vectors = []
    for i, case in enumerate(CASES):
        context = case.get("context", DEFAULT_CONTEXT)
        vector: dict[str, Any] = {
            "name": case["name"],
            "segment_size": case["segment_size"],
            "subject_key_id": "sk_" + fixed(f"{i}/id", 16).hex(),
            "subject_key": fixed(f"{i}/subject-key", 32).hex(),
            "keyring_id": "local-" + fixed(f"{i}/keyring", 8).hex(),
            "kek_version": "v3",
            "data_key": fixed(f"{i}/data-key", 32).hex(),
            "salt": fixed(f"{i}/salt", 32).hex(),
            "nonce_prefix": fixed(f"{i}/prefix", 7).hex(),
            "wrap_nonce": fixed(f"{i}/wrap-nonce", 12).hex(),
            "context": context,
            "plaintext": bytes(j % 251 for j in range(case["plaintext_len"])).hex(),
        }
        env = envelope_for(vector)
        ct = env.seal(vector["subject_key_id"], context, bytes.fromhex(vector["plaintext"]))
        header = Envelope.header_of(ct)
        content_key, commitment = derive_keys(
            bytes.fromhex(vector["data_key"]),
            header.salt,
            header.before_commitment,
            canonical_context(context),
        )
        vector["canonical_context"] = canonical_context(context).hex()
        vector["header"] = header.raw.hex()
        vector["content_key"] = content_key.hex()
        vector["commitment"] = commitment.hex()
        vector["ciphertext"] = ct.hex()
        vectors.append(vector)
    return vectors


def main() -> None:
    vectors = build()
    doc = {
        "description": "facemedia envelope format v1 known-answer vectors (docs/ENCRYPTION.md). "
        "Inputs: subject key, data key, salt, nonce prefix, wrap nonce, context, plaintext. "
        "Intermediates: canonical_context, header, content_key, commitment.",
        "format_version": 1,
        "vectors": vectors,
    }
    VECTORS.parent.mkdir(parents=True, exist_ok=True)
    VECTORS.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(vectors)} vectors to {VECTORS}")


if __name__ == "__main__":
    main()
