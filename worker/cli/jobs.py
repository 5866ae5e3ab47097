"""``facemedia run | submit | status | result | demo``: jobs in, summaries and outputs out."""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, cast

import typer

from worker.cli._common import (
    JsonOpt,
    SubjectOpt,
    container,
    emit,
    fail,
    out,
    private_writes,
)

if TYPE_CHECKING:
    from worker.bootstrap import Container


def _parse_params(params: str) -> dict[str, Any]:
    try:
        value = json.loads(params) if params else {}
    except json.JSONDecodeError as exc:
        raise fail(f"--params is not valid JSON ({exc.msg})", 2) from None
    if not isinstance(value, dict):
        raise fail("--params must be a JSON object", 2)
    return value


def _write_outputs(built: Container, job_id: str, out_dir: Path) -> list[str]:
    """Decrypted outputs into OUT/JOB_ID/: directories 0700, files 0600, never via a symlink."""
    from worker.private_files import atomic_write_private, private_dir

    outputs = built.client.outputs(job_id)
    target = out_dir / job_id
    with private_writes():
        private_dir(target)
        written = []
        for name, data in sorted(outputs.items()):
            if Path(name).name != name or name in (".", ".."):
                raise fail("refusing an output name that is not a plain file name", 1)
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
            raise fail("--attr takes KEY=VALUE", 2)
        if key not in ATTRIBUTES:
            raise fail(f"--attr: unknown key {key!r} (accepted: {', '.join(ATTRIBUTES)})", 2)
        parsed[key] = value
    return parsed


def _submit(
    built: Container,
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
        raise fail("input file not found", 2)
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
                )
            )
    except JobError as exc:
        raise fail(f"{getattr(exc, 'code', 'refused')}: {exc}", 2) from None


def _wait(built: Container, job_id: str, timeout: float) -> dict[str, Any]:
    from worker.jobs.reads import job_status

    deadline = time.monotonic() + timeout
    while True:
        status = job_status(built.db, job_id)
        if status["status"] in ("succeeded", "failed", "expired") and status["original_deleted"]:
            return status
        if time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def _decode_ceiling(built: Container) -> contextlib.AbstractContextManager[None]:
    """The decode memory ceiling while a job runs inline in this process (no broker)."""
    if not built.settings.eager:
        return contextlib.nullcontext()
    from pipelines.media import memory_ceiling

    return memory_ceiling(built.settings.decode_memory_limit_mb)


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
    built = container()
    with _decode_ceiling(built):
        job_id = _submit(
            built,
            path,
            job,
            params,
            subject,
            research=research_consent,
            is_minor=minor,
            guardian=guardian_consent,
        )
        status = _wait(built, job_id, timeout)
    if out_dir is not None and status["status"] == "succeeded":
        status["written"] = _write_outputs(built, job_id, out_dir)
    emit(status, as_json, "job")
    if status["status"] not in ("succeeded", "failed"):
        raise typer.Exit(3)


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
    built = container()
    job_id = _submit(
        built,
        path,
        job,
        params,
        subject,
        attributes,
        research=research_consent,
        is_minor=minor,
        guardian=guardian_consent,
    )
    emit({"job_id": job_id}, as_json)


def status(job_id: str, as_json: JsonOpt = False) -> None:
    """The job's state, error code, face count, outputs and whether its original is deleted."""
    from worker.jobs.errors import JobNotFound
    from worker.jobs.reads import job_status

    try:  # a ledger read: no pipeline, store or key is loaded
        data = job_status(container().db, job_id)
    except JobNotFound:
        raise fail("no such job", 2) from None
    emit(data, as_json, "job")


def result(
    job_id: str,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the decrypted outputs")],
    as_json: JsonOpt = False,
) -> None:
    """Decrypt a job's outputs into OUT/JOB_ID/."""
    from worker.crypto import CryptoError
    from worker.jobs.errors import JobNotFound

    built = container()
    try:
        written = _write_outputs(built, job_id, out_dir)
    except JobNotFound:
        raise fail("no such job", 2) from None
    except CryptoError as exc:  # shredded, or a KEK version this keyring no longer holds
        raise fail(f"undecryptable: {exc}", 1) from None
    emit({"job_id": job_id, "written": written}, as_json)


def demo(
    path: Annotated[
        Path | None, typer.Argument(help="A face photo; default: a shipped sample")
    ] = None,
    job: Annotated[str, typer.Option("--job")] = "detect",
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
        status = _wait(built, job_id, 300)
    if status["status"] == "succeeded":
        status["written"] = _write_outputs(built, job_id, out_dir)
    status["store"] = built.settings.effective_store_url
    status["ledger"] = built.settings.effective_database_url
    if as_json:
        emit(status, True)
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
        raise fail("could not encode the sample photo")
    return bytes(buf)
