"""Each provider declares its own custom_id rule: Anthropic's alphabet and 64 characters (the inline proxy
sits in front of Anthropic), OpenAI's uniqueness and a sane length."""

from __future__ import annotations

import orjson
import pytest

from batch_scheduler.core.settings import Settings
from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.job.input.validate import Validator
from batch_scheduler.providers import make_provider

from ..conftest import fast_settings
from ..helpers import read_results, request

OPENAI_ONLY = ["doc/42:part 1", "user@example.com", "über-äpfel", "x" * 65, "a.b.c"]


def chat(cid: str) -> dict:
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}}


def verdict(provider_name: str, cid: str) -> str | None:
    settings = Settings(provider=provider_name, model="claude-sonnet-4-5")
    validator = Validator(make_provider(settings, None), 1 << 20)  # type: ignore[arg-type]
    line = chat(cid) if provider_name == "openai" else request(cid)
    return validator.check(orjson.dumps(line))[2]


@pytest.mark.parametrize("cid", OPENAI_ONLY)
@pytest.mark.parametrize("provider_name", ["anthropic", "inline"])
def test_anthropic_and_the_inline_proxy_refuse_ids_outside_their_alphabet(provider_name, cid):
    assert verdict(provider_name, cid) == f"custom_id {cid!r} must be 1-64 characters of a-z A-Z 0-9 _ -"


@pytest.mark.parametrize("cid", OPENAI_ONLY + ["y" * 512])
def test_openai_takes_any_id_up_to_512_characters(cid):
    assert verdict("openai", cid) is None


@pytest.mark.parametrize("cid, error", [
    ("z" * 513, f"custom_id {'z' * 80!r} must be 1-512 characters, no control characters"),
    ("tab\there", "custom_id 'tab\\there' must be 1-512 characters, no control characters"),
    ("", "custom_id '' must be 1-512 characters, no control characters"),
], ids=["too-long", "control-character", "empty"])
def test_openai_refuses_ids_without_a_sane_length_or_with_control_characters(cid, error):
    assert verdict("openai", cid) == error


async def test_an_openai_job_with_ids_anthropic_would_refuse_runs_and_duplicates_are_still_refused(sim, tmp_path):
    lines = [chat(cid) for cid in OPENAI_ONLY] + [chat("doc/42:part 1")]
    (tmp_path / "in.jsonl").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    settings = fast_settings(sim.url, provider="openai", auth="bearer")
    result = await Engine(settings, str(tmp_path / "out"), [str(tmp_path / "in.jsonl")], quiet=True).run()
    assert result.exit_code == ExitCode.OK, result.message
    assert sorted(r["custom_id"] for r in read_results(str(tmp_path / "out"))) == sorted(OPENAI_ONLY)
    rejected = [orjson.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_bytes().splitlines()]
    assert [(r["line"], r["error"]) for r in rejected] == [
        (6, "duplicate custom_id 'doc/42:part 1' (the first one is kept)")]
