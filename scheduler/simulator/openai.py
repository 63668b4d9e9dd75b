"""OpenAI Batch (API-NOTES §2): files and batches."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from .responses import Rejected

if TYPE_CHECKING:
    from .server import Simulator


class OpenAIApi:
    def __init__(self, sim: Simulator):
        self.sim = sim

    def routes(self) -> list[tuple[str, str, str, Any, bool]]:
        return [("GET", "/v1/batches/{id}", "batches.retrieve", self.retrieve, False)]

    async def retrieve(self, request: web.Request) -> web.Response:
        if request.match_info["id"].startswith("ibatch_"):
            return await self.sim.inline.retrieve(request)
        raise Rejected("not_found_error", "no such batch")

    async def create(self, request: web.Request, doc: Any) -> web.Response:
        raise Rejected("invalid_request_error", "not yet")
