"""``facemedia run | submit | status | result | demo``: jobs in, summaries and outputs out."""

from __future__ import annotations

import contextlib
import gc
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, cast

import typer

from worker.cli._common import (
    EXIT_FAILED,
    EXIT_NOT_FINISHED,
    EXIT_REFUSED,
    JsonOpt,
    SubjectOpt,
    container,
    emit,
    err,
    fail,
    out,
    private_writes,
)

if TYPE_CHECKING:
    from worker.bootstrap import Container
    from worker.jobs.reads import JobStatusView

JobOpt = Annotated[
    str,
    typer.Option("--job", help="Job type: detect, ar, deid, pta (see README, *Job types*)"),
]
ParamsOpt = Annotated[str, typer.Option("--params", help="Job parameters as a JSON object")]
ResearchConsentOpt = Annotated[
    bool,
    typer.Option(
        "--research-consent",
        help="The subject consented to research use (a share of such jobs, "
        "[research] sample_rate, is kept de-identified for research)",
    ),
]
MinorOpt = Annotated[bool, typer.Option("--minor", help="The subject is a minor")]
GuardianOpt = Annotated[
    bool, typer.Option("--guardian-consent", help="A guardian consented (for a minor)")
]
AttrOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--attr",
        help="KEY=VALUE, repeatable: age (0-130), region (a PRC province-level division or "
        "large city), device (a model or OS string; unrecognised → other). Generalized at "
        "submit (age band, province, device family); the raw value is not kept",
    ),
]


def _check_tenant(value: str) -> str:
    from worker.ledger.tenants import BadTenant, check_tenant

    try:
        return check_tenant(value)
    except BadTenant as exc:
        raise typer.BadParameter(str(exc)) from None


TenantOpt = Annotated[
    str,
    typer.Option(
        "--tenant",
        help="The tenant whose subject or job this is (API keys belong to one); the CLI's "
        "own data and everything from before tenancy belong to `default`",
        callback=_check_tenant,
    ),
]


def _parse_params(params: str) -> dict[str, Any]:
    try:
        value = json.loads(params) if params else {}
    except json.JSONDecodeError as exc:
        raise fail(
            f"--params is not valid JSON ({exc.msg})", EXIT_REFUSED, error="bad_params"
        ) from None
    if not isinstance(value, dict):
        raise fail("--params must be a JSON object", EXIT_REFUSED, error="bad_params")
    return value


def _write_outputs(
    built: Container, job_id: str, out_dir: Path, tenant: str | None = None
) -> list[str]:
    """Decrypted outputs into OUT/JOB_ID/: directories 0700, files 0600, never via a symlink
    (with ``tenant``: JobNotFound for another tenant's job)."""
    from worker.private_files import atomic_write_private, private_dir

    outputs = built.client.outputs(job_id, tenant=tenant)
    target = out_dir / job_id
    with private_writes():
        private_dir(target)
        written = []
        for name, data in sorted(outputs.items()):
            if Path(name).name != name or name in (".", ".."):
                raise fail("refusing an output name that is not a plain file name", EXIT_FAILED)
            atomic_write_private(target / name, data)
            written.append(str(target / name))
    return written


def _parse_attrs(attrs: list[str] | None) -> dict[str, str] | None:
    """``--attr KEY=VALUE`` options → a dict, checked by the rule the service applies
    (:func:`worker.research.quasi.generalize`): an unknown key or a value it does not
    understand is refused with the accepted forms (values never echoed)."""
    from worker.research.quasi import ATTRIBUTES, UnknownAttribute, generalize

    if not attrs:
        return None
    parsed: dict[str, str] = {}
    for item in attrs:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise fail(
                f"--attr takes KEY=VALUE (keys: {', '.join(ATTRIBUTES)})",
                EXIT_REFUSED,
                error="bad_params",
            )
        parsed[key] = value
    try:
        generalize(parsed)
    except UnknownAttribute as exc:
        raise fail(f"--attr: {exc}", EXIT_REFUSED, error="bad_params") from None
    return parsed


def _submit(
    built: Container,
    path: Path,
    job: str,
    params: str,
    subject: str,
    attributes: dict[str, str] | None = None,
    tenant: str = "default",
    **consent: bool,
) -> str:
    from worker.jobs.errors import JobError
    from worker.ledger.subjects import Consent

    if not path.is_file():
        raise fail("input file not found", EXIT_REFUSED, error="not_found")
    try:
        with path.open("rb") as media:
            return str(
                built.client.submit(
                    media,
                    job,
                    _parse_params(params),
                    subject_id=subject,
                    consent=Consent(**consent),
                    attributes=attributes,
                    tenant=tenant,
                )
            )
    except JobError as exc:
        code = getattr(exc, "code", "refused")
        raise fail(str(exc), EXIT_REFUSED, error=str(code)) from None


