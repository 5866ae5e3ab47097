"""``facemedia audit verify | db upgrade | sweep | doctor``: operating the service."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from worker.cli._common import (
    EXIT_FAILED,
    EXIT_REFUSED,
    JsonOpt,
    container,
    emit,
    fail,
    out,
    quick_ledger,
    settings_failure,
)

if TYPE_CHECKING:
    from worker.ledger.audit import AuditReport
    from worker.ledger.db import QuickReader

audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log")
db_app = typer.Typer(no_args_is_help=True, help="Ledger schema")


def _verify_audit_log() -> AuditReport:
    """The checkpointed verify, over a bare DB-API connection where the ledger allows it (no
    SQLAlchemy import: docs/BENCHMARKS.md, *CLI start-up*), else through the container."""
    from worker.ledger.checkpoints import verify_log
    from worker.ledger.db import quick_reader

    first = quick_ledger()
    if first is None:
        return container().checkpoints.verify()
    from worker.objects.layout import CHECKPOINTS

    built = container()  # lazy: the keyring and the store only, never its ledger
    url = built.settings.effective_database_url
    unused = [first]  # the connection that found the ledger at head serves the first read

    def open_reader() -> QuickReader:
        opened = unused.pop() if unused else quick_reader(url)
        if opened is None:  # migrated or removed since the first look
            raise fail("the ledger changed while it was verified: run again", EXIT_FAILED)
        return opened

    return verify_log(open_reader, built.store, built.audit_auth, CHECKPOINTS)


@audit_app.command("verify")
def audit_verify(as_json: JsonOpt = False) -> None:
    """Check the audit log: hash chain, every entry's MAC, and the newest signed checkpoint in
    the object store (truncation, deletion, re-chaining, a missing or rolled-back checkpoint).
    Exit 1 when anything is wrong; ``problems`` lists {code, seq, message}."""
    from worker.ledger.checkpoints import describe

    report = _verify_audit_log()
    if as_json:
        emit(describe(report), True)
    else:
        data = {k: v for k, v in report.to_json().items() if k != "problems"}
        emit(data, False, "audit")
        for p in report.problems:
            out.print(f"  [red]{p.code}[/red] seq={p.seq}: {p.message}", highlight=False)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


@db_app.command("upgrade")
def db_upgrade(as_json: JsonOpt = False) -> None:
    """Apply Alembic migrations up to head."""
    built = container()
    built.db.migrate()
    revision = built.db.current_revision()
    if as_json:
        emit({"revision": revision}, True)
    else:
        out.print(f"ledger at revision {revision}")


def sweep(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what is due")] = False,
    as_of: Annotated[str, typer.Option("--as-of", help="ISO-8601 time to sweep as of")] = "",
    orphans: Annotated[bool, typer.Option("--orphans", help="Also delete orphan objects")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run every deletion due now (or at --as-of); re-queue stuck jobs; finish erasures."""
    from datetime import UTC, datetime

    from worker.retention.sweep import sweep_and_requeue

    built = container()
    when = None
    if as_of:
        try:
            when = datetime.fromisoformat(as_of)
        except ValueError:
            raise fail(
                "--as-of must be an ISO-8601 time", EXIT_REFUSED, error="bad_params"
            ) from None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
    report = sweep_and_requeue(built.sweeper, built.dispatcher.enqueue, as_of=when, dry_run=dry_run)
    data = report.to_json()
    if orphans:
        data["orphans"] = built.sweeper.orphans(as_of=when, dry_run=dry_run)
    emit(data, as_json, "sweep")


def doctor(as_json: JsonOpt = False) -> None:
    """Check broker, ledger and migrations, bucket (versioning, region), KMS key, clock skew."""
    from worker.doctor import render, run_checks
    from worker.settings import SETTINGS_ERRORS, load_settings

    try:
        settings = load_settings()
    except SETTINGS_ERRORS as exc:  # invalid settings are the first thing to fix
        raise settings_failure(exc) from None
    checks = run_checks(settings)
    failed = [c for c in checks if not c.ok]
    if as_json:
        sys.stdout.write(
            json.dumps({"ok": not failed, "checks": [c.to_json() for c in checks]}) + "\n"
        )
    else:
        render(checks, out)
    if failed:
        raise typer.Exit(EXIT_FAILED)
