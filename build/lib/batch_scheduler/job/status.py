"""`status DIR` (read-only, works while a run is going on) and `cancel DIR`."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import orjson

from batch_scheduler.core import errors
from batch_scheduler.core.ledger import ChunkState, Ledger


def job_status(out_dir: str) -> dict[str, Any]:
    path = os.path.join(out_dir, "ledger.db")
    if not os.path.exists(path):
        raise errors.UsageError(f"{out_dir}: no job here (no ledger.db)")
    ledger = Ledger(path, readonly=True)
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
        states[r.state] = states.get(r.state, 0) + 1
    in_flight = [r for r in rows if r.state == ChunkState.SUBMITTED]
    finished = int(sum(c.get(k, 0) for k in ("succeeded", "errored", "expired", "canceled")))
    accepted = meta.get("accepted_total")
    refused = int(c.get("api_rejected", 0))
    to_go = max(0, accepted - finished - refused) if accepted is not None else None
    submitted_times = [r.submitted_at for r in rows if r.submitted_at]
    collected = [r for r in rows if r.collected_at]
    eta = None
    if to_go and collected and submitted_times:
        span = max(r.collected_at or 0 for r in collected) - min(submitted_times)
        if span > 0 and finished:
            eta = to_go / (finished / span)
    return {
        "dir": out_dir,
        "state": "cancelled" if meta.get("cancelled") else ("done" if to_go == 0 else "in progress"),
        "chunks_by_state": states,
        "batches_in_flight": [
            {"batch_id": r.batch_id, "chunk": r.id, "kind": r.kind, "requests": r.take, "attempt": r.attempt,
             "age_s": round(now - (r.submitted_at or now), 1), "adopted": bool(r.adopted)}
            for r in in_flight],
        "requests": {"accepted": accepted, "finished": finished, "to_go": to_go,
                     "waiting_retry": retries.get("pending", 0) + retries.get("assigned", 0),
                     "canceled_parked": retries.get("canceled", 0), "refused_by_api": refused,
                     "in_failed_batches": retries.get("failed", 0)},
        "failed_batches": [{"chunk": r.id, "batch_id": r.batch_id, "requests": r.take, "reason": r.note}
                           for r in rows if r.state == ChunkState.FAILED][-10:],
        "results": {k: int(c.get(k, 0)) for k in ("succeeded", "errored", "expired", "canceled")},
        "tokens": {k: int(c.get(f"{k}_tokens", 0)) for k in ("input", "output", "cache_write", "cache_read")},
        "cost_usd": round(c.get("cost_usd", 0.0), 6),
        "eta_s": round(eta, 1) if eta is not None else None,
    }


def status_command(out_dir: str, *, as_json: bool) -> int:
    st = job_status(out_dir)
    if as_json:
        sys.stdout.write(orjson.dumps(st, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    req = st["requests"]
    print(f"job {out_dir}: {st['state']}")
    print("chunks: " + ", ".join(f"{k} {v}" for k, v in sorted(st["chunks_by_state"].items())))
    acc = f"{req['accepted']:,}" if req["accepted"] is not None else "? (still reading)"
    to_go = f"{req['to_go']:,}" if req["to_go"] is not None else "?"
    print(f"requests: {acc} accepted, {req['finished']:,} finished, {to_go} to go, "
          f"{req['waiting_retry']:,} waiting for another attempt")
    res = st["results"]
    print(f"results: {res['succeeded']:,} succeeded, {res['errored']:,} errored, {res['expired']:,} expired, "
          f"{res['canceled']:,} canceled")
    tok = st["tokens"]
    print(f"tokens: {tok['input']:,} in, {tok['output']:,} out; spend ${st['cost_usd']:,.4f}")
    if st["eta_s"] is not None:
        print(f"eta: {st['eta_s']:,.0f}s")
    if st["failed_batches"]:
        last = st["failed_batches"][-1]
        print(f"batches the provider failed as a whole: {st['chunks_by_state'].get(ChunkState.FAILED, 0)} "
              f"(last: {last['reason']}); {req['in_failed_batches']:,} request(s) out of attempts there, sent "
              f"again by the next run")
    flights = st["batches_in_flight"]
    print(f"batches in flight: {len(flights)}")
    for b in flights[:50]:
        print(f"  {b['batch_id']}  {b['requests']:,} requests  attempt {b['attempt']}  age {b['age_s']:,.0f}s")
    return 0


def cancel_command(out_dir: str, env: dict[str, str]) -> int:
    from batch_scheduler.core.http import HttpClient
    from batch_scheduler.core.loop import run_loop
    from batch_scheduler.providers import build_settings, headers_for, make_provider, missing_key_message

    path = os.path.join(out_dir, "ledger.db")
    if not os.path.exists(path):
        raise errors.UsageError(f"{out_dir}: no job here (no ledger.db)")
    ledger = Ledger(path)
    meta = ledger.read_meta()
    settings = build_settings(dict(meta.get("flags", {})), env)
    if not settings.api_key:
        ledger.close()
        raise errors.UsageError(missing_key_message(settings))

    async def cancel_all() -> int:
        rows = await ledger.chunks_in(ChunkState.SUBMITTED)
        failures = 0
        async with HttpClient(headers_for(settings), settings.retry, secret=settings.api_key) as http:
            provider = make_provider(settings, http)
            for r in rows:
                try:
                    info = await provider.cancel(r.batch_id or "")
                    await ledger._run(lambda db, r=r, info=info: db.execute(
                        "UPDATE chunks SET note=? WHERE id=?", (f"cancel requested: {info.state.value}", r.id)))
                    print(f"{r.batch_id}: cancel requested ({info.raw.get('processing_status') or info.raw.get('status')})")
                except errors.AuthRefused:
                    raise
                except errors.ProviderError as err:
                    failures += 1
                    print(f"{r.batch_id}: {http.redact(str(err))}", file=sys.stderr)
        return failures

    try:
        ledger.write_meta({"cancelled": True})
        failures = run_loop(cancel_all())
    except errors.AuthRefused as err:
        print(f"batch-scheduler: the API refused the key (HTTP {err.status}); nothing was cancelled",
              file=sys.stderr)
        return 3
    finally:
        ledger.close()
    print(f"cancelled {out_dir}: run `batch-scheduler run ... --out {out_dir}` (or `resume`) to collect what the "
          f"batches finished; cancelled requests are not sent again unless --retry-cancelled is given")
    return 1 if failures else 0