# Seconds a broker run waits before it asks whether any worker consumes the job's queue.
NO_WORKER_WARNING_AFTER = 3.0


def _wait(built: Container, job_id: str, timeout: float, show: bool) -> JobStatusView:
    """Poll the job until it ended or ``timeout``. With a broker: after a few seconds, a
    warning on stderr when no worker consumes the job's queue; with ``show`` too (a terminal,
    no --json), the job's status on stderr while waiting."""
    from worker.jobs.reads import job_status_view

    started = time.monotonic()
    deadline = started + timeout
    asked = built.settings.eager  # inline: nothing to ask the broker
    last = ""
    while True:
        view = job_status_view(built.db, job_id)
        if view.ended or time.monotonic() > deadline:
            if show and last:
                err.print("")
            return view
        if show and not built.settings.eager:
            line = f"job {job_id}: {view.status} ({time.monotonic() - started:.0f} s)"
            if line != last:
                err.print(line, end="\r", highlight=False)
                last = line
        if not asked and time.monotonic() - started > NO_WORKER_WARNING_AFTER:
            asked = True
            _warn_without_worker(built, view.status)
        time.sleep(0.2)


def _warn_without_worker(built: Container, status: str) -> None:
    """Warn (stderr) when the job still waits and no worker consumes the media queue."""
    if status != "queued":
        return
    from worker.dispatch.names import MEDIA

    try:
        consumers = built.dispatcher.consumers(MEDIA, timeout=1.0)
    except Exception:  # a hint only: the wait goes on whatever the broker says
        return
    if consumers == 0:
        err.print(
            f"\n[yellow]warning:[/yellow] no worker consumes the {MEDIA!r} queue: start one "
            "(`make worker`, or `celery -A worker.celery_app worker -Q media`)",
            highlight=False,
        )


@contextlib.contextmanager
def _frame_bar(show: bool) -> Iterator[None]:
    """While a job runs inline with ``show`` (a terminal, no --json): a progress bar on stderr
    of the frames a video transcode has written (done / total, fps, time left); nothing for a
    photo, whose transcode reports no frames. Gone when the job ends."""
    if not show:
        yield
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from pipelines.media.progress import frame_progress

    columns = (
        TextColumn("frames"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[fps]:.1f} fps"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("frames", total=None, start=False, fps=0.0)
        started = time.monotonic()

        def hook(done: int, total: int | None) -> None:
            if done == 1:
                bar.start_task(task)
            elapsed = time.monotonic() - started
            bar.update(task, completed=done, total=total, fps=done / elapsed if elapsed else 0.0)

        token = frame_progress.set(hook)
        try:
            yield
        finally:
            frame_progress.reset(token)


def _decode_ceiling(built: Container) -> contextlib.AbstractContextManager[None]:
    """The decode memory ceiling while a job runs inline in this process (no broker); the
    cyclic garbage collector back on (``main`` turns it off for start-up)."""
    gc.enable()
    if not built.settings.eager:
        return contextlib.nullcontext()
    from pipelines.media import memory_ceiling

    return memory_ceiling(built.settings.decode_memory_limit_mb)


def run(
    path: Annotated[Path, typer.Argument(help="The photo or video to process")],
    job: JobOpt = "detect",
    params: ParamsOpt = "",
    subject: SubjectOpt = "cli-user",
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Write decrypted outputs here")
    ] = None,
    research_consent: ResearchConsentOpt = False,
    minor: MinorOpt = False,
    guardian_consent: GuardianOpt = False,
    attr: AttrOpt = None,
    tenant: TenantOpt = "default",
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for a worker (with a broker)")
    ] = 300.0,
    as_json: JsonOpt = False,
) -> None:
    """Submit PATH, process it (inline, or by a worker when a broker is set), print its status.
    Exit 1 when the job failed, 3 when it did not finish within --timeout."""
    attributes = _parse_attrs(attr)
    built = container()
    bar = built.settings.eager and not as_json and err.is_terminal
    with _decode_ceiling(built), _frame_bar(bar):
        job_id = _submit(
            built,
            path,
            job,
            params,
            subject,
            attributes,
            tenant,
            research=research_consent,
            is_minor=minor,
            guardian=guardian_consent,
        )
        view = _wait(built, job_id, timeout, show=not as_json and err.is_terminal)
    status = view.to_json()
    if out_dir is not None and view.status == "succeeded":
        status["written"] = _write_outputs(built, job_id, out_dir, tenant)
    emit(status, as_json, "job")
    if not view.ended:
        raise typer.Exit(EXIT_NOT_FINISHED)
    if view.status != "succeeded":
        raise typer.Exit(EXIT_FAILED)


