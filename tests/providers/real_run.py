"""A job from the command line against a simulator process with its real faults, as a user of an OpenAI-like
provider runs it: the key and base URL in the variables the provider's SDK reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from batch_scheduler.commands.main import main
from batch_scheduler.simulator.process import SimulatorProcess

from ..conftest import KEY
from ..helpers import ids_of, read_results, write_requests


def run_under_real_faults(env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *,
                          provider: str, model: str, key_env: str, url_env: str, host: str = "") -> dict[str, Any]:
    """`run` of 600 requests exits 0 with each answered once, faults were met, `status` says done and the
    summary priced every model; the simulator's stats, for the provider's own checks."""
    ids = write_requests(str(env / "in.jsonl"), 600)
    with SimulatorProcess(["--faults", "--seed", "23", "--keys", KEY]) as sim:
        monkeypatch.setenv(key_env, KEY)
        monkeypatch.setenv(url_env, sim.url + host)
        code = main(["run", str(env / "in.jsonl"), "--out", str(env / "out"), "--provider", provider, "--model", model,
                     "--batch-size", "50", "--poll-min", "0.02", "--poll-max", "0.1", "--retry-wait", "0",
                     "--max-attempts", "6"])
        stats = sim.stats()
    assert code == 0, capsys.readouterr().err
    got = ids_of(read_results(str(env / "out")))
    assert sorted(got) == sorted(ids) and len(got) == len(set(got))
    assert sum(stats["faults"].values()) > 0
    capsys.readouterr()
    assert main(["status", str(env / "out"), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "done" and status["requests"]["finished"] == 600
    summary = orjson.loads((env / "out" / "summary.json").read_bytes())
    assert summary["cost_usd"] > 0 and summary["unknown_price_models"] == []
    return stats
