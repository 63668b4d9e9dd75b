"""The status page for people: `GET /` (every job, and a chart of the last hours) and `GET /job/NAME`
(one job and its batches). The HTML is daemon.html's; this module gathers what it shows.

The routes are registered by api.Api next to the JSON ones, so the same access check covers them.
What a job shows comes from its ledger (read-only, off the loop) and summary.json, cached while the
job does not run. Nothing on the page comes from the settings but --max-cost: no key, header or URL.
Every page goes through the log filter's `redact` as a last guard.

The chart's points are `History` samples: the spool's finished requests and spend, one a minute
(DaemonConfig.history_every_s) for the last HISTORY_S, taken by the daemon's main loop.

Each job also shows its provider and models, the spend against standard prices (summary.json's
`standard_cost_usd` / `saving_usd`, or the ledger's per-model counters while it runs), the retry tail
(requests parked in the ledger for another attempt, and when the next is due), and the next step for
whoever holds it: the daemon holds its jobs, so the engine's "run the same command again" (which is
`resume` for a job directory) is never shown; a finished job's next step is its `export` command.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import shlex
import time
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any, Protocol

from aiohttp import web

from batch_scheduler.core.logs import redact
from batch_scheduler.daemon import html
from batch_scheduler.daemon.logs import log
from batch_scheduler.daemon.slots import FairSlots
from batch_scheduler.daemon.spool import SUMMARY_FILE, Job, JobState, read_json, read_options
from batch_scheduler.job.money.pricing import MODEL_PREFIX
from batch_scheduler.job.view.status import job_status
from batch_scheduler.job.view.summary import batch_discount_of, standard_and_saving
from batch_scheduler.state.ledger import Ledger, open_ledger
from batch_scheduler.state.ledger.sqlite import RetryState

HISTORY_S = 6 * 3600.0
BATCHES_SHOWN = 200  # the newest; the page says how many older ones there are
# the engine's advice to whoever ran the command (`run`, `resume`): not the daemon's way
RUN_AGAIN = re.compile(r"[:;,]? ?(?:then |and )?run the same command again[^.;()]*?(?=\s*[.;()]|\s*$)")


class History:
    """(epoch, finished requests, spend) samples over the last HISTORY_S, at most `limit` of them."""

    def __init__(self, every_s: float = 60.0, span_s: float = HISTORY_S):
        self.span_s = span_s
        self.points: deque[tuple[float, int, float]] = deque(maxlen=max(2, int(span_s / every_s) + 1))

    def add(self, at: float, finished: int, spend_usd: float) -> None:
        self.points.append((at, finished, spend_usd))
        while self.points and self.points[0][0] < at - self.span_s:
            self.points.popleft()

    def with_now(self, at: float, finished: int, spend_usd: float) -> list[tuple[float, int, float]]:
        """The samples, and the current figures as the last point."""
        return [*self.points, (at, finished, spend_usd)]


class Service(Protocol):
    jobs: dict[str, Job]
    started_at: float
    history: History

    @property
    def slots(self) -> FairSlots: ...

    @property
    def job_flags(self) -> Mapping[str, Any]: ...


def _read(job_dir: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(job_status or None, summary.json); off the loop."""
    st = None
    if os.path.exists(os.path.join(job_dir, "ledger.db")):
        try:
            st = job_status(job_dir)
        except Exception as err:  # noqa: BLE001 - a ledger being created; the next look sees it
            log.debug("%s: no status yet: %s", job_dir, err)
    return st, read_json(os.path.join(job_dir, SUMMARY_FILE))


def _batches(job_dir: str, now: float) -> tuple[list[dict[str, Any]], int]:
    path = os.path.join(job_dir, "ledger.db")
    if not os.path.exists(path):
        return [], 0
    ledger = open_ledger(path, readonly=True)
    try:
        rows = ledger.all_chunks()
    finally:
        ledger.close()
    shown = sorted(rows, key=lambda r: r.id, reverse=True)[:BATCHES_SHOWN]
    out = []
    for r in shown:
        start = r.submitted_at or r.intent_at
        end = r.collected_at or r.ended_at
        out.append({"chunk": r.id, "batch_id": r.batch_id, "kind": r.kind.value, "requests": r.take,
                    "attempt": r.attempt, "state": r.state.value, "age_s": now - start if start else None,
                    "took_s": end - start if start and end else None, "note": r.note})
    return out, len(rows) - len(shown)


def _open_ledger(job_dir: str) -> Ledger | None:
    path = os.path.join(job_dir, "ledger.db")
    return open_ledger(path, readonly=True) if os.path.exists(path) else None


