"""``facemedia research ...``: build, grant and revoke releases (service side) and pull and
verify them (researcher side). Entry points only translate arguments and print results."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from worker.cli._common import JsonOpt, container, emit, err, out

research_app = typer.Typer(no_args_is_help=True, help="Research dataset releases")
revocations_app = typer.Typer(no_args_is_help=True, help="Signed revocation lists of releases")
research_app.add_typer(revocations_app, name="revocations")

SignerOpt = Annotated[
    Path | None,
    typer.Option(
        "--signer",
        help="The service's signing public key (from `research signing-key`) to trust for this "
        "call; without it, a key pinned with `research trust` (nothing is trusted on first use)",
    ),
]


def _run(fn: Any, as_json: bool) -> Any:
    """Call ``fn``; a ReleaseError becomes exit code 1 with its code and message."""
    from worker.research.release import ReleaseError

    try:
        return fn()
    except ReleaseError as exc:
        if as_json:
            sys.stdout.write(json.dumps(exc.to_json()) + "\n")
        else:
            where = f" ({exc.path})" if exc.path else ""
            err.print(f"[red]error[/red] {exc.code}: {exc}{where}", highlight=False)
        raise typer.Exit(1) from None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        err.print(f"[red]error[/red] bad_request: cannot read the {what} file", highlight=False)
        raise typer.Exit(2) from None


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
        typer.Option("--wait", help="With a broker: wait up to this many seconds for publication"),
    ] = 0.0,
    as_json: JsonOpt = False,
) -> None:
    """Build a release from the eligible research samples (fanned out with a broker)."""
    import time

    from worker.research.release import ReleaseRequest

    built = container()
    result = _run(
        lambda: built.releases.create(
            ReleaseRequest(name=name, k=k, operator=operator, max_suppression=max_suppression)
        ),
        as_json,
    )
    deadline = time.monotonic() + wait
    while result.status in ("building", "finishing") and time.monotonic() < deadline:
        time.sleep(0.5)
        result = built.releases.result(result.release_id)
    emit(result.to_json(), as_json, "release")


@research_app.command("status")
def status(release: str, as_json: JsonOpt = False) -> None:
    """A release's status and figures (by id or name)."""
    built = container()
    svc = built.releases
    emit(_run(lambda: svc.result(svc.find(release)).to_json(), as_json), as_json, "release")


@research_app.command("list")
def list_releases(as_json: JsonOpt = False) -> None:
    """Every release."""
    rows = container().releases.list_releases()
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    from rich.table import Table

    table = Table("release_id", "name", "status", "samples", "k", "suppressed")
    for r in rows:
        table.add_row(
            r["release_id"],
            r["name"],
            r["status"],
            str(r["samples"]),
            str(r["k_achieved"]),
            str(r["suppressed"]),
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
        err.print("[red]error[/red] bad_request: a key already exists there", highlight=False)
        raise typer.Exit(1) from None
    emit({"private_key": str(private), "public_key": str(public), "fingerprint": fp}, as_json)


@research_app.command("grant")
def grant(release: str, pubkey_file: Path, as_json: JsonOpt = False) -> None:
    """Wrap a release's key to a researcher's public key."""
    data = _read(pubkey_file, "public key")
    built = container()
    emit(_run(lambda: built.releases.grant(release, data), as_json), as_json, "grant")


@research_app.command("revoke")
def revoke(release: str, as_json: JsonOpt = False) -> None:
    """Withdraw a whole release: delete every object of it from the store (audited)."""
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
    release: str,
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
            console=err,
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
    directory: Path,
    signer: SignerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-check a pulled release against the pinned signer: signatures, the revocation
    list's sequence, and every byte of every file (revoked samples removed, nothing else)."""
    from worker.research.release.pull import verify as do_verify

    pinned = _read(signer, "signer") if signer is not None else None
    emit(_run(lambda: do_verify(directory, signer=pinned), as_json).to_json(), as_json, "verify")
