"""Reading in big blocks (plain, gz, CRLF, no final newline) and again from a position."""

import gzip
import zlib

import pytest

from batch_scheduler.core.errors import InputError
from batch_scheduler.job.input import reader
from batch_scheduler.job.input.reader import JsonlSource


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


async def test_a_line_longer_than_the_limit_over_many_reads_comes_as_one_marker_and_the_rest_in_step(
        tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "BLOCK_BYTES", 7)
    long = b"L" * 40  # over the limit of 10, over six reads
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"short\n" + long + b"\nafter\nabcdefghi\n" + long + b"x")
    src = JsonlSource(str(path), 0, max_line_bytes=10)
    got = [(n, raw if type(raw) is bytes else ("too long", raw.size)) for n, raw in await all_lines(src)]
    assert got == [(1, b"short"), (2, ("too long", 40)), (3, b"after"), (4, b"abcdefghi"), (5, ("too long", 41))]
    assert len(reader.LineTooLong(40)) == 40
    after = len(b"short\n") + len(long) + 1  # the position just past the long line
    again = await all_lines(src, start_pos=after, start_line=3)
    assert [(n, raw) for n, raw in again[:2]] == [(3, b"after"), (4, b"abcdefghi")]
    assert [(n, len(raw)) for n, raw in again[2:]] == [(5, 41)]


async def test_an_input_without_newlines_is_one_rejected_line_read_in_bounded_memory(tmp_path):
    import tracemalloc
    path = tmp_path / "zeros.jsonl"
    with open(path, "wb") as f:
        f.truncate(160 << 20)  # 160 MiB of zero bytes, like /dev/zero: no newline anywhere
    tracemalloc.start()
    try:
        got = await all_lines(JsonlSource(str(path), 0, max_line_bytes=2048))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [(n, type(raw).__name__, len(raw)) for n, raw in got] == [(1, "LineTooLong", 160 << 20)]
    assert peak < 5 * reader.BLOCK_BYTES, f"{peak:,} bytes held for a 160 MiB line"  # a few reads, not the line


async def test_a_cut_gz_gives_every_complete_line_before_the_cut_then_says_where(tmp_path):
    """Row 12: a read of BLOCK_BYTES that met the cut lost all it had unpacked (up to 4 MiB of lines)."""
    data = b"".join(b'{"custom_id": "r-%06d", "pad": "%s"}\n' % (i, b"x" * (i % 97)) for i in range(120_000))
    assert len(data) > 2 * reader.BLOCK_BYTES
    packed = gzip.compress(data)
    cut = packed[: len(packed) * 3 // 4]
    (tmp_path / "in.jsonl.gz").write_bytes(cut)
    readable = zlib.decompressobj(31).decompress(cut)  # all that can be unpacked before the cut
    complete = readable[: readable.rfind(b"\n")].split(b"\n")
    got = []
    with pytest.raises(InputError) as info:
        async for block in JsonlSource(str(tmp_path / "in.jsonl.gz"), 0).blocks():
            got += block.lines
    assert got == complete
    assert info.value.line == len(complete) + 1
    assert info.value.reason.startswith("the compressed data ends early")


@pytest.mark.parametrize("cached", [True, False])
async def test_a_local_file_reads_the_same_on_the_loop_from_the_page_cache_as_in_a_thread(tmp_path, monkeypatch,
                                                                                      cached):
    """Bytes in the page cache are read on the event loop, others in a worker thread: the same lines either way,
    from the start or from a position."""
    import threading

    monkeypatch.setattr(reader, "BLOCK_BYTES", 11)
    monkeypatch.setattr(reader.LocalFile, "cached", lambda self, n: cached)
    threads = set()
    real = reader._next_blocks

    def seen(read, n):
        threads.add(threading.current_thread() is threading.main_thread())
        return real(read, n)

    monkeypatch.setattr(reader, "_next_blocks", seen)
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(b"line-%d-" % i + b"x" * (i % 23) + b"\n" for i in range(200)) + b"tail")
    expected = [(i + 1, b"line-%d-" % i + b"x" * (i % 23)) for i in range(200)] + [(201, b"tail")]
    assert await all_lines(JsonlSource(str(path), 0)) == expected
    start = len(path.read_bytes().split(b"\n", 150)[-1])
    assert await all_lines(JsonlSource(str(path), 0), len(path.read_bytes()) - start, 151) == expected[150:]
    assert threads == {cached}  # on the loop's thread only when cached


def test_a_file_just_written_is_in_the_page_cache_and_a_device_is_read_in_order(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"a\n" * 100_000)
    f = reader.LocalFile(str(path))
    try:
        if reader._NOWAIT is not None:  # Linux
            assert f.cached(1 << 20)
        f.seek(len(path.read_bytes()))
        assert f.read(10) == b"" and f.cached(1 << 20)  # at the end: nothing to wait for
    finally:
        f.close()
    device = JsonlSource("/dev/zero", 0)._open(0)  # not a regular file: read in order, in a thread
    device.close()
    assert not isinstance(device, reader.LocalFile)
