"""What a job looks like from its ledger: `job_status(DIR)`, read-only, safe while a run is going on."""

from __future__ import annotations

import os
import time
from typing import Any

from batch_scheduler.core import errors
from batch_scheduler.job.admit.queue_budget import learner_for
from batch_scheduler.job.admit.queues import LEDGER_KEY
from batch_scheduler.job.observe import hh_mm
from batch_scheduler.job.view.summary import TOKEN_KINDS, waiting_retry
from batch_scheduler.providers import DEFAULT, NAMES, spec_of
from batch_scheduler.state.jobdir import finished, results_by_type
from batch_scheduler.state.ledger import open_ledger
from batch_scheduler.state.ledger.sqlite import ChunkRow, ChunkState, RetryState


def job_status(out_dir: str) -> dict[str, Any]:
    path = os.path.join(out_dir, "ledger.db")
    if not os.path.exists(path):
        raise errors.UsageError(f"{out_dir}: no job here (no ledger.db)")
    ledger = open_ledger(path, readonly=True)
    try:
        meta = ledger.read_meta()
        rows = ledger.all_chunks()
        c = ledger.counters()
        retries = ledger.retry_counts()
    finally:
        ledger.close()
    now = time.time()
    states: dict[str, int] = {}
    for r in rows:
        states[r.state.value] = states.get(r.state.value, 0) + 1
    in_flight = [r for r in rows if r.state == ChunkState.SUBMITTED]
    done = finished(c)
    accepted = meta.get("accepted_total")
    refused = int(c.get("api_rejected", 0))
    to_go = max(0, accepted - done - refused) if accepted is not None else None
    submitted_times = [r.submitted_at for r in rows if r.submitted_at]
    collected = [r for r in rows if r.collected_at]
    eta = None
    if to_go and collected and submitted_times:
        span = max(r.collected_at or 0 for r in collected) - min(submitted_times)
        if span > 0 and done:
            eta = to_go / (done / span)
    tail = tail_of(rows, in_flight, waiting_retry(retries), now)
    if to_go and tail["back_in_s"] is not None:
        eta = max(1.0, eta or 0.0, tail["back_in_s"])  # never 0 while requests wait for a round trip
    return {
        "dir": out_dir,
        "state": "cancelled" if meta.get("cancelled") else ("done" if to_go == 0 else "in progress"),
        "chunks_by_state": states,
        "batches_in_flight": [
            {"batch_id": r.batch_id, "chunk": r.id, "kind": r.kind.value, "requests": r.take, "attempt": r.attempt,
             "age_s": round(now - (r.submitted_at or now), 1), "adopted": bool(r.adopted)}
            for r in in_flight],
        "requests": {"accepted": accepted, "finished": done, "to_go": to_go,
                     "waiting_retry": waiting_retry(retries),
                     "canceled_parked": retries.get(RetryState.CANCELLED, 0), "refused_by_api": refused,
                     "in_failed_batches": retries.get(RetryState.FAILED, 0)},
        "failed_batches": [{"chunk": r.id, "batch_id": r.batch_id, "requests": r.take, "reason": r.note}
                           for r in rows if r.state == ChunkState.FAILED][-10:],
        "results": results_by_type(c),
        "tokens": {k: int(c.get(f"{k}_tokens", 0)) for k in TOKEN_KINDS},
        "cost_usd": round(c.get("cost_usd", 0.0), 6),
        "eta_s": round(eta, 1) if eta is not None else None,
        "tail": tail,
        "queue": queue_status(meta, in_flight, c),
    }


def tail_of(rows: list[ChunkRow], in_flight: list[ChunkRow], waiting: int, now: float) -> dict[str, Any]:
    """What the end of the job waits for: the observed turnaround (the median of create to ended), when the
    batches out are expected back, and the requests parked for another attempt (their next batch takes a
    turnaround from now at the soonest); `text` says it in a line."""
    trips = sorted(r.ended_at - r.submitted_at for r in rows
                   if r.ended_at and r.submitted_at and r.ended_at >= r.submitted_at and r.batch_id)
    turnaround = trips[len(trips) // 2] if trips else None
    backs = [(r.submitted_at or now) + turnaround for r in in_flight] if turnaround is not None else []
    if waiting and turnaround is not None:
        backs.append(now + turnaround)
    back_at = max(backs) if backs else None
    parts = []
    if in_flight:
        parts.append(f"{len(in_flight):,} batch(es) out")
    if waiting:
        parts.append(f"{waiting:,} request(s) wait for another attempt")
    text = ", ".join(parts) + (f", expected back about {hh_mm(max(now, back_at))} UTC" if parts and back_at else "")
    return {"turnaround_s": round(turnaround, 1) if turnaround is not None else None,
            "back_in_s": round(max(0.0, back_at - now), 1) if back_at is not None else None, "text": text}


def queue_status(meta: dict[str, Any], in_flight: list[ChunkRow], counters: dict[str, float]) -> dict[str, Any]:
    """The provider's queue as the ledger knows it: ours in it now (requests, or estimated tokens per model),
    the limit admission lets in (learned, or the hard cap), and the queue-full answers so far."""
    name = (meta.get("shaping") or {}).get("provider")
    spec = spec_of(name if name in NAMES else DEFAULT)
    flags = meta.get("flags") or {}
    cap = flags.get("max_enqueued_tokens" if spec.queue_unit == "tokens" else "max_queued_requests")
    cap = cap if isinstance(cap, int) and cap > 0 else None
    learned = kept if isinstance(kept := meta.get(LEDGER_KEY), dict) else {}
    queued: dict[str, int] = {}
    for r in in_flight:
        key = r.queue_key or "requests"
        queued[key] = queued.get(key, 0) + (r.units if r.units is not None else r.take)
    limits = {}
    for key in sorted(set(learned) | set(queued) | ({"requests"} if spec.queue_unit == "requests" else set())):
        unit, learner = learner_for(spec, key, cap)
        learner.restore(learned.get(key))
        limits[key] = {"queued": queued.get(key, 0), "limit": learner.limit, "stated": learner.stated,
                       **({"unit": unit} if unit != spec.queue_unit else {})}
    return {"unit": spec.queue_unit, "hard_cap": cap, "queues": limits,
            "queue_full_answers": int(counters.get("queue_full", 0)),
            "token_limit_failures": int(counters.get("token_limit_failures", 0))}
