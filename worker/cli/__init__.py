"""The ``facemedia`` command (typer + rich). Entry points only translate: no logic lives here.

One module per command group — :mod:`.jobs` (run, submit, status, result, demo), :mod:`.crypto`,
:mod:`.keys`, :mod:`.rights` (erase, export, consent, hold), :mod:`.ops` (audit, db, sweep,
doctor), :mod:`.research` — sharing :mod:`._common` (output, failures, the container). Importing
this package loads typer and rich only: every command imports what it needs when it runs, so
the commands that process no media never load OpenCV, SciPy, PyAV, Celery or boto3
(``tests/unit/test_cli_imports.py``; figures in docs/BENCHMARKS.md, *CLI start-up*).
"""

from __future__ import annotations

import sys

import typer

from worker.cli import jobs, ops, rights
from worker.cli._common import exit_quickly
from worker.cli.crypto import crypto_app
from worker.cli.keys import keys_app
from worker.cli.ops import audit_app, db_app
from worker.cli.research import research_app
from worker.cli.rights import consent_app, hold_app

# No local variables in tracebacks: they could hold key bytes, subject ids or decrypted media.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="facemedia worker tools",
    pretty_exceptions_show_locals=False,
)
app.add_typer(crypto_app, name="crypto")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(db_app, name="db")
app.add_typer(consent_app, name="consent")
app.add_typer(hold_app, name="hold")
app.add_typer(research_app, name="research")
for _command in (
    jobs.run,
    jobs.submit,
    jobs.status,
    jobs.result,
    jobs.demo,
    rights.erase,
    rights.export,
    ops.sweep,
    ops.doctor,
):
    app.command()(_command)


def _checkpoint_after_command() -> None:
    """End of a command: a signed checkpoint of the audit head if the command appended entries
    (needs no container when the command built none: bootstrap is then not even imported)."""
    bootstrap = sys.modules.get("worker.bootstrap")
    if bootstrap is not None:
        bootstrap.checkpoint_current()


@app.callback()
def _root(ctx: typer.Context) -> None:
    """facemedia worker tools"""
    ctx.call_on_close(_checkpoint_after_command)
    exit_quickly()


def main() -> None:
    """Console entry point."""
    app()


__all__ = ["app", "main"]
