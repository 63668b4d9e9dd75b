"""One owner per output, in every mode (issue 22 rows 2 and 3): a job claims its output before it writes
anything there (OUT/_owner.json, put once); an output that is another job's, finished or not, or that
holds a local run, is refused before anything is paid, and nothing of it is touched."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections import Counter

import obstore
import pytest
from obstore.store import S3Store

import batch_scheduler
from batch_scheduler.cluster.queue import Queue
from batch_scheduler.core import errors
from batch_scheduler.simulator.process import SimulatorProcess
from batch_scheduler.state.ledger import pg
from batch_scheduler.state.object_shards import collect_garbage
from batch_scheduler.state.objects import LocalObjects

from ..conftest import KEY
from ..helpers import ids_of, read_results, write_requests
from .helpers import bucket_lines, queue_job
from .test_node import (
    FAST,
    check_out,
    node,  # noqa: F401 - the fixture: a node allowed the test's directory
)

pytestmark = pytest.mark.timeout(120)


async def until_settled(url: str, name: str) -> dict:
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        q = Queue(url)
        try:
            jobs = {j["name"]: j for j in await asyncio.to_thread(q.status)}
        finally:
            await asyncio.to_thread(q.close)
        if jobs.get(name, {}).get("state") in ("done", "failed", "cancelled"):
            return jobs[name]
        assert asyncio.get_running_loop().time() < deadline, jobs
        await asyncio.sleep(0.05)


def files_of(out: str) -> dict[str, bytes]:
    found = {}
    for root, _, names in os.walk(out):
        for n in names:
            with open(os.path.join(root, n), "rb") as f:
                found[os.path.relpath(os.path.join(root, n), out)] = f.read()
    return found


@pytest.mark.usefixtures("node")
async def test_a_second_job_on_a_finished_jobs_output_is_refused_and_its_objects_stay(pg_url, sim, tmp_path):
    inp, out = str(tmp_path / "a.jsonl"), str(tmp_path / "shared")
    ids = write_requests(inp, 120, prefix="a")
    await asyncio.to_thread(queue_job, pg_url, "ja", [inp], out, FAST)
    assert (await until_settled(pg_url, "ja"))["state"] == "done"
    before, created = files_of(out), sim.stats["requests_created"]
    with pytest.raises(errors.UsageError, match=r"^--out .*/shared belongs to job 'ja', which is done: an output "
                                                r"is never reused, not even a finished one; choose another --out$"):
        await asyncio.to_thread(queue_job, pg_url, "jb", [inp], out, FAST)
    # another spelling of the same place passes the queue's check; the owner record in OUT refuses it
    await asyncio.to_thread(queue_job, pg_url, "jc", [inp], out + "/.", FAST)
    settled = await until_settled(pg_url, "jc")
    assert settled["state"] == "failed"
    assert settled["reason"] == (f"{out}/. belongs to job 'ja' (its owner record _owner.json); a job never writes "
                                 f"into another's output: choose another --out")
    assert files_of(out) == before and sim.stats["requests_created"] == created  # untouched, nothing paid
    check_out(out, "ja", ids)


@pytest.mark.usefixtures("node")
async def test_a_cluster_job_on_a_directory_holding_a_local_run_is_refused_and_cleans_nothing(
        pg_url, sim, tmp_path, monkeypatch):
    inp, out = str(tmp_path / "in.jsonl"), str(tmp_path / "local-run")
    ids = write_requests(inp, 60, prefix="loc")
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    assert (await batch_scheduler.arun(inp, out, base_url=sim.url, poll_min=0.02, poll_max=0.1)).exit_code == 0
    os.remove(os.path.join(out, "_owner.json"))  # a local run made before owner records: its ledger says it all
    before, created = files_of(out), sim.stats["requests_created"]
    await asyncio.to_thread(queue_job, pg_url, "intruder", [inp], out, FAST)
    settled = await until_settled(pg_url, "intruder")
    assert settled["state"] == "failed"
    assert settled["reason"].startswith(f"{out} holds another job's files (job.lock, ledger.db, rejected.jsonl, "
                                        f"...) and no owner record of this job: it is not used, and nothing of it "
                                        f"is touched"), settled["reason"]
    assert files_of(out) == before and sim.stats["requests_created"] == created
    assert sorted(ids_of(read_results(out))) == ids


def test_six_concurrent_submits_to_one_output_accept_exactly_one(pg_url, tmp_path):
    pg.ensure_schema(pg_url)
    start = threading.Barrier(6)
    got: list[str] = []

    def submit(i: int) -> None:
        q = Queue(pg_url)
        try:
            start.wait()
            q.submit(f"job-{i}", {"inputs": ["s3://b/in.jsonl"], "out": "s3://b/one", "options": {}})
            got.append("accepted")
        except errors.UsageError as err:
            got.append(str(err).split(",")[0])
        finally:
            q.close()
    threads = [threading.Thread(target=submit, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert Counter(got)["accepted"] == 1, got
    assert [g.startswith("--out s3://b/one belongs to job 'job-") for g in got].count(True) == 5, got


def test_two_runs_on_one_bucket_output_from_two_state_directories_the_second_is_refused_paid_once(
        s3, tmp_path):
    bucket = s3.new_bucket()
    inp = tmp_path / "in.jsonl"
    ids = write_requests(str(inp), 200, prefix="two")
    out = f"s3://{bucket}/r"
    with SimulatorProcess(["--processing-s", "0.5"]) as sim:
        argv = [sys.executable, "-m", "batch_scheduler", "run", str(inp), "--out", out, "--base-url", sim.url,
                "--batch-size", "50", "--poll-min", "0.02", "--poll-max", "0.1"]
        procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, **s3.env(), "ANTHROPIC_API_KEY": KEY,
                                       "XDG_STATE_HOME": str(tmp_path / f"state-{i}")}) for i in (1, 2)]
        ends = [(p.wait(60), p.communicate()[1]) for p in procs]
        paid = sim.stats()["requests_created"]
    assert sorted(code for code, _ in ends) == [0, 2], ends
    refused = next(err for code, err in ends if code == 2)
    assert refused == (f"batch-scheduler: {out} belongs to job '{out}' (its owner record _owner.json); a job never "
                       f"writes into another's output: choose another --out\n")
    assert paid == 200
    lines, listed, manifest = bucket_lines(S3Store(bucket), "r")
    assert Counter(r["custom_id"] for r in lines) == Counter(ids) and manifest["objects"] == listed
    owner = json.loads(bytes(obstore.get(S3Store(bucket), "r/_owner.json").bytes()))
    assert owner["job"] == out


async def test_the_clean_up_deletes_only_what_this_job_wrote(tmp_path):
    objects = LocalObjects(str(tmp_path))
    for key in ("results/aaaaaaaaaaaaaaaa-c1-000001-shard-00000.jsonl",  # this job's, listed
                "results/aaaaaaaaaaaaaaaa-c2-000001-shard-00000.jsonl",  # this job's, listed nowhere: a cut upload
                "results/bbbbbbbbbbbbbbbb-c1-000001-shard-00000.jsonl",  # another job's
                "results/shard-00000.jsonl"):  # a local run's
        await objects.put(key, b"x\n")
    gone = await collect_garbage(objects, {"results/aaaaaaaaaaaaaaaa-c1-000001-shard-00000.jsonl"}, "a" * 32)
    assert gone == ["results/aaaaaaaaaaaaaaaa-c2-000001-shard-00000.jsonl"]
    assert [o.key for o in await objects.list()] == ["results/aaaaaaaaaaaaaaaa-c1-000001-shard-00000.jsonl",
                                                      "results/bbbbbbbbbbbbbbbb-c1-000001-shard-00000.jsonl",
                                                      "results/shard-00000.jsonl"]


# A process killed -9 in the middle of a write-once put into a shared directory: after the temporary is
# written and fsync'd, at its link into place, or once linked, at its removal. What the scenario test
# with random kills (test_scenarios.py) met now and then: one `KEY.tmp-RANDOM` under results/ that no
# listing showed, so no clean-up removed it and the finished output held a file its manifest does not list.
KILLED_PUT = """
import asyncio, os, signal, sys
from batch_scheduler.state.objects import LocalObjects
out, key, step = sys.argv[1:]
real = getattr(os, step)
def killed(*args, **kwargs):
    if step == "link" or ".tmp-" in str(args[0]):
        os.kill(os.getpid(), signal.SIGKILL)  # the kill -9 lands at this exact step of the put
    return real(*args, **kwargs)
