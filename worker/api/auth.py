"""Who is calling: ``Authorization: Bearer <key>`` → :class:`~worker.ledger.api_keys.Principal`,
then the scope (403) and the key's rate limit (429).

The key is checked on every request (revocation takes effect at once) in a worker thread (the
ledger is sync). The key text is never logged, echoed or kept beyond the check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from worker.api.errors import ApiError, forbidden, unauthorized
from worker.api.ratelimit import retry_after

if TYPE_CHECKING:
    from worker.api.app import ApiState
    from worker.ledger.api_keys import Principal


def bearer_of(request: Request) -> str | None:
    """The bearer token of the request, or None."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authorize(request: Request, scope: str) -> Principal:
    """The caller's principal, holding ``scope``, within its rate limit; else ApiError
    401 ``unauthorized``, 403 ``forbidden`` or 429 ``rate_limited``. The key check and the
    token take run in one worker thread (one hop off the event loop)."""
    state: ApiState = request.app.state.api
    token = bearer_of(request)
    if token is None:
        raise unauthorized()

    def check(bearer: str) -> tuple[Principal | None, float]:
        principal = state.container.api_keys.authenticate(bearer)
        if principal is None or scope not in principal.scopes:
            return principal, 0.0
        return principal, state.limiter.take(
            principal.key_id, principal.rate_per_second, principal.burst
        )

    principal, wait = await run_in_threadpool(check, token)
    del token
    if principal is None:
        raise unauthorized()
    if scope not in principal.scopes:
        raise forbidden(scope)
    if wait > 0:
        raise ApiError(
            429,
            "rate_limited",
            "this key is over its rate limit; retry after the Retry-After seconds",
            {"Retry-After": retry_after(wait)},
        )
    return principal
