"""Write-ahead step 2, on every backend: a chunk is marked just before its create call is sent, so that only
a chunk whose create may have happened is looked for at the provider after a crash; a new intent clears it,
and a ledger made before the mark existed has its `submitting` chunks marked when it is migrated."""

from __future__ import annotations

import re
import sqlite3

from batch_scheduler.state import open_ledger
from batch_scheduler.state.ledger.rows import SCHEMA, ChunkKind, ChunkState


async def test_a_planned_chunk_is_not_marked_until_its_create_is_started_and_a_new_intent_clears_the_mark(ledger):
    chunk_id = await ledger.record_intent(kind=ChunkKind.INPUT, root_seq=0, take=5, nbytes=1_000)
    planned = await ledger.chunk(chunk_id)
    assert (planned.state, planned.create_at) == (ChunkState.SUBMITTING, None)

    started = await ledger.record_creating(chunk_id)
    marked = await ledger.chunk(chunk_id)
    assert marked.create_at == started >= planned.intent_at

    await ledger.record_intent(kind=ChunkKind.INPUT, take=5, nbytes=1_000, chunk_id=chunk_id)  # sent again
    assert (await ledger.chunk(chunk_id)).create_at is None


async def test_a_batch_id_keeps_the_mark_and_a_chunk_no_longer_submitting_is_not_marked(ledger):
    sent = await ledger.record_intent(kind=ChunkKind.INPUT, root_seq=0, take=5, nbytes=1_000)
    started = await ledger.record_creating(sent)
    await ledger.record_submitted(sent, "batch-1")
    assert (await ledger.chunk(sent)).create_at == started
    refused = await ledger.record_intent(kind=ChunkKind.INPUT, root_seq=1, take=5, nbytes=1_000)
    await ledger.set_state(refused, ChunkState.PLANNED)
    await ledger.record_creating(refused)
    assert (await ledger.chunk(refused)).create_at is None


def test_an_sqlite_ledger_made_before_the_mark_looks_for_its_submitting_chunks_as_it_did(tmp_path):
    path = str(tmp_path / "ledger.db")
    old = sqlite3.connect(path)
    old.executescript(re.sub(r",([^\n]*)\n    create_at REAL[^\n]*", r"\1", SCHEMA))  # the schema before it
    assert "create_at" not in {row[1] for row in old.execute("PRAGMA table_info(chunks)")}
    old.execute("INSERT INTO chunks (kind, take, state, intent_at) VALUES ('input', 5, 'submitting', 100.0)")
    old.execute("INSERT INTO chunks (kind, take, state, intent_at, batch_id) VALUES ('input', 5, 'submitted', 90.0,"
                " 'b1')")
    old.commit()
    old.close()
    led = open_ledger(path)
    try:
        assert [(r.state, r.create_at) for r in led.all_chunks()] == [(ChunkState.SUBMITTING, 100.0),
                                                                      (ChunkState.SUBMITTED, None)]
    finally:
        led.close()
