"""Bedrock's lines name their model: kept with it when it is not the job's, written to S3 without it (the job
names the model), and laned by it."""

from __future__ import annotations

import orjson

from batch_scheduler.core.settings import Settings
from batch_scheduler.providers.aws.bedrock import BedrockProvider
from batch_scheduler.providers.aws.bedrock_lines import padded_line, record_line

CLAUDE = "anthropic.claude-3-5-haiku-20241022-v1:0"
LLAMA = "meta.llama3-1-8b-instruct-v1:0"


def provider(model: str | None = CLAUDE) -> BedrockProvider:
    return BedrockProvider(Settings(provider="bedrock", model=model), http=None)  # type: ignore[arg-type]


def test_a_line_of_another_model_is_kept_with_it_and_written_without_it():
    p = provider()
    native = {"custom_id": "a", "modelId": LLAMA, "modelInput": {"prompt": "q", "max_gen_len": 5}}
    problem, kept = p.check_request(native, orjson.dumps(native))
    assert problem is None and kept is not None
    assert orjson.loads(kept) == {"modelId": LLAMA, "custom_id": "a", "modelInput": {"prompt": "q", "max_gen_len": 5}}
    assert p.lane_of(native) == p.lane_of(orjson.loads(kept)) == LLAMA
    assert orjson.loads(record_line(kept)) == {"recordId": "a", "modelInput": {"prompt": "q", "max_gen_len": 5}}
    assert orjson.loads(padded_line(kept, 3))["modelId"] == LLAMA


def test_a_line_of_the_jobs_model_is_kept_as_before_and_a_line_without_any_model_is_refused():
    p = provider()
    line = {"custom_id": "b", "params": {"max_tokens": 5, "messages": [{"role": "user", "content": "q"}]}}
    problem, kept = p.check_request(line, orjson.dumps(line))
    assert problem is None and kept is not None and kept.startswith(b'{"custom_id":"b"')
    assert p.lane_of(line) == p.lane_of(orjson.loads(kept)) == CLAUDE
    assert record_line(kept).startswith(b'{"recordId":"b"')
    assert provider(None).check_request(line, orjson.dumps(line)) == (
        "no model: give --model (or BEDROCK_MODEL), the Bedrock model id the job runs", None)
    native = {"custom_id": "c", "modelInput": {"prompt": "q"}}
    assert provider(None).check_request(native, orjson.dumps(native)) == (
        "no model: give --model (or BEDROCK_MODEL), or modelId in the line", None)
