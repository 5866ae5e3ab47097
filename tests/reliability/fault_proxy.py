"""A fault-injecting HTTP proxy for an S3 endpoint (aiohttp, asyncio).

Each request is forwarded to the upstream unless, with probability ``rate``, a fault is
injected instead: a 500 ``InternalError``, a 503 ``SlowDown``, a connection reset (the socket
is aborted before any response), or a slow body (the real response, trickled in small chunks).
Counts of what was injected are kept in ``FaultProxy.injected``.

Usable as a library (``with FaultProxy(upstream, rate=0.1) as proxy: proxy.url``) or standalone:
``python -m tests.reliability.fault_proxy UPSTREAM_URL --port 9000 --rate 0.1``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

FAULTS = ("error500", "slowdown", "reset", "slow_body")
HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
}
_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
    "<Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
)


class FaultProxy:
    """Runs the proxy on a background thread with its own event loop."""

    def __init__(
        self,
        upstream: str,
        rate: float = 0.1,
        faults: Sequence[str] = FAULTS,
        seed: int = 1,
        port: int = 0,
        slow_chunk: int = 2048,
        slow_delay: float = 0.02,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.rate = rate
        self.faults = tuple(faults)
        self.random = random.Random(seed)
        self.port = port
        self.slow_chunk = slow_chunk
        self.slow_delay = slow_delay
        self.injected: Counter[str] = Counter()
        self.forwarded = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ----- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._session = ClientSession(timeout=ClientTimeout(total=120), auto_decompress=False)
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[union-attr]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # ----- the proxy ---------------------------------------------------------------------------

    def _pick(self) -> str | None:
        if self.rate <= 0 or self.random.random() >= self.rate:
            return None
        return self.random.choice(self.faults)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fault = self._pick()
        if fault is not None:
            self.injected[fault] += 1
        if fault == "error500":
            return web.Response(
                status=500,
                text=_ERROR.format(code="InternalError", message="injected"),
                content_type="application/xml",
            )
        if fault == "slowdown":
            return web.Response(
                status=503,
                text=_ERROR.format(code="SlowDown", message="Please reduce your request rate."),
                content_type="application/xml",
            )
        if fault == "reset":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # nothing more to send on an aborted socket
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        assert self._session is not None
        async with self._session.request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=body if body else None,
            allow_redirects=False,
            skip_auto_headers=("Content-Type", "User-Agent", "Accept", "Accept-Encoding"),
        ) as upstream:
            payload = await upstream.read()
            self.forwarded += 1
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP}
        if fault != "slow_body" or not payload:
            return web.Response(status=upstream.status, headers=out_headers, body=payload)
        response = web.StreamResponse(status=upstream.status, headers=out_headers)
        response.content_length = len(payload)
        await response.prepare(request)
        for at in range(0, len(payload), self.slow_chunk):
            await response.write(payload[at : at + self.slow_chunk])
            await asyncio.sleep(self.slow_delay)
        await response.write_eof()
        return response


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("upstream")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--faults", default=",".join(FAULTS))
    args: Any = parser.parse_args(argv)
    with FaultProxy(args.upstream, args.rate, args.faults.split(","), port=args.port) as proxy:
        print(f"fault proxy on {proxy.url} -> {args.upstream} (rate {args.rate})", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
        print(dict(proxy.injected))


if __name__ == "__main__":
    main()
