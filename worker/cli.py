"""The ``facemedia`` command (typer + rich). Entry points only translate: no logic lives here."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from worker.cli_research import research_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="facemedia worker tools")
crypto_app = typer.Typer(no_args_is_help=True, help="Encrypt and decrypt files (envelope format)")
keys_app = typer.Typer(no_args_is_help=True, help="Key management")
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log")
db_app = typer.Typer(no_args_is_help=True, help="Ledger schema")
app.add_typer(crypto_app, name="crypto")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(db_app, name="db")
consent_app = typer.Typer(no_args_is_help=True, help="Research consent")
hold_app = typer.Typer(no_args_is_help=True, help="Legal holds on a subject or a job")
app.add_typer(consent_app, name="consent")
app.add_typer(hold_app, name="hold")
app.add_typer(research_app, name="research")


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


out = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]


def _settings_failure(exc: Exception) -> typer.Exit:
    """A configuration error as ``error: invalid_settings: ...``: names and fixes, never values."""
    from pydantic import ValidationError

    from worker.settings import describe_settings_error

    if isinstance(exc, ValidationError):
        problems = describe_settings_error(exc)
    else:  # e.g. an unreadable TOML file: its message names a line, not a value
        problems = [type(exc).__name__]
    return _fail("invalid_settings: " + "; ".join(problems), 2)


def _container() -> Any:
    from pydantic import ValidationError

    from worker.bootstrap import get_container
    from worker.logs import configure_logging

    try:
        container = get_container()
    except ValidationError as exc:
        raise _settings_failure(exc) from None
    configure_logging(container.settings.log_level)
    return container


@contextlib.contextmanager
def _private_writes() -> Iterator[None]:
    """Turn a refused private write (symlink at the target, unsafe directory) into exit 2."""
    from worker.private_files import PrivateFileError

    try:
        yield
    except PrivateFileError as exc:
        raise _fail(f"{exc.code}: {exc}", 2) from None


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def _emit(data: dict[str, Any], as_json: bool, title: str = "") -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, default=str) + "\n")
        return
    table = Table(title=title or None, show_header=False)
    for key, value in data.items():
        table.add_row(key, json.dumps(value, default=str) if not isinstance(value, str) else value)
    out.print(table)


def _parse_params(params: str) -> dict[str, Any]:
    try:
        value = json.loads(params) if params else {}
    except json.JSONDecodeError as exc:
        raise _fail(f"--params is not valid JSON ({exc.msg})", 2) from None
    if not isinstance(value, dict):
        raise _fail("--params must be a JSON object", 2)
    return value


def _write_outputs(container: Any, job_id: str, out_dir: Path) -> list[str]:
    """Decrypted outputs into OUT/JOB_ID/: directories 0700, files 0600, never via a symlink."""
    from worker.private_files import atomic_write_private, private_dir

    outputs = container.client.outputs(job_id)
    target = out_dir / job_id
    with _private_writes():
        private_dir(target)
        written = []
        for name, data in sorted(outputs.items()):
            if Path(name).name != name or name in (".", ".."):
                raise _fail("refusing an output name that is not a plain file name", 1)
            atomic_write_private(target / name, data)
            written.append(str(target / name))
    return written


def _parse_attrs(attrs: list[str] | None) -> dict[str, str] | None:
    """``--attr KEY=VALUE`` options → a dict; unknown keys refused (values never echoed)."""
    from worker.research.quasi import ATTRIBUTES

    if not attrs:
        return None
    parsed: dict[str, str] = {}
    for item in attrs:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise _fail("--attr takes KEY=VALUE", 2)
        if key not in ATTRIBUTES:
            raise _fail(f"--attr: unknown key {key!r} (accepted: {', '.join(ATTRIBUTES)})", 2)
        parsed[key] = value
    return parsed


def _submit(
    container: Any,
    path: Path,
    job: str,
    params: str,
    subject: str,
    attributes: dict[str, str] | None = None,
    **consent: bool,
) -> str:
    from worker.jobs.errors import JobError
    from worker.ledger.subjects import Consent

    if not path.is_file():
        raise _fail("input file not found", 2)
    try:
        with path.open("rb") as media:
            return str(
                container.client.submit(
                    media,
                    job,
                    _parse_params(params),
                    subject_id=subject,
                    consent=Consent(**consent),
                    attributes=attributes,
                )
            )
    except JobError as exc:
        raise _fail(f"{getattr(exc, 'code', 'refused')}: {exc}", 2) from None


def _wait(container: Any, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = container.service.status(job_id)
        if status["status"] in ("succeeded", "failed", "expired") and status["original_deleted"]:
            return status
        if time.monotonic() > deadline:
            return status
        time.sleep(0.2)


SubjectOpt = Annotated[str, typer.Option("--subject", help="The upstream's subject id")]


def _decode_ceiling(container: Any) -> contextlib.AbstractContextManager[None]:
    """The decode memory ceiling while a job runs inline in this process (no broker)."""
    if not container.settings.eager:
        return contextlib.nullcontext()
    from pipelines.media import memory_ceiling

    return memory_ceiling(container.settings.decode_memory_limit_mb)


@app.command()
def run(
    path: Path,
    job: Annotated[str, typer.Option("--job", help="Job type: detect, ...")] = "detect",
    params: Annotated[str, typer.Option("--params", help="Job parameters as JSON")] = "",
    subject: SubjectOpt = "cli-user",
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Write decrypted outputs here")
    ] = None,
    research_consent: bool = False,
    minor: bool = False,
    guardian_consent: bool = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a worker")] = 300.0,
    as_json: JsonOpt = False,
) -> None:
    """Submit PATH, process it (inline, or by a worker when a broker is set), print a summary."""
    container = _container()
    with _decode_ceiling(container):
        job_id = _submit(
            container,
            path,
            job,
            params,
            subject,
            research=research_consent,
            is_minor=minor,
            guardian=guardian_consent,
        )
        status = _wait(container, job_id, timeout)
    if out_dir is not None and status["status"] == "succeeded":
        status["written"] = _write_outputs(container, job_id, out_dir)
    _emit(status, as_json, "job")
    if status["status"] not in ("succeeded", "failed"):
        raise typer.Exit(3)


@app.command()
def submit(
    path: Path,
    job: Annotated[str, typer.Option("--job")] = "detect",
    params: Annotated[str, typer.Option("--params")] = "",
    subject: SubjectOpt = "cli-user",
    research_consent: Annotated[
        bool, typer.Option("--research-consent", help="The subject consented to research use")
    ] = False,
    minor: Annotated[bool, typer.Option("--minor", help="The subject is a minor")] = False,
    guardian_consent: Annotated[
        bool, typer.Option("--guardian-consent", help="A guardian consented (for a minor)")
    ] = False,
    attr: Annotated[
        list[str] | None,
        typer.Option(
            "--attr",
            help="KEY=VALUE, repeatable: age, region, device (generalized at submit: age band, "
            "province, device family; the raw value is not kept)",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit PATH as a job and print its id (does not wait)."""
    attributes = _parse_attrs(attr)
    container = _container()
    job_id = _submit(
        container,
        path,
        job,
        params,
        subject,
        attributes,
        research=research_consent,
        is_minor=minor,
        guardian=guardian_consent,
    )
    _emit({"job_id": job_id}, as_json)


