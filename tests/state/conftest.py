"""The ledger tests run on every backend: `ledger` is a fresh SQLite ledger, then a fresh PostgreSQL one
(one cluster job's, claimed) on the session's throwaway server (tests/cluster/conftest.py's fixtures,
which skip outside CI when PostgreSQL is missing and fail under CI=true)."""

from __future__ import annotations

import asyncio

import pytest

from batch_scheduler.state import open_ledger
from tests.cluster.conftest import pg_server, pg_url  # noqa: F401 - the throwaway PostgreSQL, reused

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
async def ledger(request, tmp_path):
    if request.param == "sqlite":
        led = open_ledger(str(tmp_path / "ledger.db"))
    else:
        from tests.cluster.helpers import aclaim, queue_job
        url = request.getfixturevalue("pg_url")
        await asyncio.to_thread(queue_job, url, "job-1", [], str(tmp_path / "out"))
        got = await aclaim(url)
        led = await asyncio.to_thread(open_ledger, url, job_id=got.job_id, token=got.token, name="job-1")
    yield led
    await asyncio.to_thread(led.close)
