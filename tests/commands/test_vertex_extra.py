"""Without the vertex extra (google-auth not importable), `--provider vertex` says what to install, exit 2,
before anything is sent."""

from __future__ import annotations

import os
import subprocess
import sys

from batch_scheduler.simulator.process import SimulatorProcess

from ..gcp import BUCKET, PROJECT, service_account
from ..helpers import write_requests

WITHOUT_GOOGLE_AUTH = ("import sys, runpy; sys.modules.update({'google.auth': None, 'google.oauth2': None}); "
                       "sys.argv[0] = 'batch-scheduler'; runpy.run_module('batch_scheduler', run_name='__main__')")


def test_without_the_vertex_extra_a_vertex_run_names_the_extra_and_sends_nothing(tmp_path):
    write_requests(tmp_path / "in.jsonl", 10)
    with SimulatorProcess(["--seed", "1"]) as sim:
        env = {**os.environ, "GOOGLE_APPLICATION_CREDENTIALS": service_account(tmp_path / "sa.json", str(sim.url))}
        done = subprocess.run([sys.executable, "-c", WITHOUT_GOOGLE_AUTH, "run", str(tmp_path / "in.jsonl"), "--out",
                               str(tmp_path / "out"), "--provider", "vertex", "--base-url", str(sim.url),
                               "--storage-url", str(sim.url), "--project", PROJECT, "--staging", f"gs://{BUCKET}/j",
                               "--model", "claude-haiku-4-5"], env=env, cwd=str(tmp_path), capture_output=True,
                              text=True, timeout=120)
        stats = sim.stats()
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == ("batch-scheduler: --provider vertex needs google-auth: "
                                                    "pip install 'batch-scheduler[vertex]'")
    assert stats["calls"] == {} and stats.get("tokens_issued", 0) == 0