def submit(
    path: Annotated[Path, typer.Argument(help="The photo or video to process")],
    job: JobOpt = "detect",
    params: ParamsOpt = "",
    subject: SubjectOpt = "cli-user",
    research_consent: ResearchConsentOpt = False,
    minor: MinorOpt = False,
    guardian_consent: GuardianOpt = False,
    attr: AttrOpt = None,
    tenant: TenantOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Submit PATH as a job and print its id (does not wait: see `status`)."""
    attributes = _parse_attrs(attr)
    built = container()
    job_id = _submit(
        built,
        path,
        job,
        params,
        subject,
        attributes,
        tenant,
        research=research_consent,
        is_minor=minor,
        guardian=guardian_consent,
    )
    emit({"job_id": job_id}, as_json)


def status(
    job_id: Annotated[str, typer.Argument(help="The job id `submit` or `run` printed")],
    tenant: TenantOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """The job's state and error code; created, started and finished times and duration; media
    kind, frame count, effect chain, faces, outputs; whether its original is deleted (fields:
    README, *Job status*). Another tenant's job is "no such job", like an unknown one."""
    from worker.cli._common import job_view
    from worker.jobs.errors import JobNotFound

    try:  # a ledger read: no pipeline, store or key is loaded (nor SQLAlchemy, mostly)
        data = job_view(job_id, tenant=tenant).to_json()
    except JobNotFound:
        raise fail("no such job", EXIT_REFUSED, error="not_found") from None
    hook = data.get("webhook")
    if hook and not as_json:  # e.g. "dead after 8 attempts (http_500)"
        shown = f"{hook['state'] or 'not sent yet'} after {hook['attempts']} attempt(s)"
        data = {**data, "webhook": shown + (f" ({hook['error']})" if hook["error"] else "")}
    emit(data, as_json, "job")


def result(
    job_id: Annotated[str, typer.Argument(help="The job id")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the decrypted outputs")],
    tenant: TenantOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Decrypt a job's outputs into OUT/JOB_ID/ (a job of --tenant)."""
    from worker.jobs.errors import JobNotFound
    from worker.objects.errors import ObjectCorrupt, ObjectShredded

    built = container()
    try:
        written = _write_outputs(built, job_id, out_dir, tenant)
    except JobNotFound:
        raise fail("no such job", EXIT_REFUSED, error="not_found") from None
    except (ObjectShredded, ObjectCorrupt) as exc:  # shredded, or a KEK this keyring lacks
        raise fail(str(exc), EXIT_FAILED, error="undecryptable") from None
    emit({"job_id": job_id, "written": written}, as_json)


def demo(
    path: Annotated[
        Path | None, typer.Argument(help="A face photo; default: a shipped sample")
    ] = None,
    job: JobOpt = "detect",
    as_json: JsonOpt = False,
) -> None:
    """Run the main job end to end on the embedded default and show where the outputs are."""
    built = container()
    home = built.settings.home_dir
    out_dir = home / "demo-out"
    with _decode_ceiling(built):
        if path is None:
            data = _sample_photo()
            with tempfile.SpooledTemporaryFile(max_size=1 << 30) as fh:  # stays in memory
                fh.write(data)
                fh.seek(0)
                media = cast(BinaryIO, fh)
                job_id = str(built.client.submit(media, job, {}, subject_id="demo-subject"))
        else:
            job_id = _submit(built, path, job, "", "demo-subject")
        view = _wait(built, job_id, 300, show=not as_json and err.is_terminal)
    status: dict[str, Any] = view.to_json()
    if view.status == "succeeded":
        status["written"] = _write_outputs(built, job_id, out_dir)
    status["store"] = built.settings.effective_store_url
    status["ledger"] = built.settings.effective_database_url
    if as_json:
        emit(status, True)
        if view.status != "succeeded":
            raise typer.Exit(EXIT_FAILED if view.ended else EXIT_NOT_FINISHED)
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
    if view.status != "succeeded":
        raise typer.Exit(EXIT_FAILED if view.ended else EXIT_NOT_FINISHED)


def _sample_photo() -> bytes:
    """scikit-image's astronaut (public domain, shipped with the package) as a JPEG."""
    import cv2
    from skimage import data

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    if not ok:
        raise fail("could not encode the sample photo", EXIT_FAILED)
    return bytes(buf)
