"""What an SDK client received, checked against the SDK type of its route.

`Recorder` keeps every answer an SDK client got on the way in; `problems` validates each strictly
against the SDK type of its route (strict.py: no unknown field, no missing one, top-level objects
complete). Beyond the SDK models, one key is allowed: Anthropic's `error.details` (the SDK reads it
into `APIStatusError.details` / `error_code`, but its ErrorObject models do not declare it),
validated against the SDK's ErrorDetails union.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import pydantic
from anthropic.types import Message, MessageTokensCount
from anthropic.types.messages import DeletedMessageBatch, MessageBatch, MessageBatchIndividualResponse
from anthropic.types.shared import ErrorResponse as AnthropicErrorResponse
from anthropic.types.shared.error_details import ErrorDetails
from openai.types import (
    Batch,
    Completion,
    CreateEmbeddingResponse,
    FileDeleted,
    FileObject,
    ImagesResponse,
    ModerationCreateResponse,
    Video,
)
from openai.types.chat import ChatCompletion
from openai.types.responses import Response
from openai.types.shared import ErrorObject as OpenAIErrorObject

from ..strict import problems


class AnthropicErrorObject(pydantic.BaseModel):
    """What `error` of an Anthropic error body may hold beyond the SDK's ErrorObject: `details`."""

    details: ErrorDetails | None = None


class Page(pydantic.BaseModel):
    """Anthropic's list envelope (the SDK's SyncPage fields)."""

    data: list[MessageBatch]
    has_more: bool
    first_id: str | None
    last_id: str | None


class OpenAIPage(pydantic.BaseModel):
    """OpenAI's list envelope: the SDK's SyncCursorPage declares data and has_more; the reference adds
    object, first_id and last_id."""

    object: str
    data: list[Batch]
    first_id: str | None
    last_id: str | None
    has_more: bool


class OpenAIError(pydantic.BaseModel):
    error: OpenAIErrorObject


class OutputLineResponse(pydantic.BaseModel):
    status_code: int
    request_id: str
    body: dict[str, Any]


class LineError(pydantic.BaseModel):
    code: str
    message: str


class OutputLine(pydantic.BaseModel):
    """A line of a batch's output or error file (the reference's batch request output object)."""

    id: str
    custom_id: str
    response: OutputLineResponse | None
    error: LineError | None


BODIES = {
    "/v1/chat/completions": ChatCompletion, "/v1/responses": Response, "/v1/embeddings": CreateEmbeddingResponse,
    "/v1/completions": Completion, "/v1/moderations": ModerationCreateResponse,
    "/v1/images/generations": ImagesResponse, "/v1/images/edits": ImagesResponse, "/v1/videos": Video,
}
_ID = "[A-Za-z0-9_-]+"
ROUTES: list[tuple[str, str, Any, bool]] = [  # method, path pattern, type, complete
    ("POST", "/v1/messages/batches", MessageBatch, True),
    ("GET", "/v1/messages/batches", Page, True),
    ("GET", f"/v1/messages/batches/{_ID}", MessageBatch, True),
    ("POST", f"/v1/messages/batches/{_ID}/cancel", MessageBatch, True),
    ("DELETE", f"/v1/messages/batches/{_ID}", DeletedMessageBatch, True),
    ("GET", f"/v1/messages/batches/{_ID}/results", "jsonl:anthropic", False),
    ("POST", "/v1/messages/count_tokens", MessageTokensCount, True),
    ("POST", "/v1/messages", Message, False),  # as in a results line
    ("POST", "/v1/chat/completions", ChatCompletion, False),  # as in an output file (BODIES)
    ("POST", "/v1/files", FileObject, True),
    ("GET", f"/v1/files/{_ID}", FileObject, True),
    ("DELETE", f"/v1/files/{_ID}", FileDeleted, True),
    ("GET", f"/v1/files/{_ID}/content", "jsonl:openai", False),
    ("POST", "/v1/batches", Batch, True),
    ("GET", "/v1/batches", OpenAIPage, True),
    ("GET", f"/v1/batches/{_ID}", Batch, True),
    ("POST", f"/v1/batches/{_ID}/cancel", Batch, True),
]
# Kinds the API documents (its errors page: 409 conflict_error, 413 request_too_large) that the SDK's
# ErrorObject union has no variant for (ErrorType lists conflict_error, not request_too_large).
SDK_GAP_KINDS = ("conflict_error", "request_too_large")


