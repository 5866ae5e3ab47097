"""What every command group of ``facemedia`` shares: the exit codes, the consoles, the output
helper (:func:`emit`), errors (:func:`fail`: one JSON line on stdout under ``--json``), the
confirmation of destructive commands, the container and the common options.

Light on purpose: only typer loads with it (rich when something is drawn: :func:`emit` prints
plain text). Everything with state
(settings, the ledger, the container) is imported inside the function that needs it, so
``--help`` and the commands that process no media start without OpenCV, SciPy, PyAV, Celery or
boto3.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import re
import sys
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from typer._click.globals import get_current_context

if TYPE_CHECKING:
    from rich.console import Console

    from worker.bootstrap import Container
    from worker.jobs.reads import JobStatusView
    from worker.ledger.db import QuickReader


class _LazyConsole:
    """A rich console built on first use: ``--json`` output and errors never import rich."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def _get(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    # Special methods are looked up on the type, not through __getattr__ (rich's Live and
    # Progress enter their console).
    def __enter__(self) -> Console:
        return self._get().__enter__()

    def __exit__(self, *exc: object) -> None:
        self._get().__exit__(*exc)


out: Console = cast("Console", _LazyConsole(stderr=False))
err: Console = cast("Console", _LazyConsole(stderr=True))

# Exit codes of every command (README, *Exit codes*; ``facemedia --help``).
EXIT_OK = 0
EXIT_FAILED = 1  # the job ran and failed, or a check failed (audit verify, research verify, doctor)
EXIT_REFUSED = 2  # refused before anything ran: usage, bad values, unknown id, bad configuration
EXIT_NOT_FINISHED = 3  # not finished within the wait
EXIT_UNREACHABLE = 4  # a service (broker, database, object store, KMS) could not be reached

EXIT_CODES_HELP = (
    "Exit codes: 0 succeeded; 1 the job ran and failed, or a check failed; 2 refused before "
    "anything ran (usage, bad values, unknown id, bad configuration); 3 not finished within the "
    "wait; 4 a service could not be reached."
)

_DEFAULT_ERROR = {
    EXIT_FAILED: "failed",
    EXIT_REFUSED: "refused",
    EXIT_NOT_FINISHED: "not_finished",
    EXIT_UNREACHABLE: "unreachable",
}
_CODE_PREFIX = re.compile(r"^([a-z][a-z0-9_]*): (.+)$", re.DOTALL)

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print JSON (one line; errors too, on stdout)")
]
SubjectOpt = Annotated[str, typer.Option("--subject", help="The upstream's subject id")]
YesOpt = Annotated[
    bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (required off a terminal)")
]


class _State:
    """What the root command learnt from the command line: JSON output wanted, verbose logs."""

    json = False
    verbose = False


state = _State()


def json_wanted() -> bool:
    """True when this command prints JSON: ``--json`` was given to it."""
    ctx = get_current_context(silent=True)
    while ctx is not None:
        if ctx.params.get("as_json"):
            return True
        ctx = ctx.parent
    return state.json


def error_line(error: str, message: str) -> None:
    """Print one error: ``{"error", "message"}`` on stdout with ``--json``, else on stderr."""
    if json_wanted():
        sys.stdout.write(json.dumps({"error": error, "message": message}) + "\n")
        sys.stdout.flush()
    elif sys.stderr.isatty():
        from rich.markup import escape

        err.print(f"[red]error:[/red] {error}: {escape(message)}", highlight=False)
    else:
        sys.stderr.write(f"error: {error}: {message}\n")


def fail(message: str, code: int = EXIT_FAILED, *, error: str | None = None) -> typer.Exit:
    """Print the error and return the exit to raise (``raise fail(...)``).

    ``error`` is the stable code (snake_case); without it a message ``"code: text"`` gives it,
    else the exit code's generic one (``failed``, ``refused``, ``not_finished``,
    ``unreachable``)."""
    if error is None:
        match = _CODE_PREFIX.match(message)
        if match:
            error, message = match.group(1), match.group(2)
        else:
            error = _DEFAULT_ERROR.get(code, "failed")
    error_line(error, message)
    return typer.Exit(code)


