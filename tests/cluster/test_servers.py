"""The real components the cluster tests run against start, answer, and keep data across a restart."""

from __future__ import annotations

import psycopg
import pytest


def test_postgres_answers_with_its_own_clock_and_keeps_data_across_an_immediate_stop(pg_server, pg_url):
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("CREATE TABLE t (x int)")
        db.execute("INSERT INTO t VALUES (7)")
        assert db.execute("SHOW fsync").fetchone() == ("off",)
    pg_server.stop("immediate")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_url, connect_timeout=2)
    pg_server.start()
    with psycopg.connect(pg_url) as db:
        assert db.execute("SELECT x FROM t").fetchall() == [(7,)]


def test_moto_refuses_a_second_write_of_a_write_once_object(s3):
    import obstore
    from obstore.exceptions import AlreadyExistsError
    from obstore.store import S3Store

    store = S3Store(s3.new_bucket())  # endpoint and credentials from the environment
    obstore.put(store, "k.txt", b"one", mode="create")
    with pytest.raises(AlreadyExistsError):
        obstore.put(store, "k.txt", b"two", mode="create")
    assert bytes(obstore.get(store, "k.txt").bytes()) == b"one"
