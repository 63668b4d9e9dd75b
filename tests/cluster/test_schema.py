"""`ensure_schema` (every node's start, every `submit` and `cancel`) leaves a schema of its own version alone:
it takes no lock on the tables busy nodes write, so a `submit` beside them neither waits for them nor meets
"deadlock detected"; an older schema is still brought up to date."""

from __future__ import annotations

import threading

import psycopg

from batch_scheduler.state.ledger import pg


def test_a_made_schema_is_left_alone_while_a_node_holds_its_tables(pg_url):
    pg.ensure_schema(pg_url)
    with psycopg.connect(pg_url) as busy:  # a node at work: row locks on the tables, its transaction open
        busy.execute("LOCK TABLE batch_scheduler.chunks, batch_scheduler.jobs IN ROW EXCLUSIVE MODE")
        done = threading.Event()
        worker = threading.Thread(target=lambda: (pg.ensure_schema(pg_url), done.set()), daemon=True)
        worker.start()
        worker.join(20)
        assert done.is_set(), "ensure_schema waited for the tables a node holds"
        busy.rollback()


def test_a_schema_of_another_version_is_brought_up_to_date_and_stamped(pg_url):
    pg.ensure_schema(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as db:  # as an earlier version left it: no column, no stamp
        db.execute("ALTER TABLE batch_scheduler.chunks DROP COLUMN digest")
        db.execute("DROP TABLE batch_scheduler.schema_stamp")
    pg.ensure_schema(pg_url)
    with psycopg.connect(pg_url) as db:
        assert db.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'batch_scheduler'"
                          " AND table_name = 'chunks' AND column_name = 'digest'").fetchone() == (1,)
        assert db.execute("SELECT stamp FROM batch_scheduler.schema_stamp").fetchall() == [(pg.SCHEMA_STAMP,)]
