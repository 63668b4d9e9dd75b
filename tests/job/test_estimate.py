"""Estimates worth trusting: a heuristic that knows CJK from Latin text, and a sample counted exactly
(Anthropic's count_tokens, tiktoken for OpenAI) whose ratio and spread the dry run reports."""

from __future__ import annotations

import sys
import types

import orjson
import pytest
from aiohttp import web

from batch_scheduler.core.settings import Settings
from batch_scheduler.job.dryrun import dry_run
from batch_scheduler.job.money.estimate import Reservoir, estimate_input_tokens, measure

from ..conftest import KEY
from ..helpers import request


def user(text: str) -> dict:
    return {"messages": [{"role": "user", "content": text}]}


@pytest.mark.parametrize("text, tokens", [
    ("x" * 35, 10),  # Latin: 3.5 characters a token
    ("这是一篇关于批处理的文章" * 10, 120),  # Chinese: a character a token
    ("日本語のテキストです", 10),  # kanji and kana
    ("한국어 텍스트", 7),  # Hangul, and a space at 3.5 a token
    ("Batch 批处理 API", 6),  # mixed: 10 Latin characters (2.9 tokens) + 3 Han, rounded up
])
def test_the_heuristic_counts_cjk_characters_as_tokens_and_latin_text_at_3_5_characters(text, tokens):
    assert estimate_input_tokens(user(text)) == tokens


def test_chinese_is_no_longer_undercounted_threefold():
    article = "批量处理大型语言模型请求可以节省一半的费用。" * 100  # 2,200 Han characters and full stops
    assert estimate_input_tokens(user(article)) == 2_200  # chars / 3.5 said 629


def test_the_sample_is_the_same_for_the_same_input():
    picks = []
    for _ in range(2):
        r = Reservoir(5)
        r.offer([str(i).encode() for i in range(1_000)])
        picks.append(r.lines)
    assert picks[0] == picks[1] and len(set(picks[0])) == 5


# -- the dry run's sampled count against a count_tokens stub ----------------------------------------------


