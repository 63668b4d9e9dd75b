"""The dry run and --max-cost for Gemini and Vertex: the estimates read a Gemini request's `contents` and
`maxOutputTokens` (in Gemini's own form, or made from Message Batches lines), and a job over the cap is
refused before anything is uploaded or created."""

from __future__ import annotations

import orjson
import pytest

from batch_scheduler.core.settings import Settings
from batch_scheduler.job.dryrun import dry_run
from batch_scheduler.job.engine import Engine, ExitCode

from ..conftest import fast_settings
from ..gcp import service_account, vertex_settings
from ..helpers import write_requests

TEXT_35 = "x" * 35  # 10 tokens at 3.5 characters a token
FLASH = "gemini-2.5-flash"


def gemini_line(i: int, key: str) -> dict:
    request = {"contents": [{"role": "user", "parts": [{"text": TEXT_35}]}], "generationConfig": {"maxOutputTokens": 100}}
    return {key: f"g{i}", "request": request}


def write_lines(path, objs) -> str:
    path.write_bytes(b"".join(orjson.dumps(o) + b"\n" for o in objs))
    return str(path)


@pytest.mark.parametrize("provider", ["gemini", "vertex"])
async def test_the_dry_run_prices_gemini_lines_from_their_contents_and_max_output_tokens(tmp_path, capsys, provider):
    key = "key" if provider == "gemini" else "custom_id"
    path = write_lines(tmp_path / "in.jsonl", [gemini_line(i, key) for i in range(10)])
    settings = Settings(api_key="", base_url="http://nowhere.invalid", provider=provider, model=FLASH, batch_size=4,
                        project="p", location="us-central1", staging="gs://b/x")
    assert await dry_run(settings, [path], None) == 0
    # input: 10 x 10 tokens x $0.30/M x 0.5; output: 10 x 100 tokens x $2.50/M x 0.5
    assert capsys.readouterr().out.splitlines() == [
        f"dry run ({provider}): nothing was submitted",
        "requests: 10",
        "rejected lines: 0",
        "batches: 3 (at most 4 requests and 200 MB each)",
        "estimated input tokens: 100 (heuristic: about 3.5 characters a token, a CJK character one token)",
        f"exact count: none (provider {provider} has no token count)",
        "estimated cost at batch prices: $0.000015 to $0.001265",
        "  gemini-2.5-flash: 10 request(s), ~100 input tokens, up to 1,000 output tokens: $0.000015 to $0.001265",
    ]


@pytest.mark.parametrize("provider", ["gemini", "vertex"])
async def test_a_job_over_max_cost_is_refused_before_anything_is_sent(sim, tmp_path, provider):
    write_requests(str(tmp_path / "in.jsonl"), 200, model=FLASH)  # Message Batches lines, made Gemini requests
    if provider == "gemini":
        settings = fast_settings(sim.url, provider="gemini", max_cost_usd=0.001)
    else:
        settings = vertex_settings(sim.url, service_account(tmp_path / "sa.json", sim.url), model=FLASH,
                                   max_cost_usd=0.001)
    result = await Engine(settings, str(tmp_path / "out"), [str(tmp_path / "in.jsonl")], quiet=True).run()
    assert result.exit_code == ExitCode.FAILED
    # the first batch alone: 100 requests of up to 64 output tokens each at half of $2.50/M, and their input
    assert result.message == (
        "stopped at --max-cost $0.00: spent $0.0000, in flight up to $0.0000, the next batch up to $0.0081. "
        "Raise --max-cost and run the same command again to carry on (200 request(s) not sent)")
    assert sim.stats["creates"] == 0 and sim.stats["uploads"] == 0
