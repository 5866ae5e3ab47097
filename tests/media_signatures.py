"""Helpers that scan bytes for plaintext media: magic numbers and runs of input bytes."""

from __future__ import annotations

from collections.abc import Iterable

# Signatures searched anywhere must be long enough not to turn up in random ciphertext: a 3-byte
# JPEG start-of-image appears by chance in ~0.06 % of 10 KB ciphertexts (it did, in CI), so it
# is only checked at offset 0, and the JPEG's JFIF/Exif segment names are searched instead.
AT_START = {"jpeg-soi": b"\xff\xd8\xff"}
SIGNATURES = {
    "jpeg-jfif": b"JFIF\x00\x01",
    "jpeg-exif": b"Exif\x00\x00",
    "jpeg-quant": b"\xff\xd8\xff\xe0\x00\x10JFIF",
    "png": b"\x89PNG\r\n\x1a\n",
    "mp4": b"ftypisom",
    "mp4-2": b"ftypmp42",
    "webp": b"WEBPVP8",
    "json-faces": b'"faces"',
}


def plaintext_hits(blob: bytes, inputs: Iterable[bytes] = (), run: int = 32) -> list[str]:
    """Names of the media signatures in ``blob``, plus any ``run``-byte slice of an input."""
    hits = [name for name, sig in AT_START.items() if blob.startswith(sig)]
    hits += [name for name, sig in SIGNATURES.items() if sig in blob]
    for i, data in enumerate(inputs):
        for start in range(0, max(1, len(data) - run), max(1, len(data) // 64)):
            if data[start : start + run] in blob:
                hits.append(f"input{i}@{start}")
                break
    return hits
