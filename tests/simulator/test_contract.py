"""The official SDKs cannot tell the simulator from the real APIs.

Each test drives the in-process simulator through `anthropic` / `openai` (the dev extra installs the
newest) with retries off, and every answer the SDK receives is recorded on the way in and validated
strictly against the SDK type of its route (strict.py: no unknown field, no missing one, top-level
objects complete). When an SDK changes, these tests say where the simulator drifted.

Beyond the SDK models, one key is allowed: Anthropic's `error.details` (the SDK reads it into
`APIStatusError.details` / `error_code`, but its ErrorObject models do not declare it), validated
against the SDK's ErrorDetails union.
"""

from __future__ import annotations

import re
from typing import Any

import anthropic
import openai
import orjson
import pydantic
import pytest
from anthropic.types import MessageTokensCount
from anthropic.types.messages import DeletedMessageBatch, MessageBatch, MessageBatchIndividualResponse
from anthropic.types.shared import ErrorResponse as AnthropicErrorResponse
from anthropic.types.shared.error_details import ErrorDetails
from openai.types import (
    Batch,
    BatchError,
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

from batch_scheduler.simulator import SimConfig, Simulator

from .helpers import FakeClock
from .strict import problems

KEY = "sk-contract"
MODEL = "claude-sonnet-4-5"


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


class Recorder:
    """Every answer an SDK client received: (method, path, status, body)."""

    def __init__(self) -> None:
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
        for method, path, status, body in self.seen:
            where = f"{method} {path} {status}"
            if status >= 400:
                found += error_problems(path, body, where)
                continue
            kind, complete = next(((t, c) for m, p, t, c in ROUTES if m == method and re.fullmatch(p, path)),
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


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sim(clock):
    async with Simulator(SimConfig(seed=3, processing_s=10), clock=clock) as s:
        yield s


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def claude(sim, recorder):
    async with anthropic.AsyncAnthropic(api_key=KEY, base_url=sim.url, max_retries=0,
                                        http_client=recorder.client(anthropic)) as client:
        yield client
    recorder.assert_exact()


@pytest.fixture
async def oai(sim, recorder):
    async with openai.AsyncOpenAI(api_key=KEY, base_url=sim.url + "/v1", max_retries=0,
                                  http_client=recorder.client(openai)) as client:
        yield client
    recorder.assert_exact()


def message_request(cid: str, **extra: Any) -> dict:
    return {"custom_id": cid, "params": {"model": MODEL, "max_tokens": 300,
                                         "messages": [{"role": "user", "content": f"question {cid}"}], **extra}}


# -- Anthropic -----------------------------------------------------------------------------------------


async def test_anthropic_batch_lifecycle_through_the_sdk(sim, claude, clock):
    created = [await claude.messages.batches.create(requests=[message_request(f"b{b}r{i}") for i in range(3)])
               for b in range(5)]
    assert all(b.processing_status == "in_progress" and b.request_counts.processing == 3 for b in created)
    ids = [b.id for b in created]
    forward = [b.id async for b in claude.messages.batches.list(limit=2)]
    assert forward == ids[::-1]
    first_page = await claude.messages.batches.list(limit=2, before_id=ids[1])
    assert [b.id for b in first_page.data] == [ids[3], ids[2]] and first_page.has_more
    backward = [b.id async for b in claude.messages.batches.list(limit=1, before_id=ids[2])]
    assert backward == [ids[3], ids[4]]
    clock.advance(4)
    canceling = await claude.messages.batches.cancel(ids[0])
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    clock.advance(6)
    ended = await claude.messages.batches.retrieve(ids[1])
    assert ended.processing_status == "ended" and ended.results_url and ended.ended_at
    results = {r.custom_id: r.result async for r in await claude.messages.batches.results(ids[1])}
    assert set(results) == {"b1r0", "b1r1", "b1r2"}
    assert all(r.type == "succeeded" and r.message.usage.service_tier == "batch" for r in results.values())
    canceled = sorted([r.result.type async for r in await claude.messages.batches.results(ids[0])])
    assert canceled == ["canceled", "canceled", "succeeded"]  # 1 of 3 processed when cancel came
    deleted = await claude.messages.batches.delete(ids[1])
    assert deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        await claude.messages.batches.retrieve(ids[1])


async def test_anthropic_sdk_default_version_refuses_temperature_as_an_errored_result(sim, claude, recorder):
    batch = await claude.messages.batches.create(requests=[message_request("hot", temperature=0.5),
                                                           message_request("cool")])
    legacy = await claude.messages.batches.create(requests=[message_request("hot", temperature=0.5)],
                                                  extra_headers={"anthropic-version": "2023-06-01"})
    sim.clock.advance(10)
    got = {r.custom_id: r.result async for r in await claude.messages.batches.results(batch.id)}
    assert got["hot"].type == "errored" and got["hot"].error.error.type == "invalid_request_error"
    assert got["hot"].error.error.message == "temperature: Extra inputs are not permitted"
    assert got["cool"].type == "succeeded"
    assert [r.result.type async for r in await claude.messages.batches.results(legacy.id)] == ["succeeded"]
    sent = [m for m, p, *_ in recorder.seen if p == "/v1/messages/batches"]
    assert sent == ["POST", "POST"]


async def test_anthropic_count_tokens_matches_what_usage_bills_cache_included(sim, claude):
    system = [{"type": "text", "text": "你好，世界。" * 50 + "Be brief. " * 40,
               "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    params = {"model": MODEL, "max_tokens": 50, "system": system,
              "messages": [{"role": "user", "content": [{"type": "text", "text": "first question",
                                                         "cache_control": {"type": "ephemeral"}}]}]}
    counted = await claude.messages.count_tokens(model=MODEL, system=system, messages=params["messages"])
    batch = await claude.messages.batches.create(requests=[{"custom_id": "w", "params": params},
                                                           {"custom_id": "r", "params": params}])
    sim.clock.advance(10)
    usage = {x.custom_id: x.result.message.usage async for x in await claude.messages.batches.results(batch.id)}
    write, read = usage["w"], usage["r"]
    assert write.cache_creation.ephemeral_1h_input_tokens > 0 and write.cache_creation.ephemeral_5m_input_tokens > 0
    assert write.cache_creation_input_tokens == (write.cache_creation.ephemeral_1h_input_tokens
                                                 + write.cache_creation.ephemeral_5m_input_tokens)
    assert read.cache_read_input_tokens == write.cache_creation_input_tokens and read.cache_creation_input_tokens == 0
    for u in (write, read):
        assert u.input_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens == counted.input_tokens


def _fail(kind: str):
    return lambda sim: setattr(sim.config, "fail_rate", 1.0) or setattr(sim.config, "fail_kinds", [kind])


ANTHROPIC_ERRORS = [
    ("400 empty requests", None, anthropic.BadRequestError, None),
    ("400 unknown version", None, anthropic.BadRequestError, "1999-01-01"),
    ("401", lambda sim: setattr(sim.config, "valid_keys", {"other"}), anthropic.AuthenticationError, None),
    ("402", lambda sim: setattr(sim.config, "billing_error", True), anthropic.PaymentRequiredError, None),
    ("409", _fail("conflict_error"), anthropic.ConflictError, None),
    ("413", lambda sim: setattr(sim.config, "max_body_bytes", 100), anthropic.ContentTooLargeError, None),
    ("429", _fail("rate_limit_error"), anthropic.RateLimitError, None),
    ("429 spend", lambda sim: setattr(sim.config, "spend_cap", 0), anthropic.EnforcedSpendLimitReachedError, None),
    ("429 queue", lambda sim: setattr(sim.config, "queue_limit", 1), anthropic.RateLimitError, None),
    ("500", _fail("api_error"), anthropic.InternalServerError, None),
    ("504", _fail("timeout_error"), anthropic.GatewayTimeoutError, None),
    ("529", _fail("overloaded_error"), anthropic.OverloadedError, None),
    ("dropped", _fail("dropped"), anthropic.APIConnectionError, None),
]


@pytest.mark.parametrize(("case", "setup", "exc_class", "version"), ANTHROPIC_ERRORS, ids=[c[0] for c in ANTHROPIC_ERRORS])
async def test_anthropic_error_statuses_raise_the_sdk_exception_class(sim, claude, case, setup, exc_class, version):
    if setup is not None:
        setup(sim)
    requests = [] if case.startswith("400 empty") else [message_request("a"), message_request("b")]
    headers = {"anthropic-version": version} if version else None
    with pytest.raises(exc_class) as caught:
        await claude.messages.batches.create(requests=requests, extra_headers=headers)
    err = caught.value
    assert type(err) is exc_class
    if case == "429 spend":
        assert err.error_code == "enforced_spend_limit_reached" and "retry-after" not in err.response.headers
        assert err.api_message.startswith("You have reached your specified API usage limits. You will regain access on ")
    if case in ("429", "429 queue"):
        assert err.response.headers["retry-after"] == "1" and err.error_code is None
        assert ("processing queue" in err.api_message) is (case == "429 queue")
    if case == "400 unknown version":
        assert err.api_message == 'anthropic-version: "1999-01-01" is not a valid version'
    assert sim.stats["creates"] == 0


# -- OpenAI --------------------------------------------------------------------------------------------

OPENAI_BODIES = {
    "/v1/chat/completions": {"model": "gpt-4o-mini", "max_tokens": 50,
                             "messages": [{"role": "user", "content": "question"}]},
    "/v1/responses": {"model": "gpt-4.1-mini", "input": "question", "max_output_tokens": 50},
    "/v1/embeddings": {"model": "text-embedding-3-small", "input": "question"},
    "/v1/completions": {"model": "gpt-3.5-turbo-instruct", "prompt": "question", "max_tokens": 20},
    "/v1/moderations": {"model": "omni-moderation-latest", "input": "question"},
    "/v1/images/generations": {"model": "gpt-image-1", "prompt": "a lighthouse", "size": "1024x1024"},
    "/v1/images/edits": {"model": "gpt-image-1", "prompt": "add a hat",
                         "images": [{"image_url": "https://images.invalid/cat.png"}]},
    "/v1/videos": {"model": "sora-2", "prompt": "waves at dusk", "seconds": "4", "size": "720x1280"},
}


def jsonl(lines: list[dict]) -> bytes:
    return b"".join(orjson.dumps(x) + b"\n" for x in lines)


async def upload(oai, endpoint: str, n: int, *, bad: bool = False) -> FileObject:
    lines = [{"custom_id": f"c{i}", "method": "POST", "url": endpoint, "body": OPENAI_BODIES[endpoint]}
             for i in range(n)]
    if bad:  # its input field missing: a 400 line in the error file
        field = {"/v1/chat/completions": "messages", "/v1/completions": "prompt"}.get(endpoint, "input")
        field = "prompt" if "images" in endpoint or "videos" in endpoint else field
        body = {k: v for k, v in OPENAI_BODIES[endpoint].items() if k != field}
        lines.append({"custom_id": "bad", "method": "POST", "url": endpoint, "body": body})
    return await oai.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")


@pytest.mark.parametrize("endpoint", list(OPENAI_BODIES))
async def test_openai_batch_of_each_endpoint_through_the_sdk(sim, oai, recorder, clock, endpoint):
    uploaded = await upload(oai, endpoint, 3, bad=True)
    assert uploaded.expires_at == uploaded.created_at + 30 * 24 * 3600
    assert (await oai.files.content(uploaded.id)).content.count(b"\n") == 4
    batch = await oai.batches.create(input_file_id=uploaded.id, endpoint=endpoint, completion_window="24h",
                                     metadata={"job": "contract"})
    assert batch.status == "validating" and batch.request_counts.total == 0
    seen = []
    for _ in range(4):
        polled = await oai.batches.retrieve(batch.id)
        seen.append(polled.status)
        clock.advance(3)
    assert seen == ["validating", "in_progress", "in_progress", "finalizing"]
    done = await oai.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts.model_dump() == {"total": 4, "completed": 3, "failed": 1}
    assert done.usage is not None and done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens
    recorder.endpoints.update({done.output_file_id: endpoint, done.error_file_id: endpoint})
    output = (await oai.files.content(done.output_file_id)).content.splitlines()
    errors = [orjson.loads(x) for x in (await oai.files.content(done.error_file_id)).content.splitlines()]
    assert len(output) == 3 and [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("bad", 400)]
    described = await oai.files.retrieve(done.output_file_id)
    assert described.purpose == "batch_output" and described.bytes == sum(len(x) + 1 for x in output)
    assert (await oai.files.delete(uploaded.id)).deleted


async def test_openai_list_pages_forward_and_cancel_through_the_sdk(sim, oai, clock):
    file = await upload(oai, "/v1/chat/completions", 4)
    ids = [(await oai.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                     completion_window="24h")).id for _ in range(5)]
    assert [b.id async for b in oai.batches.list(limit=2)] == ids[::-1]
    clock.advance(5)  # half processed
    cancelling = await oai.batches.cancel(ids[0])
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    cancelled = await oai.batches.retrieve(ids[0])
    assert cancelled.status == "cancelled" and cancelled.request_counts.total == 4


async def test_openai_token_limit_accepts_the_batch_and_fails_it_while_validating(sim, oai, clock):
    sim.config.enqueued_token_limit = 30
    file = await upload(oai, "/v1/chat/completions", 3)
    first = await oai.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    second = await oai.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert second.status == "validating"  # accepted: no 429
    clock.advance(1)
    failed = await oai.batches.retrieve(second.id)
    assert failed.status == "failed" and failed.failed_at and failed.request_counts.total == 0
    assert failed.errors.data == [BatchError(
        code="token_limit_exceeded", line=None, param=None,
        message=f"Enqueued token limit reached for gpt-4o-mini in organization {sim.config.organization}. "
                "Limit: 30 enqueued tokens. Please try again once some in_progress batches have been completed.")]
    assert (await oai.batches.retrieve(first.id)).status == "in_progress"
    assert sim.stats["token_limit_failures"] == 1 and sim.stats["peak_enqueued_tokens"] == 30


OPENAI_ERRORS = [
    ("400", None, openai.BadRequestError, None),
    ("401", lambda sim: setattr(sim.config, "valid_keys", {"other"}), openai.AuthenticationError, "invalid_api_key"),
    ("404", None, openai.NotFoundError, None),
    ("409", _fail("conflict_error"), openai.ConflictError, "conflict"),
    ("429", _fail("rate_limit_error"), openai.RateLimitError, "rate_limit_exceeded"),
    ("429 quota", lambda sim: setattr(sim.config, "spend_cap", 0), openai.RateLimitError, "insufficient_quota"),
    ("500", _fail("api_error"), openai.InternalServerError, None),
    ("503", _fail("overloaded_error"), openai.InternalServerError, "server_overloaded"),
    ("504", _fail("timeout_error"), openai.InternalServerError, "timeout"),
    ("dropped", _fail("dropped"), openai.APIConnectionError, None),
]


@pytest.mark.parametrize(("case", "setup", "exc_class", "code"), OPENAI_ERRORS, ids=[c[0] for c in OPENAI_ERRORS])
async def test_openai_error_statuses_raise_the_sdk_exception_class(sim, oai, case, setup, exc_class, code):
    file = await upload(oai, "/v1/chat/completions", 2)
    if setup is not None:
        setup(sim)
    with pytest.raises(exc_class) as caught:
        await oai.batches.create(input_file_id="file-nope" if case == "404" else file.id,
                                 endpoint="/v1/nope" if case == "400" else "/v1/chat/completions",
                                 completion_window="24h")
    err = caught.value
    assert type(err) is exc_class
    if isinstance(err, openai.APIStatusError):
        assert err.status_code == int(case[:3]) and err.code == code
    assert sim.stats["creates"] == 0
