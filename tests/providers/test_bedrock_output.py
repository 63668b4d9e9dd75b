"""Bedrock's `manifest.json.out` is untrusted (each field checked, a bad one named once and the manifest not
used), and its tokens reach the answers that report none, adding up to the manifest's exactly."""

from __future__ import annotations

import logging

import orjson
import pytest

from batch_scheduler.providers.aws.bedrock_lines import output_line
from batch_scheduler.providers.aws.bedrock_output import Manifest, OutputTally, read_manifest

MODEL = "amazon.nova-lite-v1:0"
WHAT = "batch abcdefabcdef: s3://b/out/abcdefabcdef/manifest.json.out"


def converse(rid: str, usage: dict | None) -> bytes:
    out = {"output": {"message": {"role": "assistant", "content": [{"text": f"answer to {rid}"}]}}, "stopReason": "end_turn"}
    if usage is not None:
        out["usage"] = usage
    return orjson.dumps({"recordId": rid, "modelInput": {}, "modelOutput": out})


def test_a_whole_manifest_is_read_field_by_field():
    data = orjson.dumps({"totalRecordCount": 5, "processedRecordCount": 4, "successRecordCount": 3,
                         "errorRecordCount": 1, "inputTokenCount": 70, "outputTokenCount": 30})
    assert read_manifest(data, WHAT) == Manifest(5, 4, 3, 1, 70, 30)
    assert read_manifest(b'{"processedRecordCount": 2}', WHAT) == Manifest(processed=2)


@pytest.mark.parametrize(("data", "said"), [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "expected a JSON object, got [1, 2]"),
    (b'{"inputTokenCount": -1}', "inputTokenCount is -1, expected a whole number >= 0; the manifest is not used"),
    (b'{"processedRecordCount": "7"}', "processedRecordCount is '7', expected a whole number >= 0"),
    (b'{"outputTokenCount": 1.5}', "outputTokenCount is 1.5, expected a whole number >= 0"),
], ids=["not-json", "a-list", "negative", "a-string", "a-float"])
def test_a_manifest_of_another_shape_is_named_and_not_used(data, said, caplog):
    with caplog.at_level(logging.WARNING):
        assert read_manifest(data, WHAT) is None
    assert [r.getMessage() for r in caplog.records if said in r.getMessage() and WHAT in r.getMessage()]


def tallied(tally: OutputTally, blocks: list[list[bytes]]) -> list[dict]:
    lines = [x for block in blocks for x in tally.take([output_line(line, MODEL) for line in block])] + tally.end()
    return [orjson.loads(x) for x in lines]


def test_answers_without_usage_share_the_manifests_tokens_exactly():
    manifest = Manifest(total=5, processed=5, succeeded=4, errored=1, input_tokens=1_000, output_tokens=301)
    blocks = [[converse("a", None), converse("b", {"inputTokens": 100, "outputTokens": 1})],
              [orjson.dumps({"recordId": "c", "modelInput": {}, "error": {"errorCode": 400, "errorMessage": "no"}}),
               converse("d", None), converse("e", None)]]
    out = tallied(tally := OutputTally(manifest, "batch x"), blocks)
    assert sorted(x["custom_id"] for x in out) == ["a", "b", "c", "d", "e"] and tally.records == 5
    usage = {x["custom_id"]: x["result"]["message"]["usage"] for x in out if x["result"]["type"] == "succeeded"}
    assert usage["b"]["input_tokens"] == 100
    assert sum(u["input_tokens"] for u in usage.values()) == 1_000
    assert sum(u["output_tokens"] for u in usage.values()) == 301
    # each an even share of what is left as it comes: a quarter for a, then halves of what b left
    assert [usage[k]["input_tokens"] for k in "ade"] == [250, 325, 325]


def test_lines_the_manifest_counts_but_the_file_lacks_are_named(caplog):
    manifest = Manifest(processed=3)
    with caplog.at_level(logging.WARNING):
        out = tallied(OutputTally(manifest, "batch abcdefabcdef"), [[converse("a", {"inputTokens": 1})]])
    assert [x["custom_id"] for x in out] == ["a"]
    assert ("batch abcdefabcdef: manifest.json.out counts 3 processed records, the output file has 1; the 2 missing "
            "are sent again") in [r.getMessage() for r in caplog.records]


def test_without_a_manifest_the_lines_go_as_they_came():
    out = tallied(OutputTally(None, "batch x"), [[converse("a", None), converse("b.pad0", {"inputTokens": 1})]])
    assert [x["custom_id"] for x in out] == ["a"] and out[0]["result"]["message"]["usage"] is None