def confirm_or_refuse(question: str, yes: bool) -> None:
    """A destructive command's guard: ``--yes`` goes on; on a terminal, ask (no → exit 2,
    ``declined``); off a terminal without ``--yes`` → exit 2, ``confirmation_required``."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise fail(
            "this command destroys data: pass --yes to confirm (no terminal to ask on)",
            EXIT_REFUSED,
            error="confirmation_required",
        )
    if not typer.confirm(question, default=False, err=True):
        raise fail("not confirmed: nothing was changed", EXIT_REFUSED, error="declined")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def emit(data: Mapping[str, Any], as_json: bool, title: str = "") -> None:
    """Print ``data`` as one line of JSON (``--json``) or as two aligned columns under
    ``title`` (plain text: drawing a table with rich cost ~60 ms of a command's start-up; control
    characters in a value are shown escaped, never sent to the terminal)."""
    if as_json:
        sys.stdout.write(json.dumps(data, default=str) + "\n")
        return
    width = max((len(str(key)) for key in data), default=0)
    lines = [title] if title else []
    indent = "  " if title else ""
    for key, value in data.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
        lines.append(f"{indent}{str(key).ljust(width)}  {text}".rstrip())
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()


def settings_failure(exc: Exception) -> typer.Exit:
    """A configuration error as ``invalid_settings`` (exit 2): names and fixes, never values."""
    from worker.settings import describe_settings_error

    return fail("; ".join(describe_settings_error(exc)), EXIT_REFUSED, error="invalid_settings")


# the containers the commands of this process ran on (weakly: a test process builds many)
_used: weakref.WeakSet[Container] = weakref.WeakSet()


def container() -> Container:
    """This process's container (built on first use), with logging configured; invalid
    settings exit 2 with ``invalid_settings``."""
    from worker.bootstrap import get_container
    from worker.logs import configure_logging
    from worker.settings import SETTINGS_ERRORS

    try:
        built = get_container()
    except SETTINGS_ERRORS as exc:
        raise settings_failure(exc) from None
    # Quiet by default: warnings and errors only; ``facemedia -v`` shows the INFO lines.
    configure_logging(built.settings.log_level if state.verbose else "WARNING")
    _used.add(built)
    return built


def quick_ledger() -> QuickReader | None:
    """A read-only DB-API connection to this process's ledger, for a command that only reads
    (no SQLAlchemy import: about 0.2 s of start-up); None when the command must go through the
    container: a container was installed with ``set_container`` (tests), or the ledger is
    missing, not at the newest migration or on another driver
    (:func:`worker.ledger.db.quick_reader`)."""
    bootstrap = sys.modules.get("worker.bootstrap")
    if bootstrap is not None and bootstrap.installed():
        return None
    from worker.ledger.db import quick_reader
    from worker.settings import SETTINGS_ERRORS, load_settings

    built = None if bootstrap is None else bootstrap._container
    try:
        settings = load_settings() if built is None else built.settings
    except SETTINGS_ERRORS as exc:
        raise settings_failure(exc) from None
    return quick_reader(settings.effective_database_url)


def job_view(job_id: str, *, tenant: str | None = None) -> JobStatusView:
    """The job's :class:`~worker.jobs.reads.JobStatusView`, read over :func:`quick_ledger`
    where it can be, else through the container (the same view either way; raises
    ``JobNotFound``)."""
    from worker.jobs.reads import job_status_view, job_status_view_quick

    reader = quick_ledger()
    if reader is None:
        return job_status_view(container().db, job_id, tenant=tenant)
    with reader:
        return job_status_view_quick(reader, job_id, tenant=tenant)


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
        raise fail(str(exc), EXIT_REFUSED, error=exc.code) from None


def subject_ref(built: Container, subject: str) -> str:
    """The ledger id of the upstream's SUBJECT; exit 2 when it is unknown."""
    ref = built.subjects.find(subject)
    if ref is None:
        raise fail("unknown subject", EXIT_REFUSED, error="not_found")
    return str(ref.id)
