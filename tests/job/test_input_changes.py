"""An input changed under a started job is refused, even to the same size in the middle, where the fingerprint
(size, first and last MiB) cannot see it: each chunk's digest is kept and checked whenever it is read again."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from batch_scheduler.core.errors import JobMismatch
from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.job.input.reader import JsonlSource
from batch_scheduler.job.input.replay import Replay
from batch_scheduler.providers import make_provider
from batch_scheduler.state.ledger.sqlite import ChunkState, Ledger

from ..conftest import fast_settings
from ..daemon.helpers import until
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


async def test_a_local_input_edited_in_place_while_the_job_runs_fails_it_naming_the_input(sim, tmp_path):
    """Issue 22 row 10: the input's identity (size, mtime_ns, inode, edge hashes) taken as the run opens the
    job is checked when it ends: an edit in place meanwhile, even one the same size, is never "done"."""
    inp, out = tmp_path / "in.jsonl", tmp_path / "out"
    write_big(inp)
    sim.config.processing_s = 0.5  # the batches are in flight when the input is edited
    settings = fast_settings(sim.url, batch_size=500)
    run = asyncio.create_task(Engine(settings, str(out), [str(inp)], quiet=True).run())
    await until(lambda: sim.stats["creates"] >= 1 or run.done(), "a batch created")
    with open(inp, "r+b") as f:  # in place: the same inode, the same size, another prompt in the middle
        f.seek(inp.stat().st_size // 2)
        f.write(b"X")
    result = await run
    assert result.exit_code == ExitCode.USAGE
    assert result.message == (f"input {inp} changed while the job ran (its mtime changed): its answers may "
                              f"belong to two versions of it, so the job is not done. Put the original input back "
                              f"and run again, or start afresh with another --out")
    assert not (out / "summary.json").exists(), "no account says it is done"


@pytest.mark.parametrize("piece_bytes", [1, 100, 3000, 1 << 20])
def test_a_chunks_digest_is_the_xxh3_of_its_lines_each_with_its_newline_however_it_is_hashed(
        monkeypatch, piece_bytes):
    """The digest a ledger keeps is XXH3-128 over each line and its newline, named as such, however the lines
    are pieced together to hash them; hashed like a digest an earlier version kept (sha256 hex, no name), it is
    that sha256, so a job started by that version goes on under this one."""
    import hashlib
    import random

    import xxhash

    from batch_scheduler.job.input import batcher

    monkeypatch.setattr(batcher, "DIGEST_PIECE_BYTES", piece_bytes)
    rng = random.Random(piece_bytes)
    for n in (0, 1, 2, 7, 500):
        lines = [bytes(rng.randrange(32, 127) for _ in range(rng.choice([0, 1, 40, 2500]))) for _ in range(n)]
        data = b"".join(x + b"\n" for x in lines)
        assert batcher.chunk_digest(lines) == "xxh3-128:" + xxhash.xxh3_128(data).hexdigest()
        old = hashlib.sha256(data).hexdigest()
        assert batcher.chunk_digest(lines, like=old) == old
        assert batcher.chunk_digest(lines, like="xxh3-128:0") == batcher.chunk_digest(lines)
