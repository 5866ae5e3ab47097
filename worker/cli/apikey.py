"""``facemedia apikey create | list | revoke``: keys of the HTTP API (``facemedia serve``).

The key and its webhook secret are printed once, by ``create``: the ledger keeps only the key's
hash and the secret wrapped under the KEK, so neither can be shown again.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from worker.cli._common import EXIT_REFUSED, JsonOpt, container, emit, fail

apikey_app = typer.Typer(no_args_is_help=True, help="HTTP API keys")

DEFAULT_SCOPES = ("jobs:read", "jobs:write")

TenantOpt = Annotated[
    str, typer.Option("--tenant", help="The tenant the key acts for (a slug: a-z, 0-9, _ and -)")
]
ScopeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--scope",
        help="Repeatable: jobs:write (submit), jobs:read (status, outputs), subjects:manage "
        "(erase, consent, export, holds). Default: jobs:read and jobs:write",
    ),
]
RateOpt = Annotated[
    float | None,
    typer.Option("--rate", help="Requests per second allowed (default: [api] rate_per_second)"),
]
BurstOpt = Annotated[
    int | None, typer.Option("--burst", help="Burst of requests allowed (default: [api] burst)")
]


@apikey_app.command("create")
def apikey_create(
    tenant: TenantOpt = "default",
    scope: ScopeOpt = None,
    rate: RateOpt = None,
    burst: BurstOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key and print it with its webhook secret: this is the only time either is
    shown (the ledger keeps the key's hash and the secret encrypted)."""
    from worker.ledger.api_keys import ApiKeyError
    from worker.ledger.errors import LedgerError

    built = container()
    try:
        created = built.api_keys.create(
            tenant, scope or DEFAULT_SCOPES, rate_per_second=rate, burst=burst
        )
    except ApiKeyError as exc:
        raise fail(str(exc), EXIT_REFUSED, error=exc.code) from None
    except LedgerError as exc:  # the tenant check's BadTenant
        raise fail(str(exc), EXIT_REFUSED, error=getattr(exc, "code", "refused")) from None
    shown = {**created.to_json(), "tenant": tenant, "scopes": sorted(set(scope or DEFAULT_SCOPES))}
    if as_json:
        emit(shown, True)
        return
    sys.stdout.write(
        f"key_id          {created.key_id}\n"
        f"tenant          {tenant}\n"
        f"scopes          {' '.join(shown['scopes'])}\n"
        f"key             {created.key}\n"
        f"webhook_secret  {created.webhook_secret}\n"
    )
    sys.stdout.flush()
    sys.stderr.write(
        "warning: the key and the webhook secret are shown this once and cannot be shown "
        "again: store them now (a lost key is revoked and replaced, never recovered)\n"
    )


@apikey_app.command("list")
def apikey_list(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Only this tenant's keys (default: all)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List keys: id, tenant, scopes, limits, created and revoked times (never a key or a
    webhook secret)."""
    keys = container().api_keys.list(tenant)
    if as_json:
        emit({"keys": keys}, True)
        return
    if not keys:
        sys.stdout.write("no API keys\n")
    for k in keys:  # one block per key, nothing cut to a terminal's width
        emit(
            {
                "tenant": k["tenant"],
                "scopes": " ".join(k["scopes"]),
                "rate/s": "default" if k["rate_per_second"] is None else k["rate_per_second"],
                "burst": "default" if k["burst"] is None else k["burst"],
                "created": str(k["created_at"]),
                "revoked": str(k["revoked_at"] or "no"),
            },
            False,
            f"key {k['key_id']}",
        )


@apikey_app.command("revoke")
def apikey_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from apikey list)")],
    as_json: JsonOpt = False,
) -> None:
    """Revoke a key now: every request with it is refused from the next one on (idempotent).
    Callbacks of jobs it submitted are still signed with its webhook secret."""
    store = container().api_keys
    changed = store.revoke(key_id)
    if not changed and store.get(key_id) is None:
        raise fail("no such API key", EXIT_REFUSED, error="not_found")
    emit({"key_id": key_id, "revoked": True, "changed": changed}, as_json, "apikey revoke")
