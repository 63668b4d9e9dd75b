"""A cluster on one machine for the scenario tests: N node processes (`batch-scheduler daemon --ledger URL`),
one PostgreSQL, the simulator in its own process with faults on, and OUT on a local path every node shares.

What is measured comes from what a user can see: the ledger (jobs, chunks, counters), the simulator's
/_sim/stats (what was paid for), each node's JSON log (claims and drops, with their times) and the
manifests in OUT.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import obstore
import orjson
import psycopg
from obstore.store import S3Store

from batch_scheduler.cluster.queue import Queue
from batch_scheduler.state.ledger import pg

from ..conftest import KEY
from .helpers import bucket_lines, manifest_lines, result_files

NODE_FLAGS = ["--batch-size", "100", "--poll-min", "0.05", "--poll-max", "0.3", "--shards", "4",
              "--max-attempts", "5", "--concurrency", "4", "--retry-wait", "0.5"]


def write_input(path: Path, prefix: str, n: int) -> list[str]:
    ids = [f"{prefix}-{i:05d}" for i in range(n)]
    with open(path, "wb") as f:
        for cid in ids:
            f.write(orjson.dumps({"custom_id": cid, "params": {"model": "claude-haiku-4-5", "max_tokens": 16,
                                 "messages": [{"role": "user", "content": f"q {cid}"}]}}) + b"\n")
    return ids


@dataclass
class Event:
    ts: float
    node: str
    job: str | None
    msg: str


@dataclass
class Cluster:
    root: Path
    url: str
    sim_url: str
    lease_s: float = 3.0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    expected: dict[str, list[str]] = field(default_factory=dict)
    outs: dict[str, str] = field(default_factory=dict)

    def submit(self, name: str, n: int, *, out: str | None = None, bucket: str | None = None,
               weight: float = 1.0, team: str = "") -> None:
        """A job of n requests; its input uploaded to `bucket` when given; OUT local unless `out` names one."""
        inp = self.root / f"{name}.jsonl"
        self.expected[name] = write_input(inp, name, n)
        where = str(inp)
        if bucket:
            obstore.put(S3Store(bucket), f"inputs/{name}.jsonl", inp.read_bytes())
            where = f"s3://{bucket}/inputs/{name}.jsonl"
        self.outs[name] = out or str(self.root / "out" / name)
        pg.ensure_schema(self.url)
        q = Queue(self.url)
        try:
            q.submit(name, {"inputs": [where], "out": self.outs[name], "options": {}, "weight": weight,
                                "team": team})
        finally:
            q.close()

    def start(self, node: str, *extra: str) -> None:
        log = open(self.root / f"{node}.log", "ab")  # noqa: SIM115 - the node process writes it
        env = {**os.environ, "ANTHROPIC_API_KEY": KEY}
        self.procs[node] = subprocess.Popen(
            [sys.executable, "-m", "batch_scheduler", "daemon", "--ledger", self.url, "--node-id", node,
             "--lease", str(self.lease_s), "--poll-s", str(self.lease_s / 10), "--log-json", "--base-url",
             self.sim_url, "--allow-root", str(self.root), *NODE_FLAGS, *extra], stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL, env=env,
            cwd=self.root)
        log.close()

    def wait_nodes(self, nodes: tuple[str, ...], timeout_s: float = 30.0) -> None:
        """Until every node has registered (a cluster is up before its jobs come)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=3) as db:
                    seen = {n for (n,) in db.execute("SELECT node_id FROM batch_scheduler.nodes")}
            except psycopg.Error:
                seen = set()
            if seen >= set(nodes):
                return
            assert time.monotonic() < deadline, f"nodes up: {sorted(seen)}\n{self.tail()}"
            time.sleep(0.1)

    def signal(self, node: str, sig: int) -> float:
        self.procs[node].send_signal(sig)
        if sig == signal.SIGKILL:
            self.procs[node].wait()
        return time.time()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # -- what happened --------------------------------------------------------------------------

    def states(self) -> dict[str, str]:
        with psycopg.connect(self.url, connect_timeout=3) as db:
            return dict(db.execute("SELECT name, state FROM batch_scheduler.jobs").fetchall())

    def wait_done(self, timeout_s: float = 90.0, *, every: Callable[[], None] | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                states = self.states()
            except psycopg.OperationalError:
                states = {}
            if states and set(states.values()) == {"done"}:
                return
            assert time.monotonic() < deadline, f"not done within {timeout_s:g} s: {states}\n{self.tail()}"
            if every:
                every()
            time.sleep(0.1)

    def took_s(self, name: str) -> float:
        """From submit to done, by the database's clock."""
        with psycopg.connect(self.url, connect_timeout=3) as db:
            return float(db.execute("SELECT EXTRACT(EPOCH FROM updated_at - submitted_at) FROM batch_scheduler.jobs"
                                    " WHERE name=%s AND state='done'", (name,)).fetchone()[0])

    def timeline(self, name: str) -> list[tuple]:
        """Each of a job's batches: seconds from the job's submit to its intent, create, end and collection."""
        with psycopg.connect(self.url, connect_timeout=3) as db:
            return db.execute(
                "SELECT c.id, round((c.intent_at - EXTRACT(EPOCH FROM j.submitted_at))::numeric, 2),"
                " round((c.submitted_at - EXTRACT(EPOCH FROM j.submitted_at))::numeric, 2),"
                " round((c.ended_at - EXTRACT(EPOCH FROM j.submitted_at))::numeric, 2),"
                " round((c.collected_at - EXTRACT(EPOCH FROM j.submitted_at))::numeric, 2)"
                " FROM batch_scheduler.chunks c JOIN batch_scheduler.jobs j ON j.id = c.job_id WHERE j.name=%s"
                " ORDER BY c.id", (name,)).fetchall()

    def queued(self) -> int:
        """Requests our batches hold in the provider's queue (the shared budget's reservations)."""
        with psycopg.connect(self.url, connect_timeout=3) as db:
            return int(db.execute("SELECT COALESCE(SUM(requests), 0) FROM batch_scheduler.reservations").fetchone()[0])

    def running_on(self, node: str) -> list[str]:
        with psycopg.connect(self.url, connect_timeout=3) as db:
            return [n for (n,) in db.execute("SELECT name FROM batch_scheduler.jobs WHERE state='running' AND"
                                              " node_id=%s AND lease_until > clock_timestamp()", (node,))]

    def events(self) -> list[Event]:
        out = []
        for path in self.root.glob("*.log"):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError:
                    continue
                ts = datetime.strptime(doc["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
                out.append(Event(ts, path.stem, doc.get("job"), doc["msg"]))
        return sorted(out, key=lambda e: e.ts)

    def claims_after(self, job: str, t: float) -> list[Event]:
        return [e for e in self.events() if e.job == job and e.ts >= t and ": running (claim" in e.msg]

    def tail(self) -> str:
        return "\n".join(f"{e.node} {e.job} {e.msg}" for e in self.events()[-25:])

    # -- the pass criteria ----------------------------------------------------------------------

    def check_results(self) -> None:
        """Every accepted custom_id in exactly one object each manifest lists; nothing unlisted left."""
        for name, ids in self.expected.items():
            out = self.outs[name]
            if out.startswith("s3://"):
                bucket, _, prefix = out[len("s3://"):].partition("/")
                lines, present, manifest = bucket_lines(S3Store(bucket), prefix)
                listed = manifest["objects"]
            else:
                lines, present = manifest_lines(out), result_files(out)
                listed = json.loads(Path(out, "_manifest.json").read_text())["objects"]
            got = Counter(r["custom_id"] for r in lines)
            assert set(got) == set(ids), f"{name}: {len(set(ids) - set(got))} lost"
            assert max(got.values()) == 1, f"{name}: duplicated {[k for k, v in got.items() if v > 1][:5]}"
            assert present == listed, f"result objects no manifest lists were left behind: {sorted(set(present) ^ set(listed))}"

    def paid_ratio(self, stats: dict) -> float:
        """Requests paid for over requests accepted (those sent again on purpose after a transient error or
        an expiry are counted apart, as in tests/soak.py)."""
        with psycopg.connect(self.url) as db:
            retried = db.execute("SELECT COALESCE(SUM(value), 0) FROM batch_scheduler.counters"
                                 " WHERE name='retried'").fetchone()[0]
        total = sum(len(v) for v in self.expected.values())
        return (stats["requests_created"] - retried) / total

    def extra_batches(self, stats: dict) -> int:
        """Batches the provider made that no ledger row knows (a stale node's, or a lost create not adopted)."""
        with psycopg.connect(self.url) as db:
            known = db.execute("SELECT COUNT(DISTINCT batch_id) FROM batch_scheduler.chunks").fetchone()[0]
        return stats["creates"] - known

    def nodes_that_ran(self) -> set[str]:
        return {e.node for e in self.events() if ": running (claim" in e.msg}