async def ledger_facts(job_dir: str) -> tuple[dict[str, float], dict[str, Any] | None]:
    """(the ledger's counters, the retry tail or None): read-only, off the loop."""
    ledger = await asyncio.to_thread(_open_ledger, job_dir)
    if ledger is None:
        return {}, None
    try:
        counters = await asyncio.to_thread(ledger.counters)
        waiting = await ledger.count_retries(RetryState.PENDING)
        if not waiting:
            return counters, None
        first = await ledger.pending_retries(1, math.inf)  # the fewest attempts so far: the next to go
        tail = {"waiting": waiting, "attempt": first[0][2] + 1 if first else None,
                "next_at": await ledger.next_retry_at()}
        return counters, tail
    finally:
        await asyncio.to_thread(ledger.close)


def _usd(value: Any) -> float:
    """A figure of summary.json, 0 where it is missing or not a number."""
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else 0.0


def models_in(counters: Mapping[str, float]) -> list[str]:
    """The models the job's answers named (the ledger's per-model counters)."""
    return sorted({key.split("/", 2)[2] for key in counters if key.startswith(MODEL_PREFIX) and key.count("/") >= 2})


def for_the_daemon(text: str) -> str:
    """A reason as the daemon's page says it: without the engine's advice to run the command again."""
    return RUN_AGAIN.sub("", text).strip()


def next_step(job: Job, started: bool, finished: int) -> tuple[str, str | None]:
    """(what to do, a command or None), for a job the daemon holds: never `resume`."""
    export = f"batch-scheduler export {shlex.quote(job.dir)} -o {shlex.quote(job.name + '.csv')}"
    if job.state is JobState.DONE:
        return "the results as one table:", export
    if job.state is JobState.RUNNING:
        return "nothing: the daemon runs it", None
    if job.state is JobState.QUEUED:
        return "nothing: the daemon starts it when it can", None
    if job.state is JobState.PAUSED:
        return "the daemon resumes it by itself once what the problem says is fixed", None
    again = "to run it again, fix the cause and drop its input (options first) into inbox/: a new job"
    if not started or not finished:
        return again, None
    return f"{again}; what it finished:", export


def problem_of(job: Job, st: Mapping[str, Any] | None, summary: Mapping[str, Any], rejected: int) -> str | None:
    """The last problem, in plain words."""
    if job.reason:
        return for_the_daemon(job.reason)
    failed = (st or {}).get("failed_batches") or []
    if failed:
        last = failed[-1]
        return f"batch {last['batch_id']} failed at the provider: {last['reason'] or 'no reason given'}"
    if job.state is not JobState.RUNNING and summary.get("exit_code") not in (None, 0) and summary.get("message"):
        return for_the_daemon(str(summary["message"]))
    refused = ((st or {}).get("requests") or {}).get("refused_by_api") or 0
    if refused:
        return f"{refused:,} request(s) refused by the API"
    if rejected:
        return f"{rejected:,} input line(s) rejected: see rejected.jsonl"
    return None


