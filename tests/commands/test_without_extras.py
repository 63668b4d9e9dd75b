"""Today's suite without the cluster extra: with psycopg and obstore (and pyarrow) not importable, a local
job runs as before, and only the cluster's own commands say what to install."""

from __future__ import annotations

import os
import subprocess
import sys

from batch_scheduler.simulator.process import SimulatorProcess

from ..conftest import KEY
from ..helpers import ids_of, read_results, write_requests

# the CLI in a process where the optional packages cannot be imported, as after `pip install batch-scheduler`
WITHOUT_EXTRAS = ("import sys, runpy; sys.modules.update(psycopg=None, obstore=None, pyarrow=None); "
                  "sys.argv[0] = 'batch-scheduler'; runpy.run_module('batch_scheduler', run_name='__main__')")


def cli(*args: str, cwd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANTHROPIC_API_KEY": KEY}
    return subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS, *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_without_the_cluster_extra_a_local_job_runs_and_the_cluster_commands_name_the_extra(tmp_path):
    ids = write_requests(tmp_path / "in.jsonl", 300)
    with SimulatorProcess(["--keys", KEY, "--processing-s", "0.1"]) as sim:
        done = cli("run", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out"), "--base-url", sim.url,
                   "--batch-size", "100", "--poll-min", "0.05", "--poll-max", "0.2", cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert sorted(ids_of(read_results(str(tmp_path / "out")))) == sorted(ids)
    status = cli("status", str(tmp_path / "out"), cwd=str(tmp_path))
    assert status.returncode == 0, status.stderr
    refused = cli("submit", str(tmp_path / "in.jsonl"), "--ledger", "postgresql://u@127.0.0.1:1/db", "--name", "j",
                  "--out", str(tmp_path / "o2"), cwd=str(tmp_path))
    assert refused.returncode == 2, refused.stderr
    assert "pip install 'batch-scheduler[cluster]'" in refused.stderr
    bucket = cli("run", str(tmp_path / "in.jsonl"), "--out", "s3://bucket/x", cwd=str(tmp_path))
    assert bucket.returncode == 2, bucket.stderr
    assert "batch-scheduler[cluster]" in bucket.stderr, bucket.stderr


WITHOUT_BOTOCORE = ("import sys, runpy; sys.modules.update(botocore=None); "
                    "sys.argv[0] = 'batch-scheduler'; runpy.run_module('batch_scheduler', run_name='__main__')")


def test_without_the_bedrock_extra_a_bedrock_job_names_the_extra_before_anything_is_sent(tmp_path):
    write_requests(tmp_path / "in.jsonl", 120)
    args = ["run", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out"), "--provider", "bedrock",
            "--model", "claude-sonnet-4-5", "--role-arn", "arn:aws:iam::123456789012:role/b",
            "--staging", "s3://bucket/prefix", "--base-url", "http://127.0.0.1:9"]
    done = subprocess.run([sys.executable, "-c", WITHOUT_BOTOCORE, *args], env=dict(os.environ), cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--provider bedrock needs botocore: pip install 'batch-scheduler[bedrock]'" in done.stderr