class GapErrorObject(pydantic.BaseModel):
    type: str
    message: str


# Azure OpenAI's v1 and dated surfaces serve OpenAI's types; Groq's (under its host's stand-in) its own,
# on OpenAI's routes
AZURE_SURFACES = ("/groq/openai/v1/", "/openai/v1/", "/openai/")


def openai_path(path: str) -> str:
    """An Azure OpenAI path as the OpenAI route it serves (`/openai/v1/batches` -> `/v1/batches`)."""
    for prefix in AZURE_SURFACES:
        if path.startswith(prefix):
            return "/v1/" + path[len(prefix):]
    return path


class Recorder:
    """Every answer an SDK client received: (method, path, status, body)."""

    def __init__(self, routes: list[tuple[str, str, Any, bool]] | None = None) -> None:
        self.routes = ROUTES if routes is None else routes  # another SDK's types for an OpenAI-like API
        self.seen: list[tuple[str, str, int, bytes]] = []
        self.endpoints: dict[str, str] = {}  # OpenAI output file id -> its batch's endpoint

    async def hook(self, response: Any) -> None:
        await response.aread()
        self.seen.append((response.request.method, response.request.url.path, response.status_code,
                          response.content))

    def client(self, sdk: Any) -> Any:
        return sdk.DefaultAsyncHttpxClient(event_hooks={"response": [self.hook]}, trust_env=False)

    def problems(self) -> list[str]:
        found: list[str] = []
        for method, served, status, body in self.seen:
            path = openai_path(served)
            where = f"{method} {path} {status}"
            if status >= 400:
                found += error_problems(path, body, where)
                continue
            kind, complete = next(((t, c) for m, p, t, c in self.routes if m == method and re.fullmatch(p, path)),
                                  (None, False))
            assert kind is not None, f"no SDK type for {where}"
            if kind == "jsonl:anthropic":
                found += [p for line in body.splitlines()
                          for p in problems(MessageBatchIndividualResponse, orjson.loads(line), path=where)]
            elif kind == "jsonl:openai":
                found += self._file_problems(path, body, where)
            else:
                found += problems(kind, orjson.loads(body), complete=complete, path=where)
        return found

    def _file_problems(self, path: str, body: bytes, where: str) -> list[str]:
        endpoint = self.endpoints.get(path.split("/")[3])
        if endpoint is None:  # an uploaded input file: bytes as sent
            return []
        found = []
        for raw in body.splitlines():
            line = orjson.loads(raw)
            found += problems(OutputLine, line, complete=True, path=where)
            response = line.get("response")
            if response and response["status_code"] == 200:
                found += problems(BODIES[endpoint], response["body"], path=f"{where} body")
            elif response:
                found += problems(OpenAIError, response["body"], complete=True, path=f"{where} body")
        return found

    def assert_exact(self) -> None:
        found = self.problems()
        assert not found, "\n".join(found[:20])


def error_problems(path: str, body: bytes, where: str) -> list[str]:
    doc = orjson.loads(body)
    if path.startswith("/v1/messages"):
        error = dict(doc.get("error") or {})
        details = {"details": error.pop("details")} if "details" in error else {}
        found = problems(AnthropicErrorObject, details, path=f"{where} error")
        if error.get("type") in SDK_GAP_KINDS:
            return found + problems(GapErrorObject, error, complete=True, path=f"{where} error") + [
                f"{where}: unexpected key {k}" for k in doc if k not in ("type", "error", "request_id")]
        return found + problems(AnthropicErrorResponse, {**doc, "error": error}, complete=True, path=where)
    return problems(OpenAIError, doc, complete=True, path=where)


def fail(kind: str):
    """A setup that makes every call fail with `kind`."""
    return lambda sim: setattr(sim.config, "fail_rate", 1.0) or setattr(sim.config, "fail_kinds", [kind])

