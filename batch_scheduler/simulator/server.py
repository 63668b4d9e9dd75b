"""The simulator server: one aiohttp app serving the Anthropic, OpenAI and inline batch APIs.

Every API call goes through one gate, in this order: count the call, check the key, check the
`anthropic-version` header (Anthropic paths: missing or unknown is a 400), the billing error, maybe
answer with a transient fault (faults.py), then run the handler; a create may then lose its answer
(the batch exists, the connection drops). `/_sim/stats` and `/_sim/config` need no key and never fault.

`/_sim/stats`: calls by name, faults by kind, creates and requests created (what is billed), lost
creates, ghost 404s, requests left out of results, queue-full 429s, spend-limit 429s, token-limit
failures, count_tokens calls, peak queued requests (Anthropic + inline) and peak enqueued tokens
(OpenAI, the most of any one model), and the tokens billed by kind.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from batch_scheduler.simulator import faults
from batch_scheduler.simulator.anthropic import AnthropicApi
from batch_scheduler.simulator.config import SimConfig
from batch_scheduler.simulator.counting import PromptCache
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
from batch_scheduler.simulator.store import Batch, Outcome, Store, no_gc, output_tokens
from batch_scheduler.simulator.validation import version_problem

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_stats() -> dict[str, Any]:
    return {"creates": 0, "requests_created": 0, "lost_creates": 0, "faults": {}, "calls": {},
            "retrieves": 0, "lists": 0, "cancels": 0, "deletes": 0, "uploads": 0,
            "results_downloads": 0, "cut_downloads": 0, "ghost_404s": 0, "missing_results": 0,
            "request_timeouts": 0, "queue_full": 0, "spend_limited": 0, "billing_errors": 0,
            "token_limit_failures": 0, "count_tokens": 0, "peak_queued_requests": 0,
            "peak_enqueued_tokens": 0, "peak_enqueued_tokens_by_model": {},
            "tokens": {"input": 0, "output": 0, "cache_write_5m": 0, "cache_write_1h": 0, "cache_read": 0}}


class Simulator:
    """A fake batch API server. `async with Simulator(config) as sim:` then talk to `sim.url`."""

    def __init__(self, config: SimConfig | None = None, clock: Callable[[], float] = time.monotonic):
        self._config = config or SimConfig()
        self.clock = clock
        self.rng = random.Random(self._config.seed)
        self.stats = new_stats()
        self.store = Store()
        self.prompt_cache = PromptCache()
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

    def check_spend(self) -> None:
        """The spend-limit 429 once `spend_cap` requests were created."""
        cap = self.config.spend_cap
        if cap is not None and self.stats["requests_created"] >= cap:
            self.stats["spend_limited"] += 1
            raise faults.spend_limit_error(self.wall_time())

    def ghost(self, batch: Batch) -> bool:
        """Whether `batch` answers 404 now (its ghost window after create); counted."""
        if faults.ghost(self.config, batch.created_at, self.now()):
            self.stats["ghost_404s"] += 1
            return True
        return False

    def add_batch(self, batch: Batch) -> None:
        """Store a new batch; count what is billed (requests, tokens) and the peaks of the queues."""
        self.store.add(batch)
        stats = self.stats
        stats["creates"] += 1
        stats["requests_created"] += batch.n
        stats["missing_results"] += len(batch.missing)
        stats["request_timeouts"] += batch.outcomes.count(Outcome.REQUEST_TIMEOUT)
        self._count_tokens(batch)
        now = self.now()
        if batch.kind == "openai":
            model = batch.extra.get("model")
            if model and not batch.extra.get("errors"):
                tokens = self.store.enqueued_tokens(now, model)
                by_model = stats["peak_enqueued_tokens_by_model"]
                by_model[model] = max(by_model.get(model, 0), tokens)
                stats["peak_enqueued_tokens"] = max(stats["peak_enqueued_tokens"], tokens)
        else:
            stats["peak_queued_requests"] = max(stats["peak_queued_requests"], self.store.queued(now))

    def _count_tokens(self, batch: Batch) -> None:
        """Tokens of the requests that will succeed, by kind (what a client would be billed for)."""
        tokens = self.stats["tokens"]
        for i, outcome in enumerate(batch.outcomes):
            if outcome != Outcome.SUCCEEDED:
                continue
            tokens["input"] += batch.in_tokens[i]
            tokens["output"] += output_tokens(batch.custom_ids[i], batch.max_tokens[i])
            five, hour, read = batch.cache.get(i, (0, 0, 0))
            tokens["cache_write_5m"] += five
            tokens["cache_write_1h"] += hour
            tokens["cache_read"] += read

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

    async def _fault(self, request: web.Request, style: Style, kind: str) -> web.StreamResponse:
        self._count("faults", kind)
        if kind == "dropped":
            await request.read()
            drop(request)
            return web.Response()
        return error_response(style, faults.fault_error(kind, style, self.config.retry_after_s))

    def _check_call(self, request: web.Request, style: Style) -> None:
        """Key, version and billing, in the order the real API answers them."""
        self._check_key(request)
        if style is Style.ANTHROPIC:
            problem = version_problem(request.headers.get("anthropic-version"), self.config.require_version)
            if problem:
                raise Rejected("invalid_request_error", problem)
        if self.config.billing_error:
            self.stats["billing_errors"] += 1
            raise faults.billing_error()

    def route(self, name: str, style: Style, handler: Handler, *, create: bool = False) -> Handler:
        async def gate(request: web.Request) -> web.StreamResponse:
            self._count("calls", name)
            answer_style = Style.INLINE if request.match_info.get("id", "").startswith("ibatch_") else style
            try:
                self._check_call(request, style)
                fault = faults.draw_kind(self.rng, self.config)
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
        sockets = site._server.sockets if site._server is not None else []  # type: ignore[attr-defined]  # aiohttp says AbstractServer; it is asyncio's Server
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
