"""Reading in big blocks (plain, gz, CRLF, no final newline) and again from a position."""

import gzip

import pytest

from batch_scheduler.job import reader
from batch_scheduler.job.reader import JsonlSource


async def all_lines(src, start_pos=0, start_line=1):
    out = []
    async for block in src.blocks(start_pos, start_line):
        for i, raw in enumerate(block.lines):
            out.append((block.first_line + i, raw))
    return out


@pytest.mark.parametrize("gz", [False, True])
async def test_lines_come_back_across_block_boundaries(tmp_path, monkeypatch, gz):
    monkeypatch.setattr(reader, "BLOCK_BYTES", 7)  # lines straddle every block
    data = b"alpha\r\nbeta\n\ngamma-delta-epsilon\nlast-no-newline"
    path = tmp_path / ("in.jsonl.gz" if gz else "in.jsonl")
    path.write_bytes(gzip.compress(data) if gz else data)
    got = await all_lines(JsonlSource(str(path), 0))
    assert got == [(1, b"alpha\r"), (2, b"beta"), (3, b""), (4, b"gamma-delta-epsilon"), (5, b"last-no-newline")]


async def test_reading_again_from_a_position_resumes_at_that_line(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"one\ntwo\nthree\n")
    assert await all_lines(JsonlSource(str(path), 0), start_pos=4, start_line=2) == [(2, b"two"), (3, b"three")]
