"""The plaintext scanner finds plaintext media and does not fire on random ciphertext."""

from __future__ import annotations

import random

from tests.media_signatures import plaintext_hits


def test_finds_plaintext_media_and_input_runs(astronaut_jpeg: bytes) -> None:
    assert "jpeg-soi" in plaintext_hits(astronaut_jpeg)
    # input runs are sampled every len/64 bytes: any leak longer than that is found
    assert plaintext_hits(b"prefix" + astronaut_jpeg[1000:4000], [astronaut_jpeg])
    assert "png" in plaintext_hits(b"..\x89PNG\r\n\x1a\n..")


def test_quiet_on_random_bytes() -> None:
    rng = random.Random(7)
    blob = rng.randbytes(4 * 1024 * 1024)
    blob = blob.replace(b"\xff\xd8\xff", b"\x00\xd8\xff")  # keep offset 0 honest
    assert plaintext_hits(b"\x00" + blob[1:], [rng.randbytes(50_000)]) == []
