"""SQLite ledger files written by earlier versions open, and resume, on this one (the PostgreSQL schema
of earlier versions: test_resume.py)."""

import re
import sqlite3

from batch_scheduler.state.ledger.sqlite import SCHEMA, Ledger, RetryState


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