class Pages:
    def __init__(self, service: Service):
        self.service = service
        self._cache: dict[str, tuple[int, dict[str, Any]]] = {}

    def option(self, job: Job, name: str) -> Any:
        """The job's option as its options.json or the daemon's flags give it (None: neither)."""
        try:
            options = read_options(job.dir)
        except Exception:  # noqa: BLE001 - a broken options.json shows as the job's reason
            options = {}
        return options.get(name, self.service.job_flags.get(name))

    def max_cost(self, job: Job) -> float | None:
        if job.engine is not None:
            return job.engine.settings.max_cost_usd
        value = self.option(job, "max_cost")
        return float(value) if value is not None else None

    def runs_on(self, job: Job, summary: Mapping[str, Any], counters: Mapping[str, float]) -> dict[str, Any]:
        """provider, models, and the spend at standard prices with the saving (summary.json's once it ran)."""
        settings = job.engine.settings if job.engine is not None else None
        kept = summary.get("models")
        models = models_in(counters) or sorted(kept if isinstance(kept, dict) else {})
        if not models and (model := settings.model if settings else self.option(job, "model")):
            models = [str(model)]
        if settings is not None:
            money = standard_and_saving(float(counters.get("cost_usd", 0.0)), batch_discount_of(settings))
        else:
            money = {k: _usd(summary.get(k)) for k in ("standard_cost_usd", "saving_usd")}
        provider = settings.provider if settings else summary.get("provider") or self.option(job, "provider")
        return {"provider": provider, "models": models, "standard_usd": money["standard_cost_usd"],
                "saving_usd": money["saving_usd"]}

    async def facts(self, job: Job) -> dict[str, Any]:
        """What one row shows; cached while the job does not run (nothing changes until its state does)."""
        cached = self._cache.get(job.name)
        if job.engine is None and cached is not None and cached[0] == job.version:
            return cached[1]
        version = job.version
        st, summary = await asyncio.to_thread(_read, job.dir)
        counters, tail = await ledger_facts(job.dir)
        live = job.engine.stats if job.engine is not None else None
        sreq, req = (st or {}).get("requests") or {}, summary.get("requests") or {}
        accepted = sreq.get("accepted")
        if accepted is None and live is None:
            accepted = req.get("accepted")
        total = accepted - (sreq.get("refused_by_api") or 0) if accepted is not None else None
        estimated = False
        if total is None and live is not None and live.expected_lines is not None:
            total, estimated = max(live.expected_lines, live.lines_read), True  # the page says "about"
        rejects = getattr(job.engine, "rejects", None)
        rejected = rejects.count if rejects is not None else int(req.get("rejected") or 0)
        in_flight = (st or {}).get("batches_in_flight") or []
        final = int(sreq.get("finished", req.get("finished", 0)) or 0)
        eta = (st or {}).get("eta_s")
        if eta is None and live is not None and total and (rate := live.rate()) > 0:
            eta = max(0.0, total - final) / rate  # from this run's pace, while the total is an estimate
        doc = {
            "name": job.name, "state": job.state.value, "source": job.source,
            "final": final, "total": total, "estimated": estimated,
            "batches_in_flight": len(in_flight), "requests_in_flight": sum(b["requests"] for b in in_flight),
            "spend_usd": float((st or summary).get("cost_usd") or 0.0), "max_cost_usd": self.max_cost(job),
            "eta_s": eta if job.state is JobState.RUNNING else None,
            "rejected": rejected, "waiting_retry": int(sreq.get("waiting_retry", req.get("waiting_retry", 0)) or 0),
            "results": (st or summary).get("results") or {},
            "problem": problem_of(job, st, summary, rejected),
            "started": st is not None or live is not None, "retry_tail": tail,
            **self.runs_on(job, summary, counters),
        }
        doc["advice"], doc["command"] = next_step(job, doc["started"], final)
        self._cache[job.name] = (version, doc)
        return doc

    async def all_facts(self) -> list[dict[str, Any]]:
        jobs = sorted(self.service.jobs.values(), key=lambda j: (j.claimed_at, j.name))
        return [await self.facts(j) for j in jobs]

    @staticmethod
    def now_point(rows: list[dict[str, Any]]) -> tuple[int, float]:
        return sum(r["final"] for r in rows), sum(r["spend_usd"] for r in rows)

    @staticmethod
    def totals_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
        """The jobs table's last row: every job's figures added up."""
        return {k: sum(r[k] or 0 for r in rows) for k in ("final", "total", "batches_in_flight",
                                                          "requests_in_flight", "spend_usd", "standard_usd",
                                                          "saving_usd")}

    async def sample(self) -> None:
        """One point of the chart (the daemon's main loop calls it every history_every_s)."""
        try:
            finished, usd = self.now_point(await self.all_facts())
        except Exception:  # a sample must never take the daemon down
            log.debug("history sample failed", exc_info=True)
            return
        self.service.history.add(time.time(), finished, usd)

    # -- the routes -----------------------------------------------------------------------------

    async def overview(self, request: web.Request) -> web.Response:
        d = self.service
        rows = await self.all_facts()
        by_state = Counter(r["state"] for r in rows)
        totals = {"by_state": {s.value: by_state[s.value] for s in JobState}, "slots_in_use": d.slots.in_use,
                  "slots_capacity": d.slots.capacity, "uptime_s": time.time() - d.started_at,
                  "jobs": self.totals_row(rows)}
        points = d.history.with_now(time.time(), *self.now_point(rows))
        return _html(html.overview(rows, totals, points))

    async def job(self, request: web.Request) -> web.Response:
        job = self.service.jobs.get(request.match_info["name"])
        if job is None:
            return _html(html.job_missing(request.match_info["name"]), 404)
        facts = await self.facts(job)
        batches, older = await asyncio.to_thread(_batches, job.dir, time.time())
        return _html(html.job_page(facts, batches, older))


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=redact(text), status=status, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                                 "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                                            "img-src 'self'; frame-ancestors 'none'"})
