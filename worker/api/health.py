"""``GET /healthz`` (the process answers) and ``GET /readyz`` (the ledger, the store and, when
one is configured, the broker are reachable; 503 ``not_ready`` naming the ones that failed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

if TYPE_CHECKING:
    from worker.api.app import ApiState

PROBE_KEY = "readyz/probe"


async def healthz(request: Request) -> Response:
    """Alive: no dependency is checked."""
    return JSONResponse({"status": "ok"})


def _checks(state: ApiState) -> dict[str, str]:
    from sqlalchemy import text

    results: dict[str, str] = {}
    try:
        with state.container.db.engine.connect() as db:
            db.execute(text("SELECT 1"))
        results["ledger"] = "ok"
    except Exception:
        results["ledger"] = "unreachable"
    try:
        state.container.store.exists(PROBE_KEY)
        results["store"] = "ok"
    except Exception:
        results["store"] = "unreachable"
    url = state.settings.broker_url
    if url:
        from kombu.connection import Connection

        broker = Connection(url, connect_timeout=2)
        try:
            broker.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)
            results["broker"] = "ok"
        except Exception:
            results["broker"] = "unreachable"
        finally:
            broker.release()
    else:
        results["broker"] = "none (embedded: jobs run in this process)"
    return results


async def readyz(request: Request) -> Response:
    """Ready: 200 ``{"status": "ready", "checks"}``, or 503 ``not_ready`` naming what failed."""
    state: ApiState = request.app.state.api
    checks = await run_in_threadpool(_checks, state)
    failed = sorted(name for name, result in checks.items() if result == "unreachable")
    if failed:
        return JSONResponse(
            {
                "error": "not_ready",
                "message": "unreachable: " + ", ".join(failed),
                "checks": checks,
            },
            503,
        )
    return JSONResponse({"status": "ready", "checks": checks})
