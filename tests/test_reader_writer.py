"""Reading in big blocks (plain, gz, CRLF, no final newline), cutting chunks, and shard writes."""

import gzip
import zlib

import orjson
import pytest

from batch_scheduler.core.settings import Settings
from batch_scheduler.job import reader
from batch_scheduler.job.batcher import cut_chunks
from batch_scheduler.job.reader import JsonlSource, split_lines
from batch_scheduler.job.validate import Rejects, Validator
from batch_scheduler.job.writer import ShardSet, shard_of, shard_path
from batch_scheduler.providers.anthropic import AnthropicProvider

from .helpers import request


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


async def cut(tmp_path, n, **kw):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(orjson.dumps(request(f"r{i}")) + b"\n" for i in range(n)))
    provider = AnthropicProvider(Settings(), http=None)
    rejects = Rejects(None, [str(path)])
    return [c async for c in cut_chunks(JsonlSource(str(path), 0).blocks(), Validator(provider, 1 << 20), rejects,
                                        overhead=provider.body_overhead, unit_of=lambda fi: "bytes", **kw)]


async def test_chunks_close_at_batch_size(tmp_path):
    chunks = await cut(tmp_path, 25, batch_size=10, batch_bytes=1 << 20)
    assert [c.n for c in chunks] == [10, 10, 5]
    assert [c.seq for c in chunks] == [0, 1, 2]
    assert chunks[1].start_line == 11 and chunks[1].start_pos == chunks[0].end_pos


async def test_chunks_close_at_batch_bytes_and_fit(tmp_path):
    line = len(orjson.dumps(request("r0")))
    chunks = await cut(tmp_path, 20, batch_size=1000, batch_bytes=64 + 5 * (line + 1) + 3)
    assert all(c.nbytes <= 64 + 5 * (line + 1) + 3 for c in chunks)
    assert sum(c.n for c in chunks) == 20 and max(c.n for c in chunks) == 5


async def test_the_cut_is_deterministic(tmp_path):
    a = await cut(tmp_path, 33, batch_size=7, batch_bytes=1 << 20)
    b = await cut(tmp_path, 33, batch_size=7, batch_bytes=1 << 20)
    assert [(c.start_pos, c.end_pos, c.ids) for c in a] == [(c.start_pos, c.end_pos, c.ids) for c in b]


def test_shard_is_crc32_of_custom_id_modulo_shards():
    assert shard_of("my-id-42", 16) == zlib.crc32(b"my-id-42") % 16


def test_rollback_drops_lines_past_the_durable_offsets(tmp_path):
    shards = ShardSet(str(tmp_path), 2)
    shards.add(0, b'{"a":1}')
    durable = shards.commit()
    shards.add(0, b'{"b":2}')
    shards.add(1, b'{"c":3}')
    shards.flush()
    shards.rollback(durable)
    shards.close()
    assert (tmp_path / "results" / "shard-00000.jsonl").read_bytes() == b'{"a":1}\n'
    with open(shard_path(str(tmp_path), 1), "rb") as f:
        assert f.read() == b""


def test_shard_files_are_owner_only(tmp_path):
    ShardSet(str(tmp_path), 1).close()
    assert (tmp_path / "results" / "shard-00000.jsonl").stat().st_mode & 0o077 == 0
    assert (tmp_path / "results").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("data, lines, rest", [
    (b"", [], b""), (b"abc", [], b"abc"), (b"a\n", [b"a"], b""), (b"\n", [b""], b""),
    (b"a\nb", [b"a"], b"b"), (b'{"x":1}\n\n{"y":2}\n', [b'{"x":1}', b"", b'{"y":2}'], b""),
])
def test_split_lines_gives_whole_lines_without_newlines_and_the_unfinished_rest(data, lines, rest):
    assert split_lines(data) == (lines, rest)


def test_a_ledger_from_before_the_skipped_column_opens_and_gains_it(tmp_path):
    import sqlite3

    from batch_scheduler.core.ledger import SCHEMA, Ledger
    path = str(tmp_path / "ledger.db")
    old = sqlite3.connect(path)
    old.executescript(SCHEMA.replace(",\n    skipped TEXT", "").replace("    note TEXT,", "    note TEXT"))
    old.execute("INSERT INTO chunks (kind, take, state) VALUES ('input', 5, 'submitted')")
    old.commit()
    old.close()
    ledger = Ledger(path)
    try:
        (row,) = ledger.all_chunks()
        assert row.take == 5 and row.skipped is None and row.skipped_lines() == set()
    finally:
        ledger.close()


async def test_a_ledger_from_before_one_spelling_of_cancelled_reads_and_requeues_its_cancelled_requests(tmp_path):
    import sqlite3

    from batch_scheduler.core.ledger import Ledger, RetryState
    path = str(tmp_path / "ledger.db")
    Ledger(path).close()
    old = sqlite3.connect(path)  # what an earlier version parked for `run --retry-cancelled`
    old.executemany("INSERT INTO retries (custom_id, request, attempts, state) VALUES (?, ?, 1, ?)",
                    [("a", b"{}", "canceled"), ("b", b"{}", "canceled"), ("c", b"{}", "pending")])
    old.commit()
    old.close()
    readonly = Ledger(path, readonly=True)  # `status` while the old version still runs: nothing migrated
    try:
        assert readonly.retry_counts() == {RetryState.CANCELLED: 2, RetryState.PENDING: 1}
    finally:
        readonly.close()
    ledger = Ledger(path)
    try:
        assert await ledger.count_retries(RetryState.CANCELLED) == 2
        assert await ledger.requeue(RetryState.CANCELLED) == 2
        assert await ledger.count_retries(RetryState.PENDING) == 3
    finally:
        ledger.close()
