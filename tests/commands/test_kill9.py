"""Kill -9 at random points, at least 20 times, then finish: exactly once, nothing partial, paid once."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.soak import KEY, check_shards, soak, write_input

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("provider", ["anthropic", "azure"])
def test_twenty_sigkills_lose_nothing_and_repeat_nothing(tmp_path, provider):
    r = soak(kills=20, requests=4_000, seed=11, workdir=str(tmp_path), processing_s=2.5, batch_size=100,
             provider=provider)
    assert r.kills == 20, "the job finished before it could be killed 20 times"
    assert r.exit_code == 0
    assert r.unique == r.expected
    assert r.duplicates == 0
    assert r.partial_lines == 0
    assert r.overpaid <= 0.05, (r.paid, r.retried)


BEDROCK_CLAUDE = "anthropic.claude-3-5-haiku-20241022-v1:0"


def test_twenty_sigkills_of_a_bedrock_job_lose_nothing_and_repeat_nothing(tmp_path):
    from tests.cluster.servers import MotoServer

    with MotoServer() as moto:
        env = {"AWS_ACCESS_KEY_ID": "AKIDSOAK", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_ENDPOINT_URL_S3": moto.endpoint}
        run_args = ("--provider", "bedrock", "--model", BEDROCK_CLAUDE, "--role-arn", "arn:aws:iam::123456789012:role/b",
                    "--staging", f"s3://{moto.new_bucket()}/soak")
        r = soak(kills=20, requests=4_000, seed=11, workdir=str(tmp_path), processing_s=2.5, batch_size=100, model=None,
                 run_args=run_args, env=env, sim_config={"bedrock_s3_endpoint": moto.endpoint})
    assert r.kills == 20, "the job finished before it could be killed 20 times"
    assert r.exit_code == 0
    assert r.unique == r.expected
    assert r.duplicates == 0
    assert r.partial_lines == 0
    # paid: each retry batch under Bedrock's floor of 100 is filled up with cheap copies (max_tokens 1)
    assert r.overpaid <= 0.5, (r.paid, r.retried)


def test_sigkills_lose_nothing_and_repeat_nothing_with_gemini(tmp_path):
    """The same under Gemini Batch Mode (creates adopted by displayName, results inline, expired batches)."""
    r = soak(kills=10, requests=2_000, seed=13, workdir=str(tmp_path), processing_s=2.5, batch_size=100,
             provider="gemini")
    assert r.kills == 10, "the job finished before it could be killed 10 times"
    assert r.exit_code == 0
    assert r.unique == r.expected
    assert r.duplicates == 0
    assert r.partial_lines == 0
    assert r.overpaid <= 0.05, (r.paid, r.retried)


# A kill -9 at the one point where a batch is collected but its missing requests are not yet queued:
# the shard lines are fsync'd and the ledger transaction that records the batch (and parks the requests
# its results left out) has not run, or has just run. The kill is placed there exactly by wrapping that
# one ledger call in the child process; nothing else about the run is changed.
KILLER = """
import os, signal, sys
from batch_scheduler.state.ledger.sqlite import Ledger
record_collected = Ledger.record_collected

async def killing(self, chunk_id, **kw):
    missing = any(p[4] is None for p in kw["park"])  # a request the results left out is parked here
    if missing and sys.argv[1] == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    await record_collected(self, chunk_id, **kw)
    if missing and sys.argv[1] == "after":
        os.kill(os.getpid(), signal.SIGKILL)

Ledger.record_collected = killing
from batch_scheduler.commands.main import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_kill_between_collecting_a_batch_and_queueing_its_missing_requests_loses_nothing(tmp_path, when):
    from batch_scheduler.simulator.process import SimulatorProcess

    inp, out = str(tmp_path / "in.jsonl"), str(tmp_path / "out")
    write_input(inp, 300)
    (tmp_path / "killer.py").write_text(KILLER)
    env = {**os.environ, "ANTHROPIC_API_KEY": KEY, "PYTHONPATH": str(ROOT)}
    with SimulatorProcess(["--missing-rate", "0.05", "--seed", "3"]) as sim:
        args = ["run", inp, "--out", out, "--base-url", str(sim.url), "--batch-size", "100", "--poll-min", "0.01",
                "--poll-max", "0.05", "--retry-wait", "0", "--shards", "4"]
        killed = subprocess.run([sys.executable, str(tmp_path / "killer.py"), when, *args], env=env,
                                capture_output=True, timeout=120)
        assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
        done = subprocess.run([sys.executable, "-m", "batch_scheduler", *args], env=env, capture_output=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        stats = sim.stats()
    seen, dups, partial = check_shards(out)
    assert (len(seen), dups, partial) == (300, 0, 0)
    assert seen == {f"soak-{i:07d}" for i in range(300)}
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["state"] == "done" and summary["requests"]["missing_from_results"] > 0
    assert stats["missing_results"] >= summary["requests"]["missing_from_results"]
