"""Fixtures of the cluster tests: one throwaway PostgreSQL and one moto S3 per session, a fresh database
and a fresh bucket per test. Outside CI they skip when a component is missing; under CI=true they fail."""

from __future__ import annotations

import importlib.util

import pytest

from .servers import IN_CI, MotoServer, PgServer, pg_bindir, require

# Without the cluster extra the modules here cannot even be imported: outside CI they are not collected
# (today's suite runs as it did); under CI=true they are, and fail loudly.
_EXTRAS = ("psycopg", "obstore", "moto")
if not IN_CI and any(importlib.util.find_spec(m) is None for m in _EXTRAS):
    collect_ignore_glob = ["test_*.py"]


def _missing_module(name: str) -> str | None:
    if importlib.util.find_spec(name) is None:
        return f"the {name!r} module is not installed (pip install 'batch-scheduler[cluster]')"
    return None


@pytest.fixture(scope="session")
def pg_server():
    require(_missing_module("psycopg"))
    require(None if pg_bindir() else "PostgreSQL server binaries not found (apt-get install postgresql)")
    with PgServer() as server:
        yield server


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh, empty database on the session's server."""
    return pg_server.new_database()


@pytest.fixture(scope="session")
def moto_server():
    require(_missing_module("obstore"))
    require(_missing_module("moto"))
    with MotoServer() as server:
        yield server


@pytest.fixture
def s3(moto_server, monkeypatch) -> MotoServer:
    """moto's S3, its endpoint and credentials in the environment as a user would set them."""
    for k, v in moto_server.env().items():
        monkeypatch.setenv(k, v)
    return moto_server
