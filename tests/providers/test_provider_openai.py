"""OpenAI Batch provider: the upload + create calls, input lines, result lines and batch states."""

from __future__ import annotations

import aiohttp
import orjson
import pytest
from aioresponses import aioresponses
from yarl import URL

from batch_scheduler.core import errors
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import RetryPolicy, Settings
from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.job.view.status import job_status
from batch_scheduler.providers.base import BatchState, Outcome, Usage
from batch_scheduler.providers.openai.provider import OpenAIProvider
from batch_scheduler.simulator import SimConfig

from ..conftest import KEY, fast_settings
from ..helpers import ids_of, read_results, write_requests

BASE = "http://api.test"
FAST = RetryPolicy(attempts=3, initial_wait_s=0.001, max_wait_s=0.002)


def settings(**changes) -> Settings:
    return Settings(**{"provider": "openai", "api_key": KEY, "base_url": BASE, "auth": "bearer",
                       "retry": FAST, **changes})


@pytest.fixture
async def provider():
    s = settings()
    async with HttpClient(OpenAIProvider.headers(s), s.retry, secret=KEY) as http:
        yield OpenAIProvider(s, http)


def chat_line(cid: str, url: str = "/v1/chat/completions", **body) -> bytes:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **body}
    return orjson.dumps({"custom_id": cid, "method": "POST", "url": url, "body": body})


def batch_doc(status: str, **extra) -> dict:
    return {"id": "batch_1", "object": "batch", "status": status, "created_at": 1_700_000_000,
            "request_counts": {"total": 2, "completed": 1, "failed": 1}, "output_file_id": None,
            "error_file_id": None, **extra}


def sent(m: aioresponses, method: str, url: str) -> list:
    return m.requests[(method, URL(url))]


# -- calls ----------------------------------------------------------------------------------------

async def test_create_uploads_the_lines_as_a_batch_file_then_creates_a_24h_batch_on_their_endpoint(provider):
    lines = [chat_line("a"), chat_line("b")]
    with aioresponses() as m:
        m.post(f"{BASE}/v1/files", payload={"id": "file-in", "object": "file"})
        m.post(f"{BASE}/v1/batches", payload=batch_doc("validating", request_counts={"total": 0}))
        info = await provider.create(lines, tag="chunk-7")
        upload = sent(m, "POST", f"{BASE}/v1/files")[0].kwargs
        create = sent(m, "POST", f"{BASE}/v1/batches")[0].kwargs
    assert info.id == "batch_1" and info.state is BatchState.IN_PROGRESS
    assert upload["headers"]["content-type"].startswith("multipart/form-data; boundary=")
    body = upload["data"]
    assert b'name="purpose"\r\n\r\nbatch\r\n' in body
    assert b'name="file"; filename="chunk-7.jsonl"' in body
    assert lines[0] + b"\n" + lines[1] + b"\n" in body
    assert orjson.loads(create["data"]) == {"input_file_id": "file-in", "endpoint": "/v1/chat/completions",
                                            "completion_window": "24h", "metadata": {"batch_scheduler": "chunk-7"}}
    assert create["headers"]["content-type"] == "application/json"
    assert create["headers"]["authorization"] == f"Bearer {KEY}"


async def test_the_upload_is_retried_but_a_create_whose_answer_was_lost_is_not(provider):
    with aioresponses() as m:
        m.post(f"{BASE}/v1/files", status=503, body=b"{}")
        m.post(f"{BASE}/v1/files", payload={"id": "file-in"})
        m.post(f"{BASE}/v1/batches", exception=aiohttp.ServerDisconnectedError())
        m.post(f"{BASE}/v1/batches", payload=batch_doc("validating"))
        with pytest.raises(errors.OutcomeUnknown):
            await provider.create([chat_line("a")], tag="chunk-1")
        assert len(sent(m, "POST", f"{BASE}/v1/files")) == 2
        assert len(sent(m, "POST", f"{BASE}/v1/batches")) == 1


async def test_a_refused_create_deletes_the_file_it_uploaded(provider):
    with aioresponses() as m:
        m.post(f"{BASE}/v1/files", payload={"id": "file-in"})
        m.post(f"{BASE}/v1/batches", status=400, payload={"error": {"message": "bad endpoint", "code": "x"}})
        m.delete(f"{BASE}/v1/files/file-in", payload={"deleted": True})
        with pytest.raises(errors.RequestRejected, match="bad endpoint"):
            await provider.create([chat_line("a")], tag="chunk-1")
        assert len(sent(m, "DELETE", f"{BASE}/v1/files/file-in")) == 1


