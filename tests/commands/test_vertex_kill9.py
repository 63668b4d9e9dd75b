"""`run --provider vertex` killed with SIGKILL, then run again: every request once, no partial line, and no
staged file left behind. The kills land at the two points Vertex adds (between an input file's upload
and its job's create; while a job's output files are read) and at random moments with the real faults on."""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from google.auth.exceptions import GoogleAuthError
from google.auth.transport.requests import Request
from google.oauth2 import service_account as sa

from batch_scheduler.simulator.process import SimulatorProcess
from tests.soak import check_shards

from ..gcp import BUCKET, PROJECT, service_account

ROOT = Path(__file__).resolve().parents[2]
CLAUDE = "claude-haiku-4-5@20251001"
GEMINI = "gemini-2.5-flash"
N = 300

# SIGKILL at one exact point in the child: right after the first upload returns (its create not sent),
# or right after the first block of the first output file is handed to the collector
KILLER = """
import os, signal, sys
from batch_scheduler.providers.google import gcs
upload, lines = gcs.Storage.upload, gcs.Storage.lines

async def upload_then_die(self, bucket, name, data):
    await upload(self, bucket, name, data)
    if sys.argv[1] == "after-upload":
        os.kill(os.getpid(), signal.SIGKILL)

async def lines_then_die(self, bucket, name):
    async for block in lines(self, bucket, name):
        yield block
        if sys.argv[1] == "while-reading":
            os.kill(os.getpid(), signal.SIGKILL)

gcs.Storage.upload, gcs.Storage.lines = upload_then_die, lines_then_die
from batch_scheduler.commands.main import main
sys.exit(main(sys.argv[2:]))
"""


def write_input(tmp: Path, family: str) -> tuple[Path, list[str]]:
    """rows.csv for a --template (Claude), or Gemini request lines."""
    if family == "claude":
        path = tmp / "rows.csv"
        path.write_text("id,q\n" + "".join(f"row-{i:04d},question {i}\n" for i in range(N)))
        return path, ["--template", "Answer: {q}", "--max-tokens", "32", "--id-field", "id", "--model", CLAUDE]
    path = tmp / "in.jsonl"
    path.write_text("".join(json.dumps({"custom_id": f"row-{i:04d}", "request": {
        "contents": [{"role": "user", "parts": [{"text": f"question {i}"}]}]}}) + "\n" for i in range(N)))
    return path, ["--model", GEMINI]


def staged(sim_url: str, credentials: str) -> list[str]:
    """The objects left in the staging bucket, read through the simulator's Cloud Storage API."""
    creds = sa.Credentials.from_service_account_file(credentials, scopes=["https://www.googleapis.com/auth/cloud-platform"])
    for _ in range(20):  # the simulator's real faults answer this check too: a failed call is asked again
        try:
            if not creds.valid:
                creds.refresh(Request())
            req = urllib.request.Request(f"{sim_url}/storage/v1/b/{BUCKET}/o?prefix=jobs/",
                                         headers={"authorization": f"Bearer {creds.token}"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                return [item["name"] for item in json.loads(resp.read()).get("items", [])]
        except urllib.error.HTTPError as err:  # 409 ABORTED is one of the faults Google's storage answers
            if err.code not in (409, 429, 500, 502, 503, 504, 529):
                raise
        except (urllib.error.URLError, ConnectionError, http.client.HTTPException, GoogleAuthError):
            pass  # a dropped call, also one of the faults
    raise AssertionError("the staging bucket could not be listed in 20 tries")


def setup(tmp: Path, sim_url: str, family: str) -> tuple[list[str], dict[str, str], str]:
    inp, extra = write_input(tmp, family)
    credentials = service_account(tmp / "sa.json", sim_url)
    env = {**os.environ, "GOOGLE_APPLICATION_CREDENTIALS": credentials, "GOOGLE_CLOUD_PROJECT": PROJECT,
           "GOOGLE_VERTEX_BASE_URL": sim_url, "STORAGE_EMULATOR_HOST": sim_url, "PYTHONPATH": str(ROOT)}
    args = ["run", str(inp), "--out", str(tmp / "out"), "--provider", "vertex", "--staging", f"gs://{BUCKET}/jobs",
            "--batch-size", "50", "--poll-min", "0.02", "--poll-max", "0.1", "--retry-wait", "0", "--shards", "4",
            "--max-attempts", "6", *extra]
    return args, env, credentials


def finish_and_check(tmp: Path, sim: SimulatorProcess, args: list[str], env: dict[str, str], credentials: str) -> None:
    done = subprocess.run([sys.executable, "-m", "batch_scheduler", *args], env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    seen, dups, partial = check_shards(str(tmp / "out"))
    assert (len(seen), dups, partial) == (N, 0, 0)
    assert seen == {f"row-{i:04d}" for i in range(N)}
    assert staged(str(sim.url), credentials) == []
    for command in (["status", str(tmp / "out")], ["export", str(tmp / "out"), "-o", str(tmp / "all.jsonl")]):
        shown = subprocess.run([sys.executable, "-m", "batch_scheduler", *command], env=env, capture_output=True,
                               timeout=120)
        assert shown.returncode == 0, shown.stderr.decode()[-2000:]
    assert len((tmp / "all.jsonl").read_text().splitlines()) == N


@pytest.mark.parametrize("point", ["after-upload", "while-reading"])
@pytest.mark.parametrize("family", ["claude", "gemini"])
def test_a_kill_at_a_vertex_point_loses_nothing_and_repeats_nothing(tmp_path, family, point):
    (tmp_path / "killer.py").write_text(KILLER)
    with SimulatorProcess(["--seed", "3", "--processing-s", "0.2"]) as sim:
        args, env, credentials = setup(tmp_path, str(sim.url), family)
        killed = subprocess.run([sys.executable, str(tmp_path / "killer.py"), point, *args], env=env,
                                capture_output=True, timeout=120)
        assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
        if point == "after-upload":
            assert sim.stats()["uploads"] == 1 and sim.stats()["creates"] == 0
        finish_and_check(tmp_path, sim, args, env, credentials)


@pytest.mark.parametrize("family", ["claude", "gemini"])
def test_random_sigkills_with_the_real_faults_lose_nothing_and_repeat_nothing(tmp_path, family):
    rng = random.Random(17)
    with SimulatorProcess(["--faults", "--seed", "5", "--processing-s", "0.5"]) as sim:
        args, env, credentials = setup(tmp_path, str(sim.url), family)
        kills = 0
        while kills < 6:
            proc = subprocess.Popen([sys.executable, "-m", "batch_scheduler", *args], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                code = proc.wait(timeout=rng.uniform(0.8, 2.0))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                continue
            assert code == 0
            break
        finish_and_check(tmp_path, sim, args, env, credentials)
