"""`resume DIR` and `cancel DIR` send the key only where it is configured to go, never just where a ledger says."""

from __future__ import annotations

import os

import pytest

from batch_scheduler.commands.main import main
from batch_scheduler.simulator.process import SimulatorProcess

from ..helpers import write_requests

KEY = "sk-ledger-url-key-42"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    for name in ("CLAUDE_API_KEY", "ANTHROPIC_BASE_URL", "CLAUDE_BASE_URL", "BATCH_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def calls(sim: SimulatorProcess) -> int:
    return sum(sim.stats()["calls"].values())


def test_a_base_url_read_from_the_ledger_needs_the_configuration_or_a_flag(env, monkeypatch, capsys):
    write_requests(env / "in.jsonl", 30)
    out = str(env / "out")
    with SimulatorProcess() as sim:
        url = sim.url
        assert main(["run", str(env / "in.jsonl"), "--out", out, "--base-url", url, "--poll-min", "0.02",
                     "--poll-max", "0.1"]) == 0
        before = calls(sim)
        capsys.readouterr()
        refusal = (f"batch-scheduler: {out} was run against {url}, but the key is configured for "
                   f"https://api.anthropic.com; it is only sent where it is configured to go. If {url} is right, "
                   f"set ANTHROPIC_BASE_URL to it, give --base-url {url}, or add --trust-ledger-url")
        for command in ("resume", "cancel"):
            assert main([command, out]) == 2
            assert capsys.readouterr().err.strip() == refusal
        assert calls(sim) == before, "nothing was sent anywhere"
        assert main(["resume", out, "--trust-ledger-url"]) == 0
        assert main(["resume", out, "--base-url", url]) == 0
        monkeypatch.setenv("ANTHROPIC_BASE_URL", url + "/")  # configured to go there: no flag needed
        assert main(["resume", out]) == 0
        assert main(["cancel", out]) == 0
        monkeypatch.delenv("ANTHROPIC_BASE_URL")
        assert main(["cancel", out, "--trust-ledger-url"]) == 0


def test_header_values_are_not_kept_in_the_ledger_and_resume_asks_for_them(env, monkeypatch, capsys):
    secret = "s3cret-proxy-token-000111"
    write_requests(env / "in.jsonl", 20)
    out = str(env / "out")
    with SimulatorProcess() as sim:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", sim.url)
        assert main(["run", str(env / "in.jsonl"), "--out", out, "--header", f"X-Proxy-Token: {secret}",
                     "--header", "Bypass-Middleware: true", "--poll-min", "0.02", "--poll-max", "0.1"]) == 0
        for root, _, files in os.walk(out):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    assert secret.encode() not in f.read(), name
        capsys.readouterr()
        assert main(["resume", out]) == 2
        assert capsys.readouterr().err.strip() == (
            f"batch-scheduler: {out} was run with the header(s) X-Proxy-Token, Bypass-Middleware, whose values the "
            f"ledger does not keep: give them again, e.g. --header 'X-Proxy-Token: VALUE'")
        assert main(["resume", out, "--header", f"X-Proxy-Token: {secret}", "--header", "Bypass-Middleware: true"]) == 0