def test_headers_send_the_key_as_bearer_and_leave_the_content_type_to_each_call():
    headers = OpenAIProvider.headers(settings(headers=(("OpenAI-Organization", "org-1"),)))
    assert headers == {"authorization": f"Bearer {KEY}", "OpenAI-Organization": "org-1"}


async def test_a_completed_batch_without_output_file_streams_only_the_error_file(provider):
    error_line = {"id": "r1", "custom_id": "a", "response": {"status_code": 400, "body": {}}, "error": None}
    with aioresponses() as m:
        m.get(f"{BASE}/v1/batches/batch_1", payload=batch_doc("completed", error_file_id="file-err"))
        m.get(f"{BASE}/v1/files/file-err/content", body=orjson.dumps(error_line) + b"\n")
        info = await provider.get("batch_1")
        lines = [line async for block in provider.result_blocks(info) for line in block]
    assert info.state is BatchState.ENDED and info.results == ["file-err"]
    assert [orjson.loads(line)["custom_id"] for line in lines] == ["a"]
    assert provider.classify(lines[0])[1] is Outcome.ERRORED


async def test_results_stream_the_output_file_then_the_error_file(provider):
    ok = {"custom_id": "a", "response": {"status_code": 200, "body": {"usage": {}}}, "error": None}
    bad = {"custom_id": "b", "response": None, "error": {"code": "batch_expired", "message": "late"}}
    with aioresponses() as m:
        m.get(f"{BASE}/v1/files/file-out/content", body=orjson.dumps(ok) + b"\n")
        m.get(f"{BASE}/v1/files/file-err/content", body=orjson.dumps(bad))
        info = provider._info(batch_doc("expired", output_file_id="file-out", error_file_id="file-err"))
        lines = [line async for block in provider.result_blocks(info) for line in block]
    assert [orjson.loads(line)["custom_id"] for line in lines] == ["a", "b"]


async def test_a_failed_batch_is_failed_with_the_providers_reasons(provider):
    doc = batch_doc("failed", errors={"object": "list", "data": [
        {"code": "mismatched_model", "message": "All requests in a batch must use the same model.", "line": 3},
        {"code": "empty_file", "message": "The batch input file is empty.", "line": None}]})
    with aioresponses() as m:
        m.get(f"{BASE}/v1/batches/batch_1", payload=doc)
        info = await provider.get("batch_1")
    assert info.state is BatchState.FAILED
    assert info.error == "line 3: All requests in a batch must use the same model.; The batch input file is empty."


@pytest.mark.parametrize("status, state", [
    ("validating", BatchState.IN_PROGRESS), ("in_progress", BatchState.IN_PROGRESS),
    ("finalizing", BatchState.IN_PROGRESS), ("cancelling", BatchState.IN_PROGRESS),
    ("completed", BatchState.ENDED), ("expired", BatchState.ENDED), ("cancelled", BatchState.ENDED),
    ("failed", BatchState.FAILED)])
def test_batch_statuses_map_to_states(provider, status, state):
    info = provider._info(batch_doc(status, completed_at=1_700_000_100))
    assert info.state is state
    assert (info.created_at, info.total) == (1_700_000_000.0, 2)


async def test_recent_pages_with_after_and_stops_at_batches_older_than_since(provider):
    page1 = {"data": [batch_doc("in_progress", id="b3", created_at=300), batch_doc("completed", id="b2",
                                                                                  created_at=200)],
             "has_more": True, "last_id": "b2"}
    page2 = {"data": [batch_doc("completed", id="b1", created_at=100)], "has_more": True, "last_id": "b1"}
    with aioresponses() as m:
        m.get(f"{BASE}/v1/batches?limit=100", payload=page1)
        m.get(f"{BASE}/v1/batches?limit=100&after=b2", payload=page2)
        got = [info.id async for info in provider.recent(150)]
    assert got == ["b3", "b2"]


async def test_cancel_posts_to_the_batch(provider):
    with aioresponses() as m:
        m.post(f"{BASE}/v1/batches/batch_1/cancel", payload=batch_doc("cancelling"))
        info = await provider.cancel("batch_1")
    assert info.raw["status"] == "cancelling"


# -- result lines ---------------------------------------------------------------------------------

def result(status: int | None = None, error: dict | None = None, body: dict | None = None) -> bytes:
    response = None if status is None else {"status_code": status, "request_id": "req", "body": body or {}}
    return orjson.dumps({"id": "r", "custom_id": "c1", "response": response, "error": error})


