"""Ledgers written by earlier versions open, and resume, on this one."""

import re
import sqlite3

from batch_scheduler.state.sqlite import SCHEMA, ChunkKind, Ledger, RetryState, RetryWait


def test_a_ledger_from_before_the_skipped_column_opens_and_gains_it(tmp_path):
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


def test_a_ledger_from_before_the_digest_column_reads_read_only_and_gains_it_on_open(tmp_path):
    path = str(tmp_path / "ledger.db")
    old = sqlite3.connect(path)  # what an earlier version made: chunks without the digest column
    old.executescript(re.sub(r",(\s+-- input kind: JSON[^\n]*)\n\s+digest TEXT[^\n]*", r"\1", SCHEMA))
    assert "digest" not in {r[1] for r in old.execute("PRAGMA table_info(chunks)")}
    old.execute("INSERT INTO chunks (kind, take, state, batch_id) VALUES ('input', 5, 'submitted', 'b1')")
    old.commit()
    old.close()
    readonly = Ledger(path, readonly=True)  # `status` while the earlier version still runs the job
    try:
        (row,) = readonly.all_chunks()
        assert row.batch_id == "b1" and row.digest is None
    finally:
        readonly.close()
    ledger = Ledger(path)
    try:
        (row,) = ledger.all_chunks()
        assert row.digest is None  # nothing to check it against: read again as before
    finally:
        ledger.close()
    db = sqlite3.connect(path)
    assert "digest" in {r[1] for r in db.execute("PRAGMA table_info(chunks)")}
    db.close()


def test_a_ledger_from_before_retry_waits_opens_and_its_pending_requests_are_due(tmp_path):
    path = str(tmp_path / "ledger.db")
    old = sqlite3.connect(path)
    old.executescript(re.sub(r"last_line BLOB,.*\n\s*not_before[^\n]*", "last_line BLOB", SCHEMA))
    assert "not_before" not in {r[1] for r in old.execute("PRAGMA table_info(retries)")}
    old.execute("INSERT INTO retries (custom_id, request, attempts, state) VALUES ('a', x'7b7d', 1, 'pending')")
    old.commit()
    old.close()
    ledger = Ledger(path)
    try:
        assert ledger.sync(lambda db: db.execute("SELECT custom_id, not_before FROM retries").fetchall()) == [("a", 0)]
    finally:
        ledger.close()


async def test_a_parked_request_waits_longer_after_each_attempt_before_it_is_due(tmp_path):
    ledger = Ledger(str(tmp_path / "ledger.db"))
    try:
        chunk = await ledger.record_intent(kind=ChunkKind.INPUT, root_seq=0, take=3, nbytes=1)
        park = [(cid, b"{}", attempts, RetryState.PENDING, None) for cid, attempts in (("a", 1), ("b", 2), ("c", 5))]
        await ledger.record_collected(chunk, offsets=[0], counts={}, park=park, finals=[],
                                      wait=RetryWait(30.0, 600.0), now=1_000.0)
        assert RetryWait(30.0, 600.0).after(5) == 480.0 and RetryWait(30.0, 100.0).after(5) == 100.0
        assert await ledger.next_retry_at() == 1_030.0
        assert [c for c, _, _ in await ledger.pending_retries(10, now=1_029.0)] == []
        assert [c for c, _, _ in await ledger.pending_retries(10, now=1_030.0)] == ["a"]
        assert [c for c, _, _ in await ledger.pending_retries(10, now=1_060.0)] == ["a", "b"]
        assert [c for c, _, _ in await ledger.pending_retries(10, now=1_480.0)] == ["a", "b", "c"]
        assert await ledger.count_retries(RetryState.PENDING) == 3  # waiting or due, all pending
    finally:
        ledger.close()


async def test_an_input_chunk_keeps_its_custom_ids_and_so_do_the_halves_of_a_split(tmp_path):
    ledger = Ledger(str(tmp_path / "ledger.db"))
    try:
        chunk = await ledger.record_intent(kind=ChunkKind.INPUT, root_seq=0, take=4, nbytes=1, ids=["a", "b", "c", "d"])
        retry = await ledger.record_intent(kind=ChunkKind.RETRY, take=1, nbytes=1, retry_ids=["x"])
        assert await ledger.chunk_ids(chunk) == ["a", "b", "c", "d"]
        assert await ledger.chunk_ids(retry) is None  # a retry chunk's requests are rows of `retries`
        left, right = await ledger.record_split(chunk, [(0, 2, 1, ["a", "b"]), (2, 2, 1, ["c", "d"])])
        assert (await ledger.chunk_ids(left), await ledger.chunk_ids(right)) == (["a", "b"], ["c", "d"])
    finally:
        ledger.close()
