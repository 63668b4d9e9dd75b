"""`--provider azure`: the OpenAI flow on an Azure resource, as the CLI meets it, with the simulator's real faults;
and what the profile reads that OpenAI never sends (capitalised statuses, ISO times, null counts, unknown statuses)."""

from __future__ import annotations

import csv
import json
import logging

import pytest

from batch_scheduler.commands.main import main
from batch_scheduler.core.http import HttpClient
from batch_scheduler.providers import build_settings
from batch_scheduler.providers.base import BatchState
from batch_scheduler.providers.openai.like import AzureProvider, resource_root
from batch_scheduler.simulator import SimConfig
from batch_scheduler.simulator.process import SimulatorProcess

from ..conftest import KEY, fast_settings
from ..helpers import ids_of, read_results, write_requests


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    for name in ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_AD_TOKEN", "BATCH_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_a_job_finishes_exactly_once_under_real_faults_then_status_and_export(env, monkeypatch, capsys):
    ids = write_requests(env / "in.jsonl", 600)
    with SimulatorProcess(["--faults", "--seed", "21", "--keys", KEY]) as sim:
        monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", sim.url)
        code = main(["run", str(env / "in.jsonl"), "--out", str(env / "out"), "--provider", "azure",
                     "--batch-size", "50", "--poll-min", "0.02", "--poll-max", "0.1", "--retry-wait", "0",
                     "--max-attempts", "6"])
        stats = sim.stats()
    assert code == 0, capsys.readouterr().err
    got = ids_of(read_results(str(env / "out")))
    assert sorted(got) == sorted(ids) and len(got) == len(set(got))
    assert stats["calls"]["azure.batches.create"] >= 12 and sum(stats["faults"].values()) > 0
    capsys.readouterr()
    assert main(["status", str(env / "out"), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "done" and status["requests"]["finished"] == 600
    assert status["queue"]["unit"] == "tokens"
    assert main(["export", str(env / "out"), "-o", str(env / "x.csv")]) == 0
    with open(env / "x.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["custom_id"] for r in rows] == ids


def test_without_an_endpoint_one_line_names_the_variable(env, capsys):
    write_requests(env / "in.jsonl", 3)
    assert main(["run", str(env / "in.jsonl"), "--out", str(env / "out"), "--provider", "azure"]) == 2
    assert capsys.readouterr().err.strip() == (
        "batch-scheduler: --provider azure: set AZURE_OPENAI_ENDPOINT (or --base-url)")


def test_the_key_goes_in_the_api_key_header_and_an_entra_token_as_bearer():
    keyed = build_settings({"provider": "azure"}, {"AZURE_OPENAI_API_KEY": "k1", "AZURE_OPENAI_ENDPOINT": "https://r.x"})
    assert AzureProvider.headers(keyed) == {"api-key": "k1"}
    token = build_settings({"provider": "azure"}, {"AZURE_OPENAI_AD_TOKEN": "t1", "AZURE_OPENAI_ENDPOINT": "https://r.x"})
    assert AzureProvider.headers(token) == {"authorization": "Bearer t1"}


@pytest.mark.parametrize("base", ["https://r.openai.azure.com", "https://r.openai.azure.com/",
                                  "https://r.openai.azure.com/openai", "https://r.openai.azure.com/openai/v1/"])
def test_the_resource_is_found_in_any_form_of_the_endpoint(base):
    assert resource_root(base) == "https://r.openai.azure.com"


async def test_capitalised_statuses_iso_times_and_null_counts_are_read(sim, tmp_path):
    sim.config = SimConfig(seed=5, azure_variants=True, processing_s=0.2)
    settings = fast_settings(sim.url, provider="azure", auth="api-key", model="gpt-4o-mini-batch")
    line = b'{"custom_id":"a","method":"POST","url":"/chat/completions","body":{"model":"d","max_tokens":5,' \
           b'"messages":[{"role":"user","content":"q"}]}}'
    async with HttpClient(AzureProvider.headers(settings), settings.retry, secret=KEY) as http:
        provider = AzureProvider(settings, http)
        created = await provider.create([line], tag="job-0-chunk-1")
        assert created.raw["status"] == "Validating" and isinstance(created.raw["created_at"], str)
        assert created.state is BatchState.IN_PROGRESS and not created.validated and created.created_at
        assert created.counts == {"total": 0, "completed": 0, "failed": 0}
        assert provider.tag_of(created) == "job-0-chunk-1"
        start = sim.ctx.clock0
        sim.clock = lambda: start + 3600  # an hour on: the batch has ended
        info = await provider.get(created.id)
        assert info.raw["status"] == "Completed" and info.state is BatchState.ENDED and info.ended_at
        blocks = [b async for b in provider.result_blocks(info)]
        assert len(info.results) == 2 and sum(map(len, blocks)) == 1  # the error file is there, and empty


def test_an_unknown_status_is_logged_once_and_read_as_running(caplog):
    settings = fast_settings("https://r.x", provider="azure")
    provider = AzureProvider(settings, None)  # type: ignore[arg-type]  # no call is made
    with caplog.at_level(logging.WARNING, logger="batch_scheduler.providers"):
        states = [provider._info({"id": "batch_1", "status": "Paused"}).state for _ in range(3)]
    assert states == [BatchState.IN_PROGRESS] * 3
    assert [r.getMessage() for r in caplog.records] == [
        "batch batch_1: list answer: status 'Paused' is not one azure documents; read as still running (said once)"]


async def test_a_deployment_that_is_not_a_batch_one_stops_the_job_with_one_line_naming_what_to_set(sim, tmp_path):
    """Azure takes the upload and the create, then fails the batch at validation (`invalid_request`): the
    first such batch seen stops the job, exit 2, naming the deployment, never a retry of every request."""
    from batch_scheduler.job.engine import Engine, ExitCode

    sim.config = SimConfig(seed=5, processing_s=0.2, azure_batch_deployments=["gpt-4o-mini-batch"])
    write_requests(tmp_path / "in.jsonl", 30, model="gpt-4o-mini-standard")
    settings = fast_settings(sim.url, provider="azure", auth="api-key", batch_size=10)
    result = await Engine(settings, str(tmp_path / "out"), [str(tmp_path / "in.jsonl")], quiet=True).run()
    assert result.exit_code == ExitCode.USAGE
    assert result.message.startswith("batch batch_")
    assert result.message.endswith(
        ": the deployment cannot run batches (invalid_request: The deployment 'gpt-4o-mini-standard' is not a batch "
        "deployment: a batch must name a deployment of type Global-Batch or Data Zone Batch.): name a Global-Batch "
        "(or Data Zone Batch) deployment in the lines' model, or --model (AZURE_OPENAI_DEPLOYMENT)")
    assert "\n" not in result.message
