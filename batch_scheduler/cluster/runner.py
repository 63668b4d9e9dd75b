"""One claimed job on this node: its settings, the engine over the cluster store, and its next state.

    claim -> [cancel its batches, if cancel was asked] -> Engine.run under a Lease -> settle

What the run's result makes of the job is the spool daemon's table (job.outcome): done, paused on a
refused key, the provider's spend limit or a full disk (claimed again once --key-check-s is over, and
run: its first create tells whether access is back), cancelled, queued again after a wait when it may
pass, failed. A run that raises what the engine does not turn into a result counts as such a restart
(one line, no traceback), then fails. Every job of the node shares the process's claims registry, which sees
every other job's batch ids through PostgreSQL (whichever node made them), and whose turns to create and
look for a lost batch are also taken from the account's lock in PostgreSQL (state/ledger/turns.py): no job
adopts another's batch, recorded or not yet, even when their custom_ids are the same. A job whose claim is lost (LeaseLost, in its run or while its
batches are cancelled, or the lease ran out while PostgreSQL could not be reached) is dropped at once
and settled by no one here: the node that claims it next resumes it from the ledger. A job dropped
because PostgreSQL went away is given back (queued) once it is reachable again, if its claim is still
this node's.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batch_scheduler.cluster.lease import Lease
from batch_scheduler.cluster.places import check_places
from batch_scheduler.cluster.queue import Claimed, Queue
from batch_scheduler.cluster.store import ClusterStore
from batch_scheduler.core import errors
from batch_scheduler.core.logs import add_secret
from batch_scheduler.core.options import REMEMBERED, SUBMITTED, job_options
from batch_scheduler.job.admit.queue_budget import QueuePool
from batch_scheduler.job.cancel import cancel_batches
from batch_scheduler.job.engine import Engine, JobResult
from batch_scheduler.job.outcome import (
    RESTART_WAITS_S,
    History,
    NextState,
    Rules,
    Transition,
    next_state,
    outcome_line,
    unexpected,
)
from batch_scheduler.job.send.claims import shared
from batch_scheduler.providers import build_settings, missing_key_message, spec_of
from batch_scheduler.state.ledger import budget
from batch_scheduler.state.ledger.postgres import PgLedger
from batch_scheduler.state.ledger.turns import Turns

log = logging.getLogger("batch_scheduler.cluster")


@dataclass
class Running:
    claimed: Claimed
    lease: Lease
    task: asyncio.Task | None = None
    engine: Engine | None = None
    dropped: str | None = None  # why the node let go of it


class JobRunner:
    def __init__(self, url: str, queue: Queue, *, flags: Mapping[str, Any], env: Mapping[str, str], lease_s: float,
                 key_check_s: float = 60.0, restart_waits_s: tuple[float, ...] = RESTART_WAITS_S,
                 work_root: str | None = None, queue_limit: int | None = None, allow_roots: tuple[str, ...] = ()):
        self.url = url
        self.queue = queue
        self.flags = flags
        self.env = env
        self.lease_s = lease_s
        self.key_check_s = key_check_s
        self.restart_waits_s = restart_waits_s
        self.rules = Rules(key_check_s, restart_waits_s, "cancelled; what its batches finished is in the results")
        self.work_root = work_root
        self.queue_limit = queue_limit  # requests queued per provider account, shared by every node (budget.py)
        self.allow_roots = allow_roots  # local paths a job may name (cluster.places)
        self.queues = QueuePool()  # issue 16's budget of the provider queues, shared by this node's jobs
        # whose batch is whose: this process's registry, and every other job's batch ids in PostgreSQL
        self._job_of: dict[str, int] = {}  # a running job's output, as its engine names itself -> its id
        self._account_of: dict[str, str] = {}  # ... -> its provider account (budget.account_of)
        self.turns = Turns(url, self._account_of.get)  # every node's turns on an account (closed by the node)
        self.claims = shared(elsewhere=self._batches_elsewhere, gate=self.turns)
        self.to_give_back: list[Claimed] = []  # dropped while PostgreSQL was away: queued again once it is back

    def settings_of(self, claimed: Claimed) -> Any:
        """The node's flags, then the job's options as the one trust rule lets a job set them (none of the
        node's own; a template or params is a value, never a file), over the node's .env. UsageError."""
        options = claimed.spec.get("options") or {}
        if not isinstance(options, dict):
            raise errors.UsageError("options: expected a JSON object")
        flags = {**self.flags, **job_options(options, "options", door=SUBMITTED), "progress": False}
        try:
            settings = build_settings(flags, dict(self.env), template_file=False)
        except (TypeError, ValueError) as err:
            raise errors.UsageError(f"options: {err}") from None
        check_places(claimed.spec, self.allow_roots)
        add_secret(settings.api_key)
        return settings.replace(job_name=claimed.name)  # generated custom_ids carry the job's name

    async def run(self, job: Running) -> None:
        claimed = job.claimed
        extra = {"job": claimed.name}
        keeper = asyncio.create_task(job.lease.keep(), name=f"lease {claimed.name}")
        store: ClusterStore | None = None
        try:
            try:
                settings = self.settings_of(claimed)
                share = await self._share(claimed, settings)
                store = ClusterStore(self.url, claimed.job_id, claimed.name, claimed.token, claimed.spec["out"],
                                     work_root=self.work_root, share=share)
            except errors.UsageError as err:
                await self._settle(job, "failed", str(err))
                return
            if not settings.api_key:
                await self._settle(job, "paused", f"{missing_key_message(settings)} on this node",
                                   wait_s=self.key_check_s)
                return
            remembered = {k: v for k, v in (claimed.spec.get("options") or {}).items() if k in REMEMBERED}
            self._job_of[where_of(claimed)] = claimed.job_id
            self._account_of[where_of(claimed)] = budget.account_of(settings.provider, settings.base_url,
                                                                    settings.api_key)
            engine = job.engine = Engine(settings, claimed.spec["out"], list(claimed.spec["inputs"]), quiet=True,
                                         store=store, lease=job.lease, remembered=remembered, queues=self.queues,
                                         claims=self.claims)
            log.info("job %s: running (claim %d)", claimed.name, claimed.claims, extra={**extra, "state": "running"})
            if claimed.cancel_requested:
                await self.cancel_batches(job)
            result = await engine.run()
            await self._after(job, settings, engine, result)
        except asyncio.CancelledError:
            if job.dropped is None:
                raise  # the node is stopping: the caller gives the claim back
            log.info("job %s: dropped (%s)", claimed.name, job.dropped, extra=extra)
        except errors.LeaseLost as err:
            job.dropped = str(err)
            log.warning("job %s: dropped: %s", claimed.name, err, extra=extra)
        except errors.LedgerUnavailable as err:
            job.dropped = str(err)
            self.to_give_back.append(claimed)
            log.warning("job %s: dropped until PostgreSQL is back: %s", claimed.name, err, extra=extra)
        except Exception as err:  # noqa: BLE001 - a bug of ours, or an answer not foreseen: the node stays up
            await self._unexpected(job, err)
        finally:
            keeper.cancel()
            self._job_of.pop(where_of(claimed), None)
            self._account_of.pop(where_of(claimed), None)
            if store is not None:
                store.cleanup()

    def _batches_elsewhere(self, where: str, since: float) -> set[str]:
        """The batch ids every other job records in PostgreSQL since `since` (blocking): a job never adopts
        another's batch, whichever node made it (jobs may share custom_ids)."""
        return self.queue.batches_of_others(self._job_of.get(where, -1), since)

    async def _share(self, claimed: Claimed, settings: Any) -> budget.Share | None:
        """The job's share of its account's queue, when the nodes share a limit: requests (the node's
        --queue-limit, or issue 16's hard cap --max-queued-requests), or for openai tokens enqueued per model
        (--max-enqueued-tokens), kept for every node."""
        if spec_of(settings.provider).queue_unit == "tokens":  # openai: tokens enqueued per model
            limit, pool = getattr(settings, "max_enqueued_tokens", None), budget.TOKENS_POOL
        else:
            limit, pool = self.queue_limit or getattr(settings, "max_queued_requests", None), budget.REQUESTS_POOL
        if limit is None or not settings.api_key:
            return None
        share = budget.Share(budget.account_of(settings.provider, settings.base_url, settings.api_key),
                             pool, int(limit), float(claimed.spec.get("weight") or 1.0),
                             str(claimed.spec.get("team") or ""))
        if pool == budget.REQUESTS_POOL:  # a model's pool is made with the limit by its first batch
            await self.queue.run(lambda db: budget.set_limit(db, share))
        return share

    async def cancel_batches(self, job: Running) -> None:
        """`cancel --ledger URL NAME` was asked: the provider cancels the job's batches in flight (the
        run then collects what they finished, and sends nothing new). Whatever goes wrong stays with the
        job: a lost claim drops it (the node goes on), PostgreSQL away leaves it to its run."""
        claimed, extra = job.claimed, {"job": job.claimed.name}
        try:
            settings = self.settings_of(claimed)
            ledger = await asyncio.to_thread(PgLedger, self.url, claimed.job_id, claimed.token, name=claimed.name)
            try:
                done = await cancel_batches(claimed.spec["out"], settings, ledger=ledger)
            finally:
                await asyncio.to_thread(ledger.close)
        except errors.LeaseLost as err:
            job.lease.lose(f"its batches were being cancelled: {err}")
            return
        except errors.SchedulerError as err:  # a usage error, PostgreSQL away: its run meets the same
            log.warning("job %s: cannot cancel its batches: %s", claimed.name, err, extra=extra)
            return
        log.info("job %s: cancel requested; %d batch(es) cancelled at the provider", claimed.name,
                 len(done.requested), extra=extra)

    async def _after(self, job: Running, settings: Any, engine: Engine, result: JobResult) -> None:
        """The job's next state from what its run returned."""
        claimed = job.claimed
        history = History(claimed.restarts, engine.cancelled or claimed.cancel_requested)
        t = next_state(result, history, self.rules, settings)
        await self._keep(job, t)
        if t.state is NextState.DONE:
            log.info("job %s: done: %s", claimed.name, outcome_line(result.summary),
                     extra={"job": claimed.name, "state": "done"})

    async def _unexpected(self, job: Running, err: Exception) -> None:
        """A run that raised: counted as a restart (then failed), in one line; the traceback only at debug."""
        claimed = job.claimed
        log.debug("job %s: the run raised", claimed.name, exc_info=err, extra={"job": claimed.name})
        t = next_state(unexpected(err), History(claimed.restarts, claimed.cancel_requested), self.rules)
        try:
            await self._keep(job, t)
        except errors.SchedulerError as lost:  # the claim, or PostgreSQL, is gone: the next claim resumes it
            job.dropped = f"{type(err).__name__}: {err}"
            log.warning("job %s: the run stopped on %s; not settled: %s", claimed.name, job.dropped, lost,
                        extra={"job": claimed.name})

    async def _keep(self, job: Running, t: Transition) -> None:
        await self._settle(job, t.state.value, t.reason, wait_s=t.wait_s, restarts=t.restarts)

    async def _settle(self, job: Running, state: str, reason: str | None, *, wait_s: float | None = None,
                      restarts: int | None = None) -> None:
        claimed = job.claimed
        if job.lease.lost is not None:
            raise errors.LeaseLost(f"job {claimed.name}: {job.lease.lost}")
        if not await self.queue.settle(claimed.job_id, claimed.token, state, reason, wait_s=wait_s,
                                       restarts=restarts):
            raise errors.LeaseLost(f"job {claimed.name}: the claim was gone when its run ended ({state})")
        level = logging.WARNING if state in (NextState.FAILED, NextState.PAUSED, NextState.QUEUED) else logging.INFO
        log.log(level, "job %s: %s%s", claimed.name, state, f": {reason}" if reason else "",
                extra={"job": claimed.name, "state": state})

    async def give_back(self) -> None:
        """Claims dropped while PostgreSQL was away: queued again now (if still this node's)."""
        while self.to_give_back:
            claimed = self.to_give_back[0]
            await self.queue.settle(claimed.job_id, claimed.token, "queued", "resumes after PostgreSQL came back")
            self.to_give_back.pop(0)


def where_of(claimed: Claimed) -> str:
    """The job as its engine names itself to the claims registry (its output, made absolute)."""
    return os.path.abspath(str(claimed.spec.get("out")))