setattr(os, step, killed)
asyncio.run(LocalObjects(out).put_once(key, b'{"custom_id": "a"}\\n'))
"""


def put_killed_at(out: str, key: str, step: str) -> None:
    child = subprocess.run([sys.executable, "-c", KILLED_PUT, out, key, step], timeout=60, capture_output=True)
    assert child.returncode == -9, child.stderr.decode()


@pytest.mark.parametrize("step", ["link", "unlink"])
async def test_a_put_killed_mid_way_leaves_nothing_the_finished_output_does_not_list(tmp_path, step):
    out = str(tmp_path / "out")
    objects = LocalObjects(out)
    listed = "results/aaaaaaaaaaaaaaaa-c1-000001-shard-00000.jsonl"
    await objects.put_once(listed, b'{"custom_id": "b"}\n')
    await asyncio.to_thread(put_killed_at, out, "results/aaaaaaaaaaaaaaaa-c2-000001-shard-00001.jsonl", step)
    await asyncio.to_thread(put_killed_at, out, "results/bbbbbbbbbbbbbbbb-c1-000001-shard-00000.jsonl", step)
    others = sorted(f"results/{n}" for n in os.listdir(os.path.join(out, "results")) if n.startswith("b"))
    assert [k for k in others if ".tmp-" in k], others  # the kill left the other job's temporary too
    gone = await collect_garbage(objects, {listed}, "a" * 32)  # this job's clean-up, as it finishes
    assert gone and all(k.startswith("results/aaaaaaaaaaaaaaaa-c2-000001-shard-00001.jsonl") for k in gone)
    assert sorted(f"results/{n}" for n in os.listdir(os.path.join(out, "results"))) == [listed, *others]


async def test_the_temporaries_of_outs_own_files_a_kill_left_are_removed_when_the_job_finishes(tmp_path):
    out = str(tmp_path / "out")
    objects = LocalObjects(out)
    await objects.put("summary.json", b"{}")
    for name in ("summary.json", "_manifest.json", "rejected.jsonl", "_owner.json", "notes.txt"):
        with open(os.path.join(out, f"{name}.tmp-0badf00d"), "wb") as f:  # as a kill between write and rename
            f.write(b"partial")
    gone = await collect_garbage(objects, set(), "a" * 32)
    assert sorted(gone) == [f"{n}.tmp-0badf00d" for n in ("_manifest.json", "_owner.json", "rejected.jsonl",
                                                             "summary.json")]
    assert sorted(os.listdir(out)) == ["notes.txt.tmp-0badf00d", "summary.json"]  # not ours to judge: kept
