"""An input changed under a started job is refused, even to the same size in the middle, where the fingerprint
(size, first and last MiB) cannot see it: each chunk's digest is kept and checked whenever it is read again."""

from __future__ import annotations

import orjson
import pytest

from batch_scheduler.core.errors import JobMismatch
from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.job.input.reader import JsonlSource
from batch_scheduler.job.input.replay import Replay
from batch_scheduler.providers import make_provider
from batch_scheduler.state.sqlite import ChunkState, Ledger

from ..conftest import fast_settings
from ..helpers import request

pytestmark = pytest.mark.timeout(60)
PAD = "x" * 1000  # 3,000 lines of ~1 KB: the middle is far from the first and last MiB


def write_big(path, *, changed_line: int | None = None) -> list[str]:
    ids = []
    with open(path, "wb") as f:
        for i in range(3000):
            cid = f"big-{i:05d}"
            ids.append(cid)
            text = f"question {i} {PAD}"
            if i + 1 == changed_line:
                text = text.replace("question", "QUESTION")  # the same size
            f.write(orjson.dumps(request(cid, text)) + b"\n")
    return ids


async def test_a_same_size_change_in_the_middle_of_the_input_is_refused_and_the_job_left_as_it_was(sim, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out"
    write_big(inp)
    settings = fast_settings(sim.url, batch_size=500)
    assert (await Engine(settings, str(out), [str(inp)], quiet=True).run()).exit_code == ExitCode.OK
    size = inp.stat().st_size
    write_big(inp, changed_line=1700)
    assert inp.stat().st_size == size
    summary_before = (out / "summary.json").read_bytes()
    creates = sim.stats["creates"]
    result = await Engine(settings, str(out), [str(inp)], quiet=True).run()
    assert result.exit_code == ExitCode.USAGE
    assert result.message == (f"input {inp} changed since the job started: its requests from line 1,501 read "
                              f"differently now (the same size or not); nothing of it is sent mixed. Put the "
                              f"original input back to carry on, or start afresh with another --out")
    assert sim.stats["creates"] == creates
    assert (out / "summary.json").read_bytes() == summary_before  # a refused run leaves the job's account alone


async def test_a_chunk_read_again_for_its_requests_must_read_as_it_was_cut(sim, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out"
    write_big(inp)
    settings = fast_settings(sim.url, batch_size=750)
    assert (await Engine(settings, str(out), [str(inp)], quiet=True).run()).exit_code == ExitCode.OK
    ledger = Ledger(str(out / "ledger.db"))
    try:
        rows = [r for r in ledger.all_chunks() if r.state == ChunkState.COLLECTED]
        assert len(rows) == 4 and all(r.digest for r in rows)
        replay = Replay([JsonlSource(str(inp), 0)], make_provider(settings, None).check_request, ledger)
        assert len(await replay.parts(rows[1])) == 750  # as cut: read again as it was
        write_big(inp, changed_line=1000)
        assert len(await replay.parts(rows[0])) == 750  # the change is in another chunk
        with pytest.raises(JobMismatch, match=rf"^input {inp} changed since the job started: its requests from "
                                              r"line 751 read differently now"):
            await replay.parts(rows[1])
    finally:
        ledger.close()
