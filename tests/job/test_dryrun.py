"""--dry-run: every line checked as a run would, counts and a cost range printed, nothing sent."""

from __future__ import annotations

import math
import os
import stat

import orjson
import pytest

from batch_scheduler.commands.main import main
from batch_scheduler.core.settings import Settings
from batch_scheduler.job.dryrun import dry_run
from batch_scheduler.job.money.pricing import estimate_input_tokens, estimate_request

from ..helpers import request

TEXT_35 = "x" * 35  # 10 tokens at 3.5 characters a token


def write_lines(path, objs) -> str:
    path.write_bytes(b"".join((o if isinstance(o, bytes) else orjson.dumps(o)) + b"\n" for o in objs))
    return str(path)


def settings(**changes) -> Settings:
    return Settings(**{"api_key": "", "base_url": "http://nowhere.invalid", "batch_size": 4, **changes})


async def test_a_known_model_gets_a_cost_range_from_input_only_to_input_plus_every_max_tokens(tmp_path, capsys):
    path = write_lines(tmp_path / "in.jsonl", [request(f"r{i}", TEXT_35, max_tokens=100) for i in range(10)])
    assert await dry_run(settings(), [path], None) == 0
    out = capsys.readouterr().out.splitlines()
    # input: 10 x 10 tokens x $3/M x 0.5; output: 10 x 100 tokens x $15/M x 0.5
    assert out == [
        "dry run (anthropic): nothing was submitted",
        "requests: 10",
        "rejected lines: 0",
        "batches: 3 (at most 4 requests and 200 MB each)",
        "estimated input tokens: 100 (heuristic: about 3.5 characters a token, a CJK character one token)",
        "exact count: none (no API key to call count_tokens with)",
        "estimated cost at batch prices: $0.000150 to $0.007650",
        "  claude-sonnet-4-5: 10 request(s), ~100 input tokens, up to 1,000 output tokens: $0.000150 to $0.007650",
    ]


async def test_a_model_without_a_price_is_listed_as_unknown_never_guessed(tmp_path, capsys):
    lines = [request("a", TEXT_35, max_tokens=100), request("b", TEXT_35, model="my-local-model"),
             request("c", TEXT_35, model="my-local-model")]
    path = write_lines(tmp_path / "in.jsonl", lines)
    assert await dry_run(settings(), [path], None) == 0
    out = capsys.readouterr().out
    assert "estimated cost at batch prices: $0.000015 to $0.000765, plus 2 request(s) at unknown price\n" in out
    assert "  my-local-model: 2 request(s), ~20 input tokens, up to 128 output tokens: unknown price\n" in out


async def test_only_unknown_models_give_an_unknown_price(tmp_path, capsys):
    path = write_lines(tmp_path / "in.jsonl", [request("a", model="my-local-model")])
    await dry_run(settings(), [path], None)
    assert "estimated cost at batch prices: unknown price\n" in capsys.readouterr().out


async def test_bad_lines_are_rejected_with_their_line_numbers_into_the_out_dir(tmp_path, capsys):
    bad = {"custom_id": "b", "params": {"model": "claude-sonnet-4-5", "messages": []}}
    path = write_lines(tmp_path / "in.jsonl", [request("a"), b"{not json", bad, request("a")])
    out_dir = tmp_path / "out"
    assert await dry_run(settings(), [path], str(out_dir)) == 0
    captured = capsys.readouterr()
    assert "requests: 1\nrejected lines: 3\n" in captured.out
    assert f"  {path}:3: params.max_tokens missing\n" in captured.err
    assert f"  {path}:4: duplicate custom_id 'a' (the first one is kept)\n" in captured.err
    records = [orjson.loads(line) for line in (out_dir / "rejected.jsonl").read_bytes().splitlines()]
    assert [(r["line"], r.get("custom_id")) for r in records] == [(2, None), (3, "b"), (4, "a")]
    assert stat.S_IMODE(os.stat(out_dir).st_mode) == 0o700


async def test_strict_with_a_bad_line_returns_2_and_says_why(tmp_path, capsys):
    path = write_lines(tmp_path / "in.jsonl", [request("a"), {"custom_id": "bad id!"}])
    assert await dry_run(settings(strict=True), [path], None) == 2
    assert ("batch-scheduler: --strict: 1 bad line(s); a run would refuse the whole job and submit nothing"
            in capsys.readouterr().err)


