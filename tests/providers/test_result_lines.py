"""The typed decoder of result lines (providers/result_lines.py) agrees with the full reading on every line:
the same (custom_id, outcome, usage, model), or the same error with the same message."""

from __future__ import annotations

import json
import random

import pytest

from batch_scheduler.providers import result_lines
from batch_scheduler.providers.answers import ShapeError
from batch_scheduler.providers.base import Outcome
from batch_scheduler.providers.common import classify_result, classify_result_full

from .test_fuzzed_answers import mutated_line

SUCCEEDED = {
    "custom_id": "req-1", "result": {"type": "succeeded", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "answer: ü", "citations": None}], "stop_reason": "end_turn",
        "stop_sequence": None, "usage": {"input_tokens": 200, "output_tokens": 40, "cache_creation_input_tokens": 7,
                                         "cache_read_input_tokens": 3, "service_tier": "batch",
                                         "cache_creation": {"ephemeral_5m_input_tokens": 2,
                                                            "ephemeral_1h_input_tokens": 5}}}}}
ERRORED = {"custom_id": "req-2", "result": {"type": "errored", "error": {"type": "error", "error": {
    "type": "overloaded_error", "message": "Overloaded"}}}}


@pytest.fixture
def classify_fast(monkeypatch):
    """`classify_result` with the full reading replaced by a marker: what the typed decoder makes of a line."""
    monkeypatch.setattr(result_lines, "classify_result_full", lambda line: "full")
    return result_lines.classify_result


def reading(classify, line: bytes):
    """What a reading makes of a line: its answer, or its error's type and message (the errors the collector
    turns into a message)."""
    try:
        return classify(line)
    except (ValueError, KeyError, TypeError) as exc:
        return type(exc), str(exc)


def test_a_succeeded_line_is_read_by_the_typed_decoder(classify_fast):
    line = json.dumps(SUCCEEDED).encode()
    assert classify_fast(line) == ("req-1", Outcome.SUCCEEDED, (200, 40, 7, 3, 5), "claude-sonnet-4-5")


def test_a_succeeded_line_reads_the_same_both_ways():
    line = json.dumps(SUCCEEDED).encode()
    assert classify_result(line) == classify_result_full(line) == (
        "req-1", Outcome.SUCCEEDED, (200, 40, 7, 3, 5), "claude-sonnet-4-5")


@pytest.mark.parametrize("kind, outcome", [("expired", Outcome.EXPIRED), ("canceled", Outcome.CANCELED)])
def test_expired_and_canceled_lines_are_read_by_the_typed_decoder(classify_fast, kind, outcome):
    line = json.dumps({"custom_id": "req-3", "result": {"type": kind}}).encode()
    assert classify_fast(line) == ("req-3", outcome, None, None)


@pytest.mark.parametrize("line", [
    json.dumps(ERRORED).encode(),  # the error's kind decides: the full reading's
    b'{"custom_id":"req-1","result":{"type":"succeeded","message":{"usage":{"input_tokens":-1}}}}',
    b'{"custom_id":"req-1","result":{"type":"succeeded","message":{"usage":{"input_tokens":1.0}}}}',
    b'{"custom_id":"req-1","result":{"type":"succeeded","message":{"usage":{"input_tokens":true}}}}',
    b'{"custom_id":"req-1","result":{"type":"succeeded","message":{"usage":{"output_tokens":99999999999999999999}}}}',
    b'{"custom_id":"req-1","result":{"type":"succeeded","message":{"model":5}}}',
    b'{"custom_id":"req-1","result":{"type":"succeeded","message":{"usage":{"input_tokens":null}}}}',
    b'{"custom_id":"req-1","result":{"type":"succeeded","message":{"usage":[]}}}',
    b'{"custom_id":"req-1","result":{"type":"succeeded","message":{"usage":{"cache_creation":[]}}}}',
    b'{"custom_id":"req-1","result":{"type":"succeeded","message":{"content":' + b"[" * 2000 + b"]" * 2000 + b'}}}',
    b'{"custom_id":"req-1","result":{"type":"succeeded","message":{"content":"\xff"}}}',
    b'{"custom_id":"req-1","result":{"type":"succeeded","message":{"content":"\xed\xa0\x80"}}}',
    b'{"custom_id":"req-1","result":{"type":"succeeded"}}',
    b'{"custom_id":"req-1","result":{"type":"pending"}}',
    b'{"custom_id":"","result":{"type":"expired"}}',
    b'{"result":{"type":"expired"}}',
    b'[1, 2]',
    b'{"custom_id":"req-1","result":{"type":"expired"}',
])
def test_a_line_of_another_shape_is_left_to_the_full_reading(classify_fast, line):
    assert classify_fast(line) == "full"


def test_a_line_that_is_not_utf8_where_it_is_not_read_stops_as_before():
    line = b'{"custom_id":"req-1","result":{"type":"succeeded","message":{"content":"\xff"}}}'
    with pytest.raises(ValueError) as full:
        classify_result_full(line)
    with pytest.raises(ValueError) as fast:
        classify_result(line)
    assert not isinstance(fast.value, ShapeError) and str(fast.value) == str(full.value)


@pytest.mark.parametrize("seed", range(8))
def test_mutated_lines_read_the_same_both_ways(seed):
    rng = random.Random(seed)
    for base in (SUCCEEDED, ERRORED, {"custom_id": "req-3", "result": {"type": "expired"}}):
        for _ in range(250):
            line = json.dumps(mutated_line(base, rng)).encode()
            assert reading(classify_result, line) == reading(classify_result_full, line), line
