"""``facemedia serve``: the HTTP API (docs/API.md) on uvicorn.

With no broker configured the server is the whole service (the embedded default): jobs run in
this process, on a background thread, off the request path. With a broker it only ingests and
enqueues; ``celery worker`` processes run the jobs.
"""

from __future__ import annotations

import gc
from typing import Annotated

import typer

from worker.cli._common import EXIT_REFUSED, container, fail

HostOpt = Annotated[
    str | None, typer.Option("--host", help="Address to listen on (default: [api] host)")
]
PortOpt = Annotated[
    int | None, typer.Option("--port", help="Port to listen on (default: [api] port)")
]
WorkersOpt = Annotated[
    int | None,
    typer.Option("--workers", help="uvicorn worker processes (default: [api] workers)"),
]


def serve(host: HostOpt = None, port: PortOpt = None, workers: WorkersOpt = None) -> None:
    """Serve the HTTP API (POST/PUT /v1/jobs, GET /v1/jobs/ID, outputs, subjects' rights,
    /healthz, /readyz, /openapi.json) until interrupted. Requests need an API key
    (`facemedia apikey create`)."""
    import uvicorn

    from worker.logs import configure_logging

    gc.enable()  # a long-running process: main() turned the cyclic collector off for start-up
    built = container()
    settings = built.settings
    configure_logging(settings.log_level)  # access lines are INFO
    api = settings.api
    count = api.workers if workers is None else workers
    if count < 1:
        raise fail("--workers must be at least 1", EXIT_REFUSED, error="usage")
    options = {
        "host": host or api.host,
        "port": api.port if port is None else port,
        "access_log": False,  # our own access log: method, path, status; no query, no headers
        "log_config": None,  # uvicorn's loggers go through the scrubbing root handler
        "server_header": False,
        "proxy_headers": False,
        "timeout_graceful_shutdown": 10,
    }
    if count == 1:
        from worker.api.app import create_app

        uvicorn.run(create_app(built), **options)  # type: ignore[arg-type]
        return
    # several processes: each builds its own container from the same settings
    built.close()
    uvicorn.run(
        "worker.api.app:app_from_environment",
        factory=True,
        workers=count,
        **options,  # type: ignore[arg-type]
    )