@app.command()
def status(job_id: str, as_json: JsonOpt = False) -> None:
    """The job's state, error code, face count, outputs and whether its original is deleted."""
    from worker.jobs.errors import JobNotFound

    try:
        data = _container().service.status(job_id)
    except JobNotFound:
        raise _fail("no such job", 2) from None
    _emit(data, as_json, "job")


@app.command()
def result(
    job_id: str,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the decrypted outputs")],
    as_json: JsonOpt = False,
) -> None:
    """Decrypt a job's outputs into OUT/JOB_ID/."""
    from worker.jobs.errors import JobNotFound

    container = _container()
    try:
        written = _write_outputs(container, job_id, out_dir)
    except JobNotFound:
        raise _fail("no such job", 2) from None
    _emit({"job_id": job_id, "written": written}, as_json)


@app.command()
def demo(
    path: Annotated[
        Path | None, typer.Argument(help="A face photo; default: a shipped sample")
    ] = None,
    job: Annotated[str, typer.Option("--job")] = "detect",
    as_json: JsonOpt = False,
) -> None:
    """Run the main job end to end on the embedded default and show where the outputs are."""
    container = _container()
    home = container.settings.home_dir
    out_dir = home / "demo-out"
    with _decode_ceiling(container):
        if path is None:
            data = _sample_photo()
            with tempfile.SpooledTemporaryFile(max_size=1 << 30) as fh:  # stays in memory
                fh.write(data)
                fh.seek(0)
                job_id = str(container.client.submit(fh, job, {}, subject_id="demo-subject"))
        else:
            job_id = _submit(container, path, job, "", "demo-subject")
        status = _wait(container, job_id, 300)
    if status["status"] == "succeeded":
        status["written"] = _write_outputs(container, job_id, out_dir)
    status["store"] = container.settings.effective_store_url
    status["ledger"] = container.settings.effective_database_url
    if as_json:
        _emit(status, True)
        return
    out.print(f"[bold]facemedia demo[/bold] — job [cyan]{job_id}[/cyan] ({job})")
    out.print(
        f"  status: {status['status']}  faces: {status['faces']}  error: {status['error_code']}"
    )
    out.print(f"  original deleted (all versions): {status['original_deleted']}")
    out.print(f"  encrypted store: {status['store']}")
    out.print(f"  ledger: {status['ledger']}")
    for written in status.get("written", []):
        out.print(f"  decrypted output: {written}")
    if status["status"] != "succeeded":
        raise typer.Exit(1)


