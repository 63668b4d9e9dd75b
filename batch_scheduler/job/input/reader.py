"""Stage 1: read input files in big blocks and split them into lines ourselves.

A source yields `Block`s: a list of raw lines (bytes, no newline) with the line number and position
of the first one. Positions let a later stage read a range of the input again (to find the request
behind a result that must be retried). For JSONL (plain or .gz) a position is a byte offset in the
uncompressed stream; for row sources (CSV, templates; see `sources.py`) it is a row index.
There is no await per line: one await per HOP_BLOCKS blocks of `BLOCK_BYTES` (a bucket object: per ranged GET),
in a worker thread unless the bytes are in the page cache (`LocalFile.cached`): then on the loop.
"""

from __future__ import annotations

import asyncio
import glob
import gzip
import os
import zlib
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from itertools import islice
from typing import BinaryIO, Protocol, cast

from batch_scheduler.core.errors import InputError, UsageError
from batch_scheduler.core.lines import split_lines
from batch_scheduler.state.objects import BucketObjects, RangeReader, split_object_url

# A block stays under the mmap threshold the CLI sets (core/loop.py, 512 KiB): its buffer comes from the heap
# and is used again, where a 4 MiB read was mapped and zeroed afresh each time (200,000 requests: 30,000 page
# faults against 150,000, 0.2 s less CPU). A bucket object is read in larger ranged GETs (fewer calls).
BLOCK_BYTES = 256 << 10
HOP_BLOCKS = 4  # blocks read at a time: a thread hop costs the loop a wake-up and a handover of the GIL
RANGE_BYTES = 4 << 20


@dataclass(slots=True)
class Block:
    file_index: int
    lines: list  # bytes, or a str naming what is wrong with the line (row sources)
    first_line: int
    start_pos: int
    # JSONL: the bytes the lines were split from, each line and its newline in order (a chunk's digest hashes
    # these rather than joining the lines again); None where the lines are not such bytes
    raw: memoryview | None = None


class GzipBlocks:
    """A .gz file read in blocks whose last block before a cut is not lost: `read(n)` gathers what each
    step of the decompressor gives (`read1`), so when the compressed data ends early it returns what it
    has, and the next `read` raises the EOFError (a plain `GzipFile.read(n)` drops the whole block)."""

    def __init__(self, path: str):
        self._f = gzip.open(path, "rb")  # noqa: SIM115 - closed by close()
        self._failed: BaseException | None = None

    def read(self, n: int) -> bytes:
        if self._failed is not None:
            raise self._failed
        parts: list[bytes] = []
        got = 0
        try:
            while got < n and (piece := self._f.read1(n - got)):
                parts.append(piece)
                got += len(piece)
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:
            if not parts:
                raise
            self._failed = err  # said at the next read, after the lines before it
        return b"".join(parts)

    def seek(self, pos: int) -> int:
        return self._f.seek(pos)

    def close(self) -> None:
        self._f.close()


_NOWAIT = getattr(os, "RWF_NOWAIT", None)  # Linux: a read that fails rather than wait for the disk


class LocalFile:
    """A regular file read at explicit offsets (`os.pread`) that can say whether its next bytes are in the page
    cache (`cached`). Then a read cannot wait on the disk, and the reader reads on the event loop: a thread
    hop (a wake-up each way and the GIL handed over and back) cost more than reading a cached MiB (-2% CPU
    at 200,000 requests in alternating runs)."""

    def __init__(self, path: str):
        self._fd: int | None = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self._pos = 0
        self._probe = bytearray(1)

    def read(self, n: int = -1) -> bytes:
        assert self._fd is not None, "read after close"
        if n < 0:
            n = max(0, os.fstat(self._fd).st_size - self._pos)
        data = os.pread(self._fd, n, self._pos)
        self._pos += len(data)
        return data

    def seek(self, pos: int) -> int:
        self._pos = pos
        return pos

    def cached(self, n: int) -> bool:
        """Whether the first and the last page of the next n bytes are in the page cache (what lies between has
        as good as surely come with them: the kernel reads ahead of a file read in order). False where the
        kernel cannot say (no RWF_NOWAIT, a file system without it)."""
        if _NOWAIT is None or self._fd is None:
            return False
        for at in (self._pos, self._pos + max(n, 1) - 1):
            try:
                if os.preadv(self._fd, [self._probe], at, _NOWAIT) == 0:
                    return True  # past the end: nothing to wait for
            except OSError:  # BlockingIOError: not cached; EOPNOTSUPP and the like: cannot say
                return False
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LineTooLong:
    """Marker in place of a line longer than the limit; the line itself was never held whole.

    Its `len` is the line's (newline excluded), so positions move past it as past any line."""

    __slots__ = ("size",)

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size


