"""``facemedia research ...``: build, grant and revoke releases (service side) and pull and
verify them (researcher side). Entry points only translate arguments and print results."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from worker.cli._common import (
    EXIT_NOT_FINISHED,
    EXIT_REFUSED,
    JsonOpt,
    YesOpt,
    confirm_or_refuse,
    container,
    emit,
    err,
    fail,
    out,
)

research_app = typer.Typer(no_args_is_help=True, help="Research dataset releases")
revocations_app = typer.Typer(no_args_is_help=True, help="Signed revocation lists of releases")
research_app.add_typer(revocations_app, name="revocations")

ReleaseArg = Annotated[str, typer.Argument(help="The release's name or id")]
SignerOpt = Annotated[
    Path | None,
    typer.Option(
        "--signer",
        help="The service's signing public key (from `research signing-key`) to trust for this "
        "call; without it, a key pinned with `research trust` (nothing is trusted on first use)",
    ),
]


# Release error codes that refuse the request before anything ran (exit 2); every other code
# is a check or a build that failed (exit 1).
_REFUSED = frozenset({"bad_request", "exists", "not_found", "untrusted_signer", "no_grant"})


def _run(fn: Any, as_json: bool) -> Any:
    """Call ``fn``; a ReleaseError becomes exit 2 (refused: bad request, unknown release, no
    trust, no grant) or 1 (failed), printed with its code, its message and its figures (the
    loss funnel of ``no_eligible_samples``)."""
    from worker.research.release import ReleaseError

    try:
        return fn()
    except ReleaseError as exc:
        if as_json:
            sys.stdout.write(json.dumps(exc.to_json()) + "\n")
        else:
            where = f" ({exc.path})" if exc.path else ""
            err.print(f"[red]error:[/red] {exc.code}: {exc}{where}", highlight=False)
            if exc.details.get("funnel"):
                _print_funnel(exc.details["funnel"], err)
        raise typer.Exit(2 if exc.code in _REFUSED else 1) from None


def _print_funnel(funnel: dict[str, Any], console: Any) -> None:
    """The loss funnel as a two-column table: where the candidate jobs went."""
    from rich.table import Table

    from worker.research.funnel import describe

    table = Table(title="where the candidates went", show_header=False)
    table.add_column(overflow="fold")
    table.add_column(justify="right")
    for label, n in describe(funnel):
        table.add_row(label, f"{n:,}")
    console.print(table)


def _show_release(result: dict[str, Any], as_json: bool) -> None:
    """A release's figures, then (on a terminal) its loss funnel."""
    if as_json:
        emit(result, True)
        return
    emit({k: v for k, v in result.items() if k != "funnel"}, False, "release")
    if result.get("funnel"):
        _print_funnel(result["funnel"], out)


def _research_workers(built: Any) -> str:
    """What the broker says about workers on the ``research`` queue, where a release's shards
    go: a sentence for people (empty when tasks run in this process)."""
    from worker.dispatch import names

    try:
        consumers = built.dispatcher.consumers(names.RESEARCH)
    except Exception as exc:  # the broker cannot be asked: say so, keep the exit code
        return f"the broker could not be asked about workers ({type(exc).__name__})"
    if consumers == 0:
        return (
            f"no worker consumes the '{names.RESEARCH}' queue (start one: `make "
            "research-worker`, or `celery -A worker.celery_app worker -Q research`)"
        )
    if consumers:
        return f"{consumers} worker(s) consume '{names.RESEARCH}'"
    return ""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        raise fail(f"cannot read the {what} file", EXIT_REFUSED, error="bad_request") from None


