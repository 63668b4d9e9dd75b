"""`batch-scheduler status DIR [--json]`: where a job stands; read-only, works while it runs."""

from __future__ import annotations

import argparse
import sys

import orjson

from batch_scheduler.cluster.queue import Queue
from batch_scheduler.core import errors
from batch_scheduler.job.view.status import job_status
from batch_scheduler.state.ledger import pg
from batch_scheduler.state.ledger.sqlite import ChunkState


def main(args: argparse.Namespace) -> int:
    if args.ledger:
        return cluster_status(args)
    if not args.dir:
        raise errors.UsageError("status DIR (a job's output directory), or status --ledger URL [NAME]")
    out_dir, as_json = args.dir, args.json
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
    if st["tail"]["text"]:
        print(f"waiting: {st['tail']['text']}")
    if st["failed_batches"]:
        last = st["failed_batches"][-1]
        print(f"batches the provider failed as a whole: {st['chunks_by_state'].get(ChunkState.FAILED, 0)} "
              f"(last: {last['reason']}); {req['in_failed_batches']:,} request(s) out of attempts there, sent "
              f"again by the next run")
    queue = st["queue"]
    verb = "enqueued" if queue["unit"] == "tokens" else "queued"
    for key, q in queue["queues"].items():
        where = f" ({key})" if key != "requests" else ""
        cap = f", hard cap {queue['hard_cap']:,}" if queue["hard_cap"] else ""
        unit, cap = (q["unit"], "") if "unit" in q else (queue["unit"], cap)  # a jobs queue: no user's cap
        print(f"provider queue{where}: {q['queued']:,} {unit} {verb} of a limit of {q['limit']:,}{cap}; "
              f"{queue['queue_full_answers']:,} queue-full answer(s), {queue['token_limit_failures']:,} "
              f"token-limit failure(s)")
    flights = st["batches_in_flight"]
    print(f"batches in flight: {len(flights)}")
    for b in flights[:50]:
        print(f"  {b['batch_id']}  {b['requests']:,} requests  attempt {b['attempt']}  age {b['age_s']:,.0f}s")
    return 0


def cluster_status(args: argparse.Namespace) -> int:
    """`status --ledger URL [NAME] [--json]`: the cluster's jobs (`{"jobs": [...]}` with --json)."""
    url = pg.check_url(args.ledger)
    queue = Queue(url)
    try:
        jobs = queue.status(args.dir)
    except errors.SchedulerError as err:
        if "does not exist" in str(err):  # no node nor submit has made the schema yet
            jobs = []
        else:
            raise
    finally:
        queue.close()
    if args.json:
        sys.stdout.write(orjson.dumps({"jobs": jobs}, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    if not jobs:
        print(f"no jobs in {pg.redacted(url)}")
    for j in jobs:
        req = j["requests"]
        acc = f"{req['accepted']:,}" if req["accepted"] is not None else "?"
        where = f" on {j['node']} (lease {j['lease_left_s']:g} s left)" if j["state"] == "running" else ""
        print(f"{j['name']}: {j['state']}{where}; {req['finished']:,} of {acc} requests finished; "
              f"${j['cost_usd']:,.4f}; out {j['out']}" + (f"; {j['reason']}" if j["reason"] else ""))
    return 0