class ByteStream(Protocol):
    """What a source reads from: a file, a gzip stream or a bucket object's ranged reader."""

    def seek(self, pos: int, /) -> int: ...
    def read(self, size: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


class Source(Protocol):
    """What every input is (`JsonlSource`, `sources.TemplateSource`): blocks of lines from a position."""

    unit: str  # what a position counts: "bytes" (JSONL) or "rows"
    path: str
    index: int

    def blocks(self, start_pos: int = 0, start_line: int = 1) -> AsyncGenerator[Block, None]: ...


def _next_blocks(read: Iterator[Block], n: int) -> tuple[list[Block], Exception | None]:
    """Up to n blocks (none: the end), and the error that stopped the read if one did."""
    blocks: list[Block] = []
    try:
        blocks.extend(islice(read, n))
    except Exception as exc:  # noqa: BLE001 - raised by the caller once the blocks before it have gone
        return blocks, exc
    return blocks, None


class JsonlSource:
    """A .jsonl file, or a .jsonl.gz streamed without unpacking to disk."""

    unit = "bytes"

    def __init__(self, path: str, index: int, max_line_bytes: int = 256 << 20):
        self.path = path
        self.index = index
        self.max_line_bytes = max_line_bytes

    def _open(self, pos: int) -> ByteStream:
        f: ByteStream
        if self.path.endswith(".gz"):
            f = cast(BinaryIO, GzipBlocks(self.path))
        elif os.path.isfile(self.path):
            f = LocalFile(self.path)
        else:  # a pipe or a device: read in order
            f = open(self.path, "rb")  # noqa: SIM115 - closed by the caller
        if pos:
            f.seek(pos)  # gzip: decompresses forward to pos
        return f  # (seeking a gzip stream decompresses up to pos; blocks() does it off the loop)

    async def blocks(self, start_pos: int = 0, start_line: int = 1) -> AsyncGenerator[Block, None]:
        """Blocks of lines from `start_pos`. A line longer than `max_line_bytes` comes as a `LineTooLong`, at
        most that much of it ever held (a file with no newline at all, like /dev/zero, is one such line)."""
        f = self._open(0)  # opened and closed on the loop: a cancelled thread hop would leak the file
        try:
            if start_pos:
                await asyncio.to_thread(self._read, f, start_line, start_pos)
            read = self.read_blocks(f, start_pos, start_line)
            hop = 1 if isinstance(f, RangeReader) else HOP_BLOCKS  # a bucket's ranged GET is a hop's worth
            local = f if isinstance(f, LocalFile) else None
            while True:  # HOP_BLOCKS reads and splits of BLOCK_BYTES at a time
                if local is not None and local.cached(hop * BLOCK_BYTES):
                    blocks, failed = _next_blocks(read, hop)  # on the loop: nothing to wait for
                    await asyncio.sleep(0)  # the loop's other tasks between hops, as a thread hop lets them
                else:  # the disk, a decompressor, a bucket: in a thread
                    blocks, failed = await asyncio.to_thread(_next_blocks, read, hop)
                for block in blocks:
                    yield block
                if failed is not None:
                    raise failed  # after every block read before it (a cut .gz)
                if not blocks:
                    break
        finally:
            f.close()

    def sync_blocks(self) -> Iterator[Block]:
        """Every block from the start, read in the caller's thread (export, read_results: no event loop)."""
        f = self._open(0)
        try:
            yield from self.read_blocks(f, 0, 1)
        finally:
            f.close()

    def read_blocks(self, f: ByteStream, pos: int, line_no: int) -> Iterator[Block]:
        """The blocks of `f` from its current position `pos` (line `line_no`), in reads of BLOCK_BYTES.

        A line longer than `max_line_bytes` comes as a `LineTooLong`, at most that much of it ever held,
        across any number of reads (a file with no newline at all, like /dev/zero, is one such line)."""
        limit = self.max_line_bytes
        tail: list[bytes] = []  # the unfinished line, in the pieces read (joined once it ends)
        tail_bytes = 0
        skipping = 0  # bytes of an over-long line passed over so far (none of it kept)
        while data := self._read(f, line_no):
            start = 0  # where this read's own lines begin
            if skipping or tail:
                nl = data.find(b"\n")
                size = skipping + tail_bytes + (len(data) if nl < 0 else nl)  # of the unfinished line
                if nl < 0:  # the line goes on past this block
                    if skipping or size > limit:
                        skipping, tail, tail_bytes = size, [], 0
                    else:
                        tail.append(data)
                        tail_bytes = size
                    continue
                if skipping or size > limit:
                    yield Block(self.index, [LineTooLong(size)], line_no, pos)
                    pos += size + 1
                else:  # the line the reads before began, alone: the rest of this read is not copied to join it
                    first = b"".join([*tail, data[:nl + 1]])
                    yield Block(self.index, [first[:-1]], line_no, pos, memoryview(first))
                    pos += len(first)
                line_no += 1
                start = nl + 1
                skipping, tail, tail_bytes = 0, [], 0
            lines, rest = split_lines(data, start)
            if lines:
                yield Block(self.index, lines, line_no, pos, memoryview(data)[start:len(data) - len(rest)])
                pos += len(data) - start - len(rest)
                line_no += len(lines)
            if len(rest) > limit:
                skipping = len(rest)
            elif rest:
                tail, tail_bytes = [rest], len(rest)
        if skipping:
            yield Block(self.index, [LineTooLong(skipping)], line_no, pos)
        elif tail:
            yield Block(self.index, [b"".join(tail)], line_no, pos)


    def _read(self, f: ByteStream, line_no: int, seek: int | None = None) -> bytes:
        """The next block (or, with `seek`, a move there); a bad .gz is an InputError at `line_no`."""
        try:
            if seek is not None:
                f.seek(seek)
                return b""
            return f.read(RANGE_BYTES if isinstance(f, RangeReader) else BLOCK_BYTES)
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:
            raise InputError(self.path, line_no, compressed_problem(err)) from None


def compressed_problem(err: BaseException) -> str:
    """What a gzip error means, and what to do (the job's input cannot change under it)."""
    if isinstance(err, EOFError):
        what = "the compressed data ends early (a truncated or partly copied file?)"
    elif isinstance(err, gzip.BadGzipFile):
        what = f"not a gzip file ({err})"
    else:
        what = f"the compressed data is damaged ({err})"
    return f"{what}: start afresh with a complete copy in another --out"


class ObjectJsonlSource(JsonlSource):
    """A .jsonl object in a bucket (s3://, gs://, az://), read with ranged GETs of RANGE_BYTES from a
    position (a byte offset: the ledger's spans), so a chunk read again costs its own bytes only."""

    def __init__(self, url: str, index: int, max_line_bytes: int = 256 << 20):
        super().__init__(url, index, max_line_bytes)
        self.etag: str | None = None  # the version the job started with: every read is of it (pin_inputs)

    def _open(self, pos: int) -> ByteStream:
        base, key = split_object_url(self.path)
        return RangeReader(BucketObjects(base), key, pos, etag=self.etag)


def pin_inputs(sources: Sequence[Source], prints: Sequence[object]) -> None:
    """Each object input read only at the ETag the job started with (its fingerprint in the ledger)."""
    for source, found in zip(sources, prints, strict=False):
        if isinstance(source, ObjectJsonlSource) and isinstance(found, dict) and isinstance(found.get("etag"), str):
            source.etag = found["etag"]


async def span_blocks(sources: Sequence[Source], start: tuple[int, int, int], end: tuple[int, int] | None
                      ) -> AsyncGenerator[Block, None]:
    """Blocks from (file, pos, line) up to (file, pos) exclusive; to the end of input if end is None."""
    sf, sp, sl = start
    for fi in range(sf, len(sources)):
        src = sources[fi]
        async with aclosing(src.blocks(sp if fi == sf else 0, sl if fi == sf else 1)) as blocks:
            async for block in blocks:
                if end is not None and fi == end[0]:
                    if block.start_pos >= end[1]:
                        break
                    yield _clip(block, end[1], src.unit)
                else:
                    yield block
        if end is not None and fi >= end[0]:
            return


def _clip(block: Block, end_pos: int, unit: str) -> Block:
    pos, keep = block.start_pos, 0
    for raw in block.lines:
        if pos >= end_pos:
            break
        keep += 1
        pos += 1 if unit == "rows" else len(raw) + 1
    return block if keep == len(block.lines) else Block(block.file_index, block.lines[:keep],
                                                        block.first_line, block.start_pos)


def expand_inputs(patterns: list[str]) -> list[str]:
    """Globs and plain paths -> existing files, in the order given (each glob sorted)."""
    files: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise UsageError(f"{pattern}: no file matches")
        for path in matches:
            if not os.path.isfile(path):
                raise UsageError(f"{path}: no such file")
            if path not in files:
                files.append(path)
    return files