@pytest.mark.parametrize("line, outcome", [
    (result(500), Outcome.ERRORED_TRANSIENT), (result(503), Outcome.ERRORED_TRANSIENT),
    (result(429), Outcome.ERRORED_TRANSIENT), (result(400), Outcome.ERRORED), (result(404), Outcome.ERRORED),
    (result(error={"code": "batch_expired", "message": "x"}), Outcome.EXPIRED),
    (result(error={"code": "batch_cancelled", "message": "x"}), Outcome.CANCELED),
    (result(error={"code": "server_error", "message": "x"}), Outcome.ERRORED_TRANSIENT),
    (result(error={"code": "invalid_request", "message": "x"}), Outcome.ERRORED),
    (result(error={"code": "request_timeout", "message": "The underlying call to the model timed out."}),
     Outcome.ERRORED_TRANSIENT),
], ids=["500", "503", "429", "400", "404", "expired", "cancelled", "error-server", "error-invalid", "request-timeout"])
def test_classify_maps_each_kind_of_result(line, outcome):
    cid, got, usage, model = OpenAIProvider.classify(line)
    assert (cid, got, usage, model) == ("c1", outcome, None, None)


def test_a_transient_answer_that_reports_usage_was_billed_and_says_so():
    line = result(500, body={"error": {"message": "boom"}, "usage": {"prompt_tokens": 12, "completion_tokens": 3}})
    assert OpenAIProvider.classify(line) == ("c1", Outcome.ERRORED_TRANSIENT, Usage(12, 3, 0, 0), None)


def test_a_success_counts_usage_with_cached_prompt_tokens_apart():
    usage = {"prompt_tokens": 100, "completion_tokens": 20, "prompt_tokens_details": {"cached_tokens": 30}}
    line = result(200, body={"model": "gpt-4o-mini-2024-07-18", "usage": usage})
    assert OpenAIProvider.classify(line) == ("c1", Outcome.SUCCEEDED, Usage(70, 20, 0, 30), "gpt-4o-mini-2024-07-18")


def test_a_responses_endpoint_success_counts_input_and_output_tokens():
    line = result(200, body={"model": "gpt-4.1", "usage": {"input_tokens": 9, "output_tokens": 4}})
    assert OpenAIProvider.classify(line)[2] == Usage(9, 4, 0, 0)


# -- input lines ----------------------------------------------------------------------------------

def check(provider: OpenAIProvider, obj: dict) -> tuple[str | None, dict | None]:
    raw = orjson.dumps(obj)
    problem, out = provider.check_request(obj, raw)
    return problem, (orjson.loads(out) if out is not None else None)


def test_a_complete_line_is_sent_as_it_is(provider):
    raw = chat_line("a")
    assert provider.check_request(orjson.loads(raw), raw) == (None, raw)


def test_a_missing_model_is_filled_from_settings():
    p = OpenAIProvider(settings(model="gpt-4o-mini"), None)
    problem, out = check(p, {"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}})
    assert problem is None and out["body"] == {"model": "gpt-4o-mini", "input": "x"}


def test_a_message_batches_line_becomes_a_chat_completions_line_with_the_system_first():
    p = OpenAIProvider(settings(model="gpt-4o-mini"), None)
    params = {"max_tokens": 50, "system": [{"type": "text", "text": "Be brief."}], "temperature": 0.2,
              "messages": [{"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text",
                                                                                          "text": "two"}]},
                           {"role": "assistant", "content": "ok"}]}
    problem, out = check(p, {"custom_id": "a", "params": params})
    assert problem is None
    assert out == {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": "gpt-4o-mini", "max_tokens": 50, "temperature": 0.2, "messages": [
                       {"role": "system", "content": "Be brief."}, {"role": "user", "content": "one\n\ntwo"},
                       {"role": "assistant", "content": "ok"}]}}


@pytest.mark.parametrize("obj, message", [
    ({"custom_id": "a", "method": "GET", "url": "/v1/chat/completions", "body": {}}, "method must be POST"),
    ({"custom_id": "a", "method": "POST", "url": "/v1/images", "body": {}}, "url '/v1/images' is not a batch"),
    ({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}, "body missing or not an object"),
    ({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}},
     "body.model missing (give --model or OPENAI_MODEL to fill it)"),
    ({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}},
     "body.messages missing"),
    ({"custom_id": "a", "params": {"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "image", "source": {}}]}]}},
     "params.messages[0].content[0] is a 'image' block: only text converts"),
    ({"custom_id": "a", "params": {"model": "m", "max_tokens": 5, "tools": [], "messages": []}},
     "params.tools has no OpenAI equivalent"),
    ({"custom_id": "a", "params": {"model": "m", "messages": []}}, "params.max_tokens missing"),
])
def test_a_bad_line_is_refused_naming_the_field(provider, obj, message):
    problem, out = check(provider, obj)
    assert out is None and problem.startswith(message), problem


