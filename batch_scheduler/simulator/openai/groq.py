"""Groq batch (PROVIDERS.md §6): OpenAI's files + batches under `/openai/v1`, Bearer key.

Azure OpenAI's v1 surface holds the same paths on this port (azure.py), and nothing in a request
tells the two apart (both take a Bearer key and purpose `batch`): Groq's host is stood for by the
prefix `/groq`, so `{simulator}/groq` is where `https://api.groq.com` would be (GROQ_BASE_URL, or
the groq SDK's `base_url`), and every path under it is Groq's own.

What differs from OpenAI (simulator/openai/api.py, which this reuses): the paths' root; the list pages
by `?cursor=` and answers `paging.next_cursor` (no `has_more`, `first_id`, `last_id`); a
`completion_window` from `24h` to `7d`; the batch object has no `model` and no `usage`, the file
object only `id, object, bytes, created_at, filename, purpose` (the groq SDK's types); at most
50,000 requests a file (`groq_max_requests`); enqueued tokens counted per model as OpenAI's.

By default `errors` is an object (`{"object": "list", "data": [...]}`, what the SDK types);
`groq_variants` (a fault option, on in `SimConfig.real_faults`) sends it as the bare array Groq's
guide shows, which a client must survive.
"""

from __future__ import annotations

import re
from typing import Any

from batch_scheduler.simulator.context import SimContext
from batch_scheduler.simulator.openai.api import OpenAIApi
from batch_scheduler.simulator.openai.files import FileRecord, OpenAIFiles
from batch_scheduler.simulator.store import Batch

HOST = "/groq"  # stands for api.groq.com
ROOT = f"{HOST}/openai/v1"
_WINDOW = re.compile(r"(\d+)([hd])")
_NOT_GROQ = ("model", "usage")  # OpenAI batch fields the groq SDK does not declare


def groq_file(record: FileRecord) -> dict[str, Any]:
    return {"id": record.id, "object": "file", "bytes": record.size, "created_at": record.created_at,
            "filename": record.filename, "purpose": record.purpose}


class GroqApi(OpenAIApi):
    kind = "groq"
    max_requests_field = "groq_max_requests"
    windows = "between '24h' and '7d'"
    cursor_param = "cursor"

    def __init__(self, ctx: SimContext):
        super().__init__(ctx, OpenAIFiles(ctx, root=ROOT, shapes={"batch": groq_file, "batch_output": groq_file}))

    def routes(self) -> list[tuple[str, str, str, Any, bool]]:
        return [
            *self.files.routes(),
            ("POST", f"{ROOT}/batches", "groq.batches.create", self.create_route, True),
            ("GET", f"{ROOT}/batches", "groq.batches.list", self.list, False),
            ("GET", f"{ROOT}/batches/{{id}}", "groq.batches.retrieve", self.retrieve, False),
            ("POST", f"{ROOT}/batches/{{id}}/cancel", "groq.batches.cancel", self.cancel, False),
        ]

    @staticmethod
    def takes_window(window: Any) -> bool:
        m = _WINDOW.fullmatch(window) if isinstance(window, str) else None
        hours = int(m.group(1)) * (24 if m.group(2) == "d" else 1) if m else 0
        return 24 <= hours <= 7 * 24

    def page_doc(self, data: list[dict[str, Any]], more: bool) -> Any:
        return {"object": "list", "data": data, "paging": {"next_cursor": data[-1]["id"] if more and data else None}}

    def doc(self, batch: Batch, *, fresh: bool = False, cancelling: bool = False) -> dict[str, Any]:
        doc = super().doc(batch, fresh=fresh, cancelling=cancelling)
        doc["completion_window"] = batch.extra.get("window", "24h")
        for name in _NOT_GROQ:
            del doc[name]
        if self.ctx.config.groq_variants and isinstance(doc["errors"], dict):
            doc["errors"] = doc["errors"]["data"]
        return doc

    def make(self, doc: Any) -> Batch:
        batch = super().make(doc)
        batch.extra["window"] = doc["completion_window"]
        return batch
