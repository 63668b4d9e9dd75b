"""An ended batch's slot: given back as its commit begins (once), waking a producer that waits to read on."""

import asyncio
from types import SimpleNamespace
from unittest.mock import AsyncMock, Mock

from batch_scheduler.job.collect.collector import Collected
from batch_scheduler.job.collect.ended import Endings
from batch_scheduler.providers.base import BatchInfo, BatchState


async def test_a_batch_beginning_its_commit_gives_its_slot_back_once_and_wakes_the_producer():
    committed = asyncio.Event()
    in_commit = asyncio.Event()

    class Collector:
        provider = SimpleNamespace(release=AsyncMock())

        async def collect(self, row, info, *, downloaded=None):
            downloaded()  # every line is in: the commit begins
            in_commit.set()
            await committed.wait()  # the fsync and the ledger's transaction
            return Collected(1, 0, {})

    admission = SimpleNamespace(queues=None, give_slot=Mock(), settled=Mock(), fail=Mock())
    endings = Endings(SimpleNamespace(mark_ended=AsyncMock()), SimpleNamespace(finished=0), admission, Collector(),
                      None, SimpleNamespace(settled=Mock()), SimpleNamespace(batch_collected=Mock()),
                      SimpleNamespace(live={7}), max_attempts=3)
    payload = SimpleNamespace(row=SimpleNamespace(id=7, adopted=False, submitted_at=None),
                              flight=SimpleNamespace(remaining=1, weight=None))
    endings.moved.clear()
    task = asyncio.create_task(endings.collect(payload, BatchInfo("b1", BatchState.ENDED, ended_at=1.0)))
    await asyncio.wait_for(in_commit.wait(), 1)
    assert admission.give_slot.call_count == 1 and endings.moved.is_set()  # during the commit, not after it
    committed.set()
    await task
    assert admission.give_slot.call_count == 1  # not a second time once collected