def test_lines_for_other_endpoints_and_models_are_accepted_each_in_its_own_lane(provider):
    lines = [orjson.loads(chat_line("a")), orjson.loads(chat_line("b", url="/v1/embeddings", input="x")),
             orjson.loads(chat_line("c", model="gpt-4o")), {"custom_id": "d", "params": {
                 "model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}}]
    assert [check(provider, obj)[0] for obj in lines] == [None] * 4
    assert [provider.lane_of(obj) for obj in lines] == [
        "/v1/chat/completions gpt-4o-mini", "/v1/embeddings gpt-4o-mini", "/v1/chat/completions gpt-4o",
        "/v1/chat/completions gpt-4o"]


# -- end to end through the simulator -------------------------------------------------------------

async def test_a_refused_key_names_the_openai_key_variable(sim, tmp_path):
    sim.config.valid_keys = {"sk-right"}
    write_requests(tmp_path / "in.jsonl", 20)
    s = fast_settings(sim.url, provider="openai", auth="bearer")
    result = await Engine(s, str(tmp_path / "out"), [str(tmp_path / "in.jsonl")], quiet=True).run()
    assert result.exit_code == ExitCode.AUTH and result.http_status == 401
    assert result.message == ("the API refused the key (HTTP 401): check OPENAI_API_KEY and run the same command "
                              "again; every batch in flight is kept in the ledger and will be picked up")


async def test_batches_failed_for_the_token_limit_are_sent_again_without_using_an_attempt(sim, tmp_path):
    sim.config = SimConfig(seed=5, batch_fail_rate=0.3)  # enqueued token limit: the batch fails, nothing runs
    ids = write_requests(tmp_path / "in.jsonl", 2_000)
    # 20 batches: with 30% failing, at least one fails whatever order the simulator's draws come in; a
    # token-limit failure uses no attempt, so even 2 attempts answer every request
    s = fast_settings(sim.url, provider="openai", auth="bearer", batch_size=100, max_attempts=2)
    result = await Engine(s, str(tmp_path / "out"), [str(tmp_path / "in.jsonl")], quiet=True).run()
    assert result.exit_code == ExitCode.OK, result.message
    got = ids_of(read_results(str(tmp_path / "out")))
    assert len(got) == len(set(got)) == 2_000 and set(got) == set(ids)
    assert result.summary["queue"]["token_limit_failures"] == sim.stats["token_limit_failures"] >= 3
    assert result.summary["batches"]["failed"] == 0  # none counted as a failed batch: no attempt used
    assert result.summary["attempts"]["after_1_attempts"] == 2_000


async def test_a_request_out_of_attempts_in_failed_batches_ends_the_job_unfinished_and_a_rerun_sends_it(
        sim, tmp_path):
    # A later chunk repeats an id of an earlier one (refused as a duplicate): sending a failed chunk again
    # must send exactly the lines that chunk had, not the repeated one.
    lines = [orjson.dumps(req) for req in (
        [{"custom_id": f"r{i}", "params": {"model": "m", "max_tokens": 8,
                                           "messages": [{"role": "user", "content": f"q{i}"}]}} for i in range(30)])]
    lines.insert(15, lines[2].replace(b'"q2"', b'"a repeated id"'))
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    sim.config = SimConfig(seed=5, enqueued_token_limit=1)  # each request alone is over its model's limit
    out = str(tmp_path / "out")
    s = fast_settings(sim.url, provider="openai", auth="bearer", batch_size=10, max_attempts=2)
    first = await Engine(s, out, [str(tmp_path / "in.jsonl")], quiet=True).run()
    assert first.exit_code == ExitCode.FAILED
    assert first.message.startswith("30 request(s) got no answer in any of their attempts (their batches failed "
                                    "as a whole, or their results left them out;")
    assert first.summary["requests"]["in_failed_batches"] == 30 and first.summary["state"] == "incomplete"
    assert read_results(out) == []
    st = job_status(out)
    assert st["requests"]["in_failed_batches"] == 30
    assert "Enqueued token limit reached" in st["failed_batches"][-1]["reason"]
    sim.config = SimConfig(seed=5)  # the provider's queue drained
    second = await Engine(s, out, [str(tmp_path / "in.jsonl")], quiet=True).run()
    assert second.exit_code == ExitCode.OK, second.message
    results = read_results(out)
    assert sorted(ids_of(results)) == sorted(f"r{i}" for i in range(30))
    assert all("a repeated id" not in orjson.dumps(r).decode() for r in results)
