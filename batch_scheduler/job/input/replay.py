"""A chunk's requests, read again: the one place that tells an input chunk from a retry chunk.

An input chunk is a span of the input files: its request lines are read again from there, exactly
the lines the validator accepted when the chunk was cut (the ledger lists the lines it refused inside
the span, and the requests the API refused since), and they must hash as they did then (the chunk's
digest): an input changed under the job, even to the same size, is refused, never sent mixed. A retry chunk's requests are rows of the ledger's
`retries` table, with the attempts each has made. Everything that sends a chunk again, checks that an
adopted batch is ours, or parks a request for another attempt asks here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import aclosing

import orjson

from batch_scheduler.core.errors import JobMismatch
from batch_scheduler.job.input.batcher import chunk_digest
from batch_scheduler.job.input.reader import Source, span_blocks
from batch_scheduler.state.ledger import Ledger
from batch_scheduler.state.ledger.sqlite import ChunkKind, ChunkRow

CheckRequest = Callable[[dict, bytes], tuple[str | None, bytes | None]]  # Provider.check_request
Part = tuple[bytes, str, int]  # (request line, custom_id, index in the root chunk)


class Replay:
    """`lane_of`: the provider's, when its batches keep lanes apart (see `batcher`): an input chunk's
    requests are then the lines of its span in the lane of its first line."""

    def __init__(self, sources: Sequence[Source], check_request: CheckRequest, ledger: Ledger, *,
                 lane_of: Callable[[dict], str] | None = None, id_fields: tuple[str, ...] = ("custom_id",)):
        self._sources = sources
        self._id_fields = id_fields  # Provider.id_fields: where a line names its request
        self._check_request = check_request
        self._ledger = ledger
        self._lane_of = lane_of

    @staticmethod
    def from_input(row: ChunkRow) -> bool:
        """Whether the chunk's requests are read from the input (otherwise the ledger keeps them)."""
        return row.kind == ChunkKind.INPUT

    async def lookup(self, row: ChunkRow) -> dict[str, bytes]:
        """Request lines of a chunk by custom_id."""
        if not self.from_input(row):
            return {c: r for c, r, _ in await self._ledger.retry_requests(row.id)}
        return await self._read_span(row)

    async def parts(self, row: ChunkRow) -> list[Part]:
        """What sending the chunk again sends, the requests the API refused left out."""
        if not self.from_input(row):
            return [(r, c, i) for i, (c, r, _) in enumerate(await self._ledger.retry_requests(row.id))]
        refused = await self._ledger.api_rejected(row.root_seq)
        mine = list((await self._read_span(row)).items())[row.skip:row.skip + row.take]
        return [(r, c, row.skip + i) for i, (c, r) in enumerate(mine) if c not in refused]

    async def requests(self, row: ChunkRow) -> list[tuple[str, bytes, int]]:
        """(custom_id, request line, attempts made before this chunk's batch) of what the chunk sent."""
        if not self.from_input(row):
            return await self._ledger.retry_requests(row.id)
        return [(c, r, 0) for r, c, _ in await self.parts(row)]

    async def attempts(self, row: ChunkRow) -> dict[str, int]:
        """Attempts made so far by each request of a retry chunk; empty for an input chunk (its first)."""
        if self.from_input(row):
            return {}
        return {c: a for c, _, a in await self._ledger.retry_requests(row.id)}

    async def _read_span(self, row: ChunkRow) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        check_request, lane_of = self._check_request, self._lane_of
        lane: str | None = None  # the chunk's lane: that of its first line
        assert row.start_file is not None and row.end_file is not None
        span = span_blocks(self._sources, (row.start_file, row.start_pos or 0, row.start_line or 1),
                           (row.end_file, row.end_pos or 0))
        skipped = row.skipped_lines()
        async with aclosing(span) as blocks:
            async for block in blocks:
                fi = block.file_index
                for no, raw in enumerate(block.lines, block.first_line):
                    if type(raw) is not bytes or (skipped and (fi, no) in skipped):
                        continue
                    try:
                        obj = orjson.loads(raw)
                        cid = next(obj[f] for f in self._id_fields if f in obj)
                    except (orjson.JSONDecodeError, TypeError, StopIteration):
                        continue
                    if type(cid) is not str or cid in out:
                        continue
                    problem, line = check_request(obj, raw)
                    if problem is None and line is not None:
                        if lane_of is not None:
                            mine = lane_of(obj)
                            if lane is None:
                                lane = mine
                            elif mine != lane:
                                continue  # another lane's line inside the span: its own chunk's
                        out[cid] = line
        if row.digest is not None and chunk_digest(list(out.values()), like=row.digest) != row.digest:
            raise JobMismatch(changed_message(self._sources[row.start_file].path, row.start_line or 1))
        return out


def changed_message(path: str, line: int) -> str:
    return (f"input {path} changed since the job started: its requests from line {line:,} read differently "
            f"now (the same size or not); nothing of it is sent mixed. Put the original input back to carry on, "
            f"or start afresh with another --out")
