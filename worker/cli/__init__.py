"""The ``facemedia`` command (typer + rich). Entry points only translate: no logic lives here.

One module per command group — :mod:`.jobs` (run, submit, status, result, demo), :mod:`.crypto`,
:mod:`.keys`, :mod:`.rights` (erase, export, consent, hold), :mod:`.ops` (audit, db, sweep,
doctor), :mod:`.research`, :mod:`.avatar` — sharing :mod:`._common` (exit codes, output, errors,
confirmation, the container). Importing this package loads typer only: every command imports
what it needs when it runs, so the commands that process no media never load OpenCV, SciPy,
PyAV, Celery or boto3 (``tests/unit/test_cli_imports.py``; figures in docs/BENCHMARKS.md, *CLI
start-up*). :class:`FacemediaGroup` turns whatever ends a command into its documented exit code
(README, *Output, errors and exit codes*; tests/cli/).
"""

from __future__ import annotations

import copy
import gc
import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer._click import exceptions as click_exceptions
from typer.core import TyperGroup

from worker.cli import jobs, ops, rights, serve
from worker.cli._common import (
    EXIT_CODES_HELP,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    error_line,
    exit_quickly,
    state,
)
from worker.cli.apikey import apikey_app
from worker.cli.avatar import avatar_app
from worker.cli.crypto import crypto_app
from worker.cli.keys import keys_app
from worker.cli.ops import audit_app, db_app
from worker.cli.research import research_app
from worker.cli.rights import consent_app, hold_app

# A service that could not be reached, by the exception's class (the libraries are not imported
# here: a command that never talks to them must not load them).
_UNREACHABLE_CLASSES = frozenset(
    {
        "kombu.exceptions.OperationalError",
        "redis.exceptions.ConnectionError",
        "redis.exceptions.TimeoutError",
        "botocore.exceptions.EndpointConnectionError",
        "botocore.exceptions.ConnectTimeoutError",
        "botocore.exceptions.ConnectionClosedError",
        "psycopg.OperationalError",
        "worker.storage.errors.TransientStorageError",
        "worker.objects.errors.ObjectUnavailable",
    }
)


def _unreachable(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) says a service could not be reached."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, ConnectionError | TimeoutError):
            return True
        for cls in type(current).__mro__:
            if f"{cls.__module__}.{cls.__qualname__}" in _UNREACHABLE_CLASSES:
                return True
        if type(current).__name__ == "OperationalError" and type(current).__module__.startswith(
            "sqlalchemy"
        ):  # psycopg's connection failure, wrapped by SQLAlchemy
            return "connect" in str(current).lower()
        current = current.__cause__ or current.__context__
        seen += 1
    return False


class FacemediaGroup(TyperGroup):
    """The root command: the documented exit codes whatever went wrong, and errors as one JSON
    line on stdout when the command was given ``--json``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Note ``--json`` before parsing, so that a usage error is reported in JSON too."""
        state.json = "--json" in args[: args.index("--")] if "--" in args else "--json" in args
        return super().parse_args(ctx, args)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command and exit with its documented code (0, 1, 2, 3 or 4)."""
        try:
            result = super().main(
                args,
                prog_name,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
            code = result if isinstance(result, int) and not isinstance(result, bool) else 0
        except click_exceptions.UsageError as exc:
            if state.json:
                error_line("usage", exc.format_message())
            else:
                exc.show()
            code = EXIT_REFUSED
        except click_exceptions.ClickException as exc:
            error_line("usage", exc.format_message())
            code = EXIT_REFUSED
        except typer.Abort:
            error_line("declined", "aborted: nothing was changed")
            code = EXIT_REFUSED
        except Exception as exc:
            if not _unreachable(exc):
                raise
            where = f"{type(exc).__module__.split('.')[0]}.{type(exc).__name__}"
            error_line("unreachable", f"a service could not be reached ({where})")
            code = EXIT_UNREACHABLE
        if standalone_mode:
            sys.exit(code)
        return code


# No local variables in tracebacks: they could hold key bytes, subject ids or decrypted media.
# Plain (click) help, not rich's: ``--help`` stays fast.
app = typer.Typer(
    cls=FacemediaGroup,
    no_args_is_help=True,
    help="facemedia worker tools.\n\n" + EXIT_CODES_HELP,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)
app.add_typer(crypto_app, name="crypto")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(db_app, name="db")
app.add_typer(consent_app, name="consent")
app.add_typer(hold_app, name="hold")
app.add_typer(research_app, name="research")
app.add_typer(avatar_app, name="avatar")
app.add_typer(apikey_app, name="apikey")
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
    serve.serve,
):
    app.command()(_command)


def _checkpoint_after_command() -> None:
    """End of a command: a signed checkpoint of the audit head if the command appended entries
    (needs no container when the command built none: bootstrap is then not even imported)."""
    bootstrap = sys.modules.get("worker.bootstrap")
    if bootstrap is not None:
        bootstrap.checkpoint_current()


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("facemedia")
        except PackageNotFoundError:  # run from a source tree that is not installed
            number = "unknown"
        sys.stdout.write(f"facemedia {number}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show INFO log lines (JSON) on stderr")
    ] = False,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit", callback=_version, is_eager=True
        ),
    ] = False,
) -> None:
    """facemedia worker tools."""
    state.verbose = verbose
    ctx.call_on_close(_checkpoint_after_command)
    exit_quickly()


def main() -> None:
    """Console entry point."""
    # No pydantic plugin serves a command: skip their entry-point scan (~20 ms of each start).
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    # No cyclic garbage collection while the libraries load (~8% of a command's CPU time):
    # a command is short, refcounting frees its garbage; one that processes media in this
    # process turns it back on (worker/cli/jobs.py, _decode_ceiling).
    gc.disable()
    _app_for(sys.argv[1:])(prog_name="facemedia")


def _app_for(args: list[str]) -> typer.Typer:
    """``app`` with only the command ARGS name, when they name one: typer builds the click
    command of every command it holds (each function's signature, hints and options) before it
    parses anything, ~15 % of a short command's start. Anything else (``--help``, an unknown
    name, shell completion) gets the whole app."""
    name = next((a for a in args if not a.startswith("-")), None)
    if name is None or any(k.endswith("_COMPLETE") for k in os.environ):
        return app
    commands = [c for c in app.registered_commands if _command_name(c) == name]
    groups = [g for g in app.registered_groups if g.name == name]
    if len(commands) + len(groups) != 1:
        return app
    only = copy.copy(app)
    only.registered_commands, only.registered_groups = commands, groups
    return only


def _command_name(info: Any) -> str | None:
    if info.name:
        return str(info.name)
    if info.callback is None:
        return None
    return str(info.callback.__name__).lower().replace("_", "-")  # typer's get_command_name


__all__ = ["app", "main"]
