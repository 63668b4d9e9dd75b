"""The library API as a Python user meets it: run / arun / read_results / job_status, and nothing else changed."""

from __future__ import annotations

import _thread
import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import orjson
import pytest

import batch_scheduler
from batch_scheduler.commands.main import main
from batch_scheduler.core.errors import UsageError
from batch_scheduler.providers import NAMES
from batch_scheduler.simulator.process import SimulatorProcess

from ..helpers import ids_of, read_results, request, write_requests

FAST = dict(poll_min=0.01, poll_max=0.05, batch_size=50, shards=4, api_key="sk-lib-test")


@pytest.fixture
def lib_env(monkeypatch, tmp_path):
    """No key, model or .env from the test process: what a job gets is what the test gives."""
    monkeypatch.chdir(tmp_path)
    for name in ("ANTHROPIC_API_KEY", "CLAUDE_API_KEY", "ANTHROPIC_BASE_URL", "CLAUDE_BASE_URL", "CLAUDE_MODEL",
                 "ANTHROPIC_MODEL", "BATCH_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def sim_process():
    with SimulatorProcess([]) as s:
        yield s


def process_state() -> dict:
    old_umask = os.umask(0o022)
    os.umask(old_umask)
    root = logging.getLogger()
    return {"gc": gc.get_threshold(), "umask": old_umask,
            "sigint": signal.getsignal(signal.SIGINT), "sigterm": signal.getsignal(signal.SIGTERM),
            "policy": type(asyncio.get_event_loop_policy()), "log_handlers": list(root.handlers),
            "log_level": root.level}


def test_run_changes_nothing_process_wide(sim_process, lib_env):
    os.umask(0o022)
    before, frozen = process_state(), gc.get_freeze_count()
    (lib_env / "rows.csv").write_text("id,question\n" + "".join(f"q{i},what is {i}?\n" for i in range(120)))
    result = batch_scheduler.run(lib_env / "rows.csv", lib_env / "out", base_url=sim_process.url, template=(
        "Answer: {question}"), model="claude-haiku-4-5", max_tokens=20, id_field="id", **FAST)
    assert (result.exit_code, result.ok, result.message) == (0, True, "done")
    assert result.summary["results"]["succeeded"] == 120
    assert [r["custom_id"] for r in batch_scheduler.read_results(lib_env / "out")] == [f"q{i}" for i in range(120)]
    assert process_state() == before
    assert gc.get_freeze_count() <= frozen  # nothing frozen (frozen objects of earlier tests may have died)
    for root, dirs, files in os.walk(lib_env / "out"):  # owner-only by the files' own modes, umask 022 or not
        for name in dirs + files:
            assert os.stat(os.path.join(root, name)).st_mode & 0o077 == 0, name


async def test_arun_is_awaited_inside_a_running_loop(sim, lib_env):
    ids = write_requests(lib_env / "in.jsonl", 80)
    ticks = 0

    async def heartbeat():  # the caller's loop keeps running while the job does
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    beat = asyncio.create_task(heartbeat())
    result = await batch_scheduler.arun(str(lib_env / "in.jsonl"), str(lib_env / "out"), base_url=sim.url, **FAST)
    beat.cancel()
    assert result.ok, result.message
    assert ticks > 10
    assert sorted(ids_of(read_results(str(lib_env / "out")))) == ids


async def test_run_inside_a_running_loop_runs_the_job_on_a_worker_thread_and_returns_its_result(sim_process, lib_env):
    ids = write_requests(lib_env / "in.jsonl", 60)
    caller = threading.get_ident()
    result = batch_scheduler.run(lib_env / "in.jsonl", lib_env / "out", base_url=sim_process.url, **FAST)
    assert (result.ok, result.message) == (True, "done")
    assert sorted(ids_of(read_results(str(lib_env / "out")))) == ids
    assert threading.get_ident() == caller and asyncio.get_running_loop().is_running()
    with pytest.raises(UsageError, match="^--concurrency 0: must be at least 1$"):  # raised in the caller's thread
        batch_scheduler.run(lib_env / "in.jsonl", lib_env / "out2", **{**FAST, "concurrency": 0})


async def test_interrupting_run_inside_a_loop_stops_the_job_resumably(lib_env):
    ids = write_requests(lib_env / "in.jsonl", 40)
    out = lib_env / "out"

    def interrupt_once_a_batch_is_out():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if batch_scheduler.job_status(out)["batches_in_flight"]:
                    break
            except UsageError:  # no ledger yet
                pass
            time.sleep(0.02)
        _thread.interrupt_main()  # (past the deadline too: the test then fails on what it finds, never hangs)

    with SimulatorProcess(["--processing-s", "2"]) as slow:  # a batch stays in flight long enough to be seen
        watcher = threading.Thread(target=interrupt_once_a_batch_is_out)
        watcher.start()
        with pytest.raises(KeyboardInterrupt):
            batch_scheduler.run(lib_env / "in.jsonl", out, base_url=slow.url, **FAST)
        watcher.join()
        status = batch_scheduler.job_status(out)  # what was sent is in the ledger, to be picked up again
        assert status["state"] == "in progress" and len(status["batches_in_flight"]) == 1
        again = batch_scheduler.run(lib_env / "in.jsonl", out, base_url=slow.url, **FAST)
    assert again.ok, again.message
    assert sorted(ids_of(read_results(str(out)))) == ids


async def test_an_iterable_of_request_dicts_is_streamed_into_the_job_and_checked_on_resume(sim, lib_env):
    def requests(n):
        for i in range(n):
            yield request(f"gen-{i:04d}", f"question {i}")

    out = lib_env / "out"
    result = await batch_scheduler.arun(requests(130), out, base_url=sim.url, **FAST)
    assert result.ok, result.message
    assert sorted(ids_of(read_results(str(out)))) == [f"gen-{i:04d}" for i in range(130)]
    spooled = (out / "input.jsonl").read_bytes()
    assert [orjson.loads(line)["custom_id"] for line in spooled.splitlines()][:2] == ["gen-0000", "gen-0001"]
    assert os.stat(out / "input.jsonl").st_mode & 0o077 == 0
    creates = sim.stats["creates"]

    again = await batch_scheduler.arun(requests(130), out, base_url=sim.url, **FAST)  # the same: resumed
    assert again.ok and sim.stats["creates"] == creates

    other = await batch_scheduler.arun(requests(131), out, base_url=sim.url, **FAST)
    assert (other.exit_code, other.ok) == (2, False)
    assert other.message == (f"{out} holds a job over other requests: the iterable given yields something else "
                             f"than the one the job started with ({out}/input.jsonl); give that one again to resume "
                             f"the job, or use another out")
    assert (out / "input.jsonl").read_bytes() == spooled
    assert "input.jsonl.new" not in os.listdir(out)


async def test_an_item_that_is_not_a_json_object_is_a_rejected_line(sim, lib_env):
    items = [request("ok-1"), "just text", request("ok-2")]
    result = await batch_scheduler.arun(items, lib_env / "out", base_url=sim.url, **FAST)
    assert result.ok and result.summary["requests"]["rejected"] == 1
    rejected = [orjson.loads(x) for x in (lib_env / "out" / "rejected.jsonl").read_bytes().splitlines()]
    assert rejected == [{"file": str(lib_env / "out" / "input.jsonl"), "line": 2, "error": "not a JSON object (got str)"}]


async def test_read_results_in_input_order_and_in_shard_order(sim, lib_env):
    ids = write_requests(lib_env / "in.jsonl", 200)
    result = await batch_scheduler.arun(lib_env / "in.jsonl", lib_env / "out", base_url=sim.url, **FAST)
    assert result.ok
    by_input = list(batch_scheduler.read_results(lib_env / "out"))
    assert [r["custom_id"] for r in by_input] == ids
    assert all(r["result"]["message"]["content"][0]["text"] == "answer:" + r["custom_id"] for r in by_input)
    by_shard = list(batch_scheduler.read_results(lib_env / "out", order="shard"))
    assert by_shard == read_results(str(lib_env / "out"))  # the shards as they lie, one after another
    assert by_shard != by_input and sorted(ids_of(by_shard)) == ids
    with pytest.raises(ValueError, match="order must be one of input, shard, not 'random'"):
        next(batch_scheduler.read_results(lib_env / "out", order="random"))
    status = batch_scheduler.job_status(lib_env / "out")
    assert status["state"] == "done" and status["requests"]["finished"] == 200


async def test_an_unknown_option_is_a_type_error_naming_it(lib_env):
    with pytest.raises(TypeError) as err:
        await batch_scheduler.arun([], lib_env / "out", batchsize=10, api_key="k")
    assert str(err.value) == ("run() got unexpected keyword argument 'batchsize' (did you mean 'batch_size' or "
                              "'batch_bytes'?): the options are the `run` command's long options with dashes as "
                              "underscores (e.g. batch_size), and api_key")
    assert not (lib_env / "out").exists()


@pytest.mark.parametrize(("option", "flag"), [({"concurrency": 0}, ["--concurrency", "0"]),
                                              ({"poll_min": 2, "poll_max": 1}, ["--poll-min", "2", "--poll-max", "1"]),
                                              ({"provider": "no-such-api"}, None)])
def test_a_bad_value_is_the_error_the_cli_gives(lib_env, capsys, option, flag):
    write_requests(lib_env / "in.jsonl", 3)
    with pytest.raises(UsageError) as err:
        batch_scheduler.run(lib_env / "in.jsonl", lib_env / "out", api_key="k", **option)
    if flag is not None:
        assert main(["run", str(lib_env / "in.jsonl"), "--out", str(lib_env / "out2"), *flag]) == 2
        assert capsys.readouterr().err.strip() == f"batch-scheduler: {err.value}"
    else:
        assert str(err.value) == f"--provider 'no-such-api': choose one of {', '.join(NAMES)}"
    assert not (lib_env / "out").exists()


async def test_no_key_is_the_clis_usage_error(lib_env):
    with pytest.raises(UsageError, match=r"^no API key: set ANTHROPIC_API_KEY \(or CLAUDE_API_KEY\), or ANTHROPIC_AUTH_TOKEN in the"):
        await batch_scheduler.arun([request("a")], lib_env / "out")


async def test_a_dry_run_sends_nothing_and_says_what_a_run_would(sim, lib_env):
    write_requests(lib_env / "in.jsonl", 130)
    result = await batch_scheduler.arun(lib_env / "in.jsonl", lib_env / "out", dry_run=True, batch_size=50)
    assert (result.ok, result.message) == (True, "dry run: nothing was submitted")
    assert (result.summary["requests"], result.summary["batches"], result.summary["rejected"]) == (130, 3, 0)
    low, high = (result.summary["models"]["claude-sonnet-4-5"]["cost_usd"][k] for k in ("low", "high"))
    assert 0 < low < high
    assert sim.stats["creates"] == 0


def test_importing_the_package_loads_no_pipeline():
    code = ("import sys, batch_scheduler; before = sorted(m for m in sys.modules if m.startswith('batch_scheduler'));"
            "batch_scheduler.run; print(before, 'batch_scheduler.job.engine' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['batch_scheduler'] True"


async def test_options_that_cannot_make_requests_refuse_before_the_iterable_is_read(lib_env):
    consumed = []

    def rows():
        consumed.append(True)
        yield {"q": "x"}
    with pytest.raises(UsageError, match=r"^--max-tokens is required with --template"):
        await batch_scheduler.arun(rows(), lib_env / "out", template="{q}", model="m", api_key="k")
    assert consumed == [] and not (lib_env / "out").exists()


def test_two_threads_on_one_out_the_second_is_refused_and_the_first_input_stays_its_own(sim_process, lib_env):
    """Row 6: the second caller meets the job's lock before it writes anything into OUT."""
    reading, go = threading.Event(), threading.Event()

    def rows_a():
        for i in range(60):
            if i == 30:
                reading.set()  # the first caller is half way through spooling its iterable
                assert go.wait(30)
            yield request(f"a-{i:03d}")

    first: list = []
    thread = threading.Thread(target=lambda: first.append(batch_scheduler.run(
        rows_a(), lib_env / "out", base_url=sim_process.url, **FAST)))
    thread.start()
    try:
        assert reading.wait(30)
        second = batch_scheduler.run([request(f"b-{i:03d}") for i in range(60)], lib_env / "out",
                                     base_url=sim_process.url, **FAST)
    finally:
        go.set()
        thread.join(60)
    assert second.exit_code == 2 and second.busy, second.message
    assert second.message.startswith(f"{lib_env / 'out'} is in use: "), second.message
    assert first[0].exit_code == 0, first[0].message
    assert sorted(ids_of(read_results(str(lib_env / "out")))) == [f"a-{i:03d}" for i in range(60)]
    assert [orjson.loads(line)["custom_id"] for line in (lib_env / "out" / "input.jsonl").read_bytes().splitlines()
            ] == [f"a-{i:03d}" for i in range(60)]
