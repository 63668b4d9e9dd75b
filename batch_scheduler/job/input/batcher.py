"""Stage 2: cut validated lines into chunks, each the body of one batch.

A chunk closes at `batch_size` requests or `batch_bytes` of body, whichever comes first. The cut
depends only on the input and the batch-shaping options, so a resumed run cuts the same chunks and
can match them to the ledger by sequence number.

Lanes. A provider whose batch may hold one model only (OpenAI) gives each accepted line a lane (the
validator's `lane`), and the cut keeps one open chunk per lane: a chunk holds the lines of one lane,
its span running from its first line to just past its last. Spans of different lanes overlap; a
chunk's own lines in its span are those of the lane of its first line (`replay` reads them back so).
Chunks are numbered as they close, which depends on the input alone, so the cut stays deterministic.
Memory stays bounded: when the open chunks together hold more than LANE_HOLD batches' worth (requests
or bytes), the fullest closes early. A rejected line is listed in every open chunk's `skipped`.
`chunk_digest` (kept in the ledger when a chunk is first sent) proves it: a chunk read again that
hashes otherwise means the input changed under the job.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from itertools import islice

import orjson
import xxhash

from batch_scheduler.core.errors import InputError, UsageError
from batch_scheduler.job.input.reader import Block
from batch_scheduler.job.input.validate import BLANK, Rejects, Validator

BODY_WRAPPER_BYTES = 64  # '{"requests":[' ... ']}' and slack
DIGEST_PIECE_BYTES = 1 << 20  # what chunk_digest joins and hashes at a time
DIGEST_PREFIX = "xxh3-128:"  # a chunk digest's algorithm (none: sha256, a ledger older than XXH3)
LANE_HOLD = 2  # batches' worth the open chunks of all lanes may hold together


@dataclass
class Chunk:
    seq: int
    start_file: int
    start_pos: int
    start_line: int
    end_file: int = 0
    end_pos: int = 0
    lines: list[bytes] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    nbytes: int = BODY_WRAPPER_BYTES
    skipped: list[tuple[int, int]] = field(default_factory=list)  # (file, line) refused inside the span
    lane: str | None = None  # with lanes: the lane its lines are in
    # with lanes: lines refused after it closed while its lane had no open chunk (what a merge with the
    # lane's next chunk must skip too: `_with_lane_floor`); not kept anywhere
    gap_skipped: list[tuple[int, int]] = field(default_factory=list)
    # the input's bytes of its lines, each with its newline, in order (slices of the reader's blocks), while every
    # line came so; else None. What chunk_digest hashes (dropped once hashed); not kept anywhere
    pieces: list[memoryview] | None = None

    @property
    def n(self) -> int:
        return len(self.lines)


async def cut_chunks(blocks: AsyncGenerator[Block, None], validator: Validator, rejects: Rejects, *,
                     batch_size: int, batch_bytes: int, overhead: Callable[[int], int],
                     unit_of: Callable[[int], str]) -> AsyncGenerator[Chunk, None]:
    """Validated chunks from a stream of blocks, in input order, numbered from 0. A provider with a floor
    (`min_batch_requests`) gets no chunk under it (`_with_floor`), with lanes none but a lane's only one
    (`_with_lane_floor`)."""
    chunks = _cut(blocks, validator, rejects, batch_size=batch_size, batch_bytes=batch_bytes, overhead=overhead,
                  unit_of=unit_of)
    if validator.min_batch > 1:
        chunks = (_with_lane_floor if validator.lanes else _with_floor)(chunks, validator.min_batch)
    async with aclosing(chunks):
        async for ready in chunks:
            yield ready


async def _with_floor(chunks: AsyncGenerator[Chunk, None], floor: int) -> AsyncGenerator[Chunk, None]:
    """The chunks, none under `floor` requests: each waits until two more have closed, and a last chunk
    under the floor joins the one before it (one batch of up to batch_size + floor - 1 requests). A whole
    input under the floor is refused before anything is sent (UsageError, saying what to do)."""
    before: Chunk | None = None
    held: Chunk | None = None
    async with aclosing(chunks):
        async for chunk in chunks:
            if before is not None:
                yield before
            before, held = held, chunk
    if held is not None and held.n < floor:
        if before is None:
            raise UsageError(f"the job has {held.n:,} requests, fewer than the {floor:,} the provider takes in a "
                             f"batch: add requests to reach {floor:,}, or send these with another provider")
        _merge(before, held)
        held = None
    for last in (before, held):
        if last is not None:
            yield last


def _merge(before: Chunk, after: Chunk) -> None:
    """`after` (the next chunk of `before`'s lane) joins `before`: one span, the lines refused between them
    skipped too."""
    before.lines += after.lines
    before.pieces = None
    before.ids += after.ids
    before.skipped += before.gap_skipped + after.skipped
    before.nbytes += after.nbytes - BODY_WRAPPER_BYTES
    before.end_file, before.end_pos = after.end_file, after.end_pos


async def _with_lane_floor(chunks: AsyncGenerator[Chunk, None], floor: int) -> AsyncGenerator[Chunk, None]:
    """`_with_floor` per lane: each lane's last two chunks are held, and at the end a lane's last chunk under
    `floor` joins the one before it. A lane with one chunk under the floor goes as it is (the provider fills
    it up: Bedrock's padding), unless the whole input is under the floor: then it is refused before anything
    is sent, as without lanes (nothing has gone: a chunk goes only when its lane has closed two after it).
    Chunks are numbered again as they go, which depends on the input alone. Holds two batches a lane."""
    held: dict[str | None, list[Chunk]] = {}
    seq = 0

    def out(chunk: Chunk) -> Chunk:
        nonlocal seq
        chunk.seq, seq = seq, seq + 1
        return chunk

    async with aclosing(chunks):
        async for chunk in chunks:
            lane = held.setdefault(chunk.lane, [])
            lane.append(chunk)
            if len(lane) > 2:
                yield out(lane.pop(0))
    total = sum(c.n for lane in held.values() for c in lane)
    if seq == 0 and 0 < total < floor:
        raise UsageError(f"the job has {total:,} requests, fewer than the {floor:,} the provider takes in a "
                         f"batch: add requests to reach {floor:,}, or send these with another provider")
    for lane in held.values():
        if len(lane) == 2 and lane[1].n < floor:
            _merge(lane[0], lane.pop())
    for chunk in sorted((c for lane in held.values() for c in lane), key=lambda c: c.seq):
        yield out(chunk)


async def _cut(blocks: AsyncGenerator[Block, None], validator: Validator, rejects: Rejects, *,
               batch_size: int, batch_bytes: int, overhead: Callable[[int], int],
               unit_of: Callable[[int], str]) -> AsyncGenerator[Chunk, None]:
    """The cut. Lines without a lane (`validator.lane` None: most jobs' every line) fill one open chunk; from
    the first line with a lane on, `_Lanes` cuts, the open chunk becoming the lane-None chunk, so the chunks
    are those `_Lanes` would have cut from the start."""
    check = validator.check
    reject = rejects.add
    seq = 0
    chunk: Chunk | None = None
    last: Chunk | None = None  # the chunk closed last (the lines refused before the next opens: its gap_skipped)
    lanes: _Lanes | None = None
    per_line = overhead(0)
    # The open chunk's lists and byte count live in locals (this loop runs once per input line);
    # `room` is how many more requests it may take.
    lines: list[bytes] = []
    ids: list[str] = []
    nbytes = BODY_WRAPPER_BYTES
    room = batch_size
    end_file = end_pos = 0  # just past the open chunk's last line
    unreadable: list[InputError] = []  # the input could not be read on: the chunk so far still goes, then this
    async with aclosing(blocks), aclosing(_until_unreadable(blocks, unreadable)) as readable:
        async for block in readable:  # closing us closes the reader (and its file) too
            fi = block.file_index
            rows = unit_of(fi) == "rows"
            pos = block.start_pos
            line_no = block.first_line - 1
            todo = block.lines
            raw = None if rows else block.raw  # the block's bytes from its first line (JSONL): the chunks' pieces
            # The block's first lines in bulk, while the fast check takes them (most blocks: all of them);
            # the same chunks, lists and positions as the loop below gives them one by one.
            run = validator.accept_plain(todo) if lanes is None and not rows else ()
            taken, j = len(run), 0
            while j < taken:
                if chunk is None:
                    chunk = Chunk(seq, fi, pos, line_no + 1, pieces=[])
                    lines, ids, nbytes, room = chunk.lines, chunk.ids, BODY_WRAPPER_BYTES, batch_size
                take = min(room, taken - j)
                part = todo[j:j + take]
                part_bytes = sum(map(len, part))
                full = False  # a line of the run is left that does not fit: the chunk closes before it
                if nbytes + part_bytes + per_line * take > batch_bytes:
                    fit, part_bytes = _fitting(part, nbytes, per_line, batch_bytes, bool(lines))
                    full, take, part = fit < take, fit, part[:fit]
                if take:
                    if chunk.pieces is not None:  # the part's lines as the input has them: one slice
                        if raw is None:
                            chunk.pieces = None
                        else:
                            at = pos - block.start_pos
                            chunk.pieces.append(raw[at:at + part_bytes + take])
                    lines += part
                    ids += run[j:j + take]
                    nbytes += part_bytes + per_line * take
                    room -= take
                    j += take
                    line_no += take
                    pos += part_bytes + take
                    end_file, end_pos = fi, pos
                if room == 0 or full:
                    chunk.end_file, chunk.end_pos, chunk.nbytes = end_file, end_pos, nbytes
                    yield chunk
                    seq += 1
                    last, chunk = chunk, None
            for raw in islice(todo, taken, None) if taken else todo:
                line_no += 1
                line_start = pos
                pos += 1 if rows else len(raw) + 1
                cid, out, err = check(raw)
                if err is not None:
                    if err is not BLANK:
                        reject(fi, line_no, cid, err)
                        if lanes is not None:
                            lanes.skip(fi, line_no)
                        elif chunk is not None:
                            chunk.skipped.append((fi, line_no))
                        elif last is not None:
                            last.gap_skipped.append((fi, line_no))
                    continue
                assert out is not None and cid is not None  # check() accepted the line
                size = len(out) + per_line
                if lanes is not None or validator.lane is not None:
                    if lanes is None:
                        lanes = _Lanes(seq, batch_size, batch_bytes, last)
                        if chunk is not None:
                            chunk.end_file, chunk.end_pos, chunk.nbytes = end_file, end_pos, nbytes
                            chunk.pieces = None  # the lanes add lines to it one by one
                            lanes.adopt(chunk)
                            chunk = None
                    for ready in lanes.add(validator.lane, fi, line_start, line_no, pos, cid, out, size):
                        yield ready
                    continue
                if chunk is not None and nbytes + size > batch_bytes:
                    chunk.end_file, chunk.end_pos, chunk.nbytes = end_file, end_pos, nbytes
                    yield chunk
                    seq += 1
                    last, chunk = chunk, None
                if chunk is None:
                    chunk = Chunk(seq, fi, line_start, line_no)
                    lines, ids, nbytes, room = chunk.lines, chunk.ids, BODY_WRAPPER_BYTES, batch_size
                lines.append(out)
                ids.append(cid)
                chunk.pieces = None  # a line taken one by one: the digest joins the lines
                nbytes += size
                end_file, end_pos = fi, pos
                room -= 1
                if room == 0:
                    chunk.end_file, chunk.end_pos, chunk.nbytes = end_file, end_pos, nbytes
                    yield chunk
                    seq += 1
                    last, chunk = chunk, None
    if lanes is not None:
        for ready in lanes.close_all():
            yield ready
    elif chunk is not None:
        chunk.end_file, chunk.end_pos, chunk.nbytes = end_file, end_pos, nbytes
        yield chunk
    if unreadable:
        raise unreadable[0]


async def _until_unreadable(blocks: AsyncGenerator[Block, None], unreadable: list[InputError]) -> AsyncGenerator[Block, None]:
    """The blocks, ending (not failing) where the input cannot be read on; the error goes to `unreadable`."""
    try:
        async for block in blocks:
            yield block
    except InputError as err:
        unreadable.append(err)


def _fitting(part: list[bytes], nbytes: int, per_line: int, batch_bytes: int, started: bool) -> tuple[int, int]:
    """How many of `part` the open chunk (`nbytes` so far; `started`: it holds a line) takes before
    `batch_bytes`, and their bytes: the cut's rule, line by line (a chunk's first line always goes)."""
    take = total = 0
    for raw in part:
        size = len(raw) + per_line
        if nbytes + size > batch_bytes and (take or started):
            break
        nbytes += size
        total += size - per_line
        take += 1
    return take, total


def chunk_digest(lines: list[bytes], pieces: list[memoryview] | None = None, *, like: str | None = None) -> str:
    """The digest of a chunk's request lines (each ends in a newline): what the chunk sends, custom_ids and all.

    XXH3-128 (`xxhash`), named in the digest (DIGEST_PREFIX): about 0.03 us a 1 KB line, where sha256 took
    0.6 (with the CPU's SHA instructions) and was 7% of the event loop's time. It proves what it is kept
    for, that a chunk read again is the chunk sent (as rsync's default checksum proves a file unchanged):
    an edit, a truncation or another file of the same size differs in it but with odds of 2^-128. It is no
    defence against someone who crafts an input to collide, and needs none: who can write the input can
    change it outright. `like`, a digest recorded before: hashed as that one was (a ledger written before
    XXH3 holds sha256 hex digests, no prefix).

    `pieces` (Chunk.pieces), when given, are those very bytes as the input had them, hashed as they are, no
    copy. Else the lines are hashed in pieces of about DIGEST_PIECE_BYTES, each joined once (a copy that size
    at most; joining 1 KB lines costs 0.6 us a line beside the hash)."""
    h = hashlib.sha256() if like is not None and not like.startswith(DIGEST_PREFIX) else xxhash.xxh3_128()
    if pieces is not None:
        for view in pieces:
            h.update(view)
    else:
        n = len(lines)
        step = max(1, n * DIGEST_PIECE_BYTES // (sum(map(len, lines)) + n or 1))  # lines a piece, by mean size
        for start in range(0, n, step):
            piece = lines[start:start + step]  # references only
            piece.append(b"")  # the last line's newline
            h.update(b"\n".join(piece))
    return h.hexdigest() if type(h) is not xxhash.xxh3_128 else DIGEST_PREFIX + h.hexdigest()


class _Lanes:
    """The open chunks of a cut with lanes, one per lane, in the order they were opened, numbered as they close
    (see the module docstring)."""

    def __init__(self, seq: int, batch_size: int, batch_bytes: int, last: Chunk | None):
        self._open: dict[str | None, Chunk] = {}
        # each lane's last closed chunk (`last`: the lane-None one the cut closed before lanes): the lines
        # refused while its lane has no open chunk go in its gap_skipped (a merge with the lane's next chunk
        # under the floor skips them too: `_with_lane_floor`)
        self._closed: dict[str | None, Chunk] = {} if last is None else {None: last}
        self._seq = seq
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes
        self._requests = 0  # held by the open chunks together
        self._nbytes = 0

    def adopt(self, chunk: Chunk) -> None:
        """The cut's open chunk, so far without lanes: the lane-None chunk from now on."""
        self._open[None] = chunk
        self._requests += chunk.n
        self._nbytes += chunk.nbytes

    def skip(self, file_index: int, line: int) -> None:
        for chunk in self._open.values():
            chunk.skipped.append((file_index, line))
        for lane, last in self._closed.items():
            if lane not in self._open:
                last.gap_skipped.append((file_index, line))

    def add(self, lane: str | None, fi: int, line_start: int, line_no: int, pos: int, cid: str, out: bytes,
            size: int) -> Sequence[Chunk]:
        """Put an accepted line in its lane's chunk; the chunks that closed."""
        closed: Sequence[Chunk] = ()
        chunk = self._open.get(lane)
        if chunk is not None and chunk.nbytes + size > self._batch_bytes:
            closed = [self._close(lane)]
            chunk = None
        if chunk is None:
            chunk = self._open[lane] = Chunk(-1, fi, line_start, line_no, lane=lane)
            self._nbytes += chunk.nbytes
        chunk.lines.append(out)
        chunk.ids.append(cid)
        chunk.nbytes += size
        chunk.end_file, chunk.end_pos = fi, pos
        self._requests += 1
        self._nbytes += size
        if chunk.n >= self._batch_size:
            closed = [*closed, self._close(lane)]
        elif self._requests > LANE_HOLD * self._batch_size or self._nbytes > LANE_HOLD * self._batch_bytes:
            closed = [*closed, self._close(max(self._open, key=lambda k: self._open[k].nbytes))]
        return closed

    def close_all(self) -> list[Chunk]:
        return [self._close(lane) for lane in list(self._open)]

    def _close(self, lane: str | None) -> Chunk:
        chunk = self._open.pop(lane)
        self._closed[lane] = chunk
        chunk.seq = self._seq
        self._seq += 1
        self._requests -= chunk.n
        self._nbytes -= chunk.nbytes
        return chunk


def one_lane(pending: Sequence[tuple[str, bytes, int]], lane_of: Callable[[dict], str] | None
             ) -> list[tuple[str, bytes, int]]:
    """Requests parked for another attempt that may share a batch: those in the lane of the first
    (all of them for a provider without lanes). The others wait for the next retry batch."""
    if lane_of is None or not pending:
        return list(pending)
    lanes = [lane_of(orjson.loads(request)) for _, request, _ in pending]
    return [p for p, lane in zip(pending, lanes, strict=True) if lane == lanes[0]]