async def test_an_existing_jobs_rejected_list_is_not_replaced(tmp_path, capsys):
    out_dir = tmp_path / "job"
    out_dir.mkdir()
    (out_dir / "ledger.db").write_bytes(b"")
    (out_dir / "rejected.jsonl").write_bytes(b"the job's own\n")
    path = write_lines(tmp_path / "in.jsonl", [b"[]"])
    await dry_run(settings(), [path], str(out_dir))
    assert (out_dir / "rejected.jsonl").read_bytes() == b"the job's own\n"
    assert b"not a JSON object" in (out_dir / "rejected.dry-run.jsonl").read_bytes()


def test_the_cli_dry_run_of_templated_rows_for_openai_needs_no_key(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "CLAUDE_API_KEY", "BATCH_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "rows.csv").write_text("title,content\nA," + "y" * 62 + "\nB\n", encoding="utf-8")
    code = main(["run", "rows.csv", "--out", "out", "--dry-run", "--provider", "openai", "--model", "gpt-4o-mini",
                 "--template", "{title}: {content}", "--max-tokens", "1000"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # 'A: ' + 62 characters = 65, ~19 tokens; gpt-4o-mini: $0.15 / $0.60 per M, half price
    assert "requests: 1\nrejected lines: 1\nbatches: 1" in captured.out
    assert "  gpt-4o-mini: 1 request(s), ~19 input tokens, up to 1,000 output tokens: $0.000001 to $0.000301" \
        in captured.out
    assert "rows.csv:3: missing field 'content' for the template" in captured.err


def test_the_cli_dry_run_of_rows_without_max_tokens_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.csv").write_text("content\nx\n", encoding="utf-8")
    code = main(["run", "rows.csv", "--out", "out", "--dry-run", "--model", "m", "--template", "{content}"])
    assert code == 2
    assert "--max-tokens is required with --template" in capsys.readouterr().err


# -- the estimates ------------------------------------------------------------------------------

def test_input_tokens_are_text_characters_over_3_5_rounded_up():
    params = {"system": [{"type": "text", "text": "s" * 10}], "tools": [{"name": "t"}],
              "messages": [{"role": "user", "content": "u" * 15}, {"role": "assistant",
                                                                 "content": [{"type": "text", "text": "a" * 10}]}]}
    assert estimate_input_tokens(params) == math.ceil((10 + 15 + 10 + len('[{"name": "t"}]')) / 3.5) == 15
    assert estimate_input_tokens({"messages": [{"role": "user", "content": "x" * 36}]}) == 11


@pytest.mark.parametrize("message, chars", [
    ({"role": "user", "content": "x" * 7}, 7),
    ({"role": "user", "content": [{"type": "text", "text": "x" * 7}, "y" * 7]}, 14),
    ({"role": "user", "content": [{"type": "image", "source": {"data": "abc"}}]},
     len('{"type": "image", "source": {"data": "abc"}}')),
    ({"role": "user"}, len('{"role": "user"}')),
    ({"role": "user", "text": "x" * 7, "content": "not counted"}, 7),
    ({"type": "tool_result", "content": "r" * 7}, len('{"type": "tool_result", "content": "rrrrrrr"}')),
], ids=["string", "text-blocks", "image-block", "no-content", "text-field", "not-a-message"])
def test_each_kind_of_message_counts_its_text_or_else_its_json(message, chars):
    assert estimate_input_tokens({"messages": [message]}) == math.ceil(chars / 3.5)


@pytest.mark.parametrize("obj, provider, expected", [
    (request("a", TEXT_35, max_tokens=64), "anthropic", ("claude-sonnet-4-5", 10, 64)),
    ({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {
        "model": "gpt-4o", "max_completion_tokens": 9, "messages": [{"role": "system", "content": TEXT_35},
                                                                    {"role": "user", "content": TEXT_35}]}},
     "openai", ("gpt-4o", 20, 9)),
    ({"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "e", "input": TEXT_35}},
     "openai", ("e", 10, 0)),
    ({"custom_id": "a", "method": "POST", "url": "/v1/messages", "body": {
        "model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": TEXT_35}]}},
     "inline", ("claude-haiku-4-5", 10, 5)),
])
def test_estimate_request_reads_both_forms(obj, provider, expected):
    assert estimate_request(obj, provider) == expected
