"""Kill -9 around the priming call, then run again: killed before it, the next run primes (once: the killed
call never reached the provider); killed after it, the next run does not prime again (the ledger's note).
Either way every request is answered once and the rest of the job reads the cache."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.soak import KEY, check_shards

ROOT = Path(__file__).resolve().parents[2]
N = 60
SYSTEM = "You label support tickets by topic. Answer with one word. " * 40

# BEFORE: killed as the priming call is about to go; AFTER: killed as the first batch of the rest is created
KILLER = """
import os, signal, sys
from batch_scheduler.providers.anthropic.provider import AnthropicProvider
WHERE = sys.argv.pop(1)
answer_now, create = AnthropicProvider.answer_now, AnthropicProvider.create

async def killing_answer(self, line, seen):
    if WHERE == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    return await answer_now(self, line, seen)

async def killing_create(self, lines, *, tag):
    if WHERE == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return await create(self, lines, tag=tag)

AnthropicProvider.answer_now, AnthropicProvider.create = killing_answer, killing_create
from batch_scheduler.commands.main import main
sys.exit(main(sys.argv[1:]))
"""


def write_cached(path: str) -> None:
    with open(path, "wb") as f:
        for i in range(N):
            params = {"model": "claude-haiku-4-5", "max_tokens": 16,
                      "system": [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
                      "messages": [{"role": "user", "content": f"ticket {i}"}]}
            f.write(orjson.dumps({"custom_id": f"t-{i:04d}", "params": params}) + b"\n")


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_kill_around_the_priming_call_primes_once_and_answers_every_request_once(tmp_path, where):
    from batch_scheduler.simulator.process import SimulatorProcess

    inp, out = str(tmp_path / "in.jsonl"), str(tmp_path / "out")
    write_cached(inp)
    (tmp_path / "killer.py").write_text(KILLER)
    env = {**os.environ, "ANTHROPIC_API_KEY": KEY, "PYTHONPATH": str(ROOT)}
    with SimulatorProcess(["--seed", "3", "--processing-s", "0.2", "--cache-as-measured"]) as sim:
        args = ["run", inp, "--out", out, "--base-url", str(sim.url), "--batch-size", "30", "--retry-wait", "0",
                "--poll-min", "0.02", "--poll-max", "0.1", "--shards", "2"]
        killed = subprocess.run([sys.executable, str(tmp_path / "killer.py"), where, *args], env=env,
                                capture_output=True, timeout=120)
        assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
        primed_before = sim.stats()["realtime_calls"]
        done = subprocess.run([sys.executable, "-m", "batch_scheduler", *args], env=env, capture_output=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        stats = sim.stats()
    assert primed_before == (0 if where == "before" else 1)
    assert stats["realtime_calls"] == 1  # primed once, whichever run did it
    seen, dups, partial = check_shards(out)
    assert (len(seen), dups, partial) == (N, 0, 0)
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    cache = summary["cache"]
    assert summary["state"] == "done" and cache["primed_prefixes"] == 1
    assert cache["read_tokens"] >= 0.95 * (cache["read_tokens"] + cache["write_tokens"])
