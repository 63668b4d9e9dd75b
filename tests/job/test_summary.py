"""summary.json per model: answers, tokens by kind, cost, and the saving against standard prices."""

from __future__ import annotations

import orjson
import pytest

from batch_scheduler.job.engine import Engine
from batch_scheduler.state.ledger.sqlite import Ledger

from ..conftest import fast_settings
from ..helpers import request


async def test_the_summary_accounts_for_each_model_and_the_batch_saving(sim, tmp_path):
    models = ["claude-haiku-4-5", "claude-sonnet-4-5", "claude-haiku-4-5", "no-such-model"]
    with open(tmp_path / "in.jsonl", "wb") as f:
        for i in range(120):
            f.write(orjson.dumps(request(f"q-{i:03d}", "x" * (i % 7 * 40), model=models[i % 4])) + b"\n")
    result = await Engine(fast_settings(sim.url, batch_size=25), str(tmp_path / "out"), [str(tmp_path / "in.jsonl")],
                          quiet=True).run()
    assert result.ok, result.message
    s = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    per = s["models"]
    assert {m: v["requests"] for m, v in per.items()} == {"claude-haiku-4-5": 60, "claude-sonnet-4-5": 30,
                                                           "no-such-model": 30}
    for kind in ("input", "output", "cache_write", "cache_read"):
        assert sum(v["tokens"][kind] for v in per.values()) == s["tokens"][kind]
    assert sum(v["cost_usd"] for v in per.values()) == pytest.approx(s["cost_usd"], abs=2e-6)  # each rounded to 1e-6
    haiku = per["claude-haiku-4-5"]
    expected = (haiku["tokens"]["input"] * 1.0 + haiku["tokens"]["output"] * 5.0) / 1e6  # standard $/M of haiku-4-5
    assert haiku["standard_cost_usd"] == pytest.approx(expected, abs=1e-6)
    assert haiku["cost_usd"] == pytest.approx(expected / 2, abs=1e-6)  # batch: half
    assert haiku["saving_usd"] == pytest.approx(expected / 2, abs=1e-6)
    assert per["no-such-model"]["cost_usd"] == 0 and s["unknown_price_models"] == ["no-such-model"]
    assert s["saving_usd"] == pytest.approx(s["standard_cost_usd"] - s["cost_usd"], abs=2e-6)


async def test_a_ledger_from_before_the_new_options_resumes(sim, tmp_path):
    with open(tmp_path / "in.jsonl", "wb") as f:
        for i in range(30):
            f.write(orjson.dumps(request(f"old-{i}")) + b"\n")
    s = fast_settings(sim.url, batch_size=10)
    out = tmp_path / "out"
    assert (await Engine(s, str(out), [str(tmp_path / "in.jsonl")], quiet=True).run()).ok
    ledger = Ledger(str(out / "ledger.db"))
    meta = ledger.read_meta()
    old = {k: v for k, v in meta["shaping"].items() if k not in ("params", "cache_system", "model_field",
                                                                   "params_field")}
    ledger.write_meta({"shaping": old})  # what the previous version recorded
    ledger.close()
    again = await Engine(s, str(out), [str(tmp_path / "in.jsonl")], quiet=True).run()
    assert (again.exit_code, again.message) == (0, "done")
    changed = await Engine(s.replace(cache_system=True), str(out), [str(tmp_path / "in.jsonl")], quiet=True).run()
    assert changed.exit_code == 2 and "cache_system: was False, now True" in changed.message
