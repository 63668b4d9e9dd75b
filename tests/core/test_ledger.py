"""Ledgers written by earlier versions open, and resume, on this one."""

import sqlite3

from batch_scheduler.core.ledger import SCHEMA, Ledger, RetryState


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
