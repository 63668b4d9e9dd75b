"""`--provider vertex` piece by piece: input lines checked by field, prediction lines classified, results
matched to their requests by the echoed custom_id whatever their order, job objects read as untrusted."""

from __future__ import annotations

import orjson
import pytest

from batch_scheduler.core import errors
from batch_scheduler.core.http import HttpClient
from batch_scheduler.providers import headers_for, make_provider
from batch_scheduler.providers.answers import ShapeError
from batch_scheduler.providers.base import BatchState, Outcome, Usage
from batch_scheduler.providers.google.vertex_lines import check_line, classify_line, upload_line
from batch_scheduler.simulator import SimConfig

from ..gcp import BUCKET, service_account, vertex_settings

CLAUDE = "claude-sonnet-4-5@20250929"
MESSAGES = [{"role": "user", "content": "hi"}]


def kept(obj: dict, model: str | None = CLAUDE) -> dict:
    line, problem = check_line(obj, model)
    assert problem is None and line is not None, problem
    return orjson.loads(line)


def test_a_message_batches_line_becomes_a_vertex_claude_line_without_its_model():
    line = kept({"custom_id": "a", "params": {"model": CLAUDE, "max_tokens": 5, "messages": MESSAGES}}, None)
    assert line == {"custom_id": "a", "body": {"model": CLAUDE, "max_tokens": 5, "messages": MESSAGES,
                                                "anthropic_version": "vertex-2023-10-16"}}
    model, uploaded = upload_line(orjson.dumps(line))
    assert model == "publishers/anthropic/models/" + CLAUDE
    assert orjson.loads(uploaded) == {"custom_id": "a", "request": {"max_tokens": 5, "messages": MESSAGES,
                                                                    "anthropic_version": "vertex-2023-10-16"}}


def test_a_gemini_line_keeps_its_request_and_takes_the_job_model():
    request = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    line = kept({"custom_id": "g", "request": request}, "gemini-2.5-flash")
    model, uploaded = upload_line(orjson.dumps(line))
    assert model == "publishers/google/models/gemini-2.5-flash"
    assert orjson.loads(uploaded) == {"custom_id": "g", "request": request}


@pytest.mark.parametrize(("obj", "model", "problem"), [
    ({"custom_id": "a", "request": "text"}, CLAUDE, "request missing or not an object (vertex lines are "
                                                    "{custom_id, request})"),
    ({"custom_id": "a", "request": {"messages": MESSAGES}}, CLAUDE, "request.max_tokens missing"),
    ({"custom_id": "a", "request": {"messages": MESSAGES, "max_tokens": 5, "anthropic_version": "2023-06-01"}},
     CLAUDE, "request.anthropic_version is '2023-06-01': Vertex takes 'vertex-2023-10-16'"),
    ({"custom_id": "a", "request": {"contents": []}}, "gemini-2.5-flash",
     "request.contents missing or not a non-empty list (a Gemini GenerateContentRequest)"),
    ({"custom_id": "a", "request": {"contents": ["x"]}}, None,
     "no model: give --model (or VERTEX_MODEL) for {custom_id, request} lines"),
    ({"custom_id": "a", "request": {"contents": ["x"], "model": "gem ini"}}, None,
     "model 'gem ini' is not a model name (e.g. gemini-2.5-flash, claude-sonnet-4-5@20250929)"),
    ({"custom_id": "a", "params": {"max_tokens": 5, "messages": MESSAGES, "stream": True}}, CLAUDE,
     "params.stream is not allowed in a batch"),
])
def test_a_line_in_the_wrong_form_names_its_field(obj, model, problem):
    assert check_line(obj, model) == (None, problem)


def claude_line(cid: str, **extra) -> bytes:
    return orjson.dumps({"custom_id": cid, "request": {"messages": MESSAGES}, **extra})


def test_claude_and_gemini_predictions_are_counted_by_their_own_usage():
    claude = claude_line("c", response={"model": CLAUDE, "content": [], "usage": {
        "input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 3,
        "cache_creation": {"ephemeral_1h_input_tokens": 2}}}, status="")
    assert classify_line(claude) == ("c", Outcome.SUCCEEDED, Usage(10, 4, 0, 3, 2), "claude-sonnet-4-5")
    gemini = orjson.dumps({"custom_id": "g", "request": {}, "status": "", "response": {
        "candidates": [], "modelVersion": "gemini-2.5-flash", "usageMetadata": {
            "promptTokenCount": "12", "cachedContentTokenCount": 2, "candidatesTokenCount": 5,
            "thoughtsTokenCount": 7}}})
    with pytest.raises(ShapeError, match="promptTokenCount is '12'"):
        classify_line(gemini)
    gemini = gemini.replace(b'"12"', b"12")
    assert classify_line(gemini) == ("g", Outcome.SUCCEEDED, Usage(10, 12, 0, 2), "gemini-2.5-flash")


