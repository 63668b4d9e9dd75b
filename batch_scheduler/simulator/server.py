"""The simulator server: one aiohttp app serving the Anthropic, OpenAI, inline, Azure OpenAI, Groq, Together,
Mistral, xAI, Bedrock, Gemini and Vertex AI batch APIs (Vertex with its Cloud Storage subset and OAuth token endpoint: google/cloud.py, gcs.py,
vertex.py), and the realtime Messages and Chat Completions endpoints (realtime.py).

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

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

import batch_scheduler.simulator.faults as faults
from batch_scheduler.simulator.anthropic.api import AnthropicApi
from batch_scheduler.simulator.anthropic.inline import InlineApi
from batch_scheduler.simulator.aws.bedrock import BedrockApi
from batch_scheduler.simulator.config import SimConfig
from batch_scheduler.simulator.context import SimContext
from batch_scheduler.simulator.google.cloud import TOKEN_PATH, GoogleAuth, GoogleGate
from batch_scheduler.simulator.google.gcs import CloudStorage
from batch_scheduler.simulator.google.gemini import GeminiApi
from batch_scheduler.simulator.google.gemini_files import GeminiFiles
from batch_scheduler.simulator.google.vertex import VertexApi
from batch_scheduler.simulator.openai.api import OpenAIApi
from batch_scheduler.simulator.openai.azure import AzureApi
from batch_scheduler.simulator.openai.files import OpenAIFiles
from batch_scheduler.simulator.openai.groq import GroqApi
from batch_scheduler.simulator.openai.mistral import MistralApi
from batch_scheduler.simulator.openai.together import PURPOSE as TOGETHER_PURPOSE
from batch_scheduler.simulator.openai.together import TogetherApi, together_file
from batch_scheduler.simulator.openai.xai import XaiApi
from batch_scheduler.simulator.realtime import MESSAGES_PATH, RealtimeApi
from batch_scheduler.simulator.responses import (
    Rejected,
    Style,
    drop,
    error_response,
    json_response,
    parse_json,
    read_body,
    requests_of,
)
from batch_scheduler.simulator.store import Store, no_gc
from batch_scheduler.simulator.validation import version_problem

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SIGV4 = re.compile(r"AWS4-HMAC-SHA256 Credential=(?P<key>[A-Za-z0-9]+)/\d{8}/[a-z0-9-]+/(?P<service>[a-z0-9-]+)/aws4_request, "
                   r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=[0-9a-f]{64}")
AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")


class Simulator:
    """A fake batch API server. `async with Simulator(config) as sim:` then talk to `sim.url`.

    The provider's state is one `SimContext` (context.py), shared by the three APIs; the attributes
    below read and replace it (`sim.config = ...` switches faults on, `sim.clock = ...` moves time)."""

    def __init__(self, config: SimConfig | None = None, clock: Callable[[], float] = time.monotonic):
        self.ctx = SimContext(config or SimConfig(), clock)
        self.url: str | None = None
        self._runner: web.AppRunner | None = None
        self.anthropic = AnthropicApi(self.ctx)
        # one /v1/files store for OpenAI's uploads and Together's (purpose batch-api)
        self.openai = OpenAIApi(self.ctx, OpenAIFiles(self.ctx, purposes=("batch", TOGETHER_PURPOSE),
                                                      shapes={TOGETHER_PURPOSE: together_file}))
        self.together = TogetherApi(self.ctx, self.openai.files)
        self.groq = GroqApi(self.ctx)
        self.mistral = MistralApi(self.ctx)  # under /mistral: its /v1/files is OpenAI's path (mistral.py)
        self.xai = XaiApi(self.ctx)  # under /xai: its /v1/batches is OpenAI's path (xai.py)
        self.inline = InlineApi(self.ctx)
        self.bedrock = BedrockApi(self.ctx)
        self.azure = AzureApi(self.ctx)
        self.gemini = GeminiApi(self.ctx, GeminiFiles(self.ctx))
        self.google = GoogleAuth(self.ctx)  # Google Cloud: the token endpoint, Cloud Storage, Vertex AI
        self.gcs = CloudStorage(self.ctx)
        self.vertex = VertexApi(self.ctx, self.gcs)
        self.realtime = RealtimeApi(self.ctx)

    @property
    def config(self) -> SimConfig:
        return self.ctx.config

    @config.setter
    def config(self, config: SimConfig) -> None:
        """A new config with a seed also restarts the random draws from that seed."""
        self.ctx.config = config
        if config.seed is not None:
            self.ctx.reseed(config.seed)

    @property
    def clock(self) -> Callable[[], float]:
        return self.ctx.clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self.ctx.clock = clock

    @property
    def stats(self) -> dict[str, Any]:
        return self.ctx.stats

    @property
    def store(self) -> Store:
        return self.ctx.store

    # -- the gate ---------------------------------------------------------------------------------

    def _count(self, group: str, key: str) -> None:
        counters = self.ctx.stats[group]
        counters[key] = counters.get(key, 0) + 1

    def _check_sigv4(self, request: web.Request) -> None:
        """Bedrock: a SigV4 authorization header of the right shape for the service `bedrock`, and its date."""
        m = SIGV4.fullmatch(request.headers.get("authorization", ""))
        if m is None or not AMZ_DATE.fullmatch(request.headers.get("x-amz-date", "")):
            raise Rejected("authentication_error", "Missing Authentication Token")
        if m.group("service") != "bedrock" or "x-amz-date" not in m.group("signed").split(";"):
            raise Rejected("authentication_error", "Credential should be scoped to correct service: 'bedrock'.")
        valid = self.ctx.config.valid_keys
        if valid is not None and m.group("key") not in valid:
            raise Rejected("authentication_error", "The security token included in the request is invalid.")

    def _check_key(self, request: web.Request, style: Style) -> None:
        key = (request.headers.get("x-api-key") or request.headers.get("api-key")  # api-key: Azure
               or request.headers.get("x-goog-api-key"))
        if not key:
            auth = request.headers.get("authorization", "")
            scheme, _, token = auth.partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else ""
        if not key and style is Style.GOOGLE:  # Google answers a missing key 403, a wrong one 400
            raise Rejected("permission_error", "Method doesn't allow unregistered callers (callers without "
                                               "established identity). Please use API Key or other form of API "
                                               "consumer identity to call this API.")
        if not key:
            raise Rejected("authentication_error", "x-api-key header or Authorization: Bearer is required")
        valid = self.ctx.config.valid_keys
        if valid is not None and key not in valid:
            raise Rejected("authentication_error", "API key not valid. Please pass a valid API key."
                           if style is Style.GOOGLE else "invalid x-api-key")

    async def _fault(self, request: web.Request, style: Style, kind: str) -> web.StreamResponse:
        self._count("faults", kind)
        if kind == "dropped":
            await request.read()
            drop(request)
            return web.Response()
        return error_response(style, faults.fault_error(kind, style, self.ctx.config.retry_after_s))

    def _check_call(self, request: web.Request, style: Style) -> None:
        """Key, version and billing, in the order the real API answers them."""
        if style is Style.BEDROCK:
            self._check_sigv4(request)
        elif not (style is Style.GOOGLE and request.query.get("upload_id")):  # the session id is the credential
            self._check_key(request, style)
        config = self.ctx.config
        if style is Style.ANTHROPIC:
            problem = version_problem(request.headers.get("anthropic-version"), config.require_version)
            if problem:
                raise Rejected("invalid_request_error", problem)
        if config.billing_error:
            self.ctx.stats["billing_errors"] += 1
            raise faults.billing_error()

    def route(self, name: str, style: Style, handler: Handler, *, create: bool = False) -> Handler:
        async def gate(request: web.Request) -> web.StreamResponse:
            self._count("calls", name)
            answer_style = Style.INLINE if request.match_info.get("id", "").startswith("ibatch_") else style
            try:
                self._check_call(request, style)
                ctx = self.ctx
                fault = faults.draw_kind(ctx.rng, ctx.config)
                if fault is not None:
                    return await self._fault(request, answer_style, fault)
                lose = create and ctx.config.lost_create_rate and ctx.rng.random() < ctx.config.lost_create_rate
                creates = ctx.stats["creates"]
                resp = await handler(request)
                if lose and ctx.stats["creates"] > creates:
                    ctx.stats["lost_creates"] += 1
                    drop(request)
                return resp
            except Rejected as exc:
                return error_response(answer_style, exc)
        return gate

    # -- the app ------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 40)
        # Gemini first: its /v1 batch and file routes take only its own ids, before OpenAI's take any
        for api, style in ((self.gemini, Style.GOOGLE), (self.anthropic, Style.ANTHROPIC),
                           (self.openai, Style.OPENAI), (self.inline, Style.INLINE),
                           (self.bedrock, Style.BEDROCK), (self.azure, Style.OPENAI), (self.groq, Style.OPENAI),
                           (self.mistral, Style.OPENAI), (self.xai, Style.OPENAI)):
            for method, path, name, handler, create in api.routes():
                if (method, path) in (("GET", "/v1/batches"), ("POST", "/v1/batches/{id}/cancel")):
                    continue  # shared with Gemini and Together: _list_batches, _cancel_batch
                app.router.add_route(method, path, self.route(name, style, handler, create=create))
        app.router.add_get("/v1/batches", self._list_batches())
        for method, path, name, handler, create in self.realtime.routes():
            style = Style.ANTHROPIC if path == MESSAGES_PATH else Style.OPENAI
            app.router.add_route(method, path, self.route(name, style, handler, create=create))
        app.router.add_post("/v1/batches", self.route("batches.create", Style.OPENAI, self._create_batch,
                                                      create=True))
        app.router.add_get("/v1/batches/{id}", self.route("batches.retrieve", Style.OPENAI, self._retrieve_batch))
        app.router.add_post("/v1/batches/{id}/cancel", self.route("batches.cancel", Style.OPENAI, self._cancel_batch))
        google = GoogleGate(self.ctx, self.google)
        for method, path, name, handler, create in (*self.gcs.routes(), *self.vertex.routes()):
            app.router.add_route(method, path, google.route(name, handler, create=create))
        app.router.add_post(TOKEN_PATH, self.google.token)
        app.router.add_get("/_sim/stats", self._stats)
        app.router.add_post("/_sim/config", self._set_config)
        app.router.add_get("/_sim/config", self._get_config)
        return app

    def _list_batches(self) -> Handler:
        """`GET /v1/batches` is OpenAI's list, Gemini's (google-genai 3.x calls /v1) and Together's: Google's key
        header, or its paging parameters, say Gemini; the batches held say Together (together.py)."""
        openai_list = self.route("batches.list", Style.OPENAI, self.openai.list)
        gemini_list = self.route("gemini.batches.list", Style.GOOGLE, self.gemini.list)
        together_list = self.route("together.batches.list", Style.OPENAI, self.together.list)

        async def dispatch(request: web.Request) -> web.StreamResponse:
            google = "x-goog-api-key" in request.headers or "pageSize" in request.query or "pageToken" in request.query
            if google:
                return await gemini_list(request)
            return await (together_list if self.together.lists() else openai_list)(request)
        return dispatch

    async def _create_batch(self, request: web.Request) -> web.Response:
        """`POST /v1/batches` is the inline proxy's create (`requests`), Together's (on a `batch-api` file) and
        OpenAI's (`input_file_id`)."""
        body = await read_body(request, self.ctx.config.max_body_bytes)
        with no_gc():  # the parsed body is freed before the GC runs again
            doc = parse_json(body)
            if not (isinstance(doc, dict) and "requests" in doc):
                return (self.together if self.together.owns_create(doc) else self.openai).create(doc)
            try:
                return self.inline.create(requests_of(doc))
            except Rejected as exc:
                return error_response(Style.INLINE, exc)
            finally:
                del doc

    async def _retrieve_batch(self, request: web.Request) -> web.Response:
        """`GET /v1/batches/{id}` is the inline proxy's retrieve (`ibatch_` ids), Together's and OpenAI's."""
        if request.match_info["id"].startswith("ibatch_"):
            return await self.inline.retrieve(request)
        return await (self.together if self.together.owns(request.match_info["id"]) else self.openai).retrieve(request)

    async def _cancel_batch(self, request: web.Request) -> web.Response:
        """`POST /v1/batches/{id}/cancel`: Together's or OpenAI's."""
        return await (self.together if self.together.owns(request.match_info["id"]) else self.openai).cancel(request)

    async def _stats(self, request: web.Request) -> web.Response:
        return json_response(self.ctx.stats)

    async def _get_config(self, request: web.Request) -> web.Response:
        return json_response(self.ctx.config.to_json())

    async def _set_config(self, request: web.Request) -> web.Response:
        try:
            fields = orjson.loads(await request.read())
            if not isinstance(fields, dict):
                raise ValueError("expected a JSON object")
            self.ctx.config.update(fields)
        except (ValueError, TypeError) as exc:
            return json_response({"error": str(exc)}, status=400)
        if "seed" in fields:
            self.ctx.reseed(self.ctx.config.seed)
        return json_response(self.ctx.config.to_json())

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        addresses = self._runner.addresses
        bound = addresses[0][1] if addresses else port
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
