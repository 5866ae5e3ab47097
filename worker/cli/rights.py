"""``facemedia erase | export | consent withdraw | hold set|release|show``: data subjects'
rights and legal holds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from worker.cli._common import (
    EXIT_REFUSED,
    JsonOpt,
    YesOpt,
    confirm_or_refuse,
    container,
    emit,
    fail,
    private_writes,
)
from worker.cli.jobs import TenantOpt

if TYPE_CHECKING:
    from worker.bootstrap import Container

consent_app = typer.Typer(no_args_is_help=True, help="Research consent")
hold_app = typer.Typer(no_args_is_help=True, help="Legal holds on a subject or a job")

SubjectArg = Annotated[str, typer.Argument(help="The upstream's subject id")]
HoldSubjectOpt = Annotated[
    str | None, typer.Option("--subject", help="The upstream's subject id (or --job)")
]
HoldJobOpt = Annotated[str | None, typer.Option("--job", help="A job id (or --subject)")]


def _subject_ref(built: Container, subject: str, tenant: str) -> str:
    """The ledger id of the upstream's SUBJECT in TENANT's namespace; exit 2 when unknown."""
    ref = built.subjects.find(subject, tenant=tenant)
    if ref is None:
        raise fail("unknown subject", EXIT_REFUSED, error="not_found")
    return str(ref.id)


HOLD_REASON_HELP = (
    "A reason code: litigation, court_order, regulator_request, law_enforcement, "
    "contract_dispute, security_incident"
)


def erase(
    subject: SubjectArg,
    tenant: TenantOpt = "default",
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Erase SUBJECT: delete every object, destroy the subject key, mark erased (idempotent).
    The erasure is cryptographically complete (no backup can unwrap the key) at the next KEK
    epoch change: `crypto_complete_by`, or now with `keys retire`. Asks first on a terminal;
    --yes is required off one."""
    built = container()
    subject_id = _subject_ref(built, subject, tenant)
    confirm_or_refuse("Erase this subject's data for good?", yes)
    result = built.rights.erase(subject_id, tenant=tenant)
    emit(result.to_json(), as_json, "erase")


def export(
    subject: SubjectArg,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the access report")],
    tenant: TenantOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Write an access report of everything held about SUBJECT, with decrypted outputs."""
    built = container()
    with private_writes():
        subject_id = _subject_ref(built, subject, tenant)
        report = built.rights.export(subject_id, out_dir, tenant=tenant)
    emit(report, as_json, "export")


@consent_app.command("withdraw")
def consent_withdraw(
    subject: SubjectArg, tenant: TenantOpt = "default", as_json: JsonOpt = False
) -> None:
    """Withdraw research consent: samples deleted, excluded from releases, revocation listed."""
    built = container()
    subject_id = _subject_ref(built, subject, tenant)
    result = built.rights.withdraw_consent(subject_id, tenant=tenant)
    emit(result.to_json(), as_json, "consent")


def _hold(
    subject: str | None,
    job: str | None,
    reason: str,
    release: bool,
    as_json: bool,
    note: str | None = None,
    tenant: str = "default",
) -> None:
    from worker.crypto import CryptoError
    from worker.ledger.errors import NotFound
    from worker.retention.holds import HoldNoteTooLong, UnknownHoldReason, parse_reason

    if (subject is None) == (job is None):
        raise fail("name exactly one of --subject or --job", EXIT_REFUSED, error="usage")
    if not release:
        try:  # before any ledger work: free text is refused, never stored or echoed
            parse_reason(reason)
        except UnknownHoldReason as exc:
            raise fail(str(exc), EXIT_REFUSED, error=exc.code) from None
    built = container()
    subject_id = _subject_ref(built, subject, tenant) if subject is not None else None
    try:
        result = built.rights.hold(
            subject_id=subject_id,
            job_id=job,
            reason=reason,
            release=release,
            note=note,
            tenant=tenant,
        )
    except (UnknownHoldReason, HoldNoteTooLong) as exc:
        raise fail(str(exc), EXIT_REFUSED, error=exc.code) from None
    except NotFound as exc:
        raise fail(str(exc), EXIT_REFUSED, error="not_found") from None
    except ValueError as exc:
        raise fail(str(exc), EXIT_REFUSED) from None
    except CryptoError:  # the subject's key is destroyed: nothing can be sealed for them
        raise fail(
            "the subject's key is destroyed (erased)", EXIT_REFUSED, error="note_unsealable"
        ) from None
    emit(result, as_json, "hold")


@hold_app.command("set")
def hold_set(
    reason: Annotated[str, typer.Option("--reason", help=HOLD_REASON_HELP)],
    subject: HoldSubjectOpt = None,
    job: HoldJobOpt = None,
    note: Annotated[
        str | None,
        typer.Option(
            "--note", help="Optional free text, stored sealed under the subject's key only"
        ),
    ] = None,
    tenant: TenantOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Put a legal hold on a subject or a job: its objects survive sweeps and erasure. Only the
    reason code enters the ledger and the audit log; a note is sealed (erasure shreds it)."""
    _hold(subject, job, reason, False, as_json, note, tenant)


@hold_app.command("release")
def hold_release(
    subject: HoldSubjectOpt = None,
    job: HoldJobOpt = None,
    tenant: TenantOpt = "default",
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Release a legal hold (its note is dropped); what is due goes on the next sweep. Asks
    first on a terminal; --yes is required off one."""
    if (subject is None) == (job is None):
        raise fail("name exactly one of --subject or --job", EXIT_REFUSED, error="usage")
    confirm_or_refuse("Release the hold? Objects due for deletion go on the next sweep", yes)
    _hold(subject, job, "", True, as_json, tenant=tenant)


@hold_app.command("show")
def hold_show(
    subject: HoldSubjectOpt = None,
    job: HoldJobOpt = None,
    tenant: TenantOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Show the hold on a subject or a job: reason code and the note (opened with the subject's
    key; unreadable once the subject is erased)."""
    from worker.ledger.errors import NotFound

    if (subject is None) == (job is None):
        raise fail("name exactly one of --subject or --job", EXIT_REFUSED, error="usage")
    built = container()
    subject_id = _subject_ref(built, subject, tenant) if subject is not None else None
    try:
        info = built.rights.hold_info(subject_id=subject_id, job_id=job, tenant=tenant)
    except NotFound as exc:
        raise fail(str(exc), EXIT_REFUSED, error="not_found") from None
    emit(info, as_json, "hold")
