"""``facemedia crypto encrypt | decrypt``: files in and out of the envelope format."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from worker.cli._common import (
    EXIT_FAILED,
    EXIT_REFUSED,
    JsonOpt,
    SubjectOpt,
    container,
    emit,
    fail,
    private_writes,
    quick_ledger,
)

if TYPE_CHECKING:
    from worker.bootstrap import Container
    from worker.crypto import Envelope

crypto_app = typer.Typer(no_args_is_help=True, help="Encrypt and decrypt files (envelope format)")

SrcArg = Annotated[Path, typer.Argument(help="The input file")]
DstArg = Annotated[Path, typer.Argument(help="The output file (written 0600, atomically)")]
ContextOpt = Annotated[
    list[str], typer.Option("--context", help="Encryption context entry key=value (repeatable)")
]


def _context(pairs: list[str]) -> dict[str, str]:
    ctx: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise fail("--context takes key=value", EXIT_REFUSED, error="bad_params")
        ctx[key] = value
    return ctx


def _crypto_setup(src: Path, context: list[str]) -> tuple[Container, dict[str, str]]:
    """The container and the parsed context; refuses a missing input before any key work."""
    built = container()
    ctx = _context(context)
    if not src.is_file():
        raise fail("input file not found", EXIT_REFUSED, error="not_found")
    return built, ctx


@contextmanager
def _known_subject(built: Container, subject: str) -> Iterator[tuple[Envelope, str] | None]:
    """An envelope over a read-only DB-API connection and the subject's key id, when the ledger
    knows SUBJECT live (no SQLAlchemy import: docs/BENCHMARKS.md, *CLI start-up*); None when
    the command must go through the container."""
    reader = quick_ledger()
    if reader is None:
        yield None
        return
    from worker.ledger.quick_reads import QuickSubjectKeyStore, live_subject_key_id

    with reader:
        key_id = live_subject_key_id(reader, built.keyring, subject)
        if key_id is not None:
            yield built.envelope_over(QuickSubjectKeyStore(reader)), key_id
            return
    yield None  # the quick connection closed: the registry may write


@crypto_app.command("encrypt")
def crypto_encrypt(
    src: SrcArg,
    dst: DstArg,
    subject: SubjectOpt,
    context: ContextOpt = [],  # noqa: B006
    as_json: JsonOpt = False,
) -> None:
    """Encrypt SRC to DST under SUBJECT's key, binding the context."""
    from worker.crypto import CryptoError
    from worker.ledger.errors import SubjectErasurePending
    from worker.private_files import private_output

    built, ctx = _crypto_setup(src, context)
    try:
        with _known_subject(built, subject) as found:
            if found is not None:
                envelope, key_id = found
            else:  # a new subject, a returning one, a pending erasure: the registry decides
                envelope, key_id = built.envelope, built.subjects.ensure(subject).key_id
            with private_writes(), src.open("rb") as fin, private_output(dst) as fout:
                envelope.encrypt(key_id, ctx, fin, fout)
    except SubjectErasurePending as exc:
        raise fail(str(exc), EXIT_REFUSED, error=exc.code) from None
    except CryptoError as exc:
        raise fail(f"encryption failed: {exc}", EXIT_FAILED, error="encryption_failed") from None
    emit({"path": str(dst), "bytes": dst.stat().st_size}, as_json, "encrypt")


@crypto_app.command("decrypt")
def crypto_decrypt(
    src: SrcArg,
    dst: DstArg,
    subject: SubjectOpt,
    context: ContextOpt = [],  # noqa: B006
    as_json: JsonOpt = False,
) -> None:
    """Decrypt SRC to DST; fails (and leaves no DST) on any tampering or wrong context/subject."""
    from worker.crypto import CryptoError, DecryptError, Envelope
    from worker.private_files import private_output

    built, ctx = _crypto_setup(src, context)
    try:
        ref = built.subjects.find(subject)
        with src.open("rb") as fin:
            if ref is None or Envelope.key_id_of(fin) != ref.key_id:
                raise DecryptError("not encrypted for this subject")
            fin.seek(0)
            # Plaintext: a 0600 temp file beside DST, renamed only once fully authenticated.
            with private_writes(), private_output(dst) as fout:
                built.envelope.decrypt(ctx, fin, fout)
    except CryptoError as exc:
        raise fail(f"decryption failed: {exc}", EXIT_FAILED, error="decryption_failed") from None
    emit({"path": str(dst), "bytes": dst.stat().st_size}, as_json, "decrypt")
