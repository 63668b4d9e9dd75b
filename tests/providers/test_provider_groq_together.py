"""`--provider groq` and `--provider together` as the CLI meets them under the simulator's real faults, and what
Together's missing metadata costs: a lost create is adopted by its input file while the run lives, and a create
sent again without its batch found is counted in the summary."""

from __future__ import annotations

import logging

import orjson
import pytest

from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.job.send import submitter
from batch_scheduler.providers.base import BatchState
from batch_scheduler.providers.openai.like import GroqProvider, TogetherProvider
from batch_scheduler.simulator import SimConfig
from batch_scheduler.simulator.openai.groq import HOST

from ..conftest import KEY, PROVIDERS, fast_settings
from ..helpers import ids_of, read_results, write_requests
from .real_run import run_under_real_faults

CASES = {"groq": ("GROQ_API_KEY", "GROQ_BASE_URL", HOST, "llama-3.1-8b-instant"),
         "together": ("TOGETHER_API_KEY", "TOGETHER_BASE_URL", "", "meta-llama/Llama-3.3-70B-Instruct-Turbo")}


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("BATCH_PROVIDER", *(v for case in CASES.values() for v in case[:2])):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.mark.parametrize("name", list(CASES))
def test_a_job_finishes_exactly_once_under_real_faults_then_status(env, monkeypatch, capsys, name):
    key_env, url_env, host, model = CASES[name]
    run_under_real_faults(env, monkeypatch, capsys, provider=name, model=model, key_env=key_env, url_env=url_env,
                          host=host)


async def test_together_adopts_a_lost_create_by_its_input_file_and_pays_it_once(sim, tmp_path):
    sim.config.lost_create_rate = 0.4
    ids = write_requests(tmp_path / "in.jsonl", 1_000)
    result = await Engine(PROVIDERS["together"].settings(sim.url), str(tmp_path / "out"),
                          [str(tmp_path / "in.jsonl")], quiet=True).run()
    assert result.exit_code == ExitCode.OK, result.message
    assert sorted(ids_of(read_results(str(tmp_path / "out")))) == sorted(ids)
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["batches"]["adopted"] == sim.stats["lost_creates"] > 0
    assert summary["batches"]["resent_unadopted"] == 0 and sim.stats["requests_created"] == 1_000


async def test_a_create_sent_again_without_its_batch_found_is_counted(sim, tmp_path, monkeypatch):
    """Inline batches carry nothing to be found by: each lost create is sent again, and the summary says so."""
    # at 0.4, a chunk lost UNKNOWN_RESENDS + 1 creates in a row in about one run in 60 (0.4 ** 7 a chunk, ten
    # chunks) and the job stopped, resumable, as it should (test_untrusted_answers holds that stop); this test
    # is about the count. Twenty chunks: that no create at all is lost is 0.6 ** 20, under one run in 20,000.
    monkeypatch.setattr(submitter, "UNKNOWN_RESENDS", 40)
    sim.config.lost_create_rate = 0.4
    write_requests(tmp_path / "in.jsonl", 2_000)
    result = await Engine(PROVIDERS["inline"].settings(sim.url), str(tmp_path / "out"),
                          [str(tmp_path / "in.jsonl")], quiet=True).run()
    assert result.exit_code == ExitCode.OK, result.message
    batches = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())["batches"]
    assert batches["resent_unadopted"] == sim.stats["lost_creates"] - batches["adopted"] > 0


@pytest.mark.parametrize("cls, status", [(GroqProvider, "paused"), (TogetherProvider, "QUEUED")])
def test_an_unknown_status_is_logged_once_and_read_as_running(caplog, cls, status):
    provider = cls(fast_settings("https://x", provider=cls.name), None)  # type: ignore[arg-type]  # no call
    with caplog.at_level(logging.WARNING, logger="batch_scheduler.providers"):
        states = [provider._info({"id": "b1", "status": status}).state for _ in range(3)]
    assert states == [BatchState.IN_PROGRESS] * 3
    assert [r.getMessage() for r in caplog.records] == [
        f"batch b1: list answer: status {status!r} is not one {cls.name} documents; read as still running (said once)"]


def test_groq_reads_errors_as_an_array_and_together_its_error_string():
    groq = GroqProvider(fast_settings("https://x", provider="groq"), None)  # type: ignore[arg-type]
    info = groq._info({"id": "b1", "status": "failed", "errors": [{"code": "x", "message": "bad line", "line": 3}]})
    assert info.state is BatchState.FAILED and info.error == "line 3: bad line"
    together = TogetherProvider(fast_settings("https://x", provider="together"), None)  # type: ignore[arg-type]
    info = together._info({"id": "b2", "status": "FAILED", "error": "the file is invalid",
                           "created_at": "2026-01-02T03:04:05Z"})
    assert info.state is BatchState.FAILED and info.error == "the file is invalid" and info.created_at == 1767323045
    assert together.tag_of is not None and together.tag_of(info) is None  # not a file this process uploaded
    assert SimConfig.real_faults().groq_variants and SimConfig.real_faults().together_variants


async def test_together_knows_a_batch_of_a_run_before_a_restart_by_its_input_files_name(sim, tmp_path):
    """Nothing of a Together batch carries the create's tag but its input file, which `create` uploads as
    `{tag}.jsonl`: a new process (the restart after a lost create) lists the batch and reads the tag from the
    file's name, so adoption finds it; a batch whose file has another name is not taken as ours."""
    from batch_scheduler.core.http import HttpClient

    settings = PROVIDERS["together"].settings(sim.url)
    line = orjson.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": "meta-llama/Llama-3.3-70B-Instruct-Turbo", "max_tokens": 5,
                                  "messages": [{"role": "user", "content": "q"}]}})
    async with HttpClient(TogetherProvider.headers(settings), settings.retry, secret=KEY) as http:
        before = TogetherProvider(settings, http)
        ours = await before.create([line], tag="job-0a1b2c-chunk-7")
        stray = await before.create([line], tag="someone-elses-file")
        after = TogetherProvider(settings, http)  # a new process: it uploaded nothing
        assert after.tag_of(ours) is None
        listed = {info.id: info async for info in after.recent(0.0)}
        assert after.tag_of(listed[ours.id]) == "job-0a1b2c-chunk-7"
        assert after.tag_of(listed[stray.id]) is None
