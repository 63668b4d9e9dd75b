"""A line longer than a batch may be goes to rejected.jsonl, wherever the reads split it, and the job goes on."""

from __future__ import annotations

import orjson
import pytest

from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.job.input import reader

from ..conftest import fast_settings
from ..helpers import ids_of, read_results, request

pytestmark = pytest.mark.timeout(60)


def rejected(out) -> list[dict]:
    return [orjson.loads(line) for line in (out / "rejected.jsonl").read_bytes().splitlines()]


async def test_a_line_over_batch_bytes_split_over_reads_is_rejected_and_the_rest_answered(sim, tmp_path,
                                                                                         monkeypatch):
    monkeypatch.setattr(reader, "BLOCK_BYTES", 1000)  # the long line spans a dozen reads
    sim.config.expired_rate = 0.3  # retries read chunks again from the input, across the long line
    inp, out = tmp_path / "in.jsonl", tmp_path / "out"
    ids = []
    with open(inp, "wb") as f:
        for i in range(60):
            if i == 30:
                f.write(orjson.dumps(request("huge", "x" * 12_000)) + b"\n")
            ids.append(f"r-{i}")
            f.write(orjson.dumps(request(f"r-{i}", f"question {i}")) + b"\n")
    huge = len(orjson.dumps(request("huge", "x" * 12_000)))
    settings = fast_settings(sim.url, batch_size=25, batch_bytes=4000, max_attempts=6)
    result = await Engine(settings, str(out), [str(inp)], quiet=True).run()
    assert result.exit_code == ExitCode.OK, result.message
    assert sorted(ids_of(read_results(str(out)))) == sorted(ids)
    assert rejected(out) == [{"file": str(inp), "line": 31,
                              "error": f"line is {huge:,} bytes, larger than a batch may be (3,936)"}]
    assert result.summary["attempts"]["requests_retried"] > 0


async def test_an_input_that_ends_in_megabytes_without_a_newline_is_one_clear_reject(sim, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out"
    with open(inp, "wb") as f:
        for i in range(10):
            f.write(orjson.dumps(request(f"r-{i}")) + b"\n")
        start = f.tell()
        f.truncate(start + (20 << 20))  # then 20 MiB of zero bytes, like a copy of /dev/zero
    result = await Engine(fast_settings(sim.url, batch_bytes=1_000_000), str(out), [str(inp)], quiet=True).run()
    assert result.exit_code == ExitCode.OK, result.message
    assert len(read_results(str(out))) == 10
    assert rejected(out) == [{"file": str(inp), "line": 11, "error": f"line is {20 << 20:,} bytes, larger than a "
                                                                     f"batch may be (999,936)"}]
