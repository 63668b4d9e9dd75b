"""Cutting chunks: at batch size, at batch bytes, the same cut every time."""

import orjson

from batch_scheduler.core.settings import Settings
from batch_scheduler.job.input.batcher import cut_chunks
from batch_scheduler.job.input.reader import JsonlSource
from batch_scheduler.job.input.validate import Rejects, Validator
from batch_scheduler.providers.anthropic.provider import AnthropicProvider

from ..helpers import request


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
