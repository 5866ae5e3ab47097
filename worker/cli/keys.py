"""``facemedia keys rotate | retire``: KEK versions and epochs."""

from __future__ import annotations

import typer

from worker.cli._common import (
    EXIT_FAILED,
    JsonOpt,
    YesOpt,
    confirm_or_refuse,
    container,
    emit,
    fail,
)

keys_app = typer.Typer(no_args_is_help=True, help="Key management")


@keys_app.command("rotate")
def keys_rotate(as_json: JsonOpt = False) -> None:
    """New KEK version; re-wrap every subject key, service key, release key and webhook secret
    (objects are untouched). Old versions stay live: `keys retire` destroys them."""
    built = container()
    current, counts = built.epochs.rotate()
    emit(
        {
            "rewrapped": counts.subject_keys,
            "service_keys_rewrapped": counts.service_keys,
            "releases_rewrapped": counts.releases,
            "webhook_secrets_rewrapped": counts.webhook_secrets,
            "kek_version": current.version,
        },
        as_json,
    )


@keys_app.command("retire")
def keys_retire(yes: YesOpt = False, as_json: JsonOpt = False) -> None:
    """Complete every pending cryptographic erasure now: a KEK epoch change (new KEK, every live
    key re-wrapped, every older KEK version destroyed: backups made before can no longer
    unwrap any key). Beat does the same on its schedule (erasure_epoch_delay). Asks first on a
    terminal; --yes is required off one."""
    from worker.crypto import CryptoError
    from worker.retention.epochs import EpochError

    built = container()
    pending = built.epochs.pending().count
    confirm_or_refuse(
        f"{pending} erasure(s) pending. Destroy every old KEK version? Ledger backups made "
        "before this can then no longer unwrap any key",
        yes,
    )
    try:
        result = built.epochs.run(force=True)
    except EpochError as exc:
        raise fail(str(exc), EXIT_FAILED, error=exc.code) from None
    except CryptoError as exc:
        raise fail(
            f"{exc} (run it again: the pass resumes)", EXIT_FAILED, error="epoch_failed"
        ) from None
    emit(result.to_json(), as_json, "keys retire")
