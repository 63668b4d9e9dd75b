"""The turns of a provider account, seen by every node: a PostgreSQL advisory lock per account.

Where a provider's batches keep no metadata (Anthropic), a batch whose create answer was lost is found
again by its request count and creation time only, so two jobs must never create or look at once on
one account (job/send/claims.py: `Claims.turn`). A node's jobs take turns in its process; `Turns` is
the gate that makes the nodes take turns too: the process's turn holds the account's lock.

The lock is a session lock on a connection of its own, used from one thread (acquire and release
alternate: the process holds one turn at a time). Waiters queue in PostgreSQL, first come first
served; a killed node's session ends and PostgreSQL gives its lock back at once. A cancelled wait is
cancelled in the database too; whatever was granted is given back by the release that always follows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from batch_scheduler.state.ledger import pg
from batch_scheduler.state.ledger.queries import load

log = logging.getLogger("batch_scheduler.cluster")

TURN_SPACE = 0x7475726E  # the advisory locks' first key ("turn"); the second is the account's hash
Q = load("queue")


class Turns:
    """The `Gate` of a node's claims: `account_of(owner)` names the account a job's turn is on (None:
    the job needs no gate)."""

    def __init__(self, url: str, account_of: Callable[[str], str | None]):
        self._url = url
        self._account_of = account_of
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-turns")
        self._db: Any = None
        self._held: list[str] = []  # accounts whose lock this session holds

    async def acquire(self, owner: str) -> None:
        account = self._account_of(owner)
        if account is None:
            return
        fut = asyncio.get_running_loop().run_in_executor(self._pool, self._lock, account)
        fut.add_done_callback(_quiet)
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            db = self._db
            if db is not None and not fut.done():
                db.cancel()  # the wait ends in the database; a lock granted meanwhile is released next
            raise

    def contended(self, owner: str) -> bool:
        """Always: another node may wait, and PostgreSQL does not say (a turn ends within TURN_S)."""
        return True

    async def release(self, owner: str) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._unlock)

    def close(self) -> None:
        self._pool.submit(self._drop).result()
        self._pool.shutdown(wait=True)

    def _lock(self, account: str) -> None:
        if self._db is None:
            self._db = pg.connect(self._url, autocommit=True)
        try:
            self._db.execute(Q["turn_lock"], {"space": TURN_SPACE, "account": account})
        except Exception as err:
            if pg.is_connection_error(err):
                self._drop()
                raise pg.unavailable(self._url, err) from None
            raise
        self._held.append(account)

    def _unlock(self) -> None:
        held, self._held = self._held, []
        for account in held:
            try:
                self._db.execute(Q["turn_unlock"], {"space": TURN_SPACE, "account": account})
            except Exception as err:  # noqa: BLE001 - a session that is gone holds nothing any more
                log.warning("the turn on %s could not be given back (%s); dropping the session", account, err)
                self._drop()
                return

    def _drop(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            finally:
                self._db = None


def _quiet(fut: asyncio.Future) -> None:
    """A wait that was cancelled ends with an error nobody awaits: read, so it is not reported."""
    if not fut.cancelled():
        fut.exception()
