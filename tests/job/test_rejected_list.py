"""rejected.jsonl is the list of the last run that read the whole input: an interrupted rerun keeps it, and the
summary counts what the file holds."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from batch_scheduler.job.engine import Engine, ExitCode

from ..conftest import fast_settings
from ..helpers import write_requests

pytestmark = pytest.mark.timeout(60)


def rejected_lines(out) -> list[dict]:
    return [orjson.loads(line) for line in (out / "rejected.jsonl").read_bytes().splitlines()]


async def until(condition, what: str, timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.01)


async def test_an_interrupted_rerun_keeps_the_list_and_the_summary_counts_it(sim, tmp_path):
    sim.config.processing_s = 4.0  # the batches outlast both runs below
    inp, out = tmp_path / "in.jsonl", tmp_path / "out"
    write_requests(inp, 300)
    with open(inp, "ab") as f:
        f.write(b"not json\n{\"custom_id\": \"no params\"}\n")
    first = Engine(fast_settings(sim.url, batch_size=100, concurrency=3), str(out), [str(inp)], quiet=True)
    task = asyncio.create_task(first.run())
    await until(lambda: first.stats.reading_done and sim.stats["creates"] == 3, "the first run read everything")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [r["line"] for r in rejected_lines(out)] == [301, 302]
    # the rerun waits for a slot (concurrency 1, three batches in flight) before it reads a line: stop it there
    retrieves = sim.stats["retrieves"]
    rerun = Engine(fast_settings(sim.url, batch_size=100, concurrency=1), str(out), [str(inp)], quiet=True)
    task = asyncio.create_task(rerun.run())
    await until(lambda: sim.stats["retrieves"] > retrieves, "the rerun polls what is in flight")
    assert rerun.stats.lines_read == 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [r["line"] for r in rejected_lines(out)] == [301, 302]
    assert orjson.loads((out / "summary.json").read_bytes())["requests"]["rejected"] == 2
    assert not (out / "rejected.jsonl.partial").exists()
    last = await Engine(fast_settings(sim.url, batch_size=100), str(out), [str(inp)], quiet=True).run()
    assert last.exit_code == ExitCode.OK
    assert [r["line"] for r in rejected_lines(out)] == [301, 302]
    assert last.summary["requests"]["rejected"] == 2
