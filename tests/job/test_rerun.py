"""rerun(out, where=..., params=...) and `batch-scheduler rerun`: a new job over the chosen rows of a finished
one, in OUT.rerun-N; to_pandas(out) then shows each row's latest answer."""

from __future__ import annotations

import asyncio
import json

import pydantic
import pytest

import batch_scheduler
from batch_scheduler.commands.main import main as cli
from batch_scheduler.core.errors import UsageError
from batch_scheduler.job.view.rerun import parse_where, reruns_of

FAST = dict(poll_min=0.01, poll_max=0.05, batch_size=10, shards=4, api_key="sk-rerun-test")
ROWS = dict(template="Who is {name}?", model="claude-haiku-4-5", max_tokens=60)
PEOPLE = [{"name": f"person {i}", "n": i} for i in range(30)]


class Person(pydantic.BaseModel):
    name: str
    age: int


@pytest.fixture
async def invalid_job(sim, tmp_path):
    """30 rows of which about a third answered JSON that does not fit (no retries)."""
    sim.config.invalid_json_rate = 0.35
    out = tmp_path / "out"
    result = await batch_scheduler.arun(PEOPLE, out, response_model=Person, base_url=sim.url, **ROWS, **FAST)
    assert result.ok and result.summary["results"]["invalid"] > 0, result.message
    return out


async def test_rerun_sends_the_chosen_rows_again_and_to_pandas_shows_the_latest_answer(sim, invalid_job):
    before = batch_scheduler.to_pandas(invalid_job)
    invalid = set(before.loc[before["status"] == "invalid", "custom_id"])
    sim.config.invalid_json_rate = 0.0
    again = await batch_scheduler.arerun(invalid_job, where="status=invalid", response_model=Person,
                                          api_key="sk-rerun-test")
    assert again.ok, again.message
    assert reruns_of(str(invalid_job)) == [f"{invalid_job}.rerun-1"]
    assert again.summary["requests"]["accepted"] == len(invalid)
    after = batch_scheduler.to_pandas(invalid_job)
    assert list(after["custom_id"]) == list(before["custom_id"]) and list(after["n"]) == list(before["n"])
    assert set(after["status"]) == {"succeeded"}
    rerun_rows = after["custom_id"].isin(invalid)
    assert (after.loc[rerun_rows, "attempts"] == 2).all() and (after.loc[~rerun_rows, "attempts"] == 1).all()
    assert after.loc[rerun_rows, "json.age"].notna().all()
    assert (after.loc[~rerun_rows, "text"] == before.loc[~rerun_rows, "text"]).all()
    alone = batch_scheduler.to_pandas(invalid_job, reruns=False)
    assert alone["status"].tolist() == before["status"].tolist()
    polars = batch_scheduler.to_polars(invalid_job)
    assert polars["status"].to_list() == after["status"].tolist()
    nothing = await batch_scheduler.arerun(invalid_job, where="status=invalid", api_key="k")
    assert nothing.ok and nothing.message == f"no row of {invalid_job} matches 'status=invalid': nothing to re-run"


async def test_the_cli_reruns_with_params_merged_over_the_jobs_own(sim, invalid_job, tmp_path, capsys, monkeypatch):
    sim.config.invalid_json_rate = 0.0
    (tmp_path / "p.json").write_text(json.dumps({"metadata": {"user_id": "again"}}))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-rerun-test")
    code = await asyncio.to_thread(cli, ["rerun", str(invalid_job), "--where", "status=invalid|errored",
                                         "--params", str(tmp_path / "p.json")])  # the simulator's loop runs on
    assert code == 0
    assert f"rerun of {invalid_job} in {invalid_job}.rerun-1" in capsys.readouterr().err
    with open(f"{invalid_job}.rerun-1/input.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert all(set(r) == {"name", "n", "_custom_id"} for r in rows)
    lines = list(batch_scheduler.read_results(f"{invalid_job}.rerun-1"))
    assert {line["custom_id"] for line in lines} == {r["_custom_id"] for r in rows}


def test_where_reads_conditions_on_the_result_columns():
    test = parse_where("status=errored|invalid|max_tokens, model=m")
    assert test({"status": "invalid", "model": "m"}) and test({"status": "succeeded", "stop_reason": "max_tokens",
                                                                "model": "m"})
    assert not test({"status": "succeeded", "stop_reason": "end_turn", "model": "m"})
    assert not test({"status": "errored", "model": "other"})
    with pytest.raises(UsageError, match=r"^--where 'colour=red': expected KEY=V1\|V2 with KEY one of the result"):
        parse_where("colour=red")
