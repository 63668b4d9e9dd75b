"""Whose batch is whose, across the jobs of one process: what adoption must never take.

A create whose answer was lost may still have made a batch, and the submitter looks for it before it
sends the chunk again (see `submitter`). Where the provider keeps metadata (OpenAI) the batch's tag says
whose it is. Where it keeps none (Anthropic) a batch is a candidate by its request count and creation
time only, and the custom_ids of its results confirm it; two jobs whose requests share custom_ids (the
same ids in two inputs) cannot be told apart that way. So what other jobs hold is ruled out first:

- every batch another job of this process created or adopted (`claim`), and, through `elsewhere`, every
  batch id the other jobs' ledgers record since the time looked at (a daemon's view adds its spool's
  ledgers, so no daemon job takes another's batch, even one made before a restart);
- no adoption looks while a create of any job of the process is in the air (its batch may be listed
  already while its id is not yet recorded);
- where only counts tell batches apart, the jobs take turns (`turn`): one job at a time creates (its
  creates may overlap: the custom_ids of a job's results tell its own chunks apart) and looks, and a
  create whose answer was lost keeps the turn until its chunk has looked. So a batch nobody records is
  never another job's, even when two jobs' requests share custom_ids. In a cluster the turn is also
  taken from a `Gate` (a lock every node sees: state/ledger/turns.py), so the nodes' jobs take turns too; a
  turn there lets no new create join once it is TURN_S old, so that every node gets its turn.

Every engine of the process shares one registry (`shared()`): the daemon's jobs, a node's, and `run()`
called from several threads, each with its own event loop (so the registry is guarded by a thread
lock, and a waiter is woken on its own loop). An adopted batch whose results turn out to be another's
is let go (`disown`), so that the job that made it can find it. A job run on its own (`machine_wide()`)
also sees the jobs of this machine's other processes on its account (state/host.py: their ledgers'
batch ids, and a lock for the turn); jobs on other machines are known by their batches' custom_ids only,
unless they share a cluster (README: give concurrent jobs distinct custom_ids; generated ids carry the
job's name).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol

from batch_scheduler.state.host import HostAccounts

Elsewhere = Callable[[str, float], set[str]]  # (this job's dir, since) -> batch ids other jobs hold (blocking)
TURN_S = 1.0  # with a gate: a turn older than this takes no new create (the other nodes' jobs go first)


class Gate(Protocol):
    """A lock beyond the process (a cluster's), taken while a job of the process has the turn."""

    async def acquire(self, owner: str) -> None: ...
    async def release(self, owner: str) -> None: ...
    def contended(self, owner: str) -> bool: ...  # another process may wait: the turn ends within TURN_S


class _Registry:
    """What every `Claims` over it shares; safe across threads, each running its own event loop."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owner_of: dict[str, str] = {}  # batch id -> the job (its directory) that holds it
        self.creating = 0  # create calls in the air, of every job sharing this
        self.adopting = False  # one look for a lost batch at a time
        self.turn: str | None = None  # the job whose turn it is to create and look (see `Claims.turn`)
        self.turn_holds = 0  # its creates and looks under the turn
        self.turn_ready = False  # the turn's gate is held (taken by its first hold, given back by its last)
        self.turn_since = 0.0  # monotonic: when the turn was taken
        self.wanting: list[str] = []  # jobs waiting for the turn, first come first
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []

    async def when(self, ready: Callable[[], bool], then: Callable[[], None],
                   waiting: Callable[[], None] | None = None) -> None:
        """Wait until `ready()` holds, then run `then()` under the same lock (`waiting()` too, under it, each
        time it does not hold yet)."""
        loop = asyncio.get_running_loop()
        while True:
            with self.lock:
                if ready():
                    then()
                    return
                if waiting is not None:
                    waiting()
                waiter = (loop, loop.create_future())
                self._waiters.append(waiter)
            try:
                await waiter[1]
            finally:
                with self.lock:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)

    def change(self, fn: Callable[[], None]) -> None:
        """Run `fn()` under the lock, then wake every waiter (on its own loop) to look again."""
        with self.lock:
            fn()
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_wake, future)
            except RuntimeError:  # its loop has closed: nobody waits there any more
                pass


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


_PROCESS = _Registry()


_HOST: HostAccounts | None = None
_HOST_MADE = threading.Lock()


def host() -> HostAccounts:
    """This machine's jobs per provider account, whatever process runs them (state/host.py): one for the process,
    whichever thread asks first (`run()` from several threads), so a job's gate is where it joined."""
    global _HOST
    with _HOST_MADE:
        if _HOST is None:
            _HOST = HostAccounts()
        return _HOST


def machine_wide(elsewhere: Elsewhere | None = None) -> Claims:
    """The claims of a job run on this machine (`batch-scheduler run`, the Python API, a daemon's jobs): the
    process's registry, and the jobs of this machine's other processes on the same account, their batches
    and their turns; with what `elsewhere` says too (a daemon's spool ledgers)."""
    h = host()

    def others(owner: str, since: float) -> set[str]:
        return h.batches_since(owner, since) | (elsewhere(owner, since) if elsewhere is not None else set())
    claims = Claims(others, registry=_PROCESS, gate=h)
    claims.machine_wide = True
    return claims


def shared(elsewhere: Elsewhere | None = None, gate: Gate | None = None) -> Claims:
    """The process's one registry, seen with `elsewhere` (a daemon's spool ledgers, a cluster's ledgers) and
    its turns also taken from `gate` (a cluster's lock) when given."""
    return Claims(elsewhere, registry=_PROCESS, gate=gate)


class Claims:
    def __init__(self, elsewhere: Elsewhere | None = None, *, registry: _Registry | None = None,
                 gate: Gate | None = None):
        self._elsewhere = elsewhere
        self._r = registry or _Registry()
        self._gate = gate
        self.machine_wide = False  # its jobs are listed in this machine's state directory (`machine_wide`)

    def claim(self, batch_id: str, owner: str) -> None:
        self._r.change(lambda: self._r.owner_of.__setitem__(batch_id, owner))

    def disown(self, batch_id: str, owner: str) -> None:
        """`owner` adopted a batch that is not its own: let it go, for the job that made it to find."""
        def drop() -> None:
            if self._r.owner_of.get(batch_id) == owner:
                del self._r.owner_of[batch_id]
        self._r.change(drop)

    def release(self, owner: str) -> None:
        """A job's run ended: what it holds is in its ledger now, where `elsewhere` finds it."""
        if self._elsewhere is None:
            return
        with self._r.lock:
            for batch_id in [b for b, o in self._r.owner_of.items() if o == owner]:
                del self._r.owner_of[batch_id]

    async def held_by_others(self, owner: str, since: float) -> set[str]:
        """Batch ids that jobs other than `owner` hold (in this process, or in their ledgers since `since`)."""
        with self._r.lock:
            held = {b for b, o in self._r.owner_of.items() if o != owner}
        if self._elsewhere is not None:
            held |= await asyncio.to_thread(self._elsewhere, owner, since)
        return held

    @asynccontextmanager
    async def creating(self) -> AsyncIterator[None]:
        """Around one create call: no adoption looks meanwhile."""
        r = self._r

        def enter() -> None:
            r.creating += 1

        def leave() -> None:
            r.creating -= 1
        await r.when(lambda: not r.adopting, enter)
        try:
            yield
        finally:
            r.change(leave)

    @asynccontextmanager
    async def adopting(self) -> AsyncIterator[None]:
        """Around one look for a lost batch: one at a time, and only once no create is in the air."""
        r = self._r

        def take() -> None:
            r.adopting = True

        def done() -> None:
            r.adopting = False
        await r.when(lambda: not r.adopting, take)
        try:
            await r.when(lambda: r.creating == 0, lambda: None)
            yield
        finally:
            r.change(done)

    @asynccontextmanager
    async def turn(self, owner: str) -> AsyncIterator[None]:
        """Around a create and, when its answer was lost, the look for its batch (or around a look alone):
        `owner`'s turn, which no other job's create or look shares. Its own creates join the turn while no
        other job waits for it (and, with a gate, while it is younger than TURN_S); the first hold takes
        the gate, the last gives it back."""
        r, gate = self._r, self._gate
        first = wants = False

        def ready() -> bool:
            if r.turn == owner:
                young = gate is None or time.monotonic() - r.turn_since < TURN_S or not gate.contended(owner)
                return r.turn_ready and young and all(w == owner for w in r.wanting)
            return r.turn is None and (not r.wanting or r.wanting[0] == owner)

        def take() -> None:
            nonlocal first
            if r.turn is None:
                r.turn, r.turn_ready, r.turn_since, first = owner, gate is None, time.monotonic(), True
            r.turn_holds += 1
            unwant()

        def want() -> None:
            nonlocal wants
            if not wants:
                r.wanting.append(owner)
                wants = True

        def unwant() -> None:
            nonlocal wants
            if wants:
                r.wanting.remove(owner)
                wants = False
        try:
            await r.when(ready, take, want)
        except BaseException:
            r.change(unwant)
            raise
        try:
            if first and gate is not None:
                await gate.acquire(owner)
                r.change(lambda: setattr(r, "turn_ready", True))
            yield
        finally:
            await self._leave_turn(gate)

    async def _leave_turn(self, gate: Gate | None) -> None:
        r = self._r
        last = False

        def leave() -> None:
            nonlocal last
            r.turn_holds -= 1
            last = r.turn_holds == 0
            if last:
                r.turn_ready = False  # closing: nobody joins while the gate is given back
                if gate is None:
                    r.turn = None
        r.change(leave)
        if last and gate is not None:
            owner = r.turn or ""
            try:
                await asyncio.shield(gate.release(owner))
            finally:
                r.change(lambda: setattr(r, "turn", None))