@pytest.fixture
async def count_tokens():
    """A loopback stand-in for POST /v1/messages/count_tokens: answers {"input_tokens": N} as the API does,
    N = 12 for every request but one whose text says `long` (30)."""
    calls: list[tuple[dict, dict]] = []
    status = {"code": 200}

    async def handle(req: web.Request) -> web.Response:
        body = await req.json()
        calls.append((body, {k.lower(): v for k, v in req.headers.items()}))
        if status["code"] != 200:
            return web.json_response({"type": "error", "error": {"type": "not_found_error", "message": "Not Found"}},
                                     status=status["code"])
        text = body["messages"][0]["content"]
        return web.json_response({"input_tokens": 30 if "long" in text else 12})

    app = web.Application()
    app.router.add_post("/v1/messages/count_tokens", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        yield url, calls, status
    finally:
        await runner.cleanup()


def write_lines(path, objs) -> str:
    path.write_bytes(b"".join(orjson.dumps(o) + b"\n" for o in objs))
    return str(path)


TEXT_35 = "x" * 35  # 10 tokens by the heuristic


async def test_the_dry_run_counts_a_sample_exactly_and_reports_its_size_and_spread(count_tokens, tmp_path, capsys):
    url, calls, _ = count_tokens
    lines = [request(f"r{i}", TEXT_35, max_tokens=100) for i in range(9)] + [request("r9", "long" + "x" * 31, max_tokens=100)]
    path = write_lines(tmp_path / "in.jsonl", lines)
    settings = Settings(api_key=KEY, base_url=url, batch_size=4, count_sample=10)
    assert await dry_run(settings, [path], None) == 0
    out = capsys.readouterr().out.splitlines()
    # exact 9 x 12 + 30 = 138 against the heuristic's 100: x1.38; per request 1.2 (nine) and 3.0 (one)
    assert out[4] == ("estimated input tokens: 138 (the heuristic x1.38: 10 of 10 requests counted exactly with "
                      "count_tokens; per request x1.20 to x3.00, sd 0.57)")
    assert out[6] == ("  claude-sonnet-4-5: 10 request(s), ~138 input tokens, up to 1,000 output tokens: "
                      "$0.000207 to $0.007707")
    assert len(calls) == 10
    body, headers = calls[0]
    assert set(body) == {"model", "messages"}  # count_tokens refuses max_tokens
    assert (headers["x-api-key"], headers["anthropic-version"]) == (KEY, "2026-10-21")


async def test_a_smaller_sample_says_of_how_many(count_tokens, tmp_path, capsys):
    url, calls, _ = count_tokens
    path = write_lines(tmp_path / "in.jsonl", [request(f"r{i}", TEXT_35) for i in range(50)])
    await dry_run(Settings(api_key=KEY, base_url=url, count_sample=3), [path], None)
    assert ("estimated input tokens: 600 (the heuristic x1.20: 3 of 50 requests counted exactly with count_tokens; "
            "per request x1.20 to x1.20, sd 0.00)\n") in capsys.readouterr().out
    assert len(calls) == 3


async def test_when_count_tokens_fails_the_heuristic_stands_and_the_dry_run_says_why(count_tokens, tmp_path, capsys):
    url, _, status = count_tokens
    status["code"] = 404
    path = write_lines(tmp_path / "in.jsonl", [request("a", TEXT_35)])
    assert await dry_run(Settings(api_key=KEY, base_url=url), [path], None) == 0
    out = capsys.readouterr().out
    assert ("estimated input tokens: 10 (heuristic: about 3.5 characters a token, a CJK character one token)\n"
            "exact count: none (count_tokens failed (POST count_tokens: HTTP 404 not_found_error: Not Found): "
            "the heuristic alone)\n") in out


async def test_count_sample_0_calls_nothing(count_tokens, tmp_path, capsys):
    url, calls, _ = count_tokens
    path = write_lines(tmp_path / "in.jsonl", [request("a", TEXT_35)])
    await dry_run(Settings(api_key=KEY, base_url=url, count_sample=0), [path], None)
    assert calls == [] and "exact count" not in capsys.readouterr().out


async def test_the_dry_run_under_max_cost_says_a_run_would_refuse_an_unpriced_model(tmp_path, capsys):
    path = write_lines(tmp_path / "in.jsonl", [request("a"), request("b", model="my-local-model")])
    await dry_run(Settings(max_cost_usd=5.0), [path], None)
    assert ("--max-cost: a run would refuse this job (exit 2): no price for my-local-model; give it with --prices "
            "FILE\n") in capsys.readouterr().out


# -- tiktoken, the optional extra for OpenAI -----------------------------------------------------------------


def chat(cid: str, text: str) -> bytes:
    return orjson.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": text}]}})


OPENAI = Settings(provider="openai", api_key=KEY)


async def test_without_tiktoken_the_heuristic_stands_and_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # import fails, as when the extra is not installed
    got = await measure(OPENAI, [chat("a", TEXT_35)], 1)
    assert (got.sample, got.ratio, got.note) == (
        0, 1.0, "tiktoken is not installed (pip install 'batch-scheduler[tiktoken]'): the heuristic alone")


def fake_tiktoken(encode) -> types.ModuleType:
    module = types.ModuleType("tiktoken")

    def get_encoding(name):
        return types.SimpleNamespace(encode=encode)

    def encoding_for_model(model):
        raise KeyError(model)

    module.get_encoding = get_encoding  # type: ignore[attr-defined]
    module.encoding_for_model = encoding_for_model  # type: ignore[attr-defined]
    return module


async def test_tiktoken_offline_cannot_fetch_its_bpe_files_and_the_heuristic_stands(monkeypatch):
    def offline(text):
        raise ConnectionError("Failed to resolve 'openaipublic.blob.core.windows.net'")

    monkeypatch.setitem(sys.modules, "tiktoken", fake_tiktoken(offline))
    got = await measure(OPENAI, [chat("a", TEXT_35)], 1)
    assert got.note == ("tiktoken could not load its encoding (ConnectionError; it downloads its BPE files from the "
                        "internet at first use): the heuristic alone")


async def test_tiktoken_counts_chat_messages_as_the_openai_cookbook_does(monkeypatch):
    monkeypatch.setitem(sys.modules, "tiktoken", fake_tiktoken(lambda text: text.split()))
    got = await measure(OPENAI, [chat("a", "one two three four five")], 1)
    # 3 to prime the answer + 3 for the message + 1 for the role + 5 words = 12, against the heuristic's 7
    assert (got.method, got.sample, got.ratio) == ("tiktoken", 1, 12 / 7)
