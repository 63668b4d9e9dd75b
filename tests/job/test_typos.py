"""Costly typos are caught before anything is sent: an unknown model, a misspelt option, a dry run of nothing."""

from __future__ import annotations

import pytest

import batch_scheduler
from batch_scheduler.commands.main import main
from batch_scheduler.core.errors import UsageError
from batch_scheduler.job.money.models import did_you_mean

from ..helpers import write_requests

FAST = dict(poll_min=0.01, poll_max=0.05, batch_size=50, shards=4, api_key="sk-typos-test")
ROWS = [{"q": f"question {i}"} for i in range(5)]


async def test_an_unknown_model_is_refused_with_the_closest_known_names(sim, tmp_path):
    with pytest.raises(UsageError) as err:
        await batch_scheduler.arun(ROWS, tmp_path / "out", base_url=sim.url, template="{q}", model="claude-haiku-4.5",
                                   max_tokens=10, **FAST)
    assert str(err.value) == ("--model 'claude-haiku-4.5': no price table knows this model; did you mean "
                              "'claude-haiku-4-5' or 'claude-haiku-5-5' or 'claude-3-haiku'? Give --allow-unknown-model to send it anyway "
                              "(or its price with --prices FILE); nothing was sent")
    assert sim.stats["creates"] == 0 and not (tmp_path / "out").exists()
    sent = await batch_scheduler.arun(ROWS, tmp_path / "out", base_url=sim.url, template="{q}", model="my-proxy-model",
                                      max_tokens=10, allow_unknown_model=True, **FAST)
    assert sent.ok and sim.stats["creates"] == 1


def test_the_cli_refuses_an_unknown_model_and_a_dated_snapshot_is_known(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-typos-test")
    write_requests(tmp_path / "in.jsonl", 2)
    assert main(["run", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out"), "--model", "gtp-4o"]) == 2
    assert capsys.readouterr().err == ("batch-scheduler: --model 'gtp-4o': no price table knows this model; did you "
                                       "mean 'gpt-4o' or 'gpt-4' or 'gpt-5.4'? Give --allow-unknown-model to send it anyway (or its price "
                                       "with --prices FILE); nothing was sent\n")
    assert not (tmp_path / "out").exists()


def test_an_unknown_cli_option_says_the_closest_names(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out"), "--dryrun", "--zzz"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == ("batch-scheduler: error: unrecognized arguments: --dryrun --zzz "
                                                        "(--dryrun: did you mean --dry-run?)")


def test_did_you_mean_names_nothing_when_nothing_is_close():
    assert did_you_mean("max_token", ["max_tokens", "max_cost"]) == "; did you mean 'max_tokens'?"
    assert did_you_mean("zzz", ["max_tokens"]) == ""


def test_a_dry_run_that_would_send_nothing_is_not_ok(tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text('"not a request"\n')
    result = batch_scheduler.run(tmp_path / "in.jsonl", tmp_path / "out", dry_run=True)
    assert (result.ok, result.exit_code, result.message) == (False, 1, "dry run: a run would send nothing (all 1 "
                                                                       "line(s) rejected)")
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["run", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "o2"), "--dry-run"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == "batch-scheduler: a run would send nothing (the input holds " \
                                                       "no request)"
