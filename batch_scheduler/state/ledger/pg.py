"""PostgreSQL for the cluster: the URL, a connection with clear errors, and the schema.

Driver: psycopg 3, each connection used from one thread of its own (the ledger's, like the SQLite
ledger's), so that a cancelled task cannot tear a transaction and the blocking commands (`submit`,
`status`, `cancel`) share the code without an event loop. libpq reads the URL as psql does
(PGPASSWORD and ~/.pgpass included). Every table lives in the schema `batch_scheduler`.

An unreachable server is `LedgerUnavailable` naming host and port (never the password); a URL that
is not one is `UsageError` (exit 2).
"""

from __future__ import annotations

import hashlib
import urllib.parse
from typing import Any

from batch_scheduler.core import errors
from batch_scheduler.core.logs import add_secret

SCHEMA_NAME = "batch_scheduler"
CONNECT_TIMEOUT_S = 5
SCHEMA_LOCK = 0x62617463  # pg_advisory_xact_lock key while the schema is made ("batc")

SCHEMA = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA_NAME};
SET search_path TO {SCHEMA_NAME};
CREATE TABLE IF NOT EXISTS jobs (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,                 -- queued, running, paused, done, failed, cancelled
    spec JSONB NOT NULL,                 -- {{"inputs": [...], "out": ..., "options": {{...}}}}
    reason TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    claim_token TEXT,                    -- the claim: random, new at every claim
    node_id TEXT,
    lease_until TIMESTAMPTZ,             -- the database's clock
    claims INTEGER NOT NULL DEFAULT 0,
    restarts INTEGER NOT NULL DEFAULT 0, -- runs that stopped on an error in a row
    not_before TIMESTAMPTZ,              -- no claim before (a wait after an error, a paused key)
    submitted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS jobs_claimable ON jobs(state, submitted_at);
CREATE TABLE IF NOT EXISTS meta (
    job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE, key TEXT NOT NULL, value JSONB NOT NULL,
    PRIMARY KEY (job_id, key)
);
CREATE TABLE IF NOT EXISTS chunks (
    id BIGSERIAL PRIMARY KEY,
    job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    kind TEXT NOT NULL, root_seq BIGINT, skip INTEGER NOT NULL DEFAULT 0, take INTEGER NOT NULL,
    start_file INTEGER, start_pos BIGINT, start_line BIGINT, end_file INTEGER, end_pos BIGINT,
    nbytes BIGINT NOT NULL DEFAULT 0, state TEXT NOT NULL, batch_id TEXT,
    adopted INTEGER NOT NULL DEFAULT 0, attempt INTEGER NOT NULL DEFAULT 1,
    intent_at DOUBLE PRECISION, submitted_at DOUBLE PRECISION, ended_at DOUBLE PRECISION,
    collected_at DOUBLE PRECISION, est_cost DOUBLE PRECISION NOT NULL DEFAULT 0, note TEXT, skipped TEXT,
    digest TEXT, units BIGINT, queue_key TEXT,
    create_at DOUBLE PRECISION,          -- when the create call of its latest intent was started (NULL: never)
    UNIQUE (job_id, batch_id)
);
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS units BIGINT;      -- a schema made before these columns
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS queue_key TEXT;
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS digest TEXT;       -- input kind: sha256 of the root chunk's lines
DO $$ BEGIN  -- a schema made before create_at: a chunk left submitting may have been at its create (looked for)
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = '{SCHEMA_NAME}'
                   AND table_name = 'chunks' AND column_name = 'create_at') THEN
        ALTER TABLE chunks ADD COLUMN create_at DOUBLE PRECISION;
        UPDATE chunks SET create_at = intent_at WHERE state = 'submitting';
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS chunk_ids (                -- the custom_ids an input chunk carries (completeness)
    chunk_id BIGINT PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE, ids BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_root ON chunks(job_id, root_seq);
CREATE INDEX IF NOT EXISTS chunks_state ON chunks(job_id, state);
CREATE TABLE IF NOT EXISTS retries (
    job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE, custom_id TEXT NOT NULL,
    request BYTEA NOT NULL, attempts INTEGER NOT NULL, chunk_id BIGINT, state TEXT NOT NULL, last_line BYTEA,
    not_before DOUBLE PRECISION NOT NULL DEFAULT 0,   -- epoch seconds: not sent again before (--retry-wait)
    PRIMARY KEY (job_id, custom_id)
);
ALTER TABLE retries ADD COLUMN IF NOT EXISTS not_before DOUBLE PRECISION NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS retries_state ON retries(job_id, state, chunk_id);
CREATE TABLE IF NOT EXISTS api_rejected (
    job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE, custom_id TEXT NOT NULL, root_seq BIGINT,
    message TEXT NOT NULL, PRIMARY KEY (job_id, custom_id)
);
CREATE TABLE IF NOT EXISTS shards (
    job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE, idx INTEGER NOT NULL, "offset" BIGINT NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS counters (
    job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE, name TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL, PRIMARY KEY (job_id, name)
);
CREATE TABLE IF NOT EXISTS result_objects (          -- listed here = committed (see collector)
    job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE, key TEXT NOT NULL, chunk_id BIGINT NOT NULL,
    shard INTEGER NOT NULL, nbytes BIGINT NOT NULL, lines INTEGER NOT NULL, PRIMARY KEY (job_id, key)
);
CREATE TABLE IF NOT EXISTS orphans (                 -- batches a node created after its claim was gone: nobody's
    job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE, batch_id TEXT NOT NULL,
    found_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (job_id, batch_id)
);
CREATE TABLE IF NOT EXISTS learned (                 -- what admission learned of an account's queues, for every job
    account TEXT NOT NULL, queue_key TEXT NOT NULL, doc JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (account, queue_key)
);
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY, started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    seen_at TIMESTAMPTZ NOT NULL DEFAULT now(), listen TEXT
);
CREATE TABLE IF NOT EXISTS budget (                  -- the shared admission budget per (account, pool)
    account TEXT NOT NULL, pool TEXT NOT NULL, limit_requests BIGINT, PRIMARY KEY (account, pool)
);
CREATE TABLE IF NOT EXISTS reservations (            -- what each chunk in flight holds of it
    chunk_id BIGINT PRIMARY KEY, job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    account TEXT NOT NULL, pool TEXT NOT NULL, requests BIGINT NOT NULL, weight DOUBLE PRECISION NOT NULL,
    team TEXT NOT NULL DEFAULT ''
);
ALTER TABLE reservations ADD COLUMN IF NOT EXISTS team TEXT NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS reservations_pool ON reservations(account, pool);
CREATE TABLE IF NOT EXISTS waiters (                 -- jobs waiting for room in a pool (fair shares)
    job_id BIGINT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE, account TEXT NOT NULL, pool TEXT NOT NULL,
    weight DOUBLE PRECISION NOT NULL, seen_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    team TEXT NOT NULL DEFAULT ''
);
ALTER TABLE waiters ADD COLUMN IF NOT EXISTS team TEXT NOT NULL DEFAULT '';
"""


SCHEMA_STAMP = hashlib.sha256(SCHEMA.encode()).hexdigest()[:16]  # a schema made (or brought) to this version


def _stamped(db: Any) -> bool:
    """Whether the schema carries this version's stamp (a read: no table lock taken but the stamp's)."""
    if db.execute("SELECT to_regclass(%s)", (f"{SCHEMA_NAME}.schema_stamp",)).fetchone()[0] is None:
        return False
    row = db.execute(f"SELECT stamp FROM {SCHEMA_NAME}.schema_stamp").fetchone()
    return row is not None and row[0] == SCHEMA_STAMP


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise errors.UsageError("a postgresql:// ledger needs the cluster extra: "
                                "pip install 'batch-scheduler[cluster]'") from None
    return psycopg


def is_pg_url(url: str | None) -> bool:
    return url is not None and url.startswith(("postgresql://", "postgres://"))


def redacted(url: str) -> str:
    """The URL without its password."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def where(url: str) -> str:
    """host:port of a URL (libpq's defaults when absent)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"


def check_url(url: str) -> str:
    """The URL, if it is a PostgreSQL one that libpq can read; UsageError (exit 2) otherwise."""
    shown = redacted(url) if "://" in url else url
    if not is_pg_url(url):
        raise errors.UsageError(f"--ledger {shown}: expected postgresql://USER@HOST:PORT/DB")
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        add_secret(parts.password)
        add_secret(urllib.parse.unquote(parts.password))
    try:
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError:
        raise errors.UsageError(f"--ledger {shown}: the port is not a number from 1 to 65535") from None
    if not parts.path.strip("/"):
        raise errors.UsageError(f"--ledger {shown}: name the database (postgresql://USER@HOST:PORT/DB)")
    psycopg = _psycopg()
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as err:
        raise errors.UsageError(f"--ledger {shown}: {str(err).splitlines()[0]}") from None
    return url


def unavailable(url: str, err: BaseException) -> errors.LedgerUnavailable:
    """LedgerUnavailable for a failed connection or a dropped one, naming host and port only."""
    parts = urllib.parse.urlsplit(url)
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if parts.password:
        text = text.replace(parts.password, "***")
    return errors.LedgerUnavailable(f"PostgreSQL at {where(url)} cannot be reached: {text}")


def connect(url: str, *, autocommit: bool = False, timeout_s: float = CONNECT_TIMEOUT_S) -> Any:
    """A connection (search_path: the cluster's schema); LedgerUnavailable when the server cannot be reached."""
    psycopg = _psycopg()
    try:
        db = psycopg.connect(url, autocommit=autocommit, connect_timeout=max(1, int(timeout_s)),
                             options=f"-c search_path={SCHEMA_NAME}",
                             keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3)
    except psycopg.OperationalError as err:
        raise unavailable(url, err) from None
    return db


def ensure_schema(url: str) -> None:
    """Make the tables, or bring older ones to this version, once: concurrent callers take turns on an advisory
    lock, and a schema stamped with this version's digest is left alone. Its DDL is not run again: its
    `ALTER TABLE ... IF NOT EXISTS` takes each table's exclusive lock even when there is nothing to add, which
    nodes at work hold row locks against (a `submit` beside busy nodes met "deadlock detected")."""
    psycopg = _psycopg()
    db = connect(url)
    try:
        with db.transaction():
            if _stamped(db):
                return
            db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            if _stamped(db):  # another caller made it meanwhile
                return
            db.execute(SCHEMA)
            db.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_NAME}.schema_stamp (stamp TEXT NOT NULL)")
            db.execute(f"DELETE FROM {SCHEMA_NAME}.schema_stamp")
            db.execute(f"INSERT INTO {SCHEMA_NAME}.schema_stamp (stamp) VALUES (%s)", (SCHEMA_STAMP,))
    except psycopg.OperationalError as err:
        raise unavailable(url, err) from None
    finally:
        db.close()


def is_connection_error(err: BaseException) -> bool:
    psycopg = _psycopg()
    return isinstance(err, psycopg.OperationalError | psycopg.InterfaceError)
