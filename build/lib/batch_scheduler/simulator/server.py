"""The simulator server: one aiohttp app serving the Anthropic, OpenAI and inline batch APIs.

Every API call goes through one gate, in this order: count the call, check the key, check the
`anthropic-version` header (Anthropic paths), maybe answer with a transient fault, then run the
handler; a create may then lose its answer (the batch exists, the connection drops).
`/_sim/stats` and `/_sim/config` need no key and never fault.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from batch_scheduler.simulator.anthropic import AnthropicApi
from batch_scheduler.simulator.config import SimConfig
from batch_scheduler.simulator.inline import InlineApi
from batch_scheduler.simulator.openai import OpenAIApi
from batch_scheduler.simulator.responses import (
    Rejected,
    Style,
    drop,
    error_response,
    json_response,
    parse_json,
    requests_of,
)
from batch_scheduler.simulator.store import Batch, Store, no_gc

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FAULT_KINDS = ("rate_limit_error", "api_error", "overloaded_error", "unavailable", "dropped")
_FAULT_MESSAGES = {
    "rate_limit_error": "Number of requests has exceeded your rate limit",
    "api_error": "Internal server error",
    "overloaded_error": "Overloaded",
    "unavailable": "Service unavailable",
}


def new_stats() -> dict[str, Any]:
    return {"creates": 0, "requests_created": 0, "lost_creates": 0, "faults": {}, "calls": {},
            "retrieves": 0, "lists": 0, "cancels": 0, "deletes": 0, "uploads": 0,
            "results_downloads": 0, "cut_downloads": 0}


class Simulator:
    """A fake batch API server. `async with Simulator(config) as sim:` then talk to `sim.url`."""

    def __init__(self, config: SimConfig | None = None, clock: Callable[[], float] = time.monotonic):
        self._config = config or SimConfig()
        self.clock = clock
        self.rng = random.Random(self._config.seed)
        self.stats = new_stats()
        self.store = Store()
        self.url: str | None = None
        self._runner: web.AppRunner | None = None
        self._clock0 = clock()
        self._wall0 = time.time()
        self.anthropic = AnthropicApi(self)
        self.openai = OpenAIApi(self)
        self.inline = InlineApi(self)

    @property
    def config(self) -> SimConfig:
        return self._config

    @config.setter
    def config(self, config: SimConfig) -> None:
        """A new config with a seed also restarts the random draws from that seed."""
        self._config = config
        if config.seed is not None:
            self.reseed(config.seed)

    # -- time, randomness, shared steps of handlers --------------------------------------------

    def now(self) -> float:
        return self.clock()

    def wall_time(self) -> float:
        """Epoch seconds that follow the simulator clock (a fake clock moves timestamps too)."""
        return self._wall0 + (self.clock() - self._clock0)

    def reseed(self, seed: int | None) -> None:
        self.rng = random.Random(seed)

    async def read_body(self, request: web.Request, max_bytes: int) -> bytes:
        if request.content_length is not None and request.content_length > max_bytes:
            async for _ in request.content.iter_chunked(1 << 20):
                pass
            raise Rejected("request_too_large", f"request body is larger than {max_bytes:,} bytes")
        body = await request.read()
        if len(body) > max_bytes:
            raise Rejected("request_too_large", f"request body is larger than {max_bytes:,} bytes")
        return body

    async def read_json(self, request: web.Request, max_bytes: int) -> Any:
        return parse_json(await self.read_body(request, max_bytes))

    def check_queue(self, n: int) -> float:
        """Raise 429 when `n` more requests would pass the queue limit; return the clock time."""
        now = self.now()
        limit = self.config.queue_limit
        if limit is not None and self.store.queued(now) + n > limit:
            raise Rejected("rate_limit_error",
                           f"Batch rate limit exceeded: {n:,} more requests would pass the processing "
                           f"queue limit of {limit:,}", headers=self.retry_after())
        return now

    def add_batch(self, batch: Batch) -> None:
        self.store.add(batch)
        self.stats["creates"] += 1
        self.stats["requests_created"] += batch.n

    def download_plan(self, n: int, lines: int | None = None) -> tuple[list[int], int | None]:
        """A shuffled order of `n` requests, and at which of the `lines` (default n) sent to cut the
        download (None: send it all)."""
        lines = n if lines is None else lines
        self.stats["results_downloads"] += 1
        order = list(range(n))
        self.rng.shuffle(order)
        cut_at = None
        if lines and self.config.cut_rate and self.rng.random() < self.config.cut_rate:
            cut_at = self.rng.randrange(lines)
            self.stats["cut_downloads"] += 1
        return order, cut_at

    def retry_after(self) -> dict[str, str]:
        return {"retry-after": f"{self.config.retry_after_s:g}"}

    # -- the gate ---------------------------------------------------------------------------------

    def _count(self, group: str, key: str) -> None:
        counters = self.stats[group]
        counters[key] = counters.get(key, 0) + 1

    def _check_key(self, request: web.Request) -> None:
        key = request.headers.get("x-api-key")
        if not key:
            auth = request.headers.get("authorization", "")
            scheme, _, token = auth.partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else ""
        if not key:
            raise Rejected("authentication_error", "x-api-key header or Authorization: Bearer is required")
        valid = self.config.valid_keys
        if valid is not None and key not in valid:
            raise Rejected("authentication_error", "invalid x-api-key")

    def _draw_fault(self) -> str | None:
        rate = self.config.fail_rate
        if rate and self.rng.random() < rate:
            return self.rng.choice(FAULT_KINDS)
        return None

    async def _fault(self, request: web.Request, style: Style, kind: str) -> web.StreamResponse:
        self._count("faults", kind)
        if kind == "dropped":
            await request.read()
            drop(request)
            return web.Response()
        headers = self.retry_after() if kind == "rate_limit_error" else None
        return error_response(style, Rejected(kind, _FAULT_MESSAGES[kind], headers=headers))

    def route(self, name: str, style: Style, handler: Handler, *, create: bool = False) -> Handler:
        async def gate(request: web.Request) -> web.StreamResponse:
            self._count("calls", name)
            answer_style = Style.INLINE if request.match_info.get("id", "").startswith("ibatch_") else style
            try:
                self._check_key(request)
                if style is Style.ANTHROPIC and self.config.require_version \
                        and not request.headers.get("anthropic-version"):
                    raise Rejected("invalid_request_error", "anthropic-version: header is required")
                fault = self._draw_fault()
                if fault is not None:
                    return await self._fault(request, answer_style, fault)
                lose = create and self.config.lost_create_rate and self.rng.random() < self.config.lost_create_rate
                creates = self.stats["creates"]
                resp = await handler(request)
                if lose and self.stats["creates"] > creates:
                    self.stats["lost_creates"] += 1
                    drop(request)
                return resp
            except Rejected as exc:
                return error_response(answer_style, exc)
        return gate

    # -- the app ------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 40)
        for api, style in ((self.anthropic, Style.ANTHROPIC), (self.openai, Style.OPENAI),
                           (self.inline, Style.INLINE)):
            for method, path, name, handler, create in api.routes():
                app.router.add_route(method, path, self.route(name, style, handler, create=create))
        app.router.add_post("/v1/batches", self.route("batches.create", Style.OPENAI, self._create_batch,
                                                      create=True))
        app.router.add_get("/_sim/stats", self._stats)
        app.router.add_post("/_sim/config", self._set_config)
        app.router.add_get("/_sim/config", self._get_config)
        return app

    async def _create_batch(self, request: web.Request) -> web.Response:
        """`POST /v1/batches` is the inline proxy's create (`requests`) and OpenAI's (`input_file_id`)."""
        body = await self.read_body(request, self.config.max_body_bytes)
        with no_gc():  # the parsed body is freed before the GC runs again
            doc = parse_json(body)
            if not (isinstance(doc, dict) and "requests" in doc):
                return self.openai.create(doc)
            try:
                return self.inline.create(requests_of(doc))
            except Rejected as exc:
                return error_response(Style.INLINE, exc)
            finally:
                del doc

    async def _stats(self, request: web.Request) -> web.Response:
        return json_response(self.stats)

    async def _get_config(self, request: web.Request) -> web.Response:
        return json_response(self.config.to_json())

    async def _set_config(self, request: web.Request) -> web.Response:
        try:
            fields = orjson.loads(await request.read())
            if not isinstance(fields, dict):
                raise ValueError("expected a JSON object")
            self.config.update(fields)
        except (ValueError, TypeError) as exc:
            return json_response({"error": str(exc)}, status=400)
        if "seed" in fields:
            self.reseed(self.config.seed)
        return json_response(self.config.to_json())

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = site._server.sockets if site._server is not None else []  # type: ignore[union-attr]
        bound = sockets[0].getsockname()[1] if sockets else port
        self.url = f"http://{host}:{bound}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
