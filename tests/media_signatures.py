"""Helpers that scan bytes for plaintext media: magic numbers and runs of input bytes."""

from __future__ import annotations

from collections.abc import Iterable

SIGNATURES = {
    "jpeg": b"\xff\xd8\xff",
    "png": b"\x89PNG\r\n\x1a\n",
    "mp4": b"ftypisom",
    "mp4-2": b"ftypmp42",
    "webp": b"WEBPVP8",
    "json-faces": b'"faces"',
}


def plaintext_hits(blob: bytes, inputs: Iterable[bytes] = (), run: int = 32) -> list[str]:
    """Names of the media signatures in ``blob``, plus any ``run``-byte slice of an input."""
    hits = [name for name, sig in SIGNATURES.items() if sig in blob]
    for i, data in enumerate(inputs):
        for start in range(0, max(1, len(data) - run), max(1, len(data) // 64)):
            if data[start : start + run] in blob:
                hits.append(f"input{i}@{start}")
                break
    return hits