@research_app.command("release")
def release(
    name: Annotated[str, typer.Option("--name", help="Unique release name")],
    k: Annotated[
        int | None, typer.Option("--k", help="k-anonymity (default [research] release_k)")
    ] = None,
    operator: Annotated[
        str | None, typer.Option("--operator", help="Only samples de-identified by this operator")
    ] = None,
    max_suppression: Annotated[
        float,
        typer.Option(
            "--max-suppression",
            min=0.0,
            max=1.0,
            help="Share of samples suppression may remove before generalizing further",
        ),
    ] = 0.1,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            min=0.0,
            help="With a broker: wait up to this many seconds for publication (exit 3 if the "
            "release is not published by then, saying why)",
        ),
    ] = 0.0,
    tenant: Annotated[
        str | None,
        typer.Option(
            "--tenant",
            help="Only this tenant's samples (default: every tenant's; no tenant id appears in "
            "the release either way)",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Build a release from the eligible research samples (fanned out with a broker) and
    print its figures with the loss funnel: where the candidate jobs went (not sampled, no
    consent, minors without a guardian's consent, withdrawn, erased, the residual-face gate,
    k-anonymity). A release spans every tenant unless --tenant restricts it."""
    import time

    from worker.research.release import ReleaseRequest

    built = container()
    result = _run(
        lambda: built.releases.create(
            ReleaseRequest(
                name=name,
                k=k,
                operator=operator,
                max_suppression=max_suppression,
                tenant=tenant,
            )
        ),
        as_json,
    )
    started = time.monotonic()
    while result.status in ("building", "finishing") and time.monotonic() - started < wait:
        time.sleep(0.5)
        result = built.releases.result(result.release_id)
    if result.status == "failed":
        _show_release(result.to_json(), as_json)
        raise fail(f"release_failed: release {result.release_id} failed to build", 1)
    if result.status != "published" and wait > 0:
        why = f"the release is still {result.status} after {wait:g} s"
        workers = _research_workers(built)
        why += f": {workers}" if workers else ""
        if as_json:
            emit(result.to_json() | {"error": "not_finished", "message": why}, True)
            raise typer.Exit(EXIT_NOT_FINISHED)
        _show_release(result.to_json(), False)
        raise fail(why, EXIT_NOT_FINISHED, error="not_finished")
    _show_release(result.to_json(), as_json)
    if result.status != "published" and not as_json:
        workers = _research_workers(built)
        err.print(
            f"{result.status}: `facemedia research status {result.release_id}` shows its "
            "progress" + (f"; {workers}" if workers else ""),
            highlight=False,
        )


@research_app.command("status")
def status(release: ReleaseArg, as_json: JsonOpt = False) -> None:
    """A release's status and figures, with its loss funnel (by id or name)."""
    built = container()
    svc = built.releases
    _show_release(_run(lambda: svc.result(svc.find(release)).to_json(), as_json), as_json)


@research_app.command("list")
def list_releases(as_json: JsonOpt = False) -> None:
    """Every release."""
    rows = container().releases.list_releases()
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    from rich.table import Table

    # ids in full, never cut (a person copies them): the id column does not shrink or wrap
    table = Table("name", "status", "samples", "k", "suppressed")
    table.add_column(
        "release_id", no_wrap=True, min_width=max([10, *(len(r["release_id"]) for r in rows)])
    )
    for r in rows:
        table.add_row(
            r["name"],
            r["status"],
            str(r["samples"]),
            str(r["k_achieved"]),
            str(r["suppressed"]),
            r["release_id"],
        )
    out.print(table)


@research_app.command("keygen")
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Directory for the key pair")],
    as_json: JsonOpt = False,
) -> None:
    """Write a researcher's X25519 key pair: researcher.key (0600) and researcher.pub.pem."""
    from worker.research.release.keys import write_keypair

    out.mkdir(parents=True, exist_ok=True)
    private, public = out / "researcher.key", out / "researcher.pub.pem"
    try:
        fp = write_keypair(private, public)
    except FileExistsError:
        raise fail("a key already exists there", EXIT_REFUSED, error="bad_request") from None
    emit({"private_key": str(private), "public_key": str(public), "fingerprint": fp}, as_json)


@research_app.command("grant")
def grant(
    release: ReleaseArg,
    pubkey_file: Annotated[
        Path, typer.Argument(help="The researcher's public key (PEM, from `research keygen`)")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Wrap a release's key to a researcher's public key."""
    data = _read(pubkey_file, "public key")
    built = container()
    emit(_run(lambda: built.releases.grant(release, data), as_json), as_json, "grant")


@research_app.command("revoke")
def revoke(release: ReleaseArg, yes: YesOpt = False, as_json: JsonOpt = False) -> None:
    """Withdraw a whole release: delete every object of it from the store (audited). Asks
    first on a terminal; off one, ``--yes`` is required."""
    confirm_or_refuse("Withdraw the whole release and delete every object of it?", yes)
    built = container()
    emit(_run(lambda: built.releases.revoke(release), as_json), as_json, "revoke")


@research_app.command("rewrap")
def rewrap(as_json: JsonOpt = False) -> None:
    """Re-wrap release keys and the signing key under the current KEK (after `keys rotate`)."""
    count = container().releases.rewrap()
    emit({"rewrapped": count}, as_json, "rewrap")


@research_app.command("signing-key")
def signing_key(
    out: Annotated[Path, typer.Option("--out", help="Where to write the public key (PEM)")],
    as_json: JsonOpt = False,
) -> None:
    """Export the service's Ed25519 release-signing public key."""
    import hashlib

    pem = container().releases.signing.public_pem()
    out.write_bytes(pem)
    emit({"path": str(out), "sha256": hashlib.sha256(pem).hexdigest()}, as_json)


@revocations_app.command("refresh")
def revocations_refresh(
    release: Annotated[list[str] | None, typer.Argument(help="Releases (default: all)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-sign the revocation lists of published releases from the ledger."""
    built = container()
    rows = _run(lambda: built.releases.refresh_revocations(release or None), as_json)
    emit({"releases": rows}, as_json, "revocations")


@research_app.command("trust")
def trust(
    signer_file: Annotated[Path, typer.Argument(help="The service's signing key (PEM)")],
    as_json: JsonOpt = False,
) -> None:
    """Pin the service's release-signing key for `pull` and `verify`
    ($XDG_CONFIG_HOME/facemedia/known_signers)."""
    from worker.research.release.pull import trust as do_trust

    data = _read(signer_file, "signer")
    emit(_run(lambda: do_trust(data).to_json(), as_json), as_json, "trust")


@research_app.command("pull")
def pull(
    release: ReleaseArg,
    key: Annotated[Path, typer.Option("--key", help="Your X25519 private key file")],
    out: Annotated[Path, typer.Option("--out", help="Directory to pull into")],
    signer: SignerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download, verify, decrypt a release and apply its revocation list (resumable)."""
    from worker.research.release.pull import pull as do_pull

    private = _read(key, "private key")
    pinned = _read(signer, "signer") if signer is not None else None
    store = container().store
    if as_json:
        result = _run(lambda: do_pull(store, release, private, out, signer=pinned), as_json)
    else:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=Console(stderr=True),  # a real Console: Progress drives it as a Live
        ) as bar:
            tasks: dict[str, Any] = {}

            def progress(name: str, n: int, total: int) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(name, total=total)
                bar.advance(tasks[name], n)

            result = _run(
                lambda: do_pull(store, release, private, out, signer=pinned, progress=progress),
                as_json,
            )
    emit(result.to_json(), as_json, "pull")


@research_app.command("verify")
def verify(
    directory: Annotated[Path, typer.Argument(help="A directory `research pull` wrote")],
    signer: SignerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-check a pulled release against the pinned signer: signatures, the revocation
    list's sequence, and every byte of every file (revoked samples removed, nothing else)."""
    from worker.research.release.pull import verify as do_verify

    pinned = _read(signer, "signer") if signer is not None else None
    emit(_run(lambda: do_verify(directory, signer=pinned), as_json).to_json(), as_json, "verify")
