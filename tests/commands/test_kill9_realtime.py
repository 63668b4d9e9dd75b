"""Kill -9 in the middle of a realtime burst, then run again: every request answered once in the output,
and the calls whose answers the killed run never recorded counted as possibly paid."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson

from tests.soak import KEY, check_shards, write_input

ROOT = Path(__file__).resolve().parents[2]

# The kill is placed inside the burst: after the 25th realtime answer arrives, before it is recorded.
KILLER = """
import os, signal, sys
from batch_scheduler.providers.anthropic.provider import AnthropicProvider
answer_now = AnthropicProvider.answer_now
calls = 0

async def killing(self, line, seen):
    global calls
    got = await answer_now(self, line, seen)
    calls += 1
    if calls == 25:
        os.kill(os.getpid(), signal.SIGKILL)
    return got

AnthropicProvider.answer_now = killing
from batch_scheduler.commands.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_kill_during_a_realtime_burst_resumes_with_every_request_answered_once(tmp_path):
    from batch_scheduler.simulator.process import SimulatorProcess

    inp, out = str(tmp_path / "in.jsonl"), str(tmp_path / "out")
    write_input(inp, 120)
    (tmp_path / "killer.py").write_text(KILLER)
    env = {**os.environ, "ANTHROPIC_API_KEY": KEY, "PYTHONPATH": str(ROOT)}
    with SimulatorProcess(["--seed", "3", "--realtime-latency-s", "0.01"]) as sim:
        args = ["run", inp, "--out", out, "--base-url", str(sim.url), "--mode", "realtime", "--batch-size", "40",
                "--realtime-concurrency", "8", "--retry-wait", "0", "--shards", "4"]
        killed = subprocess.run([sys.executable, str(tmp_path / "killer.py"), *args], env=env,
                                capture_output=True, timeout=120)
        assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
        done = subprocess.run([sys.executable, "-m", "batch_scheduler", *args], env=env, capture_output=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        stats = sim.stats()
    seen, dups, partial = check_shards(out)
    assert (len(seen), dups, partial) == (120, 0, 0)
    assert seen == {f"soak-{i:07d}" for i in range(120)}
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["state"] == "done" and stats["creates"] == 0
    lost = summary["realtime"]["possibly_paid"]  # every request of a chunk noted but not collected: a bound
    assert summary["realtime"]["requests"] == 120
    assert 120 + 25 <= stats["realtime_calls"] <= 120 + lost
