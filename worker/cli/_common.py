"""What every command group of ``facemedia`` shares: the consoles, the output helper
(:func:`emit`), failures (:func:`fail`), the container and the common options.

Light on purpose: only typer and rich load with it. Everything with state (settings, the ledger,
the container) is imported inside the function that needs it, so ``--help`` and the commands
that process no media start without OpenCV, SciPy, PyAV, Celery or boto3.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import sys
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from worker.bootstrap import Container

out = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]
SubjectOpt = Annotated[str, typer.Option("--subject", help="The upstream's subject id")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: MESSAGE`` on stderr and return the exit to raise (``raise fail(...)``)."""
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def emit(data: dict[str, Any], as_json: bool, title: str = "") -> None:
    """Print ``data`` as one line of JSON (``--json``) or as a two-column table."""
    if as_json:
        sys.stdout.write(json.dumps(data, default=str) + "\n")
        return
    from rich.table import Table

    table = Table(title=title or None, show_header=False)
    for key, value in data.items():
        table.add_row(key, value if isinstance(value, str) else json.dumps(value, default=str))
    out.print(table)


def settings_failure(exc: Exception) -> typer.Exit:
    """A configuration error as ``error: invalid_settings: ...``: names and fixes, never values."""
    from pydantic import ValidationError

    from worker.settings import describe_settings_error

    if isinstance(exc, ValidationError):
        problems = describe_settings_error(exc)
    else:  # e.g. an unreadable TOML file: its message names a line, not a value
        problems = [type(exc).__name__]
    return fail("invalid_settings: " + "; ".join(problems), 2)


# the containers the commands of this process ran on (weakly: a test process builds many)
_used: weakref.WeakSet[Container] = weakref.WeakSet()


def container() -> Container:
    """This process's container (built on first use), with logging configured; invalid
    settings exit 2 with ``invalid_settings``."""
    from pydantic import ValidationError

    from worker.bootstrap import get_container
    from worker.logs import configure_logging

    try:
        built = get_container()
    except ValidationError as exc:
        raise settings_failure(exc) from None
    configure_logging(built.settings.log_level)
    _used.add(built)
    return built


def exit_quickly() -> None:
    """Register (once per process) what runs at its exit: close the connections of every
    container a command used (SQLite folds its ``-wal`` file back and removes it on the last
    close), then freeze the heap so that the interpreter's final garbage collection skips it.
    That pass over every object SQLAlchemy, pydantic and typer built took 0.25 to 0.4 s of each
    command and frees nothing the operating system does not (docs/BENCHMARKS.md, *CLI
    start-up*)."""
    if not _exit_registered:
        _exit_registered.append(True)
        atexit.register(_at_exit)


_exit_registered: list[bool] = []


def _at_exit() -> None:
    for built in list(_used):
        with contextlib.suppress(Exception):  # exiting anyway: a close that fails changes nothing
            built.close()
    gc.freeze()


@contextlib.contextmanager
def private_writes() -> Iterator[None]:
    """Turn a refused private write (symlink at the target, unsafe directory) into exit 2."""
    from worker.private_files import PrivateFileError

    try:
        yield
    except PrivateFileError as exc:
        raise fail(f"{exc.code}: {exc}", 2) from None


def subject_ref(built: Container, subject: str) -> str:
    """The ledger id of the upstream's SUBJECT; exit 2 when it is unknown."""
    ref = built.subjects.find(subject)
    if ref is None:
        raise fail("unknown subject", 2)
    return str(ref.id)
