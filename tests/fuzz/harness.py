"""Atheris harnesses for the decoders' entry points and the envelope decrypt.

Run one: ``python -m tests.fuzz.harness TARGET [libFuzzer flags...]`` with TARGET one of
``image``, ``video``, ``envelope``. A seed corpus is written to a temp dir (from the hostile
corpus and a sealed envelope) unless a corpus dir is given as a flag argument.

The contract each harness enforces: the entry point returns or raises only its documented
errors (``PipelineError`` subclasses for media, ``CryptoError`` subclasses for the envelope).
Anything else escapes the harness, and atheris reports it as a crash with the input.
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from pathlib import Path
from typing import Any

TARGETS = ("image", "video", "envelope")
CTX = {"object_key": "originals/job-1", "object_class": "original", "job_id": "job-1"}
_SEG = 64


def _envelope() -> tuple[Any, bytes]:
    """An envelope with 64-byte segments (fuzzing reaches multi-segment paths) and a sealed
    3-segment ciphertext."""
    from worker.crypto import Envelope, InMemorySubjectKeyStore, LocalKeyring, SubjectKeys

    keys = SubjectKeys(
        LocalKeyring(Path(tempfile.mkdtemp(prefix="fm-fuzz-")) / "kek.json"),
        InMemorySubjectKeyStore(),
    )
    env = Envelope(keys, segment_size=_SEG)
    key_id = keys.create()
    return env, env.seal(key_id, CTX, bytes(range(200)))


def seeds(target: str) -> list[bytes]:
    """Seed inputs: hostile-corpus cases (small ones) or the sealed ciphertext."""
    if target == "envelope":
        return [b"\x00" + b"\x00" * 8]  # mutation instructions; see envelope_one
    from tests.fixtures.hostile.build import cases

    want = "detect" if target == "image" else "ar"
    return [c.data for c in cases() if c.job_type == want and 0 < len(c.data) <= 300_000]


def image_one(data: bytes) -> None:
    from pipelines.errors import PipelineError
    from pipelines.media import decode_image, probe_image
    from pipelines.media.image import ImageLimits

    limits = ImageLimits(max_pixels=4_000_000, max_side=4096)
    with contextlib.suppress(PipelineError):
        probe_image(data)
    with contextlib.suppress(PipelineError):
        decode_image(data, limits)


def video_one(data: bytes) -> None:
    from pipelines.errors import PipelineError
    from pipelines.media.video import VideoLimits, probe_video

    with contextlib.suppress(PipelineError):
        probe_video(data, VideoLimits(max_duration_s=10.0, max_frames=600))


_ENV: tuple[Any, bytes] | None = None


def envelope_one(data: bytes) -> None:
    """Mutate the sealed ciphertext as ``data`` says (flip bytes, truncate, extend, splice or
    replace it whole), then open it: only CryptoError subclasses may come out, and a changed
    ciphertext must never open."""
    import atheris

    from worker.crypto import CryptoError

    global _ENV
    if _ENV is None:
        _ENV = _envelope()
    env, sealed = _ENV
    fdp = atheris.FuzzedDataProvider(data)
    op = fdp.ConsumeIntInRange(0, 4)
    blob = bytearray(sealed)
    if op == 0:  # flip up to 8 bytes
        for _ in range(fdp.ConsumeIntInRange(1, 8)):
            at = fdp.ConsumeIntInRange(0, len(blob) - 1)
            blob[at] ^= fdp.ConsumeIntInRange(1, 255)
    elif op == 1:  # truncate
        del blob[fdp.ConsumeIntInRange(0, len(blob) - 1) :]
    elif op == 2:  # append
        blob += fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 300))
    elif op == 3:  # overwrite a run with fuzz bytes
        at = fdp.ConsumeIntInRange(0, len(blob) - 1)
        patch = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64))
        blob[at : at + len(patch)] = patch
    else:  # an arbitrary ciphertext
        blob = bytearray(fdp.ConsumeBytes(fdp.remaining_bytes()))
    try:
        plain = env.open(CTX, bytes(blob))
    except CryptoError:
        return
    if bytes(blob) != sealed:
        raise AssertionError("a modified ciphertext opened")
    assert plain == bytes(range(200))


ONE = {"image": image_one, "video": video_one, "envelope": envelope_one}


def main(argv: list[str]) -> None:
    import atheris

    target, flags = argv[1], argv[2:]
    with atheris.instrument_imports():
        import pipelines.media.image
        import pipelines.media.video  # noqa: F401
        import worker.crypto.envelope
        import worker.crypto.format
        import worker.crypto.stream  # noqa: F401
    if not any(not f.startswith("-") for f in flags):
        corpus = Path(tempfile.mkdtemp(prefix=f"fm-fuzz-{target}-"))
        for i, seed in enumerate(seeds(target)):
            (corpus / f"seed-{i}").write_bytes(seed)
        flags.append(str(corpus))
    atheris.Setup([argv[0], *flags], ONE[target])
    atheris.Fuzz()


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.harness {{{','.join(TARGETS)}}} [flags]")
    _ = io  # keep the import for harness extensions
    main(sys.argv)
