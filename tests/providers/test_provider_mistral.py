"""`--provider mistral` as the CLI meets it under the simulator's real faults, a lost create adopted by the tag its
job keeps in `metadata`, the list walked page by page, and Mistral's job object read field by field."""

from __future__ import annotations

import logging

import orjson
import pytest

import batch_scheduler.providers.openai.listing as listing
from batch_scheduler.core import errors
from batch_scheduler.core.http import HttpClient
from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.providers.base import BatchState
from batch_scheduler.providers.openai.mistral import MistralProvider
from batch_scheduler.simulator.openai.mistral import HOST

from ..conftest import KEY, PROVIDERS, fast_settings
from ..helpers import ids_of, read_results, write_requests
from .real_run import run_under_real_faults

MODEL = "mistral-small-latest"


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("BATCH_PROVIDER", "MISTRAL_API_KEY", "MISTRAL_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def mistral(url: str = "https://x", http=None) -> MistralProvider:
    return MistralProvider(fast_settings(url, provider="mistral"), http)  # type: ignore[arg-type]


def test_a_job_finishes_exactly_once_under_real_faults_then_status(env, monkeypatch, capsys):
    stats = run_under_real_faults(env, monkeypatch, capsys, provider="mistral", model=MODEL,
                                  key_env="MISTRAL_API_KEY", url_env="MISTRAL_BASE_URL", host=HOST)
    assert stats["calls"]["mistral.jobs.create"] >= 12


async def test_a_lost_create_is_adopted_by_its_metadata_tag_and_paid_once(sim, tmp_path):
    sim.config.lost_create_rate = 0.4
    ids = write_requests(tmp_path / "in.jsonl", 1_000)
    result = await Engine(PROVIDERS["mistral"].settings(sim.url), str(tmp_path / "out"),
                          [str(tmp_path / "in.jsonl")], quiet=True).run()
    assert result.exit_code == ExitCode.OK, result.message
    assert sorted(ids_of(read_results(str(tmp_path / "out")))) == sorted(ids)
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["batches"]["adopted"] == sim.stats["lost_creates"] > 0
    assert summary["batches"]["resent_unadopted"] == 0 and sim.stats["requests_created"] == 1_000


async def test_the_list_is_walked_page_by_page_to_the_oldest_job(sim, tmp_path, monkeypatch):
    monkeypatch.setattr(listing, "LIST_LIMIT", 2)
    write_requests(tmp_path / "in.jsonl", 250)
    settings = PROVIDERS["mistral"].settings(sim.url)
    result = await Engine(settings, str(tmp_path / "out"), [str(tmp_path / "in.jsonl")], quiet=True).run()
    assert result.exit_code == ExitCode.OK, result.message
    async with HttpClient(MistralProvider.headers(settings), settings.retry, secret=KEY) as http:
        found = [info.id async for info in mistral(settings.base_url, http).recent(0)]
    made = [b.id for b in sim.store.batches.values()]
    assert found == made[::-1] and len(made) == 3 and sim.stats["lists"] >= 2


def test_an_unknown_status_is_logged_once_and_read_as_running(caplog):
    provider = mistral()
    with caplog.at_level(logging.WARNING, logger="batch_scheduler.providers"):
        states = [provider._info({"id": "j1", "status": "PAUSED"}).state for _ in range(3)]
    assert states == [BatchState.IN_PROGRESS] * 3
    assert [r.getMessage() for r in caplog.records] == [
        "batch j1: list answer: status 'PAUSED' is not one mistral documents; read as still running (said once)"]


def test_the_job_object_is_read_with_its_own_fields():
    info = mistral()._info({"id": "j1", "status": "TIMEOUT_EXCEEDED", "created_at": 100, "completed_at": 200,
                            "total_requests": 5, "succeeded_requests": 3, "failed_requests": 1,
                            "output_file": "f-out", "error_file": "f-err", "metadata": {"batch_scheduler": "t-1"}})
    assert (info.state, info.ended_at, info.results) == (BatchState.ENDED, 200, ["f-out", "f-err"])
    assert info.counts == {"total": 5, "completed": 3, "failed": 1} and info.total == 5
    failed = mistral()._info({"id": "j2", "status": "FAILED", "errors": [{"message": "bad file", "count": 1}]})
    assert failed.state is BatchState.FAILED and failed.error == "bad file" and not failed.validated


def test_a_count_of_another_shape_names_the_job_and_the_field():
    with pytest.raises(errors.BadAnswer, match=r"^batch j1: retrieve answer: total_requests is '5', expected a whole"):
        mistral()._info({"id": "j1", "status": "RUNNING", "total_requests": "5"}, "retrieve answer")
