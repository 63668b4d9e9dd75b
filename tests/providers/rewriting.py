"""A loopback proxy in front of the simulator that rewrites its answers: the provider's answers as
untrusted input, without touching the simulator. Every call is forwarded as it came; the answer goes
through `rewrite(call, status, body)` before the client sees it (a rewrite may also answer by itself)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

PASSED_BACK = ("content-type", "retry-after", "retry-after-ms", "x-should-retry")
LIST_PATHS = ("/v1/messages/batches", "/v1/batches")


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    query: str

    @property
    def kind(self) -> str:
        """create, upload, cancel, list, retrieve or results: what the call is, for any provider."""
        if self.path.endswith(("/results", "/content")):
            return "results"
        if self.method == "POST":
            return "upload" if self.path.endswith("/files") else "cancel" if self.path.endswith("/cancel") else "create"
        if self.method == "GET":
            return "list" if self.path in LIST_PATHS else "retrieve"
        return self.method.lower()


Rewrite = Callable[[Call, int, bytes], tuple[int, bytes]]


class RewritingProxy:
    def __init__(self, upstream: str, rewrite: Rewrite):
        self.upstream = upstream
        self.rewrite = rewrite
        self.calls: Counter = Counter()  # kind -> n
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.Response:
        assert self._http is not None
        call = Call(request.method, request.path, request.query_string)
        self.calls[call.kind] += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._http.request(request.method, self.upstream + request.path_qs, data=await request.read(),
                                      headers=headers, allow_redirects=False) as answer:
            body = await answer.read()
            passed = {k: v for k, v in answer.headers.items() if k.lower() in PASSED_BACK}
            status = answer.status
        status, body = self.rewrite(call, status, body)
        return web.Response(status=status, body=body, headers=passed)

    async def __aenter__(self) -> RewritingProxy:
        self._http = aiohttp.ClientSession(auto_decompress=True)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._runner is not None and self._http is not None
        await self._runner.cleanup()
        await self._http.close()
