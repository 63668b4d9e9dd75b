"""A small fault proxy in front of moto's S3, on loopback, in a thread of the test process.

Writes (PUT) of result objects and the manifest are answered, at the given rates and by a seeded random:
503 without storing anything; a connection reset mid-PUT (the body half read, nothing stored); or
"stored but 500": the object is stored upstream and the answer is a 500, so the client's retry meets
its own object (If-None-Match: * then answers 412). Everything else is passed through.

`arm(method, part, after_upstream)` holds the next request whose path contains `part` (before it goes
upstream, or after: the upstream did it, the answer waits) until `release()`; `held` is set meanwhile,
so a test can kill the client at that exact moment. The proxy also stands in front of the simulator.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter

import aiohttp
from aiohttp import web

HOP = {"host", "content-length", "transfer-encoding", "connection"}


class FaultProxy:
    def __init__(self, upstream: str, *, p503: float = 0.1, preset: float = 0.1, pstored500: float = 0.1,
                 seed: int = 1):
        self.upstream = upstream.rstrip("/")
        self.p503, self.preset, self.pstored500 = p503, preset, pstored500
        self.rng = random.Random(seed)
        self.counts: Counter = Counter()
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stop: asyncio.Event | None = None
        self._armed: tuple[str, str, bool] | None = None
        self.held = threading.Event()
        self._release: asyncio.Event | None = None
        self.held_at = ""  # the request held, as "METHOD path"

    def arm(self, method: str, part: str, *, after_upstream: bool) -> None:
        self.held.clear()
        self._armed = (method, part, after_upstream)

    def release(self) -> None:
        assert self._release is not None
        self._loop.call_soon_threadsafe(self._release.set)

    async def _hold(self, request: web.Request) -> None:
        self.held_at = f"{request.method} {request.path}"
        self.held.set()
        assert self._release is not None
        await self._release.wait()
        self._release.clear()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._release = asyncio.Event()
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        self._ready.set()
        await self._stop.wait()
        await self._session.close()
        await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        armed, hold = self._armed, None
        if armed and request.method == armed[0] and armed[1] in request.path:
            self._armed, hold = None, armed[2]
            if hold is False:
                await self._hold(request)
        faulty = request.method == "PUT" and ("/results/" in request.path or request.path.endswith("_manifest.json"))
        if faulty:
            r = self.rng.random()
            if r < self.p503:
                self.counts["503"] += 1
                await request.read()
                return web.Response(status=503, text="<Error><Code>SlowDown</Code></Error>")
            if r < self.p503 + self.preset:
                self.counts["reset"] += 1
                await request.content.read(1)  # mid-PUT: part of the body read, then the connection goes
                assert request.transport is not None
                request.transport.abort()
                raise ConnectionResetError("reset by the fault proxy")
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        async with self._session.request(request.method, self.upstream + request.path_qs, data=body,
                                         headers=headers) as up:
            data = await up.read()
            out_headers = {k: v for k, v in up.headers.items() if k.lower() not in HOP}
            if request.method == "HEAD" and "Content-Length" in up.headers:  # the object's size
                resp = web.Response(status=up.status, headers=out_headers)
                resp.headers["Content-Length"] = up.headers["Content-Length"]
                return resp
            if hold:
                await self._hold(request)  # done upstream; the answer waits (its client is killed meanwhile)
            if faulty and up.status < 300 and self.rng.random() < self.pstored500:
                self.counts["stored_500"] += 1
                return web.Response(status=500, text="<Error><Code>InternalError</Code></Error>")
            return web.Response(status=up.status, body=data, headers=out_headers)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()
