"""The next batch's results download, opened while the batch before it commits.

One batch is collected at a time (the collector's lock), and the end of each is a commit: the shards fsync'd,
then the ledger's transaction. Meanwhile the provider could already be sending the next batch's results.
`Turns` is that lock, handed to its waiters in the order they came: when the holder begins its commit, the
next waiter in line opens its download (`committing`): its first block is fetched in a task of its own
(`Early`), the rest waits in the connection's buffers. At most one download is open ahead of the lock.
Nothing is written before the lock is held: the download is only read, and what it gives goes to the
shards under the lock, as any download.
A download that fails early fails where it is read, under the lock, and is handled as any other (a 404
looked at again, a cut download fetched again from the start).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import suppress

Block = list[bytes]


class Early:
    """A results download opened ahead of the lock: its first block fetched in a task of its own."""

    def __init__(self, blocks: AsyncIterator[Block]):
        self._blocks = blocks
        self._first: asyncio.Task[Block | None] = asyncio.create_task(self._next(), name="results opened early")

    async def _next(self) -> Block | None:
        return await anext(self._blocks, None)

    async def blocks(self) -> AsyncIterator[Block]:
        """The download's blocks from the first, as the provider's `result_blocks` gives them."""
        first = await self._first
        if first is None:
            return
        yield first
        async for block in self._blocks:
            yield block

    async def close(self) -> None:
        """Stop it (nothing of it was read under the lock, or the collector is going away)."""
        self._first.cancel()
        with suppress(BaseException):
            await self._first
        aclose = getattr(self._blocks, "aclose", None)  # an async generator's: its connection is let go
        if aclose is not None:
            with suppress(Exception):
                await aclose()


class _Waiter:
    __slots__ = ("opener", "turn", "early")

    def __init__(self, opener: Callable[[], AsyncIterator[Block]] | None):
        self.opener = opener
        self.turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # set: the lock is its
        self.early: Early | None = None


class Turns:
    """The collector's lock, handed to its waiters in the order they came; the first of them opens its download
    when the holder begins its commit (`committing`)."""

    def __init__(self) -> None:
        self._held = False
        self._line: deque[_Waiter] = deque()

    async def acquire(self, opener: Callable[[], AsyncIterator[Block]] | None) -> Early | None:
        """Hold the lock (`release` it after). `opener` opens this batch's download: called if the lock's holder
        begins its commit while this waiter is next in line; that download is returned (else None)."""
        if not self._held:
            self._held = True
            return None
        waiter = _Waiter(opener)
        self._line.append(waiter)
        try:
            await waiter.turn
        except BaseException:
            if waiter.turn.done() and not waiter.turn.cancelled():
                self.release()  # handed over as this waiter was cancelled: to the next one
            elif waiter in self._line:  # (a release may have passed over it already)
                self._line.remove(waiter)
            if waiter.early is not None:
                await waiter.early.close()
            raise
        return waiter.early

    def committing(self) -> None:
        """The holder begins its commit: the next in line opens its download (at most one is open ahead)."""
        if self._line and (nxt := self._line[0]).opener is not None and nxt.early is None:
            nxt.early = Early(nxt.opener())

    def release(self) -> None:
        while self._line:
            waiter = self._line.popleft()
            if not waiter.turn.done():
                waiter.turn.set_result(None)  # still held: handed over
                return
        self._held = False