def _sample_photo() -> bytes:
    """scikit-image's astronaut (public domain, shipped with the package) as a JPEG."""
    import cv2
    from skimage import data

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    if not ok:
        raise _fail("could not encode the sample photo")
    return bytes(buf)


@audit_app.command("verify")
def audit_verify(as_json: JsonOpt = False) -> None:
    """Check the audit log: hash chain, every entry's MAC, and the newest signed checkpoint in
    the object store (truncation, deletion, re-chaining, a missing or rolled-back checkpoint).
    Exit 1 when anything is wrong; ``problems`` lists {code, seq, message}."""
    from worker.ledger.checkpoints import describe

    container = _container()
    report = container.checkpoints.verify()
    if as_json:
        _emit(describe(report), True)
    else:
        data = {k: v for k, v in report.to_json().items() if k != "problems"}
        _emit(data, False, "audit")
        for p in report.problems:
            out.print(f"  [red]{p.code}[/red] seq={p.seq}: {p.message}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


def _context(pairs: list[str]) -> dict[str, str]:
    ctx: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise _fail(f"--context takes key=value, got {pair!r}", 2)
        ctx[key] = value
    return ctx


ContextOpt = Annotated[
    list[str], typer.Option("--context", help="Encryption context entry key=value (repeatable)")
]


def _crypto_setup(src: Path, context: list[str]) -> tuple[Any, dict[str, str]]:
    """The container and the parsed context; refuses a missing input before any key work."""
    container = _container()
    ctx = _context(context)
    if not src.is_file():
        raise _fail("input file not found", 2)
    return container, ctx


@crypto_app.command("encrypt")
def crypto_encrypt(
    src: Path,
    dst: Path,
    subject: SubjectOpt,
    context: ContextOpt = [],  # noqa: B006
) -> None:
    """Encrypt SRC to DST under SUBJECT's key, binding the context."""
    from worker.crypto import CryptoError
    from worker.ledger.subjects import SubjectErasurePending
    from worker.private_files import private_output

    container, ctx = _crypto_setup(src, context)
    try:
        ref = container.subjects.ensure(subject)
        with _private_writes(), src.open("rb") as fin, private_output(dst) as fout:
            container.envelope.encrypt(ref.key_id, ctx, fin, fout)
    except SubjectErasurePending as exc:
        raise _fail(f"{exc.code}: {exc}", 2) from None
    except CryptoError as exc:
        raise _fail(f"encryption failed: {exc}") from None


@crypto_app.command("decrypt")
def crypto_decrypt(
    src: Path,
    dst: Path,
    subject: SubjectOpt,
    context: ContextOpt = [],  # noqa: B006
) -> None:
    """Decrypt SRC to DST; fails (and leaves no DST) on any tampering or wrong context/subject."""
    from worker.crypto import CryptoError, DecryptError, Envelope
    from worker.private_files import private_output

    container, ctx = _crypto_setup(src, context)
    try:
        ref = container.subjects.find(subject)
        with src.open("rb") as fin:
            if ref is None or Envelope.key_id_of(fin) != ref.key_id:
                raise DecryptError("not encrypted for this subject")
            fin.seek(0)
            # Plaintext: a 0600 temp file beside DST, renamed only once fully authenticated.
            with _private_writes(), private_output(dst) as fout:
                container.envelope.decrypt(ctx, fin, fout)
    except CryptoError as exc:
        raise _fail(f"decryption failed: {exc}") from None


YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")]


@keys_app.command("rotate")
def keys_rotate(as_json: JsonOpt = False) -> None:
    """New KEK version; re-wrap every subject key, service key and release key (objects are
    untouched). Old versions stay live: `keys retire` destroys them."""
    container = _container()
    current, counts = container.epochs.rotate()
    _emit(
        {
            "rewrapped": counts.subject_keys,
            "service_keys_rewrapped": counts.service_keys,
            "releases_rewrapped": counts.releases,
            "kek_version": current.version,
        },
        as_json,
    )


@keys_app.command("retire")
def keys_retire(yes: YesOpt = False, as_json: JsonOpt = False) -> None:
    """Complete every pending cryptographic erasure now: a KEK epoch change (new KEK, every live
    key re-wrapped, every older KEK version destroyed: backups made before can no longer
    unwrap any key). Beat does the same on its schedule (erasure_epoch_delay)."""
    from worker.crypto import CryptoError
    from worker.retention.epochs import EpochError

    container = _container()
    pending = container.epochs.pending().count
    if pending and not yes:
        typer.confirm(
            f"{pending} erasure(s) pending. Destroy every old KEK version? Ledger backups made "
            "before this can then no longer unwrap any key",
            abort=True,
            err=True,
        )
    try:
        result = container.epochs.run(force=True)
    except EpochError as exc:
        raise _fail(f"{exc.code}: {exc}", 1) from None
    except CryptoError as exc:
        raise _fail(f"epoch_failed: {exc} (run it again: the pass resumes)", 1) from None
    _emit(result.to_json(), as_json, "keys retire")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply Alembic migrations up to head."""
    container = _container()
    container.db.migrate()
    out.print(f"ledger at revision {container.db.current_revision()}")


def _subject_ref(container: Any, subject: str) -> str:
    ref = container.subjects.find(subject)
    if ref is None:
        raise _fail("unknown subject", 2)
    return str(ref.id)


@app.command()
def erase(subject: str, yes: YesOpt = False, as_json: JsonOpt = False) -> None:
    """Erase SUBJECT: delete every object, destroy the subject key, mark erased (idempotent).
    The erasure is cryptographically complete (no backup can unwrap the key) at the next KEK
    epoch change: `crypto_complete_by`, or now with `keys retire`. Asks first on a terminal
    unless --yes."""
    container = _container()
    subject_id = _subject_ref(container, subject)
    if not yes and sys.stdin.isatty():
        typer.confirm("Erase this subject's data for good?", abort=True, err=True)
    result = container.rights.erase(subject_id)
    _emit(result.to_json(), as_json, "erase")


@app.command()
def export(
    subject: str,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the access report")],
    as_json: JsonOpt = False,
) -> None:
    """Write an access report of everything held about SUBJECT, with decrypted outputs."""
    container = _container()
    with _private_writes():
        report = container.rights.export(_subject_ref(container, subject), out_dir)
    _emit(report, as_json, "export")


@consent_app.command("withdraw")
def consent_withdraw(subject: str, as_json: JsonOpt = False) -> None:
    """Withdraw research consent: samples deleted, excluded from releases, revocation listed."""
    container = _container()
    result = container.rights.withdraw_consent(_subject_ref(container, subject))
    _emit(result.to_json(), as_json, "consent")


def _hold(
    subject: str | None,
    job: str | None,
    reason: str,
    release: bool,
    as_json: bool,
    note: str | None = None,
) -> None:
    from worker.crypto import CryptoError
    from worker.ledger.errors import NotFound
    from worker.retention.holds import HoldNoteTooLong, UnknownHoldReason, parse_reason

    if (subject is None) == (job is None):
        raise _fail("name exactly one of --subject or --job", 2)
    if not release:
        try:  # before any ledger work: free text is refused, never stored or echoed
            parse_reason(reason)
        except UnknownHoldReason as exc:
            raise _fail(f"{exc.code}: {exc}", 2) from None
    container = _container()
    subject_id = _subject_ref(container, subject) if subject is not None else None
    try:
        result = container.rights.hold(
            subject_id=subject_id, job_id=job, reason=reason, release=release, note=note
        )
    except (UnknownHoldReason, HoldNoteTooLong) as exc:
        raise _fail(f"{exc.code}: {exc}", 2) from None
    except (ValueError, NotFound) as exc:
        raise _fail(str(exc), 2) from None
    except CryptoError:  # the subject's key is destroyed: nothing can be sealed for them
        raise _fail("note_unsealable: the subject's key is destroyed (erased)", 2) from None
    _emit(result, as_json, "hold")


HOLD_REASON_HELP = (
    "A reason code: litigation, court_order, regulator_request, law_enforcement, "
    "contract_dispute, security_incident"
)


@hold_app.command("set")
def hold_set(
    subject: Annotated[str | None, typer.Option("--subject")] = None,
    job: Annotated[str | None, typer.Option("--job")] = None,
    reason: Annotated[str, typer.Option("--reason", help=HOLD_REASON_HELP)] = "",
    note: Annotated[
        str | None,
        typer.Option(
            "--note", help="Optional free text, stored sealed under the subject's key only"
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Put a legal hold on a subject or a job: its objects survive sweeps and erasure. Only the
    reason code enters the ledger and the audit log; a note is sealed (erasure shreds it)."""
    _hold(subject, job, reason, False, as_json, note)


@hold_app.command("release")
def hold_release(
    subject: Annotated[str | None, typer.Option("--subject")] = None,
    job: Annotated[str | None, typer.Option("--job")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Release a legal hold (its note is dropped); what is due goes on the next sweep."""
    _hold(subject, job, "", True, as_json)


@hold_app.command("show")
def hold_show(
    subject: Annotated[str | None, typer.Option("--subject")] = None,
    job: Annotated[str | None, typer.Option("--job")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the hold on a subject or a job: reason code and the note (opened with the subject's
    key; unreadable once the subject is erased)."""
    from worker.ledger.errors import NotFound

    if (subject is None) == (job is None):
        raise _fail("name exactly one of --subject or --job", 2)
    container = _container()
    subject_id = _subject_ref(container, subject) if subject is not None else None
    try:
        info = container.rights.hold_info(subject_id=subject_id, job_id=job)
    except NotFound as exc:
        raise _fail(str(exc), 2) from None
    _emit(info, as_json, "hold")


@app.command()
def sweep(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what is due")] = False,
    as_of: Annotated[str, typer.Option("--as-of", help="ISO-8601 time to sweep as of")] = "",
    orphans: Annotated[bool, typer.Option("--orphans", help="Also delete orphan objects")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run every deletion due now (or at --as-of); re-queue stuck jobs; finish erasures."""
    from datetime import UTC, datetime

    container = _container()
    when = None
    if as_of:
        try:
            when = datetime.fromisoformat(as_of)
        except ValueError:
            raise _fail("--as-of must be an ISO-8601 time", 2) from None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
    report = container.sweeper.run(as_of=when, dry_run=dry_run)
    for job_id in report.requeued_ids:
        container.enqueue(job_id)
    data = report.to_json()
    if orphans:
        data["orphans"] = container.sweeper.orphans(as_of=when, dry_run=dry_run)
    _emit(data, as_json, "sweep")


@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """Check broker, ledger and migrations, bucket (versioning, region), KMS key, clock skew."""
    from worker.doctor import run_checks
    from worker.settings import load_settings

    try:
        settings = load_settings()
    except Exception as exc:  # invalid settings are the first thing to fix
        raise _settings_failure(exc) from None
    checks = run_checks(settings)
    failed = [c for c in checks if not c.ok]
    if as_json:
        sys.stdout.write(
            json.dumps({"ok": not failed, "checks": [c.to_json() for c in checks]}) + "\n"
        )
    else:
        table = Table(title="facemedia doctor")
        for column in ("check", "status", "detail", "fix"):
            table.add_column(column)
        colour = {"ok": "green", "fail": "red", "skip": "yellow"}
        for c in checks:
            table.add_row(c.name, f"[{colour[c.status]}]{c.status}[/]", c.detail, c.fix)
        out.print(table)
    if failed:
        raise typer.Exit(1)


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
