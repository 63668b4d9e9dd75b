"""Object storage: inputs read with ranged GETs from a bucket, results as write-once objects in a bucket,
through a fault proxy that answers 503, resets connections mid-PUT and stores objects but answers 500."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter

import obstore
import pytest
from obstore.store import S3Store

from batch_scheduler.cluster.node import Node, NodeConfig
from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.state.objects import BucketObjects, InputChanged, ObjectExists, RangeReader

from ..conftest import KEY, fast_settings
from ..daemon.helpers import until
from ..helpers import write_requests
from .faultproxy import FaultProxy
from .helpers import bucket_lines, queue_job
from .test_node import FAST, NODE_FAST, states


async def test_a_job_from_a_bucket_to_a_bucket_through_s3_faults_is_exactly_once(pg_url, sim, s3, tmp_path,
                                                                                  monkeypatch):
    bucket = s3.new_bucket()
    store = S3Store(bucket)
    local = tmp_path / "in.jsonl"
    ids = write_requests(str(local), 400, prefix="s3job")
    obstore.put(store, "inputs/in.jsonl", local.read_bytes())
    with FaultProxy(s3.endpoint, p503=0.15, preset=0.1, pstored500=0.15, seed=4) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        await asyncio.to_thread(queue_job, pg_url, "s3job", [f"s3://{bucket}/inputs/in.jsonl"],
                                f"s3://{bucket}/out", FAST)
        node = Node(NodeConfig(pg_url, node_id="node-s3", lease_s=10, poll_s=0.05, flags=NODE_FAST),
                    load_env=lambda: {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": sim.url})
        task = asyncio.create_task(node.serve())
        try:
            deadline = asyncio.get_running_loop().time() + 60
            while (await states(pg_url)).get("s3job") != "done":
                assert asyncio.get_running_loop().time() < deadline, await states(pg_url)
                assert not task.done()
                await asyncio.sleep(0.05)
        finally:
            node.handle_signal(15)
            await asyncio.wait_for(task, 20)
    assert proxy.counts["503"] and proxy.counts["reset"] and proxy.counts["stored_500"], proxy.counts
    lines, listed, manifest = await asyncio.to_thread(bucket_lines, store, "out")
    assert Counter(r["custom_id"] for r in lines) == Counter(ids)
    assert manifest["job"] == "s3job" and manifest["objects"] == listed  # no orphan after the GC
    summary = json.loads(bytes(obstore.get(store, "out/summary.json").bytes()))
    assert summary["requests"]["finished"] == 400


async def test_a_write_once_object_is_never_replaced(s3):
    objects = BucketObjects(f"s3://{s3.new_bucket()}/p")
    await objects.put_once("a.jsonl", b"one\n")
    await objects.put_once("a.jsonl", b"one\n")  # the same object again: a retry that finds its own
    with pytest.raises(ObjectExists) as err:
        await objects.put_once("a.jsonl", b"two\n")
    assert str(err.value).endswith("/p/a.jsonl exists and holds something else")
    assert await objects.get("a.jsonl") == b"one\n"
    assert await objects.get("a.jsonl", 1, 3) == b"ne"




def test_run_out_s3_writes_results_manifest_and_summary_to_the_bucket_and_resumes_from_local_state(
        s3, tmp_path, monkeypatch, capsys):
    from batch_scheduler.commands.main import main
    from batch_scheduler.simulator.process import SimulatorProcess

    bucket = s3.new_bucket()
    inp = tmp_path / "in.jsonl"
    ids = write_requests(str(inp), 300, prefix="run")
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("BATCH_STATE_DIR", str(tmp_path / "machine"))
    out = f"s3://{bucket}/runs/first"
    with SimulatorProcess(["--faults", "--seed", "9", "--processing-s", "0.2"]) as sim:  # as soak.py
        argv = ["run", str(inp), "--out", out, "--base-url", sim.url, "--batch-size", "50", "--poll-min", "0.02",
                "--poll-max", "0.1", "--shards", "3", "--retry-wait", "0.2"]
        assert main(argv) == 0
        assert main(argv) == 0  # the same command again: the local ledger says it is done; nothing is sent
        paid = sim.stats()["requests_created"]
    lines, listed, manifest = bucket_lines(S3Store(bucket), "runs/first")
    assert Counter(r["custom_id"] for r in lines) == Counter(ids)
    assert manifest == {"job": out, "objects": listed}
    summary = json.loads(bytes(obstore.get(S3Store(bucket), "runs/first/summary.json").bytes()))
    assert summary["requests"]["finished"] == 300
    assert paid - summary["attempts"]["requests_retried"] <= 300 * 1.05  # sent again on purpose: paid again
    assert not list((tmp_path).glob("s3:*")), "nothing local is named after the URL"
    assert "300 of 300 requests finished" in capsys.readouterr().err
    # its local ledger is listed for this machine's other processes on the account (state/host.py)
    listed_ledgers = [p.read_text() for p in (tmp_path / "machine").glob("accounts/*/jobs/*")]
    assert listed_ledgers == [str(next((tmp_path / "state").glob("batch-scheduler/*/ledger.db")))]


async def test_a_ranged_read_sends_if_match_and_an_overwritten_object_is_refused_never_mixed(s3):
    """Issue 22 row 10: an input object is read only at the version the job started with."""
    bucket = s3.new_bucket()
    objects = BucketObjects(f"s3://{bucket}")
    await objects.put("in.jsonl", b"one\ntwo\n")
    etag = (await objects.head("in.jsonl")).etag
    assert etag
    reader = RangeReader(objects, "in.jsonl", 4, etag=etag)
    assert await asyncio.to_thread(reader.read, 3) == b"two"
    await objects.put("in.jsonl", b"ONE\nTWO\n")  # overwritten, the same size
    with pytest.raises(InputChanged, match=rf"^input s3://{bucket}/in.jsonl changed since the job started \(it is "
                                           rf"no longer the object of ETag {re.escape(etag)}\)"):
        await asyncio.to_thread(RangeReader(objects, "in.jsonl", 0, etag=etag).read, 3)
    reader.seek(0)
    with pytest.raises(InputChanged):  # the If-Match of the GET itself, the size known already
        await asyncio.to_thread(reader.read, 3)


async def test_an_input_object_overwritten_mid_run_fails_the_job_naming_it(sim, s3, tmp_path):
    bucket = s3.new_bucket()
    store = S3Store(bucket)
    local = tmp_path / "in.jsonl"
    pad = "x" * 1000
    with open(local, "wb") as f:  # 13,000 lines of ~1 KB: four of the reader's blocks, read one after another
        for i in range(13_000):
            f.write(json.dumps({"custom_id": f"o-{i:05d}", "params": {"model": "claude-haiku-4-5", "max_tokens": 8,
                                "messages": [{"role": "user", "content": f"q {i} {pad}"}]}}).encode() + b"\n")
    obstore.put(store, "in.jsonl", local.read_bytes())
    sim.config.processing_s = 1.0
    settings = fast_settings(sim.url, batch_size=500, concurrency=1)
    url = f"s3://{bucket}/in.jsonl"
    run = asyncio.create_task(Engine(settings, str(tmp_path / "out"), [url], quiet=True).run())
    await until(lambda: sim.stats["creates"] >= 1 or run.done(), "a batch created")
    obstore.put(store, "in.jsonl", local.read_bytes().replace(b'"q 1', b'"Q 1'))  # the same size, other prompts
    result = await run
    assert result.exit_code == ExitCode.USAGE
    assert result.message.startswith(f"input {url} changed since the job started (it is no longer the object of "
                                     f"ETag "), result.message