@pytest.mark.parametrize(("status", "outcome"), [
    ("429 RESOURCE_EXHAUSTED: Resource exhausted.", Outcome.ERRORED_TRANSIENT),
    ("500 INTERNAL: Internal error encountered.", Outcome.ERRORED_TRANSIENT),
    ("Bad Request: 400 INVALID_ARGUMENT: contents is required", Outcome.ERRORED),
    ({"code": 8, "status": "RESOURCE_EXHAUSTED", "message": "quota"}, Outcome.ERRORED_TRANSIENT),
    ({"code": 3, "message": "bad"}, Outcome.ERRORED),
])
def test_a_failed_line_is_transient_or_final_by_its_status(status, outcome):
    assert classify_line(claude_line("c", status=status)) == ("c", outcome, None, None)


@pytest.mark.parametrize("line", [b"[]", b'{"request": {}}', b'{"custom_id": 5}'])
def test_a_line_without_a_readable_custom_id_is_unreadable(line):
    with pytest.raises(ValueError):
        classify_line(line)


def test_a_response_of_another_shape_is_kept_as_errored_naming_the_field():
    with pytest.raises(ShapeError, match="response is 'yes', expected an object"):
        classify_line(claude_line("c", response="yes", status=""))


async def test_results_in_another_order_find_their_own_requests(sim, tmp_path):
    credentials = service_account(tmp_path / "sa.json", sim.url)
    settings = vertex_settings(sim.url, credentials)
    async with HttpClient(headers_for(settings), settings.retry) as http:
        provider = make_provider(settings, http)
        lines = [check_line({"custom_id": f"r{i}", "params": {"max_tokens": 9, "messages": MESSAGES}}, CLAUDE)[0]
                 for i in range(40)]
        info = await provider.create([line for line in lines if line], tag="job-0123456789ab-chunk-1")
        info = await provider.get(info.id)
        assert info.state is BatchState.ENDED and info.total == 40
        for key in [k for k in sim.gcs.objects if "/prediction-model-" in k[1]]:  # sorted, then reversed
            rows = sorted(sim.gcs.objects[key].splitlines(), key=lambda r: int(orjson.loads(r)["custom_id"][1:]))
            sim.gcs.objects[key] = b"".join(r + b"\n" for r in reversed(rows))
        answers = {}
        async for block in provider.result_blocks(info):
            for raw in block:
                cid, outcome, _, _ = provider.classify(raw)
                answers[cid] = orjson.loads(raw)["response"]["content"][0]["text"]
        assert list(answers) == [f"r{i}" for i in reversed(range(40))]  # the file's order, not the input's
        assert answers == {f"r{i}": f"answer:r{i}" for i in range(40)}
        await provider.release(info)
        assert not sim.gcs.objects


@pytest.mark.parametrize(("doc", "message"), [
    ({"state": "JOB_STATE_RUNNING"}, "list answer: name missing, expected a non-empty string"),
    ({"name": "projects/p/locations/l/batchPredictionJobs/1 2"}, "list answer: name is "
                                                                  "'projects/p/locations/l/batchPredictionJobs/1 2', "
                                                                  "expected .../batchPredictionJobs/ID"),
    ({"name": "projects/p/locations/l/batchPredictionJobs/7", "completionStats": {"successfulCount": "-1"}},
     "batch 7: list answer: completionStats.successfulCount is '-1', expected a whole number >= 0"),
])
async def test_a_job_object_of_another_shape_is_a_bad_answer_naming_the_field(sim, tmp_path, doc, message):
    settings = vertex_settings(sim.url, service_account(tmp_path / "sa.json", sim.url))
    async with HttpClient(headers_for(settings), settings.retry) as http:
        with pytest.raises(errors.BadAnswer) as bad:
            make_provider(settings, http)._info(doc)  # type: ignore[attr-defined]
    assert str(bad.value) == message


async def test_a_failed_job_that_exported_results_is_collected_and_one_that_did_not_fails_whole(sim, tmp_path):
    settings = vertex_settings(sim.url, service_account(tmp_path / "sa.json", sim.url))
    name = "projects/p/locations/l/batchPredictionJobs/9"
    out = {"gcsOutputDirectory": f"gs://{BUCKET}/jobs/t/output/x"}
    async with HttpClient(headers_for(settings), settings.retry) as http:
        provider = make_provider(settings, http)
        partial = provider._info({"name": name, "state": "JOB_STATE_FAILED", "outputInfo": out,  # type: ignore[attr-defined]
                                  "completionStats": {"successfulCount": "3", "failedCount": "1"}})
        whole = provider._info({"name": name, "state": "JOB_STATE_FAILED",  # type: ignore[attr-defined]
                                "error": {"code": 3, "message": "bad input"}})
        paused = provider._info({"name": name, "state": "JOB_STATE_PAUSED"})  # type: ignore[attr-defined]
    assert (partial.state, partial.results, partial.total) == (BatchState.ENDED, [out["gcsOutputDirectory"]], 4)
    assert (whole.state, whole.error) == (BatchState.FAILED, "bad input")
    assert paused.state is BatchState.IN_PROGRESS


def test_the_simulator_config_names_the_vertex_faults():
    config = SimConfig.real_faults()
    assert config.vertex_expired_rate > 0 and config.vertex_paused_rate > 0 and config.vertex_claude_jobs == 4
