"""The OpenAI SDK drives the simulator: a batch of each endpoint, lists, the token limit, each error status."""

from __future__ import annotations

import openai
import orjson
import pytest
from openai.types import BatchError, FileObject

from .recorder import fail

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
    ("409", fail("conflict_error"), openai.ConflictError, "conflict"),
    ("429", fail("rate_limit_error"), openai.RateLimitError, "rate_limit_exceeded"),
    ("429 quota", lambda sim: setattr(sim.config, "spend_cap", 0), openai.RateLimitError, "insufficient_quota"),
    ("500", fail("api_error"), openai.InternalServerError, None),
    ("503", fail("overloaded_error"), openai.InternalServerError, "server_overloaded"),
    ("504", fail("timeout_error"), openai.InternalServerError, "timeout"),
    ("dropped", fail("dropped"), openai.APIConnectionError, None),
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
